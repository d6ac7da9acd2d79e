//! FastCGI to an application server (nginx's `fastcgi_pass`, PHP-FPM's
//! protocol): the wire records, the PARAMS encoding, the CGI response head,
//! and one request's exchange over a connection the caller opened. It owns
//! the protocol only: which CGI variables a request carries, which peer
//! and pool the connection comes from and goes back to, and which status a
//! failure shows are the caller's (the upstream call path).
//!
//! Layout, in the order a request uses them:
//! - [`record`]: record headers, types and statuses; encoding the records
//!   a web server sends (BEGIN_REQUEST, streams, their empty end records).
//! - [`params`]: CGI variables as name-value pairs in PARAMS records.
//! - [`exchange`]: sends BEGIN_REQUEST, PARAMS and the request body as
//!   STDIN, then reads the response head.
//! - [`output`]: reads the application's records off the connection:
//!   STDOUT data, STDERR logged, END_REQUEST.
//! - [`decode`]: the incremental record decoder under [`output`].
//! - [`cgi_head`]: the CGI response head (`Status:`, `Location:`).
//! - [`body`]: the response body streamed from STDOUT until END_REQUEST,
//!   handing the connection back when it may carry another request.
//!
//! Public (not only to the crate) so the integration tests can drive an
//! exchange against a real PHP-FPM directly.

pub mod record;
pub mod params;
pub mod exchange;
pub mod output;
pub mod decode;
pub mod cgi_head;
pub mod body;

pub use body::FcgiBody;
pub use cgi_head::Head;
pub use exchange::{Options, exchange};

use record::ProtocolStatus;

/// The request id of every exchange: one request at a time per connection
/// (PHP-FPM does not multiplex, and says so with `FCGI_MPXS_CONNS = 0`).
pub const REQUEST_ID: u16 = 1;

/// What went wrong in a FastCGI exchange. Every variant is the upstream's
/// (or the connection's) fault, a 502 to the client, except
/// [`FcgiError::ReadTimeout`] (504) and [`FcgiError::Request`] (the client's
/// body failed, mapped as for HTTP upstreams).
#[derive(Debug, thiserror::Error)]
pub enum FcgiError {
    /// The application closed the connection before any byte of a
    /// response: on a pooled connection it had closed it while idle, and
    /// another connection may be tried.
    #[error("the FastCGI application closed the connection before responding")]
    Closed,
    /// The application closed the connection in the middle of a response
    /// (before END_REQUEST).
    #[error("the FastCGI application closed the connection before ending the request")]
    Truncated,
    /// A socket error (a write failing included).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No response head, or no body data, within `read_timeout`.
    #[error("no FastCGI response within read_timeout")]
    ReadTimeout,
    /// A record that breaks the protocol.
    #[error("{0}")]
    Record(#[from] decode::DecodeError),
    /// An invalid CGI response head.
    #[error("{0}")]
    Head(#[from] cgi_head::HeadError),
    /// END_REQUEST came before a complete response head.
    #[error("the FastCGI application ended the request without a response head")]
    NoHead,
    /// END_REQUEST with a protocol status other than FCGI_REQUEST_COMPLETE
    /// (the application refused the request: overloaded, cannot multiplex,
    /// unknown role).
    #[error("the FastCGI application refused the request: {0}")]
    Refused(ProtocolStatus),
    /// A CGI variable too long to encode.
    #[error("{0}")]
    Params(#[from] params::ParamsError),
    /// The client's request body failed (too large, too slow, aborted).
    #[error("request body: {0}")]
    Request(Box<dyn std::error::Error + Send + Sync>),
}

impl FcgiError {
    /// Whether the application may have seen nothing of a response being
    /// started, so that another connection or peer may be tried: only a
    /// close before any response byte (a write failing while sending is
    /// [`FcgiError::Io`]; the caller decides from its own state whether
    /// that came before the request was whole).
    pub fn before_response(&self) -> bool {
        matches!(self, FcgiError::Closed)
    }
}
