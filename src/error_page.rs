//! moongate's own error answers (404, 405, 413, 429, 431, 501, 502, 504,
//! a Lua `ngx.exit(403)` with nothing printed …) in one format: JSON
//! `{"error": "...", "status": N}` when the client accepts JSON or says
//! nothing, a short HTML page when it prefers `text/html` (a browser);
//! `[server] error_format` can pin either.
//! Whoever produces such an answer marks an empty response with
//! [`OwnError`] ([`response`]); [`render`] fills in the body once, where
//! the request's `Accept` is known. Connection-level answers written
//! before any request exists (408 for a slow head, 400 for an HTTP/2
//! preface on an HTTP/1.1-only connection) use [`raw_h1`].

use std::borrow::Cow;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ResponseBody;
use crate::config::model::ErrorFormat;

/// Marks a response as one of moongate's own errors, whose body is still
/// to be rendered; `message` says what went wrong, in words safe to show
/// the client (never an upstream address).
#[derive(Debug, Clone)]
pub struct OwnError {
    /// What the client is told; the status's reason phrase when empty.
    pub message: Cow<'static, str>,
}

/// An error answer with `status`, its body rendered later by [`render`].
pub fn response(status: StatusCode) -> Response<ResponseBody> {
    with_message(status, "")
}

/// Like [`response`], telling the client `message`.
pub fn with_message(
    status: StatusCode,
    message: impl Into<Cow<'static, str>>,
) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = status;
    resp.extensions_mut().insert(OwnError {
        message: message.into(),
    });
    resp
}

/// Gives a marked response its body in `format`, for `Auto` the one the
/// client prefers (`accept`: the request's `Accept` header); unmarked
/// responses are left alone. `footer` names the server on the HTML page.
/// The answer to a gRPC call (`grpc`) is a gRPC status instead
/// ([`crate::grpc::own_error`]).
pub fn render(
    resp: &mut Response<ResponseBody>,
    format: ErrorFormat,
    (accept, grpc): (Option<&HeaderValue>, bool),
    footer: &str,
) {
    let Some(own) = resp.extensions_mut().remove::<OwnError>() else {
        return;
    };
    if grpc {
        crate::grpc::own_error(resp, &own.message);
        return;
    }
    let status = resp.status();
    let as_html = match format {
        ErrorFormat::Auto => prefers_html(accept),
        ErrorFormat::Json => false,
        ErrorFormat::Html => true,
    };
    let (body, kind) = if as_html {
        (
            html(status, &own.message, footer),
            // Pure ASCII (see `escape`), so it needs no charset: nginx's
            // pages go out as plain `text/html` too.
            "text/html",
        )
    } else {
        (json(status, &own.message), "application/json")
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    // Called before the completion hook is set (see `proxy::handle`).
    *resp.body_mut() = ResponseBody::full(body);
}

/// A complete HTTP/1.1 error response with a JSON body that closes the
/// connection, for answers written straight to the socket.
pub fn raw_h1(status: StatusCode) -> Vec<u8> {
    let body = json(status, "");
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

/// The JSON body: `{"error": message, "status": N}`.
pub fn json(status: StatusCode, message: &str) -> String {
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("error")
    } else {
        message
    };
    serde_json::json!({ "error": message, "status": status.as_u16() }).to_string()
}

fn html(status: StatusCode, message: &str, footer: &str) -> String {
    let title = format!(
        "{} {}",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    );
    let detail = if message.is_empty() {
        String::new()
    } else {
        format!("<p>{}</p>", escape(message))
    };
    format!(
        "<!DOCTYPE html>\n<html><head><title>{title}</title></head>\n<body><h1>{title}</h1>{detail}<hr><p>{}</p></body></html>\n",
        escape(footer)
    )
}

/// Escapes `text` for an HTML page (text or a quoted attribute value),
/// non-ASCII characters as numeric references, so that the page is pure
/// ASCII. The admin status page uses it too.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_ascii() => out.push(c),
            c => out.push_str(&format!("&#{};", u32::from(c))),
        }
    }
    out
}

/// Whether `Accept` ranks HTML above JSON (RFC 9110 §12.5.1 q-values;
/// the most specific range decides each type's weight). A tie, `*/*`, or
/// no `Accept` at all gives JSON.
pub fn prefers_html(accept: Option<&HeaderValue>) -> bool {
    let Some(text) = accept.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let html = weight(text, "text", "html");
    let json = weight(text, "application", "json");
    html > json
}

/// The q-value `Accept` gives `kind/sub` (0 when not acceptable), in
/// thousandths.
fn weight(accept: &str, kind: &str, sub: &str) -> u32 {
    let mut best: Option<(u8, u32)> = None;
    for range in accept.split(',') {
        let mut params = range.split(';');
        let media = params.next().unwrap_or("").trim();
        let (k, s) = media.split_once('/').unwrap_or((media, ""));
        let specificity = match (k.trim(), s.trim()) {
            (k, s) if k.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(sub) => 2,
            (k, "*") if k.eq_ignore_ascii_case(kind) => 1,
            ("*", "*") => 0,
            _ => continue,
        };
        let q = params
            .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .map_or(1000, |q| (q.clamp(0.0, 1.0) * 1000.0) as u32);
        if best.is_none_or(|(spec, _)| specificity > spec) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0, |(_, q)| q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(s: &'static str) -> Option<HeaderValue> {
        Some(HeaderValue::from_static(s))
    }

    #[test]
    fn browsers_get_html_and_everyone_else_json() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(prefers_html(accept(browser).as_ref()));
        assert!(!prefers_html(None));
        assert!(!prefers_html(accept("*/*").as_ref()));
        assert!(!prefers_html(accept("application/json").as_ref()));
        assert!(!prefers_html(
            accept("text/html;q=0.5, application/json").as_ref()
        ));
        assert!(prefers_html(accept("text/*").as_ref()));
        assert!(!prefers_html(
            accept("text/html, application/json").as_ref()
        ));
        assert!(!prefers_html(accept("text/html;q=0, */*").as_ref()));
    }

    #[test]
    fn bodies_carry_status_and_message() {
        let v: serde_json::Value =
            serde_json::from_str(&json(StatusCode::NOT_FOUND, "")).unwrap_or_default();
        assert_eq!(v["error"], "Not Found");
        assert_eq!(v["status"], 404);
        let v: serde_json::Value =
            serde_json::from_str(&json(StatusCode::BAD_REQUEST, "two Host headers"))
                .unwrap_or_default();
        assert_eq!(v["error"], "two Host headers");
        let page = html(StatusCode::FORBIDDEN, "<script>", "moongate");
        assert!(page.contains("<title>403 Forbidden</title>"));
        assert!(page.contains("&lt;script&gt;"));
        let page = html(StatusCode::NOT_FOUND, "no route for café", "moongate");
        assert!(page.is_ascii() && page.contains("caf&#233;"), "{page}");
    }

    #[test]
    fn raw_answers_are_complete_responses() {
        let raw = String::from_utf8(raw_h1(StatusCode::REQUEST_TIMEOUT)).unwrap_or_default();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or(("", ""));
        assert!(head.starts_with("HTTP/1.1 408 Request Timeout\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("connection: close"));
        assert_eq!(body, r#"{"error":"Request Timeout","status":408}"#);
    }

    #[test]
    fn render_fills_only_marked_responses() {
        let mut resp = response(StatusCode::TOO_MANY_REQUESTS);
        render(&mut resp, ErrorFormat::Auto, (None, false), "moongate");
        assert_eq!(
            resp.headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        assert!(resp.extensions().get::<OwnError>().is_none());
        let mut plain = Response::new(ResponseBody::full("hi"));
        render(&mut plain, ErrorFormat::Html, (None, false), "moongate");
        assert!(plain.headers().get(header::CONTENT_TYPE).is_none());
    }

    #[test]
    fn a_pinned_format_ignores_accept() {
        let kind = |format, accept: Option<&'static str>| {
            let mut resp = response(StatusCode::FORBIDDEN);
            let accept = accept.map(HeaderValue::from_static);
            render(&mut resp, format, (accept.as_ref(), false), "moongate");
            let kind = resp.headers().get(header::CONTENT_TYPE).cloned();
            kind.map(|v| v.to_str().unwrap_or_default().to_owned())
                .unwrap_or_default()
        };
        let html = "text/html";
        assert_eq!(kind(ErrorFormat::Html, None), html);
        assert_eq!(kind(ErrorFormat::Html, Some("application/json")), html);
        assert_eq!(
            kind(ErrorFormat::Json, Some("text/html")),
            "application/json"
        );
        assert_eq!(kind(ErrorFormat::Auto, Some("text/html")), html);
        assert_eq!(kind(ErrorFormat::Auto, None), "application/json");
    }
}
