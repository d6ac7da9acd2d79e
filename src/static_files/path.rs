//! Turning a request path into a file under the route's root, safely: strict
//! percent-decoding, no `..`, no encoded separators, and a canonical-path
//! check so a symlink cannot lead outside the root. Blocking (std::fs): the
//! caller runs it on the blocking pool, once per request.

use std::fs::{File, Metadata};
use std::io;
use std::path::{Component, Path, PathBuf};

/// Why a path was refused; the caller maps each to a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reject {
    /// Malformed percent-encoding, NUL, backslash, an encoded `/`, or bytes
    /// that are not UTF-8: 400.
    BadRequest,
    /// Outside the root (through a symlink), unreadable, or not a regular
    /// file: 403.
    Forbidden,
    /// No such file, a `..` segment, or a directory without an index: 404.
    NotFound,
    /// Anything else the filesystem reported: 500.
    Internal,
}

/// A request path decoded into segments that are safe to join to a root.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct RelPath {
    /// Only `Component::Normal` parts.
    pub(super) path: PathBuf,
    /// The request path ended in `/`: it must name a directory.
    pub(super) trailing_slash: bool,
}

/// Decodes a still-percent-encoded path relative to the route's root.
///
/// `..` segments (in any spelling) are refused with `NotFound` rather than
/// resolved: a request that climbs names nothing we serve, and saying 404
/// tells a prober nothing. Empty and `.` segments are skipped.
pub(super) fn decode(raw: &str) -> Result<RelPath, Reject> {
    let mut path = PathBuf::new();
    for segment in raw.split('/') {
        let bytes = percent_decode_strict(segment.as_bytes()).ok_or(Reject::BadRequest)?;
        if bytes.iter().any(|&b| b == 0 || b == b'/' || b == b'\\') {
            return Err(Reject::BadRequest);
        }
        let text = String::from_utf8(bytes).map_err(|_| Reject::BadRequest)?;
        match text.as_str() {
            "" | "." => {}
            ".." => return Err(Reject::NotFound),
            _ => path.push(text),
        }
    }
    // Belt and braces: whatever the platform makes of a segment (a drive
    // prefix, say), only plain names may reach `root.join`.
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Reject::BadRequest);
    }
    Ok(RelPath {
        path,
        trailing_slash: raw.ends_with('/'),
    })
}

/// `%XX` decoding that refuses a `%` not followed by two hex digits
/// (`percent_encoding` passes those through, which would hide mistakes).
fn percent_decode_strict(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        if b == b'%' {
            let hi = hex(*input.get(i + 1)?)?;
            let lo = hex(*input.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// A regular file found under the root, opened.
#[derive(Debug)]
pub(super) struct Target {
    /// The canonical path (for the content type and precompressed siblings).
    pub(super) path: PathBuf,
    /// The opened file.
    pub(super) file: File,
    /// Metadata of the opened file itself (fstat), so length and mtime
    /// describe exactly the bytes we will send.
    pub(super) meta: Metadata,
}

/// The root with every symlink resolved: what "inside the root" is measured
/// against. A missing root answers 404, as nginx does.
pub(super) fn canonical_root(root: &Path) -> Result<PathBuf, Reject> {
    std::fs::canonicalize(root).map_err(|e| reject_io(&e))
}

/// Finds and opens the file `rel` names under the canonical `root`, or the
/// first of `index` inside it when it is a directory.
pub(super) fn locate(root: &Path, index: &[String], rel: &RelPath) -> Result<Target, Reject> {
    let path = inside(root, &root.join(&rel.path))?;
    let meta = std::fs::metadata(&path).map_err(|e| reject_io(&e))?;
    if meta.is_dir() {
        for name in index {
            match open_inside(root, &path.join(name)) {
                Ok(target) => return Ok(target),
                Err(Reject::NotFound) => {}
                Err(other) => return Err(other),
            }
        }
        return Err(Reject::NotFound);
    }
    if rel.trailing_slash {
        // "file.txt/" names a directory that is not there.
        return Err(Reject::NotFound);
    }
    open_inside(root, &path)
}

/// Opens `path`, which must resolve inside `root` to a regular file.
pub(super) fn open_inside(root: &Path, path: &Path) -> Result<Target, Reject> {
    let path = inside(root, path)?;
    // Check the type before opening: opening a FIFO would block.
    let meta = std::fs::metadata(&path).map_err(|e| reject_io(&e))?;
    if meta.is_dir() {
        return Err(Reject::NotFound);
    }
    if !meta.is_file() {
        return Err(Reject::Forbidden);
    }
    let file = File::open(&path).map_err(|e| reject_io(&e))?;
    let meta = file.metadata().map_err(|e| reject_io(&e))?;
    if !meta.is_file() {
        return Err(Reject::Forbidden);
    }
    Ok(Target { path, file, meta })
}

/// The canonical form of `path`, provided it lies under the canonical `root`.
fn inside(root: &Path, path: &Path) -> Result<PathBuf, Reject> {
    let canonical = std::fs::canonicalize(path).map_err(|e| reject_io(&e))?;
    if canonical.starts_with(root) {
        Ok(canonical)
    } else {
        Err(Reject::Forbidden)
    }
}

fn reject_io(err: &io::Error) -> Reject {
    match err.kind() {
        io::ErrorKind::NotFound
        | io::ErrorKind::NotADirectory
        | io::ErrorKind::InvalidFilename
        | io::ErrorKind::InvalidInput => Reject::NotFound,
        io::ErrorKind::PermissionDenied => Reject::Forbidden,
        _ => Reject::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> PathBuf {
        decode(raw).map(|r| r.path).unwrap_or_default()
    }

    #[test]
    fn decodes_plain_and_encoded_names() {
        assert_eq!(ok("css/app.css"), PathBuf::from("css/app.css"));
        assert_eq!(ok("/css//./app.css"), PathBuf::from("css/app.css"));
        assert_eq!(ok("my%20file.txt"), PathBuf::from("my file.txt"));
        assert_eq!(ok("%C3%A9t%C3%A9"), PathBuf::from("été"));
        assert_eq!(ok("a..b/..c"), PathBuf::from("a..b/..c"));
        assert_eq!(decode("dir/").map(|r| r.trailing_slash), Ok(true));
        assert_eq!(decode("dir").map(|r| r.trailing_slash), Ok(false));
    }

    #[test]
    fn refuses_dot_dot_in_any_spelling() {
        for raw in [
            "..",
            "../etc/passwd",
            "a/../b",
            "%2e%2e/x",
            "%2E.",
            ".%2E/x",
            "a/%2e%2e/%2e%2e/x",
        ] {
            assert_eq!(decode(raw), Err(Reject::NotFound), "{raw}");
        }
    }

    #[test]
    fn refuses_encoded_separators_nul_and_bad_escapes() {
        for raw in [
            "..%2fx", "a%2Fb", "a%5cb", "a\\b", "%00", "a%00.txt", "%", "%4", "%zz", "%ff",
        ] {
            assert_eq!(decode(raw), Err(Reject::BadRequest), "{raw}");
        }
    }
}
