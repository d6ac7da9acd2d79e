//! W3C Trace Context (`traceparent`, version 00): reading the header a
//! request came with and writing the one sent upstream. Parsed by hand
//! rather than through `opentelemetry_sdk`'s `TraceContextPropagator`,
//! whose `extract` builds a `Context` (reference-counted, allocating) per
//! request; the ids are `opentelemetry`'s own types.

use http::HeaderValue;
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};

/// What a valid incoming `traceparent` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    /// The trace the request belongs to (never all zero).
    pub trace_id: TraceId,
    /// The caller's span (never all zero).
    pub span_id: SpanId,
    /// The caller sampled the trace (flag bit 0).
    pub sampled: bool,
}

/// Reads a `traceparent` value: `00-<32 hex>-<16 hex>-<2 hex>`, lowercase,
/// ids not all zero, version `ff` refused. A later version may append
/// `-...` fields (the spec asks readers to parse the first four); version
/// 00 may not. `None` when it is not valid: the request starts a trace.
pub fn parse(value: &[u8]) -> Option<Parent> {
    if value.len() < 55 {
        return None;
    }
    let version = hex_u8(&value[0..2])?;
    if version == 0xff || (version == 0 && value.len() != 55) {
        return None;
    }
    if version != 0 && value.len() > 55 && value[55] != b'-' {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let mut trace = [0u8; 16];
    hex_into(&value[3..35], &mut trace)?;
    let mut span = [0u8; 8];
    hex_into(&value[36..52], &mut span)?;
    let flags = hex_u8(&value[53..55])?;
    if trace == [0; 16] || span == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id: TraceId::from_bytes(trace),
        span_id: SpanId::from_bytes(span),
        sampled: flags & TraceFlags::SAMPLED.to_u8() != 0,
    })
}

/// The `traceparent` value naming `span_id` of `trace_id` as the parent.
pub fn format(trace_id: TraceId, span_id: SpanId, sampled: bool) -> HeaderValue {
    let mut out = [0u8; 55];
    out[0..3].copy_from_slice(b"00-");
    hex_out(&trace_id.to_bytes(), &mut out[3..35]);
    out[35] = b'-';
    hex_out(&span_id.to_bytes(), &mut out[36..52]);
    out[52] = b'-';
    out[53..55].copy_from_slice(if sampled { b"01" } else { b"00" });
    // Only hex digits and dashes: always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The lowercase hex form of `id` (the access log's and `$trace_id`'s).
pub fn trace_id_hex(id: TraceId) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex_out(&id.to_bytes(), &mut out);
    out
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_u8(two: &[u8]) -> Option<u8> {
    Some(nibble(two[0])? << 4 | nibble(two[1])?)
}

fn hex_into(text: &[u8], out: &mut [u8]) -> Option<()> {
    for (i, b) in out.iter_mut().enumerate() {
        *b = hex_u8(&text[2 * i..2 * i + 2])?;
    }
    Some(())
}

fn hex_out(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 15)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_the_spec_example_and_writes_it_back() {
        let p = parse(GOOD.as_bytes()).expect("valid");
        assert_eq!(
            format!("{:032x}", p.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(format!("{:016x}", p.span_id), "00f067aa0ba902b7");
        assert!(p.sampled);
        assert_eq!(format(p.trace_id, p.span_id, true), GOOD);
        assert_eq!(
            &trace_id_hex(p.trace_id),
            b"4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn refuses_what_the_spec_refuses() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_four_fields() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what";
        let p = parse(later.as_bytes()).expect("valid");
        assert!(!p.sampled);
        let joined = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00what";
        assert_eq!(parse(joined.as_bytes()), None);
    }
}
