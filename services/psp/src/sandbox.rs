//! The sandbox's shared state and its scenario knobs.
//!
//! One [`Ledger`] behind a mutex holds both providers' books: every call runs synchronously
//! under the lock (nothing in it awaits), so state transitions, idempotency records and the
//! order in which webhooks are queued can never interleave between two requests. A
//! [`Scenario`] rides on each session and tells the buyer and the webhook queue how to misbehave.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::webhooks::{Event, Provider, Webhooks};
use crate::{Settings, paypal, stripe};

/// How the buyer and the webhook queue behave for one session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Wait this long before the first attempt of each event.
    pub webhook_delay_ms: u64,
    /// Deliver each event twice: same event id, fresh signature.
    pub duplicate_webhooks: bool,
    /// Hold the first event of a burst back and send it after the next one.
    pub out_of_order: bool,
    /// Lose the first attempt of each event (never sent); the retry delivers it.
    pub drop_first_attempt: bool,
    /// Sign the first attempt of each event wrongly; the retry is signed correctly.
    pub corrupt_signature_first_attempt: bool,
    /// Authorize this many minor units more (or, negative, fewer) than was asked.
    pub authorize_amount_delta_minor: i64,
    /// Refuse every capture.
    pub fail_capture: bool,
    /// What the buyer does the moment the session is created.
    pub auto: Auto,
}

/// The buyer's automatic reaction to a new session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Auto {
    /// Wait for the hosted page or the sandbox API.
    #[default]
    None,
    /// Approve at once.
    Approve,
    /// Decline at once.
    Decline,
}

/// A slow webhook is slower than a payments handler's patience for a first event but far
/// below any deadline: 2 s shows the waiting in the UI without stalling a demo.
const SLOW_WEBHOOK_MS: u64 = 2_000;

impl Scenario {
    /// The named presets an order may carry in its `lab_scenario` metadata.
    pub fn preset(name: &str) -> Option<Self> {
        let base = Self::default();
        Some(match name {
            "none" | "default" => base,
            "decline" => Self {
                auto: Auto::Decline,
                ..base
            },
            "duplicate" => Self {
                duplicate_webhooks: true,
                ..base
            },
            "out_of_order" => Self {
                out_of_order: true,
                ..base
            },
            "amount_mismatch" => Self {
                authorize_amount_delta_minor: -1,
                ..base
            },
            "capture_failure" => Self {
                fail_capture: true,
                ..base
            },
            "slow_webhook" => Self {
                webhook_delay_ms: SLOW_WEBHOOK_MS,
                ..base
            },
            "corrupt_signature" => Self {
                corrupt_signature_first_attempt: true,
                ..base
            },
            _ => return None,
        })
    }
}

/// Both providers' books.
#[derive(Default)]
pub struct Ledger {
    /// Checkout sessions, payment intents, refunds, idempotency keys.
    pub stripe: stripe::Books,
    /// Orders, authorizations, captures, refunds, tokens, request ids.
    pub paypal: paypal::Books,
}

/// Webhooks decided under the ledger lock, queued before it is released so that two requests
/// on one session queue their events in the order their transitions happened.
#[derive(Default)]
pub struct Outbox(Vec<(String, Provider, Scenario, Vec<Event>)>);

impl Outbox {
    /// Queues `events` of `session`, in order, under that session's scenario.
    pub fn push(
        &mut self,
        session: &str,
        provider: Provider,
        scenario: &Scenario,
        events: Vec<Event>,
    ) {
        self.0
            .push((session.to_owned(), provider, scenario.clone(), events));
    }
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct Psp {
    /// The settings the service started with.
    pub settings: Arc<Settings>,
    /// Base of hosted-page and certificate links; set once the listener is bound.
    pub public_url: Arc<OnceLock<String>>,
    /// Both providers' state.
    ledger: Arc<Mutex<Ledger>>,
    /// The delivery queue.
    pub webhooks: Webhooks,
    /// The leaf certificate (PEM) served at `/paypal/certs/leaf.pem`.
    pub leaf_cert_pem: Arc<str>,
}

impl Psp {
    pub fn new(
        settings: Arc<Settings>,
        public_url: Arc<OnceLock<String>>,
        webhooks: Webhooks,
        leaf_cert_pem: Arc<str>,
    ) -> Self {
        Self {
            settings,
            public_url,
            ledger: Arc::default(),
            webhooks,
            leaf_cert_pem,
        }
    }

    /// The base URL links point at.
    pub fn base_url(&self) -> &str {
        self.public_url.get().map(String::as_str).unwrap_or("")
    }

    /// Runs `f` on the ledger (after expiring what is due) and queues the webhooks it decided,
    /// all under one lock.
    pub fn with_ledger<T>(&self, f: impl FnOnce(&mut Ledger, &mut Outbox) -> T) -> T {
        let mut ledger = self.lock();
        let mut outbox = Outbox::default();
        stripe::expire_due(&mut ledger.stripe, now(), &mut outbox);
        let result = f(&mut ledger, &mut outbox);
        for (session, provider, scenario, events) in outbox.0 {
            self.webhooks.send(&session, provider, &scenario, events);
        }
        result
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        // A poisoned lock means a handler panicked mid-transition; the sandbox keeps serving
        // what is there rather than failing every later call.
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What an idempotency key already answered.
pub enum Replay {
    /// Not seen: run the call.
    Miss,
    /// Seen with the same parameters: answer this again.
    Same(u16, Value),
    /// Seen with different parameters.
    Conflict,
}

/// Answers remembered per idempotency key, with the parameters they were given for.
#[derive(Default)]
pub struct Idempotency(HashMap<String, (String, u16, Value)>);

impl Idempotency {
    /// What `key` answered before, if anything, for `fingerprint` (method, path, parameters).
    pub fn check(&self, key: &str, fingerprint: &str) -> Replay {
        match self.0.get(key) {
            None => Replay::Miss,
            Some((seen, status, body)) if seen == fingerprint => {
                Replay::Same(*status, body.clone())
            }
            Some(_) => Replay::Conflict,
        }
    }

    /// Remembers a successful answer.
    pub fn remember(&mut self, key: &str, fingerprint: String, status: u16, body: &Value) {
        self.0
            .insert(key.to_owned(), (fingerprint, status, body.clone()));
    }
}

/// `prefix` followed by `len` random letters and digits, like the providers' ids.
pub fn new_id(prefix: &str, len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    let mut id = String::with_capacity(prefix.len() + len);
    id.push_str(prefix);
    for _ in 0..len {
        let i = rng.random_range(0..alphabet.len());
        id.push(char::from(alphabet[i]));
    }
    id
}

/// Stripe's id alphabet.
pub const MIXED: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// PayPal's id alphabet.
pub const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// Unix seconds now.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// RFC 3339 UTC, second precision, as PayPal writes times.
pub fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
