//! `[[server.tls]]` and `[admin]` listeners, and the "ip:port" parsing every listener shares.
//!
//! Listen addresses must be literal IPs: binding happens later and must not depend on DNS.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use toml::Spanned;

use super::paths::Paths;
use crate::config::error::{ConfigError, Source};
use crate::config::file::{RawAdmin, RawFile, RawTls};
use crate::config::model::{Admin, CertPair, Listen, TlsListener};

/// ALPN protocols the TLS listener can actually serve.
const ALPN_KNOWN: &[&str] = &["h2", "http/1.1"];

/// Parses a listen address ("ip:port"), explaining the usual mistakes.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        let example = SocketAddr::new(ip, 8080);
        return Err(format!(
            "listen address \"{text}\" has no port; write it like \"{example}\""
        ));
    }
    if let Some((host, port)) = text.rsplit_once(':')
        && port.parse::<u16>().is_ok()
    {
        if host.parse::<Ipv6Addr>().is_ok() {
            return Err(format!(
                "listen address \"{text}\": write IPv6 addresses in brackets, like \"[{host}]:{port}\""
            ));
        }
        if !host.is_empty() && !host.contains([':', '[', ']']) {
            return Err(format!(
                "listen address \"{text}\" uses a host name; use an IP address instead, like \"127.0.0.1:{port}\" or \"0.0.0.0:{port}\""
            ));
        }
    }
    Err(format!(
        "listen address \"{text}\" is not an IP address and port like \"0.0.0.0:8080\" or \"[::1]:8080\""
    ))
}

/// A listen address with its place, for bind errors later.
pub(super) fn listen(src: &Source<'_>, text: &Spanned<String>) -> Result<Listen, ConfigError> {
    let addr = parse_listen(text.get_ref()).map_err(|m| src.err(text.span(), m))?;
    Ok(Listen {
        addr,
        place: src.place(text.span()),
    })
}

/// Every `[[server.tls]]` entry of every file, in merge order.
pub(super) fn tls_listeners(
    parsed: &[(&Source<'_>, &RawFile)],
    paths: &mut Paths,
) -> Result<Vec<TlsListener>, ConfigError> {
    let mut out = Vec::new();
    for (src, raw) in parsed {
        for def in raw.server.iter().flat_map(|s| &s.get_ref().tls) {
            out.push(tls_listener(src, def.get_ref(), paths)?);
        }
    }
    Ok(out)
}

fn tls_listener(
    src: &Source<'_>,
    raw: &RawTls,
    paths: &mut Paths,
) -> Result<TlsListener, ConfigError> {
    let listen = listen(src, &raw.listen)?;
    if raw.certs.get_ref().is_empty() {
        let message = "`certs` in [[server.tls]] is empty; give at least one { cert = \"...\", key = \"...\" }";
        return Err(src.err(raw.certs.span(), message));
    }
    let mut certs = Vec::new();
    for pair in raw.certs.get_ref() {
        let p = pair.get_ref();
        for (what, path) in [("cert", &p.cert), ("key", &p.key)] {
            if path.get_ref().is_empty() {
                return Err(src.err(path.span(), format!("`{what}` is empty; give a file path")));
            }
        }
        let [cert, key] = [("cert", &p.cert), ("key", &p.key)]
            .map(|(what, path)| paths.file(src.place(path.span()), what, path.get_ref()));
        certs.push(CertPair {
            cert,
            key,
            place: src.place(pair.span()),
        });
    }
    let alpn = match &raw.alpn {
        None => ALPN_KNOWN.iter().map(|s| s.to_string()).collect(),
        Some(list) => alpn(src, list)?,
    };
    Ok(TlsListener {
        listen,
        certs,
        alpn,
    })
}

fn alpn(
    src: &Source<'_>,
    list: &Spanned<Vec<Spanned<String>>>,
) -> Result<Vec<String>, ConfigError> {
    if list.get_ref().is_empty() {
        let message = "`alpn` is empty; leave it out to offer [\"h2\", \"http/1.1\"]";
        return Err(src.err(list.span(), message));
    }
    let mut out: Vec<String> = Vec::new();
    for proto in list.get_ref() {
        let name = proto.get_ref();
        if !ALPN_KNOWN.contains(&name.as_str()) {
            let message = format!(
                "ALPN protocol \"{name}\" is not supported; use \"h2\" and/or \"http/1.1\""
            );
            return Err(src.err(proto.span(), message));
        }
        if out.contains(name) {
            return Err(src.err(
                proto.span(),
                format!("ALPN protocol \"{name}\" is listed twice"),
            ));
        }
        out.push(name.clone());
    }
    Ok(out)
}

/// `[admin]` from the one file that may define it; a token is required off loopback.
pub(super) fn admin(parsed: &[(&Source<'_>, &RawFile)]) -> Result<Option<Admin>, ConfigError> {
    let Some((src, def)) = super::only_one(parsed, "[admin]", |raw| raw.admin.as_ref())? else {
        return Ok(None);
    };
    let RawAdmin {
        listen: addr,
        token,
        metrics,
    } = def.get_ref();
    let listen = listen(src, addr)?;
    let token = token.clone().filter(|t| !t.is_empty());
    if token.is_none() && !listen.addr.ip().is_loopback() {
        let message = format!(
            "the admin listener on {} is not loopback, so `token` is required",
            listen.addr
        );
        return Err(ConfigError::at(&listen.place, message));
    }
    Ok(Some(Admin {
        listen,
        token,
        metrics: metrics.unwrap_or(true),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_files, load_str};

    use crate::config::rejected as err;

    #[test]
    fn tls_entries_are_checked() {
        let base = "[[server.tls]]\nlisten = \"127.0.0.1:8443\"\n";
        let e = err(&format!("{base}certs = []\n"));
        assert!(
            e.starts_with("t.toml:3:9: `certs` in [[server.tls]] is empty"),
            "{e}"
        );
        let e = err(&format!("{base}certs = [{{ cert = \"\", key = \"k\" }}]\n"));
        assert_eq!(e, "t.toml:3:19: `cert` is empty; give a file path");
        let certs = crate::config::TEST_CERTS;
        let e = err(&format!("{base}{certs}alpn = [\"h2\", \"h3\"]\n"));
        assert_eq!(
            e,
            "t.toml:4:15: ALPN protocol \"h3\" is not supported; use \"h2\" and/or \"http/1.1\""
        );
        let e = err(&format!("{base}{certs}alpn = []\n"));
        assert!(e.starts_with("t.toml:4:8: `alpn` is empty"), "{e}");
        let c = load_str("t", &format!("{base}{certs}alpn = [\"http/1.1\"]\n")).unwrap();
        assert_eq!(c.tls[0].alpn, ["http/1.1"]);
        // Relative to the prefix (the working directory for a TOML string), and found.
        let cwd = std::env::current_dir().unwrap();
        let pair = &c.tls[0].certs[0];
        assert_eq!(
            pair.cert,
            cwd.join("tests/fixtures/config/certs/example.pem")
        );
        assert_eq!(
            pair.key,
            cwd.join("tests/fixtures/config/certs/example.key")
        );
        let e = err(&format!(
            "{base}certs = [{{ cert = \"tests/fixtures/config/certs/example.pem\", key = \"no.key\" }}]\n"
        ));
        assert_eq!(
            e,
            format!(
                "t.toml:3:68: key {}: No such file or directory",
                cwd.join("no.key").display()
            )
        );
        let e = err(&format!("{base}certs = [{{ cert = \"c\" }}]\n"));
        assert_eq!(
            e,
            "t.toml:3:10: a certs entry of [[server.tls]] is missing `key`"
        );
    }

    #[test]
    fn listen_addresses_must_be_ips_with_ports() {
        assert_eq!(
            err("[server]\nlisten = [\"localhost:80\"]\n"),
            "t.toml:2:11: listen address \"localhost:80\" uses a host name; use an IP address instead, like \"127.0.0.1:80\" or \"0.0.0.0:80\""
        );
        assert!(
            parse_listen("127.0.0.1")
                .unwrap_err()
                .contains("has no port; write it like \"127.0.0.1:8080\"")
        );
        assert!(parse_listen("::1").unwrap_err().contains("\"[::1]:8080\""));
        // "::1:8080" is itself a valid IPv6 address, so the port is what is missing.
        assert!(
            parse_listen("::1:8080")
                .unwrap_err()
                .contains("has no port; write it like \"[::1:8080]:8080\"")
        );
        let e = parse_listen("1:2:3:4:5:6:7:8:80").unwrap_err();
        assert!(
            e.contains("write IPv6 addresses in brackets, like \"[1:2:3:4:5:6:7:8]:80\""),
            "{e}"
        );
        assert!(
            parse_listen("0.0.0.0:99999")
                .unwrap_err()
                .contains("is not an IP address and port")
        );
        assert_eq!(parse_listen("[::]:443"), Ok("[::]:443".parse().unwrap()));
    }

    /// `[admin]` on loopback with `extra` lines.
    fn admin_of(extra: &str) -> Admin {
        let text = format!("[admin]\nlisten = \"127.0.0.1:9901\"\n{extra}");
        load_str("t", &text)
            .unwrap_or_else(|e| panic!("{e}"))
            .admin
            .unwrap_or_else(|| panic!("no admin"))
    }

    #[test]
    fn admin_rules() {
        let c = load_str("t", "[admin]\nlisten = \"127.0.0.1:9901\"\ntoken = \"\"\n").unwrap();
        let admin = c.admin.unwrap();
        assert_eq!(admin.token, None);
        assert_eq!(admin.listen.addr.port(), 9901);
        let c = load_str(
            "t",
            "[admin]\nlisten = \"0.0.0.0:9901\"\ntoken = \"s3cret\"\n",
        )
        .unwrap();
        assert_eq!(c.admin.unwrap().token.as_deref(), Some("s3cret"));
        assert!(admin_of("").metrics, "counting is on by default");
        assert!(!admin_of("metrics = false\n").metrics);
        assert_eq!(
            err("[admin]\nlisten = \"127.0.0.1:9901\"\nmetrics = \"off\"\n"),
            "t.toml:3:11: `metrics` in [admin] must be true or false, found the string \"off\""
        );
        assert!(load_str("t", "[admin]\nlisten = \"[::1]:9901\"\n").is_ok());
        assert_eq!(
            err("[admin]\nlisten = \"0.0.0.0:9901\"\n"),
            "t.toml:2:10: the admin listener on 0.0.0.0:9901 is not loopback, so `token` is required"
        );
        let e = load_files(&[
            (
                "a.toml".into(),
                "[admin]\nlisten = \"127.0.0.1:1\"\n".into(),
            ),
            (
                "b.toml".into(),
                "[admin]\nlisten = \"127.0.0.1:2\"\n".into(),
            ),
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "b.toml:1:1: [admin] is defined in two files; keep it in one (also defined at a.toml:1:1)"
        );
    }
}
