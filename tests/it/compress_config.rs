//! `compress = {...}` errors from `moongate check`: each at the
//! file:line:column of the value, in plain words.

use crate::support::moongate_check;

/// `check` on a conf.d of one file; asserts exit 1 at `line:column`.
fn check_fails(text: &str, line: usize, column: usize, words: &str) {
    let dir = tempfile::tempdir().expect("conf dir");
    let file = dir.path().join("10-c.toml");
    std::fs::write(&file, text).expect("write conf");
    let run = moongate_check(dir.path());
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let place = format!("{}:{line}:{column}:", file.display());
    assert!(
        run.stderr.contains(&place),
        "want {place} in {}",
        run.stderr
    );
    assert!(
        run.stderr.contains(words),
        "want {words:?} in {}",
        run.stderr
    );
}

#[test]
fn config_errors_name_file_line_and_column() {
    let head = "[server]\nlisten = [\"127.0.0.1:0\"]\n";
    let route = |compress: &str| {
        format!(
            "{head}[[route]]\npath_exact = \"/x\"\nlua.content_inline = \"ngx.say(1)\"\ncompress = {compress}\n"
        )
    };
    check_fails(
        &route("{ algorithms = [\"gzip\", \"lzma\"] }"),
        6,
        36,
        "\"lzma\"",
    );
    check_fails(
        &route("{ algorithms = [\"gzip\", \"gzip\"] }"),
        6,
        36,
        "twice",
    );
    check_fails(&route("{ level = 12 }"), 6, 22, "out of range for gzip");
    check_fails(
        &route("{ level = { gzip = 10 } }"),
        6,
        22,
        "out of range for gzip",
    );
    check_fails(&route("{ level = { lz4 = 1 } }"), 6, 22, "\"lz4\"");
    check_fails(
        &route("{ types = [\"text/html; charset=utf-8\"] }"),
        6,
        23,
        "not a content type",
    );
    check_fails(&route("{ types = [] }"), 6, 22, "empty");
    check_fails(
        &route("{ min_length = \"1 parsec\" }"),
        6,
        27,
        "unknown size unit",
    );
    check_fails(&route("{ gzip = true }"), 6, 14, "unknown key `gzip`");
    // `[server]`'s table is checked even with no route using it.
    check_fails(
        &format!("{head}compress = {{ algorithms = [\"deflate\"] }}\n"),
        3,
        28,
        "\"deflate\"",
    );
    // A level only the listed codings must accept.
    let dir = tempfile::tempdir().expect("conf dir");
    std::fs::write(
        dir.path().join("10-c.toml"),
        route("{ algorithms = [\"br\"], level = 11 }"),
    )
    .expect("write conf");
    let run = moongate_check(dir.path());
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
}
