//! Credentials checked at the edge, as plain Rust leaves for the
//! authentication policies (`jwt`, `basic_auth`) and `[consumer.NAME]`:
//! JWT verification and JWKS key sets, htpasswd files, and the consumer
//! index. Nothing here knows HTTP requests, routes or Lua: callers pass
//! header values and times in and act on the values that come back.

pub mod jwt;
pub mod jwks;
pub mod htpasswd;
pub mod consumer;
