//! Purging a zone by key or by prefix, in both tiers: what the admin
//! API's `DELETE /cache/{zone}?key=..|prefix=..` does on this node, and
//! what a purge fanned out from another node does here.
//!
//! Keys are rendered cache keys (the zone's `key` template, by default
//! `$scheme$host$request_uri`, e.g. `http127.0.0.1:8080/a?b`). A key purge
//! also drops the key's Vary variants (their keys start with
//! [`variants_prefix`]); a prefix purge covers them by construction.
//!
//! Knows zones and keys; not HTTP, not Redis.

use std::sync::Arc;

use super::Zone;
use super::entry::variants_prefix;

/// What to purge.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// One rendered key and its Vary variants.
    Key(String),
    /// Every key starting with this.
    Prefix(String),
}

impl Target {
    /// The target named by an admin query string: exactly one of `key=`
    /// (not empty) or `prefix=`, percent-decoded (form style: `+` is a
    /// space). Other parameters are refused too, so a typo is not a purge
    /// of something else.
    pub fn from_query(query: Option<&str>) -> Result<Target, String> {
        const USAGE: &str = "give exactly one of ?key=KEY or ?prefix=PREFIX (percent-encoded)";
        let mut found = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value).ok_or_else(|| {
                format!("the value of `{name}` is not percent-encoded UTF-8; {USAGE}")
            })?;
            let target = match name {
                "key" if value.is_empty() => return Err(format!("empty key; {USAGE}")),
                "key" => Target::Key(value),
                "prefix" => Target::Prefix(value),
                other => return Err(format!("unknown parameter `{other}`; {USAGE}")),
            };
            if found.replace(target).is_some() {
                return Err(USAGE.into());
            }
        }
        found.ok_or_else(|| USAGE.into())
    }
}

/// Form-style percent-decoding (`+` is a space); `None` when the result is
/// not UTF-8.
fn decode(value: &str) -> Option<String> {
    let spaced = value.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// How many entries a purge removed from each tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Entries dropped from L1.
    pub memory: usize,
    /// Entries dropped from L2's index.
    pub disk: usize,
}

impl Purged {
    /// Entries removed: an entry usually sits in both tiers, so the larger
    /// of the two counts (a lower bound when the tiers held different keys).
    pub fn total(&self) -> usize {
        self.memory.max(self.disk)
    }
}

/// Removes `target` from both tiers of `zone`. L2 files are deleted on the
/// calling thread: from async code, call it through `spawn_blocking`.
pub fn purge(zone: &Zone, target: &Target) -> Purged {
    let (l1, l2) = zone.tiers();
    let (exact, prefix) = match target {
        Target::Key(key) => (Some(key.as_str()), variants_prefix(key)),
        Target::Prefix(prefix) => (None, prefix.clone()),
    };
    let mut purged = Purged::default();
    if let Some(key) = exact {
        purged.memory += usize::from(l1.remove(key).is_some());
    }
    // L1 has no ordered index: walk its keys (an admin action, rare).
    let doomed: Vec<Arc<String>> = l1
        .iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with(&prefix))
        .collect();
    for key in doomed {
        purged.memory += usize::from(l1.remove(key.as_str()).is_some());
    }
    if let Some(l2) = l2 {
        if let Some(key) = exact {
            purged.disk += usize::from(l2.remove(key));
        }
        purged.disk += l2.remove_prefix(&prefix);
    }
    purged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_names_exactly_one_key_or_prefix() {
        assert_eq!(
            Target::from_query(Some("key=http127.0.0.1%3A8080%2Fa%3Fb%3D1")),
            Ok(Target::Key("http127.0.0.1:8080/a?b=1".into()))
        );
        assert_eq!(
            Target::from_query(Some("prefix=http%3A%2F%2Fx")),
            Ok(Target::Prefix("http://x".into()))
        );
        assert_eq!(
            Target::from_query(Some("prefix=")),
            Ok(Target::Prefix(String::new()))
        );
        assert_eq!(
            Target::from_query(Some("key=a+b%2B")),
            Ok(Target::Key("a b+".into()))
        );
        for bad in [
            None,
            Some(""),
            Some("key="),
            Some("key=a&prefix=b"),
            Some("key=a&key=b"),
            Some("kye=a"),
            Some("key=%FF"),
        ] {
            assert!(Target::from_query(bad).is_err(), "{bad:?}");
        }
    }
}
