//! The response bodies the cache streams ([`CacheBody`]): a tee on the
//! fetching request's upstream body, whose chunks go into its
//! [`Fill`](super::fill::Fill) as they pass to the client (stored when
//! the body ends cleanly, given up when it fails or the client goes
//! away), another request's fill replayed and followed, and a byte range
//! of either (or of a stored body) for a 206. Nothing is buffered before
//! it is sent. The edge between the fill and hyper's
//! body trait; `crate::body` wraps it as one of its kinds.
//!
//! When the leader's client goes away before the body ended while the
//! body is still to be stored or other requests follow it, the rest is
//! read in a task of its own on the same worker thread (as nginx keeps
//! reading a cacheable response after a client abort), so one client
//! leaving never cuts the answers of those waiting on it short.

use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::fill::{Follower, Lead};
use crate::body::{BoxError, ResponseBody};
use crate::worker_local::WorkerLocal;

/// A body streamed through the cache.
// `crate::body::Kind` boxes it whole: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum CacheBody {
    /// The upstream's body on its way to the client and into the fill.
    Tee(Tee),
    /// Another request's fill, from its first chunk.
    Follow(Follower),
    /// A byte range of another body.
    Slice(Slice),
}

/// Bytes `skip..skip + left` of `inner`, then the end. `inner` is kept
/// until this body is dropped, so a tee under it is left (and finished
/// for the cache, see [`Tee`]'s drop) only once the client is answered:
/// a range, a 304 or a 416 answered from a response still being stored
/// does not cut its storing short.
pub struct Slice {
    inner: ResponseBody,
    /// Bytes still to drop before the range.
    skip: u64,
    /// Bytes of the range still to send.
    left: u64,
}

/// The upstream's body, with its chunks copied (by reference) into the
/// fill the request leads.
pub struct Tee {
    inner: ResponseBody,
    /// `None` once handed to the task finishing the body.
    lead: Option<Lead>,
    /// The fill was told how the body ended.
    done: bool,
    /// The worker thread's state: its task set finishes the body when the
    /// client leaves early.
    worker: Rc<WorkerLocal>,
}

impl CacheBody {
    /// Tees `inner` into `lead`'s fill, on `worker`'s thread.
    pub fn tee(inner: ResponseBody, lead: Lead, worker: Rc<WorkerLocal>) -> CacheBody {
        CacheBody::Tee(Tee {
            inner,
            lead: Some(lead),
            done: false,
            worker,
        })
    }

    /// Follows another request's fill.
    pub fn follow(follower: Follower) -> CacheBody {
        CacheBody::Follow(follower)
    }

    /// The `len` bytes of `inner` from byte `start` (none at all for a
    /// bodiless answer that must still hold `inner`).
    pub fn slice(inner: ResponseBody, start: u64, len: u64) -> CacheBody {
        CacheBody::Slice(Slice {
            inner,
            skip: start,
            left: len,
        })
    }
}

impl Slice {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        while self.left > 0 {
            let Some(frame) = ready!(Pin::new(&mut self.inner).poll_frame(cx)) else {
                return Poll::Ready(Some(Err("the body ended before the range".into())));
            };
            let Ok(data) = frame?.into_data() else {
                continue; // trailers: not part of a range
            };
            let len = data.len() as u64;
            if len <= self.skip {
                self.skip -= len;
                continue;
            }
            let from = usize::try_from(self.skip).unwrap_or(usize::MAX);
            let take = usize::try_from(self.left.min(len - self.skip)).unwrap_or(usize::MAX);
            self.skip = 0;
            let part = data.slice(from..from.saturating_add(take).min(data.len()));
            self.left -= part.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(part))));
        }
        Poll::Ready(None)
    }
}

impl Tee {
    fn complete(&mut self) {
        if !self.done {
            self.done = true;
            if let Some(lead) = &self.lead {
                lead.fill().complete();
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref()
                    && let Some(lead) = &self.lead
                {
                    lead.fill().push(data);
                }
                if self.inner.is_end_stream() {
                    self.complete();
                }
            }
            None => self.complete(),
            Some(Err(_)) => {
                self.done = true;
                if let Some(lead) = &self.lead {
                    lead.fill().fail();
                }
            }
        }
        Poll::Ready(polled)
    }
}

impl Tee {
    /// Reads the rest of the body into the fill, with nobody to send it
    /// to; stops once the body is neither to be stored nor followed.
    async fn finish(mut self) {
        loop {
            match std::future::poll_fn(|cx| self.poll(cx)).await {
                Some(Ok(_)) if !self.done => {
                    let worth = self
                        .lead
                        .as_ref()
                        .is_some_and(|l| l.fill().worth_finishing());
                    if !worth {
                        return;
                    }
                }
                _ => return,
            }
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // hyper stops polling once the body says it ended: complete.
        if self.inner.is_end_stream() {
            return self.complete();
        }
        // The client left mid-body: finish reading it for the cache and
        // the followers, on this worker thread. Otherwise dropping `lead`
        // fails the fill.
        let worth = self
            .lead
            .as_ref()
            .is_some_and(|l| l.fill().worth_finishing());
        if !self.done && worth && self.worker.takes_tasks() {
            let rest = Tee {
                inner: std::mem::replace(&mut self.inner, ResponseBody::empty()),
                lead: self.lead.take(),
                done: false,
                worker: self.worker.clone(),
            };
            tokio::task::spawn_local(rest.finish());
        }
    }
}

impl Body for CacheBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            CacheBody::Tee(tee) => tee.poll(cx),
            CacheBody::Follow(follower) => {
                let chunk = ready!(follower.poll_chunk(cx));
                Poll::Ready(chunk.map(|r| r.map(Frame::data).map_err(BoxError::from)))
            }
            CacheBody::Slice(slice) => slice.poll(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            CacheBody::Tee(tee) => tee.done || tee.inner.is_end_stream(),
            CacheBody::Follow(_) => false,
            CacheBody::Slice(slice) => slice.left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            CacheBody::Tee(tee) => tee.inner.size_hint(),
            CacheBody::Follow(_) => SizeHint::default(),
            CacheBody::Slice(slice) => SizeHint::with_exact(slice.left),
        }
    }
}
