//! What a cache zone stores under a key, and its `meta` encoding for the
//! disk tier: a small, versioned, length-prefixed binary form (no
//! serialization crate). Plain data; no I/O, no clocks.
//!
//! Encoding (all integers big-endian):
//! - `u8` version (1), `u8` kind: 0 = response, 1 = variants;
//! - response: `u16` status, lifetime (`u64` ms each: fresh_for,
//!   initial_age, stored_at since the Unix epoch, stale_while_revalidate,
//!   stale_if_error; `u8` must_revalidate), `u32` header count, then per
//!   header `u32` name length, name, `u32` value length, value;
//! - variants: `u64` id, `u32` name count, then `u32` length + name each.
//!
//! Anything else (another version, a short or long buffer, an invalid
//! name or value) decodes to `None`: a miss, never a wrong entry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::policy::Lifetime;

const VERSION: u8 = 1;
const KIND_RESPONSE: u8 = 0;
const KIND_VARIANTS: u8 = 1;

/// One stored thing.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A response, ready to answer requests.
    Response(Stored),
    /// Under a base key whose response had `Vary`: the request headers it
    /// varies on. The variants live under [`variant_key`] keys that
    /// include `id`, so once this marker is invalidated a new one (new
    /// id) never leads to the variants stored before.
    Variants {
        /// Distinguishes this marker from earlier ones of the same key.
        id: u64,
        /// Lowercased, sorted header names ([`super::policy::vary_names`]).
        names: Vec<HeaderName>,
    },
}

/// A stored response.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The response status.
    pub status: StatusCode,
    /// Its headers, minus what a shared cache must not store.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// When it was stored and how long it is fresh.
    pub lifetime: Lifetime,
}

/// The key of one variant of `base` under the marker `id`.
pub fn variant_key(base: &str, id: u64, variant: &str) -> String {
    format!("{base}\n{id:016x}\n{variant}")
}

/// The prefix every variant key of `base` starts with.
pub fn variants_prefix(base: &str) -> String {
    format!("{base}\n")
}

impl Entry {
    /// Bytes the entry takes in memory, roughly (for the L1 weigher).
    pub fn weight(&self) -> usize {
        match self {
            Entry::Response(s) => {
                let headers: usize = s
                    .headers
                    .iter()
                    .map(|(n, v)| n.as_str().len() + v.len() + 8)
                    .sum();
                s.body.len() + headers + 64
            }
            Entry::Variants { names, .. } => names.iter().map(|n| n.as_str().len() + 8).sum(),
        }
    }

    /// The entry as `(meta, body)` for the disk tier.
    pub fn encode(&self) -> (Vec<u8>, Bytes) {
        let mut out = vec![VERSION];
        match self {
            Entry::Response(s) => {
                out.push(KIND_RESPONSE);
                out.extend_from_slice(&s.status.as_u16().to_be_bytes());
                let l = &s.lifetime;
                let stored_at = l.stored_at.duration_since(UNIX_EPOCH).unwrap_or_default();
                for d in [
                    l.fresh_for,
                    l.initial_age,
                    stored_at,
                    l.stale_while_revalidate,
                    l.stale_if_error,
                ] {
                    out.extend_from_slice(&millis(d).to_be_bytes());
                }
                out.push(u8::from(l.must_revalidate));
                put_len(&mut out, s.headers.len());
                for (name, value) in &s.headers {
                    put_bytes(&mut out, name.as_str().as_bytes());
                    put_bytes(&mut out, value.as_bytes());
                }
                (out, s.body.clone())
            }
            Entry::Variants { id, names } => {
                out.push(KIND_VARIANTS);
                out.extend_from_slice(&id.to_be_bytes());
                put_len(&mut out, names.len());
                for name in names {
                    put_bytes(&mut out, name.as_str().as_bytes());
                }
                (out, Bytes::new())
            }
        }
    }

    /// The entry `encode` made, or `None` for anything else.
    pub fn decode(meta: &[u8], body: Bytes) -> Option<Entry> {
        let mut r = Reader(meta);
        if r.u8()? != VERSION {
            return None;
        }
        let entry = match r.u8()? {
            KIND_RESPONSE => {
                let status = StatusCode::from_u16(r.u16()?).ok()?;
                let mut d = [Duration::ZERO; 5];
                for slot in &mut d {
                    *slot = Duration::from_millis(r.u64()?);
                }
                let must_revalidate = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return None,
                };
                let count = r.u32()?;
                let mut headers = HeaderMap::new();
                for _ in 0..count {
                    let name = HeaderName::from_bytes(r.bytes()?).ok()?;
                    let value = HeaderValue::from_bytes(r.bytes()?).ok()?;
                    // `append` panics past the most names a HeaderMap
                    // holds (24,576), which only a forged file reaches.
                    headers.try_append(name, value).ok()?;
                }
                Entry::Response(Stored {
                    status,
                    headers,
                    body,
                    lifetime: Lifetime {
                        fresh_for: d[0],
                        initial_age: d[1],
                        stored_at: UNIX_EPOCH.checked_add(d[2])?,
                        stale_while_revalidate: d[3],
                        stale_if_error: d[4],
                        must_revalidate,
                    },
                })
            }
            KIND_VARIANTS => {
                let id = r.u64()?;
                let count = r.u32()?;
                let mut names = Vec::new();
                for _ in 0..count {
                    names.push(HeaderName::from_bytes(r.bytes()?).ok()?);
                }
                if !body.is_empty() {
                    return None;
                }
                Entry::Variants { id, names }
            }
            _ => return None,
        };
        r.0.is_empty().then_some(entry)
    }
}

/// A fresh marker id: distinct from earlier markers of the same key.
pub fn new_variants_id(now: SystemTime) -> u64 {
    let nanos = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    (nanos as u64) ^ fastrand::u64(..)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u32()?).ok()?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        Entry::Response(Stored {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"hello"),
            lifetime: Lifetime {
                fresh_for: Duration::from_secs(60),
                initial_age: Duration::from_secs(2),
                stored_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
                stale_while_revalidate: Duration::from_secs(5),
                stale_if_error: Duration::ZERO,
                must_revalidate: true,
            },
        })
    }

    #[test]
    fn round_trips_responses_and_markers() {
        let e = sample();
        let (meta, body) = e.encode();
        assert_eq!(Entry::decode(&meta, body), Some(e));
        let v = Entry::Variants {
            id: 7,
            names: vec![HeaderName::from_static("accept-encoding")],
        };
        let (meta, body) = v.encode();
        assert_eq!(Entry::decode(&meta, body), Some(v));
    }

    /// Any entry `encode` can be given (lifetimes in whole milliseconds,
    /// as stored).
    fn any_entry() -> impl Strategy<Value = Entry> {
        let ms = || 0u64..(1 << 42);
        let header = ("[a-z][a-z0-9-]{0,8}", "[ -~\t]{0,12}");
        let response = (
            100u16..1000,
            proptest::collection::vec(header, 0..6),
            proptest::collection::vec(any::<u8>(), 0..64),
            [ms(), ms(), ms(), ms(), ms()],
            any::<bool>(),
        )
            .prop_map(|(status, pairs, body, d, must_revalidate)| {
                let mut headers = HeaderMap::new();
                for (name, value) in pairs {
                    if let (Ok(n), Ok(v)) = (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(&value),
                    ) {
                        headers.append(n, v);
                    }
                }
                Entry::Response(Stored {
                    status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                    headers,
                    body: Bytes::from(body),
                    lifetime: Lifetime {
                        fresh_for: Duration::from_millis(d[0]),
                        initial_age: Duration::from_millis(d[1]),
                        stored_at: UNIX_EPOCH + Duration::from_millis(d[2]),
                        stale_while_revalidate: Duration::from_millis(d[3]),
                        stale_if_error: Duration::from_millis(d[4]),
                        must_revalidate,
                    },
                })
            });
        let variants = (
            any::<u64>(),
            proptest::collection::vec("[a-z][a-z-]{0,10}", 0..4),
        )
            .prop_map(|(id, names)| Entry::Variants {
                id,
                names: names
                    .iter()
                    .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                    .collect(),
            });
        prop_oneof![response, variants]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_entry_round_trips(entry in any_entry()) {
            let (meta, body) = entry.encode();
            prop_assert_eq!(Entry::decode(&meta, body), Some(entry));
        }

        #[test]
        fn arbitrary_meta_decodes_only_to_what_encodes_back(
            meta in proptest::collection::vec(any::<u8>(), 0..96),
        ) {
            if let Some(entry) = Entry::decode(&meta, Bytes::new()) {
                let (meta2, body2) = entry.encode();
                prop_assert_eq!(Entry::decode(&meta2, body2), Some(entry));
            }
        }
    }

    #[test]
    fn more_names_than_a_header_map_holds_is_a_miss() {
        // Found reviewing the decoder for the cache_entry fuzz target (out
        // of its reach: the input is ~300 KB): `HeaderMap::append` panicked.
        let mut meta = vec![VERSION, KIND_RESPONSE, 0, 200];
        meta.extend_from_slice(&[0; 41]);
        let count = 30_000u32;
        meta.extend_from_slice(&count.to_be_bytes());
        for i in 0..count {
            put_bytes(&mut meta, format!("h{i}").as_bytes());
            put_bytes(&mut meta, b"");
        }
        assert_eq!(Entry::decode(&meta, Bytes::new()), None);
    }

    #[test]
    fn anything_else_is_a_miss() {
        let (meta, body) = sample().encode();
        for cut in 0..meta.len() {
            assert_eq!(Entry::decode(&meta[..cut], body.clone()), None, "{cut}");
        }
        let mut longer = meta.clone();
        longer.push(0);
        assert_eq!(Entry::decode(&longer, body.clone()), None);
        let mut other = meta;
        other[0] = 2;
        assert_eq!(Entry::decode(&other, body), None);
    }
}
