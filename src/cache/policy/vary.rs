//! Vary (RFC 9111 §4.1): which request headers select a stored variant,
//! and the key that keeps variants apart.

use http::header::VARY;
use http::{HeaderMap, HeaderName};

/// The request header names a response varies on, lowercased, sorted and
/// deduplicated across all `Vary` lines; `None` for `Vary: *`. Names that
/// are not valid header names are dropped: no request can carry them.
pub fn vary_names(resp_headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for line in resp_headers.get_all(VARY) {
        for item in line.as_bytes().split(|b| *b == b',') {
            let item = item.trim_ascii();
            if item == b"*" {
                return None;
            }
            if let Ok(name) = HeaderName::from_bytes(item) {
                names.push(name);
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Some(names)
}

/// A string that is equal for two requests exactly when they select the
/// same variant. One `name:value` line per name, sorted; an absent header
/// is `name` alone (absent and empty differ). Values of all lines are
/// joined with `,`, whitespace around elements trimmed; bytes outside
/// printable ASCII and `%` are `%XX`-escaped so the key is unambiguous.
pub fn variant_key(vary_names: &[HeaderName], req_headers: &HeaderMap) -> String {
    let mut names: Vec<&HeaderName> = vary_names.iter().collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    let mut key = String::new();
    for name in names {
        key.push_str(name.as_str());
        let mut values = req_headers.get_all(name).iter().peekable();
        if values.peek().is_some() {
            key.push(':');
            let elements = values.flat_map(|v| v.as_bytes().split(|b| *b == b','));
            let elements = elements.map(<[u8]>::trim_ascii).filter(|e| !e.is_empty());
            for (i, element) in elements.enumerate() {
                if i > 0 {
                    key.push(',');
                }
                escape_into(&mut key, element);
            }
        }
        key.push('\n');
    }
    key
}

fn escape_into(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if (b.is_ascii_graphic() || b == b' ') && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}
