//! The reading methods cosockets share: `receive` (`"*l"`, `"*a"`, a
//! size), `receiveany` and a `receiveuntil` iterator's call, over any
//! [`Source`] of bytes (a TCP connection, or the request body behind
//! `ngx.req.socket()`). Each gives `data` or `nil, err, partial` as
//! ngx_lua does; what to do with the source after an error is the
//! caller's business.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use mlua::{Lua, MultiValue, Table, Value};

use super::fail;
use super::until::{Step, Until};
use crate::lua::api::{err, lua_int};

/// Where a cosocket's reads come from: a buffer of bytes read but not yet
/// handed to Lua, and a way to read more into it.
pub(super) trait Source {
    /// Read but not yet returned to Lua.
    fn buf(&mut self) -> &mut BytesMut;

    /// Reads at least one more chunk into [`buf`](Source::buf): `Ok(0)` at
    /// the end of the stream, `Err("timeout")` after `timeout` without
    /// data, `Err(other)` for a failure.
    async fn fill(&mut self, timeout: Duration) -> Result<usize, String>;
}

/// How `receive` reads.
pub(super) enum Pattern {
    Line,
    All,
    Size(usize),
}

/// `receive`'s argument: nil or `"*l"`, `"*a"`, or a size.
pub(super) fn pattern_arg(pattern: &Value) -> mlua::Result<Pattern> {
    let bad = || err("bad argument #1 to 'receive' (bad pattern argument)");
    Ok(match pattern {
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
    })
}

/// How a read ended: data, or an error with the partial data read.
pub(super) type Read = Result<BytesMut, (String, BytesMut)>;

/// `receive(pattern)` over `src`. `"*a"` at the end of the stream is a
/// success.
pub(super) async fn receive<S: Source>(src: &mut S, pattern: Pattern, timeout: Duration) -> Read {
    match pattern {
        Pattern::Size(n) => {
            while src.buf().len() < n {
                match src.fill(timeout).await {
                    Ok(0) => return Err(("closed".into(), src.buf().split())),
                    Ok(_) => {}
                    Err(e) => return Err((e, src.buf().split())),
                }
            }
            Ok(src.buf().split_to(n))
        }
        Pattern::All => loop {
            match src.fill(timeout).await {
                Ok(0) => return Ok(src.buf().split()),
                Ok(_) => {}
                Err(e) => return Err((e, src.buf().split())),
            }
        },
        Pattern::Line => {
            let mut scanned = 0;
            loop {
                let buf = src.buf();
                if let Some(i) = buf[scanned..].iter().position(|&b| b == b'\n') {
                    let mut line = buf.split_to(scanned + i);
                    buf.advance(1);
                    strip_cr(&mut line);
                    return Ok(line);
                }
                scanned = buf.len();
                let e = match src.fill(timeout).await {
                    Ok(0) => "closed".to_string(),
                    Ok(_) => continue,
                    Err(e) => e,
                };
                let mut partial = src.buf().split();
                strip_cr(&mut partial);
                return Err((e, partial));
            }
        }
    }
}

/// Drops every CR, as ngx_lua's `"*l"` does.
fn strip_cr(line: &mut BytesMut) {
    if line.contains(&b'\r') {
        let kept: Vec<u8> = line.iter().copied().filter(|&b| b != b'\r').collect();
        *line = BytesMut::from(&kept[..]);
    }
}

/// `receiveany`'s `max` argument (positive).
pub(super) fn max_arg(max: &Value) -> mlua::Result<usize> {
    match lua_int(max) {
        Some(n) if n > 0 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        _ => Err(err("bad argument #1 to 'receiveany' (bad max argument)")),
    }
}

/// `receiveany(max)` over `src`: what is buffered, or one more read.
pub(super) async fn receive_any<S: Source>(src: &mut S, max: usize, timeout: Duration) -> Read {
    if src.buf().is_empty() {
        match src.fill(timeout).await {
            Ok(0) => return Err(("closed".into(), BytesMut::new())),
            Ok(_) => {}
            Err(e) => return Err((e, BytesMut::new())),
        }
    }
    let buf = src.buf();
    Ok(buf.split_to(max.min(buf.len())))
}

/// `sock:receiveuntil(pattern, {inclusive = bool})` for any socket: the
/// iterator function (or `nil, "pattern is empty"`). Each call of it runs
/// `read` with the iterator's state and the size it was given (`None`:
/// up to the pattern).
pub(super) fn until_iterator<F, Fut>(
    lua: &Lua,
    pattern: &[u8],
    opts: Option<&Table>,
    read: F,
) -> mlua::Result<MultiValue>
where
    F: Fn(Lua, Rc<RefCell<Until>>, Option<usize>) -> Fut + 'static,
    Fut: Future<Output = mlua::Result<MultiValue>> + 'static,
{
    let Some(until) = until_args(pattern, opts)? else {
        return fail(lua, "pattern is empty");
    };
    let until = Rc::new(RefCell::new(until));
    let iterator = lua
        .create_async_function(move |lua, size: Value| read(lua, until.clone(), size_arg(&size)))?;
    Ok(MultiValue::from_vec(vec![Value::Function(iterator)]))
}

/// `receiveuntil(pattern, {inclusive = bool})`'s arguments: the iterator's
/// state, or `None` for an empty pattern.
fn until_args(pattern: &[u8], opts: Option<&Table>) -> mlua::Result<Option<Until>> {
    if pattern.is_empty() {
        return Ok(None);
    }
    let inclusive = match opts {
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
    Ok(Some(Until::new(pattern, inclusive)))
}

/// The size given to a `receiveuntil` iterator (`None`: up to the pattern).
fn size_arg(size: &Value) -> Option<usize> {
    match lua_int(size) {
        Some(n) if n > 0 => usize::try_from(n).ok(),
        _ => None,
    }
}

/// One call of a `receiveuntil` iterator over `src`: data, `None` for
/// `nil, nil` (the pattern was consumed), or an error (which resets the
/// iterator).
pub(super) async fn receive_until<S: Source>(
    src: &mut S,
    until: &RefCell<Until>,
    size: Option<usize>,
    timeout: Duration,
) -> Result<Option<BytesMut>, (String, BytesMut)> {
    let read = loop {
        let step = until.borrow_mut().step(src.buf(), size);
        match step {
            Step::Data(d) => break Ok(Some(BytesMut::from(&d[..]))),
            Step::End => break Ok(None),
            Step::More => match src.fill(timeout).await {
                Ok(0) => break Err(("closed".into(), src.buf().split())),
                Ok(_) => {}
                Err(e) => break Err((e, src.buf().split())),
            },
        }
    };
    if read.is_err() {
        until.borrow_mut().reset();
    }
    read
}

/// A read's outcome for Lua: `data`, or `nil, err, partial`.
pub(super) fn results(lua: &Lua, read: Read) -> mlua::Result<MultiValue> {
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

/// A `receiveuntil` iterator's outcome for Lua: as [`results`], with
/// `nil, nil` once the pattern was consumed.
pub(super) fn until_results(
    lua: &Lua,
    read: Result<Option<BytesMut>, (String, BytesMut)>,
) -> mlua::Result<MultiValue> {
    match read {
        Ok(None) => Ok(MultiValue::from_vec(vec![Value::Nil, Value::Nil])),
        Ok(Some(data)) => results(lua, Ok(data)),
        Err(e) => results(lua, Err(e)),
    }
}

/// `receiveany`'s outcome for Lua: `data` or `nil, err` (no partial data).
pub(super) fn any_results(lua: &Lua, read: Read) -> mlua::Result<MultiValue> {
    Ok(results(lua, read)?.into_iter().take(2).collect())
}
