//! An upstream's response: the body decoder (`h1_framing`) over
//! arbitrary bytes in arbitrary reads, for each framing, and the response
//! head parser followed by the body it announces. Invariants: what comes
//! out (bytes, outcome, what is left in the buffer) does not depend on the
//! reads; never more bytes out than in; a length-framed body is exactly
//! its length or an error; a close-delimited one is everything.
//!
//! Input: the cuts (`common.rs`), then a mode byte: 0-2 chunked, 3
//! `Content-Length` (the next 2 bytes), 4 close-delimited, 5-7 a response
//! head then its body (7: the answer to a HEAD request).

#![no_main]

#[path = "../common.rs"]
mod common;

use bytes::BytesMut;
use http::Method;
use libfuzzer_sys::fuzz_target;
use moongate::fuzz_api::{Decoder, Framing, Step, parse_response_head};

/// Everything one way of reading produced: the head (as text, or the
/// error), the body, how the body ended, and the bytes left unread.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    head: Option<String>,
    body: Vec<u8>,
    end: Result<(), String>,
    left: Vec<u8>,
}

/// The pieces not yet in the buffer, fed one at a time.
struct Wire<'a> {
    pieces: std::vec::IntoIter<&'a [u8]>,
}

impl Wire<'_> {
    /// Appends the next piece to `buf`; false at the end of the input.
    fn read(&mut self, buf: &mut BytesMut) -> bool {
        match self.pieces.next() {
            Some(p) => {
                buf.extend_from_slice(p);
                true
            }
            None => false,
        }
    }

    /// What was never read, after what is left in `buf`.
    fn left(self, buf: &BytesMut) -> Vec<u8> {
        let mut out = buf.to_vec();
        for p in self.pieces {
            out.extend_from_slice(p);
        }
        out
    }
}

/// Decodes a body framed as `framing`, as `Conn::poll_body` does.
fn body(framing: Framing, mut buf: BytesMut, mut wire: Wire<'_>, head: Option<String>) -> Outcome {
    let mut d = Decoder::new(framing);
    let mut out = Vec::new();
    let end = loop {
        match d.decode(&mut buf) {
            Err(e) => break Err(e.to_string()),
            Ok(Step::Data(b)) => {
                assert!(!b.is_empty(), "an empty Data step never ends");
                out.extend_from_slice(&b);
            }
            Ok(Step::Done) => {
                assert!(d.is_done() && d.remaining() == Some(0));
                break Ok(());
            }
            Ok(Step::NeedMore) => {
                if !wire.read(&mut buf) {
                    break d.eof().map_err(|e| e.to_string());
                }
            }
        }
    };
    Outcome {
        head,
        body: out,
        end,
        left: wire.left(&buf),
    }
}

/// Reads a response head then its body, as `Conn::read_head_with` and
/// `Conn::poll_body` do.
fn response(method: &Method, mut wire: Wire<'_>) -> Outcome {
    let mut buf = BytesMut::new();
    loop {
        match parse_response_head(&mut buf, method) {
            Ok(Some(head)) => {
                let shown = format!(
                    "{} {:?} {:?} {:?} keep-alive {}",
                    head.status, head.version, head.headers, head.framing, head.keep_alive
                );
                return body(head.framing, buf, wire, Some(shown));
            }
            Ok(None) => {
                if !wire.read(&mut buf) {
                    let left = wire.left(&buf);
                    return Outcome {
                        head: None,
                        body: Vec::new(),
                        end: Ok(()),
                        left,
                    };
                }
            }
            Err(e) => {
                let left = wire.left(&buf);
                return Outcome {
                    head: Some(e.to_string()),
                    body: Vec::new(),
                    end: Ok(()),
                    left,
                };
            }
        }
    }
}

/// What the input is read as.
enum Kind {
    /// A body with this framing.
    Body(Framing),
    /// A response (head and body) to a request with this method.
    Response(Method),
}

fn run(kind: &Kind, pieces: Vec<&[u8]>) -> Outcome {
    let wire = Wire {
        pieces: pieces.into_iter(),
    };
    match kind {
        Kind::Body(framing) => body(*framing, BytesMut::new(), wire, None),
        Kind::Response(method) => response(method, wire),
    }
}

fuzz_target!(|data: &[u8]| {
    let (cuts, rest) = common::cuts_and_payload(data);
    let Some((&mode, mut input)) = rest.split_first() else {
        return;
    };
    let kind = match mode % 8 {
        0..=2 => Kind::Body(Framing::Chunked),
        3 => {
            let (len, tail) = input.split_at(2.min(input.len()));
            input = tail;
            Kind::Body(Framing::Length(
                len.iter().rev().fold(0, |n, &b| n << 8 | u64::from(b)),
            ))
        }
        4 => Kind::Body(Framing::Close),
        7 => Kind::Response(Method::HEAD),
        _ => Kind::Response(Method::GET),
    };
    let whole = run(&kind, vec![input]);
    assert_eq!(
        run(&kind, common::pieces(input, &cuts)),
        whole,
        "the reads changed the outcome"
    );
    assert_eq!(
        run(&kind, input.chunks(1).collect()),
        whole,
        "byte-by-byte reads changed the outcome"
    );
    assert!(
        whole.body.len() + whole.left.len() <= input.len(),
        "more out than in"
    );
    match kind {
        Kind::Body(Framing::Length(n)) => {
            let got = whole.body.len() as u64;
            assert!(
                if whole.end.is_ok() { got == n } else { got < n },
                "{got} of {n} bytes"
            );
            assert_eq!(whole.body, input[..whole.body.len()]);
        }
        Kind::Body(Framing::Close) => {
            assert_eq!(whole.body, input);
            assert_eq!(whole.end, Ok(()));
        }
        _ => {}
    }
});
