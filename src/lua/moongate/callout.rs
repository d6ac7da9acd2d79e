//! `mg.http.request{...}`: one HTTP/1.1 exchange on a fresh connection
//! (http:// or https://), its whole response read into a Lua table. The
//! coroutine yields while it waits; the whole exchange (resolving,
//! connecting, the TLS handshake, sending, reading) is bounded by the
//! call's `timeout`. It reuses the upstream client's framing (`upstream::h1`)
//! and TLS client configurations (`tls_client`), and knows nothing of the
//! request that called it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use mlua::{Lua, Table, Value};
use rustls::pki_types::ServerName;

use crate::config::PeerAddr;
use crate::h1_framing::Decoder;
use crate::tls_client::{TlsClients, Verify};
use crate::upstream::connect::connect_socket;
use crate::upstream::h1::{Conn, ResponseHead, Socket};

/// Largest response body `mg.http.request` reads into memory.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// `mg.http.request`'s timeout when none is given, in seconds.
const DEFAULT_TIMEOUT: f64 = 10.0;

/// What one call asks for, read from its options table.
struct Call {
    method: http::Method,
    uri: http::Uri,
    tls: bool,
    verify: bool,
    head: http::request::Parts,
    body: Bytes,
    timeout: Duration,
}

/// `mg.http.request{ method, url, headers, body, timeout, ssl_verify }`:
/// the response as `{ status, headers, body }` (a header sent more than
/// once is a list of its values), or why there is none.
pub async fn request(lua: &Lua, opts: Table, tls: &TlsClients) -> Result<Table, String> {
    let call = read_call(&opts)?;
    let (resp, data) = tokio::time::timeout(call.timeout, exchange(&call, tls))
        .await
        .map_err(|_| "timeout".to_string())??;
    response_table(lua, &resp, &data).map_err(|e| e.to_string())
}

fn read_call(opts: &Table) -> Result<Call, String> {
    let url: String = opts
        .get("url")
        .map_err(|_| "`url` is required".to_string())?;
    let method: Option<String> = opts.get("method").map_err(|e| e.to_string())?;
    let method = http::Method::from_bytes(method.as_deref().unwrap_or("GET").as_bytes())
        .map_err(|_| "invalid method".to_string())?;
    let timeout: Option<f64> = opts.get("timeout").map_err(|e| e.to_string())?;
    let timeout = Duration::try_from_secs_f64(timeout.unwrap_or(DEFAULT_TIMEOUT))
        .map_err(|_| "invalid timeout".to_string())?;
    let verify: Option<bool> = opts.get("ssl_verify").map_err(|e| e.to_string())?;
    let body: Option<mlua::LuaString> = opts.get("body").map_err(|e| e.to_string())?;
    let body = body
        .map(|b| Bytes::copy_from_slice(&b.as_bytes()))
        .unwrap_or_default();

    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid url {url:?}: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => {
            return Err(format!(
                "{other}:// is not supported by mg.http.request (http:// and https:// only)"
            ));
        }
        None => return Err(format!("url {url:?} needs http:// or https://")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("url {url:?} has no host"))?;
    let mut head = http::Request::builder()
        .method(method.clone())
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .body(())
        .map_err(|e| e.to_string())?
        .into_parts()
        .0;
    let host = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
    head.headers.insert(http::header::HOST, host);
    if let Some(headers) = opts
        .get::<Option<Table>>("headers")
        .map_err(|e| e.to_string())?
    {
        request_headers(&headers, &mut head.headers)?;
    }
    if !body.is_empty() {
        head.headers
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    Ok(Call {
        method,
        tls,
        verify: verify.unwrap_or(true),
        uri,
        head,
        body,
        timeout,
    })
}

/// The `headers` option into `out`: each value a string, or a list of
/// strings sent as one line each.
fn request_headers(headers: &Table, out: &mut HeaderMap) -> Result<(), String> {
    for pair in headers.pairs::<mlua::LuaString, Value>() {
        let (k, v) = pair.map_err(|e| e.to_string())?;
        let k = k.to_string_lossy();
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("invalid header name {k:?}"))?;
        let value = |v: &Value| -> Result<HeaderValue, String> {
            let text = match v {
                Value::String(s) => s.as_bytes().to_vec(),
                Value::Integer(i) => i.to_string().into_bytes(),
                Value::Number(n) => n.to_string().into_bytes(),
                _ => return Err(format!("invalid value for header {k}")),
            };
            HeaderValue::from_bytes(&text).map_err(|_| format!("invalid value for header {k}"))
        };
        out.remove(&name);
        match &v {
            Value::Table(list) => {
                for item in list.sequence_values::<Value>() {
                    let item = item.map_err(|e| e.to_string())?;
                    out.append(name.clone(), value(&item)?);
                }
            }
            single => {
                out.insert(name, value(single)?);
            }
        }
    }
    Ok(())
}

async fn exchange(call: &Call, tls: &TlsClients) -> Result<(ResponseHead, Vec<u8>), String> {
    let authority = call
        .uri
        .authority()
        .ok_or_else(|| "the url has no host".to_string())?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority
        .port_u16()
        .unwrap_or(if call.tls { 443 } else { 80 });
    let socket = open(host, port, call.timeout).await?;
    let socket = if call.tls {
        handshake(socket, host, call.verify, tls).await?
    } else {
        socket
    };
    let mut conn = Conn::new(socket, call.timeout);
    conn.send_full(&call.head, &call.body)
        .await
        .map_err(|e| e.to_string())?;
    let resp = conn
        .read_head(&call.method, call.timeout)
        .await
        .map_err(|e| e.to_string())?;
    let mut decoder = Decoder::new(resp.framing);
    let mut data = Vec::new();
    while let Some(piece) = std::future::poll_fn(|cx| conn.poll_body(cx, &mut decoder)).await {
        data.extend_from_slice(&piece.map_err(|e| e.to_string())?);
        if data.len() > MAX_BODY {
            return Err(format!("response body larger than {MAX_BODY} bytes"));
        }
    }
    Ok((resp, data))
}

/// A connection to the first of `host`'s addresses that accepts one (a
/// name such as `localhost` may resolve to `::1` and `127.0.0.1`, only
/// one of them listening).
async fn open(host: &str, port: u16, timeout: Duration) -> Result<Box<dyn Socket>, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last = format!("{host} has no address");
    for addr in addrs {
        match connect_socket(&PeerAddr::Tcp(addr), timeout, None).await {
            Ok(socket) => return Ok(socket),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// TLS over `socket`, sending `host` as SNI; with `verify`, the chain is
/// checked against `[lua] ssl_trusted_certificate` (else the system's CA
/// bundle) and the certificate must be valid for `host`.
async fn handshake(
    socket: Box<dyn Socket>,
    host: &str,
    verify: bool,
    tls: &TlsClients,
) -> Result<Box<dyn Socket>, String> {
    let config = tls.config(if verify {
        Verify::Chain { name: true }
    } else {
        Verify::Off
    })?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host} is not a valid TLS server name"))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, socket)
        .await
        .map_err(|e| {
            format!(
                "TLS handshake with {host} failed: {}",
                crate::lua::api::socket::tls::handshake_error(&e)
            )
        })?;
    Ok(Box::new(stream))
}

fn response_table(lua: &Lua, resp: &ResponseHead, data: &[u8]) -> mlua::Result<Table> {
    let res = lua.create_table()?;
    res.set("status", resp.status.as_u16())?;
    let headers = lua.create_table()?;
    for name in resp.headers.keys() {
        let mut values = resp.headers.get_all(name).iter();
        let (Some(first), None) = (values.next(), values.next()) else {
            let list = lua.create_table()?;
            for v in resp.headers.get_all(name) {
                list.push(lua.create_string(v.as_bytes())?)?;
            }
            headers.set(name.as_str(), list)?;
            continue;
        };
        headers.set(name.as_str(), lua.create_string(first.as_bytes())?)?;
    }
    res.set("headers", headers)?;
    res.set("body", lua.create_string(data)?)?;
    Ok(res)
}
