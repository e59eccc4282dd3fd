//! One provider request with a timeout per attempt and a few jittered retries on the failures
//! another attempt can fix (connect errors, timeouts, 5xx). Every request carries an idempotency
//! key, so repeating it is safe.

use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};
use serde_json::Value;

use super::ProviderError;

/// First retry waits up to this long; each later one up to twice the previous.
const BACKOFF_BASE: Duration = Duration::from_millis(100);

/// Attempt budget and per-attempt timeout of provider calls.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub attempts: u32,
    /// Bound on one attempt, connect included.
    pub attempt_timeout: Duration,
}

/// A provider's answer: its status and JSON body (`Null` when it had none).
pub struct Answer {
    /// The HTTP status (below 500).
    pub status: StatusCode,
    /// The JSON body.
    pub body: Value,
}

impl Answer {
    /// The body of a 2xx. Otherwise `provider`'s error, with the code and message `read` picks
    /// out of the body in the provider's own format: unavailable when the status is worth
    /// retrying later ([`retry_later`]), refused otherwise.
    pub fn success(
        self,
        provider: &'static str,
        read: impl FnOnce(&Value) -> (String, String),
    ) -> Result<Value, ProviderError> {
        if self.status.is_success() {
            return Ok(self.body);
        }
        let (code, message) = read(&self.body);
        if retry_later(self.status) {
            return Err(ProviderError::Unavailable {
                provider,
                reason: format!("{} {code}: {message}", self.status),
            });
        }
        Err(ProviderError::Refused {
            provider,
            status: self.status.as_u16(),
            code,
            message,
        })
    }
}

/// Sends the request `build` makes, retrying as the policy says; an answer below 500 is
/// returned as it is, for the adapter to read.
pub async fn send(
    provider: &'static str,
    policy: RetryPolicy,
    build: impl Fn() -> RequestBuilder,
) -> Result<Answer, ProviderError> {
    let mut last = String::new();
    for attempt in 0..policy.attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(jitter(attempt)).await;
        }
        match build().timeout(policy.attempt_timeout).send().await {
            Ok(response) if response.status().is_server_error() => {
                last = format!("answered {}", response.status());
            }
            Ok(response) => {
                let status = response.status();
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| ProviderError::Unavailable {
                        provider,
                        reason: format!("reading the answer: {e}"),
                    })?;
                let body = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).map_err(|e| ProviderError::Protocol {
                        provider,
                        reason: format!("{status} with a body that is not JSON: {e}"),
                    })?
                };
                return Ok(Answer { status, body });
            }
            Err(e) if e.is_timeout() || e.is_connect() || e.is_request() => {
                last = e.to_string();
            }
            Err(e) => {
                return Err(ProviderError::Unavailable {
                    provider,
                    reason: e.to_string(),
                });
            }
        }
    }
    Err(ProviderError::Unavailable {
        provider,
        reason: last,
    })
}

/// Full jitter: a random wait up to the exponential bound, so retries spread out.
fn jitter(attempt: u32) -> Duration {
    let bound = BACKOFF_BASE.saturating_mul(1 << attempt.min(6));
    bound.mul_f64(rand::random::<f64>())
}

/// The string at `pointer` in `body`.
pub fn text(body: &Value, pointer: &str) -> Option<String> {
    body.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Whether a 4xx is worth retrying later rather than an answer: our credentials or the
/// provider's rate limit, neither of which says anything about the payment.
pub fn retry_later(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::TOO_MANY_REQUESTS
            | StatusCode::CONFLICT
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_under_its_exponential_bound() {
        for attempt in 1..5 {
            assert!(jitter(attempt) <= BACKOFF_BASE * (1 << attempt));
        }
    }
}
