//! Background journeys: while nobody drives it, the cluster still shows its patterns. Every
//! `journeys.every_s` the leading replica runs the next journey in turn — an order through the
//! whole saga, the same order retried with one `Idempotency-Key`, an optimistic-concurrency race
//! on the catalog — and pushes its outcome (verdict and summary) to every viewer. One journey at a
//! time, on the demo products only; off in tests unless a test turns it on.

use std::time::Duration;

use lab_contracts::live::{ConsoleLine, LiveBody, LiveEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::demo::{saga, upstream};
use crate::live::Leadership;

/// The journeys, in the order they take turns.
const JOURNEYS: [&str; 3] = ["place-order", "idempotent-retry", "occ-race"];
/// Writers in the catalog race: enough for a visible loser per replica.
const RACE_WRITERS: u32 = 6;
/// The longest a journey may take before the next turn is skipped rather than stacked.
const JOURNEY_TIMEOUT: Duration = Duration::from_secs(60);

/// When journeys run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct JourneySettings {
    /// Whether the leader runs journeys at all.
    pub enabled: bool,
    /// Seconds between two journeys' starts.
    pub every_s: u64,
}

impl Default for JourneySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            // Every ~20 s: the page always has something recent to show, and the load stays
            // far below anything a visitor's own demos cause.
            every_s: 20,
        }
    }
}

/// Runs journeys until `shutdown`, while this replica leads.
pub(crate) async fn run(state: AppState, leadership: Leadership, shutdown: CancellationToken) {
    let every = Duration::from_secs(state.settings.journeys.every_s.max(1));
    let mut turn = 0usize;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if !leadership.is_leader() {
            continue;
        }
        let journey = JOURNEYS[turn % JOURNEYS.len()];
        turn += 1;
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            r = tokio::time::timeout(JOURNEY_TIMEOUT, run_one(&state, journey)) => r,
        };
        let outcome = outcome.unwrap_or_else(|_| {
            json!({ "verdict": "fail", "summary": format!("did not finish within {JOURNEY_TIMEOUT:?}") })
        });
        publish(&state, journey, outcome);
    }
}

/// One journey's outcome: `{verdict, summary, …}`.
async fn run_one(state: &AppState, journey: &str) -> Value {
    let result = match journey {
        "place-order" => saga::saga(state, None, "success".into(), "stripe".into())
            .await
            .map(|r| json!({ "verdict": r.verdict, "summary": r.summary, "elapsed_ms": r.elapsed_ms })),
        "idempotent-retry" => saga::saga(state, None, "idempotent-retry".into(), "stripe".into())
            .await
            .map(|r| json!({ "verdict": r.verdict, "summary": r.summary, "elapsed_ms": r.elapsed_ms })),
        _ => occ_race(state).await,
    };
    result.unwrap_or_else(
        |problem| json!({ "verdict": "fail", "summary": problem.detail.unwrap_or(problem.title) }),
    )
}

/// The catalog's own race demo: concurrent writes with one ETag across its replicas.
async fn occ_race(state: &AppState) -> Result<Value, lab_http::Problem> {
    let catalog = upstream(state, "catalog")?;
    let response = state
        .http
        .post(format!("{catalog}/demo/race"))
        .json(&json!({ "n": RACE_WRITERS }))
        .send()
        .await
        .map_err(|e| crate::demo::upstream_failed("catalog", "the race", e))?;
    let report: Value = response
        .json()
        .await
        .map_err(|e| crate::demo::upstream_failed("catalog", "the race", e))?;
    let winners = &report["evidence"]["winners"];
    let lost = &report["evidence"]["precondition_failed"];
    Ok(json!({
        "verdict": report["verdict"],
        "summary": format!("{RACE_WRITERS} writers with one ETag: {winners} won, {lost} got 412"),
    }))
}

fn publish(state: &AppState, journey: &str, outcome: Value) {
    let verdict = outcome["verdict"].as_str().unwrap_or("fail").to_owned();
    let summary = outcome["summary"].as_str().unwrap_or_default().to_owned();
    state.live.publish(LiveEvent::public(
        state.instance_id.clone(),
        LiveBody::Console(ConsoleLine {
            level: if verdict == "pass" { "info" } else { "warn" }.into(),
            text: format!("journey {journey}: {verdict} — {summary}"),
        }),
    ));
    state.live.publish(LiveEvent::public(
        state.instance_id.clone(),
        LiveBody::Demo(json!({ "journey": journey, "outcome": outcome })),
    ));
}
