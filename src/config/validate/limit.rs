//! `[limit.NAME]` → [`LimitZone`]: a token-bucket zone (`rate`, `burst`) or a
//! concurrency zone (`kind = "conn"`, `max`), its key template, status and
//! scope (`"redis"` needs a `[redis]` table and a rate zone).

use toml::Spanned;

use crate::config::error::{ConfigError, Place, Source};
use crate::config::file::RawLimit;
use crate::config::model::{LimitKind, LimitScope, LimitZone, OnRedisError, RedisSettings};
use crate::limit::Rate;
use crate::vars::VarTemplate;

/// The key when a zone names none: one bucket per client address.
const DEFAULT_KEY: &str = "$remote_addr";

/// Validates one zone definition.
pub(super) fn zone(
    src: &Source<'_>,
    name: &Spanned<String>,
    def: &Spanned<RawLimit>,
    place: Place,
    redis: Option<&RedisSettings>,
) -> Result<LimitZone, ConfigError> {
    let raw = def.get_ref();
    let ok_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if name.get_ref().is_empty() || !name.get_ref().chars().all(ok_name) {
        let message = format!(
            "limit zone name `{}` may only use letters, digits, `_` and `-`",
            name.get_ref()
        );
        return Err(src.err(name.span(), message));
    }
    let kind = match raw.kind.as_ref().map(|k| (k.get_ref().as_str(), k.span())) {
        None | Some(("rate", _)) => rate_kind(src, def, raw)?,
        Some(("conn", _)) => conn_kind(src, def, raw)?,
        Some((other, span)) => {
            let message = format!(
                "unknown limit kind \"{other}\"; use \"rate\" (token bucket) or \"conn\" (requests in flight)"
            );
            return Err(src.err(span, message));
        }
    };
    let key = match &raw.key {
        None => DEFAULT_KEY.to_owned(),
        Some(k) => {
            VarTemplate::parse(k.get_ref()).map_err(|m| src.err(k.span(), m))?;
            k.get_ref().clone()
        }
    };
    let status = match &raw.status {
        None => 429,
        Some(s) => match u16::try_from(*s.get_ref()) {
            Ok(code @ 400..=599) => code,
            _ => {
                let message = format!(
                    "`status` {} is not an error status; use one from 400 to 599 (429 is usual)",
                    s.get_ref()
                );
                return Err(src.err(s.span(), message));
            }
        },
    };
    let scope = scope(src, raw, &kind, redis)?;
    Ok(LimitZone {
        name: name.get_ref().clone(),
        kind,
        key,
        status,
        headers: raw.headers.unwrap_or(true),
        scope,
        place,
    })
}

/// `scope` and `on_redis_error`: a redis-scope zone is a rate zone and
/// needs `[redis]`; `on_redis_error` means nothing elsewhere.
fn scope(
    src: &Source<'_>,
    raw: &RawLimit,
    kind: &LimitKind,
    redis: Option<&RedisSettings>,
) -> Result<LimitScope, ConfigError> {
    let span = match raw.scope.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("local", _)) => {
            if let Some(e) = &raw.on_redis_error {
                let message = "`on_redis_error` only applies to zones with scope = \"redis\"";
                return Err(src.err(e.span(), message));
            }
            return Ok(LimitScope::Local);
        }
        Some(("redis", span)) => span,
        Some((other, span)) => {
            let message = format!("unknown scope \"{other}\"; use \"local\" or \"redis\"");
            return Err(src.err(span, message));
        }
    };
    if let LimitKind::Conn { .. } = kind {
        let message = "scope = \"redis\" is not supported for kind = \"conn\" zones: requests in flight are counted on each node; use scope = \"local\"";
        return Err(src.err(span, message));
    }
    let Some(redis) = redis else {
        let message = "scope = \"redis\" needs a [redis] table with the Redis every node shares, like [redis] url = \"redis://127.0.0.1:6379\" (or cluster = [...] for a Redis Cluster)";
        return Err(src.err(span, message));
    };
    let on_error = match raw
        .on_redis_error
        .as_ref()
        .map(|e| (e.get_ref().as_str(), e.span()))
    {
        None | Some(("local", _)) => OnRedisError::Local,
        Some(("allow", _)) => OnRedisError::Allow,
        Some(("deny", _)) => OnRedisError::Deny,
        Some((other, span)) => {
            let message = format!(
                "unknown on_redis_error \"{other}\"; use \"local\" (this node's bucket), \"allow\" or \"deny\""
            );
            return Err(src.err(span, message));
        }
    };
    Ok(LimitScope::Redis {
        redis: redis.clone(),
        on_error,
    })
}

fn rate_kind(
    src: &Source<'_>,
    def: &Spanned<RawLimit>,
    raw: &RawLimit,
) -> Result<LimitKind, ConfigError> {
    if let Some(max) = &raw.max {
        let message =
            "`max` belongs to kind = \"conn\" zones; a rate zone takes `rate` and `burst`";
        return Err(src.err(max.span(), message));
    }
    let Some(text) = &raw.rate else {
        let message =
            "a rate limit zone needs `rate`, like rate = \"100/s\" (or kind = \"conn\" with `max`)";
        return Err(src.err(def.span(), message));
    };
    let rate = Rate::parse(text.get_ref()).map_err(|m| src.err(text.span(), m))?;
    let burst = match &raw.burst {
        // One second's worth, at least one.
        None => u32::try_from(rate.per_second().ceil() as u64)
            .unwrap_or(u32::MAX)
            .max(1),
        Some(b) => positive(src, b, "burst")?,
    };
    Ok(LimitKind::Rate { rate, burst })
}

fn conn_kind(
    src: &Source<'_>,
    def: &Spanned<RawLimit>,
    raw: &RawLimit,
) -> Result<LimitKind, ConfigError> {
    for (key, value) in [
        ("rate", raw.rate.as_ref().map(Spanned::span)),
        ("burst", raw.burst.as_ref().map(Spanned::span)),
    ] {
        if let Some(span) = value {
            let message =
                format!("`{key}` belongs to rate zones; a kind = \"conn\" zone takes `max`");
            return Err(src.err(span, message));
        }
    }
    let Some(max) = &raw.max else {
        let message = "a kind = \"conn\" zone needs `max`, the requests in flight allowed per key";
        return Err(src.err(def.span(), message));
    };
    Ok(LimitKind::Conn {
        max: positive(src, max, "max")?,
    })
}

fn positive(src: &Source<'_>, v: &Spanned<i64>, what: &str) -> Result<u32, ConfigError> {
    match u32::try_from(*v.get_ref()) {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(src.err(
            v.span(),
            format!("`{what}` must be a whole number from 1 to {}", u32::MAX),
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::model::LimitKind;
    use crate::config::{load_str, rejected as err};

    const APP: &str = "[upstream.app]\nservers = [{ addr = \"127.0.0.1:8001\" }]\n";

    #[test]
    fn zones_with_defaults_and_routes_naming_them() {
        let c = load_str(
            "t",
            &format!(
                "{APP}[limit.a]\nrate = \"600/m\"\n[limit.b]\nkind = \"conn\"\nmax = 3\nkey = \"$http_x_key\"\nstatus = 503\nheaders = false\n[[route]]\npath = \"/\"\nupstream = \"app\"\nlimit = [\"a\", \"b\", \"a\"]\n"
            ),
        )
        .expect("valid");
        let a = &c.limits["a"];
        assert_eq!(a.key, "$remote_addr");
        assert_eq!(a.status, 429);
        assert!(a.headers);
        match a.kind {
            LimitKind::Rate { rate, burst } => {
                assert_eq!(rate.to_string(), "600/m");
                assert_eq!(burst, 10, "one second's worth by default");
            }
            LimitKind::Conn { .. } => panic!("a is a rate zone"),
        }
        let b = &c.limits["b"];
        assert_eq!(b.kind, LimitKind::Conn { max: 3 });
        assert_eq!((b.status, b.headers), (503, false));
        assert_eq!(c.routes[0].limits, ["a", "b"]);
        let one = load_str(
            "t",
            &format!("{APP}[limit.a]\nrate = \"1/s\"\n[[route]]\npath = \"/\"\nupstream = \"app\"\nlimit = \"a\"\n"),
        )
        .expect("valid");
        assert_eq!(one.routes[0].limits, ["a"]);
    }

    #[test]
    fn redis_zones_carry_the_redis_table_and_their_fallback() {
        use crate::config::model::{LimitScope, OnRedisError};
        let c = load_str(
            "t",
            "[redis]\nurl = \"redis://127.0.0.1:6379\"\ntimeout = \"30ms\"\n[limit.a]\nrate = \"10/s\"\nscope = \"redis\"\n[limit.b]\nrate = \"10/s\"\nscope = \"redis\"\non_redis_error = \"deny\"\n[limit.c]\nrate = \"10/s\"\n",
        )
        .expect("valid");
        match &c.limits["a"].scope {
            LimitScope::Redis { redis, on_error } => {
                assert_eq!(
                    redis.target,
                    crate::config::RedisTarget::Server("redis://127.0.0.1:6379".into())
                );
                assert_eq!(redis.timeout, std::time::Duration::from_millis(30));
                assert_eq!(*on_error, OnRedisError::Local);
            }
            LimitScope::Local => panic!("a is a redis zone"),
        }
        assert!(matches!(
            c.limits["b"].scope,
            LimitScope::Redis {
                on_error: OnRedisError::Deny,
                ..
            }
        ));
        assert_eq!(c.limits["c"].scope, LimitScope::Local);
        // The zone's definition includes the Redis it uses.
        let other = load_str(
            "t",
            "[redis]\nurl = \"redis://127.0.0.1:6380\"\ntimeout = \"30ms\"\n[limit.a]\nrate = \"10/s\"\nscope = \"redis\"\n",
        )
        .expect("valid");
        assert!(!c.limits["a"].same_definition(&other.limits["a"]));
        assert!(c.limits["a"].same_definition(&c.limits["a"].clone()));
    }

    #[test]
    fn mistakes_name_their_place() {
        let e = err("[limit.a]\nrate = \"100 per second\"\n");
        assert!(e.starts_with("t.toml:2:8: rate must look like"), "{e}");
        assert_eq!(
            err("[limit.a]\nburst = 5\n"),
            "t.toml:1:1: a rate limit zone needs `rate`, like rate = \"100/s\" (or kind = \"conn\" with `max`)"
        );
        assert!(
            err("[limit.a]\nrate = \"1/s\"\nburst = 0\n")
                .starts_with("t.toml:3:9: `burst` must be")
        );
        assert!(err("[limit.a]\nkind = \"conn\"\n").contains("needs `max`"));
        assert!(
            err("[limit.a]\nkind = \"conn\"\nmax = 2\nrate = \"1/s\"\n")
                .contains("`rate` belongs to rate zones")
        );
        assert!(err("[limit.a]\nkind = \"leaky\"\n").contains("unknown limit kind \"leaky\""));
        assert!(err("[limit.a]\nrate = \"1/s\"\nstatus = 200\n").contains("not an error status"));
        assert!(
            err("[limit.a]\nrate = \"1/s\"\nkey = \"$nope\"\n")
                .contains("unknown variable `$nope`")
        );
        assert_eq!(
            err("[limit.a]\nrate = \"1/s\"\nscope = \"redis\"\n"),
            "t.toml:3:9: scope = \"redis\" needs a [redis] table with the Redis every node shares, like [redis] url = \"redis://127.0.0.1:6379\" (or cluster = [...] for a Redis Cluster)"
        );
        let redis = "[redis]\nurl = \"redis://127.0.0.1:6379\"\n";
        assert!(
            err(&format!(
                "{redis}[limit.a]\nkind = \"conn\"\nmax = 2\nscope = \"redis\"\n"
            ))
            .contains("not supported for kind = \"conn\"")
        );
        assert!(
            err(&format!(
                "{redis}[limit.a]\nrate = \"1/s\"\nscope = \"redis\"\non_redis_error = \"panic\"\n"
            ))
            .starts_with("t.toml:6:18: unknown on_redis_error \"panic\"")
        );
        assert!(
            err(&format!(
                "{redis}[limit.a]\nrate = \"1/s\"\nscope = \"global\"\n"
            ))
            .contains("unknown scope \"global\"")
        );
        assert!(
            err("[limit.a]\nrate = \"1/s\"\non_redis_error = \"allow\"\n")
                .contains("only applies to zones with scope")
        );
        assert!(err("[limit.a]\nrate = \"1/s\"\nrated = 2\n").contains("rated"));
        let e = err(&format!(
            "{APP}[[route]]\npath = \"/\"\nupstream = \"app\"\nlimit = [\"x\"]\n"
        ));
        assert_eq!(
            e,
            "t.toml:6:10: route names limit zone `x`, which is not defined (no [limit.NAME] zones are defined)"
        );
    }
}
