//! Content negotiation for static files: the content type of a path, which
//! types are worth compressing, and which of br / gzip the client accepts
//! (Accept-Encoding with q-values, RFC 9110 §12.5.3).

use std::path::Path;

use http::HeaderMap;
use http::header;

use crate::compress::quality;

/// Files smaller than this are sent as they are: compression would save
/// little and cost a round of CPU and framing.
pub(super) const MIN_COMPRESS_LEN: u64 = 256;

/// A content coding we can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    /// Brotli.
    Br,
    /// Gzip.
    Gzip,
}

impl Encoding {
    /// The `Content-Encoding` token.
    pub(super) fn token(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Gzip => "gzip",
        }
    }

    /// The suffix of a precompressed sibling (`app.js.br`), also appended to
    /// the ETag so caches never mix encodings.
    pub(super) fn suffix(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Gzip => "gz",
        }
    }
}

/// The content type of `path`, from its extension; text gets a charset.
pub(super) fn content_type(path: &Path) -> String {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let essence = mime.essence_str();
    if mime.type_() == mime_guess::mime::TEXT || essence == "application/javascript" {
        format!("{essence}; charset=utf-8")
    } else {
        essence.to_owned()
    }
}

/// Whether a content type is text-like enough to compress.
pub(super) fn compressible(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/javascript"
                | "application/xml"
                | "image/svg+xml"
                | "application/wasm"
        )
}

/// The codings the client accepts, best first: higher q first, br before
/// gzip on a tie. `q=0` (explicit, or through `*;q=0`) refuses a coding.
/// An element with a malformed q-value is skipped.
pub(super) fn accepted(headers: &HeaderMap) -> Vec<Encoding> {
    let (mut br, mut gzip, mut star) = (None, None, None);
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else { continue };
        for element in text.split(',') {
            let mut parts = element.split(';');
            let coding = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let Some(q) = quality(parts) else { continue };
            let slot = match coding.as_str() {
                "br" => &mut br,
                "gzip" | "x-gzip" => &mut gzip,
                "*" => &mut star,
                _ => continue,
            };
            *slot = Some(q);
        }
    }
    let mut out: Vec<(u16, Encoding)> =
        [(br.or(star), Encoding::Br), (gzip.or(star), Encoding::Gzip)]
            .into_iter()
            .filter_map(|(q, enc)| q.filter(|&q| q > 0).map(|q| (q, enc)))
            .collect();
    // Stable sort keeps br ahead of gzip when their q-values tie.
    out.sort_by_key(|&(q, _)| std::cmp::Reverse(q));
    out.into_iter().map(|(_, enc)| enc).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn acc(value: &str) -> Vec<Encoding> {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(header::ACCEPT_ENCODING, v);
        }
        accepted(&h)
    }

    #[test]
    fn negotiates_br_and_gzip() {
        use Encoding::*;
        assert_eq!(acc("gzip, deflate, br"), vec![Br, Gzip]);
        assert_eq!(acc("gzip"), vec![Gzip]);
        assert_eq!(acc("GZIP;Q=0.5"), vec![Gzip]);
        assert_eq!(acc("br;q=0.5, gzip"), vec![Gzip, Br]);
        assert_eq!(acc("br;q=0, gzip"), vec![Gzip]);
        assert_eq!(acc("br;q=0.000, gzip;q=0"), Vec::<Encoding>::new());
        assert_eq!(acc("*"), vec![Br, Gzip]);
        assert_eq!(acc("*;q=0.1, gzip;q=0"), vec![Br]);
        assert_eq!(acc("identity"), Vec::<Encoding>::new());
        assert_eq!(acc("gzip;q=2, br;q=abc"), Vec::<Encoding>::new());
        assert_eq!(acc(""), Vec::<Encoding>::new());
    }

    #[test]
    fn content_types_and_compressibility() {
        assert_eq!(
            content_type(Path::new("a/app.css")),
            "text/css; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("index.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("logo.png")), "image/png");
        assert_eq!(content_type(Path::new("blob")), "application/octet-stream");
        assert!(compressible(&content_type(Path::new("app.js"))));
        assert!(compressible("application/json"));
        assert!(compressible("image/svg+xml"));
        assert!(compressible("application/wasm"));
        assert!(compressible("application/manifest+json"));
        assert!(!compressible("image/png"));
        assert!(!compressible("application/octet-stream"));
    }
}
