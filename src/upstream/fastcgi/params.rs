//! The PARAMS stream: CGI variables as FastCGI name-value pairs (the
//! FastCGI specification, §3.4), each length in 1 byte when below 128 and
//! else in 4 bytes with the high bit set, packed into PARAMS records and
//! ended by an empty one. Which variables a request carries is decided by
//! the caller; this module only puts them on the wire.

use super::record::{self, MAX_CONTENT, PARAMS};

/// Largest name or value length the 4-byte form can say (31 bits).
pub const MAX_LEN: usize = 0x7fff_ffff;

/// Why a name-value pair cannot be encoded or decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParamsError {
    /// A name or value is longer than [`MAX_LEN`].
    #[error("FastCGI parameter longer than 2^31 - 1 bytes")]
    TooLong,
    /// The pairs end inside a length or a name or value.
    #[error("truncated FastCGI name-value pair")]
    Truncated,
}

/// Appends the length prefix of a name or value.
fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), ParamsError> {
    if len < 128 {
        // Below 128: one byte.
        out.push(len as u8);
        return Ok(());
    }
    if len > MAX_LEN {
        return Err(ParamsError::TooLong);
    }
    // At most MAX_LEN: fits 31 bits.
    out.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
    Ok(())
}

/// Appends one encoded name-value pair.
pub fn put_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) -> Result<(), ParamsError> {
    put_len(out, name.len())?;
    put_len(out, value.len())?;
    out.extend_from_slice(name);
    out.extend_from_slice(value);
    Ok(())
}

/// Appends the whole PARAMS stream for `params` (records, then the empty
/// record that ends the stream).
///
/// Pairs are packed whole into records of at most 65535 bytes, a new
/// record starting where the next pair would not fit: php-fpm (PHP's
/// `main/fastcgi.c`) decodes each PARAMS record on its own and rejects a
/// pair cut between two records, which the specification allows. Only a
/// pair longer than a record by itself is split.
pub fn put_params<N, V>(
    out: &mut Vec<u8>,
    request_id: u16,
    params: &[(N, V)],
) -> Result<(), ParamsError>
where
    N: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut content = Vec::with_capacity(1024);
    let mut pair = Vec::new();
    for (name, value) in params {
        pair.clear();
        put_pair(&mut pair, name.as_ref(), value.as_ref())?;
        if content.len() + pair.len() > MAX_CONTENT {
            record::put_stream(out, PARAMS, request_id, &content);
            content.clear();
        }
        if pair.len() > MAX_CONTENT {
            record::put_stream(out, PARAMS, request_id, &pair);
        } else {
            content.extend_from_slice(&pair);
        }
    }
    record::put_stream(out, PARAMS, request_id, &content);
    record::put_stream_end(out, PARAMS, request_id);
    Ok(())
}

/// Reads one length prefix from the front of `b`.
fn take_len(b: &mut &[u8]) -> Result<usize, ParamsError> {
    let first = *b.first().ok_or(ParamsError::Truncated)?;
    if first < 128 {
        *b = &b[1..];
        return Ok(usize::from(first));
    }
    let four: [u8; 4] = b
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or(ParamsError::Truncated)?;
    *b = &b[4..];
    // 31 bits: fits usize on every platform moongate builds for.
    Ok((u32::from_be_bytes(four) & 0x7fff_ffff) as usize)
}

/// Decoded name-value pairs.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Decodes the name-value pairs of a PARAMS (or GET_VALUES) stream's
/// content, all records joined.
pub fn decode_pairs(mut b: &[u8]) -> Result<Pairs, ParamsError> {
    let mut pairs = Vec::new();
    while !b.is_empty() {
        let name_len = take_len(&mut b)?;
        let value_len = take_len(&mut b)?;
        let total = name_len
            .checked_add(value_len)
            .ok_or(ParamsError::Truncated)?;
        if b.len() < total {
            return Err(ParamsError::Truncated);
        }
        let (name, rest) = b.split_at(name_len);
        let (value, rest) = rest.split_at(value_len);
        pairs.push((name.to_vec(), value.to_vec()));
        b = rest;
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::fastcgi::record::{HEADER_LEN, Header};

    /// The records of `out` as (type, content) pairs.
    fn records(out: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut at = 0;
        let mut list = Vec::new();
        while at < out.len() {
            let mut hb = [0u8; HEADER_LEN];
            hb.copy_from_slice(&out[at..at + HEADER_LEN]);
            let h = Header::parse(&hb);
            let start = at + HEADER_LEN;
            list.push((
                h.kind,
                out[start..start + usize::from(h.content_length)].to_vec(),
            ));
            at = start + h.body_len();
        }
        list
    }

    #[test]
    fn lengths_switch_form_at_128() {
        for (len, prefix) in [
            (0usize, vec![0u8]),
            (127, vec![127]),
            (128, vec![0x80, 0, 0, 128]),
            (129, vec![0x80, 0, 0, 129]),
            (70_000, vec![0x80, 0x01, 0x11, 0x70]),
        ] {
            let mut out = Vec::new();
            put_pair(&mut out, &vec![b'n'; len], b"").unwrap();
            assert_eq!(&out[..prefix.len()], &prefix[..], "name of {len}");
            assert_eq!(out[prefix.len()], 0, "value length after name of {len}");
            assert_eq!(out.len(), prefix.len() + 1 + len);
        }
    }

    #[test]
    fn pairs_round_trip_at_length_boundaries() {
        let lens = [0usize, 1, 126, 127, 128, 129, 255, 256, 65535, 65536];
        let params: Vec<(Vec<u8>, Vec<u8>)> = lens
            .iter()
            .flat_map(|&n| {
                lens.iter()
                    .map(move |&v| (vec![b'a' + (n % 26) as u8; n.max(1)], vec![b'v'; v]))
            })
            .collect();
        let mut out = Vec::new();
        for (n, v) in &params {
            put_pair(&mut out, n, v).unwrap();
        }
        assert_eq!(decode_pairs(&out).unwrap(), params);
    }

    #[test]
    fn params_stream_packs_whole_pairs_and_ends_empty() {
        // 3 pairs of ~30 000 bytes: two fit a record, the third starts a new one.
        let params: Vec<(String, String)> = (0..3)
            .map(|i| (format!("NAME_{i}"), "x".repeat(30_000)))
            .collect();
        let mut out = Vec::new();
        put_params(&mut out, 1, &params).unwrap();
        let recs = records(&out);
        assert_eq!(recs.len(), 3, "two full records and the empty one");
        assert!(recs.iter().all(|(k, _)| *k == PARAMS));
        assert!(recs[2].1.is_empty());
        // Each record decodes by itself, as php-fpm reads them.
        let first = decode_pairs(&recs[0].1).unwrap();
        let second = decode_pairs(&recs[1].1).unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].0, b"NAME_2");
    }

    #[test]
    fn a_pair_larger_than_a_record_is_split() {
        let params = [("BIG", "y".repeat(MAX_CONTENT * 2)), ("SMALL", "z".into())];
        let mut out = Vec::new();
        put_params(&mut out, 1, &params).unwrap();
        let recs = records(&out);
        assert!(recs.iter().all(|(_, c)| c.len() <= MAX_CONTENT));
        assert!(recs.last().is_some_and(|(_, c)| c.is_empty()));
        let joined: Vec<u8> = recs.iter().flat_map(|(_, c)| c.clone()).collect();
        let pairs = decode_pairs(&joined).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].1.len(), MAX_CONTENT * 2);
        assert_eq!(pairs[1], (b"SMALL".to_vec(), b"z".to_vec()));
    }

    #[test]
    fn no_params_is_only_the_end_record() {
        let mut out = Vec::new();
        put_params::<&str, &str>(&mut out, 1, &[]).unwrap();
        assert_eq!(records(&out), [(PARAMS, Vec::new())]);
    }

    #[test]
    fn truncated_pairs_are_errors() {
        let mut out = Vec::new();
        put_pair(&mut out, &[b'n'; 200], b"value").unwrap();
        for cut in 0..out.len() {
            if cut == 0 {
                assert_eq!(decode_pairs(&out[..0]), Ok(Vec::new()));
                continue;
            }
            assert_eq!(
                decode_pairs(&out[..cut]),
                Err(ParamsError::Truncated),
                "cut at {cut}"
            );
        }
        // A 4-byte length claiming 2 GB of data.
        assert_eq!(
            decode_pairs(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(ParamsError::Truncated)
        );
    }
}
