//! `[redis]` → [`RedisSettings`]: the Redis that `scope = "redis"` zones
//! share. The URL is parsed here (so a typo is a config error with its
//! place), never connected to: nodes connect when they first need it.

use std::time::Duration;

use redis::IntoConnectionInfo;

use crate::config::error::{ConfigError, Source};
use crate::config::file::RawFile;
use crate::config::model::RedisSettings;

/// Time allowed for one Redis call when `timeout` is not set.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// The one `[redis]` table of conf.d, if any file has it.
pub(super) fn settings(
    parsed: &[(&Source<'_>, &RawFile)],
) -> Result<Option<RedisSettings>, ConfigError> {
    let Some((src, def)) = super::only_one(parsed, "[redis]", |raw| raw.redis.as_ref())? else {
        return Ok(None);
    };
    let raw = def.get_ref();
    let url = raw.url.get_ref().trim();
    if url.is_empty() {
        let message = "`url` in [redis] is empty; write it like \"redis://127.0.0.1:6379\"";
        return Err(src.err(raw.url.span(), message));
    }
    if let Err(e) = url.into_connection_info() {
        let message = format!(
            "`url` \"{url}\" is not a Redis URL ({e}); write it like \"redis://127.0.0.1:6379\" or \"redis://:password@host:6379/0\""
        );
        return Err(src.err(raw.url.span(), message));
    }
    let timeout = match &raw.timeout {
        None => DEFAULT_TIMEOUT,
        Some(t) if t.get_ref().0.is_zero() => {
            return Err(src.err(t.span(), "`timeout` in [redis] must be more than 0"));
        }
        Some(t) => t.get_ref().0,
    };
    Ok(Some(RedisSettings {
        url: url.to_owned(),
        timeout,
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{load_str, rejected as err};

    #[test]
    fn url_and_timeout_with_a_default() {
        let c = load_str("t", "[redis]\nurl = \"redis://127.0.0.1:6379\"\n").expect("valid");
        let r = c.redis.expect("[redis]");
        assert_eq!(r.url, "redis://127.0.0.1:6379");
        assert_eq!(r.timeout, Duration::from_millis(50));
        let c = load_str(
            "t",
            "[redis]\nurl = \"redis://h:1/2\"\ntimeout = \"20ms\"\n",
        )
        .expect("valid");
        assert_eq!(c.redis.expect("[redis]").timeout, Duration::from_millis(20));
        assert!(load_str("t", "").expect("valid").redis.is_none());
    }

    #[test]
    fn mistakes_name_their_place() {
        assert_eq!(
            err("[redis]\ntimeout = \"1s\"\n"),
            "t.toml:1:1: [redis] is missing `url`"
        );
        let e = err("[redis]\nurl = \"http://127.0.0.1:6379\"\n");
        assert!(
            e.starts_with("t.toml:2:7: `url` \"http://127.0.0.1:6379\" is not a Redis URL"),
            "{e}"
        );
        assert!(err("[redis]\nurl = \"\"\n").contains("`url` in [redis] is empty"));
        assert!(
            err("[redis]\nurl = \"redis://h\"\ntimeout = \"0s\"\n")
                .starts_with("t.toml:3:11: `timeout` in [redis] must be more than 0")
        );
        assert!(
            err("[redis]\nurl = \"redis://h\"\ntimeout = \"soon\"\n").contains("not a duration")
        );
        assert!(err("[redis]\nurl = \"redis://h\"\npool = 3\n").contains("pool"));
    }
}
