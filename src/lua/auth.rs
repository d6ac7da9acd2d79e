//! `require "policies.native"`: what the `jwt`, `basic_auth`, `acl` and
//! `api_key` policies' Lua handlers call into. Each function takes the
//! policy's number, does the whole check natively against the running
//! request (token or password, consumer, upstream headers, `$consumer`)
//! and returns nothing to let the request on, or the status (and the
//! `WWW-Authenticate` value) to refuse it with.

use std::sync::Arc;
use std::time::Duration;

use mlua::{Lua, Table};

use super::api;
use super::request::ReqCtx;
use crate::auth::jwt::JwtError;
use crate::policies::native::{self, Compiled, Natives, Recognised};
use crate::policies::{basic_auth::Basic, jwt::Jwt};

/// How long a request waits for a JWKS fetch it asked for (a token named
/// a `kid` the set does not have yet).
const JWKS_WAIT: Duration = Duration::from_secs(5);

/// A refusal: the status, and the `WWW-Authenticate` value to send.
type Refusal = (Option<u16>, Option<String>);

/// Registers `policies.native` for the VM's program.
pub fn install(lua: &Lua, natives: Arc<Natives>) -> mlua::Result<()> {
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    preload.set(
        "policies.native",
        lua.create_function(move |lua, ()| module(lua, natives.clone()))?,
    )
}

fn module(lua: &Lua, natives: Arc<Natives>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    // Each check has a plain function for the common case and an async one
    // the handler calls only when the first says WAIT: a call through
    // mlua's async machinery costs a coroutine and a boxed future.
    let n = natives.clone();
    t.set(
        "jwt",
        lua.create_function(move |lua, id: usize| Ok(jwt_now(&*api::req(lua)?, jwt_of(&n, id)?)))?,
    )?;
    let n = natives.clone();
    t.set(
        "jwt_wait",
        lua.create_async_function(move |lua, (id, seen): (usize, u64)| {
            jwt_after_fetch(lua, n.clone(), id, seen)
        })?,
    )?;
    let n = natives.clone();
    t.set(
        "basic",
        lua.create_function(move |lua, id: usize| {
            Ok(basic_now(&*api::req(lua)?, basic_of(&n, id)?))
        })?,
    )?;
    let n = natives.clone();
    t.set(
        "basic_wait",
        lua.create_async_function(move |lua, id: usize| basic_slow(lua, n.clone(), id))?,
    )?;
    t.set("WAIT", WAIT)?;
    let n = natives.clone();
    t.set(
        "acl",
        lua.create_function(move |lua, id: usize| {
            let Some(Compiled::Acl(acl)) = n.get(id) else {
                return Err(not_a("acl", id));
            };
            let r = api::req(lua)?;
            let name = r.vars.borrow().get(CONSUMER).cloned();
            let Some(name) = name else {
                return Ok(Some(401));
            };
            let groups = n.consumers.by_name(&name).map(|c| c.groups.as_slice());
            let refused = acl.decide(groups.unwrap_or_default());
            if refused.is_none() && acl.hide_groups_header {
                r.head.borrow_mut().headers.remove(&native::CONSUMER_GROUPS);
            }
            Ok(refused)
        })?,
    )?;
    let n = natives;
    t.set(
        "api_key",
        lua.create_function(move |lua, (key, local): (String, Option<String>)| {
            let r = api::req(lua)?;
            let who = match local {
                Some(name) => Recognised {
                    consumer: n.consumers.by_name(&name).cloned(),
                    credential: name.clone(),
                    name,
                },
                None => match n.consumers.by_api_key(&key) {
                    Some(c) => Recognised {
                        name: c.name.clone(),
                        consumer: Some(c.clone()),
                        credential: c.name.clone(),
                    },
                    None => return Ok(None),
                },
            };
            recognise(&r, &who);
            Ok(Some(who.name))
        })?,
    )?;
    Ok(t)
}

/// `$consumer`'s name among a request's variables.
pub const CONSUMER: &str = "consumer";

fn not_a(what: &str, id: usize) -> mlua::Error {
    mlua::Error::runtime(format!("policy {id} is not a {what} policy"))
}

fn jwt_of(n: &Natives, id: usize) -> mlua::Result<&Jwt> {
    match n.get(id) {
        Some(Compiled::Jwt(p)) => Ok(p),
        _ => Err(not_a("jwt", id)),
    }
}

fn basic_of(n: &Natives, id: usize) -> mlua::Result<&Basic> {
    match n.get(id) {
        Some(Compiled::Basic(p)) => Ok(p),
        _ => Err(not_a("basic_auth", id)),
    }
}

/// Records who the caller is: `$consumer`, and the upstream headers.
fn recognise(r: &ReqCtx, who: &Recognised) {
    native::announce(&mut r.head.borrow_mut(), who);
    r.vars
        .borrow_mut()
        .insert(CONSUMER.to_owned(), who.name.clone());
}

/// What a plain check answers when the async one must finish the job.
const WAIT: u16 = 0;

/// Verifies the request's token now; `WAIT` when the key may be in a JWKS
/// fetch under way (the handler then calls `jwt_wait` with the third
/// value: the fetches begun before the miss).
fn jwt_now(r: &ReqCtx, p: &Jwt) -> (Option<u16>, Option<String>, Option<u64>) {
    let found = p.token(&r.head.borrow());
    let Some((token, from)) = found else {
        return (Some(401), Some(p.challenge(None)), None);
    };
    let seen = p.jwks.as_ref().map(|c| c.fetches());
    let now = crate::policies::jwt::now();
    let verified = p.verify(&token, now);
    // A key the set does not have yet: the first fetch still under way, or
    // a key rotated in since the last one, and a fetch was granted now (a
    // made-up `kid` while early fetches are held back waits for nothing).
    if let (Err(JwtError::UnknownKid), Some(cache)) = (&verified, &p.jwks)
        && (!cache.loaded() || cache.early_refresh_at() == Some(now))
    {
        return (Some(WAIT), None, seen);
    }
    let (status, challenge) = settle_jwt(r, p, verified, from);
    (status, challenge, None)
}

/// `jwt_now`'s WAIT: waits (once, bounded) for the JWKS fetch, then
/// verifies again.
async fn jwt_after_fetch(lua: Lua, n: Arc<Natives>, id: usize, seen: u64) -> mlua::Result<Refusal> {
    let (r, p) = (api::req(&lua)?, jwt_of(&n, id)?);
    let found = p.token(&r.head.borrow());
    let Some((token, from)) = found else {
        return Ok((Some(401), Some(p.challenge(None))));
    };
    if let Some(cache) = &p.jwks {
        if cache.loaded() {
            cache.fetched_since(seen, JWKS_WAIT).await;
        } else {
            cache.first_fetch(JWKS_WAIT).await;
        }
    }
    let verified = p.verify(&token, crate::policies::jwt::now());
    Ok(settle_jwt(&r, p, verified, from))
}

fn settle_jwt(
    r: &ReqCtx,
    p: &Jwt,
    verified: Result<crate::policies::jwt::Verified, JwtError>,
    from: crate::policies::jwt::From,
) -> Refusal {
    match verified {
        Err(e) => (Some(401), Some(p.challenge(Some(&e)))),
        Ok(v) => {
            {
                let mut head = r.head.borrow_mut();
                p.apply(&mut head, &v, from);
                native::clear_consumer_headers(&mut head);
            }
            if let Some(who) = &v.who {
                recognise(r, who);
            }
            (None, None)
        }
    }
}

/// Checks the request's password now when that is quick (a fast scheme,
/// or a success remembered); `WAIT` when a slow hash must run (the
/// handler then calls `basic_wait`).
fn basic_now(r: &ReqCtx, p: &Basic) -> Refusal {
    let refuse = || (Some(401), Some(p.challenge().to_owned()));
    let found = p.request_credentials(&r.head.borrow());
    let Some((user, password)) = found else {
        return refuse();
    };
    let Some(stored) = p.stored(&user) else {
        return refuse();
    };
    match p.cache.quick(&user, &password, &stored) {
        None => (Some(WAIT), None),
        Some(false) => refuse(),
        Some(true) => {
            p.apply(&mut r.head.borrow_mut());
            recognise(r, &p.recognised(&user));
            (None, None)
        }
    }
}

/// `basic_now`'s WAIT: the slow hash, off the event loop.
async fn basic_slow(lua: Lua, n: Arc<Natives>, id: usize) -> mlua::Result<Refusal> {
    let (r, p) = (api::req(&lua)?, basic_of(&n, id)?);
    let refuse = || Ok((Some(401), Some(p.challenge().to_owned())));
    let found = p.request_credentials(&r.head.borrow());
    let Some((user, password)) = found else {
        return refuse();
    };
    let Some(stored) = p.stored(&user) else {
        return refuse();
    };
    // bcrypt and the crypt schemes take milliseconds: other requests on
    // this worker go on meanwhile.
    let cache = p.cache.clone();
    let (name, hash) = (user.clone(), stored.clone());
    let ok = tokio::task::spawn_blocking(move || {
        let ok = hash.verify(&password);
        if ok {
            cache.remember(&name, &password, &hash);
        }
        ok
    })
    .await
    .unwrap_or(false);
    if !ok {
        return refuse();
    }
    p.apply(&mut r.head.borrow_mut());
    recognise(&r, &p.recognised(&user));
    Ok((None, None))
}
