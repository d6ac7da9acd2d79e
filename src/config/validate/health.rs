//! `health = {...}` of an `[upstream.NAME]`: active checks. Either a `GET
//! path` in the upstream's protocol whose status must match `expect`, or
//! (`type = "tcp"`) a connect only; how often, how long one may take, and
//! how many in a row take a peer out or bring it back. Running the checks
//! is `upstream::health`'s.

use std::time::Duration;

use toml::Spanned;

use crate::config::error::{ConfigError, Source};
use crate::config::file::RawHealth;
use crate::config::model::{Health, HealthRequest, Protocol, StatusMatch};

/// Default time between two rounds of checks.
const INTERVAL: Duration = Duration::from_secs(2);
/// Default time one check may take.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Default failed (and passed) checks in a row that change a peer's state.
const IN_A_ROW: u32 = 2;

/// Headers a check may not set: moongate writes them itself (or they
/// would change the framing of the check).
const OWN_HEADERS: &[&str] = &[
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "te",
    "upgrade",
    "keep-alive",
];

/// Validates `health`. `ready` is the managed workers' `ready` path, the
/// default `path` of their checks: a managed pool with `ready` and no
/// `health` is checked on it with the defaults (its ready probe goes on
/// after the start, as a supervisor's heartbeat would).
pub(super) fn health(
    src: &Source<'_>,
    raw: Option<&Spanned<RawHealth>>,
    protocol: Protocol,
    ready: Option<&str>,
) -> Result<Option<Health>, ConfigError> {
    let Some(spanned) = raw else {
        return Ok(ready.map(|path| Health {
            interval: INTERVAL,
            timeout: TIMEOUT,
            fails: IN_A_ROW,
            passes: IN_A_ROW,
            request: Some(HealthRequest {
                path: path.to_owned(),
                host: None,
                headers: Vec::new(),
                expect: vec![StatusMatch::Class(2)],
            }),
        }));
    };
    let raw = spanned.get_ref();
    let positive =
        |v: &Option<Spanned<crate::config::units::Dur>>, key: &str, default: Duration| match v {
            None => Ok(default),
            Some(d) if d.get_ref().0.is_zero() => Err(src.err(
                d.span(),
                format!(
                    "health `{key}` must be longer than 0s, like \"{}s\"",
                    default.as_secs()
                ),
            )),
            Some(d) => Ok(d.get_ref().0),
        };
    let interval = positive(&raw.interval, "interval", INTERVAL)?;
    let timeout = positive(&raw.timeout, "timeout", TIMEOUT)?;
    let count = |v: &Option<Spanned<u32>>, key: &str| match v {
        None => Ok(IN_A_ROW),
        Some(n) if *n.get_ref() == 0 => Err(src.err(
            n.span(),
            format!("health `{key}` counts checks in a row and must be 1 or more"),
        )),
        Some(n) => Ok(*n.get_ref()),
    };
    let fails = count(&raw.fails, "fails")?;
    let passes = count(&raw.passes, "passes")?;
    let tcp = match &raw.kind {
        None => false,
        Some(k) => match k.get_ref().as_str() {
            "http" => false,
            "tcp" => true,
            other => {
                let message = format!(
                    "unknown health type \"{other}\"; expected \"http\" (a GET in the upstream's protocol, the default) or \"tcp\" (a connect only)"
                );
                return Err(src.err(k.span(), message));
            }
        },
    };
    let request = if tcp {
        let asking = [
            ("path", raw.path.as_ref().map(Spanned::span)),
            ("expect", raw.expect.as_ref().map(Spanned::span)),
            ("host", raw.host.as_ref().map(Spanned::span)),
            ("headers", raw.headers.as_ref().map(Spanned::span)),
        ];
        if let Some((key, Some(span))) = asking.into_iter().find(|(_, s)| s.is_some()) {
            let message = format!(
                "health type = \"tcp\" only connects, so `{key}` has no use; remove it or drop `type` for a GET"
            );
            return Err(src.err(span, message));
        }
        None
    } else {
        Some(request(src, spanned, protocol, ready)?)
    };
    Ok(Some(Health {
        interval,
        timeout,
        fails,
        passes,
        request,
    }))
}

/// The GET of a check.
fn request(
    src: &Source<'_>,
    spanned: &Spanned<RawHealth>,
    protocol: Protocol,
    ready: Option<&str>,
) -> Result<HealthRequest, ConfigError> {
    let raw = spanned.get_ref();
    let path = match (&raw.path, ready) {
        (Some(p), _) => {
            let text = p.get_ref();
            let bad = |c: char| c.is_ascii_whitespace() || c.is_ascii_control();
            if !text.starts_with('/') || text.contains(bad) {
                let message = format!(
                    "health `path` \"{text}\" must start with `/` and hold no spaces, like \"/healthz\""
                );
                return Err(src.err(p.span(), message));
            }
            text.clone()
        }
        (None, Some(ready)) => ready.to_owned(),
        (None, None) if protocol == Protocol::Fastcgi => {
            let message = "health of a fastcgi upstream needs a `path` naming a script (or PHP-FPM's `ping.path`), like path = \"/ping\"";
            return Err(src.err(spanned.span(), message));
        }
        (None, None) => "/".to_owned(),
    };
    let host = match &raw.host {
        None => None,
        Some(h) => {
            if h.get_ref().parse::<http::uri::Authority>().is_err() {
                let message = format!(
                    "health `host` \"{}\" is not a host name (with an optional :port)",
                    h.get_ref()
                );
                return Err(src.err(h.span(), message));
            }
            Some(h.get_ref().clone())
        }
    };
    let mut headers = Vec::new();
    for (name, value) in raw.headers.iter().flat_map(|h| h.get_ref()) {
        let at = value.span();
        let Ok(parsed) = http::HeaderName::from_bytes(name.as_bytes()) else {
            return Err(src.err(
                at,
                format!("health header name `{name}` is not a valid header name"),
            ));
        };
        if OWN_HEADERS.contains(&parsed.as_str()) {
            let message = if parsed == http::header::HOST {
                "set the Host of a check with health `host`, not in `headers`".to_owned()
            } else {
                format!("health `headers` cannot set `{name}`: moongate writes it itself")
            };
            return Err(src.err(at, message));
        }
        if http::HeaderValue::from_str(value.get_ref()).is_err() {
            let message =
                format!("the value of health header `{name}` is not a valid header value");
            return Err(src.err(at, message));
        }
        headers.push((parsed.as_str().to_owned(), value.get_ref().clone()));
    }
    let expect = match &raw.expect {
        None => vec![StatusMatch::Class(2)],
        Some(e) => expect(e.get_ref()).map_err(|m| src.err(e.span(), m))?,
    };
    Ok(HealthRequest {
        path,
        host,
        headers,
        expect,
    })
}

/// `expect`: "2xx", "301", 301, or a non-empty list of those.
fn expect(value: &toml::Value) -> Result<Vec<StatusMatch>, String> {
    let one = |v: &toml::Value| -> Result<StatusMatch, String> {
        let usage = "write a status class like \"2xx\", a status like 204, or a list of them";
        match v {
            toml::Value::Integer(n) => match u16::try_from(*n) {
                Ok(code @ 100..=599) => Ok(StatusMatch::Code(code)),
                _ => Err(format!(
                    "health `expect` {n} is not an HTTP status; {usage}"
                )),
            },
            toml::Value::String(s) => {
                let lower = s.to_ascii_lowercase();
                if let Some(class) = lower.strip_suffix("xx")
                    && let Ok(c @ 1..=5) = class.parse::<u8>()
                {
                    return Ok(StatusMatch::Class(c));
                }
                match s.parse::<u16>() {
                    Ok(code @ 100..=599) => Ok(StatusMatch::Code(code)),
                    _ => Err(format!(
                        "health `expect` \"{s}\" is not a status or class; {usage}"
                    )),
                }
            }
            other => Err(format!(
                "health `expect` cannot be a {}; {usage}",
                other.type_str()
            )),
        }
    };
    match value {
        toml::Value::Array(list) if list.is_empty() => {
            Err("health `expect` is an empty list, so no check could pass; write \"2xx\"".into())
        }
        toml::Value::Array(list) => list.iter().map(one).collect(),
        v => Ok(vec![one(v)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use crate::config::rejected as err;

    fn health(extra: &str) -> Option<Health> {
        let text =
            format!("[upstream.app]\nservers = [{{ addr = \"127.0.0.1:8001\" }}]\n{extra}\n");
        let config = load_str("t.toml", &text).expect("the upstream should load");
        config
            .upstreams
            .into_values()
            .next()
            .expect("one upstream")
            .health
    }

    #[test]
    fn defaults() {
        assert_eq!(health(""), None);
        let h = health("health = {}").unwrap();
        assert_eq!(
            (h.interval, h.timeout, h.fails, h.passes),
            (Duration::from_secs(2), Duration::from_secs(1), 2, 2)
        );
        let r = h.request.unwrap();
        assert_eq!(r.path, "/");
        assert_eq!(r.host, None);
        assert!(r.headers.is_empty());
        assert_eq!(r.expect, vec![StatusMatch::Class(2)]);
        assert!(r.accepts(204) && !r.accepts(301) && !r.accepts(500));
    }

    #[test]
    fn every_key() {
        let h = health(
            "health = { path = \"/healthz?full=1\", interval = \"500ms\", timeout = \"250ms\", fails = 3, passes = 1, expect = [\"2xx\", 301, \"418\"], host = \"app.local:8080\", headers = { X-Check = \"yes\" } }",
        )
        .unwrap();
        assert_eq!(h.interval, Duration::from_millis(500));
        assert_eq!(h.timeout, Duration::from_millis(250));
        assert_eq!((h.fails, h.passes), (3, 1));
        let r = h.request.unwrap();
        assert_eq!(r.path, "/healthz?full=1");
        assert_eq!(r.host.as_deref(), Some("app.local:8080"));
        assert_eq!(r.headers, vec![("x-check".into(), "yes".into())]);
        assert!(r.accepts(200) && r.accepts(301) && r.accepts(418) && !r.accepts(302));
        let tcp = health("health = { type = \"tcp\", interval = \"1s\" }").unwrap();
        assert_eq!(tcp.request, None);
        assert_eq!(
            health("health = { expect = 503 }")
                .unwrap()
                .request
                .unwrap()
                .expect,
            vec![StatusMatch::Code(503)]
        );
    }

    #[test]
    fn a_managed_pool_checks_its_ready_path_by_default() {
        let text = "[upstream.app]\nhealth = { interval = \"1s\" }\n\n[upstream.app.workers]\ncommand = [\"app\", \"{socket}\"]\nready = \"/ready\"\n";
        let config = load_str("t.toml", text).expect("loads");
        let up = config.upstreams.into_values().next().expect("one upstream");
        let request = up.health.and_then(|h| h.request).expect("a GET");
        assert_eq!(request.path, "/ready");
    }

    #[test]
    fn a_managed_pool_with_ready_is_checked_without_a_health_block() {
        let pool = "[upstream.app.workers]\ncommand = [\"app\", \"{socket}\"]\n";
        let with_ready = format!("[upstream.app]\n\n{pool}ready = \"/ready\"\n");
        let up = load_str("t.toml", &with_ready)
            .expect("loads")
            .upstreams
            .into_values()
            .next()
            .expect("one upstream");
        let health = up.health.expect("checked by default");
        assert_eq!((health.interval, health.timeout), (INTERVAL, TIMEOUT));
        assert_eq!(health.request.expect("a GET").path, "/ready");
        let without = format!("[upstream.app]\n\n{pool}");
        let up = load_str("t.toml", &without)
            .expect("loads")
            .upstreams
            .into_values()
            .next()
            .expect("one upstream");
        assert!(up.health.is_none(), "no ready probe: nothing to check with");
    }

    #[test]
    fn errors_name_the_line() {
        let up = "[upstream.app]\nservers = [{ addr = \"127.0.0.1:8001\" }]\n";
        let cases = [
            ("health = { type = \"udp\" }", "unknown health type \"udp\""),
            (
                "health = { type = \"tcp\", path = \"/x\" }",
                "`path` has no use",
            ),
            ("health = { path = \"healthz\" }", "must start with `/`"),
            (
                "health = { interval = \"0s\" }",
                "`interval` must be longer than 0s",
            ),
            ("health = { fails = 0 }", "must be 1 or more"),
            ("health = { expect = \"6xx\" }", "not a status or class"),
            ("health = { expect = [] }", "empty list"),
            ("health = { expect = 42 }", "not an HTTP status"),
            ("health = { headers = { Host = \"x\" } }", "health `host`"),
            (
                "health = { headers = { \"a b\" = \"x\" } }",
                "not a valid header name",
            ),
            ("health = { host = \"a b\" }", "not a host name"),
            ("health = { pat = \"/\" }", "unknown key `pat`"),
        ];
        for (line, needle) in cases {
            let message = err(&format!("{up}{line}\n"));
            assert!(message.contains(needle), "{line}: {message}");
            assert!(message.contains("t.toml:3"), "{line}: {message}");
        }
        let fcgi = "[upstream.php]\nprotocol = \"fastcgi\"\nroot = \"/srv\"\nservers = [{ addr = \"127.0.0.1:9000\" }]\nhealth = {}\n";
        let message = err(fcgi);
        assert!(
            message.contains("needs a `path`") && message.contains("t.toml:5"),
            "{message}"
        );
    }

    #[test]
    fn the_definition_is_part_of_the_upstreams_identity() {
        let a = health("health = { path = \"/a\" }");
        let b = health("health = { path = \"/b\" }");
        assert_ne!(a, b);
        let load = |extra: &str| {
            let text =
                format!("[upstream.app]\nservers = [{{ addr = \"127.0.0.1:8001\" }}]\n{extra}\n");
            load_str("t.toml", &text)
                .unwrap()
                .upstreams
                .into_values()
                .next()
                .unwrap()
        };
        assert_eq!(
            load("health = { path = \"/a\" }"),
            load("health = { path = \"/a\" }")
        );
        assert_ne!(
            load("health = { path = \"/a\" }"),
            load("health = { path = \"/a\", fails = 3 }")
        );
        assert_ne!(load(""), load("health = {}"));
    }
}
