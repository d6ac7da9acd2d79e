//! `tcpsock:receiveuntil(pattern, {inclusive = ...})`'s reading state: where
//! the boundary pattern is in the bytes read so far, and what the iterator
//! may hand out before it has seen the whole pattern. Plain bytes in, plain
//! bytes out: the socket feeds it and knows when the peer closed.

use bytes::{Bytes, BytesMut};

/// One `receiveuntil` iterator's state.
#[derive(Debug)]
pub struct Until {
    pattern: Vec<u8>,
    inclusive: bool,
    /// A sized call returned the last data before the pattern: the next
    /// call returns `nil, nil` and starts over.
    done: bool,
    /// Start positions in the buffer already known not to begin the pattern.
    scanned: usize,
}

/// What a call of the iterator gives, given the buffered bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Data to return.
    Data(Bytes),
    /// The pattern was consumed by the previous sized call: `nil, nil`.
    End,
    /// More bytes are needed.
    More,
}

impl Until {
    /// An iterator state for `pattern` (not empty).
    pub fn new(pattern: &[u8], inclusive: bool) -> Until {
        Until {
            pattern: pattern.to_vec(),
            inclusive,
            done: false,
            scanned: 0,
        }
    }

    /// Starts over (after an error).
    pub fn reset(&mut self) {
        self.done = false;
        self.scanned = 0;
    }

    /// One step over `buf`: takes what a call with `size` (`None`: read up
    /// to the pattern) returns out of it, or says more is needed.
    pub fn step(&mut self, buf: &mut BytesMut, size: Option<usize>) -> Step {
        if self.done {
            self.reset();
            return Step::End;
        }
        let n = self.pattern.len();
        let found = buf
            .get(self.scanned..)
            .and_then(|rest| find(rest, &self.pattern))
            .map(|i| i + self.scanned);
        match (found, size) {
            (Some(p), Some(size)) if p > size => {
                self.scanned = p - size;
                Step::Data(buf.split_to(size).freeze())
            }
            (Some(p), size) => {
                let mut data = buf.split_to(p);
                let pattern = buf.split_to(n);
                if self.inclusive {
                    data.unsplit(pattern);
                }
                self.scanned = 0;
                // A sized call returns what came before the pattern (even
                // nothing, as ""), and the next call `nil, nil`, as
                // ngx_lua's iterator does.
                if size.is_some() {
                    self.done = true;
                }
                Step::Data(data.freeze())
            }
            (None, size) => {
                self.scanned = (buf.len() + 1).saturating_sub(n);
                let Some(size) = size else {
                    return Step::More;
                };
                let safe = buf.len() - partial_suffix(buf, &self.pattern);
                if safe >= size && size > 0 {
                    self.scanned = self.scanned.saturating_sub(size);
                    return Step::Data(buf.split_to(size).freeze());
                }
                Step::More
            }
        }
    }
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Length of the longest end of `buf` that begins `pattern` (and so may
/// turn out to be the pattern once more bytes arrive).
fn partial_suffix(buf: &[u8], pattern: &[u8]) -> usize {
    let most = pattern.len().saturating_sub(1).min(buf.len());
    (1..=most)
        .rev()
        .find(|&k| buf[buf.len() - k..] == pattern[..k])
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in `chunk`-byte pieces and calls the iterator with
    /// `size` until it ends; `None` in the result stands for `nil, nil`.
    fn run(
        input: &[u8],
        chunk: usize,
        pattern: &str,
        size: Option<usize>,
        inclusive: bool,
    ) -> Vec<Option<String>> {
        let mut until = Until::new(pattern.as_bytes(), inclusive);
        let mut buf = BytesMut::new();
        let mut pieces = input.chunks(chunk);
        let mut out = Vec::new();
        loop {
            match until.step(&mut buf, size) {
                Step::Data(d) => {
                    out.push(Some(String::from_utf8_lossy(&d).into_owned()));
                    if size.is_none() {
                        return out;
                    }
                }
                Step::End => {
                    out.push(None);
                    return out;
                }
                Step::More => match pieces.next() {
                    Some(p) => buf.extend_from_slice(p),
                    None => panic!("ran out of input after {out:?}"),
                },
            }
        }
    }

    const STREAM: &[u8] = b"hello, world! -agentzh\r\n--abcedhb blah blah";

    #[test]
    fn whole_read_stops_before_the_pattern_at_any_chunking() {
        for chunk in 1..STREAM.len() {
            assert_eq!(
                run(STREAM, chunk, "\r\n--abcedhb", None, false),
                vec![Some("hello, world! -agentzh".to_string())],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn inclusive_keeps_the_pattern() {
        for chunk in 1..8 {
            assert_eq!(
                run(b"hello world _END_ blah", chunk, "_END_", None, true),
                vec![Some("hello world _END_".to_string())]
            );
        }
    }

    #[test]
    fn sized_reads_give_the_documented_chunks_at_any_chunking() {
        let want: Vec<Option<String>> = ["hell", "o, w", "orld", "! -a", "gent", "zh"]
            .iter()
            .map(|s| Some(s.to_string()))
            .chain([None])
            .collect();
        for chunk in 1..STREAM.len() {
            assert_eq!(
                run(STREAM, chunk, "\r\n--abcedhb", Some(4), false),
                want,
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn a_partial_pattern_is_not_handed_out() {
        // "--ab" could begin the pattern "--abc": a sized read waits.
        let mut until = Until::new(b"--abc", false);
        let mut buf = BytesMut::from(&b"xy--ab"[..]);
        assert_eq!(until.step(&mut buf, Some(4)), Step::More);
        buf.extend_from_slice(b"d");
        assert_eq!(
            until.step(&mut buf, Some(4)),
            Step::Data(Bytes::from_static(b"xy--"))
        );
        assert_eq!(&buf[..], b"abd");
    }

    #[test]
    fn self_overlapping_pattern_is_found_across_boundaries() {
        for chunk in 1..6 {
            assert_eq!(
                run(b"aaaab tail", chunk, "aab", None, false),
                vec![Some("aa".to_string())]
            );
        }
    }

    #[test]
    fn partial_suffix_finds_the_longest_prefix_at_the_end() {
        assert_eq!(partial_suffix(b"xxaa", b"aab"), 2);
        assert_eq!(partial_suffix(b"xxa", b"aab"), 1);
        assert_eq!(partial_suffix(b"xxb", b"aab"), 0);
        assert_eq!(partial_suffix(b"", b"aab"), 0);
    }
}
