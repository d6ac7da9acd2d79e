//! The client connection as its HTTP/1 exchanges share it: the socket and
//! the bytes read from it but not used yet (the rest of a head, a body,
//! pipelined requests). The connection loop reads heads from it and writes
//! responses to it; a request's body ([`super::body::WireBody`]) reads from
//! it while the request is served. All of them run on the connection's
//! task, and each borrows the wire only inside one poll.
//!
//! The read buffer is allocated when a read starts and given back when it
//! is empty between requests, so an idle keep-alive connection holds none.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::h1_framing::{Decoder, Parked};

/// How much a read asks for at least.
pub(super) const READ_CHUNK: usize = 4096;

/// The socket and its unread bytes.
pub(crate) struct Wire<S> {
    /// The client socket (with the connection's deadlines).
    pub io: S,
    /// Bytes read but not used yet.
    pub buf: BytesMut,
    /// Where the current request's body stands.
    pub body: BodyState,
}

/// Where the current request's body stands on the wire. 8 bytes, in room
/// the wire had spare: an idle connection holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyState {
    /// Read to its end (or there was none): the next request's head may
    /// follow in the buffer.
    Done,
    /// Being read, or left unread in a way that cannot be gone on from.
    Reading,
    /// Its handler dropped it before its end, where this decoder stopped
    /// (put here by [`super::body::WireBody`]'s `Drop`): the connection
    /// may read the rest and drop it, then go on with the next request.
    Unread(Parked),
}

impl BodyState {
    /// `Done` once `decoder` is, else `Reading`.
    pub fn of(decoder: &Decoder) -> Self {
        if decoder.is_done() {
            BodyState::Done
        } else {
            BodyState::Reading
        }
    }
}

/// What a request body read from the wire asks of the socket: whether the
/// response has begun to go out (then a `100 Continue` still owed is not
/// sent).
pub(crate) trait ResponseStarted {
    /// The response of the request being served has begun.
    fn response_started(&self) -> bool;
}

impl<T> ResponseStarted for crate::conn::io::ClientIo<T> {
    fn response_started(&self) -> bool {
        self.responding()
    }
}

/// The body tests' socket: never responding.
#[cfg(test)]
impl ResponseStarted for tokio::io::DuplexStream {
    fn response_started(&self) -> bool {
        false
    }
}

impl<S: AsyncRead + Unpin> Wire<S> {
    /// A wire with an empty buffer.
    pub fn new(io: S) -> Self {
        Wire {
            io,
            buf: BytesMut::new(),
            body: BodyState::Done,
        }
    }

    /// Reads more bytes into the buffer: `Ok(0)` at end of stream. With no
    /// buffer (an idle connection), the read goes to the stack first, and
    /// the buffer is allocated only once bytes came: a connection waiting
    /// for its next request holds no buffer.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() == 0 {
            // Not zeroed: the read writes what it fills.
            let mut first = [const { MaybeUninit::<u8>::uninit() }; READ_CHUNK];
            let mut read = ReadBuf::uninit(&mut first);
            std::task::ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            self.buf.extend_from_slice(read.filled());
            return Poll::Ready(Ok(n));
        }
        if self.buf.capacity() - self.buf.len() < READ_CHUNK {
            self.buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Whether the current request's body was read to its end.
    pub fn body_done(&self) -> bool {
        self.body == BodyState::Done
    }

    /// Gives the buffer's memory back when nothing is left in it (between
    /// requests: an idle connection then holds no buffer).
    pub fn release_if_empty(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }
}

impl<S: AsyncWrite + Unpin> Wire<S> {
    /// Writes all of `data` (from `*written` on), keeping the progress in
    /// `written` across polls.
    pub fn poll_write_all(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
        written: &mut usize,
    ) -> Poll<io::Result<()>> {
        while *written < data.len() {
            let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &data[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connections_wire_stays_in_its_256_bytes() {
        // The allocation behind `Rc<RefCell<Wire>>`: two counts, the
        // borrow flag, the wire (bench/RESULTS.md, idle connections).
        type W = Wire<crate::conn::io::ClientIo<tokio::net::TcpStream>>;
        assert!(16 + std::mem::size_of::<std::cell::RefCell<W>>() <= 256);
    }
}
