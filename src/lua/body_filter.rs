//! The `body_filter` phase: [`FilteredBody`] runs a route's body filter
//! handlers on each chunk of a response body as it streams (`ngx.arg[1]`
//! the chunk, `ngx.arg[2]` whether it is the last), sending what they
//! leave in `ngx.arg[1]`. A handler setting `ngx.arg[2] = true` ends the
//! body there. Nothing is buffered beyond the chunk in hand.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::Phase;
use super::program::ScriptId;
use super::request::ReqCtx;
use super::response_state::FilterArg;
use super::vm::{Outcome, Vm};
use crate::body::{BoxError, ResponseBody};

/// One chunk's run of the handlers.
type Run = Pin<Box<dyn Future<Output = Result<(), String>>>>;

/// A response body with the route's body filters over it.
pub struct FilteredBody {
    inner: ResponseBody,
    vm: Rc<Vm>,
    ctx: Rc<ReqCtx>,
    ids: Rc<[ScriptId]>,
    /// The handlers running on the chunk in hand.
    running: Option<Run>,
    /// The last chunk has been filtered.
    done: bool,
}

impl FilteredBody {
    /// `inner` with the body filter handlers `ids` of `ctx`'s route over it.
    pub fn new(inner: ResponseBody, vm: Rc<Vm>, ctx: Rc<ReqCtx>, ids: &[ScriptId]) -> Self {
        FilteredBody {
            inner,
            vm,
            ctx,
            ids: ids.into(),
            running: None,
            done: false,
        }
    }

    /// Starts the handlers on `chunk`.
    fn start(&mut self, chunk: Bytes, eof: bool) {
        *self.ctx.filter_arg.borrow_mut() = FilterArg { chunk, eof };
        let (vm, ctx, ids) = (self.vm.clone(), self.ctx.clone(), self.ids.clone());
        self.running = Some(Box::pin(async move {
            for id in ids.iter() {
                if let Outcome::Failed(m) = vm.run(*id, Phase::BodyFilter, &ctx).await {
                    return Err(m);
                }
            }
            Ok(())
        }));
    }
}

impl Body for FilteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(run) = this.running.as_mut() {
                let ran = ready!(run.as_mut().poll(cx));
                this.running = None;
                if let Err(m) = ran {
                    this.done = true;
                    tracing::error!(target: "moongate::lua", "body filter failed: {m}");
                    return Poll::Ready(Some(Err(m.into())));
                }
                let arg = std::mem::take(&mut *this.ctx.filter_arg.borrow_mut());
                if arg.eof {
                    this.done = true;
                }
                if !arg.chunk.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(arg.chunk))));
                }
            }
            if this.done {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => this.start(Bytes::new(), true),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.start(data, false),
                    // Trailers pass as they are.
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.running.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // The filters may change the length.
        SizeHint::default()
    }
}

/// Wraps `resp`'s body in `ctx`'s route's body filters `ids`; its length
/// is no longer known, so `Content-Length` goes.
pub fn filter(
    resp: &mut http::Response<ResponseBody>,
    vm: &Rc<Vm>,
    ctx: &Rc<ReqCtx>,
    ids: &[ScriptId],
) {
    resp.headers_mut().remove(http::header::CONTENT_LENGTH);
    let inner = std::mem::replace(resp.body_mut(), ResponseBody::empty());
    let body = FilteredBody::new(inner, vm.clone(), ctx.clone(), ids);
    *resp.body_mut() = ResponseBody::from_kind(crate::body::Kind::Stream(Box::pin(body)));
}
