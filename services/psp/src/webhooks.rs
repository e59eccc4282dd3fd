//! Webhook delivery: one ordered queue per session, retries with backoff, the scenario knobs,
//! and a log of every attempt.
//!
//! Each session with events in flight has one worker task (tracked, stopped by the shutdown
//! token) that sends its events one after the other, each until it is answered 2xx or has had
//! [`WebhookSettings::max_attempts`]. The worker exits when its queue is empty; the next event
//! starts a new one. The knobs act here: delay, duplicates, reordering, a dropped or wrongly
//! signed first attempt.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use lab_config::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::sandbox::{MIXED, Scenario, new_id, now, rfc3339};
use crate::signing::{PaypalSigner, paypal_message, stripe_header};

/// How webhooks are delivered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookSettings {
    /// The first retry waits this long; each next one twice as long.
    pub backoff_base_ms: u64,
    /// No retry waits longer than this.
    pub backoff_cap_ms: u64,
    /// Attempts per event before the sandbox gives up on it.
    pub max_attempts: u32,
    /// How long one attempt may take.
    pub timeout_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            // PROTOCOL.md: 0.5 s × 2ⁿ capped at 30 s, at most 10 attempts (about 2 minutes
            // in all: long enough to ride out a payments restart, short enough to see give-up).
            backoff_base_ms: 500,
            backoff_cap_ms: 30_000,
            max_attempts: 10,
            // A webhook handler answers in milliseconds; 5 s is a stuck one, and a stuck
            // receiver must not hold a session's queue much longer than that.
            timeout_ms: 5_000,
        }
    }
}

/// The attempt log keeps the latest 10 000 attempts: far more than a test or the pages look
/// at, and bounded when a benchmark creates sessions for an hour.
const LOG_CAPACITY: usize = 10_000;

/// Which provider's format and signature an event uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Stripe,
    Paypal,
}

/// One event, serialised once: every attempt and duplicate sends the same bytes.
#[derive(Debug, Clone)]
pub struct Event {
    /// `evt_…` or `WH-…`.
    pub id: String,
    /// `payment_intent.succeeded`, `PAYMENT.CAPTURE.COMPLETED`, …
    pub kind: String,
    /// The raw JSON body.
    pub body: Arc<[u8]>,
}

impl Event {
    /// A Stripe event wrapping `object`.
    pub fn stripe(kind: &str, object: Value) -> Self {
        let id = new_id("evt_", 24, MIXED);
        let body = json!({"id": id, "object": "event", "type": kind, "created": now(),
            "livemode": false, "data": {"object": object}});
        Self::new(id, kind, &body)
    }

    /// A PayPal event wrapping `resource`.
    pub fn paypal(kind: &str, resource_type: &str, resource: Value) -> Self {
        let id = format!("WH-{}", uuid::Uuid::new_v4().simple()).to_uppercase();
        let body = json!({"id": id, "event_version": "1.0", "event_type": kind,
            "create_time": rfc3339(now()), "resource_type": resource_type, "resource": resource});
        Self::new(id, kind, &body)
    }

    fn new(id: String, kind: &str, body: &Value) -> Self {
        Self {
            id,
            kind: kind.to_owned(),
            body: body.to_string().into_bytes().into(),
        }
    }
}

/// One delivery attempt, as `GET /sandbox/webhooks` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    /// The Stripe session or PayPal order the event belongs to.
    pub session: String,
    /// The event's id (the same on retries and duplicates).
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// 1 for the first attempt of this copy of the event.
    pub attempt: u32,
    /// Whether this is the second copy sent by `duplicate_webhooks`.
    pub duplicate: bool,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    /// `delivered`, `failed`, `dropped`, `error`, `gave_up` or `no_endpoint`.
    pub outcome: String,
    /// Whether the signature was deliberately wrong.
    pub signature_corrupted: bool,
    /// Why a transport error happened.
    pub error: Option<String>,
    /// When, RFC 3339.
    pub at: String,
}

/// Where and how each provider's events are sent.
pub struct Endpoints {
    /// Stripe webhook URL; empty sends nothing.
    pub stripe_url: String,
    /// Secrets to sign Stripe events with, one `v1` each.
    pub stripe_secrets: Vec<SecretString>,
    /// PayPal webhook URL; empty sends nothing.
    pub paypal_url: String,
    /// PayPal's webhook id, part of the signed string.
    pub paypal_webhook_id: String,
    /// The PayPal signing key.
    pub signer: PaypalSigner,
    /// Base URL of `PAYPAL-CERT-URL`, known once the listener is bound.
    pub public_url: Arc<OnceLock<String>>,
}

/// A session's worth of events queued together, with the scenario that applies.
struct Batch {
    /// Whose format and signature.
    provider: Provider,
    /// The session's scenario when the events were decided.
    scenario: Scenario,
    /// In the order they happened.
    events: Vec<Event>,
}

/// The delivery queue; cheap to clone.
#[derive(Clone)]
pub struct Webhooks(Arc<Inner>);

struct Inner {
    /// Retries, backoff and timeout.
    settings: WebhookSettings,
    /// Where and how to send.
    endpoints: Endpoints,
    /// Shared by every worker; carries the per-attempt timeout.
    client: reqwest::Client,
    /// Per session with a live worker, the sender of its queue.
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<Batch>>>,
    /// The latest [`LOG_CAPACITY`] attempts, oldest first.
    log: Mutex<VecDeque<Attempt>>,
    /// Tracks the workers.
    tracker: TaskTracker,
    /// Stops the workers.
    shutdown: CancellationToken,
}

impl Webhooks {
    pub fn new(
        settings: WebhookSettings,
        endpoints: Endpoints,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            // Receivers are the lab's own services: a proxy from the environment must not
            // capture loopback deliveries.
            .no_proxy()
            .build()?;
        Ok(Self(Arc::new(Inner {
            settings,
            endpoints,
            client,
            queues: Mutex::default(),
            log: Mutex::default(),
            tracker,
            shutdown,
        })))
    }

    /// Queues `events` of `session` behind whatever that session already has in flight.
    pub fn send(&self, session: &str, provider: Provider, scenario: &Scenario, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let batch = Batch {
            provider,
            scenario: scenario.clone(),
            events,
        };
        let mut queues = lock(&self.0.queues);
        let batch = match queues.get(session) {
            Some(queue) => match queue.send(batch) {
                Ok(()) => return,
                Err(mpsc::error::SendError(batch)) => batch,
            },
            None => batch,
        };
        let (queue, rx) = mpsc::unbounded_channel();
        // The receiver is alive: it is in this scope.
        let _ = queue.send(batch);
        queues.insert(session.to_owned(), queue);
        let inner = self.0.clone();
        let session = session.to_owned();
        self.0.tracker.spawn(async move {
            let shutdown = inner.shutdown.clone();
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = inner.drain(&session, rx) => {}
            }
        });
    }

    /// Every attempt for `session` (every attempt at all when `None`), oldest first.
    pub fn attempts(&self, session: Option<&str>) -> Vec<Attempt> {
        lock(&self.0.log)
            .iter()
            .filter(|a| session.is_none_or(|s| a.session == s))
            .cloned()
            .collect()
    }
}

impl Inner {
    /// Sends the session's batches in order until its queue is empty, then retires the queue.
    async fn drain(&self, session: &str, mut rx: mpsc::UnboundedReceiver<Batch>) {
        loop {
            let batch = match rx.try_recv() {
                Ok(batch) => batch,
                Err(_) => {
                    // Checked again under the lock `send` holds, so no batch slips in between.
                    let mut queues = lock(&self.queues);
                    match rx.try_recv() {
                        Ok(batch) => batch,
                        Err(_) => {
                            queues.remove(session);
                            return;
                        }
                    }
                }
            };
            self.deliver_batch(session, batch).await;
        }
    }

    async fn deliver_batch(&self, session: &str, batch: Batch) {
        let Batch {
            provider,
            scenario,
            mut events,
        } = batch;
        if scenario.out_of_order && events.len() >= 2 {
            events.swap(0, 1);
        }
        for event in &events {
            if scenario.webhook_delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(scenario.webhook_delay_ms)).await;
            }
            self.deliver(session, provider, event, &scenario, false)
                .await;
            if scenario.duplicate_webhooks {
                self.deliver(session, provider, event, &Scenario::default(), true)
                    .await;
            }
        }
    }

    /// Sends one event until it is answered 2xx or the attempts run out.
    async fn deliver(
        &self,
        session: &str,
        provider: Provider,
        event: &Event,
        scenario: &Scenario,
        duplicate: bool,
    ) {
        let url = match provider {
            Provider::Stripe => &self.endpoints.stripe_url,
            Provider::Paypal => &self.endpoints.paypal_url,
        };
        let record = |attempt, status, outcome: &str, corrupted, error| Attempt {
            session: session.to_owned(),
            event_id: event.id.clone(),
            event_type: event.kind.clone(),
            attempt,
            duplicate,
            status,
            outcome: outcome.to_owned(),
            signature_corrupted: corrupted,
            error,
            at: rfc3339(now()),
        };
        if url.is_empty() {
            self.log(record(0, None, "no_endpoint", false, None));
            return;
        }
        let max = self.settings.max_attempts.max(1);
        for attempt in 1..=max {
            let first = attempt == 1;
            let mut entry = if first && scenario.drop_first_attempt {
                record(attempt, None, "dropped", false, None)
            } else {
                let corrupt = first && scenario.corrupt_signature_first_attempt;
                match self.post(url, provider, event, corrupt).await {
                    Ok(status) if (200..300).contains(&status) => {
                        self.log(record(attempt, Some(status), "delivered", corrupt, None));
                        return;
                    }
                    Ok(status) => record(attempt, Some(status), "failed", corrupt, None),
                    Err(e) => record(attempt, None, "error", corrupt, Some(e)),
                }
            };
            if attempt == max {
                tracing::warn!(session, event = %event.id, attempts = max, "webhook given up");
                entry.outcome = "gave_up".into();
                self.log(entry);
                return;
            }
            self.log(entry);
            tokio::time::sleep(backoff(&self.settings, attempt)).await;
        }
    }

    /// One signed POST; the receiver's status, or why there was none.
    async fn post(
        &self,
        url: &str,
        provider: Provider,
        event: &Event,
        corrupt: bool,
    ) -> Result<u16, String> {
        let mut request = self
            .client
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(event.body.to_vec());
        match provider {
            Provider::Stripe => {
                let wrong = [SecretString::new("whsec_corrupted_by_the_sandbox")];
                let secrets = if corrupt {
                    &wrong[..]
                } else {
                    &self.endpoints.stripe_secrets
                };
                request = request.header(
                    "Stripe-Signature",
                    stripe_header(secrets, now(), &event.body),
                );
            }
            Provider::Paypal => {
                let endpoints = &self.endpoints;
                let transmission_id = uuid::Uuid::new_v4().to_string();
                let time = rfc3339(now());
                let mut message = paypal_message(
                    &transmission_id,
                    &time,
                    &endpoints.paypal_webhook_id,
                    &event.body,
                );
                if corrupt {
                    message.insert_str(0, "corrupted-by-the-sandbox|");
                }
                let signature = endpoints.signer.sign(&message).map_err(|e| e.to_string())?;
                let base = endpoints.public_url.get().map(String::as_str).unwrap_or("");
                request = request
                    .header("PAYPAL-TRANSMISSION-ID", transmission_id)
                    .header("PAYPAL-TRANSMISSION-TIME", time)
                    .header("PAYPAL-AUTH-ALGO", "SHA256withRSA")
                    .header("PAYPAL-CERT-URL", format!("{base}/paypal/certs/leaf.pem"))
                    .header("PAYPAL-TRANSMISSION-SIG", signature);
            }
        }
        match request.send().await {
            Ok(response) => Ok(response.status().as_u16()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn log(&self, attempt: Attempt) {
        let mut log = lock(&self.log);
        if log.len() == LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(attempt);
    }
}

/// The wait after failed attempt `n` (1-based): base × 2ⁿ⁻¹, capped.
fn backoff(settings: &WebhookSettings, n: u32) -> Duration {
    let factor = 1_u64.checked_shl(n.saturating_sub(1)).unwrap_or(u64::MAX);
    let ms = settings
        .backoff_base_ms
        .saturating_mul(factor)
        .min(settings.backoff_cap_ms);
    Duration::from_millis(ms)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these; if something did, the data is still usable.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_half_a_second_and_stops_at_thirty() {
        let settings = WebhookSettings::default();

        let waits: Vec<u64> = (1..=9)
            .map(|n| backoff(&settings, n).as_millis() as u64)
            .collect();

        assert_eq!(
            waits,
            [
                500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000
            ]
        );
        assert_eq!(backoff(&settings, 200), Duration::from_secs(30));
    }
}
