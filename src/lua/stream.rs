//! A content handler that sent its headers while still running
//! ([`until_headers`] finds out) answers with a [`ContentBody`]: the
//! handler is driven as the client takes the body, so `ngx.flush` really
//! flushes and nothing is buffered whole.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};

use super::request::ReqCtx;
use super::vm::{Outcome, Vm};
use crate::body::BoxError;

/// A content handler's run, boxed so that it can move into the body.
pub type Run = Pin<Box<dyn Future<Output = Outcome>>>;

/// How a content handler's first stretch ended.
pub enum Started {
    /// It finished before sending headers while still running (the whole
    /// response is in memory).
    Done(Outcome),
    /// Its headers are out and it still runs: the rest is the body's.
    Streaming(Run),
}

/// Runs `run` until it finishes, or until it waits with its headers sent.
pub fn until_headers(run: Run, ctx: &ReqCtx) -> impl Future<Output = Started> + '_ {
    let mut run = Some(run);
    std::future::poll_fn(move |cx| {
        let Some(r) = run.as_mut() else {
            return Poll::Ready(Started::Done(Outcome::Next));
        };
        match r.as_mut().poll(cx) {
            Poll::Ready(outcome) => Poll::Ready(Started::Done(outcome)),
            Poll::Pending if ctx.output.headers_sent() => match run.take() {
                Some(r) => Poll::Ready(Started::Streaming(r)),
                None => Poll::Pending,
            },
            Poll::Pending => Poll::Pending,
        }
    })
}

/// The body of a content handler still running: what it prints is sent
/// as it yields, and it ends when the handler returns, exits or calls
/// `ngx.eof`. Dropped early (the client went away), the handler stops and
/// its `ngx.on_abort` callback runs; after `ngx.eof` the handler runs on
/// to its end in the background.
pub struct ContentBody {
    run: Option<Run>,
    vm: Rc<Vm>,
    ctx: Rc<ReqCtx>,
    /// Where the handler's failure is logged.
    route: String,
}

impl ContentBody {
    /// The rest of `run`, the content handler of `ctx` on `vm` (on route
    /// `route`, for the log).
    pub fn new(run: Run, vm: Rc<Vm>, ctx: Rc<ReqCtx>, route: String) -> ContentBody {
        ContentBody {
            run: Some(run),
            vm,
            ctx,
            route,
        }
    }

    fn take_output(&self) -> Option<Bytes> {
        let mut out = self.ctx.out.borrow_mut();
        if out.is_empty() {
            return None;
        }
        let chunk = Bytes::from(std::mem::take(&mut *out));
        drop(out);
        self.ctx.output.wake_flush();
        Some(chunk)
    }
}

impl Body for ContentBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(chunk) = this.take_output() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if this.ctx.output.eof() {
                return Poll::Ready(None);
            }
            let Some(run) = this.run.as_mut() else {
                return Poll::Ready(None);
            };
            match run.as_mut().poll(cx) {
                Poll::Pending => {
                    if this.ctx.out.borrow().is_empty() {
                        return Poll::Pending;
                    }
                }
                Poll::Ready(outcome) => {
                    this.run = None;
                    if let Outcome::Failed(m) = outcome {
                        tracing::error!(target: "moongate::lua", route = %this.route, "content handler failed after sending headers: {m}");
                        // The headers are out: cutting the body short is
                        // all that is left to say it failed.
                        return Poll::Ready(Some(Err(m.into())));
                    }
                }
            }
        }
    }
}

impl Drop for ContentBody {
    fn drop(&mut self) {
        let Some(run) = self.run.take() else {
            return;
        };
        if self.ctx.output.eof() {
            // `ngx.eof()`: the client has its answer, the handler goes on.
            tokio::task::spawn_local(async move {
                let _ = run.await;
            });
            return;
        }
        drop(run);
        self.vm.client_aborted(&self.ctx);
    }
}
