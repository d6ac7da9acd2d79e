//! The reading methods of a TCP cosocket: `receive` (`"*l"`, `"*a"`, a
//! size), `receiveany` and `receiveuntil`'s iterator. Each returns
//! `data` or `nil, err, partial`; a read timeout keeps the connection,
//! every other error closes it.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::{Buf, BytesMut};
use mlua::{Lua, MultiValue, Table, Value};

use super::super::fail;
use super::super::until::{Step, Until};
use super::{Conn, Tcp, fill, this};
use crate::lua::api::{err, lua_int};

/// How `receive` reads.
enum Pattern {
    Line,
    All,
    Size(usize),
}

pub(super) fn install(lua: &Lua, methods: &Table) -> mlua::Result<()> {
    methods.set("receive", lua.create_async_function(receive)?)?;
    methods.set("receiveany", lua.create_async_function(receiveany)?)?;
    methods.set("receiveuntil", lua.create_function(receiveuntil)?)?;
    Ok(())
}

/// How a read ended: data, or an error with the partial data read.
type Read = Result<BytesMut, (String, BytesMut)>;

/// Hands `read`'s outcome to Lua, giving the connection back unless the
/// error was fatal.
fn finish(
    lua: &Lua,
    tcp: &Tcp,
    conn: Conn,
    generation: u64,
    read: Read,
) -> mlua::Result<MultiValue> {
    let keep = match &read {
        Ok(_) => true,
        Err((e, _)) => e == "timeout",
    };
    tcp.give_back(conn, generation, keep);
    match read {
        Ok(data) => Ok(MultiValue::from_vec(vec![Value::String(
            lua.create_string(&data)?,
        )])),
        Err((e, partial)) => Ok(MultiValue::from_vec(vec![
            Value::Nil,
            Value::String(lua.create_string(&e)?),
            Value::String(lua.create_string(&partial)?),
        ])),
    }
}

async fn receive(lua: Lua, (sock, pattern): (Table, Value)) -> mlua::Result<MultiValue> {
    let tcp = this(&lua, &sock)?;
    let bad = || err("bad argument #1 to 'receive' (bad pattern argument)");
    let pattern = match &pattern {
        Value::Nil => Pattern::Line,
        Value::String(s) if s.as_bytes().starts_with(b"*") => match &s.as_bytes()[..] {
            b"*l" => Pattern::Line,
            b"*a" => Pattern::All,
            _ => return Err(bad()),
        },
        v => match lua_int(v) {
            Some(n) if n >= 0 => Pattern::Size(usize::try_from(n).map_err(|_| bad())?),
            _ => return Err(bad()),
        },
    };
    let (mut conn, generation) = match tcp.take("socket busy reading") {
        Ok(c) => c,
        Err(e) => return fail(&lua, e),
    };
    let timeout = tcp.read_timeout.get();
    let read: Read = async {
        match pattern {
            Pattern::Size(n) => {
                while conn.buf.len() < n {
                    match fill(&mut conn, timeout).await {
                        Ok(0) => return Err(("closed".into(), conn.buf.split())),
                        Ok(_) => {}
                        Err(e) => return Err((e, conn.buf.split())),
                    }
                }
                Ok(conn.buf.split_to(n))
            }
            Pattern::All => loop {
                match fill(&mut conn, timeout).await {
                    Ok(0) => return Ok(conn.buf.split()),
                    Ok(_) => {}
                    Err(e) => return Err((e, conn.buf.split())),
                }
            },
            Pattern::Line => {
                let mut scanned = 0;
                loop {
                    if let Some(i) = conn.buf[scanned..].iter().position(|&b| b == b'\n') {
                        let mut line = conn.buf.split_to(scanned + i);
                        conn.buf.advance(1);
                        strip_cr(&mut line);
                        return Ok(line);
                    }
                    scanned = conn.buf.len();
                    let e = match fill(&mut conn, timeout).await {
                        Ok(0) => "closed".to_string(),
                        Ok(_) => continue,
                        Err(e) => e,
                    };
                    let mut partial = conn.buf.split();
                    strip_cr(&mut partial);
                    return Err((e, partial));
                }
            }
        }
    }
    .await;
    // "*a" at the end of the stream is a success, but the connection is
    // spent.
    finish(&lua, &tcp, conn, generation, read)
}

/// Drops every CR, as ngx_lua's `"*l"` does.
fn strip_cr(line: &mut BytesMut) {
    if line.contains(&b'\r') {
        let kept: Vec<u8> = line.iter().copied().filter(|&b| b != b'\r').collect();
        *line = BytesMut::from(&kept[..]);
    }
}

async fn receiveany(lua: Lua, (sock, max): (Table, Value)) -> mlua::Result<MultiValue> {
    let tcp = this(&lua, &sock)?;
    let max = match lua_int(&max) {
        Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
        _ => return Err(err("bad argument #1 to 'receiveany' (bad max argument)")),
    };
    let (mut conn, generation) = match tcp.take("socket busy reading") {
        Ok(c) => c,
        Err(e) => return fail(&lua, e),
    };
    let read: Read = if conn.buf.is_empty() {
        match fill(&mut conn, tcp.read_timeout.get()).await {
            Ok(0) => Err(("closed".into(), BytesMut::new())),
            Ok(_) => Ok(conn.buf.split_to(max.min(conn.buf.len()))),
            Err(e) => Err((e, BytesMut::new())),
        }
    } else {
        Ok(conn.buf.split_to(max.min(conn.buf.len())))
    };
    let out = finish(&lua, &tcp, conn, generation, read)?;
    // receiveany returns `nil, err` (no partial data).
    Ok(out.into_iter().take(2).collect())
}

/// `sock:receiveuntil(pattern, {inclusive = bool})`: an iterator function
/// taking an optional size.
fn receiveuntil(
    lua: &Lua,
    (sock, pattern, opts): (Table, mlua::LuaString, Option<Table>),
) -> mlua::Result<MultiValue> {
    let tcp = this(lua, &sock)?;
    if pattern.as_bytes().is_empty() {
        return fail(lua, "pattern is empty");
    }
    let inclusive = match &opts {
        Some(o) => match o.get::<Value>("inclusive")? {
            Value::Nil => false,
            Value::Boolean(b) => b,
            other => {
                return Err(err(format!(
                    "bad \"inclusive\" option value type: {}",
                    other.type_name()
                )));
            }
        },
        None => false,
    };
    let until = Rc::new(RefCell::new(Until::new(&pattern.as_bytes(), inclusive)));
    let iterator = lua.create_async_function(move |lua, size: Value| {
        let tcp = tcp.clone();
        let until = until.clone();
        async move {
            tcp.owner.check(&lua)?;
            let size = match &size {
                Value::Nil => None,
                v => match lua_int(v) {
                    Some(n) if n > 0 => usize::try_from(n).ok(),
                    _ => None,
                },
            };
            let (mut conn, generation) = match tcp.take("socket busy reading") {
                Ok(c) => c,
                Err(e) => return fail(&lua, e),
            };
            let timeout = tcp.read_timeout.get();
            let read: Result<Option<BytesMut>, (String, BytesMut)> = loop {
                let step = until.borrow_mut().step(&mut conn.buf, size);
                match step {
                    Step::Data(d) => break Ok(Some(BytesMut::from(&d[..]))),
                    Step::End => break Ok(None),
                    Step::More => match fill(&mut conn, timeout).await {
                        Ok(0) => break Err(("closed".into(), conn.buf.split())),
                        Ok(_) => {}
                        Err(e) => break Err((e, conn.buf.split())),
                    },
                }
            };
            if read.is_err() {
                until.borrow_mut().reset();
            }
            match read {
                Ok(None) => {
                    tcp.give_back(conn, generation, true);
                    Ok(MultiValue::from_vec(vec![Value::Nil, Value::Nil]))
                }
                Ok(Some(data)) => finish(&lua, &tcp, conn, generation, Ok(data)),
                Err(e) => finish(&lua, &tcp, conn, generation, Err(e)),
            }
        }
    })?;
    Ok(MultiValue::from_vec(vec![Value::Function(iterator)]))
}
