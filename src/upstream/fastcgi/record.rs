//! FastCGI 1.0 records on the wire (the FastCGI specification, §3 and §8):
//! the 8-byte header, the record types and status codes moongate uses, and
//! the encoding of the records a web server sends (BEGIN_REQUEST, a stream
//! such as PARAMS or STDIN split into records, the empty record that ends a
//! stream). Decoding lives in [`super::decode`].

/// The only protocol version (`FCGI_VERSION_1`).
pub const VERSION: u8 = 1;
/// Bytes in a record header (`FCGI_HEADER_LEN`).
pub const HEADER_LEN: usize = 8;
/// Most content bytes one record carries (its length is a `u16`).
pub const MAX_CONTENT: usize = 65535;

/// `FCGI_BEGIN_REQUEST`: starts a request (role and flags).
pub const BEGIN_REQUEST: u8 = 1;
/// `FCGI_ABORT_REQUEST`: the web server gives up on a request.
pub const ABORT_REQUEST: u8 = 2;
/// `FCGI_END_REQUEST`: the application finished a request.
pub const END_REQUEST: u8 = 3;
/// `FCGI_PARAMS`: the CGI variables, as name-value pairs.
pub const PARAMS: u8 = 4;
/// `FCGI_STDIN`: the request body.
pub const STDIN: u8 = 5;
/// `FCGI_STDOUT`: the CGI response (head and body).
pub const STDOUT: u8 = 6;
/// `FCGI_STDERR`: the application's error output.
pub const STDERR: u8 = 7;
/// `FCGI_DATA`: the filter role's extra stream (unused by responders).
pub const DATA: u8 = 8;
/// `FCGI_GET_VALUES`: a management query.
pub const GET_VALUES: u8 = 9;
/// `FCGI_GET_VALUES_RESULT`: the answer to a management query.
pub const GET_VALUES_RESULT: u8 = 10;
/// `FCGI_UNKNOWN_TYPE`: the application did not understand a management record.
pub const UNKNOWN_TYPE: u8 = 11;

/// `FCGI_RESPONDER`: the role of an application answering HTTP requests.
pub const ROLE_RESPONDER: u16 = 1;
/// `FCGI_KEEP_CONN`: the application keeps the connection open after the
/// request (else it closes it once the response is written).
pub const FLAG_KEEP_CONN: u8 = 1;

/// The `protocolStatus` of an END_REQUEST record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolStatus {
    /// `FCGI_REQUEST_COMPLETE`: normal end of the request.
    RequestComplete,
    /// `FCGI_CANT_MPX_CONN`: the application cannot take a second request
    /// on this connection.
    CantMpxConn,
    /// `FCGI_OVERLOADED`: the application is out of some resource.
    Overloaded,
    /// `FCGI_UNKNOWN_ROLE`: the application does not play the role asked.
    UnknownRole,
    /// A value the specification does not define.
    Other(u8),
}

impl ProtocolStatus {
    /// The status of the byte on the wire.
    pub fn from_byte(b: u8) -> ProtocolStatus {
        match b {
            0 => ProtocolStatus::RequestComplete,
            1 => ProtocolStatus::CantMpxConn,
            2 => ProtocolStatus::Overloaded,
            3 => ProtocolStatus::UnknownRole,
            other => ProtocolStatus::Other(other),
        }
    }

    /// The byte on the wire.
    pub fn to_byte(self) -> u8 {
        match self {
            ProtocolStatus::RequestComplete => 0,
            ProtocolStatus::CantMpxConn => 1,
            ProtocolStatus::Overloaded => 2,
            ProtocolStatus::UnknownRole => 3,
            ProtocolStatus::Other(b) => b,
        }
    }
}

impl std::fmt::Display for ProtocolStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolStatus::RequestComplete => f.write_str("FCGI_REQUEST_COMPLETE"),
            ProtocolStatus::CantMpxConn => f.write_str("FCGI_CANT_MPX_CONN"),
            ProtocolStatus::Overloaded => f.write_str("FCGI_OVERLOADED"),
            ProtocolStatus::UnknownRole => f.write_str("FCGI_UNKNOWN_ROLE"),
            ProtocolStatus::Other(b) => write!(f, "unknown protocol status {b}"),
        }
    }
}

/// A record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The protocol version ([`VERSION`]).
    pub version: u8,
    /// The record type ([`STDOUT`], ...).
    pub kind: u8,
    /// The request it belongs to (0 for management records).
    pub request_id: u16,
    /// Bytes of content that follow the header.
    pub content_length: u16,
    /// Bytes of padding after the content, to be skipped.
    pub padding_length: u8,
}

impl Header {
    /// The header of a version-1 record.
    pub fn new(kind: u8, request_id: u16, content_length: u16, padding_length: u8) -> Header {
        Header {
            version: VERSION,
            kind,
            request_id,
            content_length,
            padding_length,
        }
    }

    /// Reads a header from its 8 bytes (the reserved byte is ignored).
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            version: b[0],
            kind: b[1],
            request_id: u16::from_be_bytes([b[2], b[3]]),
            content_length: u16::from_be_bytes([b[4], b[5]]),
            padding_length: b[6],
        }
    }

    /// The header's 8 bytes.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let id = self.request_id.to_be_bytes();
        let len = self.content_length.to_be_bytes();
        [
            self.version,
            self.kind,
            id[0],
            id[1],
            len[0],
            len[1],
            self.padding_length,
            0,
        ]
    }

    /// Content and padding bytes after the header.
    pub fn body_len(&self) -> usize {
        usize::from(self.content_length) + usize::from(self.padding_length)
    }
}

/// Padding that brings `len` content bytes to a multiple of 8, as the
/// specification recommends (and nginx does).
fn padding_for(len: usize) -> u8 {
    // At most 7: fits a u8.
    ((8 - len % 8) % 8) as u8
}

/// Appends one record carrying `content` (at most [`MAX_CONTENT`] bytes;
/// callers split longer content) with its padding.
pub fn put_record(out: &mut Vec<u8>, kind: u8, request_id: u16, content: &[u8]) {
    let len = content.len().min(MAX_CONTENT);
    let padding = padding_for(len);
    // `len` was capped at MAX_CONTENT, which fits a u16.
    let header = Header::new(kind, request_id, len as u16, padding);
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(&content[..len]);
    out.extend_from_slice(&[0u8; 8][..usize::from(padding)]);
}

/// Appends `content` as records of `kind`, split at [`MAX_CONTENT`]
/// bytes; empty content appends nothing (an empty record would end the
/// stream: see [`put_stream_end`]).
pub fn put_stream(out: &mut Vec<u8>, kind: u8, request_id: u16, content: &[u8]) {
    for piece in content.chunks(MAX_CONTENT) {
        put_record(out, kind, request_id, piece);
    }
}

/// Appends the empty record that ends a stream of `kind`.
pub fn put_stream_end(out: &mut Vec<u8>, kind: u8, request_id: u16) {
    put_record(out, kind, request_id, &[]);
}

/// Appends a BEGIN_REQUEST record for the responder role; `keep_conn`
/// asks the application to keep the connection open afterwards.
pub fn put_begin_request(out: &mut Vec<u8>, request_id: u16, keep_conn: bool) {
    let role = ROLE_RESPONDER.to_be_bytes();
    let flags = if keep_conn { FLAG_KEEP_CONN } else { 0 };
    put_record(
        out,
        BEGIN_REQUEST,
        request_id,
        &[role[0], role[1], flags, 0, 0, 0, 0, 0],
    );
}

/// Appends an END_REQUEST record (what an application sends; used by tests
/// and fake applications).
pub fn put_end_request(
    out: &mut Vec<u8>,
    request_id: u16,
    app_status: u32,
    status: ProtocolStatus,
) {
    let a = app_status.to_be_bytes();
    put_record(
        out,
        END_REQUEST,
        request_id,
        &[a[0], a[1], a[2], a[3], status.to_byte(), 0, 0, 0],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header::new(STDOUT, 0x1234, 0xfedc, 7);
        let b = h.to_bytes();
        assert_eq!(b, [1, 6, 0x12, 0x34, 0xfe, 0xdc, 7, 0]);
        assert_eq!(Header::parse(&b), h);
        assert_eq!(h.body_len(), 0xfedc + 7);
    }

    #[test]
    fn records_are_padded_to_eight() {
        for len in 0..20 {
            let mut out = Vec::new();
            put_record(&mut out, STDIN, 1, &vec![b'x'; len]);
            assert_eq!(out.len() % 8, 0, "content of {len}");
            let mut hb = [0u8; HEADER_LEN];
            hb.copy_from_slice(&out[..HEADER_LEN]);
            let h = Header::parse(&hb);
            assert_eq!(usize::from(h.content_length), len);
            assert_eq!(HEADER_LEN + h.body_len(), out.len());
        }
    }

    #[test]
    fn begin_request_asks_for_responder_and_keep_conn() {
        let mut out = Vec::new();
        put_begin_request(&mut out, 1, true);
        assert_eq!(&out[..8], &[1, BEGIN_REQUEST, 0, 1, 0, 8, 0, 0]);
        assert_eq!(&out[8..], &[0, 1, FLAG_KEEP_CONN, 0, 0, 0, 0, 0]);
        out.clear();
        put_begin_request(&mut out, 1, false);
        assert_eq!(out[10], 0);
    }

    #[test]
    fn long_streams_split_at_65535() {
        let content = vec![7u8; MAX_CONTENT * 2 + 10];
        let mut out = Vec::new();
        put_stream(&mut out, STDIN, 1, &content);
        let mut at = 0;
        let mut lens = Vec::new();
        while at < out.len() {
            let mut hb = [0u8; HEADER_LEN];
            hb.copy_from_slice(&out[at..at + HEADER_LEN]);
            let h = Header::parse(&hb);
            lens.push(usize::from(h.content_length));
            at += HEADER_LEN + h.body_len();
        }
        assert_eq!(at, out.len());
        assert_eq!(lens, [MAX_CONTENT, MAX_CONTENT, 10]);
        out.clear();
        put_stream(&mut out, STDIN, 1, &[]);
        assert!(out.is_empty());
    }

    #[test]
    fn protocol_status_bytes() {
        for b in 0..=255u8 {
            assert_eq!(ProtocolStatus::from_byte(b).to_byte(), b);
        }
        assert_eq!(ProtocolStatus::from_byte(2), ProtocolStatus::Overloaded);
    }
}
