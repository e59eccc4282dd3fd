//! The identity service. Users, passwords, JWT issuance with JWKS, refresh-token rotation and JTI revocation.
//!
//! Where each part lives: `domain.rs` (validated email and password), `passwords.rs` (Argon2id,
//! the dummy hash that makes an unknown email cost the same), `keys.rs` (Ed25519 signing keys in
//! OpenBao, rotation), `sessions.rs` (token pairs, refresh rotation, reuse detection,
//! revocation), `clients.rs` (narrow client tokens for anonymous demo calls), `throttle.rs` (login limits per account and address), `routes.rs` and `admin.rs` (the API).
//! Token checking itself is `lab-auth`'s, shared with every other service.
//!
//! A library with a thin entry point: [`build`] wires settings to a bound [`Application`]; the
//! `lab` binary runs it as `lab run identity`, the tests run it in-process on port 0.

pub mod accounts;
pub mod admin;
pub mod clients;
pub mod domain;
pub mod keys;
pub mod metrics;
pub mod passwords;
pub mod routes;
pub mod sessions;
pub mod throttle;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lab_auth::{AuthSettings, Revocations, Verifier};
use lab_cache::{Redis, RedisProbe, RedisSettings};
use lab_db::DbSettings;
use lab_http::{Application, HttpSettings, Readiness, ServiceApp, new_instance_id};
use lab_telemetry::Metrics;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub use clients::ClientSettings;
pub use keys::VaultSettings;
pub use sessions::TokenSettings;
pub use throttle::ThrottleSettings;

/// The service's name: its schema, its env prefix (`LAB_IDENTITY__`), its instance ids.
pub const NAME: &str = "identity";

/// This service's migrations, applied to its own schema at start; public so the test harness
/// can build its template database from them.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Everything the identity service reads at start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where and how this process serves HTTP.
    pub http: HttpSettings,
    /// Its PostgreSQL login; the schema is always `identity`.
    pub database: DbSettings,
    /// Its Redis: throttling counters (`identity:`) and the shared revocation list (`auth:`).
    pub redis: RedisSettings,
    /// OpenBao, where the signing keys live (`LAB_IDENTITY__VAULT__ADDR`, `…__TOKEN`).
    pub vault: VaultSettings,
    /// Issuer, audience and lifetimes of the tokens (`LAB_IDENTITY__TOKENS__ACCESS_TTL_S`, …).
    pub tokens: TokenSettings,
    /// Login limits (`LAB_IDENTITY__THROTTLE__ACCOUNT_FAILURES`, …).
    pub throttle: ThrottleSettings,
    /// The client that may get narrow client tokens for anonymous demo calls.
    pub client: ClientSettings,
    /// Comma-separated emails that get the `admin` role when they register: how a fresh
    /// installation gets its first administrator.
    pub admin_emails: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::default(),
            database: DbSettings::local(NAME),
            redis: RedisSettings::default(),
            vault: VaultSettings::default(),
            tokens: TokenSettings::default(),
            throttle: ThrottleSettings::default(),
            client: ClientSettings::default(),
            admin_emails: String::new(),
        }
    }
}

impl Settings {
    /// Whether `email` (already lower-cased) is one of [`Settings::admin_emails`].
    pub fn is_admin_email(&self, email: &str) -> bool {
        self.admin_emails
            .split(',')
            .map(str::trim)
            .any(|a| !a.is_empty() && a.eq_ignore_ascii_case(email))
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        description = "Users, passwords, JWT issuance with JWKS, refresh-token rotation and JTI revocation."
    ),
    paths(
        lab_db::admin::credentials_status,
        lab_db::admin::public_status,
        lab_db::admin::rotate_credentials,
        lab_db::admin::set_credentials_ttl,
        routes::register,
        routes::login,
        routes::refresh,
        routes::client_token,
        routes::logout,
        routes::me,
        routes::jwks,
        admin::rotate_keys,
        admin::revoke_user_sessions,
    ),
    components(schemas(
        routes::Credentials,
        routes::RefreshRequest,
        routes::ClientCredentials,
        clients::ClientToken,
        admin::Rotated,
        admin::Revoked,
        accounts::User,
        sessions::TokenPair,
        lab_auth::Jwks,
        lab_auth::Jwk,
    )),
    modifiers(&BearerScheme)
)]
struct ApiDoc;

/// Declares the `bearer` scheme the protected routes name: identity's EdDSA JWTs.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Connects what the service needs, applies its migrations, loads its signing keys from
/// OpenBao, and binds its listener.
pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Application> {
    let instance_id = new_instance_id(NAME, settings.http.replica);
    let db = lab_db::open(
        &settings.database,
        NAME,
        &instance_id,
        "LAB_IDENTITY__DATABASE__URL",
        shutdown.clone(),
    )
    .await?;
    let pool = db.pool.clone();
    lab_db::migrate(&pool, &MIGRATOR, NAME).await?;
    let redis = Redis::new(&settings.redis, NAME)?;
    let keys = keys::KeyRing::load(&settings.vault).await.with_context(|| {
        format!(
            "loading the signing keys from OpenBao at {} (LAB_IDENTITY__VAULT__ADDR, LAB_IDENTITY__VAULT__TOKEN)",
            settings.vault.addr
        )
    })?;
    keys.spawn_reloader(
        Duration::from_secs(settings.vault.key_reload_s.max(1)),
        shutdown.clone(),
    );
    let revocations = Revocations::new(&settings.redis)?;
    revocations.spawn_subscriber(shutdown.clone());
    let auth = AuthSettings {
        jwks_url: String::new(),
        issuer: settings.tokens.issuer.clone(),
        audience: settings.tokens.audience.clone(),
        // The keys are local: re-reading them after a rotation costs nothing.
        jwks_min_refresh_ms: 0,
        ..AuthSettings::default()
    };
    let verifier = Verifier::new(auth, Arc::new(keys.clone()), revocations);
    let hasher = passwords::Hasher::new()
        .await
        .context("preparing the password hasher")?;
    let throttle = throttle::Throttle::new(redis.clone(), settings.throttle.clone());
    let readiness = db.probes(Readiness::new()).with(RedisProbe {
        redis: redis.clone(),
        critical: false,
    });
    let registry = Metrics::default();
    let metrics = metrics::IdentityMetrics::register(&registry);
    let app = ServiceApp {
        name: NAME,
        instance_id: instance_id.clone().into(),
        metrics: registry,
        readiness,
        openapi: ApiDoc::openapi(),
    };
    let state = routes::AppState {
        pool,
        keys,
        hasher,
        throttle,
        verifier,
        metrics,
        settings: Arc::new(settings.clone()),
    };
    // The shared credential routes answer administrators only.
    let credentials_admin = lab_db::admin::router(db.credentials.clone()).route_layer(
        axum::middleware::from_extractor_with_state::<
            lab_auth::RequireRole<lab_auth::Admin>,
            routes::AppState,
        >(state.clone()),
    );
    let router = app.router(
        routes::router(state)
            .merge(credentials_admin)
            .merge(lab_db::admin::public_router(db.credentials.clone())),
    );
    Ok(Application::bind(&settings.http, instance_id, router, shutdown).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_from_lab_identity_variables_nested_by_double_underscores() {
        let vars = [
            ("LAB_IDENTITY__VAULT__ADDR", "http://bao:8200"),
            ("LAB_IDENTITY__VAULT__TOKEN", "s.token"),
            ("LAB_IDENTITY__TOKENS__ACCESS_TTL_S", "60"),
            ("LAB_IDENTITY__THROTTLE__ACCOUNT_FAILURES", "3"),
            ("LAB_IDENTITY__CLIENT__SECRET", "shh"),
            ("LAB_IDENTITY__ADMIN_EMAILS", "a@example.com, B@example.com"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));

        let settings: Settings = lab_config::load_from(NAME, vars).expect("settings");

        assert_eq!(settings.vault.addr, "http://bao:8200");
        assert_eq!(settings.vault.token.expose(), "s.token");
        assert_eq!(settings.tokens.access_ttl_s, 60);
        assert_eq!(settings.throttle.account_failures, 3);
        assert_eq!(settings.client.secret.expose(), "shh");
        assert!(settings.is_admin_email("b@example.com"));
        assert!(!settings.is_admin_email("c@example.com"));
    }

    #[test]
    fn by_default_no_signing_key_or_client_secret_is_configured() {
        let settings = Settings::default();

        assert_eq!(settings.vault.token.expose(), "");
        assert_eq!(settings.client.secret.expose(), "");
        assert_eq!(settings.admin_emails, "");
    }
}
