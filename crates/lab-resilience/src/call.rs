//! One logical call through an [`Upstream`]: an endpoint in turn, a per-attempt timeout inside a
//! total one, and jittered exponential back-off between attempts that are safe to repeat and
//! that the retry budget pays for.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::events::ResilienceEvent;
use crate::failure::Failure;
use crate::policy::CallPolicy;
use crate::upstream::Upstream;

/// Whether a call may be attempted again, decided by the caller who knows the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Idempotent (GET, PUT, DELETE, …) or carrying an `Idempotency-Key`, and its body can be
    /// sent again: any transient failure is retried.
    Safe,
    /// Repeating it could repeat its effect (a POST without a key), but the body can be sent
    /// again: retried only when the first attempt never left (connection refused).
    UnsentOnly,
    /// The body was streamed and is gone: one attempt.
    Never,
}

/// How an attempt's successful answer is judged: an answer can still be a failure of the
/// endpoint (a 5xx), which counts against its breaker and may be retried.
pub trait Outcome {
    fn failure(&self) -> Option<Failure>;
}

/// Calls `attempt` with an endpoint's base URL until it succeeds, fails for good, or runs out of
/// retries, budget or time. A final answer that is itself a failure (an upstream 5xx) is
/// returned as `Ok`: the caller passes the upstream's own response on.
pub async fn call<T, F, Fut>(
    upstream: &Upstream,
    policy: &CallPolicy,
    replay: Replay,
    mut attempt: F,
) -> Result<T, Failure>
where
    T: Outcome,
    F: FnMut(&str) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let deadline = Instant::now() + policy.total_timeout;
    upstream.budget.deposit();
    let mut tries: u32 = 0;
    loop {
        tries += 1;
        let (breaker, permit) = upstream.pick()?;
        // The first attempt has all of the total; a clock read less on every call.
        let left = match tries {
            1 => policy.total_timeout,
            _ => deadline.saturating_duration_since(Instant::now()),
        };
        let limit = policy.attempt_timeout.min(left);
        let injected = upstream.fault.roll();
        let attempt_once = async {
            if let Some(injection) = &injected {
                tokio::time::sleep(injection.latency).await;
                if let Some((status, trips_breaker)) = injection.failure {
                    return Err(Failure::Injected {
                        status,
                        trips_breaker,
                    });
                }
            }
            attempt(breaker.endpoint()).await
        };
        let result = match tokio::time::timeout(limit, attempt_once).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Timeout(limit)),
        };
        let failure = match &result {
            Ok(answer) => answer.failure(),
            Err(failure) => Some(failure.clone()),
        };
        let Some(failure) = failure else {
            permit.success();
            return result;
        };
        if failure.counts_against_upstream() {
            permit.failure();
        } else {
            drop(permit);
        }
        let allowed = match replay {
            Replay::Safe => failure.transient(),
            Replay::UnsentOnly => !failure.maybe_sent(),
            Replay::Never => false,
        };
        if !allowed || tries > policy.max_retries {
            return result;
        }
        let pause = backoff(policy, tries);
        if Instant::now() + pause >= deadline {
            return result;
        }
        if !upstream.budget.withdraw() {
            upstream.events.emit(ResilienceEvent::BudgetExhausted {
                service: upstream.service.clone(),
            });
            return result;
        }
        upstream.events.emit(ResilienceEvent::Retried {
            service: upstream.service.clone(),
            endpoint: breaker.endpoint().clone(),
            attempt: tries,
        });
        tracing::debug!(service = %upstream.service, endpoint = %breaker.endpoint(), %failure, attempt = tries, "retrying");
        tokio::time::sleep(pause).await;
    }
}

/// "Full jitter" (AWS architecture blog): uniform in `[0, min(max, base × 2^(n-1))]`, so
/// callers that failed together do not retry together.
pub fn backoff(policy: &CallPolicy, retry: u32) -> Duration {
    let exponent = retry.saturating_sub(1).min(16);
    let ceiling = policy
        .backoff_base
        .saturating_mul(1 << exponent)
        .min(policy.backoff_max);
    ceiling.mul_f64(rand::random::<f64>())
}
