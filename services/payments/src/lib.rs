//! The payments service. Payment sessions at the PSP, webhooks verified at ingress, capture, void and refund.
//!
//! Where each part lives: `provider/` (the Stripe and PayPal adapters behind one trait, with
//! per-attempt timeouts, jittered retries and idempotency keys), `commands.rs` (the saga's
//! commands in, events out through the outbox), `webhooks/` (signature checks, dedupe, the state
//! machine in `state.rs` applied by `transitions.rs`), `store.rs` (the tables), `routes.rs`
//! (payment view and admin routes), `money.rs` (decimal strings ↔ minor units).
//!
//! A library with a thin entry point: [`build`] wires settings to a bound [`Application`]; the
//! `lab` binary runs it as `lab run payments`, the tests run it in-process on port 0.

pub mod commands;
pub mod invariants;
pub mod metrics;
pub mod money;
pub mod provider;
pub mod routes;
pub mod state;
pub mod store;
pub mod transitions;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lab_config::SecretString;
use lab_db::DbSettings;
use lab_http::{Application, HttpSettings, Readiness, ServiceApp, new_instance_id};
use lab_messaging::{AmqpProbe, AmqpSettings, Broker, MessagingMetrics, Topology};
use lab_telemetry::Metrics;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

/// The service's name: its schema, its env prefix (`LAB_PAYMENTS__`), its instance ids.
pub const NAME: &str = "payments";

/// This service's migrations, applied to its own schema at start; public so the test harness
/// can build its template database from them.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Everything the payments service reads at start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where and how this process serves HTTP.
    pub http: HttpSettings,
    /// Its PostgreSQL login; the schema is always `payments`.
    pub database: DbSettings,
    /// Its RabbitMQ broker.
    pub amqp: AmqpSettings,
    /// The Stripe account (`LAB_PAYMENTS__STRIPE__…`).
    pub stripe: StripeSettings,
    /// The PayPal account (`LAB_PAYMENTS__PAYPAL__…`).
    pub paypal: PayPalSettings,
    /// Bearer token of the administrator (outbox and dead letters); unset means nobody is one.
    pub admin_token: Option<SecretString>,
    /// Bound on one provider request, connect included.
    pub provider_attempt_timeout_ms: u64,
    /// Attempts per provider call (first one included) on connect errors, timeouts and 5xx.
    pub provider_attempts: u32,
}

/// How payments reaches Stripe and checks its webhooks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StripeSettings {
    /// Base URL of the API (`https://api.stripe.com`, or the PSP's `…/stripe`).
    pub api_url: String,
    /// The secret API key.
    pub secret_key: SecretString,
    /// Webhook signing secrets, comma-separated: two while one is being rotated out.
    pub webhook_secrets: SecretString,
    /// How far a signature's timestamp may be from now (Stripe's libraries use 300 s).
    pub webhook_tolerance_s: i64,
}

impl Default for StripeSettings {
    fn default() -> Self {
        Self {
            // The sandbox PSP's local default port (the BFF's upstream list says 7107).
            api_url: "http://127.0.0.1:7107/stripe".into(),
            secret_key: SecretString::new("sk_test_lab"),
            webhook_secrets: SecretString::new("whsec_lab"),
            webhook_tolerance_s: 300,
        }
    }
}

impl StripeSettings {
    /// The webhook secrets, blanks dropped.
    pub fn secrets(&self) -> Vec<SecretString> {
        self.webhook_secrets
            .expose()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(SecretString::new)
            .collect()
    }
}

/// How payments reaches PayPal and checks its webhooks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PayPalSettings {
    /// Base URL of the API (`https://api-m.paypal.com`, or the PSP's `…/paypal`).
    pub api_url: String,
    /// OAuth2 client id.
    pub client_id: String,
    /// OAuth2 client secret.
    pub client_secret: SecretString,
    /// The webhook's id at PayPal: part of every signed transmission.
    pub webhook_id: String,
    /// PEM file of the CA that must have issued the signing certificate; while it is empty or
    /// missing every PayPal webhook is refused (it is read when it appears).
    pub ca_pem_file: String,
    /// Hosts (`host` or `host:port`) `PAYPAL-CERT-URL` may point at, comma-separated; any other
    /// URL is refused without being fetched.
    pub cert_url_hosts: String,
    /// Bound on one certificate fetch.
    pub cert_fetch_timeout_ms: u64,
}

impl Default for PayPalSettings {
    fn default() -> Self {
        Self {
            api_url: "http://127.0.0.1:7107/paypal".into(),
            // The sandbox PSP's defaults, so a local run needs no configuration.
            client_id: "lab-paypal-client".into(),
            client_secret: SecretString::new("lab-paypal-secret"),
            webhook_id: "WH-LAB-SANDBOX".into(),
            // Where the sandbox PSP writes its CA (its `paypal.cert_dir`), relative to the
            // working directory `lab up` runs services in.
            ca_pem_file: ".lab/psp-certs/ca.pem".into(),
            cert_url_hosts: "127.0.0.1:7107".into(),
            // The certificate host is PayPal's CDN (or the local PSP): a couple of seconds is
            // plenty, and the provider retries a webhook we answer 400 anyway.
            cert_fetch_timeout_ms: 2_000,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::default(),
            database: DbSettings::local(NAME),
            amqp: AmqpSettings::default(),
            stripe: StripeSettings::default(),
            paypal: PayPalSettings::default(),
            admin_token: None,
            // The PSP answers in milliseconds; Stripe's p99 is about a second. Five bounds a
            // stuck connection while the command still finishes well inside its retry delay.
            provider_attempt_timeout_ms: 5_000,
            // Two retries ride out a blip; beyond that the consumer's retry queues take over.
            provider_attempts: 3,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        description = "Payment sessions at the PSP, webhooks verified at ingress, capture, void and refund."
    ),
    paths(
        lab_db::admin::credentials_status,
        lab_db::admin::public_status,
        lab_db::admin::rotate_credentials,
        lab_db::admin::set_credentials_ttl,
        webhooks::stripe_webhook,
        webhooks::paypal_webhook,
        routes::get_payment,
        invariants::get_invariants,
        lab_messaging::admin::outbox_status,
        lab_messaging::admin::pause_outbox,
        lab_messaging::admin::resume_outbox,
        lab_messaging::admin::list_dead_letters,
        lab_messaging::admin::replay_dead_letter,
    ),
    components(schemas(state::PaymentState))
)]
struct ApiDoc;

/// Connects what the service needs, applies its migrations, and binds its listener.
pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Application> {
    let instance_id = new_instance_id(NAME, settings.http.replica);
    let db = lab_db::open(
        &settings.database,
        NAME,
        &instance_id,
        "LAB_PAYMENTS__DATABASE__URL",
        shutdown.clone(),
    )
    .await?;
    let pool = db.pool.clone();
    lab_db::migrate(&pool, &MIGRATOR, NAME).await?;
    lab_messaging::migrate(&pool).await?;
    let http = reqwest::Client::builder()
        // A provider that takes longer than this to accept a connection is down for our purposes.
        .connect_timeout(Duration::from_secs(2))
        .build()
        .context("building the provider HTTP client")?;
    let policy = provider::http::RetryPolicy {
        attempts: settings.provider_attempts.max(1),
        attempt_timeout: Duration::from_millis(settings.provider_attempt_timeout_ms),
    };
    let providers = provider::Providers(vec![
        Arc::new(provider::stripe::Stripe::new(
            http.clone(),
            &settings.stripe.api_url,
            settings.stripe.secret_key.clone(),
            policy,
        )),
        Arc::new(provider::paypal::PayPal::new(
            http.clone(),
            &settings.paypal.api_url,
            settings.paypal.client_id.clone(),
            settings.paypal.client_secret.clone(),
            policy,
        )),
    ]);
    let ca_file = (!settings.paypal.ca_pem_file.is_empty())
        .then(|| std::path::PathBuf::from(&settings.paypal.ca_pem_file));
    let ca = if ca_file.as_ref().is_none_or(|f| !f.exists()) {
        tracing::warn!(file = %settings.paypal.ca_pem_file,
            "no PayPal CA yet (LAB_PAYMENTS__PAYPAL__CA_PEM_FILE): PayPal webhooks are refused until it exists");
        Vec::new()
    } else {
        let pem = std::fs::read(&settings.paypal.ca_pem_file).with_context(|| {
            format!(
                "reading LAB_PAYMENTS__PAYPAL__CA_PEM_FILE ({})",
                settings.paypal.ca_pem_file
            )
        })?;
        webhooks::paypal::pem_certificates(&pem)
            .map_err(anyhow::Error::msg)
            .context("LAB_PAYMENTS__PAYPAL__CA_PEM_FILE holds no certificate")?
    };
    let paypal = webhooks::paypal::PayPalVerifier::new(
        http,
        ca,
        ca_file,
        settings
            .paypal
            .cert_url_hosts
            .split(',')
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .collect(),
        settings.paypal.webhook_id.clone(),
        Duration::from_millis(settings.paypal.cert_fetch_timeout_ms),
    );
    let broker = Broker::start(&settings.amqp, &instance_id, shutdown.clone());
    let readiness = db.probes(Readiness::new()).with(AmqpProbe(broker.clone()));
    let metrics = Metrics::default();
    let payments_metrics = metrics::PaymentsMetrics::register(&metrics);
    let messaging = MessagingMetrics::register(&metrics);
    commands::start(
        &pool,
        &broker,
        &settings.amqp,
        messaging,
        commands::PaymentCommands {
            providers,
            metrics: payments_metrics.clone(),
        },
        &shutdown,
    );
    let state = routes::AppState {
        pool,
        metrics: payments_metrics,
        stripe_secrets: settings.stripe.secrets().into(),
        stripe_tolerance_s: settings.stripe.webhook_tolerance_s,
        paypal: Arc::new(paypal),
        admin: lab_auth::AdminGate::new(settings.admin_token.as_ref().map(|t| t.expose()), None),
        broker,
        topology: Topology::new(&settings.amqp, NAME),
    };
    let app = ServiceApp {
        name: NAME,
        instance_id: instance_id.clone().into(),
        metrics,
        readiness,
        openapi: ApiDoc::openapi(),
    };
    // The shared credential routes answer administrators only.
    let credentials_admin = lab_db::admin::router(db.credentials.clone()).route_layer(
        axum::middleware::from_extractor_with_state::<lab_auth::RequireAdmin, routes::AppState>(
            state.clone(),
        ),
    );
    let router = app.router(
        routes::router(state)
            .merge(credentials_admin)
            .merge(lab_db::admin::public_router(db.credentials.clone())),
    );
    Ok(Application::bind(&settings.http, instance_id, router, shutdown).await?)
}
