//! `[redis]` → [`RedisSettings`]: the Redis that `scope = "redis"` zones
//! share, either one server (`url`) or a Redis Cluster (`cluster`, its
//! seed nodes): exactly one of the two; `rediss://` URLs speak TLS,
//! trusting `ca` (a PEM file, read here) or the system's roots. The URLs
//! are parsed here (so a typo is a config error with its place), never
//! connected to: nodes connect when they first need it.

use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use toml::Spanned;

use crate::config::error::{ConfigError, Source};
use crate::config::file::RawFile;
use crate::config::model::{RedisCa, RedisSettings, RedisTarget};

use super::paths::{Paths, os_reason};

/// Time allowed for one Redis call when `timeout` is not set.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// How a `url` is written, for error messages.
const URL_EXAMPLE: &str = "\"redis://127.0.0.1:6379\", \"redis://:password@host:6379/0\" or, over TLS, \"rediss://host:6379\"";

/// The one `[redis]` table of conf.d, if any file has it; `ca` is resolved
/// against the prefix and read.
pub(super) fn settings(
    parsed: &[(&Source<'_>, &RawFile)],
    paths: &Paths,
) -> Result<Option<RedisSettings>, ConfigError> {
    let Some((src, def)) = super::only_one(parsed, "[redis]", |raw| raw.redis.as_ref())? else {
        return Ok(None);
    };
    let raw = def.get_ref();
    let target = match (&raw.url, &raw.cluster) {
        (Some(url), None) => RedisTarget::Server(server(src, url)?),
        (None, Some(nodes)) => RedisTarget::Cluster(cluster(src, nodes)?),
        (None, None) => {
            let message = "[redis] needs `url` (one server, like url = \"redis://127.0.0.1:6379\") or `cluster` (a Redis Cluster's seed nodes, like cluster = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"])";
            return Err(src.err(def.span(), message));
        }
        (Some(_), Some(nodes)) => {
            let message = "[redis] has both `url` and `cluster`; write `url` for one server or `cluster` for the seed nodes of a Redis Cluster, not both";
            return Err(src.err(nodes.span(), message));
        }
    };
    let timeout = match &raw.timeout {
        None => DEFAULT_TIMEOUT,
        Some(t) if t.get_ref().0.is_zero() => {
            return Err(src.err(t.span(), "`timeout` in [redis] must be more than 0"));
        }
        Some(t) => t.get_ref().0,
    };
    let ca = match &raw.ca {
        None => None,
        Some(ca) => Some(trust(src, ca, &target, paths)?),
    };
    Ok(Some(RedisSettings {
        target,
        timeout,
        ca,
    }))
}

/// Whether `url` (already checked to parse) is `rediss://`.
fn is_tls(url: &str) -> bool {
    url.into_connection_info()
        .is_ok_and(|info| matches!(info.addr(), ConnectionAddr::TcpTls { .. }))
}

/// A `rediss://` URL with `#insecure` (no certificate checks): refused, as
/// moongate never connects over TLS it does not check. `what` names the key.
fn refuse_insecure(
    src: &Source<'_>,
    what: &str,
    node: &Spanned<String>,
    text: &str,
) -> Result<(), ConfigError> {
    let insecure = text
        .into_connection_info()
        .is_ok_and(|info| matches!(info.addr(), ConnectionAddr::TcpTls { insecure: true, .. }));
    if insecure {
        let message = format!(
            "{what} \"{text}\" turns certificate checks off (#insecure), which moongate does not do; trust the server's certificate authority with `ca = \"path/to/ca.pem\"` in [redis] instead"
        );
        return Err(src.err(node.span(), message));
    }
    Ok(())
}

/// `ca`: only with `rediss://` URLs; a readable PEM file of certificates
/// each usable as a trust anchor.
fn trust(
    src: &Source<'_>,
    ca: &Spanned<String>,
    target: &RedisTarget,
    paths: &Paths,
) -> Result<RedisCa, ConfigError> {
    let tls = match target {
        RedisTarget::Server(url) => is_tls(url),
        RedisTarget::Cluster(nodes) => nodes.iter().any(|n| is_tls(n)),
    };
    if !tls {
        let message = "`ca` in [redis] is for TLS, and the Redis URLs here are plain redis://; write rediss:// URLs to connect over TLS, or remove `ca`";
        return Err(src.err(ca.span(), message));
    }
    let path = paths.resolve(ca.get_ref());
    let pem = std::fs::read(&path).map_err(|e| {
        src.err(
            ca.span(),
            format!("ca {}: {}", path.display(), os_reason(&e)),
        )
    })?;
    let certs: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            let message = format!("ca {}: not a PEM certificate file ({e})", path.display());
            src.err(ca.span(), message)
        })?;
    if certs.is_empty() {
        let message = format!(
            "ca {}: no certificate in it (a PEM file of \"-----BEGIN CERTIFICATE-----\" blocks)",
            path.display()
        );
        return Err(src.err(ca.span(), message));
    }
    // What the redis client does with them: each must be a trust anchor.
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        if let Err(e) = roots.add(cert) {
            let message = format!(
                "ca {}: certificate {} cannot be trusted as a root ({e})",
                path.display(),
                i + 1
            );
            return Err(src.err(ca.span(), message));
        }
    }
    Ok(RedisCa::new(path, pem))
}

/// `url`: one server.
fn server(src: &Source<'_>, url: &Spanned<String>) -> Result<String, ConfigError> {
    let text = url.get_ref().trim();
    if text.is_empty() {
        let message = "`url` in [redis] is empty; write it like \"redis://127.0.0.1:6379\"";
        return Err(src.err(url.span(), message));
    }
    if let Err(e) = text.into_connection_info() {
        let message =
            format!("`url` \"{text}\" is not a Redis URL ({e}); write it like {URL_EXAMPLE}");
        return Err(src.err(url.span(), message));
    }
    refuse_insecure(src, "`url`", url, text)?;
    Ok(text.to_owned())
}

/// `cluster`: seed nodes, each a TCP `redis://` (or `rediss://`) URL on
/// database 0 (the only one a Redis Cluster has), all with the same
/// credentials (the client uses them for every node it finds).
fn cluster(
    src: &Source<'_>,
    nodes: &Spanned<Vec<Spanned<String>>>,
) -> Result<Vec<String>, ConfigError> {
    if nodes.get_ref().is_empty() {
        let message = "`cluster` in [redis] is empty; list one or more seed nodes of the Redis Cluster, like cluster = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]";
        return Err(src.err(nodes.span(), message));
    }
    let mut out = Vec::with_capacity(nodes.get_ref().len());
    for node in nodes.get_ref() {
        let text = node.get_ref().trim();
        let info = match text.into_connection_info() {
            Ok(info) => info,
            Err(e) if text.is_empty() => {
                let message = format!(
                    "a node of `cluster` in [redis] is empty ({e}); write it like \"redis://10.0.0.1:7000\""
                );
                return Err(src.err(node.span(), message));
            }
            Err(e) => {
                let message = format!(
                    "`cluster` node \"{text}\" is not a Redis URL ({e}); write it like \"redis://10.0.0.1:7000\""
                );
                return Err(src.err(node.span(), message));
            }
        };
        if info.redis_settings().db() != 0 {
            let message = format!(
                "`cluster` node \"{text}\" names database {}; a Redis Cluster has only database 0",
                info.redis_settings().db()
            );
            return Err(src.err(node.span(), message));
        }
        refuse_insecure(src, "`cluster` node", node, text)?;
        if out.iter().any(|seen| seen == text) {
            let message = format!("`cluster` node \"{text}\" is listed twice");
            return Err(src.err(node.span(), message));
        }
        out.push(text.to_owned());
    }
    // Unix sockets, mixed credentials, some nodes rediss:// and some not:
    // what the cluster client itself refuses.
    if let Err(e) = redis::cluster::ClusterClient::new(out.iter().map(String::as_str)) {
        let message = format!("`cluster` in [redis] cannot be used: {e}");
        return Err(src.err(nodes.span(), message));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::RedisTarget;
    use crate::config::{load_str, rejected as err};

    #[test]
    fn url_and_timeout_with_a_default() {
        let c = load_str("t", "[redis]\nurl = \"redis://127.0.0.1:6379\"\n").expect("valid");
        let r = c.redis.expect("[redis]");
        assert_eq!(
            r.target,
            RedisTarget::Server("redis://127.0.0.1:6379".into())
        );
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
        assert!(
            err("[redis]\ntimeout = \"1s\"\n")
                .starts_with("t.toml:1:1: [redis] needs `url` (one server"),
            "{}",
            err("[redis]\ntimeout = \"1s\"\n")
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

    #[test]
    fn cluster_lists_seed_nodes() {
        let c = load_str(
            "t",
            "[redis]\ncluster = [\"redis://127.0.0.1:7000\", \" redis://127.0.0.1:7001 \"]\ntimeout = \"30ms\"\n",
        )
        .expect("valid");
        let r = c.redis.expect("[redis]");
        assert_eq!(
            r.target,
            RedisTarget::Cluster(vec![
                "redis://127.0.0.1:7000".into(),
                "redis://127.0.0.1:7001".into()
            ])
        );
        assert_eq!(r.timeout, Duration::from_millis(30));
    }

    #[test]
    fn cluster_mistakes_name_their_place() {
        let e = err("[redis]\nurl = \"redis://h\"\ncluster = [\"redis://h:7000\"]\n");
        assert!(
            e.starts_with("t.toml:3:11: [redis] has both `url` and `cluster`"),
            "{e}"
        );
        let e = err("[redis]\ncluster = []\n");
        assert!(
            e.starts_with("t.toml:2:11: `cluster` in [redis] is empty"),
            "{e}"
        );
        let e = err("[redis]\ncluster = [\"redis://h:7000\", \"http://h:7001\"]\n");
        assert!(
            e.starts_with("t.toml:2:30: `cluster` node \"http://h:7001\" is not a Redis URL"),
            "{e}"
        );
        let e = err("[redis]\ncluster = [\"\"]\n");
        assert!(
            e.starts_with("t.toml:2:12: a node of `cluster` in [redis] is empty"),
            "{e}"
        );
        let e = err("[redis]\ncluster = [\"redis://h:7000/2\"]\n");
        assert!(e.contains("has only database 0"), "{e}");
        let e = err("[redis]\ncluster = [\"redis://h:7000\", \"redis://h:7000\"]\n");
        assert!(e.contains("listed twice"), "{e}");
        let e = err("[redis]\ncluster = [\"redis://:a@h:7000\", \"redis://:b@h:7001\"]\n");
        assert!(
            e.starts_with("t.toml:2:11: `cluster` in [redis] cannot be used")
                && e.contains("password"),
            "{e}"
        );
        assert!(err("[redis]\ncluster = \"redis://h:7000\"\n").contains("cluster"));
    }

    /// A file holding `text` in a fresh temp dir (kept alive by the dir).
    fn file(text: &[u8]) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, text).expect("write");
        (dir, path.display().to_string())
    }

    /// A CA certificate in PEM.
    fn ca_pem() -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("ca").pem().into_bytes()
    }

    #[test]
    fn rediss_trusts_a_ca_file_or_the_system_roots() {
        let pem = ca_pem();
        let (_dir, path) = file(&pem);
        let c = load_str(
            "t",
            &format!("[redis]\nurl = \"rediss://127.0.0.1:6380\"\nca = \"{path}\"\n"),
        )
        .expect("valid");
        let r = c.redis.expect("[redis]");
        let ca = r.ca.expect("ca");
        assert_eq!(ca.path.display().to_string(), path);
        assert_eq!(&ca.pem[..], &pem[..]);
        let c = load_str(
            "t",
            &format!("[redis]\ncluster = [\"rediss://127.0.0.1:7000\", \"rediss://127.0.0.1:7001\"]\nca = \"{path}\"\n"),
        )
        .expect("valid");
        assert!(c.redis.expect("[redis]").ca.is_some());
        // No `ca`: the system's roots, decided when connecting.
        let c = load_str("t", "[redis]\nurl = \"rediss://redis.example:6380\"\n").expect("valid");
        assert!(c.redis.expect("[redis]").ca.is_none());
    }

    #[test]
    fn tls_mistakes_name_their_place() {
        let (_dir, path) = file(&ca_pem());
        let e = err(&format!(
            "[redis]\nurl = \"redis://127.0.0.1:6379\"\nca = \"{path}\"\n"
        ));
        assert!(
            e.starts_with(
                "t.toml:3:6: `ca` in [redis] is for TLS, and the Redis URLs here are plain redis://"
            ),
            "{e}"
        );
        let e = err("[redis]\nurl = \"rediss://h:6380\"\nca = \"/nonexistent/ca.pem\"\n");
        assert_eq!(
            e,
            "t.toml:3:6: ca /nonexistent/ca.pem: No such file or directory",
        );
        let (_d1, text) = file(b"just text\n");
        let e = err(&format!(
            "[redis]\nurl = \"rediss://h:6380\"\nca = \"{text}\"\n"
        ));
        assert!(
            e.starts_with("t.toml:3:6: ca ") && e.contains("no certificate in it"),
            "{e}"
        );
        let (_d2, junk) = file(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let e = err(&format!(
            "[redis]\nurl = \"rediss://h:6380\"\nca = \"{junk}\"\n"
        ));
        assert!(
            e.contains("certificate 1 cannot be trusted as a root"),
            "{e}"
        );
        let (_d3, bad) = file(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n");
        let e = err(&format!(
            "[redis]\nurl = \"rediss://h:6380\"\nca = \"{bad}\"\n"
        ));
        assert!(e.contains("not a PEM certificate file"), "{e}");
        let e = err("[redis]\nurl = \"rediss://h:6380/#insecure\"\n");
        assert!(
            e.starts_with(
                "t.toml:2:7: `url` \"rediss://h:6380/#insecure\" turns certificate checks off"
            ),
            "{e}"
        );
        let e = err("[redis]\ncluster = [\"rediss://h:7000\", \"rediss://h:7001/#insecure\"]\n");
        assert!(
            e.starts_with("t.toml:2:31: `cluster` node \"rediss://h:7001/#insecure\" turns certificate checks off"),
            "{e}"
        );
        let e = err("[redis]\ncluster = [\"rediss://h:7000\", \"redis://h:7001\"]\n");
        assert!(
            e.starts_with("t.toml:2:11: `cluster` in [redis] cannot be used") && e.contains("TLS"),
            "{e}"
        );
    }
}
