//! The edge middleware around a small upstream of the test's own, served on a real listener:
//! two stacks built from the same settings and Redis prefix stand for two BFF replicas.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Extension, Path};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use lab_bff::edge::{Edge, EdgeSettings};
use lab_bff::session::Visitor;
use lab_cache::Redis;
use lab_config::SecretString;
use lab_test_support::{TestApp, TestEnv};
use serde_json::{Value, json};

/// The size of `POST /api/big`'s answer: beyond what replay keeps.
pub const BIG_ANSWER: usize = lab_bff::replay::MAX_STORED_BODY + 1;

/// A session key both replicas share.
pub const SHARED_KEY: &str = "0123456789abcdef0123456789abcdef-shared";

/// Edge settings with the shared key and no trusted proxies.
pub fn edge_settings() -> EdgeSettings {
    let mut settings = EdgeSettings::default();
    settings.session.key = Some(SecretString::new(SHARED_KEY));
    settings
}

/// How many times each upstream route ran, shared by every stack of a test.
#[derive(Clone, Default)]
pub struct Upstream {
    /// Calls of `POST /api/things`.
    pub creates: Arc<AtomicUsize>,
    /// Calls of `POST /api/flaky`.
    pub flaky: Arc<AtomicUsize>,
    /// Calls of `POST /api/big`.
    pub big: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn creates(&self) -> usize {
        self.creates.load(Ordering::SeqCst)
    }

    pub fn flaky(&self) -> usize {
        self.flaky.load(Ordering::SeqCst)
    }

    pub fn big(&self) -> usize {
        self.big.load(Ordering::SeqCst)
    }

    /// `GET /api/whoami` (the visitor), `POST /api/things` (201, a new id each call, slow when
    /// the body asks), `POST /api/flaky` (500 on its first call, 201 after), `POST /api/big`
    /// (an answer too large to keep), `GET /api/ping`.
    /// `GET /api/health` answers the limiter's mode, like the BFF's own.
    fn router(&self, edge: &Edge) -> axum::Router {
        let limiter = edge.rate_limiter().clone();
        let creates = self.creates.clone();
        let flaky = self.flaky.clone();
        let big = self.big.clone();
        axum::Router::new()
            .route("/api/ping", get(|| async { "pong" }))
            .route(
                "/api/health",
                get(move || {
                    let health = limiter.health();
                    async move { axum::Json(json!({ "rate_limit": health })) }
                }),
            )
            .route(
                "/api/demo/{name}",
                post(|Path(name): Path<String>| async move { name }),
            )
            .route("/api/orders", post(|| async { StatusCode::CREATED }))
            .route(
                "/api/whoami",
                get(|Extension(v): Extension<Visitor>| async move {
                    axum::Json(json!({
                        "session": v.session.as_str(),
                        "fresh": v.fresh,
                        "client_ip": v.client_ip.to_string(),
                        "bearer": v.bearer,
                    }))
                }),
            )
            .route(
                "/api/things",
                post(move |body: String| {
                    let creates = creates.clone();
                    async move {
                        let n = creates.fetch_add(1, Ordering::SeqCst) + 1;
                        if body.contains("slow") {
                            tokio::time::sleep(Duration::from_millis(400)).await;
                        }
                        let id = format!("thing-{n}-{}", rand_suffix());
                        let mut headers = HeaderMap::new();
                        headers.insert(
                            "location",
                            format!("/api/things/{id}")
                                .parse()
                                .unwrap_or_else(|e| panic!("{e}")),
                        );
                        headers.insert(
                            "etag",
                            format!("\"{n}\"").parse().unwrap_or_else(|e| panic!("{e}")),
                        );
                        (
                            StatusCode::CREATED,
                            headers,
                            axum::Json(json!({"id": id, "body": body})),
                        )
                            .into_response()
                    }
                }),
            )
            .route(
                "/api/big",
                post(move || {
                    let big = big.clone();
                    async move {
                        big.fetch_add(1, Ordering::SeqCst);
                        vec![b'x'; BIG_ANSWER]
                    }
                }),
            )
            .route(
                "/api/flaky",
                post(move || {
                    let flaky = flaky.clone();
                    async move {
                        if flaky.fetch_add(1, Ordering::SeqCst) == 0 {
                            (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response()
                        } else {
                            (StatusCode::CREATED, "made").into_response()
                        }
                    }
                }),
            )
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// One "BFF replica": the edge built from `settings` on `env`'s Redis, around `upstream`.
pub async fn spawn_stack(env: &TestEnv, settings: &EdgeSettings, upstream: &Upstream) -> TestApp {
    spawn_stack_with_edge(env, settings, upstream).await.0
}

/// [`spawn_stack`], and its edge (for the rate limiter's events).
pub async fn spawn_stack_with_edge(
    env: &TestEnv,
    settings: &EdgeSettings,
    upstream: &Upstream,
) -> (TestApp, Edge) {
    let redis = Redis::new(&env.redis(), lab_bff::NAME).unwrap_or_else(|e| panic!("{e}"));
    let edge = Edge::build(settings, redis, &lab_telemetry::Metrics::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let router = edge.wrap(upstream.router(&edge));
    let shutdown = env.shutdown_token();
    let app = lab_http::Application::bind(
        &env.http(1),
        "bff-edge-test".into(),
        router,
        shutdown.clone(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    (TestApp::start(app, shutdown, env.clone()), edge)
}

/// Edge settings whose default route class has this bucket.
pub fn with_default_bucket(capacity: u32, refill_per_s: f64) -> EdgeSettings {
    let mut settings = edge_settings();
    settings.rate_limit.default = lab_bff::rate_limit::Bucket {
        capacity,
        refill_per_s,
    };
    settings
}

/// A session cookie from `app` (its first answer's `Set-Cookie`).
pub async fn new_session(app: &TestApp) -> String {
    let response = app.get("/api/ping").await;
    session_cookie(&response).unwrap_or_else(|| panic!("no session cookie was set"))
}

/// `GET path` with `cookie`: the response.
pub async fn get_with(app: &TestApp, path: &str, cookie: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The `lab_session=…` pair of a response's `Set-Cookie`, if it sets one.
pub fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("lab_session="))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

/// `GET /api/whoami` with these headers: the status, the cookie set (if any) and the visitor.
pub async fn whoami(
    app: &TestApp,
    headers: &[(&str, &str)],
) -> (StatusCode, Option<String>, Value) {
    let mut request = app.client.get(app.url("/api/whoami"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("{e}"));
    let status = response.status();
    let cookie = session_cookie(&response);
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, cookie, body)
}
