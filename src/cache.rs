//! The two-level proxy cache (SPEC §6). Leaves that know nothing of
//! sockets or Lua: [`policy`] (RFC 9111 shared-cache rules: what may be
//! stored, for how long, which variant a request wants, how a 304 updates
//! an entry), [`disk`] (the L2 tier: checksummed entry files bounded in
//! size, an index rebuilt on start, writes off the request path) and
//! [`entry`] (what is stored, and its encoding for L2). [`zone`] joins
//! them into one `[cache.NAME]` zone (L1 in memory + L2), kept across
//! reloads, with its [`stats`]; [`lock`] and [`fill`] make one origin
//! request per key and share its response while it streams, which
//! [`stream`] turns into response bodies; [`step`] is the request path's
//! cache step, which `proxy` calls before and after the upstream;
//! [`purge`] drops keys or prefixes from both tiers (the admin API's
//! `DELETE /cache/{zone}`).

pub mod policy;
pub mod disk;
pub mod entry;
pub mod zone;
pub mod stats;
pub mod lock;
pub mod fill;
pub mod stream;
pub mod step;
pub mod purge;

pub use step::{CacheStatus, Lookup, Pending};
pub use zone::Zone;
