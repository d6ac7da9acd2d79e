//! Interim (1xx) responses on their way to the client. The upstream client
//! hands each one it reads (103 Early Hints and the like, never 100 or 101)
//! to an [`Interim`] queue that belongs to one request; the connection
//! sends what is queued before the final response: HTTP/1.1 writes it
//! ahead of the response head ([`crate::conn::io::ClientIo`]), HTTP/2 as an
//! informational HEADERS frame on the stream ([`crate::conn::h2`]). Both drain
//! the queue right after polling the request's future, so no waker is
//! needed: the future that queues a head is polled by the task that sends it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderMap, StatusCode};

/// Interim responses queued for one request (HTTP/2) or one connection's
/// current request (HTTP/1.1).
#[derive(Debug, Default)]
pub struct Interim {
    queued: AtomicBool,
    heads: Mutex<Vec<(StatusCode, HeaderMap)>>,
}

impl Interim {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues an interim response (ignored unless 1xx other than 101).
    pub fn push(&self, status: StatusCode, headers: HeaderMap) {
        if !status.is_informational() || status == StatusCode::SWITCHING_PROTOCOLS {
            return;
        }
        if let Ok(mut heads) = self.heads.lock() {
            heads.push((status, headers));
            self.queued.store(true, Ordering::Release);
        }
    }

    /// Whether anything is queued (one atomic load: this is checked on
    /// every write of an HTTP/1 connection).
    pub fn is_queued(&self) -> bool {
        self.queued.load(Ordering::Acquire)
    }

    /// Takes everything queued, oldest first.
    pub fn take(&self) -> Vec<(StatusCode, HeaderMap)> {
        if !self.is_queued() {
            return Vec::new();
        }
        match self.heads.lock() {
            Ok(mut heads) => {
                self.queued.store(false, Ordering::Release);
                std::mem::take(&mut *heads)
            }
            Err(_) => Vec::new(),
        }
    }

    /// Serializes queued heads as HTTP/1.1 interim responses into `out`.
    pub fn write_h1(&self, out: &mut Vec<u8>) {
        for (status, headers) in self.take() {
            crate::h1_wire::write_response_head(
                http::Version::HTTP_11,
                status,
                &headers,
                None,
                out,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_interim_statuses_are_queued_and_serialized_in_order() {
        let q = Interim::new();
        assert!(!q.is_queued());
        q.push(StatusCode::OK, HeaderMap::new());
        q.push(StatusCode::SWITCHING_PROTOCOLS, HeaderMap::new());
        assert!(!q.is_queued());
        let mut h = HeaderMap::new();
        h.insert("link", HeaderValue::from_static("</a.css>; rel=preload"));
        q.push(StatusCode::from_u16(103).unwrap_or(StatusCode::CONTINUE), h);
        q.push(StatusCode::PROCESSING, HeaderMap::new());
        assert!(q.is_queued());
        let mut out = Vec::new();
        q.write_h1(&mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
        );
        assert!(!q.is_queued());
        assert!(q.take().is_empty());
    }
}
