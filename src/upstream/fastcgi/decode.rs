//! Reading an application's records for one request from a read buffer,
//! incrementally (like [`crate::h1_framing::Decoder`] for HTTP/1 bodies):
//! each call takes at most one whole record off the front of the buffer,
//! or asks for more bytes. STDOUT and STDERR content comes out as `Bytes`
//! split off the buffer, not copied; padding is skipped; management
//! records (request id 0) are skipped. Anything else — another version,
//! another request id, a record type a responder does not send, a short
//! END_REQUEST — is an error, never a panic or a wait for bytes that will
//! not come. A record is at most 8 + 65535 + 255 bytes, so the buffer a
//! caller fills stays bounded.

use bytes::{Buf, Bytes, BytesMut};

use super::record::{END_REQUEST, HEADER_LEN, Header, ProtocolStatus, STDERR, STDOUT, VERSION};

/// One record for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// STDOUT content (empty: the application closed its STDOUT stream).
    Stdout(Bytes),
    /// STDERR content (empty: the application closed its STDERR stream).
    Stderr(Bytes),
    /// END_REQUEST: the request is over.
    End {
        /// The application's exit status (`appStatus`).
        app_status: u32,
        /// Whether the request completed (`protocolStatus`).
        protocol_status: ProtocolStatus,
    },
}

/// Why the application's records cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// A record of another protocol version.
    #[error("FastCGI record of version {0}, not 1")]
    Version(u8),
    /// A record for another request on this connection.
    #[error("FastCGI record for request id {0}, not ours")]
    RequestId(u16),
    /// A record type an application does not send to a responder's peer.
    #[error("unexpected FastCGI record type {0}")]
    UnexpectedType(u8),
    /// An END_REQUEST record with less than its 8 bytes of content.
    #[error("FastCGI END_REQUEST record of {0} bytes")]
    ShortEndRequest(u16),
}

/// Decodes the records of one request.
#[derive(Debug)]
pub struct RecordDecoder {
    request_id: u16,
}

impl RecordDecoder {
    /// A decoder for the records of `request_id`.
    pub fn new(request_id: u16) -> RecordDecoder {
        RecordDecoder { request_id }
    }

    /// Takes the next record off the front of `buf`; `Ok(None)` when no
    /// whole record is there yet (read more and call again).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Record>, DecodeError> {
        loop {
            let Some(head) = buf.get(..HEADER_LEN) else {
                return Ok(None);
            };
            let mut hb = [0u8; HEADER_LEN];
            hb.copy_from_slice(head);
            let header = Header::parse(&hb);
            // Checked before waiting for the content, so garbage fails at
            // once instead of waiting for up to 64 KB that may never come.
            if header.version != VERSION {
                return Err(DecodeError::Version(header.version));
            }
            if header.request_id != 0 && header.request_id != self.request_id {
                return Err(DecodeError::RequestId(header.request_id));
            }
            if header.request_id == self.request_id
                && !matches!(header.kind, STDOUT | STDERR | END_REQUEST)
            {
                return Err(DecodeError::UnexpectedType(header.kind));
            }
            if header.kind == END_REQUEST && header.content_length < 8 {
                return Err(DecodeError::ShortEndRequest(header.content_length));
            }
            if buf.len() < HEADER_LEN + header.body_len() {
                return Ok(None);
            }
            buf.advance(HEADER_LEN);
            let content = buf.split_to(usize::from(header.content_length));
            buf.advance(usize::from(header.padding_length));
            if header.request_id == 0 {
                // A management record (GET_VALUES_RESULT, UNKNOWN_TYPE):
                // moongate sends no management queries, so nothing to match.
                continue;
            }
            return Ok(Some(match header.kind {
                STDOUT => Record::Stdout(content.freeze()),
                STDERR => Record::Stderr(content.freeze()),
                _ => Record::End {
                    app_status: u32::from_be_bytes([
                        content[0], content[1], content[2], content[3],
                    ]),
                    protocol_status: ProtocolStatus::from_byte(content[4]),
                },
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::fastcgi::record::{
        BEGIN_REQUEST, GET_VALUES_RESULT, PARAMS, put_end_request, put_record, put_stream,
    };

    fn decode_all(bytes: &[u8]) -> Result<Vec<Record>, DecodeError> {
        let mut buf = BytesMut::from(bytes);
        let mut d = RecordDecoder::new(1);
        let mut out = Vec::new();
        while let Some(r) = d.decode(&mut buf)? {
            out.push(r);
        }
        assert!(buf.len() < HEADER_LEN + 65535 + 255);
        Ok(out)
    }

    fn response() -> Vec<u8> {
        let mut out = Vec::new();
        put_stream(
            &mut out,
            STDOUT,
            1,
            b"Content-Type: text/plain\r\n\r\nhello",
        );
        put_stream(&mut out, STDERR, 1, b"PHP Notice: x");
        put_record(&mut out, GET_VALUES_RESULT, 0, b"\x0e\x01FCGI_MPXS_CONNS0");
        put_stream(&mut out, STDOUT, 1, &vec![b'z'; 70_000]);
        put_record(&mut out, STDOUT, 1, b"");
        put_end_request(&mut out, 1, 0, ProtocolStatus::RequestComplete);
        out
    }

    #[test]
    fn records_round_trip() {
        let recs = decode_all(&response()).unwrap();
        assert_eq!(recs.len(), 6);
        assert_eq!(
            recs[0],
            Record::Stdout(Bytes::from_static(b"Content-Type: text/plain\r\n\r\nhello"))
        );
        assert_eq!(
            recs[1],
            Record::Stderr(Bytes::from_static(b"PHP Notice: x"))
        );
        assert_eq!(recs[2], Record::Stdout(Bytes::from(vec![b'z'; 65535])));
        assert_eq!(
            recs[3],
            Record::Stdout(Bytes::from(vec![b'z'; 70_000 - 65535]))
        );
        assert_eq!(recs[4], Record::Stdout(Bytes::new()));
        assert_eq!(
            recs[5],
            Record::End {
                app_status: 0,
                protocol_status: ProtocolStatus::RequestComplete
            }
        );
    }

    #[test]
    fn byte_by_byte_gives_the_same_records() {
        let all = response();
        let mut buf = BytesMut::new();
        let mut d = RecordDecoder::new(1);
        let mut got = Vec::new();
        for b in &all {
            buf.extend_from_slice(&[*b]);
            while let Some(r) = d.decode(&mut buf).unwrap() {
                got.push(r);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(got, decode_all(&all).unwrap());
    }

    #[test]
    fn end_request_statuses() {
        for (status, app) in [
            (ProtocolStatus::CantMpxConn, 0),
            (ProtocolStatus::Overloaded, 7),
            (ProtocolStatus::UnknownRole, 0xdead_beef),
            (ProtocolStatus::Other(9), 1),
        ] {
            let mut out = Vec::new();
            put_end_request(&mut out, 1, app, status);
            assert_eq!(
                decode_all(&out).unwrap(),
                [Record::End {
                    app_status: app,
                    protocol_status: status
                }]
            );
        }
    }

    #[test]
    fn bad_records_are_errors() {
        let mut v2 = Vec::new();
        put_record(&mut v2, STDOUT, 1, b"x");
        v2[0] = 2;
        assert_eq!(decode_all(&v2), Err(DecodeError::Version(2)));

        let mut other = Vec::new();
        put_record(&mut other, STDOUT, 2, b"x");
        assert_eq!(decode_all(&other), Err(DecodeError::RequestId(2)));

        for kind in [BEGIN_REQUEST, PARAMS, 0, 12, 255] {
            let mut rec = Vec::new();
            put_record(&mut rec, kind, 1, b"x");
            assert_eq!(decode_all(&rec), Err(DecodeError::UnexpectedType(kind)));
        }

        let mut short = Vec::new();
        put_record(&mut short, END_REQUEST, 1, b"\0\0\0");
        assert_eq!(decode_all(&short), Err(DecodeError::ShortEndRequest(3)));

        // Errors show in the header alone, before any content arrives.
        let mut only_head = BytesMut::from(&[9u8, 6, 0, 1, 0xff, 0xff, 0, 0][..]);
        assert_eq!(
            RecordDecoder::new(1).decode(&mut only_head),
            Err(DecodeError::Version(9))
        );
    }

    #[test]
    fn truncated_records_wait_for_more() {
        let all = response();
        for cut in 0..all.len() {
            let mut buf = BytesMut::from(&all[..cut]);
            let mut d = RecordDecoder::new(1);
            let mut n = 0;
            while let Some(_r) = d.decode(&mut buf).unwrap() {
                n += 1;
            }
            assert!(n < 6, "cut at {cut}");
            assert!(buf.len() < HEADER_LEN + 65535 + 255);
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(14);
        for round in 0..20_000 {
            let len = rng.usize(0..64);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            // Often a plausible header, so the deeper paths run too.
            if round % 2 == 0 && bytes.len() >= 8 {
                bytes[0] = 1;
                bytes[2] = 0;
                bytes[3] = rng.u8(0..2);
                bytes[1] = rng.u8(0..12);
                bytes[4] = 0;
                bytes[5] = rng.u8(0..16);
            }
            let mut buf = BytesMut::from(&bytes[..]);
            let mut d = RecordDecoder::new(1);
            let mut steps = 0;
            while let Ok(Some(_)) = d.decode(&mut buf) {
                steps += 1;
                assert!(steps <= len, "progress on every record");
            }
        }
    }

    #[test]
    fn mutated_responses_never_panic() {
        let good = response();
        let mut rng = fastrand::Rng::with_seed(41);
        for _ in 0..2_000 {
            let mut bytes = good.clone();
            for _ in 0..rng.usize(1..6) {
                let at = rng.usize(..bytes.len());
                bytes[at] = rng.u8(..);
            }
            bytes.truncate(rng.usize(..=bytes.len()));
            let mut buf = BytesMut::from(&bytes[..]);
            let mut d = RecordDecoder::new(1);
            while let Ok(Some(_)) = d.decode(&mut buf) {}
        }
    }
}
