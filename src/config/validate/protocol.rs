//! `protocol` and `params` of an `[upstream.NAME]`: which protocol the peers
//! speak, and the CGI variables a CGI-style protocol (uwsgi) adds to those
//! built from the request. Nothing here knows how a protocol is spoken.

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
        later @ ("h2" | "grpc" | "fastcgi") => Err(src.err(
            raw.span(),
            format!(
                "protocol \"{later}\" is not supported yet; this version speaks \"http1\" and \"uwsgi\""
            ),
        )),
        other => Err(src.err(
            raw.span(),
            format!("unknown protocol \"{other}\"; expected \"http1\" or \"uwsgi\""),
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
    if protocol == Protocol::Http1 {
        let message = "`params` are CGI variables for protocol = \"uwsgi\"; an \"http1\" upstream has none (set headers from Lua instead)";
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
            "t.toml:2:12: unknown protocol \"h3\"; expected \"http1\" or \"uwsgi\""
        );
        for later in ["h2", "grpc", "fastcgi"] {
            let e = err(&format!("[upstream.app]\n{ONE}protocol = \"{later}\"\n"));
            assert_eq!(
                e,
                format!(
                    "t.toml:3:12: protocol \"{later}\" is not supported yet; this version speaks \"http1\" and \"uwsgi\""
                )
            );
        }
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
