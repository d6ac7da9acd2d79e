//! The counters behind rate-limit zones: [`Buckets`] (a token bucket per
//! key, refilled at a [`Rate`]) and [`Concurrency`] (at most N in flight per
//! key, like nginx's `limit_conn`). Both are shared by every worker thread
//! and outlive reloads when their definition does not change.
//!
//! Plain Rust: it knows nothing of HTTP, Lua, Redis or config files. Keys
//! are byte strings chosen by the caller (a client address, an API key, a
//! route name); a take returns a [`Decision`] and the request path decides
//! what a denial looks like.

mod rate;
mod bucket;
mod conn;

pub use bucket::{Buckets, Decision};
pub use conn::{Concurrency, Permit};
pub use rate::Rate;

#[cfg(test)]
mod tests;
