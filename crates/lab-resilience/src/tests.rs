//! The retry budget and the call loop, on paused time with scripted attempts.

use std::sync::Mutex;
use std::time::Duration;

use http::StatusCode;

use crate::*;

/// An attempt's answer: the endpoint it reached and the status it got.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer(String, StatusCode);

impl Outcome for Answer {
    fn failure(&self) -> Option<Failure> {
        self.1
            .is_server_error()
            .then_some(Failure::UpstreamStatus(self.1))
    }
}

fn upstream(urls: &[&str]) -> Upstream {
    let urls: Vec<String> = urls.iter().map(|u| (*u).to_owned()).collect();
    Upstream::new(
        "catalog",
        &urls,
        BreakerPolicy::default(),
        BudgetPolicy::default(),
        Events::default(),
    )
}

/// Runs one call whose attempts answer from `script(endpoint, attempt number)`, returning the
/// result and the endpoints tried.
async fn run(
    up: &Upstream,
    replay: Replay,
    script: impl Fn(&str, usize) -> Result<Answer, Failure>,
) -> (Result<Answer, Failure>, Vec<String>) {
    let tried = Mutex::new(Vec::new());
    let result = call(up, &CallPolicy::default(), replay, |endpoint| {
        let n = {
            let mut t = tried.lock().expect("not poisoned");
            t.push(endpoint.to_owned());
            t.len()
        };
        let outcome = script(endpoint, n);
        async move {
            if let Err(Failure::Timeout(_)) = outcome {
                std::future::pending::<()>().await;
            }
            outcome
        }
    })
    .await;
    (result, tried.into_inner().expect("not poisoned"))
}

#[tokio::test(start_paused = true)]
async fn calls_alternate_between_endpoints() {
    let up = upstream(&["a", "b"]);
    let mut seen = Vec::new();

    for _ in 0..4 {
        let (result, _) = run(&up, Replay::Safe, |e, _| {
            Ok(Answer(e.into(), StatusCode::OK))
        })
        .await;
        seen.push(result.expect("answered").0);
    }

    assert_eq!(seen, ["a", "b", "a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_safe_call_refused_by_one_endpoint_is_retried_on_the_other() {
    let up = upstream(&["a", "b"]);

    let (result, tried) = run(&up, Replay::Safe, |e, _| match e {
        "a" => Err(Failure::Refused("no listener".into())),
        _ => Ok(Answer(e.into(), StatusCode::OK)),
    })
    .await;

    assert_eq!(result, Ok(Answer("b".into(), StatusCode::OK)));
    assert_eq!(tried, ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn an_unsafe_call_that_timed_out_is_not_retried() {
    let up = upstream(&["a", "b"]);

    let (result, tried) = run(&up, Replay::UnsentOnly, |_, _| {
        Err(Failure::Timeout(Duration::ZERO))
    })
    .await;

    assert_eq!(result, Err(Failure::Timeout(Duration::from_secs(2))));
    assert_eq!(tried, ["a"]);
}

#[tokio::test(start_paused = true)]
async fn an_unsafe_call_refused_before_sending_is_retried() {
    let up = upstream(&["a", "b"]);

    let (result, tried) = run(&up, Replay::UnsentOnly, |e, _| match e {
        "a" => Err(Failure::Refused("no listener".into())),
        _ => Ok(Answer(e.into(), StatusCode::CREATED)),
    })
    .await;

    assert_eq!(result, Ok(Answer("b".into(), StatusCode::CREATED)));
    assert_eq!(tried, ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_streamed_call_gets_one_attempt() {
    let up = upstream(&["a", "b"]);

    let (result, tried) = run(&up, Replay::Never, |_, _| {
        Err(Failure::Refused("no listener".into()))
    })
    .await;

    assert!(matches!(result, Err(Failure::Refused(_))), "{result:?}");
    assert_eq!(tried.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_safe_call_stops_after_the_retry_limit_and_returns_the_upstream_answer() {
    let up = upstream(&["a"]);

    let (result, tried) = run(&up, Replay::Safe, |e, _| {
        Ok(Answer(e.into(), StatusCode::SERVICE_UNAVAILABLE))
    })
    .await;

    assert_eq!(
        result,
        Ok(Answer("a".into(), StatusCode::SERVICE_UNAVAILABLE))
    );
    assert_eq!(tried.len(), 3, "one attempt and two retries");
}

#[tokio::test(start_paused = true)]
async fn an_internal_error_is_not_retried() {
    let up = upstream(&["a", "b"]);

    let (_, tried) = run(&up, Replay::Safe, |e, _| {
        Ok(Answer(e.into(), StatusCode::INTERNAL_SERVER_ERROR))
    })
    .await;

    assert_eq!(tried.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn attempts_that_hang_end_at_the_total_timeout() {
    let up = upstream(&["a"]);
    let started = tokio::time::Instant::now();

    let (result, tried) = run(&up, Replay::Safe, |_, _| {
        Err(Failure::Timeout(Duration::ZERO))
    })
    .await;

    assert!(matches!(result, Err(Failure::Timeout(_))), "{result:?}");
    assert!(tried.len() >= 2, "{tried:?}");
    assert!(started.elapsed() <= CallPolicy::default().total_timeout);
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_keeps_failing_is_ejected_and_the_other_serves_everything() {
    let up = upstream(&["a", "b"]);
    for _ in 0..20 {
        let (result, _) = run(&up, Replay::Safe, |e, _| match e {
            "a" => Err(Failure::Refused("no listener".into())),
            _ => Ok(Answer(e.into(), StatusCode::OK)),
        })
        .await;
        assert!(result.is_ok());
    }

    let (_, tried) = run(&up, Replay::Safe, |e, _| {
        Ok(Answer(e.into(), StatusCode::OK))
    })
    .await;

    assert_eq!(tried, ["b"]);
    assert_eq!(up.snapshots()[0].state, BreakerState::Open);
    tokio::time::advance(BreakerPolicy::default().break_duration).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (result, _) = run(&up, Replay::Safe, |e, _| {
            Ok(Answer(e.into(), StatusCode::OK))
        })
        .await;
        seen.push(result.expect("answered").0);
    }
    assert!(seen.contains(&"a".to_owned()), "probed back in: {seen:?}");
    assert_eq!(up.snapshots()[0].state, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn with_every_endpoint_open_a_call_fails_fast_with_the_remaining_break() {
    let up = upstream(&["a"]);
    for _ in 0..5 {
        let _ = run(&up, Replay::Never, |_, _| {
            Err(Failure::Reset("gone".into()))
        })
        .await;
    }
    tokio::time::advance(Duration::from_secs(1)).await;

    let (result, tried) = run(&up, Replay::Safe, |e, _| {
        Ok(Answer(e.into(), StatusCode::OK))
    })
    .await;

    assert_eq!(
        result,
        Err(Failure::Open {
            retry_after: Duration::from_secs(4)
        })
    );
    assert!(tried.is_empty());
    let problem = result.expect_err("open").problem("catalog");
    assert_eq!(problem.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(start_paused = true)]
async fn the_budget_allows_its_floor_and_a_share_of_deposits_then_refuses() {
    let budget = RetryBudget::new(BudgetPolicy {
        retry_percent: 20,
        min_retries_per_second: 1,
        window: Duration::from_secs(10),
    });
    for _ in 0..50 {
        budget.deposit();
    }

    let granted = (0..100).filter(|_| budget.withdraw()).count();

    assert_eq!(granted, 10 + 10, "floor of 10, plus 20 % of 50");
}

#[tokio::test(start_paused = true)]
async fn retries_leave_the_budget_with_the_window() {
    let budget = RetryBudget::new(BudgetPolicy {
        retry_percent: 0,
        min_retries_per_second: 1,
        window: Duration::from_secs(10),
    });
    while budget.withdraw() {}

    tokio::time::advance(Duration::from_secs(10)).await;

    assert!(budget.withdraw());
}

#[test]
fn every_failure_maps_to_its_gateway_status() {
    let table = [
        (Failure::Timeout(Duration::ZERO), 504),
        (Failure::Refused(String::new()), 503),
        (Failure::Reset(String::new()), 503),
        (
            Failure::Open {
                retry_after: Duration::from_millis(1500),
            },
            503,
        ),
        (
            Failure::UpstreamStatus(StatusCode::INTERNAL_SERVER_ERROR),
            502,
        ),
        (Failure::NoEndpoint, 503),
    ];
    for (failure, status) in table {
        assert_eq!(failure.status().as_u16(), status, "{failure}");
    }
}

#[test]
fn backoff_grows_and_stays_under_its_ceiling() {
    let policy = CallPolicy::default();
    for retry in 1..10 {
        let pause = backoff(&policy, retry);
        let ceiling = policy
            .backoff_base
            .saturating_mul(1 << (retry - 1))
            .min(policy.backoff_max);
        assert!(pause <= ceiling, "retry {retry}: {pause:?} > {ceiling:?}");
    }
}
