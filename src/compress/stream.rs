//! [`Compressed`]: a response body passed through a gzip / br / zstd encoder
//! as it streams. Nothing is buffered whole: each input frame goes into the
//! encoder and whatever it has produced goes out; when the source has no
//! more data ready (it would wait) the encoder is flushed, so a slow,
//! event-stream-like body reaches the client as it is made rather than
//! when the encoder's window fills.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::Level;
use async_compression::tokio::write::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;

use super::Algorithm;
use crate::body::{BoxError, ResponseBody};

/// One encoder writing into memory: writes never wait, so every poll of it
/// completes at once.
// One per compressed response, inside the body's one box: boxing brotli's
// large state again would be a second allocation for nothing.
#[allow(clippy::large_enum_variant)]
enum Encoder {
    Gzip(GzipEncoder<Vec<u8>>),
    Br(BrotliEncoder<Vec<u8>>),
    Zstd(ZstdEncoder<Vec<u8>>),
}

impl Encoder {
    fn new(alg: Algorithm, level: i32) -> Self {
        let q = Level::Precise(level);
        match alg {
            Algorithm::Gzip => Encoder::Gzip(GzipEncoder::with_quality(Vec::new(), q)),
            Algorithm::Br => Encoder::Br(BrotliEncoder::with_quality(Vec::new(), q)),
            Algorithm::Zstd => Encoder::Zstd(ZstdEncoder::with_quality(Vec::new(), q)),
        }
    }

    fn writer(&mut self) -> Pin<&mut (dyn AsyncWrite + Unpin)> {
        match self {
            Encoder::Gzip(e) => Pin::new(e),
            Encoder::Br(e) => Pin::new(e),
            Encoder::Zstd(e) => Pin::new(e),
        }
    }

    /// What the encoder has written so far, taken.
    fn take(&mut self) -> Bytes {
        let out = match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Br(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        };
        Bytes::from(std::mem::take(out))
    }

    fn write_all(&mut self, cx: &mut Context<'_>, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            match self.writer().poll_write(cx, data) {
                Poll::Ready(Ok(0)) => return Err(stalled()),
                Poll::Ready(Ok(n)) => data = data.get(n..).unwrap_or_default(),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Err(stalled()),
            }
        }
        Ok(())
    }

    fn flush(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        match self.writer().poll_flush(cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(stalled()),
        }
    }

    fn finish(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        match self.writer().poll_shutdown(cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(stalled()),
        }
    }
}

/// An in-memory writer never waits; if an encoder ever did, waiting would
/// hang the response, so it is an error instead.
fn stalled() -> std::io::Error {
    std::io::Error::other("compressor stalled writing to memory")
}

/// A response body compressed while it streams.
pub(crate) struct Compressed {
    inner: ResponseBody,
    encoder: Encoder,
    /// Input written since the encoder was last flushed.
    unflushed: bool,
    /// The source's trailers, sent after the encoder's last bytes.
    trailers: Option<HeaderMap>,
    done: bool,
}

impl Compressed {
    /// `inner` compressed with `alg` at `level`.
    pub(crate) fn new(inner: ResponseBody, alg: Algorithm, level: i32) -> Self {
        Compressed {
            inner,
            encoder: Encoder::new(alg, level),
            unflushed: false,
            trailers: None,
            done: false,
        }
    }

    /// The encoder's last bytes once the source has ended.
    fn end(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        if let Err(e) = self.encoder.finish(cx) {
            return Poll::Ready(Some(Err(e.into())));
        }
        let tail = self.encoder.take();
        if !tail.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(tail))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

impl Body for Compressed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if data.is_empty() {
                            continue;
                        }
                        if let Err(e) = this.encoder.write_all(cx, &data) {
                            return Poll::Ready(Some(Err(e.into())));
                        }
                        this.unflushed = true;
                        let out = this.encoder.take();
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => {
                        // Trailers end the body: they follow the encoder's
                        // last bytes.
                        this.trailers = frame.into_trailers().ok();
                        return this.end(cx);
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return this.end(cx),
                Poll::Pending => {
                    if !this.unflushed {
                        return Poll::Pending;
                    }
                    // The source has nothing more for now: what it gave
                    // so far goes out rather than waiting in the encoder.
                    this.unflushed = false;
                    if let Err(e) = this.encoder.flush(cx) {
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    let out = this.encoder.take();
                    if out.is_empty() {
                        return Poll::Pending;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Read;

    async fn compress(alg: Algorithm, input: Bytes) -> Vec<u8> {
        let body = Compressed::new(ResponseBody::full(input), alg, 5);
        match body.collect().await {
            Ok(c) => c.to_bytes().to_vec(),
            Err(e) => panic!("compression failed: {e}"),
        }
    }

    #[tokio::test]
    async fn each_algorithm_round_trips() {
        let input: Bytes = (0..200_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        for alg in [Algorithm::Gzip, Algorithm::Br, Algorithm::Zstd] {
            let out = compress(alg, input.clone()).await;
            assert!(out.len() < input.len() / 4, "{alg:?} did not compress");
            let mut back = Vec::new();
            let read = match alg {
                Algorithm::Gzip => flate2::read::GzDecoder::new(&out[..]).read_to_end(&mut back),
                Algorithm::Br => {
                    brotli_decompressor::Decompressor::new(&out[..], 4096).read_to_end(&mut back)
                }
                Algorithm::Zstd => zstd::stream::read::Decoder::new(&out[..])
                    .and_then(|mut d| d.read_to_end(&mut back)),
            };
            assert!(read.is_ok(), "{alg:?}: {read:?}");
            assert_eq!(back, input, "{alg:?}");
        }
    }

    #[tokio::test]
    async fn empty_body_is_a_valid_stream() {
        let out = compress(Algorithm::Gzip, Bytes::new()).await;
        let mut back = Vec::new();
        let read = flate2::read::GzDecoder::new(&out[..]).read_to_end(&mut back);
        assert!(read.is_ok(), "{read:?}");
        assert!(back.is_empty());
    }
}
