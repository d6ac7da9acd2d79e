//! Taking a credential out of a request before it goes upstream
//! (`hide_credentials`): a cookie from the `Cookie` headers, an argument
//! from the query string. Everything else is kept byte for byte.

use http::header::{COOKIE, HeaderMap, HeaderValue};
use http::uri::{PathAndQuery, Uri};

/// Removes cookie `name` from every `Cookie` header; a header left empty
/// goes.
pub fn remove_cookie(headers: &mut HeaderMap, name: &str) {
    let kept: Vec<HeaderValue> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| {
            let Ok(text) = v.to_str() else {
                return Some(v.clone());
            };
            let rest: Vec<&str> = text
                .split(';')
                .map(str::trim)
                .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(name))
                .collect();
            if rest.is_empty() {
                return None;
            }
            HeaderValue::from_str(&rest.join("; ")).ok()
        })
        .collect();
    headers.remove(COOKIE);
    for v in kept {
        headers.append(COOKIE, v);
    }
}

/// Removes every `name=…` (and bare `name`) from the URI's query; no
/// query is left when nothing else was in it.
pub fn remove_query_arg(uri: &mut Uri, name: &str) {
    let Some(query) = uri.query() else { return };
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split('=').next() != Some(name))
        .collect();
    let path = uri.path();
    let pq = if rest.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", rest.join("&"))
    };
    let Ok(pq) = pq.parse::<PathAndQuery>() else {
        return;
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(pq);
    if let Ok(new) = Uri::from_parts(parts) {
        *uri = new;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_go_one_by_one() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; jwt=x.y.z; b=2"));
        h.append(COOKIE, HeaderValue::from_static("jwt=q"));
        remove_cookie(&mut h, "jwt");
        let all: Vec<_> = h.get_all(COOKIE).iter().collect();
        assert_eq!(all, vec![HeaderValue::from_static("a=1; b=2")]);
        remove_cookie(&mut h, "jwtx");
        assert_eq!(h.get(COOKIE).map(|v| v.as_bytes()), Some(&b"a=1; b=2"[..]));
    }

    #[test]
    fn query_args_go_and_the_rest_stays() {
        let mut u: Uri = "/p?a=1&jwt=t&b=&jwt".parse().unwrap_or_default();
        remove_query_arg(&mut u, "jwt");
        assert_eq!(u.to_string(), "/p?a=1&b=");
        let mut u: Uri = "/p?jwt=t".parse().unwrap_or_default();
        remove_query_arg(&mut u, "jwt");
        assert_eq!(u.to_string(), "/p");
        let mut u: Uri = "http://h:1/p?jwt=t&x".parse().unwrap_or_default();
        remove_query_arg(&mut u, "jwt");
        assert_eq!(u.to_string(), "http://h:1/p?x");
    }
}
