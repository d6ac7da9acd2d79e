//! Finding where an HTTP/1 request head ends in a byte stream, read by
//! read, and whether it named both framing headers: what
//! [`super::io::ClientIo`] needs to answer 408 and 400 itself.

/// Finds the end of an HTTP/1 request head in a byte stream and notes
/// whether it named both `Content-Length` and `Transfer-Encoding`. The
/// answer does not depend on how the stream is split into reads.
#[derive(Default)]
pub(crate) struct HeadScan {
    name: [u8; 20],
    name_len: usize,
    in_name: bool,
    line_has_text: bool,
    lines: u32,
    cl: bool,
    te: bool,
}

impl HeadScan {
    /// Feeds bytes; once the blank line ending the head is seen, returns
    /// how many of `bytes` belong to the head (through that line's LF).
    /// Bytes after it are not looked at.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        if self.lines == 0 && !self.line_has_text {
            self.in_name = true;
        }
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\n' => {
                    if !self.line_has_text {
                        if self.lines > 0 {
                            return Some(i + 1);
                        }
                        // Blank lines before the request line are ignored (RFC 9112 §2.2).
                        continue;
                    }
                    self.lines += 1;
                    self.line_has_text = false;
                    self.in_name = true;
                    self.name_len = 0;
                }
                b'\r' => {}
                _ => {
                    self.line_has_text = true;
                    if !self.in_name {
                        continue;
                    }
                    if b == b':' {
                        self.in_name = false;
                        if self.lines > 0 {
                            match &self.name[..self.name_len] {
                                b"content-length" => self.cl = true,
                                b"transfer-encoding" => self.te = true,
                                _ => {}
                            }
                        }
                    } else if self.name_len < self.name.len() {
                        self.name[self.name_len] = b.to_ascii_lowercase();
                        self.name_len += 1;
                    } else {
                        self.in_name = false;
                    }
                }
            }
        }
        None
    }

    /// Whether the head named both `Content-Length` and `Transfer-Encoding`.
    pub(crate) fn conflict(&self) -> bool {
        self.cl && self.te
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_head_end_across_reads() {
        let mut s = HeadScan::default();
        assert_eq!(
            s.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r"),
            None
        );
        assert_eq!(s.feed(b"\nTransfer-Encoding: chunked\r\n"), None);
        assert_eq!(s.feed(b"\r\n0\r\n\r\n"), Some(2));
        assert!(s.conflict());
    }

    #[test]
    fn scan_plain_head_has_no_conflict() {
        let mut s = HeadScan::default();
        let head = b"\r\nGET /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(s.feed(head), Some(head.len()));
        assert!(!s.conflict());
        let mut s = HeadScan::default();
        assert!(
            s.feed(b"GET /content-length: HTTP/1.1\r\nX-Content-Length: 1\r\nTransfer-Encoding: chunked\n\n")
                .is_some()
        );
        assert!(!s.conflict());
    }

    /// Scans `bytes` cut at `cuts` (offsets, any order): where the head
    /// ends (an offset into `bytes`) and whether it had both framings.
    fn scan_split(bytes: &[u8], cuts: &[usize]) -> (Option<usize>, bool) {
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let mut s = HeadScan::default();
        let mut from = 0;
        for to in cuts {
            if let Some(n) = s.feed(&bytes[from..to]) {
                return (Some(from + n), s.conflict());
            }
            from = to;
        }
        (None, s.conflict())
    }

    /// Bytes that look like request heads often enough to reach every
    /// branch of the scanner.
    fn head_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just(&b"\r\n"[..]),
            Just(&b"\n"[..]),
            Just(&b"\r"[..]),
            Just(&b"GET / HTTP/1.1"[..]),
            Just(&b"Content-Length: 3"[..]),
            Just(&b"transfer-encoding:chunked"[..]),
            Just(&b"Host: a"[..]),
            Just(&b":"[..]),
            Just(&b"x"[..]),
            Just(&b"a-very-long-header-name-indeed"[..]),
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|p| p.concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(256))]

        #[test]
        fn scan_does_not_depend_on_the_reads(
            bytes in head_bytes(),
            cuts in proptest::collection::vec(0usize..400, 0..8),
        ) {
            proptest::prop_assert_eq!(scan_split(&bytes, &cuts), scan_split(&bytes, &[]));
        }
    }
}
