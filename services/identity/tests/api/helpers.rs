//! `spawn_app()` and friends: the identity service started by the shared harness, with an
//! OpenBao dev server for its keys, plus a small "other service" that checks tokens with
//! lab-auth the way every Lab service will.

use std::time::Duration;

use lab_auth::{Admin, AuthSettings, Authenticated, RequireRole, RequireScope, Scope, Verifier};
use lab_config::SecretString;
use lab_identity::{NAME, Settings, ThrottleSettings, VaultSettings};
use lab_test_support::{ServiceMigrator, TestApp, TestEnv, test_client};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

// Registering, logging in and out are shared with every service that checks identity's tokens.
pub use lab_test_support::identity::{ADMIN_EMAIL, PASSWORD, login, post, register, signed_in};

/// The migrations the test template holds.
pub const MIGRATIONS: &[ServiceMigrator] = &[(NAME, &lab_identity::MIGRATOR)];

/// Settings wiring the service to `env`'s infrastructure (its OpenBao dev server included).
pub fn settings(env: &TestEnv) -> Settings {
    Settings {
        http: env.http(1),
        database: env.database(NAME),
        redis: env.redis(),
        vault: VaultSettings {
            addr: env.vault().addr.clone(),
            token: SecretString::new(env.vault().root_token.clone()),
            ..VaultSettings::default()
        },
        admin_emails: ADMIN_EMAIL.into(),
        throttle: ThrottleSettings {
            // Generous, so only the throttling tests (which lower them) ever meet a limit.
            address_attempts: 1_000,
            ..ThrottleSettings::default()
        },
        ..Settings::default()
    }
}

/// A fresh environment (its own database, Redis prefix, OpenBao).
pub async fn env() -> TestEnv {
    TestEnv::builder()
        .with_database(MIGRATIONS)
        .with_vault()
        .start()
        .await
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with_routes(axum::Router::new()).await
}

/// The service with test-only `routes` added.
pub async fn spawn_app_with_routes(routes: axum::Router) -> TestApp {
    let env = env().await;
    env.spawn_with_routes(lab_identity::build, settings(&env), routes)
        .await
}

/// Another Lab service: nothing but lab-auth's extractors in front of two routes.
pub struct OtherService {
    pub base_url: String,
    shutdown: CancellationToken,
}

impl OtherService {
    /// Starts it against `identity`'s JWKS and `env`'s Redis.
    pub async fn start(identity: &TestApp) -> Self {
        let shutdown = CancellationToken::new();
        let settings = AuthSettings {
            jwks_url: identity.url("/.well-known/jwks.json"),
            // Tests rotate keys and expect the new kid to be fetched at once.
            jwks_min_refresh_ms: 50,
            ..AuthSettings::default()
        };
        let verifier = Verifier::start(settings, &identity.env.redis(), shutdown.clone())
            .expect("the verifier");
        let router = axum::Router::new()
            .route("/whoami", axum::routing::get(whoami))
            .route("/admin-only", axum::routing::get(admin_only))
            .route("/demo", axum::routing::get(demo_only))
            .with_state(verifier);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Self {
            base_url: format!("http://{addr}"),
            shutdown,
        }
    }

    /// `GET path` with `token`, as status, `WWW-Authenticate` and JSON body.
    pub async fn get(&self, path: &str, token: &str) -> (u16, Option<String>, Value) {
        let response = test_client()
            .get(format!("{}{path}", self.base_url))
            .bearer_auth(token)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("GET on the other service");
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (
            status,
            challenge,
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// Stops it (as a restart's first half).
    pub fn stop(self) {
        self.shutdown.cancel();
    }
}

impl Drop for OtherService {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn whoami(caller: Authenticated) -> axum::Json<Value> {
    axum::Json(json!({ "sub": caller.sub, "roles": caller.roles }))
}

async fn admin_only(RequireRole(caller, ..): RequireRole<Admin>) -> axum::Json<Value> {
    axum::Json(json!({ "sub": caller.sub }))
}

/// The scope identity's client tokens carry.
pub struct Demo;

impl Scope for Demo {
    const NAME: &'static str = "demo";
}

async fn demo_only(RequireScope(caller, ..): RequireScope<Demo>) -> axum::Json<Value> {
    axum::Json(json!({ "sub": caller.sub }))
}
