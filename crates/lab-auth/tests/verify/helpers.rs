//! A stand-in for identity's JWKS endpoint, tokens signed by test keys, and a tiny service with
//! lab-auth's extractors in front of its routes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use lab_auth::{
    Admin, Audience, AuthSettings, Authenticated, Claims, HttpKeySource, Jwks, RequireRole,
    RequireScope, Revocations, Scope, SigningKey, Verifier,
};
use lab_test_support::TestEnv;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

pub const ISSUER: &str = "lab-identity";
pub const AUDIENCE: &str = "lab";

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// A key with a fresh random kid.
pub fn key() -> SigningKey {
    let seed: [u8; 32] = rand::random();
    SigningKey::from_seed(format!("k{:08x}", rand::random::<u32>()), &seed).expect("key")
}

/// Claims that pass every check.
pub fn claims() -> Claims {
    Claims {
        iss: ISSUER.into(),
        aud: Audience::One(AUDIENCE.into()),
        sub: "user-1".into(),
        jti: format!("j{:016x}", rand::random::<u64>()),
        exp: now() + 600,
        iat: now(),
        nbf: None,
        roles: Vec::new(),
        scope: String::new(),
        sid: None,
    }
}

/// What the handler shares with the test.
#[derive(Clone)]
struct Shared {
    keys: Arc<Mutex<Jwks>>,
    fetches: Arc<AtomicUsize>,
}

/// Serves a key set that the test can change, counting the fetches; stops when dropped.
pub struct JwksServer {
    pub url: String,
    shared: Shared,
    _stop: tokio_util::sync::DropGuard,
}

impl JwksServer {
    pub async fn start(keys: &[&SigningKey]) -> Self {
        let shared = Shared {
            keys: Arc::new(Mutex::new(jwks_of(keys))),
            fetches: Arc::new(AtomicUsize::new(0)),
        };
        let router = axum::Router::new()
            .route("/.well-known/jwks.json", axum::routing::get(serve_jwks))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await;
        });
        Self {
            url: format!("http://{addr}/.well-known/jwks.json"),
            shared,
            _stop: stop.drop_guard(),
        }
    }

    pub fn publish(&self, keys: &[&SigningKey]) {
        *self
            .shared
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = jwks_of(keys);
    }

    pub fn fetches(&self) -> usize {
        self.shared.fetches.load(Ordering::SeqCst)
    }
}

fn jwks_of(keys: &[&SigningKey]) -> Jwks {
    Jwks {
        keys: keys.iter().map(|k| k.jwk()).collect(),
    }
}

async fn serve_jwks(State(shared): State<Shared>) -> axum::Json<Jwks> {
    shared.fetches.fetch_add(1, Ordering::SeqCst);
    axum::Json(
        shared
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
    )
}

/// A verifier on `url` and `env`'s Redis, its subscriber stopped with `shutdown`.
pub fn verifier(
    env: &TestEnv,
    url: &str,
    min_refresh_ms: u64,
    shutdown: &CancellationToken,
) -> Verifier {
    let settings = AuthSettings {
        jwks_url: url.into(),
        jwks_min_refresh_ms: min_refresh_ms,
        ..AuthSettings::default()
    };
    let revocations = Revocations::new(&env.redis()).expect("revocations");
    revocations.spawn_subscriber(shutdown.clone());
    Verifier::new(
        settings,
        Arc::new(HttpKeySource::new(url).expect("source")),
        revocations,
    )
}

/// [`service`] behind a verifier of the key set a [`JwksServer`] serves (fetched again at most
/// every `min_refresh_ms`) and of the test's Redis revocations.
pub struct Protected {
    pub router: axum::Router,
    pub jwks: JwksServer,
    /// Keeps the test's Redis alive while the verifier uses it.
    _env: TestEnv,
    /// The revocation subscriber's; it runs until the test ends.
    _shutdown: CancellationToken,
}

impl Protected {
    /// Serves `keys` and starts the verifier on a fresh test environment.
    pub async fn start(keys: &[&SigningKey], min_refresh_ms: u64) -> Self {
        let env = TestEnv::builder().start().await;
        let jwks = JwksServer::start(keys).await;
        let shutdown = CancellationToken::new();
        let router = service(verifier(&env, &jwks.url, min_refresh_ms, &shutdown));
        Self {
            router,
            jwks,
            _env: env,
            _shutdown: shutdown,
        }
    }

    /// `GET path` with `token` (see [`call`]).
    pub async fn call(&self, path: &str, token: Option<&str>) -> (u16, String, Value) {
        call(&self.router, path, token).await
    }

    /// The status of `GET /whoami` with `claims` signed by `signer`.
    pub async fn whoami(&self, signer: &SigningKey, claims: &Claims) -> u16 {
        let token = signer.sign(claims).expect("sign");
        self.call("/whoami", Some(&token)).await.0
    }
}

pub struct Demo;

impl Scope for Demo {
    const NAME: &'static str = "demo";
}

/// The routes a service would protect: any caller, administrators, the `demo` scope.
pub fn service(verifier: Verifier) -> axum::Router {
    axum::Router::new()
        .route(
            "/whoami",
            axum::routing::get(|caller: Authenticated| async move {
                axum::Json(
                    json!({"sub": caller.sub, "roles": caller.roles, "scopes": caller.scopes}),
                )
            }),
        )
        .route(
            "/admin",
            axum::routing::get(
                |RequireRole(caller, ..): RequireRole<Admin>| async move { caller.sub },
            ),
        )
        .route(
            "/demo",
            axum::routing::get(
                |RequireScope(caller, ..): RequireScope<Demo>| async move { caller.sub },
            ),
        )
        .with_state(verifier)
}

/// `GET path` on `router` with `token`: status, `WWW-Authenticate`, JSON body.
pub async fn call(router: &axum::Router, path: &str, token: Option<&str>) -> (u16, String, Value) {
    let mut request = http::Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        challenge,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
