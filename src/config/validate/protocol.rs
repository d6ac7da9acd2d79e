//! `protocol`, `params`, `root` and `h2_connections` of an
//! `[upstream.NAME]`: which protocol the peers speak, the CGI variables a
//! CGI-style protocol (uwsgi, fastcgi) adds to those built from the request,
//! where a FastCGI server finds the scripts, and how many HTTP/2
//! connections an h2 or gRPC upstream opens per peer. Nothing here knows
//! how a protocol is spoken.

use std::collections::BTreeMap;
use std::path::PathBuf;

use toml::Spanned;

use crate::config::error::{ConfigError, Source};
use crate::config::model::Protocol;

/// `protocol = "..."`; "http1" when absent.
pub(super) fn protocol(
    src: &Source<'_>,
    raw: Option<&Spanned<String>>,
) -> Result<Protocol, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Protocol::Http1);
    };
    match raw.get_ref().as_str() {
        "http1" => Ok(Protocol::Http1),
        "uwsgi" => Ok(Protocol::Uwsgi),
        "h2" => Ok(Protocol::H2),
        "grpc" => Ok(Protocol::Grpc),
        "fastcgi" => Ok(Protocol::Fastcgi),
        other => Err(src.err(
            raw.span(),
            format!(
                "unknown protocol \"{other}\"; expected \"http1\", \"h2\", \"grpc\", \"uwsgi\" or \"fastcgi\""
            ),
        )),
    }
}

/// `params = { NAME = "value" }`: only with a CGI-style protocol; names are
/// CGI variable names, values `$var` templates.
pub(super) fn params(
    src: &Source<'_>,
    protocol: Protocol,
    raw: Option<&Spanned<BTreeMap<String, Spanned<String>>>>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(BTreeMap::new());
    };
    if !protocol.is_cgi() {
        let message = format!(
            "`params` are CGI variables for protocol = \"uwsgi\" or \"fastcgi\"; protocol = \"{}\" has none (set headers from Lua instead)",
            protocol.as_str()
        );
        return Err(src.err(raw.span(), message));
    }
    let ok_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let mut out = BTreeMap::new();
    for (name, value) in raw.get_ref() {
        if name.is_empty() || !name.chars().all(ok_name) {
            let message =
                format!("`params` name \"{name}\" may only use letters, digits, `_`, `.` and `-`");
            return Err(src.err(value.span(), message));
        }
        crate::vars::VarTemplate::parse(value.get_ref()).map_err(|m| src.err(value.span(), m))?;
        out.insert(name.clone(), value.get_ref().clone());
    }
    Ok(out)
}

/// `h2_connections = N`: only with an HTTP/2 protocol; 1 to 64, default 1.
pub(super) fn h2_connections(
    src: &Source<'_>,
    protocol: Protocol,
    raw: Option<&Spanned<usize>>,
) -> Result<usize, ConfigError> {
    let Some(raw) = raw else { return Ok(1) };
    if !protocol.is_h2() {
        let message = format!(
            "`h2_connections` is for protocol = \"h2\" or \"grpc\"; this upstream speaks \"{}\"",
            protocol.as_str()
        );
        return Err(src.err(raw.span(), message));
    }
    match *raw.get_ref() {
        n @ 1..=64 => Ok(n),
        n => Err(src.err(
            raw.span(),
            format!("`h2_connections` = {n}: give 1 to 64 connections per peer and worker thread"),
        )),
    }
}

/// `root = "/path"`: only with protocol = "fastcgi", where it (or
/// `SCRIPT_FILENAME` in `params`) says which script runs. Resolved against
/// the prefix, not checked on disk: it names a directory on the FastCGI
/// server, which may be another machine or container.
pub(super) fn root(
    src: &Source<'_>,
    protocol: Protocol,
    raw: Option<&Spanned<String>>,
    params: &BTreeMap<String, String>,
    upstream: &Spanned<String>,
    prefix: &std::path::Path,
) -> Result<Option<PathBuf>, ConfigError> {
    match raw {
        Some(root) if protocol != Protocol::Fastcgi => {
            let message = format!(
                "`root` is where a FastCGI server finds the scripts, for protocol = \"fastcgi\"; this upstream speaks \"{}\"",
                protocol.as_str()
            );
            Err(src.err(root.span(), message))
        }
        Some(root) if root.get_ref().is_empty() || root.get_ref().contains('\0') => Err(src.err(
            root.span(),
            "`root` must name the directory holding the scripts, like \"/srv/app/public\"",
        )),
        Some(root) => {
            // Without a trailing slash, so root + "/index.php" is one path.
            let path = prefix.join(root.get_ref());
            let text = path.to_string_lossy();
            let trimmed = text.trim_end_matches('/');
            Ok(Some(PathBuf::from(if trimmed.is_empty() {
                "/"
            } else {
                trimmed
            })))
        }
        None if protocol == Protocol::Fastcgi && !params.contains_key("SCRIPT_FILENAME") => {
            let message = format!(
                "[upstream.{}] speaks fastcgi but says no script to run: set `root = \"/srv/app/public\"` (SCRIPT_FILENAME = root + path) or give SCRIPT_FILENAME in `params`",
                upstream.get_ref()
            );
            Err(src.err(upstream.span(), message))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::model::Protocol;
    use crate::config::{load_str, rejected as err};

    const ONE: &str = "servers = [{ addr = \"127.0.0.1:8001\" }]\n";

    #[test]
    fn http1_by_default_and_uwsgi_with_params() {
        let config = load_str("t.toml", &format!("[upstream.app]\n{ONE}")).unwrap();
        let up = &config.upstreams["app"];
        assert_eq!(up.protocol, Protocol::Http1);
        assert!(up.params.is_empty());
        let text = format!(
            "[upstream.app]\nprotocol = \"uwsgi\"\nparams = {{ SCRIPT_NAME = \"/app\", X_HOST = \"$host\" }}\n{ONE}"
        );
        let config = load_str("t.toml", &text).unwrap();
        let up = &config.upstreams["app"];
        assert_eq!(up.protocol, Protocol::Uwsgi);
        assert_eq!(up.params["SCRIPT_NAME"], "/app");
        assert_eq!(up.params["X_HOST"], "$host");
        // A changed protocol or params is another pool.
        let plain = load_str("t.toml", &format!("[upstream.app]\n{ONE}")).unwrap();
        assert_ne!(plain.upstreams["app"], *up);
    }

    #[test]
    fn other_protocols_are_refused_at_their_line() {
        assert_eq!(
            err(&format!("[upstream.app]\nprotocol = \"h3\"\n{ONE}")),
            "t.toml:2:12: unknown protocol \"h3\"; expected \"http1\", \"h2\", \"grpc\", \"uwsgi\" or \"fastcgi\""
        );
    }

    #[test]
    fn h2_and_grpc_with_their_connection_bound() {
        for (name, protocol) in [("h2", Protocol::H2), ("grpc", Protocol::Grpc)] {
            let text = format!("[upstream.app]\nprotocol = \"{name}\"\n{ONE}");
            let up = &load_str("t.toml", &text).unwrap().upstreams["app"];
            assert_eq!((up.protocol, up.h2_connections), (protocol, 1));
        }
        let text = format!("[upstream.app]\nprotocol = \"h2\"\nh2_connections = 4\n{ONE}");
        assert_eq!(
            load_str("t.toml", &text).unwrap().upstreams["app"].h2_connections,
            4
        );
        let e = err(&format!(
            "[upstream.app]\nprotocol = \"grpc\"\nh2_connections = 0\n{ONE}"
        ));
        assert!(
            e.starts_with("t.toml:3:18: `h2_connections` = 0: give 1 to 64"),
            "{e}"
        );
        let e = err(&format!("[upstream.app]\nh2_connections = 2\n{ONE}"));
        assert!(
            e.starts_with("t.toml:2:18: `h2_connections` is for protocol = \"h2\""),
            "{e}"
        );
        let e = err(&format!(
            "[upstream.app]\nprotocol = \"grpc\"\nparams = {{ A = \"1\" }}\n{ONE}"
        ));
        assert!(e.contains("protocol = \"grpc\" has none"), "{e}");
    }

    #[test]
    fn fastcgi_with_a_root_or_a_script_filename_param() {
        let text = format!("[upstream.php]\nprotocol = \"fastcgi\"\nroot = \"/srv/www/\"\n{ONE}");
        let config = load_str("t.toml", &text).unwrap();
        let up = &config.upstreams["php"];
        assert_eq!(up.protocol, Protocol::Fastcgi);
        assert_eq!(up.root.as_deref(), Some(std::path::Path::new("/srv/www")));
        // A relative root is the prefix's (here the working directory).
        let text = format!("[upstream.php]\nprotocol = \"fastcgi\"\nroot = \"public\"\n{ONE}");
        let config = load_str("t.toml", &text).unwrap();
        let root = config.upstreams["php"].root.clone().unwrap();
        assert!(root.is_absolute() && root.ends_with("public"), "{root:?}");
        let text = format!(
            "[upstream.php]\nprotocol = \"fastcgi\"\nparams = {{ SCRIPT_FILENAME = \"/srv/index.php\" }}\n{ONE}"
        );
        let config = load_str("t.toml", &text).unwrap();
        let up = &config.upstreams["php"];
        assert_eq!(up.root, None);
        assert_eq!(up.params["SCRIPT_FILENAME"], "/srv/index.php");
        // Another root is another pool.
        let other = format!("[upstream.php]\nprotocol = \"fastcgi\"\nroot = \"/srv/b\"\n{ONE}");
        let a = load_str("t.toml", &other.replace("/srv/b", "/srv/a")).unwrap();
        let b = load_str("t.toml", &other).unwrap();
        assert_ne!(a.upstreams["php"], b.upstreams["php"]);
        assert_eq!(a.upstreams["php"], a.clone().upstreams["php"]);
    }

    #[test]
    fn fastcgi_needs_a_script_and_root_needs_fastcgi() {
        let e = err(&format!("\n[upstream.php]\nprotocol = \"fastcgi\"\n{ONE}"));
        assert!(
            e.starts_with(
                "t.toml:2:11: [upstream.php] speaks fastcgi but says no script to run: set `root"
            ),
            "{e}"
        );
        assert!(e.contains("SCRIPT_FILENAME in `params`"), "{e}");
        let e = err(&format!("[upstream.app]\n{ONE}root = \"/srv\"\n"));
        assert!(
            e.starts_with("t.toml:3:8: `root` is where a FastCGI server finds the scripts, for protocol = \"fastcgi\"; this upstream speaks \"http1\""),
            "{e}"
        );
        let e = err(&format!(
            "[upstream.app]\nprotocol = \"uwsgi\"\nroot = \"/srv\"\n{ONE}"
        ));
        assert!(e.starts_with("t.toml:3:8: `root`"), "{e}");
        assert!(e.ends_with("speaks \"uwsgi\""), "{e}");
        let e = err(&format!(
            "[upstream.php]\nprotocol = \"fastcgi\"\nroot = \"\"\n{ONE}"
        ));
        assert!(
            e.starts_with("t.toml:3:8: `root` must name the directory"),
            "{e}"
        );
    }

    #[test]
    fn params_need_a_cgi_protocol_and_valid_entries() {
        let e = err(&format!(
            "[upstream.app]\n{ONE}params = {{ SCRIPT_NAME = \"/app\" }}\n"
        ));
        assert!(
            e.starts_with("t.toml:3:10: `params` are CGI variables for protocol = \"uwsgi\""),
            "{e}"
        );
        let e = err(&format!(
            "[upstream.app]\nprotocol = \"uwsgi\"\nparams = {{ \"A B\" = \"x\" }}\n{ONE}"
        ));
        assert!(e.starts_with("t.toml:3:20: `params` name \"A B\""), "{e}");
        let e = err(&format!(
            "[upstream.app]\nprotocol = \"uwsgi\"\nparams = {{ X = \"$nope\" }}\n{ONE}"
        ));
        assert!(
            e.starts_with("t.toml:3:16: unknown variable `$nope`"),
            "{e}"
        );
    }
}
