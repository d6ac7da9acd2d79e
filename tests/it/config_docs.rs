//! docs/configuration.md cannot drift from the config model (issue 17).
//!
//! The model's keys are not listed by hand: serde itself is asked. A TOML
//! file with an unknown key at some table makes the parser answer
//! "unknown field `…`, expected one of `a`, `b`, …" (every table of
//! `moongate::config::file` denies unknown keys), which names every key
//! of that table; each key is then probed in turn as a table, an array of
//! tables and a map of named tables, which finds every nested table down
//! to the leaves. The reference marks each of its key tables with
//! `<!-- keys: PATH -->`; the two lists must be equal, table by table and
//! key by key, and every row must give a type, a default and the reload
//! behaviour. Every key must also appear in one of the reference's TOML
//! examples, and every TOML example of configuration.md and
//! migrating-from-nginx.md must pass `moongate check` in a prefix laid out
//! as configuration.md says (`certs/`, `lua/`, `site/`, `keys/`, `app/`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use moongate::config::file::RawFile;
use toml::Value;

use crate::support::moongate_check;

/// A key no table has.
const PROBE: &str = "zz_not_a_key";

/// One step from the top of a conf.d file to a table.
#[derive(Clone, Debug)]
enum Step {
    /// A key of the table.
    Key(String),
    /// An entry of an array of tables.
    Item,
}

/// A table's name in the reference: keys joined by `.`, `[]` after an
/// array of tables, `NAME` for any name of a map (`upstream.NAME.servers[]`),
/// `top` for the file itself.
fn name(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Item => out.push_str("[]"),
        }
    }
    if out.is_empty() {
        "top".to_owned()
    } else {
        out
    }
}

/// A document holding `leaf` at `path`.
fn document(path: &[Step], leaf: Value) -> String {
    let mut value = leaf;
    for step in path.iter().rev() {
        value = match step {
            Step::Key(k) => Value::Table([(k.clone(), value)].into_iter().collect()),
            Step::Item => Value::Array(vec![value]),
        };
    }
    toml::to_string(&value).expect("a probe document")
}

/// The keys serde lists for the table at `path`, or `None` when no table
/// that denies unknown keys is there.
fn keys_at(path: &[Step]) -> Option<Vec<String>> {
    let probe = Value::Table(
        [(PROBE.to_owned(), Value::Integer(1))]
            .into_iter()
            .collect(),
    );
    let text = document(path, probe);
    let err = toml::from_str::<RawFile>(&text).err()?;
    let rest = err
        .message()
        .strip_prefix(&format!("unknown field `{PROBE}`"))?;
    // ", expected one of `a`, `b`", ", expected `a` or `b`", ", expected
    // `a`", or ", there are no fields".
    Some(
        rest.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

/// Every table of the model by its reference name, with its keys in the
/// model's order, found from the top.
fn model() -> BTreeMap<String, Vec<String>> {
    fn explore(path: Vec<Step>, out: &mut BTreeMap<String, Vec<String>>) {
        let keys = keys_at(&path).unwrap_or_else(|| panic!("no table at {}", name(&path)));
        for key in &keys {
            let mut here = path.clone();
            here.push(Step::Key(key.clone()));
            let shapes = [vec![], vec![Step::Item], vec![Step::Key("NAME".to_owned())]];
            for shape in shapes {
                let mut child = here.clone();
                child.extend(shape);
                if keys_at(&child).is_some() {
                    explore(child, out);
                    break;
                }
            }
        }
        out.insert(name(&path), keys);
    }
    let mut out = BTreeMap::new();
    explore(Vec::new(), &mut out);
    out
}

fn read_doc(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One row of a key table: the key and its other cells.
#[derive(Clone)]
struct Row {
    key: String,
    cells: Vec<String>,
    line: usize,
}

/// The reference's key tables: `<!-- keys: PATH [PATH…] -->` and the
/// Markdown table that follows it (header and separator rows skipped).
fn doc_tables(doc: &str) -> BTreeMap<String, Vec<Row>> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut out: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(path) = line
            .trim()
            .strip_prefix("<!-- keys:")
            .and_then(|l| l.strip_suffix("-->"))
        else {
            continue;
        };
        let mut rows = Vec::new();
        let table = (lines.iter().enumerate().skip(i + 1))
            .skip_while(|(_, l)| l.trim().is_empty())
            .take_while(|(_, l)| l.trim_start().starts_with('|'))
            .skip(2);
        for (j, row) in table {
            let cells: Vec<String> = row
                .trim()
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect();
            let key = cells[0].trim_matches('`').to_owned();
            rows.push(Row {
                key,
                cells: cells[1..].to_vec(),
                line: j + 1,
            });
        }
        assert!(
            !rows.is_empty(),
            "configuration.md:{}: no table after the marker",
            i + 1
        );
        // One key table may serve several tables of the same shape
        // (`compress` of `[server]` and of a route).
        for table in path.split_whitespace() {
            let again = out.insert(table.to_owned(), rows.clone());
            assert!(
                again.is_none(),
                "configuration.md:{}: a second key table for {table}",
                i + 1
            );
        }
    }
    out
}

#[test]
fn every_key_of_the_model_is_in_the_reference_and_no_other() {
    let model = model();
    let doc = doc_tables(&read_doc("configuration.md"));
    let model_tables: BTreeSet<&String> = model.keys().collect();
    let doc_tables: BTreeSet<&String> = doc.keys().collect();
    let missing: Vec<_> = model_tables.difference(&doc_tables).collect();
    let unknown: Vec<_> = doc_tables.difference(&model_tables).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "tables of the model without a key table in configuration.md: {missing:?}; \
         key tables naming no table of the model: {unknown:?}"
    );
    for (table, keys) in &model {
        let rows = &doc[table];
        let documented: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        for key in keys {
            assert!(
                documented.contains(&key.as_str()),
                "configuration.md: `{key}` of {table} is not documented (documented: {documented:?})"
            );
        }
        for row in rows {
            assert!(
                keys.contains(&row.key),
                "configuration.md:{}: {table} has no key `{}` (the model's keys: {keys:?})",
                row.line,
                row.key
            );
            assert!(
                row.cells.len() == 4 && row.cells.iter().all(|c| !c.is_empty()),
                "configuration.md:{}: a row is | key | type | default | reload | meaning |, all filled",
                row.line
            );
        }
        let mut seen = BTreeSet::new();
        for row in rows {
            assert!(
                seen.insert(&row.key),
                "configuration.md:{}: `{}` twice in {table}",
                row.line,
                row.key
            );
        }
    }
}

/// The ```toml blocks of a Markdown text, with the line each starts on.
fn toml_blocks(doc: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in doc.lines().enumerate() {
        match &mut current {
            None if line.trim() == "```toml" => current = Some((i + 2, String::new())),
            None => {}
            Some(_) if line.trim() == "```" => out.extend(current.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    assert!(current.is_none(), "an unclosed ```toml block");
    out
}

/// Adds the (table, key) pairs `value` uses, `table` being its reference name.
fn used_keys(
    model: &BTreeMap<String, Vec<String>>,
    table: &str,
    value: &toml::Table,
    out: &mut BTreeSet<(String, String)>,
) {
    for (key, v) in value {
        out.insert((table.to_owned(), key.clone()));
        let child = if table == "top" {
            key.clone()
        } else {
            format!("{table}.{key}")
        };
        match v {
            Value::Table(t) if model.contains_key(&child) => used_keys(model, &child, t, out),
            Value::Table(t) if model.contains_key(&format!("{child}.NAME")) => {
                for named in t.values().filter_map(Value::as_table) {
                    used_keys(model, &format!("{child}.NAME"), named, out);
                }
            }
            Value::Array(items) if model.contains_key(&format!("{child}[]")) => {
                for item in items.iter().filter_map(Value::as_table) {
                    used_keys(model, &format!("{child}[]"), item, out);
                }
            }
            _ => {}
        }
    }
}

#[test]
fn every_key_has_an_example_in_the_reference() {
    let model = model();
    let mut used = BTreeSet::new();
    for (line, block) in toml_blocks(&read_doc("configuration.md")) {
        let value: toml::Table = toml::from_str(&block)
            .unwrap_or_else(|e| panic!("configuration.md:{line}: not TOML: {e}"));
        used_keys(&model, "top", &value, &mut used);
    }
    let mut missing = Vec::new();
    for (table, keys) in &model {
        for key in keys {
            if !used.contains(&(table.clone(), key.clone())) {
                missing.push(format!("{table}: {key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys no TOML example of configuration.md uses: {missing:#?}"
    );
}

/// A prefix laid out as configuration.md's "Files the examples name"
/// says, with an empty conf.d.
fn example_prefix() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("prefix");
    let p = dir.path();
    for d in ["conf.d", "certs", "lua", "site", "keys", "app", "var"] {
        std::fs::create_dir_all(p.join(d)).expect("mkdir");
    }
    let names = vec!["localhost".to_owned(), "example.com".to_owned()];
    let cert = rcgen::generate_simple_self_signed(names).expect("a certificate");
    std::fs::write(p.join("certs/example.pem"), cert.cert.pem()).expect("cert");
    std::fs::write(
        p.join("certs/example.key"),
        cert.signing_key.serialize_pem(),
    )
    .expect("key");
    std::fs::write(p.join("certs/internal-ca.pem"), cert.cert.pem()).expect("ca");
    let key = rcgen::KeyPair::generate().expect("a key pair");
    std::fs::write(p.join("keys/svc.pem"), key.public_key_pem()).expect("public key");
    for phase in [
        "init",
        "init_worker",
        "rewrite",
        "access",
        "header_filter",
        "body_filter",
        "log",
        "balancer",
    ] {
        let script = format!("-- {phase}: an example\nlocal _ = ngx.get_phase()\n");
        std::fs::write(p.join(format!("lua/{phase}.lua")), script).expect("script");
    }
    std::fs::write(p.join("lua/content.lua"), "ngx.say(\"hello\")\n").expect("script");
    std::fs::write(p.join("site/index.html"), "<p>hello</p>\n").expect("page");
    std::fs::write(p.join("keys/api-keys.txt"), "demo-key-123 alice\n").expect("keys");
    // "alice:secret" as a {SHA} htpasswd line (base64 of SHA-1("secret")).
    std::fs::write(
        p.join("keys/htpasswd"),
        "alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n",
    )
    .expect("htpasswd");
    std::fs::write(
        p.join("keys/consumers.jsonl"),
        "{\"name\": \"bob\", \"keys\": [\"bob-key-1\"], \"groups\": [\"staff\"]}\n",
    )
    .expect("consumers");
    dir
}

fn check_examples(doc_name: &str) -> usize {
    let blocks = toml_blocks(&read_doc(doc_name));
    let prefix = example_prefix();
    let conf = prefix.path().join("conf.d");
    for (line, block) in &blocks {
        std::fs::write(conf.join("10-example.toml"), block).expect("write the example");
        let run = moongate_check(&conf);
        assert_eq!(
            run.code,
            Some(0),
            "{doc_name}:{line}: the example fails `moongate check`:\n{}{}\n{block}",
            run.stdout,
            run.stderr
        );
    }
    blocks.len()
}

#[test]
fn every_example_of_the_reference_passes_check() {
    assert!(check_examples("configuration.md") >= 10);
}

#[test]
fn every_example_of_the_migration_guide_passes_check() {
    assert!(check_examples("migrating-from-nginx.md") >= 5);
}

#[test]
fn the_probe_finds_nested_tables() {
    // The discovery itself: known tables at each depth and shape.
    let model = model();
    for table in [
        "top",
        "server.tls[].certs[]",
        "upstream.NAME.servers[]",
        "upstream.NAME.workers",
        "route[].lua",
        "consumer.NAME.jwt",
        "lua",
    ] {
        assert!(model.contains_key(table), "{table}: {:?}", model.keys());
    }
    assert!(model["top"].contains(&"upstream".to_owned()));
    assert!(model["upstream.NAME.servers[]"].contains(&"fail_timeout".to_owned()));
    // Free-form maps are keys, not tables.
    assert!(!model.contains_key("lua.shared_dict"));
    assert!(!model.contains_key("upstream.NAME.workers.env"));
}
