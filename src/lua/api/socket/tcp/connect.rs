//! `tcpsock:connect` (from the pool or a new connection, resolving names
//! without blocking the thread) and `tcpsock:sslhandshake`.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::BytesMut;
use mlua::{Lua, MultiValue, Table, UserData, Value};
use tokio::net::{TcpStream, UnixStream};

use super::super::pool::{Checkout, DEFAULT_POOL_SIZE};
use super::super::stream::{Plain, Stream};
use super::super::tls::{self, TlsClients, Verify};
use super::super::{Closable, fail, io_error};
use super::{Conn, ok1, this};
use crate::lua::api::{bad_argument, err, lua_int};
use crate::lua::worker;

/// The value `sslhandshake` returns for a session (truthy, as ngx_lua's
/// session userdata; rustls resumes sessions itself).
struct SslSession;

impl UserData for SslSession {}

/// Where `connect` goes.
enum Target {
    Inet(String, u16),
    Unix(String),
}

/// `sock:connect(host, port, opts?)` / `sock:connect("unix:/path", opts?)`.
pub(super) async fn connect(
    lua: Lua,
    (sock, host, rest): (Table, mlua::LuaString, MultiValue),
) -> mlua::Result<MultiValue> {
    let tcp = this(&lua, &sock)?;
    let host = host.to_str()?.to_string();
    let mut rest = rest.into_iter();
    let (target, opts) = match host.strip_prefix("unix:") {
        Some(path) => (Target::Unix(path.to_string()), rest.next()),
        None => {
            let port = rest.next().unwrap_or(Value::Nil);
            let port =
                lua_int(&port).ok_or_else(|| bad_argument(2, "connect", "number", Some(&port)))?;
            let Ok(port) = u16::try_from(port) else {
                return fail(&lua, &format!("bad port number: {port}"));
            };
            (Target::Inet(host.clone(), port), rest.next())
        }
    };
    let mut pool = match &target {
        Target::Inet(h, p) => format!("{h}:{p}"),
        Target::Unix(_) => host.clone(),
    };
    let mut pool_size = None;
    let mut backlog = None;
    if let Some(Value::Table(opts)) = opts {
        if let Some(name) = opts.get::<Option<mlua::LuaString>>("pool")? {
            pool = name.to_str()?.to_string();
        }
        let size: Value = opts.get("pool_size")?;
        if !size.is_nil() {
            match lua_int(&size) {
                Some(n) if n > 0 => pool_size = usize::try_from(n).ok(),
                _ => {
                    return Err(err(format!(
                        "bad \"pool_size\" option value: {}",
                        lua_int(&size).unwrap_or(0)
                    )));
                }
            }
        }
        let b: Value = opts.get("backlog")?;
        if !b.is_nil() {
            match lua_int(&b) {
                Some(n) if n >= 0 => backlog = usize::try_from(n).ok(),
                _ => {
                    return Err(err(format!(
                        "bad \"backlog\" option value: {}",
                        lua_int(&b).unwrap_or(0)
                    )));
                }
            }
            pool_size.get_or_insert(DEFAULT_POOL_SIZE);
        }
    }
    if let Some(busy) = tcp.busy.get() {
        return fail(&lua, busy);
    }
    // Connecting closes what the socket had open.
    tcp.force_close();
    tcp.reused.set(0);
    let worker = worker::of(&lua)?.clone();
    if let Some(size) = pool_size {
        worker.sockets.create(&pool, size, backlog);
    }
    tcp.busy.set(Some("socket busy connecting"));
    let generation = tcp.generation.get();
    let deadline = tokio::time::Instant::now() + tcp.connect_timeout.get();
    let ticket = match worker.sockets.checkout(&pool, deadline).await {
        Checkout::Reuse(idle) => {
            tcp.busy.set(None);
            if generation != tcp.generation.get() {
                return fail(&lua, "closed");
            }
            tcp.reused.set(idle.reused + 1);
            *tcp.conn.borrow_mut() = Some(Conn {
                stream: idle.stream,
                buf: BytesMut::new(),
                pool,
                pool_size,
                ticket: idle.ticket,
            });
            return ok1();
        }
        Checkout::Fail(e) => {
            tcp.busy.set(None);
            return fail(&lua, e);
        }
        Checkout::Open(ticket) => ticket,
    };
    let opened = tokio::time::timeout_at(deadline, open(&target)).await;
    tcp.busy.set(None);
    let plain = match opened {
        Err(_) => return fail(&lua, "timeout"),
        Ok(Err(e)) => return fail(&lua, &e),
        Ok(Ok(plain)) => plain,
    };
    if generation != tcp.generation.get() {
        return fail(&lua, "closed");
    }
    *tcp.conn.borrow_mut() = Some(Conn {
        stream: Stream::Plain(plain),
        buf: BytesMut::new(),
        pool,
        pool_size,
        ticket,
    });
    ok1()
}

/// Resolves (without blocking the thread) and connects.
async fn open(target: &Target) -> Result<Plain, String> {
    match target {
        Target::Unix(path) => UnixStream::connect(path)
            .await
            .map(Plain::Unix)
            .map_err(|e| io_error(&e)),
        Target::Inet(host, port) => {
            let host_only = host.trim_start_matches('[').trim_end_matches(']');
            let addr = match host_only.parse::<std::net::IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, *port),
                Err(_) => {
                    let found: Vec<SocketAddr> = tokio::net::lookup_host((host_only, *port))
                        .await
                        .map_err(|e| format!("{host} could not be resolved ({e})"))?
                        .collect();
                    if found.is_empty() {
                        return Err(format!("{host} could not be resolved (3: Host not found)"));
                    }
                    // ngx_lua picks one of the addresses at random.
                    found[fastrand::usize(..found.len())]
                }
            };
            let stream = TcpStream::connect(addr).await.map_err(|e| io_error(&e))?;
            // Small writes (a request line, then its body) go out at once
            // rather than waiting on the peer's delayed ACK.
            let _ = stream.set_nodelay(true);
            Ok(Plain::Tcp(stream))
        }
    }
}

/// `sock:sslhandshake(reused_session?, server_name?, ssl_verify?, send_status_req?)`.
pub(super) async fn sslhandshake(
    lua: Lua,
    tls: Rc<TlsClients>,
    (sock, reused, server_name, verify, _status): (Table, Value, Value, Value, Value),
) -> mlua::Result<MultiValue> {
    let tcp = this(&lua, &sock)?;
    let session = || -> mlua::Result<MultiValue> {
        if reused == Value::Boolean(false) {
            return Ok(MultiValue::from_vec(vec![Value::Boolean(true)]));
        }
        Ok(MultiValue::from_vec(vec![Value::UserData(
            lua.create_userdata(SslSession)?,
        )]))
    };
    let name = match &server_name {
        Value::String(s) => Some(s.to_str()?.to_string()),
        Value::Nil => None,
        other => {
            return Err(bad_argument(2, "sslhandshake", "string", Some(other)));
        }
    };
    let verify = if verify.as_boolean().unwrap_or(false) {
        Verify::Chain {
            name: name.is_some(),
        }
    } else {
        Verify::Off
    };
    let (conn, generation) = match tcp.take("socket busy connecting") {
        Ok(c) => c,
        Err(e) => return fail(&lua, e),
    };
    if conn.stream.is_tls() {
        tcp.give_back(conn, generation, true);
        return session();
    }
    let config = match tls.config(verify) {
        Ok(c) => c,
        Err(e) => {
            tcp.give_back(conn, generation, true);
            return fail(&lua, &e);
        }
    };
    // Without a server_name no SNI is sent and (ngx_lua's rule) the name is
    // not checked: the peer's address stands in for it.
    let server = match &name {
        Some(n) => match rustls::pki_types::ServerName::try_from(n.clone()) {
            Ok(s) => s,
            Err(_) => {
                tcp.give_back(conn, generation, true);
                return fail(&lua, "bad server name");
            }
        },
        None => {
            let ip = conn
                .stream
                .plain()
                .tcp()
                .and_then(|s| s.peer_addr().ok())
                .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |a| a.ip());
            rustls::pki_types::ServerName::IpAddress(ip.into())
        }
    };
    let Conn {
        stream,
        buf,
        pool,
        pool_size,
        ticket,
    } = conn;
    let Stream::Plain(plain) = stream else {
        tcp.busy.set(None);
        return session();
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    let shook =
        tokio::time::timeout(tcp.connect_timeout.get(), connector.connect(server, plain)).await;
    tcp.busy.set(None);
    let tls_stream = match shook {
        Err(_) => return fail(&lua, "timeout"),
        Ok(Err(e)) => return fail(&lua, &tls::handshake_error(&e)),
        Ok(Ok(s)) => s,
    };
    if generation != tcp.generation.get() {
        return fail(&lua, "closed");
    }
    *tcp.conn.borrow_mut() = Some(Conn {
        stream: Stream::Tls(Box::new(tls_stream)),
        buf,
        pool,
        pool_size,
        ticket,
    });
    session()
}
