//! `POST /api/demo/vault-rotation`: orders' database login rotated (docs/adr/0005: lease a new
//! login from OpenBao, swap the pool, drain the old one, revoke it) while a bounded stream of
//! requests keeps reading orders' database. The rotation goes through orders' capped demo route
//! with the BFF's `demo`-scoped token; the leases are shown as the public `GET /credentials`
//! shows them (lease ids redacted, logins' names hidden). The pattern holds when no request
//! failed and the lease changed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use lab_http::{Json, Problem};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{DemoReport, Run, instance_of, upstream, upstream_failed};
use crate::AppState;
use crate::session::Visitor;

/// Request streams unless asked otherwise: a few connections in use during the swap.
const DEFAULT_WORKERS: usize = 4;
/// The most streams: each holds a pooled connection of orders' at a time.
const MAX_WORKERS: usize = 8;
/// The streams run this long before the rotation starts and after it ends, so requests overlap
/// every stage of it.
const MARGIN: Duration = Duration::from_millis(300);
/// No request may take longer: a request stuck on a revoked login is a failure, not a wait.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How many request streams run through the rotation.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VaultRotationDemo {
    /// 1–8 concurrent request streams (default 4).
    pub workers: Option<usize>,
}

/// What the request streams saw.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    failed: AtomicU64,
    /// The first failure, for the evidence.
    first_failure: std::sync::Mutex<Option<String>>,
}

/// Rotates orders' database login under a stream of requests.
#[utoipa::path(post, path = "/api/demo/vault-rotation", tag = "demo",
    request_body = VaultRotationDemo,
    responses((status = 200, body = super::DemoReport), (status = 422, body = lab_http::Problem),
        (status = 502, body = lab_http::Problem), (status = 503, body = lab_http::Problem)))]
pub(crate) async fn run_vault_rotation(
    State(state): State<AppState>,
    visitor: Option<Extension<Visitor>>,
    Json(body): Json<VaultRotationDemo>,
) -> Result<Json<DemoReport>, Problem> {
    let workers = body.workers.unwrap_or(DEFAULT_WORKERS);
    if !(1..=MAX_WORKERS).contains(&workers) {
        return Err(Problem::invalid_field(
            "workers",
            format!("1 to {MAX_WORKERS} request streams, not {workers}"),
        ));
    }
    let orders = upstream(&state, "orders")?;
    let token = state.service_token.get().await?;
    let mut run = Run::new(
        &state,
        "vault-rotation",
        visitor.map(|Extension(v)| v.session.to_string()),
    );
    let http = state.http.clone();
    let before = lease(&http, &orders).await?;
    if before["source"] != "vault" {
        return Err(Problem::unavailable(
            "openbao",
            "orders uses a static database login: there is no lease to rotate",
        ));
    }
    run.step("orders' current lease", None, before.clone());

    let tally = Tally::default();
    let stop = AtomicBool::new(false);
    // The streams and the rotation run side by side in this request's task: nothing outlives
    // the demo, and a visitor who goes away stops all of it.
    let streams =
        futures::future::join_all((0..workers).map(|_| stream(&http, &orders, &tally, &stop)));
    let driver = async {
        tokio::time::sleep(MARGIN).await;
        let sent_before = tally.sent.load(Ordering::Relaxed);
        let rotated = rotate(&http, &orders, &token).await;
        let sent_at_end = tally.sent.load(Ordering::Relaxed);
        tokio::time::sleep(MARGIN).await;
        stop.store(true, Ordering::Relaxed);
        (rotated, sent_before, sent_at_end)
    };
    let (_, (rotated, sent_before, sent_at_end)) = tokio::join!(streams, driver);
    let (report, instance) = rotated?;
    run.step(
        "rotated orders' login: new lease, pool swapped, old login drained and revoked",
        instance,
        report.clone(),
    );
    let after = lease(&http, &orders).await?;
    run.step("orders' lease after the rotation", None, after.clone());

    let sent = tally.sent.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let first_failure = tally
        .first_failure
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
    let changed = before["lease_id"] != after["lease_id"] && after["lease_id"].is_string();
    let held = failed == 0 && changed && sent > 0;
    let rotation_ms = report["total_ms"].as_f64().unwrap_or(0.0);
    let summary = format!(
        "{sent} request(s) sent through the rotation ({} while it ran), {failed} failed; the \
         lease {} in {rotation_ms:.0} ms",
        sent_at_end.saturating_sub(sent_before),
        if changed { "changed" } else { "did not change" }
    );
    Ok(Json(run.finish(
        None,
        held,
        summary,
        json!({
            "old_lease": before["lease_id"],
            "new_lease": after["lease_id"],
            "rotation_ms": rotation_ms,
            "rotation": report,
            "requests": {
                "sent": sent,
                "during_rotation": sent_at_end.saturating_sub(sent_before),
                "failed": failed,
                "first_failure": first_failure,
                "workers": workers,
            },
        }),
    )))
}

/// Orders' public lease status (names hidden, lease id redacted).
async fn lease(http: &reqwest::Client, orders: &str) -> Result<Value, Problem> {
    let response = http
        .get(format!("{orders}/credentials"))
        .send()
        .await
        .map_err(|e| upstream_failed("orders", "reading its lease", e))?;
    let status: Value = response
        .json()
        .await
        .map_err(|e| upstream_failed("orders", "reading its lease", e))?;
    Ok(json!({
        "source": status["source"],
        "state": status["state"],
        "lease_id": status["lease_id"],
        "ttl_left_s": status["ttl_left_s"],
        "rotations": status["rotations"],
    }))
}

/// Orders' capped demo rotation, with the BFF's token.
async fn rotate(
    http: &reqwest::Client,
    orders: &str,
    token: &str,
) -> Result<(Value, Option<String>), Problem> {
    let response = http
        .post(format!("{orders}/demo/credentials/rotate"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| upstream_failed("orders", "rotating its login", e))?;
    let status = response.status();
    let instance = instance_of(&response);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(upstream_failed(
            "orders",
            "rotating its login",
            format!("{status}: {body}"),
        ));
    }
    Ok((body, instance))
}

/// Reads orders' database until `stop`: each request looks an order up (an unknown one, so a
/// 404 is orders having asked its database and answered; a 5xx or no answer is a failure).
async fn stream(http: &reqwest::Client, orders: &str, tally: &Tally, stop: &AtomicBool) {
    let customer = format!("demo:{}", Uuid::now_v7());
    while !stop.load(Ordering::Relaxed) {
        let result = http
            .get(format!("{orders}/orders/{}", Uuid::now_v7()))
            .header("x-lab-customer", customer.as_str())
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await;
        tally.sent.fetch_add(1, Ordering::Relaxed);
        let failure = match result {
            Ok(r) if r.status().is_server_error() => Some(format!("{}", r.status())),
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        if let Some(failure) = failure {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = tally.first_failure.lock() {
                first.get_or_insert(failure);
            }
        }
    }
}
