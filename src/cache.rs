//! The two-level proxy cache (SPEC §6), built up in leaves that know
//! nothing of sockets or Lua: [`policy`] (RFC 9111 shared-cache rules:
//! what may be stored, for how long, which variant a request wants, how a
//! 304 updates an entry) and [`disk`] (the L2 tier: checksummed entry
//! files bounded in size, an index rebuilt on start, writes off the
//! request path). The request path and the memory tier come later.

pub mod policy;
pub mod disk;
