//! `[upstream.NAME]` → [`Upstream`]: name, balancing method, peers and their addresses.
//!
//! Host names in peer addresses are resolved here, once, with the system resolver, so a
//! typo fails `check` instead of every request.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::paths::Paths;
use crate::config::error::{ConfigError, Place, Source};
use crate::config::file::{RawPeer, RawUpstream};
use crate::config::model::{Balance, PeerAddr, ServerPeer, Upstream};

/// Validates one upstream definition.
pub(super) fn upstream(
    src: &Source<'_>,
    name: &Spanned<String>,
    def: &Spanned<RawUpstream>,
    place: Place,
    paths: &mut Paths,
) -> Result<Upstream, ConfigError> {
    let raw = def.get_ref();
    let ok_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if name.get_ref().is_empty() || !name.get_ref().chars().all(ok_name) {
        let message = format!(
            "upstream name `{}` may only use letters, digits, `_` and `-`",
            name.get_ref()
        );
        return Err(src.err(name.span(), message));
    }
    let balance = match &raw.balance {
        None => Balance::RoundRobin,
        Some(b) => balance(b.get_ref()).map_err(|m| src.err(b.span(), m))?,
    };
    let key = match (&raw.key, balance) {
        (Some(key), Balance::Hash) => {
            check_key(key.get_ref()).map_err(|m| src.err(key.span(), m))?;
            Some(key.get_ref().clone())
        }
        (Some(key), other) => {
            let message = format!(
                "`key` is only used with balance = \"hash\" (this upstream uses \"{}\"); remove it or change `balance`",
                other.as_str()
            );
            return Err(src.err(key.span(), message));
        }
        (None, Balance::Hash) => {
            let at = raw.balance.as_ref().map_or(def.span(), |b| b.span());
            let message = "balance = \"hash\" needs a `key` to hash, like key = \"$request_uri\"";
            return Err(src.err(at, message));
        }
        (None, _) => None,
    };

    let protocol = super::protocol::protocol(src, raw.protocol.as_ref())?;
    let params = super::protocol::params(src, protocol, raw.params.as_ref())?;
    let h2_connections =
        super::protocol::h2_connections(src, protocol, raw.h2_connections.as_ref())?;
    let tls = super::upstream_tls::tls(src, raw, protocol, paths)?;
    let root = super::protocol::root(
        src,
        protocol,
        raw.root.as_ref(),
        &params,
        name,
        paths.prefix(),
    )?;
    let workers = match &raw.workers {
        Some(w) => Some(super::workers::workers(
            src,
            name.get_ref(),
            w,
            (protocol, root.as_deref()),
            paths,
        )?),
        None => None,
    };
    let servers = match (&raw.servers, &workers) {
        (Some(list), Some(_)) => {
            let message = format!(
                "[upstream.{}] has both `servers` and [upstream.{}.workers]; the workers are its servers, so remove `servers`",
                name.get_ref(),
                name.get_ref()
            );
            return Err(src.err(list.span(), message));
        }
        (None, Some(_)) => Vec::new(),
        (None, None) => {
            let message = format!(
                "[upstream.{}] needs `servers = [{{ addr = \"ip:port\" }}]` or a [upstream.{}.workers] table",
                name.get_ref(),
                name.get_ref()
            );
            return Err(src.err(def.span(), message));
        }
        (Some(list), None) => servers(src, name.get_ref(), list, balance, paths)?,
    };

    let ready = workers.as_ref().and_then(|w| w.ready.as_deref());
    let health = super::health::health(src, raw.health.as_ref(), protocol, ready)?;

    let dur = |v: Option<crate::config::units::Dur>, default: u64| {
        v.map_or(Duration::from_secs(default), |d| d.0)
    };
    Ok(Upstream {
        name: name.get_ref().clone(),
        place,
        balance,
        key,
        keepalive: raw.keepalive.unwrap_or(64),
        keepalive_timeout: dur(raw.keepalive_timeout, 60),
        connect_timeout: dur(raw.connect_timeout, 5),
        read_timeout: dur(raw.read_timeout, 60),
        send_timeout: dur(raw.send_timeout, 60),
        // nginx's `proxy_next_upstream error timeout` (on by default there):
        // a peer that dies or stalls before answering costs an idempotent
        // request nothing, and a managed worker may die with requests in
        // flight. A peer's answer moves on only if `retry_statuses` lists it.
        retries: raw.retries.unwrap_or(1),
        retry_statuses: retry_statuses(src, raw)?,
        servers,
        workers,
        balancer: super::lua::upstream_balancer(src, raw.lua.as_ref(), paths)?,
        protocol,
        params,
        h2_connections,
        tls,
        root,
        health,
    })
}

/// `retry_statuses = [502, 504]`: 5xx statuses, or 429, a peer may answer
/// that count as its failure and send an idempotent request to the next
/// peer (nginx's `http_502`, `http_503`, `http_504`, `http_429` …).
fn retry_statuses(src: &Source<'_>, raw: &RawUpstream) -> Result<Vec<u16>, ConfigError> {
    let mut out = Vec::new();
    for status in raw.retry_statuses.iter().flatten() {
        let code = *status.get_ref();
        if !(500..=599).contains(&code) && code != 429 {
            let message = format!(
                "`retry_statuses` lists {code}: only a 5xx status or 429 can mean the peer failed"
            );
            return Err(src.err(status.span(), message));
        }
        if !out.contains(&code) {
            out.push(code);
        }
    }
    Ok(out)
}

/// `servers = [...]`: at least one peer that takes traffic.
fn servers(
    src: &Source<'_>,
    name: &str,
    list: &Spanned<Vec<Spanned<RawPeer>>>,
    balance: Balance,
    paths: &Paths,
) -> Result<Vec<ServerPeer>, ConfigError> {
    if list.get_ref().is_empty() {
        let message = format!(
            "`servers` in [upstream.{name}] is empty; list at least one {{ addr = \"ip:port\" }}"
        );
        return Err(src.err(list.span(), message));
    }
    let mut servers = Vec::with_capacity(list.get_ref().len());
    for peer in list.get_ref() {
        servers.push(server_peer(src, peer, balance, paths)?);
    }
    if servers.iter().all(|p| p.backup || p.down) {
        let message = format!(
            "every server of [upstream.{name}] is `backup` or `down`, so none would take traffic"
        );
        return Err(src.err(list.span(), message));
    }
    Ok(servers)
}

fn balance(name: &str) -> Result<Balance, String> {
    Ok(match name {
        "round_robin" => Balance::RoundRobin,
        "least_conn" => Balance::LeastConn,
        "ip_hash" => Balance::IpHash,
        "hash" => Balance::Hash,
        "random2" => Balance::Random2,
        other => {
            return Err(format!(
                "unknown balance \"{other}\"; expected one of round_robin, least_conn, ip_hash, hash, random2"
            ));
        }
    })
}

/// A hash key must use at least one `$variable`, or every request lands on one peer.
fn check_key(key: &str) -> Result<(), String> {
    crate::vars::VarTemplate::parse(key)?;
    let uses_var = key
        .split('$')
        .skip(1)
        .any(|rest| rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '{'));
    if uses_var {
        Ok(())
    } else {
        Err(format!(
            "`key` \"{key}\" uses no $variable, so every request would go to the same server; try \"$request_uri\""
        ))
    }
}

fn server_peer(
    src: &Source<'_>,
    peer: &Spanned<RawPeer>,
    balance: Balance,
    paths: &Paths,
) -> Result<ServerPeer, ConfigError> {
    let raw = peer.get_ref();
    // The scheme says TLS (see `upstream_tls`); the address is what follows.
    let text = raw.addr.get_ref();
    let text = text
        .strip_prefix(super::upstream_tls::HTTPS)
        .unwrap_or(text);
    let addr = match peer_addr(text).map_err(|m| src.err(raw.addr.span(), m))? {
        // A socket the upstream creates: resolved, not checked (it may come up later).
        PeerAddr::Unix(path) => PeerAddr::Unix(paths.prefix().join(path)),
        tcp => tcp,
    };
    let weight = match &raw.weight {
        Some(w) if *w.get_ref() == 0 => {
            return Err(src.err(
                w.span(),
                "`weight` must be 1 or more; use `down = true` to send a server nothing",
            ));
        }
        Some(w) => *w.get_ref(),
        None => 1,
    };
    // As in nginx: a backup peer has no meaning when the key, not health, picks the peer.
    if raw.backup && matches!(balance, Balance::IpHash | Balance::Hash | Balance::Random2) {
        let message = format!(
            "`backup` servers cannot be used with balance = \"{}\"; use round_robin or least_conn",
            balance.as_str()
        );
        return Err(src.err(peer.span(), message));
    }
    Ok(ServerPeer {
        addr,
        weight,
        max_fails: raw.max_fails.unwrap_or(1),
        fail_timeout: raw.fail_timeout.map_or(Duration::from_secs(10), |d| d.0),
        backup: raw.backup,
        down: raw.down,
    })
}

/// Parses a peer address: "ip:port", "host:port" (resolved now, first address) or "unix:/path".
fn peer_addr(text: &str) -> Result<PeerAddr, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("\"unix:\" needs a socket path, like \"unix:/run/app.sock\"".to_owned());
        }
        return Ok(PeerAddr::Unix(PathBuf::from(path)));
    }
    let addr = match text.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => resolve(text)?,
    };
    if addr.port() == 0 {
        return Err(format!(
            "server address \"{text}\" has port 0, which cannot be connected to"
        ));
    }
    Ok(PeerAddr::Tcp(addr))
}

fn resolve(text: &str) -> Result<SocketAddr, String> {
    let usage = "write \"ip:port\", \"host:port\" or \"unix:/path\"";
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("server address \"{text}\" has no port; {usage}"));
    };
    let Ok(port) = port.parse::<u16>() else {
        return Err(format!(
            "server address \"{text}\" has no valid port; {usage}"
        ));
    };
    if host.is_empty() || host.contains([':', '[', ']', '/', ' ']) {
        return Err(format!(
            "server address \"{text}\" is not an address; {usage}"
        ));
    }
    match (host, port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("host name `{host}` resolved to no address")),
        Err(e) => Err(format!("cannot resolve host name `{host}`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    fn up(text: &str) -> Upstream {
        let config = load_str("t.toml", text).expect("the upstream should load");
        config.upstreams.into_values().next().expect("one upstream")
    }

    use crate::config::rejected as err;

    const ONE: &str = "servers = [{ addr = \"127.0.0.1:8001\" }]\n";

    #[test]
    fn defaults_follow_nginx() {
        let u = up(&format!("[upstream.app]\n{ONE}"));
        assert_eq!(u.name, "app");
        assert_eq!(u.balance, Balance::RoundRobin);
        assert_eq!(u.key, None);
        assert_eq!(u.keepalive, 64);
        assert_eq!(u.keepalive_timeout, Duration::from_secs(60));
        assert_eq!(u.connect_timeout, Duration::from_secs(5));
        assert_eq!(u.read_timeout, Duration::from_secs(60));
        assert_eq!(u.send_timeout, Duration::from_secs(60));
        // proxy_next_upstream error timeout: one more peer, not after 502/504.
        assert_eq!(u.retries, 1);
        assert!(u.retry_statuses.is_empty());
        let p = &u.servers[0];
        assert_eq!(p.addr, PeerAddr::Tcp("127.0.0.1:8001".parse().unwrap()));
        assert_eq!(
            (p.weight, p.max_fails, p.backup, p.down),
            (1, 1, false, false)
        );
        assert_eq!(p.fail_timeout, Duration::from_secs(10));
    }

    #[test]
    fn every_key_is_read() {
        let u = up(r#"
            [upstream.todo-2]
            balance = "hash"
            key = "$request_uri"
            keepalive = 0
            keepalive_timeout = "5s"
            connect_timeout = "2s"
            read_timeout = "30s"
            send_timeout = "1m"
            retries = 2
            retry_statuses = [502, 504, 502]
            servers = [
              { addr = "127.0.0.1:8001", weight = 5, max_fails = 0, fail_timeout = "3s" },
              { addr = "unix:/run/todo.sock", down = true },
            ]
        "#);
        assert_eq!(u.name, "todo-2");
        assert_eq!(u.balance, Balance::Hash);
        assert_eq!(u.key.as_deref(), Some("$request_uri"));
        assert_eq!(u.keepalive, 0);
        assert_eq!(u.keepalive_timeout, Duration::from_secs(5));
        assert_eq!(u.connect_timeout, Duration::from_secs(2));
        assert_eq!(u.read_timeout, Duration::from_secs(30));
        assert_eq!(u.send_timeout, Duration::from_secs(60));
        assert_eq!(
            (u.retries, u.retry_statuses.as_slice()),
            (2, &[502, 504][..])
        );
        assert_eq!((u.servers[0].weight, u.servers[0].max_fails), (5, 0));
        assert_eq!(u.servers[0].fail_timeout, Duration::from_secs(3));
        assert_eq!(u.servers[1].addr.to_string(), "unix:/run/todo.sock");
        assert!(u.servers[1].down);
    }

    #[test]
    fn equality_ignores_where_it_was_written() {
        let a = up(&format!("[upstream.app]\n{ONE}"));
        let b = up(&format!("# moved down\n\n[upstream.app]\n{ONE}"));
        assert_eq!((a.place.line, b.place.line), (1, 3));
        assert_eq!(a, b);
        // Written, the default `retries = 1` is the same definition.
        let c = up(&format!("[upstream.app]\nretries = 1\n{ONE}"));
        assert_eq!(a, c);
        let off = up(&format!("[upstream.app]\nretries = 0\n{ONE}"));
        assert_eq!(off.retries, 0);
        assert_ne!(a, off);
        let statuses = up(&format!("[upstream.app]\nretry_statuses = [503]\n{ONE}"));
        assert_ne!(a, statuses);
    }

    #[test]
    fn hash_needs_a_key_and_only_hash_takes_one() {
        assert_eq!(
            err(&format!("[upstream.app]\nbalance = \"hash\"\n{ONE}")),
            "t.toml:2:11: balance = \"hash\" needs a `key` to hash, like key = \"$request_uri\""
        );
        let e = err(&format!("[upstream.app]\nkey = \"$uri\"\n{ONE}"));
        assert!(e.starts_with("t.toml:2:7: `key` is only used with balance = \"hash\" (this upstream uses \"round_robin\")"), "{e}");
        let e = err(&format!(
            "[upstream.app]\nbalance = \"hash\"\nkey = \"fixed\"\n{ONE}"
        ));
        assert!(
            e.starts_with("t.toml:3:7: `key` \"fixed\" uses no $variable"),
            "{e}"
        );
    }

    #[test]
    fn retry_statuses_must_mean_a_failed_peer() {
        let e = err(&format!(
            "[upstream.app]\nretry_statuses = [502, 404]\n{ONE}"
        ));
        assert_eq!(
            e,
            "t.toml:2:24: `retry_statuses` lists 404: only a 5xx status or 429 can mean the peer failed"
        );
        assert_eq!(
            up(&format!(
                "[upstream.app]\nretry_statuses = [429, 503]\n{ONE}"
            ))
            .retry_statuses,
            [429, 503]
        );
    }

    #[test]
    fn peer_checks_are_placed() {
        let e = err("[upstream.app]\nservers = []\n");
        assert!(
            e.starts_with("t.toml:2:11: `servers` in [upstream.app] is empty"),
            "{e}"
        );
        let e = err(
            "[upstream.app]\nservers = [{ addr = \"127.0.0.1:1\", backup = true }, { addr = \"127.0.0.1:2\", down = true }]\n",
        );
        assert_eq!(
            e,
            "t.toml:2:11: every server of [upstream.app] is `backup` or `down`, so none would take traffic"
        );
        let e = err("[upstream.app]\nservers = [\n  { addr = \"127.0.0.1:1\", weight = 0 },\n]\n");
        assert!(
            e.starts_with("t.toml:3:36: `weight` must be 1 or more"),
            "{e}"
        );
        let e = err("[upstream.app]\nservers = [{ addr = \"127.0.0.1\" }]\n");
        assert!(
            e.starts_with("t.toml:2:21: server address \"127.0.0.1\" has no port"),
            "{e}"
        );
        let e = err(
            "[upstream.app]\nbalance = \"ip_hash\"\nservers = [{ addr = \"127.0.0.1:1\" }, { addr = \"127.0.0.1:2\", backup = true }]\n",
        );
        assert!(
            e.starts_with(
                "t.toml:3:38: `backup` servers cannot be used with balance = \"ip_hash\""
            ),
            "{e}"
        );
    }

    #[test]
    fn names_and_balance_are_checked() {
        let e = err(&format!("[upstream.\"a b\"]\n{ONE}"));
        assert_eq!(
            e,
            "t.toml:1:11: upstream name `a b` may only use letters, digits, `_` and `-`"
        );
        let e = err(&format!("[upstream.app]\nbalance = \"fastest\"\n{ONE}"));
        assert!(
            e.starts_with("t.toml:2:11: unknown balance \"fastest\"; expected one of round_robin"),
            "{e}"
        );
    }

    #[test]
    fn peer_addresses() {
        assert_eq!(
            peer_addr("127.0.0.1:8001"),
            Ok(PeerAddr::Tcp("127.0.0.1:8001".parse().unwrap()))
        );
        assert_eq!(
            peer_addr("[::1]:81"),
            Ok(PeerAddr::Tcp("[::1]:81".parse().unwrap()))
        );
        assert_eq!(
            peer_addr("unix:/run/todo.sock"),
            Ok(PeerAddr::Unix("/run/todo.sock".into()))
        );
        match peer_addr("localhost:8001") {
            Ok(PeerAddr::Tcp(addr)) => {
                assert!(addr.ip().is_loopback());
                assert_eq!(addr.port(), 8001);
            }
            other => panic!("localhost should resolve, got {other:?}"),
        }
    }

    #[test]
    fn bad_peer_addresses_say_why() {
        assert!(
            peer_addr("unix:")
                .unwrap_err()
                .contains("needs a socket path")
        );
        assert!(peer_addr("127.0.0.1").unwrap_err().contains("has no port"));
        assert!(
            peer_addr("app:http")
                .unwrap_err()
                .contains("has no valid port")
        );
        assert!(peer_addr("127.0.0.1:0").unwrap_err().contains("port 0"));
        let e = peer_addr("no-such-host.invalid:80").unwrap_err();
        assert!(
            e.starts_with("cannot resolve host name `no-such-host.invalid`"),
            "{e}"
        );
    }

    #[test]
    fn balance_names() {
        assert_eq!(balance("least_conn"), Ok(Balance::LeastConn));
        assert_eq!(balance("random2"), Ok(Balance::Random2));
        assert!(
            balance("leastconn")
                .unwrap_err()
                .contains("expected one of round_robin")
        );
    }

    #[test]
    fn hash_keys_need_a_variable() {
        assert!(check_key("$request_uri").is_ok());
        assert!(check_key("user:${cookie_id}").is_ok());
        assert!(check_key("static").unwrap_err().contains("no $variable"));
        assert!(check_key("$5").is_err());
    }
}
