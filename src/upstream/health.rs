//! Active health checks (`health = {...}` of an upstream): one prober task
//! per [`Upstream`] per process, shared by every worker thread through the
//! peers' state ([`super::peer::Peer::record_check`]).
//!
//! [`start`] is called with every new snapshot's upstreams on the control
//! thread's runtime, which lives as long as the server. A prober holds only
//! a `Weak<Upstream>`: a reload that keeps the definition keeps the same
//! `Arc<Upstream>` and so the same prober (no second one starts), and once
//! an upstream is dropped (removed or changed, and no request holds the old
//! snapshot any more) its prober stops at its next round.
//!
//! Every `interval` a round probes every peer of the upstream's current
//! members at once (managed workers come and go between rounds), each
//! probe ([`super::probe`]) bounded by `timeout`: a slow peer fails. Peers
//! `down` by config are not probed. A state change is logged once.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use tokio::time::Instant;

use super::Upstream;
use super::peer::Transition;
use super::probe::{Target, probe};
use crate::config::{Health, PeerAddr};

/// The `User-Agent` of a check.
const AGENT: &str = "moongate-health";

/// Starts the prober of every upstream with `health` that has none yet.
/// Must be called on the control thread's runtime.
pub fn start(upstreams: &BTreeMap<String, Arc<Upstream>>) {
    for (name, up) in upstreams {
        if up.def.health.is_some() && up.claim_prober() {
            tracing::debug!(upstream = %name, "active health checks start");
            tokio::spawn(run(name.clone(), Arc::downgrade(up)));
        }
    }
}

/// A prober's life: a round at once, then one every `interval`, until
/// the upstream is gone.
async fn run(name: String, upstream: Weak<Upstream>) {
    let mut next = Instant::now();
    loop {
        let Some(up) = upstream.upgrade() else {
            tracing::debug!(upstream = %name, "active health checks stop: the upstream is gone");
            return;
        };
        let Some(health) = up.def.health.clone() else {
            return;
        };
        round(&name, &up, &health).await;
        drop(up);
        next += health.interval;
        let now = Instant::now();
        if next < now {
            // A round longer than the interval: the next starts at once,
            // and the schedule restarts from there.
            next = now;
        }
        tokio::time::sleep_until(next).await;
    }
}

/// Probes every peer once, all at the same time, and records the outcomes.
async fn round(name: &str, up: &Upstream, health: &Health) {
    let members = up.members().clone();
    let checks = members
        .peers
        .iter()
        .zip(&members.addrs)
        .filter(|(peer, _)| !peer.config.down)
        .map(|(peer, addr)| async move {
            let outcome = check(up, health, addr).await;
            let change = peer.record_check(
                outcome,
                (health.fails, health.passes),
                std::time::Instant::now(),
            );
            log(name, addr, change, health);
        });
    futures_util::future::join_all(checks).await;
}

/// One check of one peer, within `timeout`.
async fn check(up: &Upstream, health: &Health, addr: &PeerAddr) -> Result<(), String> {
    let target = Target {
        addr,
        protocol: up.def.protocol,
        root: up.def.root.as_deref(),
        // `type = "tcp"` connects only: no handshake either.
        tls: health.request.as_ref().and(up.tls.as_ref()),
        connect_timeout: health.timeout,
        agent: AGENT,
    };
    match tokio::time::timeout(health.timeout, probe(&target, health.request.as_ref())).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "no answer within the check's timeout ({:?})",
            health.timeout
        )),
    }
}

/// Logs a change of state, once (the peer reports each change once).
fn log(name: &str, addr: &PeerAddr, change: Option<Transition>, health: &Health) {
    match change {
        None => {}
        Some(Transition::Down(reason)) => tracing::warn!(
            upstream = %name,
            peer = %addr,
            fails = health.fails,
            "peer down: {reason}"
        ),
        Some(Transition::Up) => tracing::info!(
            upstream = %name,
            peer = %addr,
            passes = health.passes,
            "peer up again: active checks pass"
        ),
        Some(Transition::PassiveCleared) => tracing::info!(
            upstream = %name,
            peer = %addr,
            passes = health.passes,
            "peer back before its fail_timeout: active checks pass"
        ),
    }
}
