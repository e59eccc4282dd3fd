//! `spawn_app()` and friends: the payments service started by the shared harness, beside an
//! in-test stand-in for the PSP (the calls the adapters make, and the PayPal signing
//! certificate), a tap on what payments publishes, and the test's own webhook signers: an HMAC for
//! Stripe and an RSA key with CA and leaf certificates made here, independent of production code.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::routing::{get, post};
use base64::Engine as _;
use chrono::Utc;
use hmac::{Hmac, Mac};
use lab_config::SecretString;
use lab_contracts::{CreatePaymentSession, Money};
use lab_payments::{NAME, PayPalSettings, Settings, StripeSettings};
use lab_test_support::{Bus, ServiceMigrator, TestApp, TestEnv};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

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

// ---- the in-test PSP ----

/// What the in-test PSP was asked, and how it should answer.
#[derive(Default)]
pub struct PspLog {
    /// `"<path> <idempotency key>"` of every call, in order.
    pub calls: Vec<String>,
    /// Certificate downloads.
    pub cert_fetches: usize,
    /// Refuse captures (as a PSP told to fail them).
    pub fail_capture: bool,
    /// Answer 503 to the next N calls (a blip the adapter retries through).
    pub unavailable: usize,
}

#[derive(Clone)]
struct Psp {
    log: Arc<Mutex<PspLog>>,
    base: String,
    leaf_pem: Arc<String>,
    rogue_pem: Arc<String>,
}

impl Psp {
    fn note(&self, what: String) -> Result<(), axum::http::StatusCode> {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.unavailable > 0 {
            log.unavailable -= 1;
            return Err(axum::http::StatusCode::SERVICE_UNAVAILABLE);
        }
        log.calls.push(what);
        Ok(())
    }
}

type Answer = Result<axum::Json<Value>, (axum::http::StatusCode, axum::Json<Value>)>;

fn blip(status: axum::http::StatusCode) -> (axum::http::StatusCode, axum::Json<Value>) {
    (status, axum::Json(json!({"error": {"type": "api_error"}})))
}

fn key(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("idempotency-key")
        .or_else(|| headers.get("paypal-request-id"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

async fn create_session(
    State(psp): State<Psp>,
    headers: axum::http::HeaderMap,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Answer {
    psp.note(format!("sessions {}", key(&headers)))
        .map_err(blip)?;
    let order = form.get("metadata[order_id]").cloned().unwrap_or_default();
    Ok(axum::Json(json!({
        "id": format!("cs_test_{order}"),
        "object": "checkout.session",
        "url": format!("{}/pay/cs_test_{order}", psp.base),
        "payment_intent": format!("pi_{order}"),
        "status": "open",
    })))
}

async fn capture(
    State(psp): State<Psp>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Answer {
    psp.note(format!("capture {}", key(&headers)))
        .map_err(blip)?;
    if psp
        .log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .fail_capture
    {
        return Err((
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"type": "invalid_request_error",
                "code": "payment_intent_unexpected_state", "message": "capture refused"}})),
        ));
    }
    let amount: i64 = form
        .get("amount_to_capture")
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    Ok(axum::Json(
        json!({"id": id, "object": "payment_intent", "status": "succeeded",
        "amount_received": amount, "currency": "eur"}),
    ))
}

async fn cancel(
    State(psp): State<Psp>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Answer {
    psp.note(format!("cancel {}", key(&headers)))
        .map_err(blip)?;
    Ok(axum::Json(
        json!({"id": id, "object": "payment_intent", "status": "canceled"}),
    ))
}

async fn expire(
    State(psp): State<Psp>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Answer {
    psp.note(format!("expire {}", key(&headers)))
        .map_err(blip)?;
    Ok(axum::Json(
        json!({"id": id, "object": "checkout.session", "status": "expired"}),
    ))
}

async fn refund(State(psp): State<Psp>, headers: axum::http::HeaderMap) -> Answer {
    psp.note(format!("refund {}", key(&headers)))
        .map_err(blip)?;
    Ok(axum::Json(
        json!({"id": "re_test", "object": "refund", "amount": 1234, "currency": "eur"}),
    ))
}

async fn paypal_token(State(psp): State<Psp>) -> Answer {
    psp.note("token".into()).map_err(blip)?;
    Ok(axum::Json(
        json!({"access_token": "A21-test", "token_type": "Bearer", "expires_in": 32400}),
    ))
}

async fn paypal_order(
    State(psp): State<Psp>,
    headers: axum::http::HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Answer {
    psp.note(format!(
        "orders {} {}",
        key(&headers),
        body["purchase_units"][0]["amount"]["value"]
    ))
    .map_err(blip)?;
    let order = body["purchase_units"][0]["custom_id"]
        .as_str()
        .unwrap_or_default();
    Ok(axum::Json(json!({
        "id": format!("PAYID-{order}"),
        "status": "CREATED",
        "links": [
            {"rel": "self", "href": format!("{}/paypal/v2/checkout/orders/PAYID-{order}", psp.base)},
            {"rel": "approve", "href": format!("{}/pay/PAYID-{order}", psp.base)},
        ],
    })))
}

async fn paypal_capture(
    State(psp): State<Psp>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Answer {
    psp.note(format!("capture {id} {}", key(&headers)))
        .map_err(blip)?;
    Ok(axum::Json(
        json!({"id": "CAPTURE-1", "status": "COMPLETED", "amount": body["amount"]}),
    ))
}

async fn paypal_void(
    State(psp): State<Psp>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Answer {
    psp.note(format!("void {id} {}", key(&headers)))
        .map_err(blip)?;
    Ok(axum::Json(json!({"id": id, "status": "VOIDED"})))
}

async fn paypal_refund(
    State(psp): State<Psp>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Answer {
    psp.note(format!("refund {id} {}", key(&headers)))
        .map_err(blip)?;
    Ok(axum::Json(json!({"id": "REFUND-1", "status": "COMPLETED",
        "amount": {"currency_code": "EUR", "value": "12.34"}})))
}

async fn leaf_cert(State(psp): State<Psp>) -> String {
    psp.log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .cert_fetches += 1;
    (*psp.leaf_pem).clone()
}

async fn rogue_cert(State(psp): State<Psp>) -> String {
    psp.log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .cert_fetches += 1;
    (*psp.rogue_pem).clone()
}

// ---- the test's own PKI ----

/// A CA, a leaf it issued for an RSA key, and a leaf for the same key issued by another CA.
pub struct Pki {
    pub ca_pem: String,
    pub leaf_pem: String,
    pub rogue_leaf_pem: String,
    key: rsa::RsaPrivateKey,
}

impl Pki {
    pub fn generate() -> Self {
        let mut rng = rsa::rand_core::OsRng;
        let key = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let pkcs8 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let leaf_key =
            rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256).unwrap();
        let ca = |name: &str| {
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let cert = params.self_signed(&ca_key).unwrap();
            (cert, ca_key)
        };
        let leaf = |ca: &(rcgen::Certificate, rcgen::KeyPair)| {
            let mut params =
                rcgen::CertificateParams::new(vec!["messageverificationcerts.test".into()])
                    .unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "webhook signer");
            params.signed_by(&leaf_key, &ca.0, &ca.1).unwrap().pem()
        };
        let trusted = ca("Lab test CA");
        let rogue = ca("Lab test CA");
        Self {
            ca_pem: trusted.0.pem(),
            leaf_pem: leaf(&trusted),
            rogue_leaf_pem: leaf(&rogue),
            key,
        }
    }

    /// Base64 RSA PKCS#1 v1.5 SHA-256 over PayPal's transmission string.
    pub fn sign(&self, message: &str) -> String {
        let signer = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(self.key.clone());
        let signature = signer.sign(message.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())
    }
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
        let psp = Psp {
            log: log.clone(),
            base: psp_url.clone(),
            leaf_pem: Arc::new(pki.leaf_pem.clone()),
            rogue_pem: Arc::new(pki.rogue_leaf_pem.clone()),
        };
        let router = Router::new()
            .route("/stripe/v1/checkout/sessions", post(create_session))
            .route("/stripe/v1/checkout/sessions/{id}/expire", post(expire))
            .route("/stripe/v1/payment_intents/{id}/capture", post(capture))
            .route("/stripe/v1/payment_intents/{id}/cancel", post(cancel))
            .route("/stripe/v1/refunds", post(refund))
            .route("/paypal/v1/oauth2/token", post(paypal_token))
            .route("/paypal/v2/checkout/orders", post(paypal_order))
            .route(
                "/paypal/v2/payments/authorizations/{id}/capture",
                post(paypal_capture),
            )
            .route(
                "/paypal/v2/payments/authorizations/{id}/void",
                post(paypal_void),
            )
            .route(
                "/paypal/v2/payments/captures/{id}/refund",
                post(paypal_refund),
            )
            .route("/certs/leaf.pem", get(leaf_cert))
            .route("/certs/rogue.pem", get(rogue_cert))
            .with_state(psp);
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
