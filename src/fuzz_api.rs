//! Thin entry points to private parsers, for the cargo-fuzz targets in
//! `fuzz/` only: built with the `fuzzing` feature, never in a normal build.
//! Each wraps one crate-private function unchanged; nothing here is an API.

use bytes::BytesMut;
use http::Method;
use http::request::Parts;

use crate::config::Server;
use crate::error::ProxyError;
use crate::upstream::h1::{ExchangeError, ResponseHead};

pub use crate::h1_framing::{DecodeError, Decoder, Framing, Step};

/// How a parsed request head frames its body (`conn::h1::head::BodyFraming`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Another `Transfer-Encoding` (refused by the checks).
    Unknown,
}

/// What the HTTP/1 server's head parser made of a complete head.
#[derive(Debug)]
pub struct ParsedRequestHead {
    /// Method, target, version and headers.
    pub parts: Parts,
    /// The head's length in bytes.
    pub len: usize,
    /// How the body is framed.
    pub framing: RequestFraming,
    /// Whether the connection may stay open after the exchange.
    pub keep_alive: bool,
}

/// The HTTP/1 server's request head parser (`conn::h1::head::parse`):
/// `Ok(None)` while incomplete, the status it answers with when refused.
pub fn parse_request_head(
    buf: &[u8],
    max_headers: usize,
) -> Result<Option<ParsedRequestHead>, u16> {
    use crate::conn::h1::head::{self, BodyFraming};
    let parsed = head::parse(buf, max_headers).map_err(|e| e.status.as_u16())?;
    Ok(parsed.map(|(h, len)| ParsedRequestHead {
        parts: h.parts,
        len,
        framing: match h.framing {
            BodyFraming::Empty => RequestFraming::Empty,
            BodyFraming::Length(n) => RequestFraming::Length(n),
            BodyFraming::Chunked => RequestFraming::Chunked,
            BodyFraming::Unknown => RequestFraming::Unknown,
        },
        keep_alive: h.keep_alive,
    }))
}

/// The proxy's request checks (`proxy::checks::check`): refuses a bad
/// head, settles the host and returns the host to route on.
pub fn check_request(parts: &mut Parts, server: &Server) -> Result<String, ProxyError> {
    crate::proxy::checks::check(parts, server)
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
