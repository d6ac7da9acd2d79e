//! `ngx.req.*`: the request's method, URI, arguments, headers and body.

use bytes::{Bytes, BytesMut};
use mlua::{Lua, Table, Value};

use crate::body::{RequestBody, RequestBodyError};
use crate::lua::request::{BODY_BUFFER_SIZE, BodyFile, NewBody, ReqCtx};

use super::METHODS;
use super::codec::{decode_args, encode_args};
use super::header::{
    header_value, headers_meta, headers_table, lua_case, request_header_name, set_header_values,
};
use super::var::{raw_head, set_path, set_query};
use std::rc::Rc;

use super::{err, req, request_fn};
use crate::lua::worker::LuaWorker;

pub(super) fn req_table(lua: &Lua, worker: &Rc<LuaWorker>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "get_method",
        lua.create_function(|lua, ()| Ok(req(lua)?.head.borrow().method.to_string()))?,
    )?;
    t.set(
        "set_method",
        request_fn(lua, worker, |_, r, code: i64| {
            let name = METHODS
                .iter()
                .find(|(_, c)| *c == code)
                .map(|(n, _)| *n)
                .ok_or_else(|| err(format!("unsupported HTTP method: {code}")))?;
            r.head.borrow_mut().method = http::Method::from_bytes(name.as_bytes()).map_err(err)?;
            Ok(())
        })?,
    )?;
    t.set(
        "http_version",
        lua.create_function(|lua, ()| {
            Ok(match req(lua)?.head.borrow().version {
                http::Version::HTTP_10 => 1.0,
                http::Version::HTTP_2 => 2.0,
                _ => 1.1,
            })
        })?,
    )?;
    t.set(
        "start_time",
        lua.create_function(|lua, ()| Ok(req(lua)?.started_wall))?,
    )?;
    t.set(
        "set_uri",
        request_fn(lua, worker, |_, r, (uri, _jump): (String, Option<bool>)| {
            set_path(r, &uri)
        })?,
    )?;
    t.set(
        "set_uri_args",
        lua.create_function(|lua, args: Value| {
            let query = match args {
                Value::String(s) => s.to_str()?.to_string(),
                Value::Table(t) => String::from_utf8_lossy(&encode_args(&t)?).into_owned(),
                Value::Nil => String::new(),
                other => {
                    return Err(err(format!(
                        "bad argument: {} not a string or table",
                        other.type_name()
                    )));
                }
            };
            let r = req(lua)?;
            set_query(&r, Some(&query))
        })?,
    )?;
    t.set(
        "get_uri_args",
        request_fn(lua, worker, |lua, r, max: Option<i64>| {
            let query = r.head.borrow().uri.query().unwrap_or("").to_string();
            decode_args(lua, query.as_bytes(), max)
        })?,
    )?;
    let meta = headers_meta(lua)?;
    t.set(
        "get_headers",
        request_fn(lua, worker, move |lua, r, args: (Option<i64>, Value)| {
            let case = |name: &http::HeaderName| {
                lua_case(r, name).or_else(|| received_case(r, name.as_str()))
            };
            headers_table(lua, &r.head.borrow().headers, args, &meta, &case)
        })?,
    )?;
    t.set(
        "set_header",
        // A string value (the usual case) crosses as a plain string.
        request_fn(
            lua,
            worker,
            |_, r, (name, value): (String, mlua::Either<String, Value>)| {
                let name = request_header_name(r, name.as_bytes())?;
                let value = match value {
                    mlua::Either::Left(text) => {
                        if name == http::header::HOST {
                            // `$host` follows a new Host, as in nginx.
                            r.vars.borrow_mut().insert(
                                "host".into(),
                                host_without_port(&text).to_ascii_lowercase(),
                            );
                        }
                        let value = header_value(text.as_bytes())?;
                        let mut head = r.head.borrow_mut();
                        head.headers.insert(name, value);
                        return Ok(());
                    }
                    mlua::Either::Right(v) => v,
                };
                set_header_values(&mut r.head.borrow_mut().headers, name, value)
            },
        )?,
    )?;
    t.set(
        "clear_header",
        request_fn(lua, worker, |_, r, name: String| {
            let name = request_header_name(r, name.as_bytes())?;
            r.head.borrow_mut().headers.remove(name);
            Ok(())
        })?,
    )?;
    t.set(
        "raw_header",
        request_fn(lua, worker, |lua, r, no_request_line: Value| {
            let raw = raw_head(r, &r.head.borrow());
            let skip = match no_request_line {
                Value::Nil | Value::Boolean(false) => 0,
                _ => raw.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1),
            };
            lua.create_string(raw.get(skip..).unwrap_or_default())
        })?,
    )?;
    t.set(
        "is_internal",
        request_fn(lua, worker, |_, r, ()| Ok(r.internal.get()))?,
    )?;
    body_functions(lua, worker, &t)?;
    t.set("socket", super::socket::req_socket(lua)?)?;
    // The body streams to the upstream as it arrives unless a handler
    // reads it: then it is held in memory (within client_max_body_size).
    t.set(
        "read_body",
        lua.create_async_function(|lua, ()| async move {
            let r = req(&lua)?;
            if r.body_data.borrow().is_some() {
                return Ok(());
            }
            let body = std::mem::replace(&mut *r.body.borrow_mut(), RequestBody::empty());
            let status = match body.read_all().await {
                Ok(data) => {
                    if data.len() > BODY_BUFFER_SIZE {
                        spool(&r, data.clone()).await?;
                    }
                    *r.body_data.borrow_mut() = Some(data);
                    return Ok(());
                }
                Err(RequestBodyError::TooLarge) => 413,
                Err(RequestBodyError::Timeout) => 408,
                Err(e) => return Err(err(e)),
            };
            // As ngx_lua: the request ends with that status.
            r.set_exit(status);
            std::future::pending::<()>().await;
            Ok(())
        })?,
    )?;
    t.set(
        "discard_body",
        request_fn(lua, worker, |_, r, ()| {
            *r.body.borrow_mut() = RequestBody::empty();
            *r.body_data.borrow_mut() = Some(Bytes::new());
            *r.body_file.borrow_mut() = None;
            Ok(())
        })?,
    )?;
    t.set(
        "get_body_data",
        request_fn(lua, worker, |lua, r, ()| {
            // A body in a temp file is read with get_body_file, as in nginx.
            if r.body_file.borrow().is_some() {
                return Ok(Value::Nil);
            }
            match r.body_data.borrow().as_ref() {
                Some(data) if !data.is_empty() => lua.create_string(data).map(Value::String),
                _ => Ok(Value::Nil),
            }
        })?,
    )?;
    t.set(
        "set_body_data",
        request_fn(lua, worker, |_, r, data: mlua::LuaString| {
            *r.body.borrow_mut() = RequestBody::empty();
            *r.body_file.borrow_mut() = None;
            *r.body_data.borrow_mut() = Some(Bytes::copy_from_slice(&data.as_bytes()));
            Ok(())
        })?,
    )?;
    t.set(
        "get_post_args",
        request_fn(lua, worker, |lua, r, max: Option<i64>| {
            let Some(data) = r.body_data.borrow().clone() else {
                let e =
                    lua.create_string("request body not read yet: call ngx.req.read_body() first")?;
                return Ok((Value::Nil, Value::String(e)));
            };
            if r.body_file.borrow().is_some() {
                let e = lua.create_string("request body in temp file not supported")?;
                return Ok((Value::Nil, Value::String(e)));
            }
            let (args, truncated) = decode_args(lua, &data, max)?;
            Ok((Value::Table(args), truncated))
        })?,
    )?;
    Ok(t)
}

/// The case a request header's name had in the head as received (HTTP/1;
/// HTTP/2 names are lowercase on the wire).
fn received_case(r: &ReqCtx, name: &str) -> Option<String> {
    let raw = &r.conn.raw_head;
    if raw.is_empty() {
        return None;
    }
    raw.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let given = line.get(..colon)?;
        given
            .eq_ignore_ascii_case(name.as_bytes())
            .then(|| String::from_utf8_lossy(given).into_owned())
    })
}

/// Writes a read body to a temp file (`ngx.req.get_body_file`), kept until
/// the request ends.
async fn spool(r: &ReqCtx, data: Bytes) -> mlua::Result<()> {
    let written = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut file = tempfile::Builder::new()
            .prefix("moongate-body-")
            .tempfile()?;
        file.write_all(&data)?;
        file.flush()?;
        Ok::<_, std::io::Error>(file.into_temp_path())
    })
    .await
    .map_err(err)?;
    let temp = written.map_err(|e| err(format!("fail to write file: {e}")))?;
    *r.body_file.borrow_mut() = Some(BodyFile {
        path: temp.to_path_buf(),
        remove: Some(temp),
    });
    Ok(())
}

/// `get_body_file`, `init_body`, `append_body`, `finish_body`.
fn body_functions(lua: &Lua, worker: &Rc<LuaWorker>, t: &Table) -> mlua::Result<()> {
    t.set(
        "get_body_file",
        request_fn(lua, worker, |_, r, ()| {
            Ok(r.body_file
                .borrow()
                .as_ref()
                .map(|f| f.path.to_string_lossy().into_owned()))
        })?,
    )?;
    t.set(
        "set_body_file",
        lua.create_async_function(
            |lua, (path, auto_clean): (String, Option<bool>)| async move {
                let r = req(&lua)?;
                if r.body_data.borrow().is_none() {
                    return Err(err("request body not read yet"));
                }
                let data = tokio::fs::read(&path)
                    .await
                    .map_err(|_| err(format!("open() \"{path}\" failed")))?;
                let path = std::path::PathBuf::from(path);
                let remove = if auto_clean.unwrap_or(false) {
                    Some(tempfile::TempPath::try_from_path(&path).map_err(err)?)
                } else {
                    None
                };
                *r.body.borrow_mut() = RequestBody::empty();
                *r.body_file.borrow_mut() = Some(BodyFile { path, remove });
                *r.body_data.borrow_mut() = Some(Bytes::from(data));
                Ok(())
            },
        )?,
    )?;
    t.set(
        "init_body",
        request_fn(lua, worker, |_, r, size: Option<i64>| {
            if r.body_data.borrow().is_none() {
                return Err(err("request body not read yet"));
            }
            let buffer_size = match size {
                None => BODY_BUFFER_SIZE,
                Some(n) => {
                    usize::try_from(n).map_err(|_| err(format!("bad size argument: {n}")))?
                }
            };
            *r.new_body.borrow_mut() = Some(NewBody {
                data: BytesMut::with_capacity(buffer_size.min(BODY_BUFFER_SIZE)),
                buffer_size,
            });
            Ok(())
        })?,
    )?;
    t.set(
        "append_body",
        request_fn(lua, worker, |_, r, chunk: mlua::LuaString| {
            let mut building = r.new_body.borrow_mut();
            let body = building
                .as_mut()
                .ok_or_else(|| err("request_body not initialized"))?;
            body.data.extend_from_slice(&chunk.as_bytes());
            Ok(())
        })?,
    )?;
    t.set(
        "finish_body",
        lua.create_async_function(|lua, ()| async move {
            let r = req(&lua)?;
            let built = r
                .new_body
                .borrow_mut()
                .take()
                .ok_or_else(|| err("request_body not initialized"))?;
            let data = built.data.freeze();
            *r.body.borrow_mut() = RequestBody::empty();
            *r.body_file.borrow_mut() = None;
            // Over its buffer the body goes to a temp file, as in nginx
            // (a size of 0 means a file only).
            if data.len() > built.buffer_size || built.buffer_size == 0 {
                spool(&r, data.clone()).await?;
            }
            *r.body_data.borrow_mut() = Some(data);
            Ok(())
        })?,
    )?;
    Ok(())
}

/// `example.com:8080` → `example.com`, `[::1]:80` → `[::1]`.
fn host_without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_without_port() {
        assert_eq!(super::host_without_port("a.test:8080"), "a.test");
        assert_eq!(super::host_without_port("a.test"), "a.test");
        assert_eq!(super::host_without_port("[::1]:80"), "[::1]");
        assert_eq!(super::host_without_port("[::1]"), "[::1]");
    }
}
