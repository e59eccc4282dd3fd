//! The "Drive it" demos (`POST /api/demo/{name}`): each runs the real flow through the real
//! services and answers with its evidence (per-step results, instance ids, timings) and a
//! verdict — `pass` when the pattern held. Each step is also pushed to the visitor's own live
//! stream as it happens. Inputs are bounded; out of bounds is a 422.

pub mod breaker;
pub mod idempotency;
pub mod outbox;
pub mod revocation;
pub mod saga;
pub mod vault;

use std::time::{Duration, Instant};

use lab_contracts::live::{LiveBody, LiveEvent};
use lab_http::Problem;
use serde::Serialize;
use serde_json::Value;

use crate::AppState;

/// Every demo's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DemoReport {
    /// The demo (`saga`, …).
    pub demo: String,
    /// The variant run (`success`, `payment-declined`, …), when the demo has several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    /// `pass` when the pattern held, else `fail`.
    pub verdict: &'static str,
    /// Why, in one sentence.
    pub summary: String,
    /// What happened, step by step.
    pub steps: Vec<Step>,
    /// The demo's own evidence (orders, payments, stock …).
    #[schema(value_type = Object)]
    pub evidence: Value,
    /// Wall time of the whole run.
    pub elapsed_ms: f64,
}

/// One step of a demo.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Step {
    /// What was done.
    pub name: String,
    /// Milliseconds since the demo started.
    pub at_ms: f64,
    /// The instance that answered, when a service did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// What came back.
    #[schema(value_type = Object)]
    pub detail: Value,
}

/// Records a demo's steps and pushes each to the visitor's live stream.
pub(crate) struct Run<'a> {
    state: &'a AppState,
    demo: &'static str,
    session: Option<String>,
    started: Instant,
    steps: Vec<Step>,
}

impl<'a> Run<'a> {
    pub(crate) fn new(state: &'a AppState, demo: &'static str, session: Option<String>) -> Self {
        Self {
            state,
            demo,
            session,
            started: Instant::now(),
            steps: Vec::new(),
        }
    }

    /// Records a step (and pushes it to the visitor, if the visitor has a session).
    pub fn step(&mut self, name: impl Into<String>, instance: Option<String>, detail: Value) {
        let step = Step {
            name: name.into(),
            at_ms: ms(self.started.elapsed()),
            instance,
            detail,
        };
        if let Some(session) = &self.session {
            let data = serde_json::json!({ "demo": self.demo, "step": &step });
            self.state.live.publish(
                LiveEvent::public(self.state.instance_id.clone(), LiveBody::Demo(data))
                    .for_session(session.clone()),
            );
        }
        self.steps.push(step);
    }

    /// The report, with `pass` when `held`.
    pub fn finish(
        self,
        scenario: Option<String>,
        held: bool,
        summary: String,
        evidence: Value,
    ) -> DemoReport {
        DemoReport {
            demo: self.demo.to_owned(),
            scenario,
            verdict: if held { "pass" } else { "fail" },
            summary,
            steps: self.steps,
            evidence,
            elapsed_ms: ms(self.started.elapsed()),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// The first configured instance of `service`, or a 503 naming it.
pub(crate) fn upstream(state: &AppState, service: &str) -> Result<String, Problem> {
    state
        .settings
        .instances()
        .into_iter()
        .find(|(s, _)| s == service)
        .map(|(_, url)| url)
        .ok_or_else(|| {
            Problem::unavailable(service, format!("no {service} instance is configured"))
        })
}

/// A failed call to a service during a demo: 502 naming the service and what went wrong.
pub fn upstream_failed(service: &str, what: &str, error: impl std::fmt::Display) -> Problem {
    Problem::typed(
        axum::http::StatusCode::BAD_GATEWAY,
        "demo-upstream",
        "A service the demo needs did not answer as expected",
    )
    .detail(format!("{service}: {what}: {error}"))
    .with("service", service)
}

/// The `X-Instance-Id` of a response.
pub fn instance_of(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("x-instance-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
