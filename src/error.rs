//! The one error type of the request path: what failed, who is to blame, and
//! whether another peer may be tried. `status()` is the single place that
//! decides which status a client sees for a failure ("why did I get a 504"
//! is answered here). Normal outcomes (a 404, a Lua `ngx.exit(403)`, a
//! rate-limit denial) are not errors and never pass through this type.

use http::StatusCode;

/// Who caused a failure: decides log level and whether a peer's health suffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The client sent something wrong or too slowly.
    Client,
    /// The upstream peer failed or was too slow.
    Upstream,
    /// moongate itself (configuration, resources).
    Internal,
}

/// A failure while serving one request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Every peer of the upstream is down, failed or already tried.
    #[error("no live peer in upstream `{0}`")]
    NoPeer(String),
    /// Connecting to a peer failed (refused, unreachable, reset).
    #[error("connecting to {addr} failed: {source}")]
    Connect {
        /// The peer's address.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// Connecting to a peer took longer than `connect_timeout`.
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    /// The peer sent no response headers within `read_timeout`.
    #[error("{0} sent no response within read_timeout")]
    ReadTimeout(String),
    /// A gRPC call's own deadline (`grpc-timeout`) passed before the peer
    /// answered: the client's choice, not the peer's failure.
    #[error("the call's grpc-timeout passed before {0} answered")]
    CallDeadline(String),
    /// The peer broke the HTTP exchange (closed early, invalid response).
    #[error("{addr}: {source}")]
    Upstream {
        /// The peer's address.
        addr: String,
        /// What went wrong.
        source: crate::upstream::h1::ExchangeError,
    },
    /// The FastCGI exchange failed (closed early, an invalid record or
    /// head, the application refused the request).
    #[error("{addr}: {source}")]
    Fastcgi {
        /// The peer's address.
        addr: String,
        /// What went wrong.
        source: crate::upstream::fastcgi::FcgiError,
    },
    /// The peer's body failed while it was read whole (to be cached).
    #[error("reading the upstream body: {0}")]
    UpstreamBody(String),
    /// The request body passed `client_max_body_size`.
    #[error("request body is larger than client_max_body_size")]
    BodyTooLarge,
    /// The client stopped sending its body for longer than `client_body_timeout`.
    #[error("the client sent no body data within client_body_timeout")]
    ClientBodyTimeout,
    /// The request cannot be served as sent.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request head passed `max_header_size` or `max_header_count`.
    #[error("request head too large: {0}")]
    HeadTooLarge(&'static str),
    /// A `Transfer-Encoding` other than exactly `chunked` (nginx: 501).
    #[error("Transfer-Encoding other than \"chunked\" is not supported")]
    UnsupportedTransferEncoding,
    /// The peer switched protocols though no upgrade was forwarded to it,
    /// or to one the client did not ask for.
    #[error("{0} switched protocols without being asked to")]
    UnaskedUpgrade(String),
    /// A Lua handler raised an error or ran past its budget (the message
    /// names the route, the script, the line and what went wrong).
    #[error("Lua: {0}")]
    Lua(String),
    /// A Lua `balancer` ended the request with `ngx.exit(status)`.
    #[error("the Lua balancer called ngx.exit({0})")]
    LuaExit(StatusCode),
    /// The request's uwsgi variables (its headers, mostly) take more than
    /// the 65535 bytes a uwsgi packet can carry (nginx: "uwsgi request is
    /// too big").
    #[error(
        "uwsgi request is too big for upstream `{upstream}`: {size} bytes of variables, at most 65535"
    )]
    UwsgiTooBig {
        /// The upstream's name.
        upstream: String,
        /// The size the variables would take.
        size: usize,
    },
}

impl ProxyError {
    /// The status the client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoPeer(_)
            | ProxyError::Connect { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::Fastcgi { .. }
            | ProxyError::UpstreamBody(_)
            | ProxyError::UnaskedUpgrade(_)
            | ProxyError::UwsgiTooBig { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout(_)
            | ProxyError::ReadTimeout(_)
            | ProxyError::CallDeadline(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::UnsupportedTransferEncoding => StatusCode::NOT_IMPLEMENTED,
            ProxyError::Lua(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::LuaExit(status) => *status,
        }
    }

    /// Who is at fault.
    pub fn blame(&self) -> Blame {
        match self {
            ProxyError::NoPeer(_)
            | ProxyError::Lua(_)
            | ProxyError::LuaExit(_)
            | ProxyError::UwsgiTooBig { .. } => Blame::Internal,
            ProxyError::Connect { .. }
            | ProxyError::ConnectTimeout(_)
            | ProxyError::ReadTimeout(_)
            | ProxyError::Upstream { .. }
            | ProxyError::Fastcgi { .. }
            | ProxyError::UpstreamBody(_)
            | ProxyError::UnaskedUpgrade(_) => Blame::Upstream,
            ProxyError::BodyTooLarge
            | ProxyError::CallDeadline(_)
            | ProxyError::ClientBodyTimeout
            | ProxyError::BadRequest(_)
            | ProxyError::HeadTooLarge(_)
            | ProxyError::UnsupportedTransferEncoding => Blame::Client,
        }
    }

    /// Whether the failure is of the kind nginx's `proxy_next_upstream error
    /// timeout` moves on from: connecting failed or timed out, or the peer
    /// reset or closed the connection or stayed silent (a write stalled past
    /// `send_timeout`, no response head within `read_timeout`). The proxy
    /// sends the request to another peer only when, besides, no byte of a
    /// response had arrived and the request may be sent twice (see
    /// `upstream::call`). An invalid response, and every failure that is not
    /// the peer's, is never retried.
    pub fn retryable(&self) -> bool {
        use crate::upstream::h1::ExchangeError;
        match self {
            ProxyError::Connect { .. }
            | ProxyError::ConnectTimeout(_)
            | ProxyError::ReadTimeout(_) => true,
            ProxyError::Upstream { source, .. } => {
                matches!(source, ExchangeError::Closed | ExchangeError::Io(_))
            }
            ProxyError::Fastcgi { source, .. } => {
                use crate::upstream::fastcgi::FcgiError;
                matches!(source, FcgiError::Closed | FcgiError::Io(_))
            }
            ProxyError::NoPeer(_)
            | ProxyError::UpstreamBody(_)
            | ProxyError::UnaskedUpgrade(_)
            | ProxyError::CallDeadline(_)
            | ProxyError::BodyTooLarge
            | ProxyError::ClientBodyTimeout
            | ProxyError::BadRequest(_)
            | ProxyError::HeadTooLarge(_)
            | ProxyError::UnsupportedTransferEncoding
            | ProxyError::Lua(_)
            | ProxyError::LuaExit(_)
            | ProxyError::UwsgiTooBig { .. } => false,
        }
    }

    /// What the client is told about it: the message for its own
    /// mistakes, only the status's reason for the rest (upstream addresses
    /// and internals stay in the log).
    pub fn client_message(&self) -> String {
        match self.blame() {
            Blame::Client => self.to_string(),
            _ => String::new(),
        }
    }

    /// Whether the client connection should be closed after the answer.
    pub fn closes_connection(&self) -> bool {
        self.blame() == Blame::Client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_stage_that_failed() {
        let refused = ProxyError::Connect {
            addr: "127.0.0.1:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
        assert!(refused.retryable());
        assert_eq!(
            ProxyError::ReadTimeout("x".into()).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            ProxyError::BodyTooLarge.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert!(!ProxyError::BodyTooLarge.retryable());
        let reset = |source| ProxyError::Upstream {
            addr: "127.0.0.1:1".into(),
            source,
        };
        use crate::upstream::h1::ExchangeError;
        assert!(reset(ExchangeError::Closed).retryable());
        assert!(ProxyError::ReadTimeout("x".into()).retryable());
        assert!(
            !reset(ExchangeError::Invalid("malformed response head")).retryable(),
            "an answer that began is never sent elsewhere"
        );
        assert!(ProxyError::ClientBodyTimeout.closes_connection());
        assert_eq!(ProxyError::NoPeer("a".into()).blame(), Blame::Internal);
    }
}
