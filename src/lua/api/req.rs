//! `ngx.req.*`: the request's method, URI, arguments and headers.

use bytes::Bytes;
use http::HeaderValue;
use mlua::{Lua, MultiValue, Table, Value};

use crate::body::{RequestBody, RequestBodyError};

use super::METHODS;
use super::codec::{decode_args, encode_args};
use super::header::{header_name, headers_to_table, set_header_values};
use super::var::{set_path, set_query};
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
    t.set(
        "get_headers",
        request_fn(lua, worker, |lua, r, _: MultiValue| {
            let headers = headers_to_table(lua, &r.head.borrow().headers)?;
            // ngx_lua's table looks names up case-insensitively, `_` for `-`.
            let meta = lua.create_table()?;
            meta.set(
                "__index",
                lua.create_function(|_, (t, key): (Table, String)| {
                    t.raw_get::<Value>(key.to_ascii_lowercase().replace('_', "-"))
                })?,
            )?;
            headers.set_metatable(Some(meta))?;
            Ok(headers)
        })?,
    )?;
    t.set(
        "set_header",
        // A string value (the usual case) crosses as a plain string.
        request_fn(
            lua,
            worker,
            |_, r, (name, value): (String, mlua::Either<String, Value>)| {
                let name = header_name(&name)?;
                let value = match value {
                    mlua::Either::Left(text) => {
                        let value = HeaderValue::try_from(text).map_err(super::err)?;
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
            r.head.borrow_mut().headers.remove(header_name(&name)?);
            Ok(())
        })?,
    )?;
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
            Ok(())
        })?,
    )?;
    t.set(
        "get_body_data",
        request_fn(lua, worker, |lua, r, ()| {
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
            let (args, truncated) = decode_args(lua, &data, max)?;
            Ok((Value::Table(args), truncated))
        })?,
    )?;
    Ok(t)
}
