//! What the access log's chosen fields need of a request that the steps
//! do not keep (its `User-Agent`, `Referer` and id header, the size of its
//! head as received, a counter of its body's bytes): [`LogCopies`], made
//! when the request arrives, for the chosen fields only.

use std::cell::Cell;
use std::rc::Rc;

use http::Request;
use http::header::{self, HeaderValue};

use super::ConnCtx;
use crate::access_log::{Field, FieldSet, REQUEST_ID_HEADER};
use crate::body::ClientBody;

/// What the access log's chosen fields need of the request that the
/// steps do not keep: copied when the request arrives, and only for the
/// fields chosen (a header value's copy shares the received bytes).
#[derive(Default)]
pub struct LogCopies {
    /// `User-Agent`.
    pub user_agent: Option<HeaderValue>,
    /// `Referer`.
    pub referer: Option<HeaderValue>,
    /// The id header (`X-Request-Id`, or the route's `request_id`
    /// policy's), as the request carries it to its target.
    pub request_id: Option<HeaderValue>,
    /// Bytes of the head as received.
    pub head_received: u64,
    /// Bytes of the body read, counted by the body as it is read.
    pub body_received: Option<Rc<Cell<u64>>>,
}

impl LogCopies {
    /// The copies `req` (arrived on `conn`) owes the fields `log`.
    pub(super) fn of(req: &Request<ClientBody>, conn: &ConnCtx, log: FieldSet) -> LogCopies {
        let header = |field, name| {
            log.has(field)
                .then(|| req.headers().get(name).cloned())
                .flatten()
        };
        LogCopies {
            user_agent: header(Field::UserAgent, header::USER_AGENT),
            referer: header(Field::Referer, header::REFERER),
            request_id: header(Field::RequestId, REQUEST_ID_HEADER),
            head_received: if log.has(Field::BytesReceived) {
                received_head(req, &conn.raw_head.borrow())
            } else {
                0
            },
            body_received: None,
        }
    }
}

/// The size of `req`'s head as received: `raw`, the bytes of an HTTP/1
/// head; for HTTP/2 (no such bytes: HPACK) the head as HTTP/1.1 would
/// send it, as `$request_length` counts it.
fn received_head(req: &Request<ClientBody>, raw: &[u8]) -> u64 {
    if !raw.is_empty() {
        return raw.len() as u64;
    }
    let uri = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    // "METHOD URI HTTP/2.0\r\n", the header lines, the empty line.
    let mut n = req.method().as_str().len() + 1 + uri + 11 + 2;
    if !req.headers().contains_key(header::HOST) {
        n += req
            .uri()
            .authority()
            .map_or(0, |a| "host: \r\n".len() + a.as_str().len());
    }
    for (name, value) in req.headers() {
        n += name.as_str().len() + 2 + value.len() + 2;
    }
    n as u64
}
