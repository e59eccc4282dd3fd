//! `POST /api/demo/circuit-breaker`: requests for the catalog through the proxy's real breakers,
//! while the visitor makes the catalog fail (an HTTP fault on every replica: 503 after 200 ms,
//! counted against the breakers, lifted after a minute at most), lets it recover, resets the
//! breakers by hand, or bypasses them to see what every request would cost without one. The
//! evidence is each request's status, latency, replica and breaker verdict, and every replica's
//! breaker afterwards.

use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use lab_http::{Json, Problem};
use lab_resilience::HttpFault;
use serde::Deserialize;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{DemoReport, Run};
use crate::AppState;
use crate::session::Visitor;

/// The service the demo fails: catalog has two replicas, so the breakers of both show.
const SERVICE: &str = "catalog";
/// The proxied read each request makes.
const PATH: &str = "/api/products?per_page=1";
/// A sick upstream is slow as well as failing: this is what each failed request costs without
/// a breaker, and what a breaker that fails fast saves.
const SICK_LATENCY_MS: u64 = 200;
/// How long "failing" lasts unless lifted: a forgotten toggle heals itself.
const SICK_FOR: Duration = Duration::from_secs(60);
/// Requests per run: enough to open a breaker (5 calls) and show fail-fast after it.
const MAX_REQUESTS: u32 = 50;
/// A request answered this much faster than the sick latency did not wait for the upstream.
const FAIL_FAST_BELOW_MS: f64 = 50.0;

/// One run of the demo.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct BreakerDemo {
    /// Make the catalog fail (`true`) or recover (`false`) before the requests; unchanged when absent.
    #[serde(default)]
    pub upstream_failing: Option<bool>,
    /// Requests to send (1–50, default 10).
    #[serde(default)]
    pub requests: Option<u32>,
    /// Send them straight to the replicas, with no breaker.
    #[serde(default)]
    pub bypass: bool,
    /// Close every catalog breaker by hand first.
    #[serde(default)]
    pub reset: bool,
}

/// Runs requests through (or around) the catalog's breakers.
#[utoipa::path(post, path = "/api/demo/circuit-breaker", tag = "demo", request_body = BreakerDemo, responses(
    (status = 200, body = super::DemoReport), (status = 422, body = lab_http::Problem),
    (status = 503, body = lab_http::Problem)))]
pub(crate) async fn run_breaker(
    State(state): State<AppState>,
    visitor: Option<Extension<Visitor>>,
    Json(body): Json<BreakerDemo>,
) -> Result<Json<DemoReport>, Problem> {
    let requests = body.requests.unwrap_or(10);
    if !(1..=MAX_REQUESTS).contains(&requests) {
        return Err(Problem::invalid_field(
            "requests",
            format!("between 1 and {MAX_REQUESTS}"),
        ));
    }
    let replicas: Vec<String> = state
        .settings
        .instances()
        .into_iter()
        .filter(|(s, _)| s == SERVICE)
        .map(|(_, url)| url)
        .collect();
    if replicas.is_empty() {
        return Err(Problem::unavailable(
            SERVICE,
            "no catalog instance is configured",
        ));
    }
    let mut run = Run::new(
        &state,
        "circuit-breaker",
        visitor.map(|Extension(v)| v.session.to_string()),
    );
    if body.reset {
        state.proxy.reset(SERVICE);
        run.step("closed every catalog breaker by hand", None, json!({}));
    }
    match body.upstream_failing {
        Some(true) => {
            let fault = HttpFault {
                status: Some(503),
                probability: 1.0,
                latency_ms: SICK_LATENCY_MS,
                trips_breaker: true,
            };
            // Through the shared chaos store: every BFF replica's catalog calls fail alike, and
            // the /chaos page lists it with its time left.
            crate::chaos::faults::set_shared(&state, SERVICE, fault, SICK_FOR).await?;
            run.step(
                "the catalog now fails: 503 after 200 ms, on every replica",
                None,
                json!({ "for_s": SICK_FOR.as_secs() }),
            );
        }
        Some(false) => {
            crate::chaos::faults::clear_shared(&state, SERVICE).await?;
            run.step("the catalog recovered", None, json!({}));
        }
        None => {}
    }
    let failing = state.proxy.fault(SERVICE).is_some();
    let mut results = Vec::new();
    for i in 0..requests {
        let result = if body.bypass {
            bypass(&state, &replicas[i as usize % replicas.len()]).await
        } else {
            through_breaker(&state).await
        };
        run.step(
            format!("request {}: {}", i + 1, result["status"]),
            result["replica"].as_str().map(str::to_owned),
            result.clone(),
        );
        results.push(result);
    }
    let breakers: Vec<Value> = state
        .proxy
        .breakers()
        .into_iter()
        .filter(|b| &*b.service == SERVICE)
        .map(|b| serde_json::to_value(b).unwrap_or(Value::Null))
        .collect();
    let fast_fails = results
        .iter()
        .filter(|r| {
            r["circuit_open"] == true && r["ms"].as_f64().unwrap_or(f64::MAX) < FAIL_FAST_BELOW_MS
        })
        .count();
    let ok = results.iter().filter(|r| r["status"] == 200).count();
    let (held, summary) = match (body.bypass, failing) {
        (true, true) => {
            let slow = results
                .iter()
                .filter(|r| r["ms"].as_f64().unwrap_or(0.0) >= SICK_LATENCY_MS as f64)
                .count();
            (
                slow == results.len(),
                format!(
                    "without a breaker every one of {} requests waited for the sick upstream ({slow} took ≥ {SICK_LATENCY_MS} ms)",
                    results.len()
                ),
            )
        }
        (false, true) => (
            fast_fails > 0,
            format!(
                "{fast_fails} of {} requests failed fast (circuit open, < {FAIL_FAST_BELOW_MS} ms) instead of waiting for the sick upstream",
                results.len()
            ),
        ),
        (_, false) => (
            ok == results.len(),
            format!(
                "{ok} of {} requests answered 200 from a healthy catalog",
                results.len()
            ),
        ),
    };
    Ok(Json(run.finish(
        Some(if body.bypass { "bypass" } else { "breaker" }.into()),
        held,
        summary,
        json!({ "upstream_failing": failing, "requests": results, "breakers": breakers }),
    )))
}

/// One read through the proxy's real path (balancer, breakers, retries, fault).
async fn through_breaker(state: &AppState) -> Value {
    let started = Instant::now();
    let request = match axum::http::Request::get(PATH).body(Body::empty()) {
        Ok(r) => r,
        Err(e) => return json!({ "status": 0, "error": e.to_string() }),
    };
    let response = match state.proxy.router().oneshot(request).await {
        Ok(r) => r,
        Err(e) => return json!({ "status": 0, "error": e.to_string() }),
    };
    let ms = started.elapsed().as_secs_f64() * 1_000.0;
    let (replica, retry_after) = {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        (header("x-upstream-instance-id"), header("retry-after"))
    };
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .unwrap_or(Value::Null);
    let circuit_open = body["type"] == "urn:lab:problem:circuit-open";
    json!({
        "status": status, "ms": ms, "replica": replica, "retry_after": retry_after,
        "circuit_open": circuit_open, "problem": body.get("type").cloned(),
    })
}

/// One read straight to `replica`, suffering the same fault a sick upstream would put on every
/// caller, with no breaker to spare it.
async fn bypass(state: &AppState, replica: &str) -> Value {
    let started = Instant::now();
    if let Some((fault, _)) = state.proxy.fault(SERVICE) {
        tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
        if let Some(status) = fault
            .status
            .filter(|_| rand::random::<f64>() < fault.probability)
        {
            let ms = started.elapsed().as_secs_f64() * 1_000.0;
            return json!({ "status": status, "ms": ms, "replica": Value::Null, "circuit_open": false });
        }
    }
    let url = format!("{replica}{}", PATH.trim_start_matches("/api"));
    let result = state.http.get(&url).send().await;
    let ms = started.elapsed().as_secs_f64() * 1_000.0;
    match result {
        Ok(response) => json!({
            "status": response.status().as_u16(), "ms": ms,
            "replica": super::instance_of(&response), "circuit_open": false,
        }),
        Err(e) => json!({ "status": 0, "ms": ms, "error": e.to_string(), "circuit_open": false }),
    }
}
