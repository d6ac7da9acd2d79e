//! Cluster-wide token buckets in Redis, for `scope = "redis"` zones: every
//! node pointed at the same Redis takes from one bucket per key. That
//! Redis is one server (`[redis] url`) or a Redis Cluster (`[redis]
//! cluster`, its seed nodes); the take is the same for both.
//!
//! One take is one atomic server-side script ([`GCRA`]): it reads the
//! key's "theoretical arrival time", compares it with Redis's own clock
//! (`redis.call('TIME')`, so node clocks never matter), and either stores
//! the new one or refuses. It answers with what a local
//! [`crate::limit::Buckets`] take answers (allowed or not,
//! remaining, retry-after, reset), so the same [`Decision`] and headers
//! come out. A key is `mg:{ZONE:KEY}`: one key per script, hash-tagged
//! (the slot is that of `ZONE:KEY`), so on a Redis Cluster the script runs
//! on the master that owns the key and different keys spread over the
//! masters; it expires when its bucket would be full again, so Redis holds
//! only keys active within one refill. The script goes by EVALSHA, and by
//! SCRIPT LOAD (to every master, on a cluster) and EVALSHA again when a
//! server lacks it.
//!
//! **Connections: one multiplexed connection per worker thread, made on
//! that thread the first time it takes.** Worker threads each run their
//! own current_thread runtime; a redis `ConnectionManager` (one server) or
//! `cluster_async::ClusterConnection` (a cluster: one connection per
//! master, routed by slot) spawns its driver and reconnect tasks on the
//! runtime it is created on. Created on the thread that uses it, the
//! connection's tasks run beside the requests that wait on it (no
//! cross-thread wake-up per take) and die with that runtime, and a stalled
//! thread cannot stall another's Redis calls. The cost is one connection
//! per worker thread per Redis node, as nginx workers have. Both kinds sit
//! behind one `Connection` enum ([`client`], which also makes them speak
//! TLS for `rediss://`), so the take has one code path. When a
//! connection breaks, it reconnects in the background (a cluster
//! connection also refreshes its slot map when a slot moves); meanwhile
//! takes fail or time out and the caller falls back.
//!
//! [`Health`] is per zone: whether Redis answered the last take, how many
//! takes fell back, and a probe gate so a node that lost Redis sends one
//! take every [`PROBE_EVERY`] to Redis (the others go straight to the
//! fallback instead of each waiting for a timeout). Transitions are logged
//! once each.
//!
//! Knows Redis and [`crate::limit`]'s `Decision`; it does not know HTTP,
//! Lua or what a fallback is (the zone decides that).

pub mod client;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use crate::config::RedisSettings;
use crate::limit::{Buckets, Decision};
use client::Client;
pub use client::RedisConnections;

/// The take script: GCRA over one key, on the server's clock.
///
/// `KEYS[1]` is the bucket; `ARGV` are the time one token takes to refill
/// in microseconds (may have a fraction), the burst and the cost. It
/// answers `{allowed (1|0), remaining, retry_after_us, reset_us}`. The key
/// holds the theoretical arrival time (µs) and expires when the bucket is
/// full again. `%.17g` keeps the stored time exact; `%d` keeps `PX` an
/// integer.
pub const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
local ttl = math.max(math.ceil((new_tat - now) / 1000), 1)
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', string.format('%d', ttl))
local remaining = math.floor((now - allow_at) / interval + 1e-6)
if remaining > burst then remaining = burst end
if remaining < 0 then remaining = 0 end
return {1, remaining, 0, math.ceil(new_tat - now)}
";

/// The script, with its SHA1 (EVALSHA first, EVAL when Redis lacks it —
/// after a restart, for instance).
static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA));

/// While Redis is failing, one take per zone is sent to it this often; the
/// others fall back at once.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);

/// A rate zone's buckets in Redis.
pub struct RedisBuckets {
    /// Where the buckets are, and the trust for TLS: what a worker's
    /// connection is looked up by.
    settings: RedisSettings,
    client: Client,
    /// `mg:{ZONE:`; the key and `}` follow.
    prefix: String,
    /// One token's refill time in microseconds, as the script reads it.
    interval_us: String,
    /// The bucket size (the same as the zone's local bucket).
    burst: u32,
    /// What `/status` shows, and the probe gate.
    pub health: Health,
}

impl std::fmt::Debug for RedisBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBuckets")
            .field("prefix", &self.prefix)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

impl RedisBuckets {
    /// Buckets for zone `zone` with `local`'s rate and burst (after its
    /// clamping, so a fallback to `local` counts the same way). Does not
    /// connect.
    pub fn new(zone: &str, settings: &RedisSettings, local: &Buckets) -> Result<Self, String> {
        let client = Client::new(settings)?;
        let interval_us = local.rate().interval().as_nanos() as f64 / 1000.0;
        Ok(RedisBuckets {
            settings: settings.clone(),
            client,
            prefix: format!("mg:{{{zone}:"),
            interval_us: format!("{interval_us}"),
            burst: local.burst(),
            health: Health::new(zone),
        })
    }

    /// The bucket size.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Takes `cost` tokens (0 counts as 1) from `key`'s bucket in Redis
    /// over this worker's connection in `conns`, within the configured
    /// timeout. A cost above the burst is
    /// `TooCostly` without a call. `Err` says why Redis did not answer;
    /// health is updated either way.
    pub async fn take(
        &self,
        conns: &RedisConnections,
        key: &[u8],
        cost: u32,
    ) -> Result<Decision, String> {
        let cost = cost.max(1);
        if cost > self.burst {
            return Ok(Decision::TooCostly {
                limit: self.burst,
                cost,
            });
        }
        let answer =
            match tokio::time::timeout(self.settings.timeout, self.call(conns, key, cost)).await {
                Ok(Ok(reply)) => self.decode(&reply),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {:?}", self.settings.timeout)),
            };
        match &answer {
            Ok(_) => self.health.answered(),
            Err(e) => self.health.failed(e),
        }
        answer
    }

    async fn call(
        &self,
        conns: &RedisConnections,
        key: &[u8],
        cost: u32,
    ) -> redis::RedisResult<Vec<i64>> {
        let mut conn = conns.get(&self.settings, &self.client)?;
        let mut bucket = Vec::with_capacity(self.prefix.len() + key.len() + 1);
        bucket.extend_from_slice(self.prefix.as_bytes());
        bucket.extend_from_slice(key);
        bucket.push(b'}');
        let mut invocation = SCRIPT.key(bucket);
        invocation
            .arg(self.interval_us.as_str())
            .arg(self.burst)
            .arg(cost);
        match invocation.invoke_async(&mut conn).await {
            // The connection this thread had broke (Redis restarted, say):
            // the manager (or the cluster connection, for that node) has
            // started a new one; wait for it once.
            Err(e) if e.is_unrecoverable_error() || e.is_io_error() => {
                invocation.invoke_async(&mut conn).await
            }
            other => other,
        }
    }

    fn decode(&self, reply: &[i64]) -> Result<Decision, String> {
        let &[allowed, remaining, retry_us, reset_us] = reply else {
            return Err(format!("unexpected reply from the take script: {reply:?}"));
        };
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        let limit = self.burst;
        Ok(if allowed == 1 {
            Decision::Allowed {
                limit,
                remaining: u32::try_from(remaining).unwrap_or(0).min(limit),
                reset: micros(reset_us),
            }
        } else {
            Decision::Denied {
                limit,
                retry_after: micros(retry_us),
                reset: micros(reset_us),
            }
        })
    }
}

/// Whether a zone's Redis answers, for the fallback, the logs and
/// `/status`. Shared by every thread.
pub struct Health {
    zone: String,
    failing: AtomicBool,
    /// Takes answered some other way than by Redis.
    fallbacks: AtomicU64,
    /// While failing: when (ms after `epoch`) the next probe may go.
    next_probe_ms: AtomicU64,
    epoch: Instant,
    last_error: Mutex<Option<String>>,
}

/// What `/status` shows of a zone's Redis.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthStatus {
    /// "ok" (the last take was answered) or "failing".
    pub state: &'static str,
    /// Takes answered by the fallback (`on_redis_error`) since start.
    pub fallbacks: u64,
    /// The most recent error, if any.
    pub last_error: Option<String>,
}

impl Health {
    fn new(zone: &str) -> Health {
        Health {
            zone: zone.to_owned(),
            failing: AtomicBool::new(false),
            fallbacks: AtomicU64::new(0),
            next_probe_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            last_error: Mutex::new(None),
        }
    }

    /// Whether this take should go to Redis: always while it answers;
    /// while it fails, one take per [`PROBE_EVERY`] (across threads).
    pub fn should_try(&self) -> bool {
        if !self.failing.load(Ordering::Relaxed) {
            return true;
        }
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_probe_ms.load(Ordering::Relaxed);
        let probe = u64::try_from(PROBE_EVERY.as_millis()).unwrap_or(250);
        now >= next
            && self
                .next_probe_ms
                .compare_exchange(next, now + probe, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Counts a take answered by the fallback.
    pub fn fell_back(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    fn answered(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(zone = %self.zone, "redis answers again; limit zone back on redis");
        }
    }

    fn failed(&self, error: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error.to_owned());
        }
        if !self.failing.swap(true, Ordering::Relaxed) {
            let probe = u64::try_from(PROBE_EVERY.as_millis()).unwrap_or(250);
            let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(0);
            self.next_probe_ms.store(now + probe, Ordering::Relaxed);
            tracing::warn!(zone = %self.zone, error = %error, "redis unreachable; limit zone falling back");
        }
    }

    /// A copy for `/status`.
    pub fn status(&self) -> HealthStatus {
        HealthStatus {
            state: if self.failing.load(Ordering::Relaxed) {
                "failing"
            } else {
                "ok"
            },
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|l| l.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisTarget;
    use crate::limit::Rate;

    fn buckets(rate: &str, burst: u32) -> RedisBuckets {
        let settings = RedisSettings {
            target: RedisTarget::Server("redis://127.0.0.1:1".into()),
            timeout: Duration::from_millis(50),
            ca: None,
        };
        let local = Buckets::new(Rate::parse(rate).expect("rate"), burst);
        RedisBuckets::new("z", &settings, &local).expect("buckets")
    }

    #[test]
    fn cluster_settings_make_a_cluster_client_without_connecting() {
        let settings = RedisSettings {
            target: RedisTarget::Cluster(vec![
                "redis://127.0.0.1:1".into(),
                "redis://127.0.0.1:2".into(),
            ]),
            timeout: Duration::from_millis(50),
            ca: None,
        };
        let local = Buckets::new(Rate::parse("10/s").expect("rate"), 5);
        let b = RedisBuckets::new("z", &settings, &local).expect("buckets");
        assert!(matches!(b.client, Client::Cluster(_)));
        assert_eq!(b.prefix, "mg:{z:");
    }

    #[tokio::test]
    async fn a_dead_cluster_is_an_error_within_the_timeout() {
        let settings = RedisSettings {
            target: RedisTarget::Cluster(vec!["redis://127.0.0.1:1".into()]),
            timeout: Duration::from_millis(200),
            ca: None,
        };
        let local = Buckets::new(Rate::parse("10/s").expect("rate"), 5);
        let b = RedisBuckets::new("z", &settings, &local).expect("buckets");
        let started = Instant::now();
        assert!(b.take(&RedisConnections::default(), b"k", 1).await.is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(b.health.status().state, "failing");
    }

    #[test]
    fn keys_are_hash_tagged_and_the_interval_is_in_microseconds() {
        let b = buckets("10/s", 5);
        assert_eq!(b.prefix, "mg:{z:");
        assert_eq!(b.interval_us, "100000");
        assert_eq!(buckets("3/s", 1).interval_us, "333333.333");
    }

    #[test]
    fn replies_become_decisions() {
        let b = buckets("10/s", 5);
        assert_eq!(
            b.decode(&[1, 4, 0, 100_000]),
            Ok(Decision::Allowed {
                limit: 5,
                remaining: 4,
                reset: Duration::from_millis(100)
            })
        );
        assert_eq!(
            b.decode(&[0, 0, 50_000, 500_000]),
            Ok(Decision::Denied {
                limit: 5,
                retry_after: Duration::from_millis(50),
                reset: Duration::from_millis(500)
            })
        );
        assert!(b.decode(&[1]).is_err());
    }

    #[tokio::test]
    async fn too_costly_needs_no_call_and_a_dead_redis_is_an_error_logged_once() {
        let b = buckets("10/s", 5);
        assert_eq!(
            b.take(&RedisConnections::default(), b"k", 6).await,
            Ok(Decision::TooCostly { limit: 5, cost: 6 })
        );
        assert!(b.health.should_try());
        // Port 1 on loopback refuses (or times out): either way an error.
        assert!(b.take(&RedisConnections::default(), b"k", 1).await.is_err());
        let st = b.health.status();
        assert_eq!(st.state, "failing");
        assert!(st.last_error.is_some());
        // Failing: the next probe waits for PROBE_EVERY.
        assert!(!b.health.should_try());
        b.health.answered();
        assert_eq!(b.health.status().state, "ok");
        assert!(b.health.should_try());
    }
}
