//! Price snapshots from catalog over HTTP (`GET {catalog}/products/{id}`).
//!
//! Round-robin over every catalog replica, a timeout per attempt, and a few retries with full
//! jitter on the failures another attempt can fix (connect errors, timeouts, 5xx): a GET is
//! idempotent, so retrying it is always safe. Each retry goes to the next replica, so one dead
//! replica costs a retry, not a failed order. A 404 is an answer, not a failure.
//!
//! This is the part of `lab-resilience` (retry budget and breaker still to come) that orders
//! needs today; it moves there when that crate lands.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Deserialize;
use uuid::Uuid;

/// First retry waits up to this long; each later one up to twice the previous.
const BACKOFF_BASE: Duration = Duration::from_millis(50);

/// A product's price as catalog had it when the order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Priced {
    #[serde(rename = "id")]
    pub product_id: Uuid,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
}

/// Why a price could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("catalog has no product {0}")]
    Unknown(Uuid),
    #[error("catalog is unavailable: {0}")]
    Unavailable(String),
}

/// How one attempt failed.
enum Failed {
    /// Another attempt (on the next replica) may succeed.
    Retry(String),
    /// The answer stands.
    Final(PriceError),
}

/// The catalog client; cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    /// The HTTP client (keeps connections to the replicas alive).
    http: reqwest::Client,
    /// Base URLs of every catalog replica.
    replicas: Arc<[String]>,
    /// Round-robin cursor, shared by every clone.
    next: Arc<AtomicUsize>,
    /// Bound on one request, connect included.
    attempt_timeout: Duration,
    /// Attempts per product, first one included.
    attempts: u32,
}

impl Catalog {
    /// A client for the comma-separated base URLs in `urls`; `None` when there are none.
    pub fn new(
        http: reqwest::Client,
        urls: &str,
        attempt_timeout: Duration,
        attempts: u32,
    ) -> Option<Self> {
        let replicas: Vec<String> = urls
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        (!replicas.is_empty()).then(|| Self {
            http,
            replicas: replicas.into(),
            next: Arc::new(AtomicUsize::new(0)),
            attempt_timeout,
            attempts: attempts.max(1),
        })
    }

    /// The current price of product `id`.
    pub async fn price(&self, id: Uuid) -> Result<Priced, PriceError> {
        let mut last = String::new();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(jitter(attempt)).await;
            }
            let index = self.next.fetch_add(1, Ordering::Relaxed) % self.replicas.len();
            match self.attempt(&self.replicas[index], id).await {
                Ok(priced) => return Ok(priced),
                Err(Failed::Final(e)) => return Err(e),
                Err(Failed::Retry(reason)) => last = reason,
            }
        }
        Err(PriceError::Unavailable(last))
    }

    async fn attempt(&self, base: &str, id: Uuid) -> Result<Priced, Failed> {
        let response = self
            .http
            .get(format!("{base}/products/{id}"))
            .timeout(self.attempt_timeout)
            .send()
            .await
            .map_err(|e| Failed::Retry(describe(base, &e)))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(Failed::Final(PriceError::Unknown(id)));
        }
        if status.is_server_error() {
            return Err(Failed::Retry(format!("{base} answered {status}")));
        }
        if !status.is_success() {
            return Err(Failed::Final(PriceError::Unavailable(format!(
                "{base} answered {status}"
            ))));
        }
        response
            .json::<Priced>()
            .await
            .map_err(|e| Failed::Retry(describe(base, &e)))
    }
}

fn describe(base: &str, e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "refused the connection"
    } else {
        "failed"
    };
    format!("{base} {kind}: {e}")
}

/// Full jitter (AWS's "exponential backoff and jitter"): a random wait up to the exponential
/// bound, so retries of many requests spread out instead of arriving together.
fn jitter(attempt: u32) -> Duration {
    let bound = BACKOFF_BASE.saturating_mul(1 << attempt.min(6));
    bound.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replica_list_ignores_blanks_and_trailing_slashes() {
        let c = Catalog::new(
            reqwest::Client::new(),
            " http://a/ ,,http://b",
            Duration::from_secs(1),
            3,
        )
        .unwrap();
        assert_eq!(&*c.replicas, ["http://a", "http://b"]);
        assert!(Catalog::new(reqwest::Client::new(), " , ", Duration::from_secs(1), 3).is_none());
    }

    #[test]
    fn jitter_stays_under_its_exponential_bound() {
        for attempt in 1..5 {
            assert!(jitter(attempt) <= BACKOFF_BASE * (1 << attempt));
        }
    }
}
