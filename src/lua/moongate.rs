//! `require "moongate"`: what ngx_lua does through nginx directives.
//! `mg.upstream.set(name)` picks the upstream for this request;
//! `mg.http.request{...}` is an HTTP/1.1 call (http:// or https://) that
//! yields the coroutine while it waits (see [`callout`]).
//! `mg.limit.take(zone, key, cost)` takes tokens from a `[limit.NAME]`
//! zone's bucket (yielding while Redis answers for `scope = "redis"`).
//! `mg.cache.key/bypass/no_store/ttl` record the request's cache decisions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use mlua::{Lua, MultiValue, Table, Value};

use super::worker;
use crate::limit::Decision;
use crate::throttle::{Taken, Zone};
use crate::tls_client::TlsClients;

mod callout;

/// Registers the module in `package.preload`; `upstreams` are the names
/// `mg.upstream.set` accepts, `limits` the zones `mg.limit.take` takes from,
/// `trusted` the CAs `mg.http.request` trusts for https (`[lua]
/// ssl_trusted_certificate`; the system's bundle without it).
pub fn install(
    lua: &Lua,
    upstreams: Arc<Vec<String>>,
    limits: Arc<BTreeMap<String, Arc<Zone>>>,
    trusted: Option<PathBuf>,
) -> mlua::Result<()> {
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    // Made on first https call, kept for the VM's life.
    let tls = Rc::new(TlsClients::new(trusted));
    preload.set(
        "moongate",
        lua.create_function(move |lua, ()| {
            module(lua, upstreams.clone(), limits.clone(), tls.clone())
        })?,
    )?;
    Ok(())
}

fn module(
    lua: &Lua,
    upstreams: Arc<Vec<String>>,
    limits: Arc<BTreeMap<String, Arc<Zone>>>,
    tls: Rc<TlsClients>,
) -> mlua::Result<Table> {
    let mg = lua.create_table()?;
    mg.set("limit", limit_table(lua, limits)?)?;
    let upstream = lua.create_table()?;
    upstream.set(
        "set",
        lua.create_function(move |lua, name: String| {
            if !upstreams.contains(&name) {
                let err = format!("no upstream named \"{name}\"");
                return Ok(MultiValue::from_vec(vec![
                    Value::Nil,
                    Value::String(lua.create_string(err)?),
                ]));
            }
            let r = worker::of(lua)?
                .running
                .current()
                .ok_or_else(|| mlua::Error::runtime("mg.upstream.set needs a request"))?;
            *r.upstream.borrow_mut() = Some(name);
            Ok(MultiValue::from_vec(vec![Value::Boolean(true)]))
        })?,
    )?;
    mg.set("upstream", upstream)?;
    let http = lua.create_table()?;
    http.set(
        "request",
        lua.create_async_function(move |lua, opts: Table| {
            let tls = tls.clone();
            async move {
                match callout::request(&lua, opts, &tls).await {
                    Ok(res) => Ok(MultiValue::from_vec(vec![Value::Table(res)])),
                    Err(e) => Ok(MultiValue::from_vec(vec![
                        Value::Nil,
                        Value::String(lua.create_string(e)?),
                    ])),
                }
            }
        })?,
    )?;
    mg.set("http", http)?;
    let ip = lua.create_table()?;
    ip.set(
        "matcher",
        lua.create_function(|lua, list: Vec<String>| {
            let mut nets = Vec::with_capacity(list.len());
            for item in &list {
                let net = item
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        mlua::Error::runtime(format!("\"{item}\" is not an IP address or CIDR"))
                    })?;
                nets.push(net);
            }
            lua.create_userdata(IpMatcher(nets))
        })?,
    )?;
    mg.set("ip", ip)?;
    mg.set("cache", cache_table(lua)?)?;
    Ok(mg)
}

/// `mg.cache`: the request's cache decisions, read by the cache step.
/// `key(k)` (a string) and `bypass()` from rewrite/access; `no_store()`
/// and `ttl(sec)` (a number ≥ 0) from rewrite/access and header_filter.
/// Each returns `true`; wrong argument types raise an error, while a call
/// outside a request, from another phase, or on a route without a cache
/// zone returns `nil, err` and changes nothing (as ngx_lua's context
/// errors are harmless to check).
fn cache_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "key",
        lua.create_function(|lua, k: Value| {
            let Value::String(k) = k else {
                return Err(mlua::Error::runtime(format!(
                    "mg.cache.key: string expected, got {}",
                    k.type_name()
                )));
            };
            let k = k.to_str()?.to_string();
            cache_call(lua, "key", false, |ctx| {
                ctx.cache.borrow_mut().key = Some(k);
            })
        })?,
    )?;
    t.set(
        "bypass",
        lua.create_function(|lua, ()| {
            cache_call(lua, "bypass", false, |ctx| {
                ctx.cache.borrow_mut().bypass = true
            })
        })?,
    )?;
    t.set(
        "no_store",
        lua.create_function(|lua, ()| {
            cache_call(lua, "no_store", true, |ctx| {
                if ctx.phase.get() == super::Phase::HeaderFilter {
                    let mut late = ctx.cache_late.get();
                    late.no_store = true;
                    ctx.cache_late.set(late);
                } else {
                    ctx.cache.borrow_mut().overrides.no_store = true;
                }
            })
        })?,
    )?;
    t.set(
        "ttl",
        lua.create_function(|lua, sec: Value| {
            let secs = match sec {
                Value::Integer(i) => i as f64,
                Value::Number(n) => n,
                other => {
                    return Err(mlua::Error::runtime(format!(
                        "mg.cache.ttl: number expected, got {}",
                        other.type_name()
                    )));
                }
            };
            let ttl = Duration::try_from_secs_f64(secs).map_err(|_| {
                mlua::Error::runtime(format!("mg.cache.ttl: seconds must be ≥ 0, got {secs}"))
            })?;
            cache_call(lua, "ttl", true, |ctx| {
                if ctx.phase.get() == super::Phase::HeaderFilter {
                    let mut late = ctx.cache_late.get();
                    late.ttl = Some(ttl);
                    ctx.cache_late.set(late);
                } else {
                    ctx.cache.borrow_mut().overrides.ttl = Some(ttl);
                }
            })
        })?,
    )?;
    Ok(t)
}

/// Applies `set` to the running request's state when `mg.cache.NAME`
/// may act here: `true`, else `nil, err`.
fn cache_call(
    lua: &Lua,
    name: &str,
    in_header_filter: bool,
    set: impl FnOnce(&super::request::ReqCtx),
) -> mlua::Result<MultiValue> {
    use super::Phase;
    let Some(ctx) = worker::of(lua)?.running.current() else {
        return failure(lua, format!("mg.cache.{name} needs a request"));
    };
    if !ctx.cache_zone.get() {
        return failure(lua, "no cache zone on this route".to_string());
    }
    let allowed = match ctx.phase.get() {
        Phase::Rewrite | Phase::Access => true,
        Phase::HeaderFilter => in_header_filter,
        _ => false,
    };
    if !allowed {
        let phase = ctx.phase.get().name();
        return failure(lua, format!("mg.cache.{name} cannot be called in {phase}"));
    }
    set(&ctx);
    Ok(MultiValue::from_vec(vec![Value::Boolean(true)]))
}

/// `mg.ip.matcher{...}`: a set of networks; `:contains(addr)` tells
/// whether an address is in one of them (IPv4-mapped IPv6 counts as IPv4).
struct IpMatcher(Vec<ipnet::IpNet>);

impl mlua::UserData for IpMatcher {
    fn add_methods<M: mlua::UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("contains", |_, this, addr: String| {
            let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
                return Ok(false);
            };
            let ip = match ip {
                std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
                v4 => v4,
            };
            Ok(this.0.iter().any(|net| net.contains(&ip)))
        });
    }
}

/// `mg.limit`: `take(zone, key, cost)` → `true, remaining, 0` when allowed,
/// `false, 0, retry_after` (seconds) when the bucket is short, and
/// `nil, err` for an unknown zone, a concurrency zone, or a cost above the
/// zone's burst (which no wait could ever allow).
///
/// A take from a `scope = "redis"` zone yields the coroutine while Redis
/// answers (an async function); a take from a local zone stays a plain
/// call without coroutine machinery. [`DISPATCH`] picks one by zone name.
fn limit_table(lua: &Lua, limits: Arc<BTreeMap<String, Arc<Zone>>>) -> mlua::Result<Table> {
    let remote_zones = lua.create_table()?;
    for (name, zone) in limits.iter() {
        if zone.is_remote() {
            remote_zones.set(name.as_str(), true)?;
        }
    }
    let local_zones = limits.clone();
    let local = lua.create_function(
        move |lua, (zone, key, cost): (String, mlua::BString, Option<f64>)| match take_args(
            &local_zones,
            &zone,
            cost,
        ) {
            Ok((z, cost)) => answer(lua, &zone, z.take(&key, cost)),
            Err(msg) => failure(lua, msg),
        },
    )?;
    let remote = lua.create_async_function(
        move |lua, (zone, key, cost): (String, mlua::BString, Option<f64>)| {
            let limits = limits.clone();
            async move {
                match take_args(&limits, &zone, cost) {
                    Ok((z, cost)) => {
                        let redis = worker::of(&lua)?.redis.clone();
                        let taken = z.take_remote(&redis, &key, cost).await;
                        answer(&lua, &zone, taken)
                    }
                    Err(msg) => failure(&lua, msg),
                }
            }
        },
    )?;
    let take: mlua::Function =
        lua.load(DISPATCH)
            .set_name("=mg.limit.take")
            .call((local, remote, remote_zones))?;
    let t = lua.create_table()?;
    t.set("take", take)?;
    Ok(t)
}

/// `mg.limit.take`: the async take for redis-scope zones, the plain one
/// for the rest.
const DISPATCH: &str = r"
local take_local, take_remote, remote = ...
return function(zone, key, cost)
    if remote[zone] then
        return take_remote(zone, key, cost)
    end
    return take_local(zone, key, cost)
end
";

/// The zone named `zone` and the cost as a whole number, or why not.
fn take_args(
    limits: &BTreeMap<String, Arc<Zone>>,
    zone: &str,
    cost: Option<f64>,
) -> Result<(Arc<Zone>, u32), String> {
    let Some(z) = limits.get(zone) else {
        return Err(format!("no limit zone named \"{zone}\""));
    };
    let cost = match cost {
        None => 1,
        Some(c) if c >= 1.0 && c <= f64::from(u32::MAX) && c.fract() == 0.0 => c as u32,
        Some(c) => return Err(format!("cost must be a whole number of 1 or more, got {c}")),
    };
    Ok((z.clone(), cost))
}

/// `nil, msg`.
fn failure(lua: &Lua, msg: String) -> mlua::Result<MultiValue> {
    Ok(MultiValue::from_vec(vec![
        Value::Nil,
        Value::String(lua.create_string(msg)?),
    ]))
}

/// What a take returns to Lua.
fn answer(lua: &Lua, zone: &str, taken: Taken) -> mlua::Result<MultiValue> {
    let out = match taken {
        Taken::NotARateZone => {
            return failure(
                lua,
                format!(
                    "limit zone \"{zone}\" counts requests in flight (kind = \"conn\"); mg.limit.take needs a rate zone"
                ),
            );
        }
        Taken::Remote => {
            return failure(
                lua,
                format!("limit zone \"{zone}\" lives in redis; take from it through mg.limit.take"),
            );
        }
        Taken::Rate(Decision::TooCostly { limit, cost }) => {
            return failure(
                lua,
                format!(
                    "cost {cost} is more than limit zone \"{zone}\" ever allows at once (burst {limit})"
                ),
            );
        }
        Taken::Rate(Decision::Allowed { remaining, .. }) => vec![
            Value::Boolean(true),
            Value::Integer(i64::from(remaining)),
            Value::Integer(0),
        ],
        Taken::Rate(Decision::Denied { retry_after, .. }) => vec![
            Value::Boolean(false),
            Value::Integer(0),
            Value::Number(retry_after.as_secs_f64()),
        ],
    };
    Ok(MultiValue::from_vec(out))
}
