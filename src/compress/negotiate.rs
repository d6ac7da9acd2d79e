//! `Accept-Encoding` (RFC 9110 §12.5.3): which of the configured codings a
//! client accepts, and with which q-value. Shared with the static files'
//! own negotiation (the q-value grammar).

use http::HeaderMap;
use http::header;

use super::Algorithm;

/// The coding to send: the highest q-value among `prefs` the client
/// accepts (`q=0`, explicit or through `*;q=0`, refuses), the earlier in
/// `prefs` on a tie; `None` when it accepts none of them (identity).
/// Elements with a malformed q-value are skipped.
pub(crate) fn choose(headers: &HeaderMap, prefs: &[Algorithm]) -> Option<Algorithm> {
    // q-values in thousandths for gzip, br, zstd, and `*`.
    let mut q: [Option<u16>; 4] = [None; 4];
    let mut any = false;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else { continue };
        for element in text.split(',') {
            let mut parts = element.split(';');
            let coding = parts.next().unwrap_or_default().trim();
            let slot =
                if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                    0
                } else if coding.eq_ignore_ascii_case("br") {
                    1
                } else if coding.eq_ignore_ascii_case("zstd") {
                    2
                } else if coding == "*" {
                    3
                } else {
                    continue;
                };
            let Some(value) = quality(parts) else {
                continue;
            };
            q[slot] = Some(value);
            any = true;
        }
    }
    if !any {
        return None;
    }
    let mut best: Option<(u16, Algorithm)> = None;
    for &alg in prefs {
        let slot = match alg {
            Algorithm::Gzip => 0,
            Algorithm::Br => 1,
            Algorithm::Zstd => 2,
        };
        let Some(value) = q[slot].or(q[3]).filter(|&v| v > 0) else {
            continue;
        };
        // Strictly greater: an earlier preference wins a tie.
        if best.is_none_or(|(b, _)| value > b) {
            best = Some((value, alg));
        }
    }
    best.map(|(_, alg)| alg)
}

/// The q-value in thousandths from an element's parameters; 1000 when
/// absent, `None` when malformed.
pub(crate) fn quality<'a>(params: impl Iterator<Item = &'a str>) -> Option<u16> {
    let mut q = 1000;
    for param in params {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("q") {
            continue;
        }
        q = parse_qvalue(value.trim())?;
    }
    Some(q)
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`
pub(crate) fn parse_qvalue(text: &str) -> Option<u16> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for i in 0..3 {
        let digit = frac.as_bytes().get(i).map_or(0, |b| u16::from(b - b'0'));
        thousandths = thousandths * 10 + digit;
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Algorithm::*;
    use http::HeaderValue;

    const ALL: [Algorithm; 3] = [Zstd, Br, Gzip];

    fn pick(value: &str, prefs: &[Algorithm]) -> Option<Algorithm> {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(header::ACCEPT_ENCODING, v);
        }
        choose(&h, prefs)
    }

    #[test]
    fn highest_q_then_preference() {
        assert_eq!(pick("gzip, deflate, br, zstd", &ALL), Some(Zstd));
        assert_eq!(pick("gzip, deflate, br", &ALL), Some(Br));
        assert_eq!(pick("gzip, br", &[Gzip, Br]), Some(Gzip));
        assert_eq!(pick("gzip;q=1, br;q=0.5, zstd;q=0.4", &ALL), Some(Gzip));
        assert_eq!(pick("GZIP;Q=0.5", &ALL), Some(Gzip));
        assert_eq!(pick("x-gzip", &ALL), Some(Gzip));
        assert_eq!(pick("br;q=0.9, zstd;q=0.91", &ALL), Some(Zstd));
    }

    #[test]
    fn refusals_and_wildcards() {
        assert_eq!(pick("br;q=0, gzip", &ALL), Some(Gzip));
        assert_eq!(pick("*", &ALL), Some(Zstd));
        assert_eq!(pick("*;q=0.1, zstd;q=0", &ALL), Some(Br));
        assert_eq!(pick("*;q=0", &ALL), None);
        assert_eq!(pick("identity", &ALL), None);
        assert_eq!(pick("gzip;q=0.000, br;q=0, zstd;q=0", &ALL), None);
        assert_eq!(pick("", &ALL), None);
        assert_eq!(pick("deflate", &ALL), None);
        // Malformed q-values are skipped, not taken as 1.
        assert_eq!(pick("gzip;q=2, br;q=abc", &ALL), None);
        // Only the configured algorithms are candidates.
        assert_eq!(pick("zstd, br", &[Gzip]), None);
        assert_eq!(HeaderMap::new().get(header::ACCEPT_ENCODING), None);
        assert_eq!(choose(&HeaderMap::new(), &ALL), None);
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("0.125"), Some(125));
        assert_eq!(parse_qvalue("1.000"), Some(1000));
        assert_eq!(parse_qvalue("1."), Some(1000));
        assert_eq!(parse_qvalue("1.5"), None);
        assert_eq!(parse_qvalue("0.1234"), None);
        assert_eq!(parse_qvalue("0.-1"), None);
    }
}
