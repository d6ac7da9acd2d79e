//! The same requests through nginx and through moongate: an echo origin
//! both proxy to, the cases, and the comparison of what comes back.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper::body::Incoming;

use crate::support::Reply;

/// The test upstream: answers `METHOD URI` and the request's `x-test-*`
/// and `x-user` headers, one a line, sorted, so two proxies that send the
/// same request get the same body. Cacheable for a minute. `/auth-check`
/// is an auth service: 200 with `X-Test-Pass: yes`, else 401.
pub async fn echo(req: Request<Incoming>) -> Reply {
    if req.uri().path() == "/auth-check" {
        let pass = req.headers().get("x-test-pass").is_some_and(|v| v == "yes");
        return crate::support::text(if pass { 200 } else { 401 }, "auth");
    }
    let mut body = format!("{} {}\n", req.method(), req.uri());
    let mut headers: Vec<String> = req
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-test-") || k.as_str() == "x-user")
        .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
        .collect();
    headers.sort();
    body.extend(headers);
    hyper::Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .header("cache-control", "max-age=60")
        .body(Full::new(Bytes::from(body)))
        .expect("reply")
}

/// What must be equal besides the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Same {
    /// The body too.
    Body,
    /// Only the status: nginx's own error pages are HTML, moongate's its own.
    Status,
}

/// One request to send to both.
#[derive(Debug, Clone)]
pub struct Case {
    /// The path and query.
    pub path: &'static str,
    /// Request headers.
    pub headers: Vec<(&'static str, &'static str)>,
    /// What to compare.
    pub same: Same,
    /// Response headers that must be equal too.
    pub response_headers: Vec<&'static str>,
    /// The status both must answer.
    pub status: u16,
}

/// `GET path` expecting `status`, with the body compared.
pub fn get(path: &'static str, status: u16) -> Case {
    Case {
        path,
        headers: Vec::new(),
        same: Same::Body,
        response_headers: Vec::new(),
        status,
    }
}

impl Case {
    /// Compares the status only.
    pub fn status_only(mut self) -> Case {
        self.same = Same::Status;
        self
    }

    /// Sends this request header.
    pub fn header(mut self, name: &'static str, value: &'static str) -> Case {
        self.headers.push((name, value));
        self
    }

    /// Compares this response header too.
    pub fn compare(mut self, name: &'static str) -> Case {
        self.response_headers.push(name);
        self
    }
}

/// What came back, reduced to what is compared.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    body: Option<String>,
    location: Option<String>,
    headers: Vec<(String, Option<String>)>,
}

async fn ask(client: &reqwest::Client, base: &str, case: &Case) -> Answer {
    let mut req = client.get(format!("{base}{}", case.path));
    for (k, v) in &case.headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {} from {base}: {e}", case.path));
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or("?").to_owned())
    };
    // Relative redirects are made absolute with each server's own port.
    let location = header("location").map(|l| l.replace(base, ""));
    let headers = case
        .response_headers
        .iter()
        .map(|h| ((*h).to_owned(), header(h)))
        .collect();
    let body = resp.text().await.expect("body");
    Answer {
        status,
        body: (case.same == Same::Body).then_some(body),
        location,
        headers,
    }
}

/// Sends every case to nginx, then to moongate, in order, over plain
/// HTTP; both must give the expected status and the same answer.
pub async fn same_answers(nginx: SocketAddr, moongate: SocketAddr, cases: &[Case]) {
    let client = crate::support::client_no_redirects();
    let (n, m) = (format!("http://{nginx}"), format!("http://{moongate}"));
    same_answers_at(&client, &n, &m, cases).await;
}

/// [`same_answers`] with a client and base URLs of its own (`https://...`).
pub async fn same_answers_at(
    client: &reqwest::Client,
    nginx: &str,
    moongate: &str,
    cases: &[Case],
) {
    for case in cases {
        let from_nginx = ask(client, nginx, case).await;
        let from_moongate = ask(client, moongate, case).await;
        assert_eq!(
            from_nginx.status, case.status,
            "nginx answered {} with {from_nginx:?}",
            case.path
        );
        assert_eq!(
            from_moongate, from_nginx,
            "GET {} {:?}: moongate (left) and nginx (right) differ",
            case.path, case.headers
        );
    }
}
