//! `protocol`, `params` and `h2_connections` of an `[upstream.NAME]`: which
//! protocol the peers speak, the CGI variables a CGI-style protocol (uwsgi)
//! adds to those built from the request, and how many HTTP/2 connections an
//! h2 or gRPC upstream opens per peer. Nothing here knows how a protocol is
//! spoken.

use std::collections::BTreeMap;

use toml::Spanned;

use crate::config::error::{ConfigError, Source};
use crate::config::model::Protocol;

/// `protocol = "..."`; "http1" when absent. Protocols SPEC §5 names but
/// moongate does not speak yet are refused, not accepted as a stub.
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
        later @ "fastcgi" => Err(src.err(
            raw.span(),
            format!(
                "protocol \"{later}\" is not supported yet; this version speaks \"http1\", \"h2\", \"grpc\" and \"uwsgi\""
            ),
        )),
        other => Err(src.err(
            raw.span(),
            format!(
                "unknown protocol \"{other}\"; expected \"http1\", \"h2\", \"grpc\" or \"uwsgi\""
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
            "`params` are CGI variables for protocol = \"uwsgi\"; protocol = \"{}\" has none (set headers from Lua instead)",
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
            "`h2_connections` is for protocol = \"h2\" or \"grpc\"; an \"{}\" upstream pools with `keepalive`",
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
            "t.toml:2:12: unknown protocol \"h3\"; expected \"http1\", \"h2\", \"grpc\" or \"uwsgi\""
        );
        let e = err(&format!("[upstream.app]\n{ONE}protocol = \"fastcgi\"\n"));
        assert!(
            e.starts_with("t.toml:3:12: protocol \"fastcgi\" is not supported yet"),
            "{e}"
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
