//! `limit_req_zone`, `limit_conn_zone` and `proxy_cache_path`, and the
//! `[limit.NAME]` / `[cache.NAME]` zones the locations using them need.
//!
//! nginx's `burst` belongs to each `limit_req`, moongate's to the zone:
//! a zone used with two bursts becomes two zones. nginx's leaky bucket
//! lets `1 + burst` requests through at once; that is a token bucket of
//! `burst + 1`. nginx refuses with 503 and sends no rate-limit headers
//! unless told, so the zones say so.

use toml::Value;
use toml::value::Table as TomlTable;

use super::super::model::{Named, Table};
use super::super::parse::{Directive, Pos};
use super::super::report::Severity;
use super::super::values::{duration, mg_template, size};
use super::Tx;
use super::scope::{LimitUse, Scope};

/// A `limit_req_zone` / `limit_conn_zone`.
#[derive(Debug, Clone)]
pub struct ZoneDef {
    /// The key, as a moongate template (`None`: not translatable, noted).
    pub key: Option<String>,
    /// `rate=`, as moongate writes it (`10/s`); req zones only.
    pub rate: Option<String>,
}

/// A `proxy_cache_path`.
#[derive(Debug, Clone)]
pub struct CacheDef {
    /// Where it is defined.
    pub pos: Pos,
    /// The directory moongate's disk tier uses (beside nginx's).
    pub path: String,
    /// `max_size=`, as moongate writes it.
    pub max_size: Option<(String, u64)>,
}

/// A cache zone's settings, from the first location that uses it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CacheSettings {
    /// `default_ttl` (from `proxy_cache_valid`).
    pub ttl: Option<String>,
    /// `key`.
    pub key: Option<String>,
    /// `lock`.
    pub lock: Option<bool>,
    /// `methods`.
    pub methods: Option<Vec<String>>,
}

/// The moongate L1 size when nginx's `max_size` says nothing smaller.
const MEMORY: u64 = 256 << 20;

impl Tx<'_> {
    /// `limit_req_zone KEY zone=NAME:SIZE rate=R`.
    pub(super) fn limit_req_zone(&mut self, d: &Directive) {
        let Some((name, key, rest)) = self.zone_args(d) else {
            return;
        };
        let rate = rest
            .iter()
            .find_map(|a| a.strip_prefix("rate="))
            .and_then(|r| {
                let (n, per) = r.split_once("r/")?;
                let n: u64 = n.parse().ok()?;
                matches!(per, "s" | "m").then(|| format!("{n}/{per}"))
            });
        if rate.is_none() {
            self.note_d(d, Severity::NotTranslated, "no rate=Nr/s or rate=Nr/m");
            return;
        }
        self.zones.insert(name, ZoneDef { key, rate });
    }

    /// `limit_conn_zone KEY zone=NAME:SIZE`.
    pub(super) fn limit_conn_zone(&mut self, d: &Directive) {
        if let Some((name, key, _)) = self.zone_args(d) {
            self.conn_zones.insert(name, ZoneDef { key, rate: None });
        }
    }

    fn zone_args(&mut self, d: &Directive) -> Option<(String, Option<String>, Vec<String>)> {
        let args: Vec<String> = d.args.iter().map(|a| a.text.clone()).collect();
        let zone = args.iter().find_map(|a| a.strip_prefix("zone="));
        let (Some(key), Some(zone)) = (args.first(), zone) else {
            self.note_d(d, Severity::NotTranslated, "needs a key and zone=NAME:SIZE");
            return None;
        };
        let name = zone.split(':').next().unwrap_or(zone).to_owned();
        let key = match mg_template(key) {
            Ok(k) => Some(k),
            Err(var) => {
                let why = format!(
                    "{var} cannot be a moongate limit key; the zone's limits are not translated"
                );
                self.note_d(d, Severity::NotTranslated, why);
                None
            }
        };
        let rest = args
            .iter()
            .skip(1)
            .filter(|a| !a.starts_with("zone="))
            .cloned()
            .collect();
        Some((name, key, rest))
    }

    /// `proxy_cache_path PATH levels=.. keys_zone=NAME:SIZE max_size=..`.
    pub(super) fn proxy_cache_path(&mut self, d: &Directive) {
        let args: Vec<&str> = d.args.iter().map(|a| a.text.as_str()).collect();
        let Some((path, params)) = args.split_first() else {
            self.note_d(d, Severity::NotTranslated, "no path");
            return;
        };
        let mut name = None;
        let mut max_size = None;
        let mut dropped = Vec::new();
        for p in params {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match k {
                "keys_zone" => name = Some(v.split(':').next().unwrap_or(v).to_owned()),
                "max_size" => match size(v) {
                    Ok(s) => max_size = Some(s),
                    Err(e) => self.note_d(d, Severity::NotTranslated, e),
                },
                "inactive" => self.note_d(
                    d,
                    Severity::Differs,
                    "moongate keeps an entry until it is stale past its windows or its space is needed (no `inactive`)",
                ),
                _ => dropped.push(*p),
            }
        }
        let Some(name) = name else {
            self.note_d(d, Severity::NotTranslated, "no keys_zone=NAME:SIZE");
            return;
        };
        if !dropped.is_empty() {
            let why = format!(
                "{}: nginx's file layout and cache manager; moongate's disk tier has its own",
                dropped.join(" ")
            );
            self.note_d(d, Severity::Unneeded, why);
        }
        let nginx_path = self.nginx_path(path, &d.pos, "proxy_cache_path");
        self.note_d(
            d,
            Severity::Differs,
            format!(
                "moongate's disk tier keeps its own files, in {nginx_path}-moongate (not nginx's, which nginx's cache manager would delete)"
            ),
        );
        self.caches.insert(
            name,
            CacheDef {
                pos: d.pos.clone(),
                path: format!("{nginx_path}-moongate"),
                max_size,
            },
        );
    }

    /// The `[limit.NAME]` for a `limit_req`.
    pub(super) fn limit_for(&mut self, lu: &LimitUse, scope: &Scope) -> Option<String> {
        let Some(zone) = self.zones.get(&lu.zone).cloned() else {
            let why = format!("no limit_req_zone named `{}`", lu.zone);
            self.note(
                &lu.pos,
                format!("limit_req zone={}", lu.zone),
                Severity::NotTranslated,
                why,
            );
            return None;
        };
        let (key, rate) = (zone.key?, zone.rate?);
        let status = scope.limit_req_status.unwrap_or(503);
        let size = lu.burst + 1;
        let mut table = Table::default();
        table.comment.push(format!(
            "limit_req zone={} burst={} ({})",
            lu.zone, lu.burst, lu.pos
        ));
        table.set("rate", rate);
        table.set("burst", size as i64);
        table.set("key", key);
        table.set("status", i64::from(status));
        table.set("headers", false);
        Some(self.limit_zone(&lu.zone, size * 1000 + u64::from(status), "rate", table))
    }

    /// The `[limit.NAME]` (kind = "conn") for a `limit_conn ZONE N`.
    pub(super) fn conn_limit_for(
        &mut self,
        zone_name: &str,
        max: u64,
        pos: &Pos,
        scope: &Scope,
    ) -> Option<String> {
        let Some(zone) = self.conn_zones.get(zone_name).cloned() else {
            let why = format!("no limit_conn_zone named `{zone_name}`");
            self.note(
                pos,
                format!("limit_conn {zone_name} {max}"),
                Severity::NotTranslated,
                why,
            );
            return None;
        };
        let status = scope.limit_conn_status.unwrap_or(503);
        let mut table = Table::default();
        table
            .comment
            .push(format!("limit_conn {zone_name} {max} ({pos})"));
        table.set("kind", "conn");
        table.set("max", max as i64);
        table.set("key", zone.key?);
        table.set("status", i64::from(status));
        Some(self.limit_zone(zone_name, max * 1000 + u64::from(status), "conn", table))
    }

    /// The zone named for an nginx zone and its per-use settings: the
    /// first use takes the nginx name, others a suffix.
    fn limit_zone(
        &mut self,
        nginx: &str,
        variant: u64,
        kind: &'static str,
        table: Table,
    ) -> String {
        if let Some((_, _, _, name)) = self
            .limit_uses
            .iter()
            .find(|(z, v, k, _)| z == nginx && *v == variant && *k == kind)
        {
            return name.clone();
        }
        let base = super::super::values::safe_name(nginx);
        let mut name = base.clone();
        let mut i = 2;
        while self.conf.limits.iter().any(|l| l.name == name) {
            name = format!("{base}-{i}");
            i += 1;
        }
        self.limit_uses
            .push((nginx.to_owned(), variant, kind, name.clone()));
        self.conf.limits.push(Named {
            name: name.clone(),
            table,
        });
        name
    }

    /// The cache zone a location's `proxy_cache` names, with the
    /// location's cache settings (the first location's win).
    pub(super) fn cache_for(&mut self, zone: &str, scope: &Scope, pos: &Pos) -> Option<String> {
        let Some(def) = self.caches.get(zone).cloned() else {
            let why = format!("no proxy_cache_path with keys_zone={zone}");
            self.note(
                pos,
                format!("proxy_cache {zone}"),
                Severity::NotTranslated,
                why,
            );
            return None;
        };
        let settings = self.cache_settings_of(scope);
        match self.cache_settings.get(zone) {
            Some((first, name)) => {
                let name = name.clone();
                if *first != settings {
                    let why = "moongate sets validity, key, lock and methods per cache zone: the first location's are used";
                    self.note(pos, format!("proxy_cache {zone}"), Severity::Differs, why);
                }
                Some(name)
            }
            None => {
                let base = super::super::values::safe_name(zone);
                let mut name = base.clone();
                let mut i = 2;
                while self.conf.caches.iter().any(|c| c.name == name) {
                    name = format!("{base}-{i}");
                    i += 1;
                }
                self.cache_settings
                    .insert(zone.to_owned(), (settings.clone(), name.clone()));
                let mut table = Table::default();
                table.comment.push(format!(
                    "proxy_cache_path ... keys_zone={zone} ({})",
                    def.pos
                ));
                let memory = def.max_size.as_ref().filter(|(_, b)| *b < MEMORY);
                table.set(
                    "memory",
                    memory.map_or_else(|| "256MiB".to_owned(), |(s, _)| s.clone()),
                );
                let mut disk = TomlTable::new();
                disk.insert("path".into(), Value::from(def.path.clone()));
                let disk_size = def
                    .max_size
                    .as_ref()
                    .map_or("1GiB".to_owned(), |(s, _)| s.clone());
                disk.insert("size".into(), Value::from(disk_size));
                table.set("disk", Value::Table(disk));
                if let Some(k) = settings.key {
                    table.set("key", k);
                }
                if let Some(t) = settings.ttl {
                    table.set("default_ttl", t);
                }
                if let Some(l) = settings.lock {
                    table.set("lock", l);
                }
                if let Some(m) = settings.methods {
                    table.set(
                        "methods",
                        m.into_iter().map(Value::from).collect::<Vec<_>>(),
                    );
                }
                self.conf.caches.push(Named {
                    name: name.clone(),
                    table,
                });
                Some(name)
            }
        }
    }

    fn cache_settings_of(&mut self, scope: &Scope) -> CacheSettings {
        let mut out = CacheSettings {
            lock: scope.cache.lock,
            methods: scope.cache.methods.clone(),
            ..CacheSettings::default()
        };
        if let Some((key, pos)) = &scope.cache.key {
            match mg_template(key) {
                Ok(k) => out.key = Some(k),
                Err(var) => {
                    let why = format!(
                        "{var} cannot be in a moongate cache key; the default $scheme$host$request_uri is used"
                    );
                    self.note(
                        pos,
                        format!("proxy_cache_key {key}"),
                        Severity::NotTranslated,
                        why,
                    );
                }
            }
        }
        for (codes, time, pos) in scope.cache.valid.get() {
            let summary = format!("proxy_cache_valid {} {time}", codes.join(" "));
            let plain = codes.is_empty()
                || codes
                    .iter()
                    .all(|c| matches!(c.as_str(), "200" | "301" | "302"));
            let Ok(t) = duration(time) else {
                self.note(pos, summary, Severity::NotTranslated, "not a time");
                continue;
            };
            if !plain {
                let why = "moongate's default_ttl applies to every storable status; per-status times are not kept";
                self.note(pos, summary.clone(), Severity::Differs, why);
            }
            if out.ttl.is_none() {
                out.ttl = Some(t);
            } else if out.ttl.as_deref() != Some(t.as_str()) {
                self.note(
                    pos,
                    summary,
                    Severity::Differs,
                    "moongate has one default_ttl per zone: the first is used",
                );
            }
        }
        out
    }
}
