//! `spawn_app()` and friends: the PSP started by the shared harness, a webhook receiver that
//! records what it is sent, and clients for both providers' APIs.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use lab_config::SecretString;
use lab_psp::Settings;
use lab_test_support::{TestApp, TestEnv, eventually};
use reqwest::Response;
use serde_json::Value;

/// The test API key and OAuth client.
pub const SECRET_KEY: &str = "sk_test_in_tests";
pub const CLIENT_ID: &str = "client-in-tests";
pub const CLIENT_SECRET: &str = "secret-in-tests";
/// Two Stripe secrets: the tests sign during a rotation.
pub const OLD_SECRET: &str = "whsec_old";
pub const NEW_SECRET: &str = "whsec_new";
pub const WEBHOOK_ID: &str = "WH-TESTS";
/// How long a webhook may take to arrive: retries here wait milliseconds, so this only trips
/// when delivery is broken.
pub const DELIVERY_DEADLINE: Duration = Duration::from_secs(10);

/// One certificate directory for every test process: RSA key generation is the slow part of
/// start-up, and `certs::ensure` is safe to race.
pub fn cert_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("psp-certs")
}

/// Settings wiring the service to `env`, with retries measured in milliseconds.
pub fn settings(env: &TestEnv) -> Settings {
    let mut settings = Settings {
        http: env.http(1),
        ..Settings::default()
    };
    settings.stripe.secret_key = SecretString::new(SECRET_KEY);
    settings.stripe.webhook_secrets = SecretString::new(format!("{OLD_SECRET},{NEW_SECRET}"));
    settings.paypal.client_id = CLIENT_ID.into();
    settings.paypal.client_secret = SecretString::new(CLIENT_SECRET);
    settings.paypal.webhook_id = WEBHOOK_ID.into();
    settings.paypal.cert_dir = cert_dir();
    settings.webhooks.backoff_base_ms = 5;
    settings.webhooks.backoff_cap_ms = 40;
    settings.webhooks.timeout_ms = 2_000;
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with_routes(axum::Router::new()).await
}

/// The service with test-only `routes` added.
pub async fn spawn_app_with_routes(routes: axum::Router) -> TestApp {
    let env = TestEnv::builder().start().await;
    env.spawn_with_routes(lab_psp::build, settings(&env), routes)
        .await
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub headers: HashMap<String, String>,
    pub body: String,
    pub json: Value,
}

impl Hit {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map_or("", String::as_str)
    }

    /// `type` (Stripe) or `event_type` (PayPal).
    pub fn kind(&self) -> &str {
        self.json["type"]
            .as_str()
            .or_else(|| self.json["event_type"].as_str())
            .unwrap_or_default()
    }

    pub fn id(&self) -> &str {
        self.json["id"].as_str().unwrap_or_default()
    }
}

#[derive(Clone, Default)]
struct Recorded {
    hits: Arc<Mutex<Vec<Hit>>>,
    /// Statuses to answer, in order; 200 once they run out.
    script: Arc<Mutex<VecDeque<u16>>>,
}

/// A webhook endpoint on a port of its own.
pub struct Receiver {
    pub url: String,
    recorded: Recorded,
}

impl Receiver {
    /// Serves until the test ends, answering `script` first and 200 after.
    pub async fn start(script: &[u16]) -> Self {
        let recorded = Recorded::default();
        recorded
            .script
            .lock()
            .unwrap()
            .extend(script.iter().copied());
        let router = axum::Router::new()
            .fallback(record)
            .with_state(recorded.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, recorded }
    }

    /// Everything received so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.recorded.hits.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived, returning them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Hit> {
        eventually(DELIVERY_DEADLINE, || async {
            let hits = self.hits();
            (hits.len() >= n).then_some(hits)
        })
        .await
        .unwrap_or_else(|| panic!("expected {n} webhooks, got {:#?}", self.hits()))
    }
}

async fn record(State(recorded): State<Recorded>, headers: HeaderMap, body: String) -> StatusCode {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let json = serde_json::from_str(&body).unwrap_or(Value::Null);
    recorded.hits.lock().unwrap().push(Hit {
        headers,
        body,
        json,
    });
    let status = recorded.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

/// The PSP with its webhooks pointed at a fresh receiver.
pub struct Psp {
    pub app: TestApp,
    pub receiver: Receiver,
}

impl Psp {
    /// The PSP and a receiver answering `script` first.
    pub async fn start(script: &[u16]) -> Self {
        Self::start_with(script, |_| {}).await
    }

    /// As [`Psp::start`], with the settings adjusted by `adjust`.
    pub async fn start_with(script: &[u16], adjust: impl FnOnce(&mut Settings)) -> Self {
        let receiver = Receiver::start(script).await;
        let env = TestEnv::builder().start().await;
        let mut settings = settings(&env);
        settings.stripe.webhook_url = format!("{}/stripe", receiver.url);
        settings.paypal.webhook_url = format!("{}/paypal", receiver.url);
        adjust(&mut settings);
        let app = env.spawn(lab_psp::build, settings).await;
        Self { app, receiver }
    }

    /// A form POST to the Stripe API with the right key.
    pub async fn stripe(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        self.stripe_with(path, form, SECRET_KEY, None).await
    }

    pub async fn stripe_with(
        &self,
        path: &str,
        form: &[(&str, &str)],
        key: &str,
        idempotency_key: Option<&str>,
    ) -> (StatusCode, Value) {
        let body = serde_urlencoded::to_string(form).unwrap();
        let mut request = self
            .app
            .client
            .post(self.app.url(&format!("/stripe{path}")))
            .bearer_auth(key)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(k) = idempotency_key {
            request = request.header("Idempotency-Key", k);
        }
        json(request.send().await.unwrap()).await
    }

    pub async fn stripe_get(&self, path: &str) -> (StatusCode, Value) {
        let request = self
            .app
            .client
            .get(self.app.url(&format!("/stripe{path}")))
            .bearer_auth(SECRET_KEY);
        json(request.send().await.unwrap()).await
    }

    /// A Stripe session for `amount` cents and `order_id`, with extra form fields.
    pub async fn stripe_session(
        &self,
        amount: &str,
        order_id: &str,
        extra: &[(&str, &str)],
    ) -> Value {
        let mut form = vec![
            ("amount", amount),
            ("currency", "eur"),
            ("metadata[order_id]", order_id),
        ];
        form.extend_from_slice(extra);
        let (status, session) = self.stripe("/v1/checkout/sessions", &form).await;
        assert_eq!(status, StatusCode::OK, "{session:#}");
        session
    }

    /// A PayPal access token.
    pub async fn paypal_token(&self) -> String {
        let response = self
            .app
            .client
            .post(self.app.url("/paypal/v1/oauth2/token"))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        let (status, body) = json(response).await;
        assert_eq!(status, StatusCode::OK, "{body:#}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// A JSON POST to the PayPal API with `token`.
    pub async fn paypal(
        &self,
        token: &str,
        path: &str,
        body: Option<&Value>,
        request_id: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .app
            .client
            .post(self.app.url(&format!("/paypal{path}")))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(id) = request_id {
            request = request.header("PayPal-Request-Id", id);
        }
        json(request.send().await.unwrap()).await
    }

    pub async fn paypal_get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let request = self
            .app
            .client
            .get(self.app.url(&format!("/paypal{path}")))
            .bearer_auth(token);
        json(request.send().await.unwrap()).await
    }

    /// A PayPal order for `value` and `order_id`, plus top-level `extra` fields.
    pub async fn paypal_order(
        &self,
        token: &str,
        value: &str,
        order_id: &str,
        extra: Value,
    ) -> Value {
        let mut body = serde_json::json!({"intent": "AUTHORIZE", "purchase_units": [{"reference_id": order_id,
            "custom_id": order_id, "amount": {"currency_code": "EUR", "value": value}}]});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let (status, order) = self
            .paypal(token, "/v2/checkout/orders", Some(&body), None)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{order:#}");
        order
    }

    /// The buyer's `action` (`approve` or `decline`) on session or order `id`.
    pub async fn buyer(&self, id: &str, action: &str) -> (StatusCode, Value) {
        let response = self
            .app
            .client
            .post(self.app.url(&format!("/sandbox/sessions/{id}/{action}")))
            .send()
            .await
            .unwrap();
        json(response).await
    }

    /// Replaces the scenario of `id`.
    pub async fn scenario(&self, id: &str, scenario: Value) {
        let response = self
            .app
            .client
            .put(self.app.url(&format!("/sandbox/sessions/{id}/scenario")))
            .json(&scenario)
            .send()
            .await
            .unwrap();
        let (status, body) = json(response).await;
        assert_eq!(status, StatusCode::OK, "{body:#}");
    }

    /// The attempt log of `id`.
    pub async fn attempts(&self, id: &str) -> Vec<Value> {
        let (_, body) = self
            .app
            .get_json(&format!("/sandbox/webhooks?session={id}"))
            .await;
        body.as_array().cloned().unwrap_or_default()
    }

    /// Waits until the attempt log of `id` holds `n` entries.
    pub async fn wait_attempts(&self, id: &str, n: usize) -> Vec<Value> {
        eventually(DELIVERY_DEADLINE, || async {
            let attempts = self.attempts(id).await;
            (attempts.len() >= n).then_some(attempts)
        })
        .await
        .unwrap_or_else(|| panic!("expected {n} attempts for {id}"))
    }
}

/// Status and JSON body (`Null` when it is not JSON).
pub async fn json(response: Response) -> (StatusCode, Value) {
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// The `type`s (or `event_type`s) of `hits`, in order.
pub fn kinds(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(Hit::kind).collect()
}
