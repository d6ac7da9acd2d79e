//! Choosing a peer for a request: nginx's balancers (smooth weighted round
//! robin, `least_conn`, `ip_hash`, consistent hash) and "power of two
//! choices", and nginx's rules around them: backups only when no primary is
//! available, every peer tried again when all are down, and a sole peer
//! never marked down by passive health. Peers taken out by active health
//! checks are never picked, not even by that revival (nor is a sole peer
//! spared): the prober, not a request, brings them back.
//!
//! A [`Balancer`] is built once per upstream per config snapshot (or per
//! change of a managed pool's members) and shared by every worker thread.
//! It only returns an index into the peer list; it knows nothing of
//! addresses, connections or retries (the caller keeps a [`Tried`] per
//! request), and takes the time as an argument.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::peer::Peer;

/// Points per unit of weight on the consistent-hash ring (as ketama/nginx).
const POINTS_PER_WEIGHT: u64 = 160;

/// How many times `ip_hash` rehashes past an unusable peer before it falls
/// back to round robin (nginx's limit).
const IP_HASH_TRIES: usize = 20;

/// The balancing method of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// nginx's smooth weighted round robin (the default).
    RoundRobin,
    /// Fewest requests in flight relative to weight; ties by round robin.
    LeastConn,
    /// The client address picks the peer, so a client sticks to one peer.
    IpHash,
    /// Consistent hashing of a request key (URI, header, ...).
    Hash,
    /// Two peers at random (weighted), the less loaded of the two.
    Random2,
}

impl Balance {
    /// The conf.d spelling, for messages and the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastConn => "least_conn",
            Balance::IpHash => "ip_hash",
            Balance::Hash => "hash",
            Balance::Random2 => "random2",
        }
    }
}

/// What the hashing balancers hash; the others ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickKey<'a> {
    /// No key: `ip_hash` and `hash` fall back to round robin.
    None,
    /// The client address (IPv4-mapped IPv6 counts as the IPv4 address).
    Ip(IpAddr),
    /// Any bytes, such as the expanded `key` of a `hash` upstream.
    Bytes(&'a [u8]),
}

/// The peer indexes one request has already tried, so a retry goes
/// elsewhere. A bitset: no heap for indexes below 64.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tried {
    /// Indexes 0..64.
    low: u64,
    /// Indexes from 64 on, 64 per word; empty (no allocation) until needed.
    high: Vec<u64>,
}

impl Tried {
    /// An empty set for a list of `n` peers (allocates only when n > 64).
    pub fn new(n: usize) -> Self {
        Tried {
            low: 0,
            high: Vec::with_capacity(n.saturating_sub(64).div_ceil(64)),
        }
    }

    /// Adds `index`; returns true when it was not there yet.
    pub fn insert(&mut self, index: usize) -> bool {
        let (word, bit) = match index.checked_sub(64) {
            None => (&mut self.low, index),
            Some(i) => {
                let w = i / 64;
                if self.high.len() <= w {
                    self.high.resize(w + 1, 0);
                }
                match self.high.get_mut(w) {
                    Some(word) => (word, i % 64),
                    None => return false,
                }
            }
        };
        let mask = 1u64 << bit;
        let fresh = *word & mask == 0;
        *word |= mask;
        fresh
    }

    /// Whether `index` was tried.
    pub fn contains(&self, index: usize) -> bool {
        match index.checked_sub(64) {
            None => self.low & (1u64 << index) != 0,
            Some(i) => self
                .high
                .get(i / 64)
                .is_some_and(|w| w & (1u64 << (i % 64)) != 0),
        }
    }

    /// How many peers were tried.
    pub fn len(&self) -> usize {
        let high: u32 = self.high.iter().map(|w| w.count_ones()).sum();
        (self.low.count_ones() + high) as usize
    }

    /// True when nothing was tried yet.
    pub fn is_empty(&self) -> bool {
        self.low == 0 && self.high.iter().all(|&w| w == 0)
    }
}

/// Picks peers for one upstream. `Send + Sync`: one per upstream, shared by
/// all worker threads. Build it from the same peer list later given to
/// [`Balancer::pick`].
pub struct Balancer {
    /// The method in use.
    kind: Balance,
    /// Smooth weighted round robin's `current_weight` per peer, shared by all
    /// threads so the split is exact across them. Round robin also serves
    /// backups, `least_conn` ties and the hashing balancers' fallback.
    current: Mutex<Vec<i64>>,
    /// `ip_hash`: `(cumulative weight end, peer index)` over every primary,
    /// available or not, so a client's peer does not move when another
    /// peer fails or is marked `down`.
    ip_table: Vec<(u64, usize)>,
    /// `ip_hash`: total weight of the primaries.
    ip_total: u64,
    /// hash: the ring of `(point, peer index)`, sorted by point.
    ring: Vec<(u64, usize)>,
    /// hash: distinct peers on the ring, to stop a walk that found none.
    ring_peers: usize,
    /// Exactly one peer is not `down` (backups included): passive health
    /// never marks it (see [`Balancer::record_failure`]).
    sole: bool,
}

/// A peer chosen for one try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// Its index in the peer list.
    pub index: usize,
    /// The peer is spent (past its request limit) and was chosen because no
    /// other peer was available: send it the request with [`Peer::begin`],
    /// not [`Peer::try_begin`].
    pub spent: bool,
    /// How many failed peers had their marks cleared to make this pick,
    /// because every peer not yet tried was down: 0 normally. The caller
    /// logs it (one thread clears a mark, so it is logged once).
    pub revived: usize,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("kind", &self.kind)
            .field("peers", &self.lock_current().len())
            .field("ring_points", &self.ring.len())
            .finish()
    }
}

impl Balancer {
    /// Prepares the balancer's state for `peers`: the round-robin weights,
    /// and for `IpHash` / `Hash` the weighted table / consistent-hash ring.
    pub fn new(kind: Balance, peers: &[Arc<Peer>]) -> Self {
        let primaries = || peers.iter().enumerate().filter(|(_, p)| !p.config.backup);
        let mut ip_table = Vec::new();
        let mut ip_total = 0;
        let mut ring = Vec::new();
        let mut ring_peers = 0;
        match kind {
            Balance::IpHash => {
                for (i, peer) in primaries() {
                    ip_total += weight(peer);
                    ip_table.push((ip_total, i));
                }
            }
            Balance::Hash => {
                for (i, peer) in primaries() {
                    ring_peers += 1;
                    for point in 0..POINTS_PER_WEIGHT * weight(peer) {
                        ring.push((ring_point(peer, i, point), i));
                    }
                }
                ring.sort_unstable();
            }
            Balance::RoundRobin | Balance::LeastConn | Balance::Random2 => {}
        }
        Balancer {
            kind,
            current: Mutex::new(vec![0; peers.len()]),
            ip_table,
            ip_total,
            ring,
            ring_peers,
            sole: peers.iter().filter(|p| !p.config.down).count() == 1,
        }
    }

    /// The method this balancer was built for.
    pub fn kind(&self) -> Balance {
        self.kind
    }

    /// Counts a failed try on `peer` (one of this balancer's) against its
    /// passive health, unless it is the upstream's sole peer: as in nginx
    /// (max_fails and fail_timeout are ignored for a single server), since
    /// marking it could only turn every request into a 502 for
    /// `fail_timeout`. Returns true when this call marked the peer failed.
    pub fn record_failure(&self, peer: &Peer, now: Instant) -> bool {
        !self.sole && peer.record_failure(now)
    }

    /// A peer not in `tried` for the next try, in nginx's order: an
    /// available primary by the balancing method; else an available backup,
    /// by round robin; else the spent peer (past its request limit) that
    /// became spent last. When none is left but some untried peers are only marked
    /// failed, their marks are cleared and the pick is made again (nginx
    /// tries every peer again when all are down, rather than failing every
    /// request until a mark expires); peers down by active checks stay out.
    /// `None` when every peer is `down`, taken out by checks, or tried.
    pub fn pick(
        &self,
        peers: &[Arc<Peer>],
        key: PickKey<'_>,
        tried: &Tried,
        now: Instant,
    ) -> Option<Pick> {
        if let Some(pick) = self.select(peers, key, tried, now) {
            return Some(pick);
        }
        let revived = peers
            .iter()
            .enumerate()
            .filter(|&(i, p)| !tried.contains(i) && p.revive(now))
            .count();
        // Another thread may have revived them first: pick again anyway.
        let pick = self.select(peers, key, tried, now)?;
        Some(Pick { revived, ..pick })
    }

    /// [`Balancer::pick`] without the revival.
    fn select(
        &self,
        peers: &[Arc<Peer>],
        key: PickKey<'_>,
        tried: &Tried,
        now: Instant,
    ) -> Option<Pick> {
        let usable =
            |i: usize| !tried.contains(i) && peers.get(i).is_some_and(|p| p.is_available(now));
        let fresh = |i: usize, backup: bool| {
            usable(i)
                && peers
                    .get(i)
                    .is_some_and(|p| p.config.backup == backup && !p.is_spent())
        };
        let primary = |i: usize| fresh(i, false);
        let chosen = match self.kind {
            Balance::RoundRobin => self.round_robin(peers, primary),
            Balance::LeastConn => self.least_conn(peers, primary),
            Balance::Random2 => random2(peers, primary),
            Balance::IpHash => match key_hash(key) {
                Some(hash) => self
                    .ip_hash(hash, primary)
                    .or_else(|| self.round_robin(peers, primary)),
                None => self.round_robin(peers, primary),
            },
            Balance::Hash => match key_hash(key) {
                Some(hash) => self.ring_walk(peers.len(), hash, primary),
                None => self.round_robin(peers, primary),
            },
        };
        let pick = |index, spent| Pick {
            index,
            spent,
            revived: 0,
        };
        if let Some(i) = chosen.or_else(|| self.round_robin(peers, |i| fresh(i, true))) {
            return Some(pick(i, false));
        }
        // The peer that became spent last serves on; the others, at their
        // limits, get nothing more.
        peers
            .iter()
            .enumerate()
            .filter(|&(i, p)| usable(i) && p.is_spent())
            .max_by_key(|(_, p)| p.spent_order())
            .map(|(i, _)| pick(i, true))
    }

    /// nginx's smooth weighted round robin over the peers `eligible` lets
    /// through: each gains its weight, the highest is chosen and loses the
    /// total. Spreads a heavy peer's turns out instead of bunching them.
    fn round_robin(&self, peers: &[Arc<Peer>], eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let mut current = self.lock_current();
        if current.len() != peers.len() {
            current.resize(peers.len(), 0);
        }
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for (i, (peer, cw)) in peers.iter().zip(current.iter_mut()).enumerate() {
            if !eligible(i) {
                continue;
            }
            let w = i64::from(peer.config.weight.max(1));
            *cw += w;
            total += w;
            if best.is_none_or(|(_, b)| *cw > b) {
                best = Some((i, *cw));
            }
        }
        let (chosen, _) = best?;
        if let Some(cw) = current.get_mut(chosen) {
            *cw -= total;
        }
        Some(chosen)
    }

    /// Fewest requests in flight per unit of weight; round robin among ties.
    fn least_conn(&self, peers: &[Arc<Peer>], eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<(usize, u64, u64)> = None;
        for (i, peer) in peers.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            let (a, w) = (u64::from(peer.active()), weight(peer));
            if best.is_none_or(|(_, ba, bw)| a * bw < ba * w) {
                best = Some((i, a, w));
            }
        }
        let (first, ba, bw) = best?;
        let tied = |i: usize| {
            eligible(i)
                && peers
                    .get(i)
                    .is_some_and(|p| u64::from(p.active()) * bw == ba * weight(p))
        };
        // Counts may move between the passes; then the first pass's best.
        Some(self.round_robin(peers, tied).unwrap_or(first))
    }

    /// nginx's `ip_hash`: the hash picks a slot in the weighted table; past an
    /// unusable peer, rehash, up to [`IP_HASH_TRIES`] times.
    fn ip_hash(&self, hash: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        if self.ip_total == 0 {
            return None;
        }
        let mut h = hash;
        for _ in 0..=IP_HASH_TRIES {
            let w = h % self.ip_total;
            let slot = self.ip_table.partition_point(|&(end, _)| end <= w);
            if let Some(&(_, i)) = self.ip_table.get(slot)
                && eligible(i)
            {
                return Some(i);
            }
            h = mix(h.wrapping_add(0x9e37_79b9_7f4a_7c15));
        }
        None
    }

    /// Consistent hashing: the first ring point clockwise from `hash` whose
    /// peer is usable.
    fn ring_walk(&self, n: usize, hash: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.ring.len();
        let start = self.ring.partition_point(|&(point, _)| point < hash);
        let mut rejected = Tried::new(n);
        for step in 0..len {
            let Some(&(_, i)) = self.ring.get((start + step) % len) else {
                continue;
            };
            if rejected.contains(i) {
                continue;
            }
            if eligible(i) {
                return Some(i);
            }
            rejected.insert(i);
            if rejected.len() >= self.ring_peers {
                break;
            }
        }
        None
    }

    fn lock_current(&self) -> MutexGuard<'_, Vec<i64>> {
        // Nothing panics under this lock; a poisoned one is still usable.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Power of two choices: two distinct peers drawn at random, in proportion
/// to weight; the one with fewer requests in flight per unit of weight.
fn random2(peers: &[Arc<Peer>], eligible: impl Fn(usize) -> bool) -> Option<usize> {
    let total: u64 = (0..peers.len())
        .filter(|&i| eligible(i))
        .filter_map(|i| peers.get(i))
        .map(|p| weight(p))
        .sum();
    if total == 0 {
        return None;
    }
    // Availability can change between passes; then take any eligible peer.
    let Some(first) = weighted_nth(peers, &eligible, fastrand::u64(0..total)) else {
        return (0..peers.len()).find(|&i| eligible(i));
    };
    let first_peer = peers.get(first)?;
    let rest = total.saturating_sub(weight(first_peer));
    if rest == 0 {
        return Some(first);
    }
    let others = |i: usize| i != first && eligible(i);
    let Some(second) = weighted_nth(peers, &others, fastrand::u64(0..rest)) else {
        return Some(first);
    };
    let second_peer = peers.get(second)?;
    let lighter = u64::from(second_peer.active()) * weight(first_peer)
        < u64::from(first_peer.active()) * weight(second_peer);
    Some(if lighter { second } else { first })
}

/// The eligible peer whose weight span contains `r` (0 ≤ r < total weight).
fn weighted_nth(
    peers: &[Arc<Peer>],
    eligible: &impl Fn(usize) -> bool,
    mut r: u64,
) -> Option<usize> {
    for (i, peer) in peers.iter().enumerate() {
        if !eligible(i) {
            continue;
        }
        let w = weight(peer);
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    None
}

/// A peer's weight, with 0 counting as 1.
fn weight(peer: &Peer) -> u64 {
    u64::from(peer.config.weight.max(1))
}

/// The stable hash of a pick key, or `None` when there is none.
fn key_hash(key: PickKey<'_>) -> Option<u64> {
    match key {
        PickKey::None => None,
        PickKey::Ip(ip) => Some(match ip.to_canonical() {
            IpAddr::V4(v4) => stable_hash(&[&v4.octets()]),
            IpAddr::V6(v6) => stable_hash(&[&v6.octets()]),
        }),
        PickKey::Bytes(bytes) => Some(stable_hash(&[bytes])),
    }
}

/// Where point number `point` of a peer sits on the ring: derived from the
/// peer's name, or from its position when it has none, never from anything
/// random, so the ring is the same after a restart.
fn ring_point(peer: &Peer, index: usize, point: u64) -> u64 {
    let point = point.to_le_bytes();
    if peer.name().is_empty() {
        let index = (index as u64).to_le_bytes();
        stable_hash(&[b"#", &index, b"-", &point])
    } else {
        stable_hash(&[peer.name().as_bytes(), b"-", &point])
    }
}

/// FNV-1a over the parts, then a murmur3 finaliser so that keys differing
/// only in their last bytes still land far apart. No seed: stable across
/// processes, restarts and machines.
fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// murmur3's 64-bit finaliser.
fn mix(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests;
