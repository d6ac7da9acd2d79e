//! The access log's fields: their names as `access_log_fields` and the
//! JSON keys spell them, the default order, and [`FieldSet`], the set of
//! chosen fields a request tests before it copies a value for the log.
//! Plain data: nothing here knows HTTP or the sink.

/// One field of an access log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// When the line was written (RFC 3339, UTC, microseconds).
    Timestamp,
    /// The real client address (after `trusted_proxies`).
    Client,
    /// The request method.
    Method,
    /// The original request URI (path and query).
    Uri,
    /// The request's host (authority or `Host`, without the port).
    Host,
    /// The client's protocol: `HTTP/1.0`, `HTTP/1.1`, `HTTP/2.0`.
    Protocol,
    /// The response status sent.
    Status,
    /// Response body bytes sent.
    Bytes,
    /// Request bytes read from the client: the head and the body.
    BytesReceived,
    /// Seconds from the request's arrival to the end of the response.
    RequestTime,
    /// The peer that answered.
    UpstreamAddr,
    /// The status the peer answered with.
    UpstreamStatus,
    /// Seconds spent connecting to the peer that answered.
    UpstreamConnectTime,
    /// Seconds from the first try to the peer's response head.
    UpstreamTime,
    /// What the route's cache did.
    CacheStatus,
    /// The route's name.
    Route,
    /// The request's id.
    RequestId,
    /// The client's `User-Agent`.
    UserAgent,
    /// The client's `Referer`.
    Referer,
    /// Whether the response body was abandoned before its end.
    Aborted,
    /// The request's W3C trace id under `[tracing]` (not in the default
    /// list).
    TraceId,
    /// `$consumer`: who an authentication policy recognised (not in the
    /// default list).
    Consumer,
}

impl Field {
    /// Every field, in the default order: what was asked, what was
    /// answered, the upstream's part, then the request's identity.
    pub const ALL: [Field; 20] = [
        Field::Timestamp,
        Field::Client,
        Field::Method,
        Field::Uri,
        Field::Host,
        Field::Protocol,
        Field::Status,
        Field::Bytes,
        Field::BytesReceived,
        Field::RequestTime,
        Field::UpstreamAddr,
        Field::UpstreamStatus,
        Field::UpstreamConnectTime,
        Field::UpstreamTime,
        Field::CacheStatus,
        Field::Route,
        Field::RequestId,
        Field::UserAgent,
        Field::Referer,
        Field::Aborted,
    ];

    /// Fields that `access_log_fields` may name but the default line
    /// leaves out (a log without `[tracing]` would hold only nulls).
    pub const OPTIONAL: [Field; 2] = [Field::TraceId, Field::Consumer];

    /// The field's name: its key in the JSON line and in `access_log_fields`.
    pub const fn name(self) -> &'static str {
        match self {
            Field::Timestamp => "timestamp",
            Field::Client => "client",
            Field::Method => "method",
            Field::Uri => "uri",
            Field::Host => "host",
            Field::Protocol => "protocol",
            Field::Status => "status",
            Field::Bytes => "bytes",
            Field::BytesReceived => "bytes_received",
            Field::RequestTime => "request_time",
            Field::UpstreamAddr => "upstream_addr",
            Field::UpstreamStatus => "upstream_status",
            Field::UpstreamConnectTime => "upstream_connect_time",
            Field::UpstreamTime => "upstream_time",
            Field::CacheStatus => "cache_status",
            Field::Route => "route",
            Field::RequestId => "request_id",
            Field::UserAgent => "user_agent",
            Field::Referer => "referer",
            Field::Aborted => "aborted",
            Field::TraceId => "trace_id",
            Field::Consumer => "consumer",
        }
    }

    /// The field called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Field> {
        (Field::ALL.into_iter().chain(Field::OPTIONAL)).find(|f| f.name() == name)
    }

    /// Every field's name, comma-separated (for the error naming an
    /// unknown one).
    pub fn names() -> String {
        let all = Field::ALL.into_iter().chain(Field::OPTIONAL);
        all.map(Field::name).collect::<Vec<_>>().join(", ")
    }

    const fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// A set of fields, tested per request without touching the list (a
/// request copies a value, a header say, only when its field is chosen).
/// Empty when the log is off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FieldSet(u32);

impl FieldSet {
    /// No field: the log is off.
    pub const NONE: FieldSet = FieldSet(0);

    /// The set of `fields`.
    pub fn of(fields: &[Field]) -> FieldSet {
        FieldSet(fields.iter().fold(0, |bits, f| bits | f.bit()))
    }

    /// Whether `field` is in the set.
    pub fn has(self, field: Field) -> bool {
        self.0 & field.bit() != 0
    }

    /// Whether the set is empty (no line is written).
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The set as bits (to keep it in an atomic).
    pub(super) fn bits(self) -> u32 {
        self.0
    }

    /// The set of these bits.
    pub(super) fn from_bits(bits: u32) -> FieldSet {
        FieldSet(bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for f in Field::ALL.into_iter().chain(Field::OPTIONAL) {
            assert_eq!(Field::from_name(f.name()), Some(f));
            assert!(seen.insert(f.name()), "{} twice", f.name());
        }
        assert_eq!(Field::from_name("time"), None);
        assert_eq!(Field::from_name("Host"), None);
        assert!(Field::names().starts_with("timestamp, client, method, uri, host"));
    }

    #[test]
    fn a_set_holds_what_it_was_made_of() {
        let set = FieldSet::of(&[Field::Host, Field::Aborted]);
        assert!(set.has(Field::Host) && set.has(Field::Aborted));
        assert!(!set.has(Field::Timestamp) && !set.has(Field::UserAgent));
        assert!(!set.is_empty());
        assert!(FieldSet::NONE.is_empty());
        assert_eq!(FieldSet::from_bits(set.bits()), set);
        let all = FieldSet::of(&Field::ALL);
        assert!(Field::ALL.iter().all(|&f| all.has(f)));
    }
}
