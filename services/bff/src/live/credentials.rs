//! Database credentials on the live stream: while this replica leads, it reads every database
//! service instance's `GET /credentials` each period and pushes a `vault` event when an
//! instance's login changes — a rotation (with its stages and timings), a lease going degraded or
//! recovering — plus a console line, so the /chaos page shows leases, TTLs and rotations as
//! they happen. The first reading of each instance is pushed too.

use std::collections::HashMap;
use std::time::Duration;

use lab_contracts::live::{ConsoleLine, LiveBody, LiveEvent};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Leadership;
use crate::AppState;

/// The services that lease a database login.
const DATABASE_SERVICES: [&str; 5] = ["identity", "catalog", "orders", "payments", "checkout"];
/// A reading slower than this is skipped this period (the health probes report the instance).
const READ_TIMEOUT: Duration = Duration::from_millis(1_000);

/// Runs until `shutdown`.
pub(crate) async fn run(state: AppState, leadership: Leadership, shutdown: CancellationToken) {
    let period = Duration::from_millis(state.settings.live.health_every_ms.max(100));
    // What was last pushed per instance: (rotations, state).
    let mut seen: HashMap<String, (u64, String)> = HashMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        if !leadership.is_leader() {
            continue;
        }
        let instances: Vec<(String, String)> = state
            .settings
            .instances()
            .into_iter()
            .filter(|(service, _)| DATABASE_SERVICES.contains(&service.as_str()))
            .collect();
        let readings = futures::future::join_all(
            instances
                .iter()
                .map(|(service, url)| read(&state.http, service, url)),
        )
        .await;
        for reading in readings.into_iter().flatten() {
            let (instance, status) = reading;
            let rotations = status["rotations"].as_u64().unwrap_or(0);
            let current = status["state"].as_str().unwrap_or("unknown").to_owned();
            let changed = seen
                .get(&instance)
                .is_none_or(|(r, s)| *r != rotations || *s != current);
            if !changed {
                continue;
            }
            if let Some((before, was)) = seen.get(&instance)
                && let Some(line) = console_line(&instance, &status, *before, was)
            {
                state.live.publish(LiveEvent::public(
                    state.instance_id.clone(),
                    LiveBody::Console(line),
                ));
            }
            seen.insert(instance.clone(), (rotations, current));
            state.live.publish(LiveEvent::public(
                state.instance_id.clone(),
                LiveBody::Vault(json!({ "instance": instance, "status": status })),
            ));
        }
    }
}

/// One instance's `(instance id, status)`, or `None` when it does not answer in time.
async fn read(http: &reqwest::Client, service: &str, url: &str) -> Option<(String, Value)> {
    let response = http
        .get(format!("{url}/credentials"))
        .timeout(READ_TIMEOUT)
        .send()
        .await
        .ok()
        .filter(|r| r.status().is_success())?;
    let instance = response
        .headers()
        .get("x-instance-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| service.to_owned(), str::to_owned);
    let status: Value = response.json().await.ok()?;
    Some((instance, status))
}

/// What changed, for a person.
fn console_line(
    instance: &str,
    status: &Value,
    rotations_before: u64,
    was: &str,
) -> Option<ConsoleLine> {
    let rotations = status["rotations"].as_u64().unwrap_or(0);
    let state = status["state"].as_str().unwrap_or("unknown");
    if rotations > rotations_before {
        let took = status["last_rotation"]["total_ms"].as_f64();
        let text = match took {
            Some(ms) => {
                format!("{instance} rotated its database login ({ms:.0} ms, no request failed)")
            }
            None => format!("{instance} rotated its database login"),
        };
        return Some(ConsoleLine {
            level: "info".into(),
            text,
        });
    }
    (state != was).then(|| ConsoleLine {
        level: if state == "ok" { "info" } else { "warn" }.into(),
        text: format!(
            "{instance}: database credentials {was} → {state}{}",
            status["last_error"]
                .as_str()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ),
    })
}
