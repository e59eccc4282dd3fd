use std::time::Duration;

use super::*;

fn breaker() -> (Breaker, tokio::sync::broadcast::Receiver<ResilienceEvent>) {
    let events = Events::default();
    let rx = events.subscribe();
    let b = Breaker::new(
        "catalog",
        "http://127.0.0.1:1",
        BreakerPolicy::default(),
        events,
    );
    (b, rx)
}

fn fail(b: &Breaker, n: usize) {
    for _ in 0..n {
        b.try_acquire().expect("closed").failure();
    }
}

#[tokio::test(start_paused = true)]
async fn failures_below_the_minimum_throughput_leave_it_closed() {
    let (b, _rx) = breaker();

    fail(&b, 4);

    assert_eq!(b.snapshot().state, BreakerState::Closed);
    assert!(b.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn half_the_calls_failing_at_the_minimum_throughput_opens_it_for_the_break() {
    let (b, mut rx) = breaker();
    for _ in 0..3 {
        b.try_acquire().expect("closed").success();
    }

    fail(&b, 3);

    let open = b.try_acquire().expect_err("open");
    assert_eq!(open.retry_after, Duration::from_secs(5));
    assert_eq!(b.snapshot().state, BreakerState::Open);
    assert_eq!(b.snapshot().counters.opened, 1);
    match rx.try_recv() {
        Ok(ResilienceEvent::BreakerChanged { from, to, .. }) => {
            assert_eq!((from, to), (BreakerState::Closed, BreakerState::Open));
        }
        other => panic!("expected a state change, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn mostly_successful_calls_keep_it_closed() {
    let (b, _rx) = breaker();
    for _ in 0..10 {
        b.try_acquire().expect("closed").success();
    }

    fail(&b, 4);

    assert_eq!(b.snapshot().state, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn after_the_break_one_probe_goes_through_and_its_success_closes_it() {
    let (b, _rx) = breaker();
    fail(&b, 5);
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(
        b.try_acquire().expect_err("still open").retry_after,
        Duration::from_secs(2)
    );
    tokio::time::advance(Duration::from_secs(2)).await;

    let probe = b.try_acquire().expect("the probe");
    assert!(b.try_acquire().is_err(), "only one probe at a time");
    assert_eq!(b.snapshot().state, BreakerState::HalfOpen);
    probe.success();

    assert_eq!(b.snapshot().state, BreakerState::Closed);
    assert!(b.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_it_for_another_break() {
    let (b, _rx) = breaker();
    fail(&b, 5);
    tokio::time::advance(Duration::from_secs(5)).await;

    b.try_acquire().expect("the probe").failure();

    assert_eq!(b.snapshot().state, BreakerState::Open);
    assert_eq!(
        b.try_acquire().expect_err("open").retry_after,
        Duration::from_secs(5)
    );
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_probe_lets_the_next_caller_probe() {
    let (b, _rx) = breaker();
    fail(&b, 5);
    tokio::time::advance(Duration::from_secs(5)).await;

    drop(b.try_acquire().expect("the probe"));

    assert!(b.is_available());
    b.try_acquire().expect("another probe").success();
    assert_eq!(b.snapshot().state, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn failures_older_than_the_window_no_longer_count() {
    let (b, _rx) = breaker();
    fail(&b, 4);
    tokio::time::advance(Duration::from_secs(11)).await;

    fail(&b, 1);

    assert_eq!(b.snapshot().state, BreakerState::Closed);
    assert_eq!(b.snapshot().window_failures, 1);
}

#[tokio::test(start_paused = true)]
async fn a_reset_closes_an_open_breaker_and_says_so() {
    let (b, mut rx) = breaker();
    fail(&b, 5);
    let _ = rx.try_recv();

    b.reset();

    assert_eq!(b.snapshot().state, BreakerState::Closed);
    assert!(b.try_acquire().is_ok());
    match rx.try_recv() {
        Ok(ResilienceEvent::BreakerChanged { to, reason, .. }) => {
            assert_eq!(to, BreakerState::Closed);
            assert!(reason.contains("reset"), "{reason}");
        }
        other => panic!("expected a state change, got {other:?}"),
    }
}
