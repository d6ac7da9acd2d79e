//! docs/ keeps up with the server (issue 17): docs/operations.md lists
//! every metric family `GET /metrics` serves and every access log field
//! `access_log_fields` accepts (and nothing else), and the links between
//! README.md and docs/*.md lead to files and headings that exist.
//! (configuration.md has its own test, `config_docs`.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::support::{Moongate, check_one, client};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first cells (backticks stripped) of the Markdown table whose header
/// row starts with `| FIRST |`.
fn first_column(doc: &str, first: &str) -> BTreeSet<String> {
    let header = format!("| {first} |");
    let mut lines = doc.lines().skip_while(|l| !l.starts_with(&header));
    assert!(lines.next().is_some(), "no table headed {header}");
    lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cell = l.trim_matches('|').split(" | ").next().unwrap_or("");
            cell.trim().trim_matches('`').to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_md_names_every_metric_family() {
    // An OTLP endpoint nothing is sent to (no request is made) so that the
    // tracing family is served too.
    let mg = Moongate::start(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\naccess_log = \"off\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [tracing]\notlp_endpoint = \"http://127.0.0.1:9/v1/traces\"\n",
    );
    let res = client()
        .get(mg.admin_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(res.status(), 200);
    let text = res.text().await.expect("metrics");
    // OpenMetrics names a family without its sample suffix: a counter's
    // samples end in `_total`, an info's in `_info`.
    let served: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| match l.split_once(' ') {
            Some((name, "counter")) => format!("{name}_total"),
            Some((name, "info")) => format!("{name}_info"),
            Some((name, _)) => name.to_owned(),
            None => panic!("a TYPE line without a type: {l}"),
        })
        .collect();
    assert!(served.len() > 30, "{served:?}");
    let documented = first_column(&read(&repo("docs/operations.md")), "family");
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "families /metrics serves that docs/operations.md does not list"
    );
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "families docs/operations.md lists that /metrics does not serve"
    );
}

#[test]
fn operations_md_lists_every_access_log_field() {
    let run = check_one("[server]\naccess_log_fields = [\"zz_no_such_field\"]\n");
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let known: BTreeSet<String> = run
        .stderr
        .split("the fields are: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no list of fields in {}", run.stderr))
        .trim()
        .split(", ")
        .map(str::to_owned)
        .collect();
    assert!(known.contains("upstream_time"), "{known:?}");
    let documented = first_column(&read(&repo("docs/operations.md")), "field");
    assert_eq!(known, documented, "access log fields");
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped, spaces
/// as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks).
fn anchors(doc: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_code = false;
    for line in doc.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

#[test]
fn links_between_the_docs_lead_somewhere() {
    let mut docs = vec![repo("README.md")];
    for entry in std::fs::read_dir(repo("docs")).expect("docs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    let mut checked = 0;
    for doc in &docs {
        let text = read(doc);
        let dir = doc.parent().expect("a directory");
        for link in text.split("](").skip(1) {
            let Some(target) = link.split(')').next() else {
                continue;
            };
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let file_path = if file.is_empty() {
                doc.clone()
            } else {
                dir.join(file)
            };
            assert!(
                file_path.exists(),
                "{}: link to {target}: no such file",
                doc.display()
            );
            if !anchor.is_empty() {
                let found = anchors(&read(&file_path));
                assert!(
                    found.contains(anchor),
                    "{}: link to {target}: no such heading (headings: {found:?})",
                    doc.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} links found");
}
