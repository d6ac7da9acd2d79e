//! Deadlines that move on far more often than they fire: the read,
//! keep-alive and send deadlines of a client connection, an upstream
//! connection's read timeout, a body's inactivity timeout. The deadline
//! is a plain value its owner keeps; one tokio timer per owner is
//! registered only when a wait actually starts, and is left registered
//! while it is due no later than the deadline now wanted. When it fires
//! early (the deadline moved on meanwhile) it is re-armed once. A
//! keep-alive connection serving request after request thus touches
//! tokio's timer wheel about once per timeout period, not once per
//! request, like nginx's timers, which are only updated when they move
//! by more than their resolution.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// One owner's timer; see the module docs.
#[derive(Debug, Default)]
pub struct LazyTimer {
    /// Allocated at the first wait (an owner that never waits needs none).
    sleep: Option<Pin<Box<Sleep>>>,
}

impl LazyTimer {
    /// A timer not registered with tokio yet.
    pub const fn new() -> Self {
        LazyTimer { sleep: None }
    }

    /// Ready once `deadline` has passed; otherwise the task is woken no
    /// later than `deadline` (possibly earlier, when a timer set for an
    /// earlier deadline is still running: poll again then).
    pub fn poll_until(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let sleep = match &mut self.sleep {
            Some(s) => {
                // A timer due later than wanted would wake too late.
                if s.deadline() > deadline {
                    s.as_mut().reset(deadline);
                }
                s
            }
            None => self
                .sleep
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if sleep.deadline() >= deadline || Instant::now() >= deadline {
                return Poll::Ready(());
            }
            // It fired for an earlier deadline: wait on for this one.
            sleep.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_deadline_not_before() {
        let mut t = LazyTimer::new();
        let start = Instant::now();
        let deadline = start + Duration::from_secs(5);
        poll_fn(|cx| t.poll_until(cx, deadline)).await;
        assert!(Instant::now() >= deadline);
        assert!(Instant::now() < deadline + Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_keeps_the_earlier_timer_and_waits_on() {
        let mut t = LazyTimer::new();
        let start = Instant::now();
        // Registered for 5 s, then the deadline moves to 8 s: the timer is
        // not touched, fires at 5 s, and is re-armed for 8 s.
        let first = start + Duration::from_secs(5);
        let woke = poll_fn(|cx| Poll::Ready(t.poll_until(cx, first).is_pending())).await;
        assert!(woke);
        let later = start + Duration::from_secs(8);
        poll_fn(|cx| t.poll_until(cx, later)).await;
        assert!(Instant::now() >= later);
        assert_eq!(t.sleep.as_ref().map(|s| s.deadline()), Some(later));
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_resets_the_timer() {
        let mut t = LazyTimer::new();
        let start = Instant::now();
        let far = start + Duration::from_secs(60);
        let pending = poll_fn(|cx| Poll::Ready(t.poll_until(cx, far).is_pending())).await;
        assert!(pending);
        let near = start + Duration::from_secs(2);
        poll_fn(|cx| t.poll_until(cx, near)).await;
        let now = Instant::now();
        assert!(now >= near && now < far, "woke at {:?}", now - start);
    }

    #[tokio::test(start_paused = true)]
    async fn a_passed_deadline_is_ready_at_once() {
        let mut t = LazyTimer::new();
        let past = Instant::now();
        tokio::time::advance(Duration::from_millis(5)).await;
        let ready = poll_fn(|cx| Poll::Ready(t.poll_until(cx, past).is_ready())).await;
        assert!(ready);
    }
}
