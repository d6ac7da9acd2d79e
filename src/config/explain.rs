//! Turns toml/serde errors into plain words about the operator's file.
//!
//! serde says "invalid type: string \"3\", expected usize"; the operator should read
//! "`keepalive` in [upstream.app] must be a whole number, found the string \"3\"". The
//! error's byte span is looked up in the parsed document to learn which key and table it
//! belongs to; the message is then reworded. Knows the schema's table names only to name
//! them; it decides nothing about validity.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, Source};

/// One step of the key path to an error: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A toml error in `src`, reworded and placed.
pub(crate) fn explain(src: &Source<'_>, err: &toml::de::Error) -> ConfigError {
    let message = err.message().trim();
    let Some(span) = err.span() else {
        return ConfigError::at(&super::Place::whole(src.name), flatten(message));
    };
    let at = src.place_of(span.start);
    let Ok(doc) = DeTable::parse(src.text) else {
        // The document itself does not parse: a TOML syntax error.
        let text = if message == "duplicate key" {
            format!(
                "`{}` is defined twice in this file",
                src.slice(span).trim_matches(['[', ']', ' '])
            )
        } else {
            format!("invalid TOML: {}", flatten(message))
        };
        return ConfigError::at(&at, text);
    };
    let mut path = Vec::new();
    let on_key = walk_table(doc.get_ref(), span.start, &mut path).unwrap_or(false);
    let before = src.text.get(..span.start).unwrap_or("");
    let line = &src.text[before.rfind('\n').map_or(0, |i| i + 1)..];
    let in_header = line.trim_start().starts_with('[');
    ConfigError::at(&at, reword(message, &path, on_key, in_header))
}

fn flatten(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Finds the deepest key or value containing `offset`, leaving its path in `path`.
/// Returns whether it was a key (an unknown-key error) rather than a value.
fn walk_table(table: &DeTable<'_>, offset: usize, path: &mut Vec<Seg>) -> Option<bool> {
    for (key, value) in table.iter() {
        path.push(Seg::Key(key.get_ref().to_string()));
        if contains(&key.span(), offset) {
            return Some(true);
        }
        if let Some(on_key) = walk_value(value, offset, path) {
            return Some(on_key);
        }
        path.pop();
    }
    None
}

fn walk_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut Vec<Seg>) -> Option<bool> {
    // Children first: a header table's own span is only its `[header]`.
    match value.get_ref() {
        DeValue::Table(table) => {
            if let Some(found) = walk_table(table, offset, path) {
                return Some(found);
            }
        }
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                if let Some(found) = walk_value(item, offset, path) {
                    return Some(found);
                }
                path.pop();
            }
        }
        _ => {}
    }
    contains(&value.span(), offset).then_some(false)
}

fn contains(span: &std::ops::Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

/// Names the table at `path` the way the operator wrote it.
fn table_name(path: &[Seg]) -> String {
    use Seg::{Index, Key};
    let key = |s: &Seg| matches!(s, Key(_));
    match path {
        [] => "the top level".to_owned(),
        [Key(s)] => format!("[{s}]"),
        [Key(s), Key(t), Index(_)] if s == "server" && t == "tls" => {
            "a [[server.tls]] listener".to_owned()
        }
        [Key(s), Key(t), Index(_), Key(c), Index(_)]
            if s == "server" && t == "tls" && c == "certs" =>
        {
            "a certs entry of [[server.tls]]".to_owned()
        }
        [Key(u), Key(name)] if u == "upstream" => format!("[upstream.{name}]"),
        [Key(u), Key(name), Key(s), Index(_)] if u == "upstream" && s == "servers" => {
            format!("a server of [upstream.{name}]")
        }
        [Key(r), Index(_)] if r == "route" => "a [[route]]".to_owned(),
        [Key(r), Index(_), Key(w)] if r == "route" && w == "rewrite" => {
            "the rewrite of a [[route]]".to_owned()
        }
        _ if path.iter().all(key) => format!("[{}]", dotted(path)),
        _ => format!("`{}`", dotted(path)),
    }
}

fn dotted(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Names the value at `path`, like "`keepalive` in `[upstream.app]`" or "item 2 of `listen` in `[server]`".
fn subject(path: &[Seg]) -> String {
    match path.split_last() {
        None => "the file".to_owned(),
        Some((Seg::Key(k), [])) => format!("`{k}`"),
        Some((Seg::Key(k), parent)) => format!("`{k}` in {}", table_name(parent)),
        Some((Seg::Index(i), parent)) => format!("item {} of {}", i + 1, subject(parent)),
    }
}

/// Rewords serde's standard messages; anything else (our own visitors' messages) is kept
/// and prefixed with the subject. `in_header` says the error is on a `[table]` header line.
fn reword(message: &str, path: &[Seg], on_key: bool, in_header: bool) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected
            .trim_start_matches([',', ' '])
            .trim_start_matches("expected ")
            .trim_start_matches("one of ")
            .replace('`', "")
            .replace(" or ", ", ");
        let parent = if on_key {
            path.split_last().map_or(path, |(_, p)| p)
        } else {
            path
        };
        if parent.is_empty() {
            let what = if in_header { "table" } else { "key" };
            return format!("unknown top-level {what} `{field}`; expected one of {expected}");
        }
        let known = match expected.as_str() {
            "there are no fields" => "it takes no keys".to_owned(),
            _ => format!("expected one of {expected}"),
        };
        return format!("unknown key `{field}` in {}; {known}", table_name(parent));
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.trim_end_matches('`');
        return format!("{} is missing `{field}`", table_name(path));
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.rsplit_once(", expected ")
        {
            let mut text = format!(
                "{} must be {}, found {}",
                subject(path),
                plain_expected(expected, found),
                plain_found(found)
            );
            if found == "map"
                && expected == "a sequence"
                && path.iter().all(|s| matches!(s, Seg::Key(_)))
            {
                text.push_str(&format!(" (write [[{}]] to add an entry)", dotted(path)));
            }
            return text;
        }
    }
    format!("{}: {message}", subject(path))
}

fn plain_expected(expected: &str, found: &str) -> String {
    let negative = found.starts_with("integer `-");
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" if negative => {
            "a whole number of 0 or more".to_owned()
        }
        "u32" if found.starts_with("integer") => {
            format!("a whole number no larger than {}", u32::MAX)
        }
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64" | "i128"
        | "isize" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a sequence" => "an array".to_owned(),
        "a map" => "a table".to_owned(),
        "path string" => "a string".to_owned(),
        e if e.starts_with("struct ") => "a table".to_owned(),
        e => e.to_owned(),
    }
}

fn plain_found(found: &str) -> String {
    if let Some(s) = found.strip_prefix("string ") {
        return format!("the string {s}");
    }
    for prefix in ["integer ", "floating point "] {
        if let Some(n) = found.strip_prefix(prefix) {
            return format!("the number {}", n.trim_matches('`'));
        }
    }
    if let Some(b) = found.strip_prefix("boolean ") {
        return b.trim_matches('`').to_owned();
    }
    match found {
        "sequence" => "an array".to_owned(),
        "map" => "a table".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::RawFile;
    use std::path::Path;

    fn err(text: &str) -> String {
        let src = Source::new(Path::new("t.toml"), text);
        let e = toml::from_str::<RawFile>(text).expect_err("the text should not deserialize");
        explain(&src, &e).to_string()
    }

    #[test]
    fn unknown_key_names_table_and_choices() {
        let text = "[upstream.app]\nservers = [\n  { addr = \"a:1\", wieght = 3 },\n]\n";
        assert_eq!(
            err(text),
            "t.toml:3:19: unknown key `wieght` in a server of [upstream.app]; \
             expected one of addr, weight, max_fails, fail_timeout, backup, down"
        );
    }

    #[test]
    fn unknown_top_level_table() {
        assert_eq!(
            err("\n[proxy]\nx = 1\n"),
            "t.toml:2:2: unknown top-level table `proxy`; expected one of server, admin, upstream, route, lua, limit, redis, cache, tracing, consumer, consumers"
        );
    }

    #[test]
    fn unknown_top_level_key() {
        assert_eq!(
            err("title = \"x\"\n"),
            "t.toml:1:1: unknown top-level key `title`; expected one of server, admin, upstream, route, lua, limit, redis, cache, tracing, consumer, consumers"
        );
    }

    #[test]
    fn wrong_types_in_plain_words() {
        let text = "[upstream.app]\nkeepalive = \"64\"\nservers = []\n";
        assert_eq!(
            err(text),
            "t.toml:2:13: `keepalive` in [upstream.app] must be a whole number, found the string \"64\""
        );
        let text = "[upstream.app]\nretries = -1\nservers = []\n";
        assert!(err(text).ends_with(
            "`retries` in [upstream.app] must be a whole number of 0 or more, found the number -1"
        ));
        assert!(
            err("[server]\nserver_tokens = \"yes\"\n")
                .ends_with("must be true or false, found the string \"yes\"")
        );
        assert!(
            err("[server]\nlisten = \"0.0.0.0:80\"\n").ends_with(
                "`listen` in [server] must be an array, found the string \"0.0.0.0:80\""
            )
        );
        assert!(
            err("[[route]]\nrewrite = \"x\"\n")
                .ends_with("`rewrite` in a [[route]] must be a table, found the string \"x\"")
        );
        assert!(
            err("[server]\nlisten = [\"a\", 3]\n")
                .ends_with("item 2 of `listen` in [server] must be a string, found the number 3")
        );
    }

    #[test]
    fn missing_key_points_at_the_table() {
        assert_eq!(
            err("\n[admin]\ntoken = \"t\"\n"),
            "t.toml:2:1: [admin] is missing `listen`"
        );
        let text = "[upstream.app]\nservers = [{ weight = 2 }]\n";
        assert_eq!(
            err(text),
            "t.toml:2:12: a server of [upstream.app] is missing `addr`"
        );
    }

    #[test]
    fn our_own_messages_get_a_subject() {
        let text = "[upstream.app]\nconnect_timeout = 5\nservers = []\n";
        let e = err(text);
        assert!(e.starts_with("t.toml:2:19: `connect_timeout` in [upstream.app]: write durations as strings like \"30s\""), "{e}");
    }

    #[test]
    fn table_instead_of_array_of_tables_gets_a_hint() {
        let e = err("[server.tls]\nlisten = \"0.0.0.0:8443\"\n");
        assert!(
            e.ends_with("must be an array, found a table (write [[server.tls]] to add an entry)"),
            "{e}"
        );
    }

    #[test]
    fn syntax_errors_and_duplicates() {
        assert!(err("[upstream\n").starts_with("t.toml:1:10: invalid TOML: unclosed table"));
        let text = "[upstream.app]\nservers = []\n[upstream.app]\nservers = []\n";
        assert_eq!(
            err(text),
            "t.toml:3:11: `app` is defined twice in this file"
        );
    }
}
