//! `spawn_app()` and friends: the payments service started by the shared harness, beside the
//! in-test PSP stand-in ([`crate::stand_in`]), a tap on what payments publishes, and the test's
//! own webhook signers: an HMAC for Stripe here, and [`crate::pki`]'s RSA key and certificates.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use lab_config::SecretString;
use lab_contracts::{CreatePaymentSession, Money};
use lab_payments::{NAME, PayPalSettings, Settings, StripeSettings};
use lab_test_support::{Bus, ServiceMigrator, TestApp, TestEnv};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

use crate::pki::Pki;
use crate::stand_in::{self, PspLog};

/// The migrations the test template holds.
pub const MIGRATIONS: &[ServiceMigrator] = &[(NAME, &lab_payments::MIGRATOR)];

/// The Stripe webhook secrets the service trusts in tests (two: a rotation in progress).
pub const STRIPE_OLD: &str = "whsec_old_test";
pub const STRIPE_NEW: &str = "whsec_new_test";
/// The PayPal webhook id in tests.
pub const WEBHOOK_ID: &str = "WH-TEST";
/// The administrator's token in tests.
pub const ADMIN: &str = "test-admin-token";
/// How long a message may take through outbox, relay and broker.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Settings wiring the service to `env`'s infrastructure (PSP at a closed port).
pub fn settings(env: &TestEnv) -> Settings {
    Settings {
        http: env.http(1),
        database: env.database(NAME),
        amqp: env.amqp(),
        ..Settings::default()
    }
}

/// A fresh environment (its own database).
pub async fn env() -> TestEnv {
    TestEnv::builder().with_database(MIGRATIONS).start().await
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with_routes(axum::Router::new()).await
}

/// The service with test-only `routes` added.
pub async fn spawn_app_with_routes(routes: axum::Router) -> TestApp {
    let env = env().await;
    env.spawn_with_routes(lab_payments::build, settings(&env), routes)
        .await
}

// ---- the harness ----

/// Payments, the in-test PSP, the PKI and a tap on `payments.#`.
pub struct Harness {
    pub app: TestApp,
    pub bus: Bus,
    pub pki: Arc<Pki>,
    pub psp: Arc<Mutex<PspLog>>,
    /// `http://127.0.0.1:<port>` of the in-test PSP.
    pub psp_url: String,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(|s| s).await
    }

    /// Starts everything, letting `tune` adjust the service's settings last.
    pub async fn start_with(tune: impl FnOnce(Settings) -> Settings) -> Self {
        let pki = Arc::new(Pki::generate());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let psp_addr = listener.local_addr().unwrap();
        let psp_url = format!("http://{psp_addr}");
        let log = Arc::new(Mutex::new(PspLog::default()));
        let router = stand_in::router(
            log.clone(),
            psp_url.clone(),
            pki.leaf_pem.clone(),
            pki.rogue_leaf_pem.clone(),
        );
        tokio::spawn(async move { axum::serve(listener, router).await });

        let env = env().await;
        let ca_file = std::env::temp_dir().join(format!("lab-payments-ca-{}.pem", Uuid::now_v7()));
        std::fs::write(&ca_file, &pki.ca_pem).unwrap();
        let base = settings(&env);
        let settings = tune(Settings {
            stripe: StripeSettings {
                api_url: format!("{psp_url}/stripe"),
                webhook_secrets: SecretString::new(format!("{STRIPE_OLD}, {STRIPE_NEW}")),
                ..StripeSettings::default()
            },
            paypal: PayPalSettings {
                api_url: format!("{psp_url}/paypal"),
                webhook_id: WEBHOOK_ID.into(),
                ca_pem_file: ca_file.to_string_lossy().into_owned(),
                cert_url_hosts: format!("127.0.0.1:{}", psp_addr.port()),
                ..PayPalSettings::default()
            },
            admin_token: Some(SecretString::new(ADMIN)),
            provider_attempt_timeout_ms: 2_000,
            ..base
        });
        let consumers = [(NAME, lab_payments::commands::routing_keys())];
        let bus = Bus::connect(&env, &consumers, "payments.#").await;
        let app = env.spawn(lab_payments::build, settings).await;
        Self {
            app,
            bus,
            pki,
            psp: log,
            psp_url,
        }
    }

    /// The PSP's log so far.
    pub fn calls(&self) -> Vec<String> {
        self.psp
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .calls
            .clone()
    }

    /// Sends CreatePaymentSession and waits for PaymentSessionCreated.
    pub async fn open_session(&self, order_id: Uuid, provider: &str, minor: i64) -> Value {
        self.bus
            .send(&CreatePaymentSession {
                order_id,
                amount: Money {
                    amount_minor: minor,
                    currency: "EUR".into(),
                },
                provider: provider.into(),
                expires_at: Utc::now() + chrono::Duration::minutes(30),
            })
            .await;
        let seen = self.bus.until("payments.session-created").await;
        seen.last().unwrap().payload.clone()
    }

    /// `GET /payments/{order_id}` → (status, body).
    pub async fn payment(&self, order_id: Uuid) -> (u16, Value) {
        let (status, body) = self.app.get_json(&format!("/payments/{order_id}")).await;
        (status.as_u16(), body)
    }

    /// POSTs a Stripe webhook with `signature` as its header (none when `None`).
    pub async fn stripe(&self, body: &str, signature: Option<String>) -> (u16, Value) {
        let mut request = self
            .app
            .client
            .post(self.app.url("/webhooks/stripe"))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(signature) = signature {
            request = request.header("stripe-signature", signature);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POSTs a PayPal webhook signed by the test's key, its certificate at `cert_url`.
    pub async fn paypal(&self, body: &str, cert_url: &str, tamper: bool) -> (u16, Value) {
        let id = Uuid::now_v7().to_string();
        let time = Utc::now().to_rfc3339();
        let crc = crc32fast::hash(body.as_bytes());
        let signed = format!("{id}|{time}|{WEBHOOK_ID}|{crc}");
        let mut signature = self.pki.sign(&signed);
        if tamper {
            signature = self.pki.sign(&format!("{signed}x"));
        }
        let response = self
            .app
            .client
            .post(self.app.url("/webhooks/paypal"))
            .header("content-type", "application/json")
            .header("paypal-transmission-id", id)
            .header("paypal-transmission-time", time)
            .header("paypal-transmission-sig", signature)
            .header("paypal-auth-algo", "SHA256withRSA")
            .header("paypal-cert-url", cert_url)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The certificate URL of the trusted leaf on the in-test PSP.
    pub fn cert_url(&self) -> String {
        format!("{}/certs/leaf.pem", self.psp_url)
    }

    /// Certificate downloads so far.
    pub fn cert_fetches(&self) -> usize {
        self.psp
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cert_fetches
    }
}

/// `Stripe-Signature` for `body` at time `t`, one `v1` per secret, computed here.
pub fn stripe_signature(t: i64, body: &str, secrets: &[&str]) -> String {
    let mut header = format!("t={t}");
    for secret in secrets {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        header.push_str(&format!(",v1={}", hex::encode(mac.finalize().into_bytes())));
    }
    header
}

/// A Stripe event about order `order_id`'s intent.
pub fn stripe_event(event_id: &str, kind: &str, order_id: Uuid, amount: i64) -> String {
    json!({
        "id": event_id,
        "object": "event",
        "type": kind,
        "created": Utc::now().timestamp(),
        "data": {"object": {
            "id": format!("pi_{order_id}"),
            "object": "payment_intent",
            "metadata": {"order_id": order_id.to_string()},
            "amount": amount,
            "amount_capturable": amount,
            "amount_received": if kind == "payment_intent.succeeded" { amount } else { 0 },
            "currency": "eur",
        }},
    })
    .to_string()
}

/// Now, as a Stripe timestamp.
pub fn now() -> i64 {
    Utc::now().timestamp()
}
