//! The entry file: its name (a hash of the key, spread over 256 shard
//! directories), its layout, and reading one back with every check that
//! keeps bad bytes from being served. No index, no locking, no policy.
//!
//! Layout, all integers little-endian:
//!
//! ```text
//! offset  size  field
//!      0     4  magic "MGL2"
//!      4     2  version (1)
//!      6     2  reserved (0)
//!      8     4  key length
//!     12     4  meta length
//!     16     8  body length
//!     24     4  CRC32 over key, meta and body (in that order)
//!     28     …  key (UTF-8), meta, body
//! ```
//!
//! A file is valid only if its length is exactly 28 + key + meta + body:
//! a truncated or over-long file is rejected before its checksum is read.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

const MAGIC: [u8; 4] = *b"MGL2";
const VERSION: u16 = 1;
/// Bytes before the key.
pub(super) const HEADER_LEN: usize = 28;
/// Names of files being written start with this; a crash leaves them
/// behind and `open` deletes them.
pub(super) const TMP_PREFIX: &str = ".tmp-";

/// The fixed part of an entry file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub key_len: u32,
    pub meta_len: u32,
    pub body_len: u64,
    pub crc: u32,
}

impl Header {
    /// The header for these parts; `None` if the key or meta is too long
    /// for its 32-bit length field.
    pub fn for_entry(key: &[u8], meta: &[u8], body: &[u8]) -> Option<Header> {
        Some(Header {
            key_len: u32::try_from(key.len()).ok()?,
            meta_len: u32::try_from(meta.len()).ok()?,
            body_len: u64::try_from(body.len()).ok()?,
            crc: checksum(key, meta, body),
        })
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&VERSION.to_le_bytes());
        out[8..12].copy_from_slice(&self.key_len.to_le_bytes());
        out[12..16].copy_from_slice(&self.meta_len.to_le_bytes());
        out[16..24].copy_from_slice(&self.body_len.to_le_bytes());
        out[24..28].copy_from_slice(&self.crc.to_le_bytes());
        out
    }

    /// Parses a header; `None` for a wrong magic, version or reserved field.
    fn decode(buf: &[u8; HEADER_LEN]) -> Option<Header> {
        let u16_at = |i: usize| u16::from_le_bytes([buf[i], buf[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        if buf[0..4] != MAGIC || u16_at(4) != VERSION || u16_at(6) != 0 {
            return None;
        }
        let mut body_len = [0u8; 8];
        body_len.copy_from_slice(&buf[16..24]);
        Some(Header {
            key_len: u32_at(8),
            meta_len: u32_at(12),
            body_len: u64::from_le_bytes(body_len),
            crc: u32_at(24),
        })
    }

    /// The exact length of a file with this header (saturating, so a
    /// forged header cannot overflow; such a length never matches a file).
    pub fn file_len(&self) -> u64 {
        file_len(self.key_len as u64, self.meta_len as u64, self.body_len)
    }
}

/// The size an entry takes on disk: what the store's bound counts.
pub(super) fn file_len(key: u64, meta: u64, body: u64) -> u64 {
    (HEADER_LEN as u64)
        .saturating_add(key)
        .saturating_add(meta)
        .saturating_add(body)
}

fn checksum(key: &[u8], meta: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(meta);
    h.update(body);
    h.finalize()
}

/// The file name of a key: FNV-1a 64 with a splitmix finaliser, so the
/// shard (top byte) is well spread. Stable across builds and Rust
/// versions, unlike `DefaultHasher`: a restarted store computes the
/// same names.
pub(super) fn name_of(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The shard directory a name lives in: its top byte in two hex digits.
pub(super) fn shard_dir(dir: &Path, name: u64) -> PathBuf {
    dir.join(format!("{:02x}", name >> 56))
}

/// Where the entry with this name lives.
pub(super) fn entry_path(dir: &Path, name: u64) -> PathBuf {
    shard_dir(dir, name).join(format!("{name:016x}"))
}

/// The name encoded in a file name: exactly 16 lower-case hex digits.
pub(super) fn parse_name(file_name: &str) -> Option<u64> {
    let lower_hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    if file_name.len() != 16 || !file_name.chars().all(lower_hex) {
        return None;
    }
    u64::from_str_radix(file_name, 16).ok()
}

/// Whether a directory name is a shard: exactly 2 lower-case hex digits.
pub(super) fn is_shard(dir_name: &str) -> bool {
    dir_name.len() == 2
        && dir_name
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// Writes a whole entry to `path` (created or truncated). No fsync: a file
/// torn by a power cut fails its length or checksum check and is dropped,
/// which for a cache is cheaper than syncing every write.
pub(super) fn write_file(
    path: &Path,
    header: &Header,
    key: &str,
    meta: &[u8],
    body: &[u8],
) -> io::Result<()> {
    let mut head = Vec::with_capacity(HEADER_LEN + key.len() + meta.len());
    head.extend_from_slice(&header.encode());
    head.extend_from_slice(key.as_bytes());
    head.extend_from_slice(meta);
    let mut file = File::create(path)?;
    file.write_all(&head)?;
    file.write_all(body)?;
    Ok(())
}

/// Why an entry could not be read.
#[derive(Debug)]
pub(super) enum ReadError {
    /// The file is gone.
    Missing,
    /// Bad header, wrong length, another key or a checksum mismatch: the
    /// file must be removed.
    Bad,
    /// Any other I/O error (permissions, fd exhaustion): a miss, but the
    /// file may be fine, so it is kept.
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        match e.kind() {
            io::ErrorKind::NotFound => ReadError::Missing,
            io::ErrorKind::UnexpectedEof => ReadError::Bad,
            _ => ReadError::Io(e),
        }
    }
}

/// Reads and checks the entry for `key` at `path`: returns its meta and
/// body only if header, length, key and checksum all agree.
pub(super) fn read_entry(path: &Path, key: &str) -> Result<(Vec<u8>, Bytes), ReadError> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len < HEADER_LEN as u64 {
        return Err(ReadError::Bad);
    }
    let mut head = [0u8; HEADER_LEN];
    file.read_exact(&mut head)?;
    let header = Header::decode(&head).ok_or(ReadError::Bad)?;
    // Checked before the rest is read: a file of another key or length
    // costs no more than its header.
    if header.file_len() != len || header.key_len as usize != key.len() {
        return Err(ReadError::Bad);
    }
    let rest = usize::try_from(len - HEADER_LEN as u64).map_err(|_| ReadError::Bad)?;
    let mut buf = Vec::with_capacity(rest);
    (&mut file).take(rest as u64).read_to_end(&mut buf)?;
    let (stored_key, meta, _) = split_checked(&header, &buf).ok_or(ReadError::Bad)?;
    if stored_key != key {
        return Err(ReadError::Bad);
    }
    let meta_end = key.len() + meta.len();
    let meta = meta.to_vec();
    let body = Bytes::from(buf).slice(meta_end..);
    Ok((meta, body))
}

/// The key, meta and body of the bytes after a header, only if their
/// length is exactly what the header says, the key is UTF-8 and the
/// checksum matches. Pure: the one place the file's contents are trusted.
fn split_checked<'a>(header: &Header, rest: &'a [u8]) -> Option<(&'a str, &'a [u8], &'a [u8])> {
    let key_end = usize::try_from(header.key_len).ok()?;
    let meta_end = key_end.checked_add(usize::try_from(header.meta_len).ok()?)?;
    let end = meta_end.checked_add(usize::try_from(header.body_len).ok()?)?;
    if rest.len() != end {
        return None;
    }
    let (key, tail) = rest.split_at(key_end);
    let (meta, body) = tail.split_at(meta_end - key_end);
    if checksum(key, meta, body) != header.crc {
        return None;
    }
    Some((std::str::from_utf8(key).ok()?, meta, body))
}

/// A whole entry file's key, meta and body, checked as [`read_entry`]
/// checks a file (header, exact length, checksum); `None` for anything
/// else. For tests and fuzzing: the store itself reads files in two steps.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn decode(file: &[u8]) -> Option<(&str, &[u8], &[u8])> {
    let head: &[u8; HEADER_LEN] = file.get(..HEADER_LEN)?.try_into().ok()?;
    let header = Header::decode(head)?;
    if header.file_len() != file.len() as u64 {
        return None;
    }
    split_checked(&header, &file[HEADER_LEN..])
}

/// The bytes of the file [`write_file`] writes for these parts; `None`
/// when the key or meta is too long for its length field.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn encode(key: &str, meta: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    let header = Header::for_entry(key.as_bytes(), meta, body)?;
    let mut out = Vec::with_capacity(HEADER_LEN + key.len() + meta.len() + body.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(meta);
    out.extend_from_slice(body);
    Some(out)
}

/// What `open` learns from a file without reading its body: the key it
/// holds, checked against the file's length and name. The checksum is
/// left to `get`, so a restart reads headers, not the whole cache.
pub(super) fn scan_file(path: &Path, name: u64) -> Result<String, ReadError> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut head = [0u8; HEADER_LEN];
    file.read_exact(&mut head)?;
    let header = Header::decode(&head).ok_or(ReadError::Bad)?;
    if header.file_len() != len {
        return Err(ReadError::Bad);
    }
    let mut key = vec![0u8; header.key_len as usize];
    file.read_exact(&mut key)?;
    let key = String::from_utf8(key).map_err(|_| ReadError::Bad)?;
    if name_of(&key) != name {
        return Err(ReadError::Bad);
    }
    Ok(key)
}

/// Removes a file, ignoring "already gone".
pub(super) fn remove_file(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_file_decodes_only_whole_and_unchanged() {
        let file = encode("k", b"meta", b"body").unwrap_or_default();
        assert_eq!(decode(&file), Some(("k", &b"meta"[..], &b"body"[..])));
        for cut in 0..file.len() {
            assert_eq!(decode(&file[..cut]), None, "{cut}");
        }
        let mut longer = file.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
        for i in 0..file.len() {
            let mut flipped = file.clone();
            flipped[i] ^= 0x20;
            assert_eq!(decode(&flipped), None, "{i}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn files_round_trip(
            key in ".{0,40}",
            meta in proptest::collection::vec(any::<u8>(), 0..64),
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let file = encode(&key, &meta, &body);
            prop_assert!(file.is_some());
            let file = file.unwrap_or_default();
            prop_assert_eq!(file.len() as u64, file_len(key.len() as u64, meta.len() as u64, body.len() as u64));
            prop_assert_eq!(decode(&file), Some((key.as_str(), &meta[..], &body[..])));
        }

        #[test]
        fn arbitrary_bytes_never_decode_to_something_else(
            file in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            if let Some((key, meta, body)) = decode(&file) {
                prop_assert_eq!(encode(key, meta, body), Some(file.clone()));
            }
        }
    }
}
