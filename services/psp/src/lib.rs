//! The psp service. The sandbox payment provider: Stripe-like and PayPal-like APIs, a hosted payment page, signed webhooks.
//!
//! A library with a thin entry point: [`build`] wires settings to a bound [`Application`]; the
//! `lab` binary runs it as `lab run psp`, the tests run it in-process on port 0.

use lab_http::{Application, HttpSettings, Readiness, ServiceApp, new_instance_id};
use lab_telemetry::Metrics;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

/// The service's name: its schema, its env prefix (`LAB_PSP__`), its instance ids.
pub const NAME: &str = "psp";

/// Everything the psp service reads at start-up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where and how this process serves HTTP.
    pub http: HttpSettings,
}

#[derive(OpenApi)]
#[openapi(info(
    description = "The sandbox payment provider: Stripe-like and PayPal-like APIs, a hosted payment page, signed webhooks."
))]
struct ApiDoc;

/// Connects what the service needs, applies its migrations, and binds its listener.
pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Application> {
    let instance_id = new_instance_id(NAME, settings.http.replica);
    let readiness = Readiness::new();
    let app = ServiceApp {
        name: NAME,
        instance_id: instance_id.clone().into(),
        metrics: Metrics::default(),
        readiness,
        openapi: ApiDoc::openapi(),
    };
    let router = app.router(axum::Router::new());
    Ok(Application::bind(&settings.http, instance_id, router, shutdown).await?)
}
