//! `[cache.NAME]` → [`CacheZone`]: the L1 size, an optional L2 directory,
//! the key template, default freshness and stale windows, the largest
//! object stored, the methods looked up, the lock settings, and the
//! targeted cache-control fields (RFC 9213) it obeys.
//!
//! `methods` may only name GET and HEAD: those are the methods whose
//! answers a shared cache may reuse (RFC 9111 §2); unsafe methods on a
//! cached route invalidate instead, whatever this list says.

use std::time::Duration;

use toml::Spanned;

use super::matchers::method;
use super::paths::Paths;
use crate::cache::policy::CDN_CACHE_CONTROL;
use crate::config::error::{ConfigError, Place, Source};
use crate::config::file::RawCache;
use crate::config::model::{CacheDisk, CacheZone};
use crate::vars::VarTemplate;

/// The key when a zone names none, as nginx's `proxy_cache_key` default.
const DEFAULT_KEY: &str = "$scheme$host$request_uri";
/// The largest object stored when a zone names none.
const DEFAULT_MAX_OBJECT: u64 = 8 * 1024 * 1024;
/// How long a request waits for another's origin request by default.
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// Validates one zone definition.
pub(super) fn zone(
    src: &Source<'_>,
    name: &Spanned<String>,
    def: &Spanned<RawCache>,
    place: Place,
    paths: &Paths,
) -> Result<CacheZone, ConfigError> {
    let raw = def.get_ref();
    let ok_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if name.get_ref().is_empty() || !name.get_ref().chars().all(ok_name) {
        let message = format!(
            "cache zone name `{}` may only use letters, digits, `_` and `-`",
            name.get_ref()
        );
        return Err(src.err(name.span(), message));
    }
    let memory = match &raw.memory {
        None => {
            let message = "a [cache.NAME] zone needs `memory`, the size of its in-memory tier, like memory = \"256MiB\"";
            return Err(ConfigError::at(&place, message));
        }
        Some(m) if m.get_ref().0 == 0 => {
            return Err(src.err(m.span(), "`memory` must be more than 0 bytes"));
        }
        Some(m) => m.get_ref().0,
    };
    let disk = match &raw.disk {
        None => None,
        Some(d) => {
            let d = d.get_ref();
            if d.path.get_ref().is_empty() {
                let message = "`disk.path` is empty; give the directory the cache may own";
                return Err(src.err(d.path.span(), message));
            }
            if d.size.get_ref().0 == 0 {
                return Err(src.err(d.size.span(), "`disk.size` must be more than 0 bytes"));
            }
            Some(CacheDisk {
                path: paths.resolve(d.path.get_ref()),
                size: d.size.get_ref().0,
            })
        }
    };
    let key = match &raw.key {
        None => DEFAULT_KEY.to_owned(),
        Some(k) => {
            VarTemplate::parse(k.get_ref()).map_err(|m| src.err(k.span(), m))?;
            k.get_ref().clone()
        }
    };
    let max_object_size = match &raw.max_object_size {
        None => DEFAULT_MAX_OBJECT,
        Some(m) if m.get_ref().0 == 0 => {
            return Err(src.err(m.span(), "`max_object_size` must be more than 0 bytes"));
        }
        Some(m) => m.get_ref().0,
    };
    let methods = methods(src, raw)?;
    let dur = |d: &Option<Spanned<crate::config::units::Dur>>| d.as_ref().map(|d| d.get_ref().0);
    let lock = raw.lock.unwrap_or(false);
    let lock_timeout = match &raw.lock_timeout {
        Some(t) if !lock => {
            let message = "`lock_timeout` only applies with lock = true";
            return Err(src.err(t.span(), message));
        }
        Some(t) if t.get_ref().0.is_zero() => {
            return Err(src.err(t.span(), "`lock_timeout` must be more than 0s"));
        }
        other => dur(other).unwrap_or(DEFAULT_LOCK_TIMEOUT),
    };
    Ok(CacheZone {
        name: name.get_ref().clone(),
        memory,
        disk,
        key,
        default_ttl: dur(&raw.default_ttl).unwrap_or(Duration::ZERO),
        stale_while_revalidate: dur(&raw.stale_while_revalidate).unwrap_or(Duration::ZERO),
        stale_if_error: dur(&raw.stale_if_error).unwrap_or(Duration::ZERO),
        max_object_size,
        methods,
        lock,
        lock_timeout,
        targeted: targeted(src, raw)?,
        forward_targeted: raw.forward_targeted.unwrap_or(false),
        place,
    })
}

/// `targeted`: header names, default `["CDN-Cache-Control"]`; an empty
/// list turns targeted fields off (Cache-Control alone governs).
fn targeted(src: &Source<'_>, raw: &RawCache) -> Result<Vec<http::HeaderName>, ConfigError> {
    let Some(list) = &raw.targeted else {
        return Ok(vec![http::HeaderName::from_static(CDN_CACHE_CONTROL)]);
    };
    let mut out: Vec<http::HeaderName> = Vec::new();
    for field in list.get_ref() {
        let text = field.get_ref();
        if text.is_empty() {
            let message = "an empty field name in `targeted`; name a response header like \"CDN-Cache-Control\"";
            return Err(src.err(field.span(), message));
        }
        let Ok(name) = http::HeaderName::from_bytes(text.as_bytes()) else {
            let message = format!(
                "`{text}` in `targeted` is not a header field name (letters, digits and !#$%&'*+-.^_`|~ only)"
            );
            return Err(src.err(field.span(), message));
        };
        if name == http::header::CACHE_CONTROL {
            let message = "`targeted` lists fields obeyed *instead of* Cache-Control; Cache-Control itself is always the fallback";
            return Err(src.err(field.span(), message));
        }
        if out.contains(&name) {
            return Err(src.err(
                field.span(),
                format!("`{text}` is listed twice in `targeted`"),
            ));
        }
        out.push(name);
    }
    Ok(out)
}

/// `methods`: GET and/or HEAD, default both.
fn methods(src: &Source<'_>, raw: &RawCache) -> Result<Vec<http::Method>, ConfigError> {
    let Some(list) = &raw.methods else {
        return Ok(vec![http::Method::GET, http::Method::HEAD]);
    };
    if list.get_ref().is_empty() {
        let message =
            "`methods` is empty, so nothing would be cached; leave it out for [\"GET\", \"HEAD\"]";
        return Err(src.err(list.span(), message));
    }
    let mut out = Vec::new();
    for m in list.get_ref() {
        let parsed = method(m.get_ref()).map_err(|e| src.err(m.span(), e))?;
        if parsed != http::Method::GET && parsed != http::Method::HEAD {
            let message = format!(
                "a cache stores answers to GET and HEAD only, not {parsed}; unsafe methods on a cached route invalidate its entries instead"
            );
            return Err(src.err(m.span(), message));
        }
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;

    fn err(extra: &str) -> String {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream.a]\nservers = [{{ addr = \"127.0.0.1:1\" }}]\n{extra}"
        );
        match load_str("c.toml", &text) {
            Ok(_) => String::from("ok"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_and_errors_with_places() {
        let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n[cache.pages]\nmemory = \"1MiB\"\n";
        let config = load_str("c.toml", text).expect("valid");
        let zone = &config.caches["pages"];
        assert_eq!(zone.key, "$scheme$host$request_uri");
        assert_eq!(zone.max_object_size, 8 * 1024 * 1024);
        assert_eq!(zone.methods, vec![http::Method::GET, http::Method::HEAD]);
        assert!(zone.disk.is_none() && !zone.lock);

        assert!(
            err("[cache.p]\ndisk = { path = \"/tmp/x\", size = \"1MiB\" }\n")
                .starts_with("c.toml:5")
        );
        assert!(err("[cache.p]\nmemory = \"1MiB\"\nmethods = [\"POST\"]\n").contains("c.toml:7"));
        assert!(
            err("[cache.p]\nmemory = \"1MiB\"\nlock_timeout = \"1s\"\n").contains("lock = true")
        );
        assert_eq!(
            zone.targeted,
            vec![http::HeaderName::from_static("cdn-cache-control")]
        );
        assert!(!zone.forward_targeted);
        let unknown = err("[[route]]\npath = \"/\"\nupstream = \"a\"\ncache = \"x\"\n");
        assert!(unknown.starts_with("c.toml:8"), "{unknown}");
        assert!(unknown.contains("cache zone `x`"), "{unknown}");
    }

    #[test]
    fn targeted_fields_are_header_names_with_places() {
        let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n[cache.p]\nmemory = \"1MiB\"\ntargeted = [\"Example-CDN-Cache-Control\", \"CDN-Cache-Control\"]\nforward_targeted = true\n";
        let config = load_str("c.toml", text).expect("valid");
        let zone = &config.caches["p"];
        let names: Vec<&str> = zone.targeted.iter().map(|n| n.as_str()).collect();
        assert_eq!(names, ["example-cdn-cache-control", "cdn-cache-control"]);
        assert!(zone.forward_targeted);
        let off =
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[cache.p]\nmemory = \"1MiB\"\ntargeted = []\n";
        assert!(
            load_str("c.toml", off).expect("valid").caches["p"]
                .targeted
                .is_empty()
        );

        let cases = [
            ("targeted = [\"\"]", "c.toml:7:13", "empty field name"),
            (
                "targeted = [\"a\", \"CDN Cache\"]",
                "c.toml:7:18",
                "not a header field name",
            ),
            (
                "targeted = [\"x:y\"]",
                "c.toml:7:13",
                "not a header field name",
            ),
            (
                "targeted = [\"Cache-Control\"]",
                "c.toml:7:13",
                "instead of",
            ),
            ("targeted = [\"a\", \"A\"]", "c.toml:7:18", "listed twice"),
            ("targeted = \"CDN-Cache-Control\"", "c.toml:7", "targeted"),
        ];
        for (line, place, words) in cases {
            let e = err(&format!("[cache.p]\nmemory = \"1MiB\"\n{line}\n"));
            assert!(e.starts_with(place), "{line}: {e}");
            assert!(e.contains(words), "{line}: {e}");
        }
    }
}
