//! Fills without sockets: followers replay and follow, a too-large body
//! stops being kept, a failure reaches followers.

use std::future::poll_fn;
use std::time::Duration;

use super::*;

fn head() -> Arc<Head> {
    Arc::new(Head {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        lifetime: Lifetime::fresh(Duration::from_secs(60), std::time::SystemTime::now()),
        vary: None,
    })
}

fn zone() -> Arc<Zone> {
    let def = crate::config::CacheZone {
        max_object_size: 10,
        lock: true,
        ..crate::cache::zone::test_def()
    };
    Arc::new(Zone::new(def, None).unwrap_or_else(|e| panic!("{e}")))
}

fn plan(zone: &Arc<Zone>) -> Plan {
    Plan {
        zone: zone.clone(),
        key: "k".into(),
        marker: None,
    }
}

/// Reads a follower to its end: the bytes, or the error.
async fn read_all(mut f: Follower) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = poll_fn(|cx| f.poll_chunk(cx)).await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

fn stored_body(zone: &Zone) -> Option<Bytes> {
    let (l1, _) = zone.tiers();
    match l1.get("k").as_deref() {
        Some(Entry::Response(s)) => Some(s.body.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn followers_replay_then_follow_and_the_body_is_stored() {
    let zone = zone();
    let fill = Arc::new(Fill::new(10, None));
    let lead = Lead::new(fill.clone());
    let mut early = fill.attach().unwrap_or_else(|| panic!("attach"));
    fill.commit(head(), plan(&zone));
    assert!(fill.push(&Bytes::from_static(b"abc")));
    let late = fill
        .attach()
        .unwrap_or_else(|| panic!("attach while whole"));
    assert!(matches!(
        early.head(Duration::from_secs(1)).await,
        Waited::Head(_)
    ));
    let early = tokio::spawn(read_all(early));
    let late = tokio::spawn(read_all(late));
    tokio::task::yield_now().await;
    assert!(fill.push(&Bytes::from_static(b"defg")));
    fill.complete();
    drop(lead);
    assert_eq!(early.await.ok(), Some(Ok(b"abcdefg".to_vec())));
    assert_eq!(late.await.ok(), Some(Ok(b"abcdefg".to_vec())));
    assert_eq!(stored_body(&zone).as_deref(), Some(&b"abcdefg"[..]));
}

#[tokio::test]
async fn too_large_stops_storing_frees_chunks_and_keeps_followers_going() {
    let zone = zone();
    let fill = Arc::new(Fill::new(10, None));
    let lead = Lead::new(fill.clone());
    let follower = fill.attach().unwrap_or_else(|| panic!("attach"));
    fill.commit(head(), plan(&zone));
    let reader = tokio::spawn(read_all(follower));
    assert!(fill.push(&Bytes::from_static(b"012345")));
    tokio::task::yield_now().await;
    assert!(!fill.push(&Bytes::from_static(b"6789ab")));
    // Read chunks are dropped: no longer whole for newcomers.
    assert!(fill.attach().is_none());
    tokio::task::yield_now().await;
    assert!(fill.push(&Bytes::from_static(b"cd")));
    fill.complete();
    drop(lead);
    assert_eq!(reader.await.ok(), Some(Ok(b"0123456789abcd".to_vec())));
    assert_eq!(stored_body(&zone), None);
    assert_eq!(fill.state().kept, 0, "chunks freed once read");
}

#[tokio::test]
async fn a_follower_too_far_behind_is_cut_off() {
    let zone = zone();
    let fill = Arc::new(Fill::new(10, None));
    let lead = Lead::new(fill.clone());
    let follower = fill.attach().unwrap_or_else(|| panic!("attach"));
    fill.commit(head(), plan(&zone));
    for _ in 0..5 {
        fill.push(&Bytes::from_static(b"0123"));
    }
    assert!(fill.state().kept <= 10);
    let read = read_all(follower).await;
    assert!(read.is_err(), "{read:?}");
    drop(lead);
}

#[tokio::test]
async fn a_failed_leader_reaches_waiters_and_followers() {
    let zone = zone();
    let fill = Arc::new(Fill::new(10, None));
    let lead = Lead::new(fill.clone());
    let mut waiter = fill.attach().unwrap_or_else(|| panic!("attach"));
    let follower = fill.attach().unwrap_or_else(|| panic!("attach"));
    fill.commit(head(), plan(&zone));
    fill.push(&Bytes::from_static(b"ab"));
    drop(lead);
    assert!(matches!(
        waiter.head(Duration::from_secs(1)).await,
        Waited::Gone
    ));
    assert!(read_all(follower).await.is_err());
    assert!(fill.attach().is_none());
    assert_eq!(stored_body(&zone), None);
    assert_eq!(fill.followers(), 1, "the waiter is still attached");
}

#[tokio::test]
async fn an_abandoned_head_sends_waiters_away() {
    let fill = Arc::new(Fill::new(10, None));
    let _lead = Lead::new(fill.clone());
    let mut waiter = fill.attach().unwrap_or_else(|| panic!("attach"));
    let waited = tokio::spawn(async move { waiter.head(Duration::from_secs(5)).await });
    tokio::task::yield_now().await;
    fill.abandon();
    assert!(matches!(waited.await.ok(), Some(Waited::Gone)));
}

#[tokio::test]
async fn bytes_passed_before_the_commit_mean_nothing_is_stored() {
    let zone = zone();
    let fill = Arc::new(Fill::new(10, None));
    let lead = Lead::new(fill.clone());
    fill.push(&Bytes::from_static(b"ab"));
    fill.commit(head(), plan(&zone));
    fill.push(&Bytes::from_static(b"cd"));
    fill.complete();
    drop(lead);
    assert_eq!(stored_body(&zone), None);
}
