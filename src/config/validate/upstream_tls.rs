//! `tls = {...}` of an `[upstream.NAME]`, and peers written
//! `https://host:port`: whether moongate speaks TLS to the peers, which
//! certificates it trusts, the name it sends and checks. Building the
//! client configuration is the upstream's (`upstream::tls`).

use crate::config::error::{ConfigError, Source};
use crate::config::file::RawUpstream;
use crate::config::model::{Protocol, UpstreamTls};

use super::paths::Paths;

/// The `https://` scheme of a peer address.
pub(super) const HTTPS: &str = "https://";

/// The upstream's TLS settings: from `tls`, or implied by `https://` peers
/// (all of them or none); `None` for plain peers.
pub(super) fn tls(
    src: &Source<'_>,
    raw: &RawUpstream,
    protocol: Protocol,
    paths: &mut Paths,
) -> Result<Option<UpstreamTls>, ConfigError> {
    let peers = raw.servers.as_ref().map_or(&[][..], |s| s.get_ref());
    let https: Vec<_> = peers
        .iter()
        .filter(|p| p.get_ref().addr.get_ref().starts_with(HTTPS))
        .collect();
    if !https.is_empty() && https.len() != peers.len() {
        let plain = peers
            .iter()
            .find(|p| !p.get_ref().addr.get_ref().starts_with(HTTPS))
            .map_or(0..0, |p| p.get_ref().addr.span());
        let message = "some `servers` are https:// and some are not; TLS is set per upstream, so write every peer the same way (or split the upstream)";
        return Err(src.err(plain, message));
    }
    if https.is_empty() && raw.tls.is_none() {
        return Ok(None);
    }
    if protocol.is_cgi() {
        let at = raw.tls.as_ref().map_or(0..0, |t| t.span());
        let message = format!(
            "protocol = \"{}\" has no TLS; `tls` and https:// peers are for \"http1\", \"h2\" and \"grpc\"",
            protocol.as_str()
        );
        return Err(src.err(at, message));
    }
    // A host name in `https://name:port` is the name to check by default.
    let named_host = https.first().and_then(|p| {
        let text = p.get_ref().addr.get_ref().strip_prefix(HTTPS)?;
        let (host, _) = text.rsplit_once(':')?;
        (host.parse::<std::net::IpAddr>().is_err() && !host.starts_with('['))
            .then(|| host.to_owned())
    });
    let mut out = UpstreamTls {
        ca: None,
        server_name: named_host,
        verify: true,
    };
    if let Some(t) = &raw.tls {
        let t = t.get_ref();
        if let Some(ca) = &t.ca {
            out.ca = Some(paths.file(src.place(ca.span()), "ca", ca.get_ref()));
        }
        if let Some(name) = &t.server_name {
            if rustls::pki_types::ServerName::try_from(name.get_ref().as_str()).is_err() {
                let message = format!(
                    "`server_name` \"{}\" is not a DNS name or IP address",
                    name.get_ref()
                );
                return Err(src.err(name.span(), message));
            }
            out.server_name = Some(name.get_ref().clone());
        }
        out.verify = t.verify.unwrap_or(true);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use crate::config::{load_str, rejected as err};

    #[test]
    fn https_peers_imply_tls_with_their_host_name() {
        let text = "[upstream.a]\nprotocol = \"grpc\"\nservers = [{ addr = \"https://localhost:8443\" }]\n";
        let up = &load_str("t.toml", text).unwrap().upstreams["a"];
        let tls = up.tls.as_ref().expect("tls");
        assert_eq!(tls.server_name.as_deref(), Some("localhost"));
        assert!(tls.verify && tls.ca.is_none());
        assert_eq!(up.servers[0].addr.to_string(), "127.0.0.1:8443");
        let text = "[upstream.a]\nservers = [{ addr = \"127.0.0.1:8443\" }]\ntls = { server_name = \"api.internal\", verify = false }\n";
        let up = &load_str("t.toml", text).unwrap().upstreams["a"];
        let tls = up.tls.as_ref().expect("tls");
        assert_eq!(tls.server_name.as_deref(), Some("api.internal"));
        assert!(!tls.verify);
        let plain = "[upstream.a]\nservers = [{ addr = \"127.0.0.1:8443\" }]\n";
        assert!(
            load_str("t.toml", plain).unwrap().upstreams["a"]
                .tls
                .is_none()
        );
    }

    #[test]
    fn mixed_schemes_cgi_protocols_and_bad_names_are_refused() {
        let e = err(
            "[upstream.a]\nservers = [{ addr = \"https://127.0.0.1:1\" }, { addr = \"127.0.0.1:2\" }]\n",
        );
        assert!(
            e.starts_with("t.toml:2:55: some `servers` are https://"),
            "{e}"
        );
        let e = err(
            "[upstream.a]\nprotocol = \"uwsgi\"\nservers = [{ addr = \"127.0.0.1:1\" }]\ntls = { verify = false }\n",
        );
        assert!(
            e.starts_with("t.toml:4:7: protocol = \"uwsgi\" has no TLS"),
            "{e}"
        );
        let e = err(
            "[upstream.a]\nservers = [{ addr = \"127.0.0.1:1\" }]\ntls = { server_name = \"a b\" }\n",
        );
        assert!(e.starts_with("t.toml:3:23: `server_name` \"a b\""), "{e}");
        let e =
            err("[upstream.a]\nservers = [{ addr = \"127.0.0.1:1\" }]\ntls = { sni = \"x\" }\n");
        assert!(e.contains("sni"), "{e}");
    }
}
