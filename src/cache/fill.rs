//! One response on its way into the cache while it streams to clients: a
//! [`Fill`] holds the head once the response is known to be storable and
//! the body's chunks as they pass, so that
//! - the request that fetched it (the [`Lead`], whose client drives the
//!   upstream read) stores the entry when the body ends cleanly, and
//! - requests waiting on the key's lock ([`Follower`]s) are answered from
//!   it while it streams: each replays the chunks from the start and
//!   follows the new ones.
//!
//! Memory stays bounded by the zone's `max_object_size`: chunks are kept
//! while the body fits; past it storing is abandoned and chunks are kept
//! only for followers that still need them (a follower falling more than
//! `max_object_size` behind is cut off). A failed or abandoned fill sends
//! its waiters to the origin (or, once streaming, ends their bodies with
//! an error: they had the same answer as the leader's client).
//!
//! The leader's client sets the pace: the upstream is read as that client
//! takes the body (nothing is read ahead of it), so followers get chunks
//! no faster, and when that client goes away mid-body the fill fails for
//! all (the body is not stored, and following it further would need a
//! task reading the upstream on nobody's behalf).
//!
//! Shared by every worker thread (a std mutex around small state; wakers,
//! not channels). Knows chunks and the [`Head`] to answer with, not
//! sockets, Lua or the request path.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, StatusCode};

use super::entry::{Entry, Stored};
use super::lock::Guard;
use super::policy::{self, Lifetime};
use super::zone::Zone;

/// What followers answer with, and what is stored: the response's head.
#[derive(Debug)]
pub struct Head {
    /// The response status.
    pub status: StatusCode,
    /// The upstream's headers, minus what is never stored.
    pub headers: HeaderMap,
    /// Freshness, from when the head arrived (for Age).
    pub lifetime: Lifetime,
    /// Under `Vary`: the names and the leader's variant; a follower
    /// whose request selects another variant must not be answered.
    pub vary: Option<(Vec<HeaderName>, String)>,
}

impl Head {
    /// Whether a request with `req_headers` may be answered with it.
    pub fn matches(&self, req_headers: &HeaderMap) -> bool {
        self.vary
            .as_ref()
            .is_none_or(|(names, variant)| policy::variant_key(names, req_headers) == *variant)
    }
}

/// Where and how the completed body is stored.
pub struct Plan {
    /// The zone to store into.
    pub zone: Arc<Zone>,
    /// The key (a variant's key under Vary).
    pub key: String,
    /// A new Vary marker to store under its base key first.
    pub marker: Option<(String, Entry)>,
}

/// Where a fill is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No head yet: the leader's response is not known to be storable.
    Waiting,
    /// The head is known; chunks arrive.
    Streaming,
    /// The body ended cleanly.
    Complete,
    /// Nothing to follow: not storable, abandoned, or the body failed.
    Failed,
}

/// One follower's place.
struct Slot {
    /// Absolute index of the next chunk it reads.
    next: usize,
    waker: Option<Waker>,
    /// Fell more than `max` bytes behind once storing was abandoned.
    cut: bool,
}

struct State {
    phase: Phase,
    head: Option<Arc<Head>>,
    /// `Some` while the body is being stored (it still fits).
    plan: Option<Plan>,
    chunks: VecDeque<Bytes>,
    /// Absolute index of `chunks[0]`.
    first: usize,
    /// Bytes in `chunks`.
    kept: u64,
    /// Body bytes seen.
    total: u64,
    followers: Vec<Option<Slot>>,
    /// The key's place in the lock table, given up once nothing more is
    /// to be gained by waiting for this fill.
    guard: Option<Guard>,
}

/// A response being filled; see the module docs.
pub struct Fill {
    /// The zone's `max_object_size`.
    max: u64,
    state: Mutex<State>,
}

/// What a fill's changes leave to do outside its lock: wake followers,
/// drop the lock guard (which takes the lock table's lock).
#[derive(Default)]
struct After {
    wake: Vec<Waker>,
    guard: Option<Guard>,
}

impl After {
    fn run(self) {
        drop(self.guard);
        for w in self.wake {
            w.wake();
        }
    }
}

impl Fill {
    /// A fill bounded by `max` bytes, holding `guard` (its key's place in
    /// the lock table) until it is stored or given up.
    pub fn new(max: u64, guard: Option<Guard>) -> Fill {
        Fill {
            max,
            state: Mutex::new(State {
                phase: Phase::Waiting,
                head: None,
                plan: None,
                chunks: VecDeque::new(),
                first: 0,
                kept: 0,
                total: 0,
                followers: Vec::new(),
                guard,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change leaves the state whole: go on after a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A follower replaying from the start, unless chunks were dropped
    /// already or the fill failed.
    pub fn attach(self: &Arc<Self>) -> Option<Follower> {
        let mut st = self.state();
        // Replaying needs every chunk since the start.
        if st.phase == Phase::Failed || st.first > 0 {
            return None;
        }
        let slot = Slot {
            next: 0,
            waker: None,
            cut: false,
        };
        let index = match st.followers.iter().position(Option::is_none) {
            Some(i) => {
                st.followers[i] = Some(slot);
                i
            }
            None => {
                st.followers.push(Some(slot));
                st.followers.len() - 1
            }
        };
        Some(Follower {
            fill: self.clone(),
            slot: index,
        })
    }

    /// The response is storable: followers may answer with `head`, and
    /// the body goes to `plan` when it completes.
    pub fn commit(&self, head: Arc<Head>, plan: Plan) {
        let mut st = self.state();
        if st.phase != Phase::Waiting {
            return;
        }
        if st.total > 0 {
            // Bytes passed before the head was committed: what would be
            // stored would lack them.
            return self.end(st);
        }
        st.phase = Phase::Streaming;
        st.head = Some(head);
        st.plan = Some(plan);
        let after = st.wake_all();
        drop(st);
        after.run();
    }

    /// Nothing will be stored nor followed (not storable, or the head
    /// was never committed): waiters go elsewhere. No-op once streaming.
    pub fn abandon(&self) {
        let st = self.state();
        if st.phase == Phase::Waiting {
            self.end(st);
        }
    }

    /// The body failed or was dropped before its end: nothing is stored,
    /// followers' bodies end in an error. No-op once complete.
    pub fn fail(&self) {
        let st = self.state();
        if matches!(st.phase, Phase::Waiting | Phase::Streaming) {
            self.end(st);
        }
    }

    fn end(&self, mut st: MutexGuard<'_, State>) {
        st.phase = Phase::Failed;
        if let Some(plan) = st.plan.take() {
            plan.zone.counters.aborted();
        }
        st.chunks.clear();
        st.kept = 0;
        let mut after = st.wake_all();
        after.guard = st.guard.take();
        drop(st);
        after.run();
    }

    /// A chunk of the body passed to the leader's client. Returns false
    /// when this chunk made the body too large to store.
    pub fn push(&self, data: &Bytes) -> bool {
        let mut st = self.state();
        if st.phase == Phase::Waiting {
            st.total += data.len() as u64;
        }
        if st.phase != Phase::Streaming {
            return true;
        }
        st.total += data.len() as u64;
        let mut fits = true;
        let mut after = After::default();
        if st.plan.is_some() && st.total > self.max {
            // Too large: stop storing and let new requests lead
            // themselves; keep chunks only for the followers.
            fits = false;
            if let Some(plan) = st.plan.take() {
                plan.zone.counters.too_large();
            }
            after.guard = st.guard.take();
        }
        let followed = st.followers.iter().flatten().any(|s| !s.cut);
        if st.plan.is_some() || followed {
            st.chunks.push_back(data.clone());
            st.kept += data.len() as u64;
        } else {
            st.first += 1;
        }
        if st.plan.is_none() {
            st.trim(self.max);
        }
        after.wake = st.wake_all().wake;
        drop(st);
        after.run();
        fits
    }

    /// Whether reading the rest of the body is still worth it when the
    /// leader's client has gone: the body is still to be stored, or other
    /// requests follow it.
    pub fn worth_finishing(&self) -> bool {
        let st = self.state();
        st.phase == Phase::Streaming
            && (st.plan.is_some() || st.followers.iter().flatten().any(|s| !s.cut))
    }

    /// The body ended cleanly: stores it (when it still fits) and ends
    /// the followers' bodies after their last chunk.
    pub fn complete(&self) {
        let mut st = self.state();
        if st.phase != Phase::Streaming {
            drop(st);
            return self.fail();
        }
        st.phase = Phase::Complete;
        let plan = st.plan.take();
        let head = st.head.clone();
        // References under the lock; the copy outside it.
        let chunks = match &plan {
            Some(_) => st.chunks.clone(),
            None => VecDeque::new(),
        };
        let kept = st.kept;
        let wake = st.wake_all();
        drop(st);
        wake.run();
        if let (Some(plan), Some(head)) = (plan, head) {
            let body = concat(&chunks, kept);
            drop(chunks);
            let Plan { zone, key, marker } = plan;
            if let Some((base, marker)) = marker {
                zone.put(base, marker);
            }
            let stored = Stored {
                status: head.status,
                headers: head.headers.clone(),
                body,
                lifetime: head.lifetime,
            };
            zone.put(key, Entry::Response(stored));
            zone.counters.stored();
        }
        // Only now: a request arriving meanwhile found the key locked
        // (and followed), after this it finds the entry.
        let guard = self.state().guard.take();
        drop(guard);
    }

    /// How many followers are attached (for tests).
    #[cfg(test)]
    fn followers(&self) -> usize {
        self.state().followers.iter().flatten().count()
    }
}

impl State {
    fn wake_all(&mut self) -> After {
        let wake = self
            .followers
            .iter_mut()
            .flatten()
            .filter_map(|s| s.waker.take())
            .collect();
        After { wake, guard: None }
    }

    /// Not storing: drops chunks every follower has read, and cuts off
    /// followers so far behind that keeping their chunks would pass `max`.
    fn trim(&mut self, max: u64) {
        let end = self.first + self.chunks.len();
        let needed = self
            .followers
            .iter()
            .flatten()
            .filter(|s| !s.cut)
            .map(|s| s.next)
            .min()
            .unwrap_or(end);
        while self.first < needed || self.kept > max {
            let Some(chunk) = self.chunks.pop_front() else {
                break;
            };
            self.kept -= chunk.len() as u64;
            self.first += 1;
        }
        let first = self.first;
        for slot in self.followers.iter_mut().flatten() {
            if slot.next < first && !slot.cut {
                slot.cut = true;
                if let Some(w) = slot.waker.take() {
                    w.wake();
                }
            }
        }
    }
}

/// The chunks as one buffer of their exact size: a chunk may share a
/// larger read buffer, which a stored entry must not keep alive.
fn concat(chunks: &VecDeque<Bytes>, len: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(usize::try_from(len).unwrap_or(0));
    for c in chunks {
        buf.extend_from_slice(c);
    }
    buf.freeze()
}

/// The fetching request's hold on its fill: dropping it before the body
/// completed fails the fill (the request was cancelled or its client went
/// away).
pub struct Lead {
    fill: Arc<Fill>,
}

impl Lead {
    /// Leads `fill`.
    pub fn new(fill: Arc<Fill>) -> Lead {
        Lead { fill }
    }

    /// The fill being led.
    pub fn fill(&self) -> &Arc<Fill> {
        &self.fill
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.fill.fail();
    }
}

/// What a follower got while waiting for the head.
pub enum Waited {
    /// The response to answer with; then read the body.
    Head(Arc<Head>),
    /// The leader had nothing to share (not storable, failed, or this
    /// follower fell behind): look up again.
    Gone,
    /// The timeout passed first.
    TimedOut,
}

/// A request answered from another request's fill.
pub struct Follower {
    fill: Arc<Fill>,
    slot: usize,
}

impl Follower {
    /// Waits for the fill's head, at most `timeout`.
    pub async fn head(&mut self, timeout: Duration) -> Waited {
        let wait = std::future::poll_fn(|cx| self.poll_head(cx));
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Waited::TimedOut)
    }

    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Waited> {
        let mut guard = self.fill.state();
        let st = &mut *guard;
        let Some(slot) = st.followers.get_mut(self.slot).and_then(Option::as_mut) else {
            return Poll::Ready(Waited::Gone);
        };
        match (st.phase, &st.head) {
            (Phase::Waiting, _) => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            (Phase::Streaming | Phase::Complete, Some(head)) if !slot.cut => {
                Poll::Ready(Waited::Head(head.clone()))
            }
            _ => Poll::Ready(Waited::Gone),
        }
    }

    /// The next chunk of the body: `None` at its clean end, an error if
    /// the leader's body failed or this follower fell behind.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>> {
        let mut guard = self.fill.state();
        let st = &mut *guard;
        let Some(slot) = st.followers.get_mut(self.slot).and_then(Option::as_mut) else {
            return Poll::Ready(Some(Err("cache fill: follower detached".into())));
        };
        if slot.cut || slot.next < st.first {
            slot.cut = true;
            return Poll::Ready(Some(Err(
                "cache fill: fell too far behind the response it follows".into(),
            )));
        }
        if let Some(data) = st.chunks.get(slot.next - st.first).cloned() {
            slot.next += 1;
            if st.plan.is_none() {
                st.trim(self.fill.max);
            }
            return Poll::Ready(Some(Ok(data)));
        }
        match st.phase {
            Phase::Complete => Poll::Ready(None),
            Phase::Failed => Poll::Ready(Some(Err(
                "cache fill: the response it follows failed".into()
            ))),
            Phase::Waiting | Phase::Streaming => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let mut st = self.fill.state();
        if let Some(slot) = st.followers.get_mut(self.slot) {
            *slot = None;
        }
        if st.plan.is_none() && st.phase != Phase::Waiting {
            st.trim(self.fill.max);
        }
    }
}

#[cfg(test)]
#[path = "fill/tests.rs"]
mod tests;
