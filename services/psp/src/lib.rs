//! The psp service. The sandbox payment provider: Stripe-like and PayPal-like APIs, a hosted payment page, signed webhooks.
//!
//! `PROTOCOL.md` is the contract. Where each part lives: `stripe/` and `paypal/` (each
//! provider's HTTP edge in `mod.rs`, its objects in `books.rs`, its state machines in `ops.rs`),
//! `sandbox.rs` (shared state, scenarios, idempotency), `webhooks.rs` (ordered delivery with
//! retries and the knobs), `signing.rs` (both providers' signatures), `certs.rs` (the sandbox CA
//! and signing certificate), `page.rs` and `control.rs` (the hosted page and the sandbox's own
//! routes).
//!
//! A library with a thin entry point: [`build`] wires settings to a bound [`Application`]; the
//! `lab` binary runs it as `lab run psp`, the tests run it in-process on port 0.

pub mod certs;
mod control;
mod page;
mod paypal;
mod sandbox;
mod signing;
mod stripe;
mod webhooks;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use lab_config::SecretString;
use lab_http::{Application, HttpSettings, Readiness, ServiceApp, new_instance_id};
use lab_telemetry::Metrics;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa::OpenApi;

pub use sandbox::{Auto, Scenario};
pub use webhooks::WebhookSettings;

/// The service's name: its schema, its env prefix (`LAB_PSP__`), its instance ids.
pub const NAME: &str = "psp";

/// Everything the psp service reads at start-up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where and how this process serves HTTP.
    pub http: HttpSettings,
    /// Base of the hosted-page links and `PAYPAL-CERT-URL` (`http://host:port`, no trailing
    /// slash); empty: `http://` + the bound address.
    pub public_url: String,
    /// The scenario of sessions that name none (`auto = "approve"` for benchmarks).
    pub scenario: Scenario,
    /// The Stripe side.
    pub stripe: StripeSettings,
    /// The PayPal side.
    pub paypal: PaypalSettings,
    /// Retries, backoff and timeouts of webhook delivery.
    pub webhooks: WebhookSettings,
}

/// The Stripe side's credentials and webhook endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StripeSettings {
    /// The API key callers send as `Authorization: Bearer …`.
    pub secret_key: SecretString,
    /// Where Stripe events are posted; empty: nowhere (attempts are logged as `no_endpoint`).
    pub webhook_url: String,
    /// Signing secrets, comma-separated; two during a rotation, each gets its own `v1`.
    pub webhook_secrets: SecretString,
}

impl Default for StripeSettings {
    fn default() -> Self {
        Self {
            secret_key: SecretString::new("sk_test_lab"),
            webhook_url: String::new(),
            webhook_secrets: SecretString::new("whsec_lab"),
        }
    }
}

impl StripeSettings {
    /// The signing secrets, one per comma-separated entry.
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

/// The PayPal side's credentials, webhook endpoint and signing certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PaypalSettings {
    /// The OAuth client id (HTTP Basic user of the token call).
    pub client_id: String,
    /// The OAuth client secret.
    pub client_secret: SecretString,
    /// Where PayPal events are posted; empty: nowhere.
    pub webhook_url: String,
    /// The webhook's id, part of every signed string.
    pub webhook_id: String,
    /// Where the sandbox CA and signing certificate live (see [`certs::ensure`]).
    pub cert_dir: PathBuf,
}

impl Default for PaypalSettings {
    fn default() -> Self {
        Self {
            client_id: "lab-paypal-client".into(),
            client_secret: SecretString::new("lab-paypal-secret"),
            webhook_url: String::new(),
            webhook_id: "WH-LAB-SANDBOX".into(),
            cert_dir: PathBuf::from(".lab/psp-certs"),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        description = "The sandbox payment provider: Stripe-like and PayPal-like APIs, a hosted payment page, signed webhooks."
    ),
    paths(
        stripe::create_checkout_session,
        stripe::get_checkout_session,
        stripe::expire_checkout_session,
        stripe::get_payment_intent,
        stripe::capture_payment_intent,
        stripe::cancel_payment_intent,
        stripe::create_refund,
        paypal::create_token,
        paypal::create_order,
        paypal::get_order,
        paypal::capture_authorization,
        paypal::void_authorization,
        paypal::refund_capture,
        paypal::get_certificate,
        control::hosted_page,
        control::approve_session,
        control::decline_session,
        control::set_scenario,
        control::list_webhook_attempts,
    ),
    components(schemas(Scenario, Auto, webhooks::Attempt, control::Outcome))
)]
struct ApiDoc;

/// Open sessions past `expires_at` are expired on every call anyway; this sweep sends their
/// `checkout.session.expired` when nobody calls. Stripe itself takes up to a minute; a second
/// is precise enough for a sandbox and costs nothing.
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);

/// Loads (or makes) the certificates, starts the webhook queue, and binds the listener.
pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Application> {
    let instance_id = new_instance_id(NAME, settings.http.replica);
    let dir = settings.paypal.cert_dir.clone();
    let certs = tokio::task::spawn_blocking(move || certs::ensure(&dir))
        .await
        .context("generating the sandbox certificates")?
        .with_context(|| {
            format!(
                "sandbox certificates in {}",
                settings.paypal.cert_dir.display()
            )
        })?;
    let signer =
        signing::PaypalSigner::from_pem(&certs.leaf_key_pem).context("the PayPal signing key")?;

    let public_url = Arc::new(OnceLock::new());
    if !settings.public_url.is_empty() {
        let _ = public_url.set(settings.public_url.trim_end_matches('/').to_owned());
    }
    let tasks = TaskTracker::new();
    let endpoints = webhooks::Endpoints {
        stripe_url: settings.stripe.webhook_url.clone(),
        stripe_secrets: settings.stripe.secrets(),
        paypal_url: settings.paypal.webhook_url.clone(),
        paypal_webhook_id: settings.paypal.webhook_id.clone(),
        signer,
        public_url: public_url.clone(),
    };
    let webhooks = webhooks::Webhooks::new(
        settings.webhooks.clone(),
        endpoints,
        tasks.clone(),
        shutdown.clone(),
    )
    .context("the webhook HTTP client")?;
    let psp = sandbox::Psp::new(
        Arc::new(settings.clone()),
        public_url.clone(),
        webhooks,
        certs.leaf_cert_pem.into(),
    );
    spawn_expiry_sweep(&tasks, psp.clone(), shutdown.clone());

    let app = ServiceApp {
        name: NAME,
        instance_id: instance_id.clone().into(),
        metrics: Metrics::default(),
        readiness: Readiness::new(),
        openapi: ApiDoc::openapi(),
    };
    let routes = stripe::router()
        .merge(paypal::router())
        .merge(control::router())
        .with_state(psp);
    let application =
        Application::bind(&settings.http, instance_id, app.router(routes), shutdown).await?;
    let _ = public_url.set(application.base_url());
    tasks.close();
    Ok(application)
}

fn spawn_expiry_sweep(tasks: &TaskTracker, psp: sandbox::Psp, shutdown: CancellationToken) {
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(EXPIRY_SWEEP);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => psp.with_ledger(|_, _| ()),
            }
        }
    });
}
