//! `[server]` → [`Server`]: plain listeners and server-wide limits, nginx defaults for the
//! rest. Listen addresses themselves are parsed in `listeners`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::paths::Paths;
use crate::access_log::Field;
use crate::config::error::{ConfigError, Place, Source};
use crate::config::file::{RawFile, RawServer};
use crate::config::model::{AccessLog, ErrorFormat, Listen, Server};

/// The plain-HTTP listener used when `[server]` sets no `listen`.
pub(super) const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8080);
/// The place reported for a listener nobody wrote down.
pub(super) const DEFAULT_PLACE: &str = "(built-in default)";
/// `max_header_size` bounds: below 1KiB nothing real fits, above 1MiB is an attack surface.
const HEADER_SIZE_RANGE: std::ops::RangeInclusive<u64> = 1024..=1024 * 1024;
/// `max_header_count` bounds (nginx has no such limit; hyper's default is 100).
const HEADER_COUNT_RANGE: std::ops::RangeInclusive<u64> = 8..=1000;
/// The default `max_header_count`.
const DEFAULT_HEADER_COUNT: usize = 100;

/// `[server]` from the one file that sets its keys, or every default when none does.
pub(super) fn server(
    parsed: &[(&Source<'_>, &RawFile)],
    paths: &Paths,
) -> Result<Server, ConfigError> {
    let found = super::only_one(parsed, "[server]", |raw| {
        raw.server.as_ref().filter(|s| s.get_ref().sets_keys())
    })?;
    let Some((src, def)) = found else {
        return server_from(
            None,
            &RawServer::default(),
            Place::whole(DEFAULT_PLACE),
            paths,
        );
    };
    server_from(Some(src), def.get_ref(), src.place(def.span()), paths)
}

/// Fills in defaults; `src` is `None` only for the all-defaults case, and `table` is where
/// a defaulted `listen` is reported.
fn server_from(
    src: Option<&Source<'_>>,
    raw: &RawServer,
    table: Place,
    paths: &Paths,
) -> Result<Server, ConfigError> {
    let dur = |v: Option<crate::config::units::Dur>, default: u64| {
        v.map_or(Duration::from_secs(default), |d| d.0)
    };
    let listen = match (src, &raw.listen) {
        (Some(src), Some(list)) => list
            .get_ref()
            .iter()
            .map(|s| super::listeners::listen(src, s))
            .collect::<Result<_, _>>()?,
        _ => vec![Listen {
            addr: DEFAULT_LISTEN,
            place: table,
        }],
    };
    let max_header_size = match (src, &raw.max_header_size) {
        (Some(src), Some(size)) if !HEADER_SIZE_RANGE.contains(&size.get_ref().0) => {
            let message = format!(
                "`max_header_size` must be between 1KiB and 1MiB, found {} bytes",
                size.get_ref().0
            );
            return Err(src.err(size.span(), message));
        }
        (_, Some(size)) => size.get_ref().0 as usize,
        (_, None) => 16 * 1024,
    };
    let max_header_count = match (src, &raw.max_header_count) {
        (Some(src), Some(n)) if !HEADER_COUNT_RANGE.contains(n.get_ref()) => {
            let message = format!(
                "`max_header_count` must be between {} and {}, found {}",
                HEADER_COUNT_RANGE.start(),
                HEADER_COUNT_RANGE.end(),
                n.get_ref()
            );
            return Err(src.err(n.span(), message));
        }
        (_, Some(n)) => *n.get_ref() as usize,
        (_, None) => DEFAULT_HEADER_COUNT,
    };
    let client_max_body_size = match raw.client_max_body_size {
        Some(size) if size.0 == 0 => u64::MAX,
        Some(size) => size.0,
        None => 1024 * 1024,
    };
    let mut trusted_proxies = Vec::new();
    let mut access_log = AccessLog::Stdout;
    let mut access_log_fields = Field::ALL.to_vec();
    let mut pid_file = None;
    let mut error_format = ErrorFormat::Auto;
    if let Some(src) = src {
        if let Some(format) = &raw.error_format {
            error_format = match format.get_ref().as_str() {
                "auto" => ErrorFormat::Auto,
                "json" => ErrorFormat::Json,
                "html" => ErrorFormat::Html,
                other => {
                    let message = format!(
                        "`error_format` must be \"auto\", \"json\" or \"html\", found \"{other}\""
                    );
                    return Err(src.err(format.span(), message));
                }
            };
        }
        for entry in raw.trusted_proxies.iter().flatten() {
            trusted_proxies.push(proxy_net(entry.get_ref()).map_err(|m| src.err(entry.span(), m))?);
        }
        if let Some(log) = &raw.access_log {
            access_log = match log.get_ref().as_str() {
                "off" => AccessLog::Off,
                "stdout" => AccessLog::Stdout,
                "" => {
                    let message = "`access_log` is empty; write \"off\", \"stdout\" or a file path";
                    return Err(src.err(log.span(), message));
                }
                path => AccessLog::File(paths.resolve(path)),
            };
        }
        if let Some(list) = &raw.access_log_fields {
            access_log_fields = log_fields(src, list)?;
        }
        if let Some(pid) = &raw.pid_file {
            if pid.get_ref().is_empty() {
                return Err(src.err(
                    pid.span(),
                    "`pid_file` is empty; give a path or leave it out",
                ));
            }
            pid_file = Some(paths.resolve(pid.get_ref()));
        }
    }
    Ok(Server {
        listen,
        workers: raw.workers.and_then(|w| w.0),
        server_tokens: raw.server_tokens.unwrap_or(false),
        error_format,
        client_header_timeout: dur(raw.client_header_timeout, 10),
        client_body_timeout: dur(raw.client_body_timeout, 30),
        keepalive_timeout: dur(raw.keepalive_timeout, 75),
        send_timeout: dur(raw.send_timeout, 30),
        max_header_size,
        max_header_count,
        underscores_in_headers: raw.underscores_in_headers.unwrap_or(false),
        client_max_body_size,
        shutdown_timeout: dur(raw.shutdown_timeout, 30),
        trusted_proxies,
        access_log,
        access_log_fields,
        pid_file,
    })
}

/// `access_log_fields`: known names, each once, at least one.
fn log_fields(
    src: &Source<'_>,
    list: &toml::Spanned<Vec<toml::Spanned<String>>>,
) -> Result<Vec<Field>, ConfigError> {
    if list.get_ref().is_empty() {
        let message =
            "`access_log_fields` is empty; name at least one field, or write access_log = \"off\"";
        return Err(src.err(list.span(), message));
    }
    let mut fields = Vec::with_capacity(list.get_ref().len());
    for name in list.get_ref() {
        let Some(field) = Field::from_name(name.get_ref()) else {
            let message = format!(
                "`access_log_fields`: unknown field \"{}\"; the fields are: {}",
                name.get_ref(),
                Field::names()
            );
            return Err(src.err(name.span(), message));
        };
        if fields.contains(&field) {
            let message = format!("`access_log_fields` names \"{}\" twice", name.get_ref());
            return Err(src.err(name.span(), message));
        }
        fields.push(field);
    }
    Ok(fields)
}

/// A trusted proxy: a CIDR, or a plain IP meaning just that address.
fn proxy_net(text: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(net) = text.parse::<ipnet::IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>().map(ipnet::IpNet::from).map_err(|_| {
        format!("trusted proxy \"{text}\" is not an IP address or a CIDR like \"10.0.0.0/8\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    use crate::config::rejected as err;

    #[test]
    fn defaults_without_any_server_table() {
        let c = load_str("t.toml", "").unwrap();
        let s = &c.server;
        assert_eq!(s.listen.len(), 1);
        assert_eq!(s.listen[0].addr, DEFAULT_LISTEN);
        assert_eq!(s.listen[0].place, Place::whole(DEFAULT_PLACE));
        assert_eq!(s.workers, None);
        assert!(!s.server_tokens);
        assert_eq!(s.error_format, ErrorFormat::Auto);
        assert_eq!(s.client_header_timeout, Duration::from_secs(10));
        assert_eq!(s.client_body_timeout, Duration::from_secs(30));
        assert_eq!(s.keepalive_timeout, Duration::from_secs(75));
        assert_eq!(s.send_timeout, Duration::from_secs(30));
        assert_eq!(s.max_header_size, 16 * 1024);
        assert_eq!(s.max_header_count, 100);
        assert!(!s.underscores_in_headers);
        assert_eq!(s.client_max_body_size, 1024 * 1024);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(30));
        assert!(s.trusted_proxies.is_empty());
        assert_eq!(s.access_log, AccessLog::Stdout);
        assert_eq!(s.access_log_fields, Field::ALL);
        assert_eq!(s.pid_file, None);
        assert!(c.tls.is_empty() && c.admin.is_none() && c.upstreams.is_empty());
        assert_eq!(c.files, [std::path::PathBuf::from("t.toml")]);
    }

    #[test]
    fn every_server_key_is_read() {
        let c = load_str(
            "t.toml",
            r#"
            [server]
            listen = ["0.0.0.0:80", "[::1]:8080", "127.0.0.1:0", "127.0.0.2:0"]
            workers = 3
            server_tokens = true
            error_format = "html"
            client_header_timeout = "2s"
            client_body_timeout = "3s"
            keepalive_timeout = "0"
            send_timeout = "250ms"
            max_header_size = "8k"
            max_header_count = 40
            underscores_in_headers = true
            client_max_body_size = "0"
            shutdown_timeout = "1m"
            trusted_proxies = ["10.1.2.3/8", "192.168.0.7", "fd00::/8"]
            access_log = "/var/log/moongate/access.log"
            access_log_fields = ["status", "host", "timestamp"]
            pid_file = "/run/moongate.pid"
            "#,
        )
        .unwrap();
        let s = c.server;
        let addrs: Vec<String> = s.listen.iter().map(|l| l.addr.to_string()).collect();
        assert_eq!(
            addrs,
            ["0.0.0.0:80", "[::1]:8080", "127.0.0.1:0", "127.0.0.2:0"]
        );
        assert_eq!(s.listen[1].place.to_string(), "t.toml:3:37");
        assert_eq!(s.workers, Some(3));
        assert!(s.server_tokens);
        assert_eq!(s.error_format, ErrorFormat::Html);
        assert_eq!(s.client_header_timeout, Duration::from_secs(2));
        assert_eq!(s.client_body_timeout, Duration::from_secs(3));
        assert_eq!(s.keepalive_timeout, Duration::ZERO);
        assert_eq!(s.send_timeout, Duration::from_millis(250));
        assert_eq!(s.max_header_size, 8192);
        assert_eq!(s.max_header_count, 40);
        assert!(s.underscores_in_headers);
        assert_eq!(s.client_max_body_size, u64::MAX);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(60));
        let nets: Vec<String> = s.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.0.0.0/8", "192.168.0.7/32", "fd00::/8"]);
        assert_eq!(
            s.access_log,
            AccessLog::File("/var/log/moongate/access.log".into())
        );
        assert_eq!(
            s.access_log_fields,
            [Field::Status, Field::Host, Field::Timestamp]
        );
        assert_eq!(s.pid_file, Some("/run/moongate.pid".into()));
        assert_eq!(
            load_str("t", "[server]\naccess_log = \"off\"")
                .unwrap()
                .server
                .access_log,
            AccessLog::Off
        );
        assert_eq!(
            load_str("t", "[server]\nerror_format = \"json\"")
                .unwrap()
                .server
                .error_format,
            ErrorFormat::Json
        );
        let e = err("[server]\nerror_format = \"xml\"\n");
        assert!(e.contains("t.toml:2:16") && e.contains("\"xml\""), "{e}");
    }

    #[test]
    fn server_without_listen_defaults_at_the_table() {
        let c = load_str("t.toml", "\n[server]\nworkers = \"auto\"\n").unwrap();
        assert_eq!(c.server.listen[0].addr, DEFAULT_LISTEN);
        assert_eq!(c.server.listen[0].place.to_string(), "t.toml:2:1");
    }

    #[test]
    fn server_value_checks() {
        let e = err("[server]\nmax_header_size = \"2MiB\"\n");
        assert_eq!(
            e,
            "t.toml:2:19: `max_header_size` must be between 1KiB and 1MiB, found 2097152 bytes"
        );
        assert!(load_str("t", "[server]\nmax_header_size = \"1MiB\"").is_ok());
        assert!(err("[server]\nmax_header_size = 1023\n").contains("between 1KiB and 1MiB"));
        assert_eq!(
            err("[server]\nmax_header_count = 5000\n"),
            "t.toml:2:20: `max_header_count` must be between 8 and 1000, found 5000"
        );
        let e = err("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"proxy.lan\"]\n");
        assert_eq!(
            e,
            "t.toml:2:34: trusted proxy \"proxy.lan\" is not an IP address or a CIDR like \"10.0.0.0/8\""
        );
        assert!(
            err("[server]\naccess_log = \"\"\n").starts_with("t.toml:2:14: `access_log` is empty")
        );
        let e = err("[server]\naccess_log_fields = [\"host\", \"time\"]\n");
        assert!(
            e.starts_with("t.toml:2:30: `access_log_fields`: unknown field \"time\"; the fields are: timestamp, client,"),
            "{e}"
        );
        assert!(
            e.contains("user_agent") && e.ends_with("trace_id, consumer"),
            "{e}"
        );
        let e = err("[server]\naccess_log_fields = [\"host\", \"host\"]\n");
        assert_eq!(e, "t.toml:2:30: `access_log_fields` names \"host\" twice");
        let e = err("[server]\naccess_log_fields = []\n");
        assert!(
            e.starts_with("t.toml:2:21: `access_log_fields` is empty"),
            "{e}"
        );
        assert!(err("[server]\npid_file = \"\"\n").starts_with("t.toml:2:12: `pid_file` is empty"));
        let e = err("[server]\nkeepalive_timeout = 75\n");
        assert!(e.starts_with("t.toml:2:21: `keepalive_timeout` in [server]: write durations as strings like \"30s\""), "{e}");
        let e = err("[server]\nworkers = 0\n");
        assert_eq!(
            e,
            "t.toml:2:11: `workers` in [server] must be \"auto\" or a whole number of 1 or more, found the number 0"
        );
    }
}
