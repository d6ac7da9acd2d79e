//! `GET /` of the admin listener: the status page, one HTML document
//! rendered here from the same [`Report`] `/status` serialises. Every value
//! is escaped (names come from conf.d). Its inline script (`page.js`)
//! fetches `/status` every 2 s and renders the same markup again from the
//! JSON, so the two renderers here and there must agree; without
//! JavaScript the page is complete, just not refreshed. No external
//! asset: the CSS and the script are inline (and the response's CSP
//! allows nothing else).

use std::fmt::Write;

use super::status::{PeerReport, Report, UpstreamReport};
use crate::error_page::escape;

/// The style sheet.
const CSS: &str = include_str!("page.css");

/// The refresh script: the same rendering, from `/status`'s JSON.
const SCRIPT: &str = include_str!("page.js");

/// The `Content-Security-Policy` of the page: its own inline style and
/// script, fetches to this listener only, nothing else.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The whole page.
pub fn render(report: &Report) -> String {
    let mut out = String::with_capacity(16 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    out.push_str("<title>moongate status</title><style>");
    out.push_str(CSS);
    out.push_str("</style></head>\n<body><header><h1>moongate</h1>");
    out.push_str(
        "<span id=\"live\" class=\"muted\">as of the page load; reload for new figures</span>",
    );
    out.push_str("</header>\n<main id=\"report\">");
    out.push_str(&body(report));
    out.push_str("</main>\n<script>");
    out.push_str(SCRIPT);
    out.push_str("</script></body></html>\n");
    out
}

/// The report's sections (what the script replaces on each refresh).
pub fn body(r: &Report) -> String {
    let mut o = String::new();
    overview(&mut o, r);
    upstreams(&mut o, r);
    routes(&mut o, r);
    workers(&mut o, r);
    caches(&mut o, r);
    limits(&mut o, r);
    o
}

fn overview(o: &mut String, r: &Report) {
    let _ = write!(
        o,
        "<section id=\"overview\"><h2>Overview</h2><dl class=\"cards\">\
         <div><dt>Generation</dt><dd id=\"generation\">{}</dd></div>\
         <div><dt>Requests (last minute)</dt><dd id=\"rate\">{}</dd></div>\
         <div><dt>5xx share</dt><dd id=\"errors\">{}</dd></div>\
         <div><dt>Uptime</dt><dd>{}</dd></div>\
         <div><dt>Threads</dt><dd>{}</dd></div>\
         <div><dt>Version</dt><dd>{}</dd></div>\
         <div><dt>Pid</dt><dd id=\"pid\">{}</dd></div></dl>",
        r.generation,
        per_sec(r.rates.requests_per_sec),
        ratio(r.rates.error_ratio),
        duration(r.uptime_secs),
        r.threads,
        escape(r.version),
        r.pid,
    );
    o.push_str("<p id=\"reload\">Last reload: ");
    match &r.reload.last {
        None => o.push_str("none"),
        Some(last) => {
            let (class, word) = if last.ok {
                ("st-up", "ok")
            } else {
                ("st-down", "failed")
            };
            let _ = write!(
                o,
                "<span class=\"{class}\">{word}</span> ({}) at {} ({}), generation {}; \
                 {} ok, {} failed since start",
                escape(&last.trigger),
                timestamp(last.at.saturating_mul(1000)),
                ago(r.time_unix_ms, last.at.saturating_mul(1000)),
                last.generation,
                r.reload.reloads,
                r.reload.failures,
            );
            if let Some(error) = &last.error {
                let _ = write!(o, "<pre class=\"error\">{}</pre>", escape(error));
            }
        }
    }
    o.push_str("</p>");
    if let Some(last) = &r.upgrade.last {
        let (class, word) = if last.ok {
            ("st-up", "handed over")
        } else {
            ("st-down", "failed")
        };
        let _ = write!(
            o,
            "<p id=\"upgrade\">Last binary upgrade: <span class=\"{class}\">{word}</span> at {} ({})",
            timestamp(last.at.saturating_mul(1000)),
            ago(r.time_unix_ms, last.at.saturating_mul(1000)),
        );
        if let Some(error) = &last.error {
            let _ = write!(o, "<pre class=\"error\">{}</pre>", escape(error));
        }
        o.push_str("</p>");
    }
    o.push_str("<p class=\"muted\">Listeners: ");
    let listeners: Vec<String> = (r.listeners.iter())
        .map(|l| format!("{}://{}", l.scheme, l.addr))
        .collect();
    o.push_str(&escape(&list(&listeners, "none")));
    o.push_str(". Files: ");
    o.push_str(&escape(&list(&r.files, "none")));
    o.push_str(".</p></section>");
}

fn upstreams(o: &mut String, r: &Report) {
    o.push_str("<section id=\"upstreams\"><h2>Upstreams</h2>");
    if r.upstreams.is_empty() {
        o.push_str("<p class=\"muted\">none</p>");
    }
    for (name, up) in &r.upstreams {
        let _ = write!(
            o,
            "<h3>{}</h3><p class=\"muted\">{}</p><table><thead><tr><th>peer</th><th>state</th>\
             <th>passive fails</th><th>active check</th><th>last check</th><th>in flight</th>\
             <th>weight</th></tr></thead><tbody>",
            escape(name),
            escape(&upstream_line(up)),
        );
        for peer in &up.peers {
            peer_row(o, name, peer, r.time_unix_ms);
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section>");
}

/// Balance, protocol and checks, in a line.
fn upstream_line(up: &UpstreamReport) -> String {
    let checks = match &up.health {
        None => "passive health only".to_owned(),
        Some(c) => format!(
            "{} checks{} every {} ms (timeout {} ms, out after {} fails, back after {} passes)",
            c.kind,
            c.path
                .as_ref()
                .map(|p| format!(" of {p}"))
                .unwrap_or_default(),
            c.interval_ms,
            c.timeout_ms,
            c.fails,
            c.passes
        ),
    };
    format!("{}, {}, {checks}", up.balance, up.protocol)
}

fn peer_row(o: &mut String, upstream: &str, p: &PeerReport, now_ms: u64) {
    let h = &p.health;
    let state = match h.reason {
        Some(reason) => format!("{} ({reason})", h.state),
        None => h.state.to_owned(),
    };
    let retry = h
        .retry_in_ms
        .map(|ms| format!(", retried in {ms} ms"))
        .unwrap_or_default();
    let (check, last) = match &h.check {
        None => ("-".to_owned(), "-".to_owned()),
        Some(c) => {
            let mut check = format!(
                "{}, {} fails, {} passes in a row",
                c.state, c.fails, c.passes
            );
            if let Some(e) = &c.error {
                let _ = write!(check, ": {e}");
            }
            (check, ago(now_ms, c.last_check_unix_ms))
        }
    };
    let name = if p.name == p.addr {
        p.addr.clone()
    } else {
        format!("{} ({})", p.name, p.addr)
    };
    let _ = write!(
        o,
        "<tr class=\"peer\" data-upstream=\"{}\" data-peer=\"{}\"><td>{}{}</td>\
         <td class=\"state st-{}\">{}</td><td>{}{}</td><td class=\"check\">{}</td><td>{}</td>\
         <td>{}</td><td>{}</td></tr>",
        escape(upstream),
        escape(&p.addr),
        escape(&name),
        if p.backup { " <em>backup</em>" } else { "" },
        escape(h.state),
        escape(&state),
        h.fails,
        escape(&retry),
        escape(&check),
        escape(&last),
        h.active,
        p.weight,
    );
}

fn routes(o: &mut String, r: &Report) {
    o.push_str(
        "<section id=\"routes\"><h2>Routes</h2><table><thead><tr><th>name</th><th>match</th>\
         <th>to</th><th>policies</th><th>limits</th><th>cache</th><th>requests/s</th>\
         <th>5xx</th></tr></thead><tbody>",
    );
    for route in &r.routes {
        let s = &route.route;
        let hosts = list(&s.hosts, "*");
        let methods = s
            .methods
            .as_deref()
            .map_or("any".to_owned(), |m| m.join(" "));
        let mut to = format!("{} {}", s.target, s.to);
        if let Some(rw) = &s.rewrite {
            let _ = write!(to, " (rewrite {rw})");
        }
        let mut policies = s.policies.clone();
        policies.extend(s.lua.iter().map(|phase| format!("lua.{phase}")));
        let _ = write!(
            o,
            "<tr class=\"route\"><td>{}</td><td>{} {} {} {}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.name),
            escape(&hosts),
            escape(&methods),
            escape(s.path_kind),
            escape(&s.path),
            escape(to.trim_end()),
            escape(&list(&policies, "-")),
            escape(&list(&s.limits, "-")),
            escape(s.cache.as_deref().unwrap_or("-")),
            per_sec(route.rate.requests_per_sec),
            ratio(route.rate.error_ratio),
        );
    }
    o.push_str("</tbody></table></section>");
}

fn workers(o: &mut String, r: &Report) {
    if r.workers.is_empty() {
        return;
    }
    o.push_str("<section id=\"workers\"><h2>Managed workers</h2>");
    for (name, pool) in &r.workers {
        let _ = write!(
            o,
            "<h3>{} <span class=\"st-{}\">{}</span></h3><p class=\"muted\">{} &times; {}; \
             generation {}; {} restarts</p>",
            escape(name),
            escape(pool.state),
            escape(pool.state),
            pool.count,
            escape(&pool.command.join(" ")),
            pool.generation,
            pool.restarts,
        );
        if let Some(e) = &pool.last_error {
            let _ = write!(o, "<pre class=\"error\">{}</pre>", escape(e));
        }
        o.push_str(
            "<table><thead><tr><th>#</th><th>pid</th><th>state</th><th>generation</th>\
             <th>uptime</th><th>requests</th><th>restarts</th><th>address</th></tr></thead><tbody>",
        );
        for w in &pool.workers {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td class=\"st-{}\">{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td></tr>",
                w.id,
                w.pid,
                escape(w.state),
                escape(w.state),
                w.generation,
                duration(w.uptime_secs),
                w.requests,
                w.restarts,
                escape(&w.addr),
            );
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section>");
}

fn caches(o: &mut String, r: &Report) {
    if r.caches.is_empty() {
        return;
    }
    o.push_str(
        "<section id=\"caches\"><h2>Cache zones</h2><table><thead><tr><th>zone</th>\
         <th>memory</th><th>disk</th><th>hit ratio</th><th>lookups</th><th>stores</th>\
         </tr></thead><tbody>",
    );
    for (name, z) in &r.caches {
        let disk = z.disk.map_or("-".to_owned(), |d| {
            format!(
                "{} entries, {} of {}",
                d.entries,
                bytes(d.bytes),
                bytes(d.max_bytes)
            )
        });
        let l = &z.lookups;
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{} entries, {} of {}</td><td>{}</td><td>{}</td>\
             <td>{} hit, {} miss, {} expired, {} stale, {} updating, {} revalidated, {} bypass</td>\
             <td>{}</td></tr>",
            escape(name),
            z.memory.entries,
            bytes(z.memory.bytes),
            bytes(z.memory.max_bytes),
            escape(&disk),
            ratio(z.hit_ratio),
            l.hit,
            l.miss,
            l.expired,
            l.stale,
            l.updating,
            l.revalidated,
            l.bypass,
            z.stores,
        );
    }
    o.push_str("</tbody></table></section>");
}

fn limits(o: &mut String, r: &Report) {
    if r.limits.is_empty() {
        return;
    }
    o.push_str(
        "<section id=\"limits\"><h2>Limit zones</h2><table><thead><tr><th>zone</th>\
         <th>limit</th><th>key</th><th>scope</th><th>redis</th></tr></thead><tbody>",
    );
    for (name, z) in &r.limits {
        let redis = match &z.redis {
            None => "-".to_owned(),
            Some(h) => {
                let mut s = format!(
                    "{}, {} fallbacks (on error: {})",
                    h.state,
                    h.fallbacks,
                    z.on_redis_error.unwrap_or("-")
                );
                if let Some(e) = &h.last_error {
                    let _ = write!(s, "; last error: {e}");
                }
                s
            }
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            escape(z.kind),
            escape(&z.limit),
            escape(&z.key),
            escape(z.scope),
            escape(&redis),
        );
    }
    o.push_str("</tbody></table></section>");
}

/// `items` joined by ", ", or `empty`.
fn list(items: &[String], empty: &str) -> String {
    if items.is_empty() {
        empty.to_owned()
    } else {
        items.join(", ")
    }
}

/// `3.2/s`.
fn per_sec(rate: f64) -> String {
    format!("{rate:.1}/s")
}

/// `12.5 %`, or `-` without requests.
fn ratio(ratio: Option<f64>) -> String {
    ratio.map_or("-".to_owned(), |r| format!("{:.1} %", r * 100.0))
}

/// `1536 KiB`-style sizes, one decimal.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `2 h 5 min`, `3 min 20 s`, `42 s`.
fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// How long before `now_ms` `then_ms` was: `4 s ago`.
fn ago(now_ms: u64, then_ms: u64) -> String {
    format!(
        "{} ago",
        duration(now_ms.saturating_sub(then_ms) as f64 / 1000.0)
    )
}

/// `2025-06-01 12:00:00 UTC`.
fn timestamp(unix_ms: u64) -> String {
    i64::try_from(unix_ms / 1000)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(
            || "?".to_owned(),
            |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(256 << 20), "256.0 MiB");
        assert_eq!(duration(42.9), "42 s");
        assert_eq!(duration(200.0), "3 min 20 s");
        assert_eq!(duration(7500.0), "2 h 5 min");
        assert_eq!(ago(10_000, 6_000), "4 s ago");
        assert_eq!(
            ago(1_000, 6_000),
            "0 s ago",
            "a clock step back is not negative"
        );
        assert_eq!(ratio(Some(0.125)), "12.5 %");
        assert_eq!(ratio(None), "-");
        assert_eq!(timestamp(1_748_779_200_000), "2025-06-01 12:00:00 UTC");
    }
}
