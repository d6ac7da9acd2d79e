//! Header rules for a request forwarded upstream and for the response that
//! comes back: hop-by-hop headers stripped (including those named in
//! `Connection`), `X-Forwarded-For` appended, `X-Real-IP`,
//! `X-Forwarded-Proto` and `Forwarded` set, `Host` kept, and the real
//! client address taken from `X-Forwarded-For` only when the connection
//! comes from a trusted proxy.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
pub const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// The client address to believe: the connection's peer, unless the peer is
/// a trusted proxy, in which case the right-most address of
/// `X-Forwarded-For` that is not itself trusted (nginx's `real_ip_recursive`).
pub fn real_client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if trusted.is_empty() || !is_trusted(&peer) {
        return peer;
    }
    let mut real = peer;
    let chain = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in chain.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else { break };
        real = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    real
}

/// Whether the request asks for a protocol upgrade (WebSocket and the like).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

/// Keeps in `Upgrade` only the protocols listed in `allowed` (lowercase
/// names; a token's `/version` is ignored for the comparison), never
/// `h2c`; returns whether any is left. When none is, `Upgrade` is removed.
pub fn keep_allowed_upgrades(headers: &mut HeaderMap, allowed: &[String]) -> bool {
    let kept: Vec<&str> = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|token| {
            let name = protocol_name(token);
            !name.eq_ignore_ascii_case("h2c")
                && allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
        })
        .collect();
    let value = (!kept.is_empty())
        .then(|| HeaderValue::from_str(&kept.join(", ")).ok())
        .flatten();
    match value {
        Some(v) => {
            headers.insert(header::UPGRADE, v);
            true
        }
        None => {
            headers.remove(header::UPGRADE);
            false
        }
    }
}

/// Whether a 101 response switched to a protocol the request asked for
/// (`asked`: the `Upgrade` sent upstream).
pub fn switched_to_asked(response: &HeaderMap, asked: Option<&HeaderValue>) -> bool {
    let Some(asked) = asked.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut chosen = response
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| protocol_name(t.trim()))
        .peekable();
    chosen.peek().is_some()
        && chosen.all(|name| {
            asked
                .split(',')
                .any(|a| protocol_name(a.trim()).eq_ignore_ascii_case(name))
        })
}

/// The name part of an `Upgrade` token (`websocket` of `websocket/13`).
fn protocol_name(token: &str) -> &str {
    token.split('/').next().unwrap_or(token).trim()
}

/// Whether a `Connection` header lists `token` (case-insensitive).
pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The header names a `Connection` header lists (hop-by-hop by declaration).
pub fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .collect()
}

/// Removes hop-by-hop headers and those named in `Connection`. When
/// `upgrade` is true the `Upgrade` header is kept and `Connection: upgrade`
/// is set again, so the upgrade handshake passes through.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the names (no hashing) finds what is there; most
    // messages carry one hop-by-hop field or none, and removing a name
    // that is absent still costs a hash and a probe.
    let mut present: [Option<HeaderName>; 4] = Default::default();
    let mut more = false;
    let mut listed = false;
    let mut found = 0;
    for name in headers.keys() {
        if is_hop_by_hop(name) {
            listed |= name == header::CONNECTION;
            match present.get_mut(found) {
                Some(slot) => *slot = Some(name.clone()),
                None => more = true,
            }
            found += 1;
        }
    }
    if found == 0 {
        return;
    }
    // `Connection: keep-alive` (or `close`, `upgrade`) names nothing the
    // passes here do not remove anyway: no list to make.
    if listed && !lists_only_hop_by_hop(headers) {
        for name in connection_listed(headers) {
            if !(upgrade && name == header::UPGRADE) {
                headers.remove(&name);
            }
        }
    }
    let saved_upgrade = if upgrade {
        headers.remove(header::UPGRADE)
    } else {
        None
    };
    if more {
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
    } else {
        for name in present.iter().flatten() {
            headers.remove(name);
        }
    }
    if let Some(proto) = saved_upgrade {
        headers.insert(header::UPGRADE, proto);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether every `Connection` token is `close`, `keep-alive` or `upgrade`
/// (the usual ones), which name no header beyond [`HOP_BY_HOP`].
fn lists_only_hop_by_hop(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .all(|t| {
            let t = t.trim_ascii();
            t.eq_ignore_ascii_case(b"close")
                || t.eq_ignore_ascii_case(b"keep-alive")
                || t.eq_ignore_ascii_case(b"upgrade")
        })
}

/// Whether `name` is one of [`HOP_BY_HOP`].
fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == header::TE
        || *name == header::TRAILER
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Sets the forwarding headers on a request about to go upstream;
/// `peer_value` is `peer` as text (formatted once per connection).
pub fn set_forwarding_headers(
    headers: &mut HeaderMap,
    peer: IpAddr,
    peer_value: &HeaderValue,
    real: IpAddr,
    scheme: &str,
) {
    let peer_text = peer_value.as_bytes();
    let xff = match headers.get(&X_FORWARDED_FOR) {
        Some(prev) if !prev.as_bytes().iter().all(u8::is_ascii_whitespace) => {
            let mut v = Vec::with_capacity(prev.len() + 2 + peer_text.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(peer_text);
            HeaderValue::from_bytes(&v)
        }
        _ => Ok(peer_value.clone()),
    };
    if let Ok(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    let real_value = if real == peer {
        Ok(peer_value.clone())
    } else {
        HeaderValue::from_str(&real.to_string())
    };
    if let Ok(v) = real_value {
        headers.insert(X_REAL_IP.clone(), v);
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if scheme == "https" { "https" } else { "http" }),
    );
    let mut fwd = Vec::with_capacity(64);
    if let Some(prev) = headers.get(&FORWARDED)
        && !prev.as_bytes().iter().all(u8::is_ascii_whitespace)
    {
        fwd.extend_from_slice(prev.as_bytes());
        fwd.extend_from_slice(b", ");
    }
    fwd.extend_from_slice(b"for=");
    match peer {
        IpAddr::V4(_) => fwd.extend_from_slice(peer_text),
        IpAddr::V6(_) => {
            fwd.extend_from_slice(b"\"[");
            fwd.extend_from_slice(peer_text);
            fwd.extend_from_slice(b"]\"");
        }
    }
    fwd.extend_from_slice(b";proto=");
    fwd.extend_from_slice(scheme.as_bytes());
    // The buffer becomes the value (no copy).
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(fwd)) {
        headers.insert(FORWARDED.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn xff_believed_only_from_trusted_peers() {
        let h = map(&[("x-forwarded-for", "203.0.113.9, 10.0.0.2")]);
        let trusted: Vec<IpNet> = vec![
            "127.0.0.1/32".parse().unwrap_or_default(),
            "10.0.0.0/8".parse().unwrap_or_default(),
        ];
        assert_eq!(
            real_client_ip(ip("127.0.0.1"), &h, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            real_client_ip(ip("192.0.2.1"), &h, &trusted),
            ip("192.0.2.1")
        );
        assert_eq!(real_client_ip(ip("127.0.0.1"), &h, &[]), ip("127.0.0.1"));
        let junk = map(&[("x-forwarded-for", "nonsense")]);
        assert_eq!(
            real_client_ip(ip("127.0.0.1"), &junk, &trusted),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("connection").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("te").is_none());
        assert_eq!(h.get("x-kept").map(|v| v.as_bytes()), Some(&b"yes"[..]));
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get("upgrade").map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            h.get("connection").map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
    }

    #[test]
    fn only_allowed_upgrades_pass_and_h2c_never() {
        let ws = vec!["websocket".to_owned()];
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "h2c")]);
        assert!(!keep_allowed_upgrades(&mut h, &ws));
        assert!(h.get("upgrade").is_none());
        let anything = vec!["h2c".to_owned(), "websocket".to_owned()];
        let mut h = map(&[("upgrade", "h2c, WebSocket/13")]);
        assert!(keep_allowed_upgrades(&mut h, &anything));
        assert_eq!(
            h.get("upgrade").map(|v| v.as_bytes()),
            Some(&b"WebSocket/13"[..])
        );
        let mut h = map(&[("upgrade", "TLS/1.2, websocket")]);
        assert!(keep_allowed_upgrades(&mut h, &ws));
        assert_eq!(
            h.get("upgrade").map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
    }

    #[test]
    fn a_switch_must_be_to_what_was_asked() {
        let asked = HeaderValue::from_static("websocket");
        assert!(switched_to_asked(
            &map(&[("upgrade", "WebSocket")]),
            Some(&asked)
        ));
        assert!(!switched_to_asked(
            &map(&[("upgrade", "h2c")]),
            Some(&asked)
        ));
        assert!(!switched_to_asked(&map(&[]), Some(&asked)));
        assert!(!switched_to_asked(&map(&[("upgrade", "websocket")]), None));
    }

    #[test]
    fn forwarding_headers_append() {
        let mut h = map(&[("x-forwarded-for", "198.51.100.1")]);
        set_forwarding_headers(
            &mut h,
            ip("127.0.0.1"),
            &HeaderValue::from_static("127.0.0.1"),
            ip("198.51.100.1"),
            "https",
        );
        assert_eq!(
            h.get("x-forwarded-for").map(|v| v.as_bytes()),
            Some(&b"198.51.100.1, 127.0.0.1"[..])
        );
        assert_eq!(
            h.get("x-real-ip").map(|v| v.as_bytes()),
            Some(&b"198.51.100.1"[..])
        );
        assert_eq!(
            h.get("x-forwarded-proto").map(|v| v.as_bytes()),
            Some(&b"https"[..])
        );
        assert_eq!(
            h.get("forwarded").map(|v| v.as_bytes()),
            Some(&b"for=127.0.0.1;proto=https"[..])
        );
        let mut h = map(&[("forwarded", "for=192.0.2.60")]);
        set_forwarding_headers(
            &mut h,
            ip("::1"),
            &HeaderValue::from_static("::1"),
            ip("::1"),
            "http",
        );
        assert_eq!(
            h.get("forwarded").map(|v| v.as_bytes()),
            Some(&b"for=192.0.2.60, for=\"[::1]\";proto=http"[..])
        );
        assert_eq!(h.get("x-real-ip").map(|v| v.as_bytes()), Some(&b"::1"[..]));
    }
}
