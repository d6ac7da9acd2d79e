//! Purge fan-out over Redis pub/sub (SPEC §9): a purge made on one node's
//! admin API is published on [`CHANNEL`], and every other node pointed at
//! the same `[redis]` applies it to its own tiers.
//!
//! A message is JSON `{"zone": .., "key"|"prefix": .., "origin": NODE}`;
//! a node skips its own (it purged before publishing). Publishing opens a
//! short-lived connection per purge (purges are rare, and the admin call
//! then never waits behind a stale connection). The subscriber is one task
//! on the control thread's runtime: it follows the serving snapshot's
//! `[redis]` (none → idle; changed by a reload → resubscribes), reconnects
//! with backoff and logs once per transition (subscribed / lost).
//!
//! Connections speak TLS for `rediss://` URLs, with `[redis] ca`'s trust
//! ([`client::open`]). With `cluster = [...]` both go through one seed
//! node over a single-node connection: Redis Cluster forwards a PUBLISH
//! to every node over its cluster bus, so a subscriber on any node hears
//! every purge. When that node fails the next one is tried.
//!
//! Knows Redis, [`cache::purge`](crate::cache::purge) and the snapshot; not
//! HTTP.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use crate::cache::purge::{self, Target};
use crate::cluster::client;
use crate::config::{RedisSettings, RedisTarget};
use crate::state::Shared;

/// The pub/sub channel purges travel on.
pub const CHANNEL: &str = "moongate:purge";

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The subscriber's first and longest wait between attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How often the subscriber looks whether a reload changed `[redis]`.
const CONFIG_CHECK: Duration = Duration::from_secs(1);

/// One purge on the wire.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// The zone's name.
    pub zone: String,
    /// `key` or `prefix`.
    #[serde(flatten)]
    pub target: Target,
    /// The publishing node's id, so it can skip its own message.
    pub origin: String,
}

/// The Redis URLs to try, in order: the server, or each cluster seed node.
fn urls(target: &RedisTarget) -> Vec<String> {
    match target {
        RedisTarget::Server(url) => vec![url.clone()],
        RedisTarget::Cluster(nodes) => nodes.clone(),
    }
}

/// Publishes `message`; answers how many subscribers got it (Redis's
/// count: on a cluster, those of the node it went through), or why not.
pub async fn publish(settings: &RedisSettings, message: &Message) -> Result<i64, String> {
    let payload = serde_json::to_string(message).map_err(|e| e.to_string())?;
    let mut last = String::from("no redis node configured");
    for url in urls(&settings.target) {
        match publish_to(settings, &url, &payload).await {
            Ok(n) => return Ok(n),
            Err(e) => last = format!("{url}: {e}"),
        }
    }
    Err(last)
}

async fn publish_to(settings: &RedisSettings, url: &str, payload: &str) -> Result<i64, String> {
    let client = client::open(url, settings.ca.as_ref()).map_err(|e| e.to_string())?;
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(
        settings.timeout,
        redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(payload)
            .query_async::<i64>(&mut conn),
    )
    .await
    .map_err(|_| "publish timed out".to_owned())?
    .map_err(|e| e.to_string())
}

/// Runs the subscriber for as long as the runtime lives: applies other
/// nodes' purges to this node's zones.
pub async fn subscribe(shared: Arc<Shared>) {
    let mut backoff = BACKOFF_MIN;
    // What was logged last: None before anything, then subscribed or not.
    let mut subscribed: Option<bool> = None;
    let mut next = 0usize;
    loop {
        let Some(settings) = shared.snapshot.load().redis.clone() else {
            tokio::time::sleep(CONFIG_CHECK).await;
            continue;
        };
        let urls = urls(&settings.target);
        let Some(url) = urls.get(next % urls.len().max(1)).cloned() else {
            tokio::time::sleep(CONFIG_CHECK).await;
            continue;
        };
        match listen(&shared, &settings, &url, &mut subscribed).await {
            // `[redis]` changed: follow it at once.
            Ok(()) => backoff = BACKOFF_MIN,
            Err(e) => {
                if subscribed != Some(false) {
                    tracing::warn!(redis = %url, error = %e, "purge fan-out: not subscribed; purges from other nodes are not applied here until Redis answers");
                    subscribed = Some(false);
                }
                next = next.wrapping_add(1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// One subscription: connects, subscribes, applies messages. Returns
/// `Ok` when the serving `[redis]` no longer is `settings`, an error when
/// the connection fails or ends.
async fn listen(
    shared: &Arc<Shared>,
    settings: &RedisSettings,
    url: &str,
    subscribed: &mut Option<bool>,
) -> Result<(), String> {
    let client = client::open(url, settings.ca.as_ref()).map_err(|e| e.to_string())?;
    let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(
        settings.timeout.max(CONNECT_TIMEOUT),
        pubsub.subscribe(CHANNEL),
    )
    .await
    .map_err(|_| "subscribe timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    if *subscribed != Some(true) {
        tracing::info!(redis = %url, channel = CHANNEL, "purge fan-out: subscribed");
        *subscribed = Some(true);
    }
    let mut messages = pubsub.into_on_message();
    let mut check = tokio::time::interval(CONFIG_CHECK);
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else {
                    return Err("connection closed".into());
                };
                apply(shared, msg.get_payload_bytes()).await;
            }
            _ = check.tick() => {
                if shared.snapshot.load().redis.as_ref() != Some(settings) {
                    return Ok(());
                }
            }
        }
    }
}

/// Applies one message from the channel, unless it is this node's own.
async fn apply(shared: &Arc<Shared>, payload: &[u8]) {
    let message: Message = match serde_json::from_slice(payload) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "purge fan-out: ignored a malformed message");
            return;
        }
    };
    if message.origin == shared.node_id {
        return;
    }
    let Some(zone) = shared.snapshot.load().caches.get(&message.zone).cloned() else {
        tracing::debug!(zone = %message.zone, "purge fan-out: no such zone here");
        return;
    };
    let target = message.target.clone();
    match tokio::task::spawn_blocking(move || purge::purge(&zone, &target)).await {
        Ok(purged) => tracing::info!(
            zone = %message.zone,
            target = ?message.target,
            from = %message.origin,
            purged = purged.total(),
            "purge from another node applied"
        ),
        Err(e) => tracing::warn!(error = %e, "purge fan-out: the purge task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_flat_json() {
        let m = Message {
            zone: "pages".into(),
            target: Target::Prefix("http/a".into()),
            origin: "n1".into(),
        };
        let text = serde_json::to_string(&m).unwrap_or_default();
        assert_eq!(text, r#"{"zone":"pages","prefix":"http/a","origin":"n1"}"#);
        let back: Message = serde_json::from_str(r#"{"zone":"z","key":"k","origin":"o"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.target, Target::Key("k".into()));
    }
}
