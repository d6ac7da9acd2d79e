//! What the targets share: reading split points off the front of an
//! input, so one input says both what the bytes are and how they arrive.

/// Splits `data` into cut offsets and the payload. The first byte's low 3
/// bits say how many cuts follow, 2 bytes each (little-endian, taken
/// modulo the payload's length + 1); the rest is the payload. The cuts
/// come back sorted; equal cuts make empty pieces, which are fed too.
pub fn cuts_and_payload(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let take = (2 * usize::from(n & 7)).min(rest.len());
    let (raw, payload) = rest.split_at(take);
    let mut cuts: Vec<usize> = raw
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (payload.len() + 1))
        .collect();
    cuts.sort_unstable();
    (cuts, payload)
}

/// `payload` cut at `cuts` (sorted; offsets past the end are clamped).
pub fn pieces<'a>(payload: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut from = 0;
    for &cut in cuts {
        let to = cut.clamp(from, payload.len());
        out.push(&payload[from..to]);
        from = to;
    }
    out.push(&payload[from..]);
    out
}
