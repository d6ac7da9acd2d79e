//! HTTP/1.1 body framing (RFC 9112 §6), for both sides: request bodies
//! read by the server ([`crate::conn`]) and response bodies read by the
//! upstream client ([`crate::upstream`]). A pure decoder over a read
//! buffer — `Content-Length`, chunked (with extensions and trailers, which
//! are dropped), or delimited by the peer closing. Data comes out as
//! `Bytes` split off the buffer, never copied.

use bytes::{Buf, Bytes, BytesMut};

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304, or `Content-Length: 0`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the peer closes (the connection cannot be reused).
    Close,
}

/// One step of decoding.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Body bytes.
    Data(Bytes),
    /// The buffer holds no complete piece: read more.
    NeedMore,
    /// The body is complete.
    Done,
}

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// A chunk size line is not hexadecimal or too long.
    #[error("invalid chunk size line")]
    ChunkSize,
    /// Chunk data is not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    ChunkEnd,
    /// The peer closed before the body was complete.
    #[error("the peer closed the connection before the body was complete")]
    Truncated,
}

#[derive(Debug)]
enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    Close,
    Done,
}

/// A [`Decoder`] put aside in 8 bytes: where it is in the body and how
/// many bytes of the current piece are left. Kept by the HTTP/1 server for
/// a request body its handler did not read, in room every connection
/// holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parked {
    at: Piece,
    left: u32,
}

impl Parked {
    /// Bytes still expected, when known (a `Content-Length` body).
    pub fn remaining(&self) -> Option<u64> {
        (self.at == Piece::Length).then_some(u64::from(self.left))
    }
}

/// The piece of a body a [`Parked`] decoder is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Length,
    ChunkSize,
    ChunkData,
    ChunkEnd,
    Trailers,
}

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

/// Decodes one response body.
#[derive(Debug)]
pub struct Decoder {
    state: State,
}

impl Decoder {
    /// A decoder for a body framed as `framing`.
    pub fn new(framing: Framing) -> Decoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        Decoder { state }
    }

    /// True once the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Bytes still expected, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// [`Decoder::remaining`] as a body's size hint.
    pub fn size_hint(&self) -> http_body::SizeHint {
        self.remaining().map_or_else(
            http_body::SizeHint::default,
            http_body::SizeHint::with_exact,
        )
    }

    /// Takes the next piece of body from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, DecodeError> {
        loop {
            match self.state {
                State::Done => return Ok(Step::Done),
                State::Length(left) => {
                    let Some((data, left)) = take_counted(buf, left) else {
                        return Ok(Step::NeedMore);
                    };
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Length(left)
                    };
                    return Ok(Step::Data(data));
                }
                State::Close => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    return Ok(Step::Data(buf.split().freeze()));
                }
                State::ChunkSize => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkData(left) => {
                    let Some((data, left)) = take_counted(buf, left) else {
                        return Ok(Step::NeedMore);
                    };
                    self.state = if left == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left)
                    };
                    return Ok(Step::Data(data));
                }
                State::ChunkEnd => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                    } else if buf.starts_with(b"\n") {
                        buf.advance(1);
                    } else if buf.is_empty() || buf[..] == b"\r"[..] {
                        return Ok(Step::NeedMore);
                    } else {
                        return Err(DecodeError::ChunkEnd);
                    }
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::NeedMore);
                    };
                    if line.is_empty() {
                        self.state = State::Done;
                    }
                }
            }
        }
    }

    /// The decoder's state in 8 bytes ([`Parked`]), for a body left
    /// unread that the server may still read and drop; `None` when it is
    /// done, delimited by the peer closing, or when what is left of the
    /// current piece does not fit in 32 bits (far more than is ever
    /// dropped).
    pub fn park(&self) -> Option<Parked> {
        let (at, left) = match self.state {
            State::Length(n) => (Piece::Length, n),
            State::ChunkSize => (Piece::ChunkSize, 0),
            State::ChunkData(n) => (Piece::ChunkData, n),
            State::ChunkEnd => (Piece::ChunkEnd, 0),
            State::Trailers => (Piece::Trailers, 0),
            State::Close | State::Done => return None,
        };
        Some(Parked {
            at,
            left: u32::try_from(left).ok()?,
        })
    }

    /// A decoder going on from where [`Decoder::park`] left it.
    pub fn unpark(parked: Parked) -> Decoder {
        let left = u64::from(parked.left);
        let state = match parked.at {
            Piece::Length => State::Length(left),
            Piece::ChunkSize => State::ChunkSize,
            Piece::ChunkData => State::ChunkData(left),
            Piece::ChunkEnd => State::ChunkEnd,
            Piece::Trailers => State::Trailers,
        };
        Decoder { state }
    }

    /// The peer closed the connection: fine for a close-delimited body,
    /// a truncation for any other unfinished one.
    pub fn eof(&mut self) -> Result<(), DecodeError> {
        match self.state {
            State::Close | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(DecodeError::Truncated),
        }
    }
}

/// Up to `left` bytes of a counted body (a Content-Length body or one
/// chunk) from `buf`, and how many are still to come; `None` when `buf` is
/// empty.
fn take_counted(buf: &mut BytesMut, left: u64) -> Option<(Bytes, u64)> {
    if buf.is_empty() {
        return None;
    }
    let n = left.min(buf.len() as u64);
    Some((buf.split_to(n as usize).freeze(), left - n))
}

/// Splits one line (without its CRLF or LF) off `buf`, if complete. A
/// line longer than [`MAX_LINE`] is an error whether it arrived in one
/// read or in several.
fn take_line(buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(pos) if pos > MAX_LINE => Err(DecodeError::ChunkSize),
        Some(pos) => {
            let mut line = buf.split_to(pos + 1);
            line.truncate(pos);
            if line.last() == Some(&b'\r') {
                line.truncate(pos - 1);
            }
            Ok(Some(line.freeze()))
        }
        None if buf.len() > MAX_LINE => Err(DecodeError::ChunkSize),
        None => Ok(None),
    }
}

fn chunk_size(line: &[u8]) -> Result<u64, DecodeError> {
    let hex = line.split(|&b| b == b';').next().unwrap_or(&[]);
    let hex = hex.trim_ascii();
    if hex.is_empty() || hex.len() > 15 {
        return Err(DecodeError::ChunkSize);
    }
    let mut n: u64 = 0;
    for &b in hex {
        let d = (b as char).to_digit(16).ok_or(DecodeError::ChunkSize)?;
        n = n * 16 + u64::from(d);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns the body.
    fn decode_all(framing: Framing, input: &[u8], step: usize) -> Result<Vec<u8>, DecodeError> {
        let mut d = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match d.decode(&mut buf)? {
                Step::Data(b) => out.extend_from_slice(&b),
                Step::Done => return Ok(out),
                Step::NeedMore => {
                    if fed >= input.len() {
                        d.eof()?;
                        return Ok(out);
                    }
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_with_extensions_and_trailers_in_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for step in 1..wire.len() {
            assert_eq!(
                decode_all(Framing::Chunked, wire, step).as_deref(),
                Ok(&b"hello world"[..]),
                "step {step}"
            );
        }
    }

    #[test]
    fn chunked_leaves_the_next_response_in_the_buffer() {
        let mut d = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n"[..]);
        assert_eq!(
            d.decode(&mut buf),
            Ok(Step::Data(Bytes::from_static(b"abc")))
        );
        assert_eq!(d.decode(&mut buf), Ok(Step::Done));
        assert_eq!(&buf[..], b"HTTP/1.1 200 OK\r\n");
    }

    #[test]
    fn length_stops_at_the_length() {
        let mut d = Decoder::new(Framing::Length(4));
        let mut buf = BytesMut::from(&b"abcdEXTRA"[..]);
        assert_eq!(d.remaining(), Some(4));
        assert_eq!(
            d.decode(&mut buf),
            Ok(Step::Data(Bytes::from_static(b"abcd")))
        );
        assert!(d.is_done());
        assert_eq!(&buf[..], b"EXTRA");
    }

    #[test]
    fn truncated_bodies_are_errors_but_close_delimited_ones_end() {
        assert_eq!(
            decode_all(Framing::Length(10), b"abc", 2),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode_all(Framing::Chunked, b"5\r\nab", 2),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode_all(Framing::Close, b"all of it", 4).as_deref(),
            Ok(&b"all of it"[..])
        );
        assert_eq!(decode_all(Framing::Empty, b"", 1).as_deref(), Ok(&b""[..]));
    }

    /// Chunked-looking wire bytes: good pieces, the odd stray byte.
    fn chunked_wire() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just(b"5\r\nhello\r\n".to_vec()),
            Just(b"3;ext=1\r\nabc\n".to_vec()),
            Just(b"0\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"X-Trailer: 1\r\n".to_vec()),
            Just(b"\r".to_vec()),
            // Chunk extensions at and past the line limit.
            Just([&b"1;"[..], &[b'e'; MAX_LINE - 3]].concat()),
            Just([&b"1;"[..], &[b'e'; MAX_LINE - 2]].concat()),
            proptest::collection::vec(any::<u8>(), 0..6),
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|p| p.concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(256))]

        #[test]
        fn decoding_does_not_depend_on_the_reads(wire in chunked_wire(), step in 1usize..9) {
            for framing in [Framing::Chunked, Framing::Length(9), Framing::Close] {
                let whole = decode_all(framing, &wire, wire.len().max(1));
                proptest::prop_assert_eq!(&decode_all(framing, &wire, step), &whole);
                if let Ok(body) = &whole {
                    proptest::prop_assert!(body.len() <= wire.len());
                }
            }
        }
    }

    #[test]
    fn a_chunk_line_over_the_limit_is_refused_however_it_arrives() {
        // Found reviewing the decoder for the chunked fuzz target (whose
        // byte-by-byte invariant fails on it): a line over MAX_LINE was
        // refused when it came in pieces, taken when one read held it.
        // The limit counts the line's bytes before its LF (a CR included).
        let over = [&b"1;"[..], &[b'e'; MAX_LINE - 2], b"\r\na\r\n0\r\n\r\n"].concat();
        for step in [1, 100, MAX_LINE, over.len()] {
            assert_eq!(
                decode_all(Framing::Chunked, &over, step),
                Err(DecodeError::ChunkSize),
                "step {step}"
            );
        }
        let at = [&b"1;"[..], &[b'e'; MAX_LINE - 3], b"\r\na\r\n0\r\n\r\n"].concat();
        for step in [1, 100, MAX_LINE, at.len()] {
            assert_eq!(
                decode_all(Framing::Chunked, &at, step).as_deref(),
                Ok(&b"a"[..]),
                "step {step}"
            );
        }
    }

    #[test]
    fn bad_chunks_are_errors() {
        assert_eq!(
            decode_all(Framing::Chunked, b"zz\r\n", 8),
            Err(DecodeError::ChunkSize)
        );
        assert_eq!(
            decode_all(Framing::Chunked, b"2\r\nabX\r\n", 8),
            Err(DecodeError::ChunkEnd)
        );
        let long = vec![b'1'; MAX_LINE + 10];
        assert_eq!(
            decode_all(Framing::Chunked, &long, long.len()),
            Err(DecodeError::ChunkSize)
        );
        assert_eq!(
            decode_all(Framing::Chunked, b"ffffffffffffffff\r\n", 32),
            Err(DecodeError::ChunkSize)
        );
    }

    #[test]
    fn a_parked_decoder_goes_on_where_it_stopped() {
        assert_eq!(std::mem::size_of::<Option<Parked>>(), 8);
        let wire = b"3\r\nabc\r\n4\r\ndefg\r\n0\r\nT: t\r\n\r\nNEXT";
        // Parked after every byte: the same body, the same rest.
        for cut in 0..wire.len() - 4 {
            let mut d = Decoder::new(Framing::Chunked);
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut out = Vec::new();
            while let Ok(Step::Data(b)) = d.decode(&mut buf) {
                out.extend_from_slice(&b);
            }
            let parked = d.park().expect("parked");
            let mut d = Decoder::unpark(parked);
            buf.extend_from_slice(&wire[cut..]);
            loop {
                match d.decode(&mut buf) {
                    Ok(Step::Data(b)) => out.extend_from_slice(&b),
                    Ok(Step::Done) => break,
                    other => panic!("cut {cut}: {other:?}"),
                }
            }
            assert_eq!(out, b"abcdefg", "cut {cut}");
            assert_eq!(&buf[..], b"NEXT", "cut {cut}");
        }
        let d = Decoder::new(Framing::Length(10));
        assert_eq!(d.park().and_then(|p| p.remaining()), Some(10));
        assert_eq!(
            Decoder::new(Framing::Chunked).park().map(|p| p.remaining()),
            Some(None)
        );
        assert!(Decoder::new(Framing::Length(1 << 33)).park().is_none());
        assert!(Decoder::new(Framing::Close).park().is_none());
        assert!(Decoder::new(Framing::Empty).park().is_none());
    }
}
