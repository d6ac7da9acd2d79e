//! `ngx.location.capture` / `capture_multi` (subrequests through
//! moongate's own routes, run in-process by the proxy's
//! [`SubRunner`](crate::lua::subrequest::SubRunner), concurrently) and
//! `ngx.exec` (an internal redirect: the proxy routes the request again).
//! Arguments, options and errors follow ngx_lua's; named locations
//! (`@name`) do not exist in moongate and are an error.

use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Uri};
use mlua::{Lua, MultiValue, Table, Value, Variadic};

use super::{METHODS, bad_argument, codec, err, lua_int, lua_type};
use crate::lua::Phase;
use crate::lua::request::ReqCtx;
use crate::lua::subrequest::{MAX_DEPTH, SubRequest, SubResponse};
use crate::lua::worker;

/// Installs `ngx.location` and `ngx.exec`.
pub(super) fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let location = lua.create_table()?;
    location.set(
        "capture",
        lua.create_async_function(|lua, args: Variadic<Value>| async move {
            if args.len() != 1 && args.len() != 2 {
                return Err(err("expecting one or two arguments"));
            }
            let one = lua.create_sequence_from(args.iter().cloned())?;
            let all = lua.create_sequence_from([one])?;
            capture_multi(lua, MultiValue::from_iter([Value::Table(all)])).await
        })?,
    )?;
    location.set(
        "capture_multi",
        lua.create_async_function(|lua, args: MultiValue| capture_multi(lua, args))?,
    )?;
    ngx.set("location", location)?;
    ngx.set(
        "exec",
        lua.create_async_function(|lua, args: MultiValue| async move {
            let r = request_in_phase(&lua)?;
            let target = exec_target(&r, &args)?;
            r.set_exec(target);
            // The handler ends here (as with ngx.exit): the proxy routes
            // the request again.
            std::future::pending::<()>().await;
            Ok(())
        })?,
    )?;
    Ok(())
}

/// The request running Lua, when it is in a phase where subrequests and
/// internal redirects are allowed (rewrite, access, content).
fn request_in_phase(lua: &Lua) -> mlua::Result<Rc<ReqCtx>> {
    let worker = worker::of(lua)?;
    let Some(r) = worker.running.current() else {
        let phase = worker.timers.phase_outside_requests();
        return Err(phase.disabled());
    };
    match r.phase.get() {
        Phase::Rewrite | Phase::Access | Phase::Content => Ok(r),
        other => Err(other.disabled()),
    }
}

async fn capture_multi(lua: Lua, args: MultiValue) -> mlua::Result<MultiValue> {
    if args.len() != 1 {
        return Err(err(format!(
            "only one argument is expected, but got {}",
            args.len()
        )));
    }
    let Some(Value::Table(queries)) = args.front() else {
        return Err(bad_argument(1, "capture_multi", "table", args.front()));
    };
    let n = queries.raw_len();
    if n == 0 {
        return Err(err("at least one subrequest should be specified"));
    }
    let r = request_in_phase(&lua)?;
    let runner = r
        .runner
        .clone()
        .ok_or_else(|| err("no request object found"))?;
    let mut built = Vec::with_capacity(n);
    for index in 0..n {
        let query = queries.raw_get::<Value>(index + 1)?;
        built.push(build(&lua, &r, index, query)?);
    }
    let mut shared_vars = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    for (sub, share) in built {
        shared_vars.push(share);
        let Some(sub) = sub else {
            tasks.push(None);
            continue;
        };
        let uri = sub.uri.to_string();
        if sub.depth > MAX_DEPTH {
            tracing::error!(target: "moongate::lua", "subrequests cycle while processing \"{uri}\"");
            return Err(err("failed to issue subrequest: -1"));
        }
        if !runner.admit() {
            tracing::error!(target: "moongate::lua", "too many subrequests while processing \"{uri}\"");
            return Err(err("failed to issue subrequest: -1"));
        }
        tasks.push(Some(AbortOnDrop(tokio::task::spawn_local(
            runner.clone().run(sub),
        ))));
    }
    let mut out = MultiValue::new();
    for (task, share) in tasks.into_iter().zip(shared_vars) {
        let resp = match task {
            None => empty_response(404),
            Some(mut task) => match (&mut task.0).await {
                Ok(resp) => resp,
                Err(e) => {
                    tracing::error!(target: "moongate::lua", "subrequest failed: {e}");
                    empty_response(500)
                }
            },
        };
        if share {
            r.vars.borrow_mut().extend(resp.vars.clone());
        }
        out.push_back(Value::Table(result_table(&lua, &resp)?));
    }
    Ok(out)
}

/// A subrequest's answer with `status` and nothing else.
fn empty_response(status: u16) -> SubResponse {
    SubResponse {
        status,
        headers: HeaderMap::new(),
        body: Bytes::new(),
        truncated: false,
        vars: HashMap::new(),
    }
}

/// Aborts a spawned subrequest when the capture is abandoned (the parent
/// request went away).
struct AbortOnDrop(tokio::task::JoinHandle<SubResponse>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One `{uri, options?}` entry of `capture_multi` as a subrequest (and
/// whether its variables are shared back: `share_all_vars`); `None` for a
/// URI no route can match.
fn build(
    lua: &Lua,
    r: &ReqCtx,
    index: usize,
    query: Value,
) -> mlua::Result<(Option<SubRequest>, bool)> {
    let query = match query {
        Value::Nil => return Err(err("only array-like tables are allowed")),
        Value::Table(t) => t,
        other => {
            return Err(err(format!(
                "the query argument {index} is not a table, but a {}",
                lua_type(&other)
            )));
        }
    };
    let nargs = query.raw_len();
    if nargs != 1 && nargs != 2 {
        return Err(err(format!(
            "query argument {index} expecting one or two arguments"
        )));
    }
    let mut method = Method::GET;
    let mut extra_args: Option<Vec<u8>> = None;
    let mut body: Option<Bytes> = None;
    let mut ctx = None;
    let mut always_forward_body = false;
    let mut share = false;
    let mut copy = false;
    let mut set_vars = Vec::new();
    if nargs == 2 {
        let opts = match query.raw_get::<Value>(2)? {
            Value::Table(t) => t,
            other => {
                return Err(err(format!(
                    "expecting table as the 2nd argument for subrequest {index}, but got {}",
                    lua_type(&other)
                )));
            }
        };
        extra_args = match opts.get::<Value>("args")? {
            Value::Table(t) => Some(codec::encode_args(&t)?),
            Value::Nil => None,
            v @ (Value::String(_) | Value::Integer(_) | Value::Number(_)) => Some(scalar_bytes(&v)),
            _ => return Err(err("Bad args option value")),
        };
        match opts.get::<Value>("vars")? {
            Value::Table(t) => set_vars = vars_option(&t)?,
            Value::Nil => {}
            _ => return Err(err("Bad vars option value")),
        }
        share = bool_option(&opts, "share_all_vars", "Bad share_all_vars option value")?;
        copy = bool_option(&opts, "copy_all_vars", "Bad copy_all_vars option value")?;
        always_forward_body = !matches!(
            opts.get::<Value>("always_forward_body")?,
            Value::Nil | Value::Boolean(false)
        );
        method = match opts.get::<Value>("method")? {
            Value::Nil => Method::GET,
            v @ (Value::Integer(_) | Value::Number(_)) => {
                let code = lua_int(&v).unwrap_or(-1);
                let Some((name, _)) = METHODS.iter().find(|(_, c)| *c == code) else {
                    tracing::error!(target: "moongate::lua", "unsupported HTTP method: {code}");
                    return Err(err("failed to adjust the subrequest: -1"));
                };
                Method::from_bytes(name.as_bytes()).map_err(err)?
            }
            _ => return Err(err("Bad http request method")),
        };
        match opts.get::<Value>("ctx")? {
            Value::Nil => {}
            Value::Table(t) => ctx = Some(lua.create_registry_value(t)?),
            other => {
                return Err(err(format!(
                    "Bad ctx option value type {}, expected a Lua table",
                    lua_type(&other)
                )));
            }
        }
        body = match opts.get::<Value>("body")? {
            Value::Nil => None,
            v @ (Value::String(_) | Value::Integer(_) | Value::Number(_)) => {
                Some(Bytes::from(scalar_bytes(&v)))
            }
            _ => return Err(err("Bad http request body")),
        };
    }
    let uri = match query.raw_get::<Value>(1)? {
        v @ (Value::String(_) | Value::Integer(_) | Value::Number(_)) => scalar_bytes(&v),
        other => {
            return Err(bad_argument(1, "capture", "string", Some(&other)));
        }
    };
    let uri = match target_uri(&uri, extra_args.as_deref()) {
        Some(Target::Path(uri)) => uri,
        Some(Target::NoRoute(_)) => return Ok((None, false)),
        None => {
            let uri = lossy(&uri);
            tracing::error!(target: "moongate::lua", "unsafe URI \"{uri}\" was detected");
            return Err(err(format!("unsafe uri in argument #1: {uri}")));
        }
    };

    // Without a `body`, POST and PUT subrequests (and any with
    // `always_forward_body`) get the parent's body, once it was read.
    let body = body.or_else(|| {
        (always_forward_body || method == Method::POST || method == Method::PUT)
            .then(|| r.body_data.borrow().clone())
            .flatten()
    });
    let mut headers = r.head.borrow().headers.clone();
    // The body's framing is the subrequest's own, and a subrequest is no
    // protocol upgrade nor waits for `100 Continue`.
    for name in [
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
        header::CONNECTION,
        header::UPGRADE,
        header::EXPECT,
    ] {
        headers.remove(name);
    }
    if let Some(b) = &body {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(b.len()));
    }
    let mut vars = if share || copy {
        r.vars.borrow().clone()
    } else {
        HashMap::new()
    };
    vars.extend(set_vars);
    let sub = SubRequest {
        method,
        uri,
        headers,
        body,
        facts: r.facts.clone(),
        depth: r.depth.saturating_add(1),
        ctx,
        vars,
    };
    Ok((Some(sub), share))
}

fn bool_option(opts: &Table, name: &str, bad: &str) -> mlua::Result<bool> {
    match opts.get::<Value>(name)? {
        Value::Nil => Ok(false),
        Value::Boolean(b) => Ok(b),
        _ => Err(err(bad)),
    }
}

/// The `vars` option: names and values (strings or numbers).
fn vars_option(t: &Table) -> mlua::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, v) = pair?;
        let Value::String(k) = k else {
            return Err(err(
                "attempt to use a non-string key in the \"vars\" option table",
            ));
        };
        let v = match &v {
            Value::String(_) | Value::Integer(_) | Value::Number(_) => scalar_bytes(&v),
            other => {
                return Err(err(format!(
                    "attempt to use bad variable value type {}",
                    lua_type(other)
                )));
            }
        };
        out.push((lossy(&k.as_bytes()), lossy(&v)));
    }
    Ok(out)
}

fn scalar_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Integer(i) => i.to_string().into_bytes(),
        Value::Number(n) => super::output::format_number(*n).into_bytes(),
        _ => Vec::new(),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Where a subrequest or internal redirect goes.
enum Target {
    /// A path (with its query).
    Path(Uri),
    /// A URI that is not a path (`foo`, `*(#*`): no route matches it, so
    /// it answers 404, as in nginx where no location does.
    NoRoute(String),
}

/// `uri` (with its own query, if any) and `extra` args joined as nginx
/// does (`a=1` + `b=2` → `a=1&b=2`); `None` for a URI nginx calls unsafe:
/// empty, starting with `?` or `.`, with a NUL byte or a `..` segment.
fn target_uri(uri: &[u8], extra: Option<&[u8]>) -> Option<Target> {
    let (path, own) = match uri.iter().position(|&b| b == b'?') {
        Some(i) => (&uri[..i], Some(&uri[i + 1..])),
        None => (uri, None),
    };
    if matches!(uri.first(), None | Some(b'?' | b'.'))
        || path.contains(&0)
        || path.split(|&b| b == b'/').any(|seg| seg == b"..")
    {
        return None;
    }
    let args = match (
        own.filter(|a| !a.is_empty()),
        extra.filter(|a| !a.is_empty()),
    ) {
        (Some(a), Some(b)) => Some([a, b"&", b].concat()),
        (a, b) => a.or(b).map(<[u8]>::to_vec),
    };
    // Bytes a URI may not hold as they are (spaces, controls, non-ASCII)
    // are percent-encoded, as nginx does when it proxies such a URI.
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'<')
        .add(b'>')
        .add(b'`')
        .add(b'{')
        .add(b'}')
        .add(b'|')
        .add(b'\\')
        .add(b'^')
        .add(b'#');
    let mut text = percent_encoding::percent_encode(path, KEEP).to_string();
    if let Some(args) = args {
        text.push('?');
        text.push_str(&percent_encoding::percent_encode(&args, KEEP).to_string());
    }
    match text.parse() {
        Ok(uri) if path.first() == Some(&b'/') => Some(Target::Path(uri)),
        _ => Some(Target::NoRoute(text)),
    }
}

/// `ngx.exec(uri, args?)`'s target, `/path?args`, checked as ngx_lua does.
fn exec_target(r: &ReqCtx, args: &MultiValue) -> mlua::Result<String> {
    if args.len() != 1 && args.len() != 2 {
        return Err(err(format!(
            "expecting one or two arguments, but got {}",
            args.len()
        )));
    }
    let uri = match args.front() {
        Some(v @ (Value::String(_) | Value::Integer(_) | Value::Number(_))) => scalar_bytes(v),
        other => {
            return Err(bad_argument(1, "exec", "string", other));
        }
    };
    if uri.is_empty() {
        return Err(err("The uri argument is empty"));
    }
    if uri.first() == Some(&b'@') {
        return Err(err(format!(
            "named location {} does not exist: moongate has no named locations",
            lossy(&uri)
        )));
    }
    let extra = match args.get(1) {
        None | Some(Value::Nil) => None,
        Some(v @ (Value::String(_) | Value::Integer(_) | Value::Number(_))) => {
            Some(scalar_bytes(v))
        }
        Some(Value::Table(t)) => Some(codec::encode_args(t)?),
        Some(other) => {
            return Err(err(format!(
                "bad argument #2 to 'exec' (string, number, or table expected, but got {})",
                lua_type(other)
            )));
        }
    };
    let target = match target_uri(&uri, extra.as_deref()) {
        Some(Target::Path(uri)) => uri.to_string(),
        // The proxy answers 404 for a target it cannot route.
        Some(Target::NoRoute(text)) => text,
        None => {
            tracing::error!(target: "moongate::lua", "unsafe URI \"{}\" was detected", lossy(&uri));
            return Err(err("unsafe uri"));
        }
    };
    if r.output.headers_sent() {
        return Err(err(
            "attempt to call ngx.exec after sending out response headers",
        ));
    }
    Ok(target)
}

/// `{status=, header=, body=, truncated=}`; a header sent more than once
/// is an array of its values, in order. Names are in their usual case
/// (`Content-Type`): hyper keeps them lowercase; any other spelling finds
/// them too.
fn result_table(lua: &Lua, resp: &SubResponse) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 4)?;
    t.set("status", resp.status)?;
    t.set("truncated", resp.truncated)?;
    t.set("body", lua.create_string(&resp.body)?)?;
    let headers = lua.create_table_with_capacity(0, resp.headers.keys_len())?;
    for name in resp.headers.keys() {
        let values: Vec<_> = resp.headers.get_all(name).iter().collect();
        let key = title_case(name.as_str());
        if let [one] = values.as_slice() {
            headers.set(key, lua.create_string(one.as_bytes())?)?;
        } else {
            let list = lua.create_table_with_capacity(values.len(), 0)?;
            for v in values {
                list.push(lua.create_string(v.as_bytes())?)?;
            }
            headers.set(key, list)?;
        }
    }
    headers.set_metatable(Some(header_meta(lua)?))?;
    t.set("header", headers)?;
    Ok(t)
}

/// Where the VM keeps [`header_meta`]'s table.
const HEADER_META: &str = "moongate.capture_header_meta";

/// The metatable of every `res.header`, made once per VM: a header is
/// looked up by any spelling (`res.header.content_type`, `["etag"]`), as
/// `ngx.header` is; keys go to their usual case first.
fn header_meta(lua: &Lua) -> mlua::Result<Table> {
    if let Ok(meta) = lua.named_registry_value::<Table>(HEADER_META) {
        return Ok(meta);
    }
    let meta = lua.create_table_with_capacity(0, 1)?;
    meta.set(
        "__index",
        lua.create_function(|_, (t, key): (Table, Value)| match key {
            Value::String(k) => {
                let k = k.to_str()?.replace('_', "-");
                t.raw_get::<Value>(title_case(&k))
            }
            _ => Ok(Value::Nil),
        })?,
    )?;
    lua.set_named_registry_value(HEADER_META, &meta)?;
    Ok(meta)
}

/// `content-type` → `Content-Type`.
fn title_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = c == '-';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_uris_join_args_and_refuse_unsafe_paths() {
        let u = |s: &str, e: Option<&str>| match target_uri(s.as_bytes(), e.map(str::as_bytes)) {
            Some(Target::Path(u)) => Some(u.to_string()),
            Some(Target::NoRoute(t)) => Some(format!("no route: {t}")),
            None => None,
        };
        assert_eq!(u("/foo", None).as_deref(), Some("/foo"));
        assert_eq!(u("/foo?a=1", Some("b=3")).as_deref(), Some("/foo?a=1&b=3"));
        assert_eq!(u("/foo?", Some("b=3")).as_deref(), Some("/foo?b=3"));
        assert_eq!(u("/a b", None).as_deref(), Some("/a%20b"));
        assert_eq!(u("/a/../b", None), None);
        assert_eq!(u("/a/..", None), None);
        assert_eq!(u("/a\nb", None).as_deref(), Some("/a%0Ab"));
        assert_eq!(u("foo", None).as_deref(), Some("no route: foo"));
        assert_eq!(u("*(#*", None).as_deref(), Some("no route: *(%23*"));
        assert_eq!(u("../x", None), None);
        assert_eq!(u("?a=1", None), None);
        assert_eq!(u("", None), None);
        assert_eq!(u("/a\0b", None), None);
    }

    #[test]
    fn header_names_take_their_usual_case() {
        assert_eq!(title_case("content-type"), "Content-Type");
        assert_eq!(title_case("x-a"), "X-A");
        assert_eq!(title_case("etag"), "Etag");
    }
}
