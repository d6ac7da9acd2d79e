//! Thin entry points to private parsers, for the cargo-fuzz targets in
//! `fuzz/` only: built with the `fuzzing` feature, never in a normal build.
//! Each wraps one crate-private function unchanged; nothing here is an API.

use bytes::BytesMut;
use http::Method;
use http::request::Parts;

use crate::config::Server;
use crate::error::ProxyError;
use crate::upstream::h1::{ExchangeError, ResponseHead};

pub use crate::upstream::h1::framing::{DecodeError, Decoder, Framing, Step};

/// The connection's request-head scanner (`conn::io`): finds where a
/// request head ends and notes `Content-Length` + `Transfer-Encoding`.
#[derive(Default)]
pub struct HeadScan(crate::conn::head_scan::HeadScan);

impl HeadScan {
    /// A scanner at the start of a request head.
    pub fn new() -> HeadScan {
        HeadScan::default()
    }

    /// Feeds bytes; once the head ended, how many of `bytes` belong to it.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        self.0.feed(bytes)
    }

    /// Whether the head named both `Content-Length` and `Transfer-Encoding`.
    pub fn conflict(&self) -> bool {
        self.0.conflict()
    }
}

/// The proxy's request checks (`proxy::checks::check`): refuses a bad
/// head, settles the host and returns the host to route on.
pub fn check_request(
    parts: &mut Parts,
    server: &Server,
    conflicting_framing: bool,
) -> Result<String, ProxyError> {
    crate::proxy::checks::check(parts, server, conflicting_framing)
}

/// The upstream client's response head parser: parses a head (after any
/// interim responses) off the front of `buf`; `None` when incomplete.
pub fn parse_response_head(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, ExchangeError> {
    crate::upstream::h1::parse_head(buf, method, &mut None)
}

/// The L2 cache's entry file check: key, meta and body of a whole file,
/// or `None` when it is not a valid entry.
pub fn decode_disk_entry(file: &[u8]) -> Option<(&str, &[u8], &[u8])> {
    crate::cache::disk::entry::decode(file)
}

/// The bytes of the L2 entry file for these parts.
pub fn encode_disk_entry(key: &str, meta: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    crate::cache::disk::entry::encode(key, meta, body)
}
