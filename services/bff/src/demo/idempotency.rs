//! `POST /api/demo/idempotency`: one order sent many times with one `Idempotency-Key` and one
//! body, through the BFF's own edge replay ([`crate::replay`]) in-process, as a browser's
//! retries would arrive: first all at once (one runs, the rest get 409 while it is in flight or
//! its kept answer once it is done), then one after another (each replayed byte for byte,
//! `Idempotent-Replayed: true`), then once with another body (422). The buyer is a session of
//! its own for the run, so its orders are this key's. Orders' own API is then asked for the key
//! (straight to orders, past the edge) and for the order: the pattern holds when every answer
//! named one order and orders agrees.

use std::collections::BTreeSet;
use std::time::Instant;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, Request, header};
use lab_http::{Json, Problem};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tower::ServiceExt as _;
use uuid::Uuid;

use super::saga::{PLENTY_SKU, RESTOCK_BELOW, RESTOCK_TO, Services, id_of};
use super::{DemoReport, Run, upstream_failed};
use crate::AppState;
use crate::replay::IDEMPOTENT_REPLAYED;
use crate::session::{SessionId, Visitor};

/// Requests per phase unless asked otherwise: enough to see replays and an in-flight 409.
const DEFAULT_SENDS: usize = 5;
/// The most per phase: every demo input is bounded (N ≤ 50).
const MAX_SENDS: usize = 50;

/// How the idempotency demo runs; every field optional (`{}`).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyDemo {
    /// Requests sent at once, 1–50 (default 5).
    pub parallel: Option<usize>,
    /// Requests sent one after another, 1–50 (default 5).
    pub sequential: Option<usize>,
    /// `stripe` (default) or `paypal`.
    pub provider: Option<String>,
}

/// One request of the run, as the edge answered it.
#[derive(Debug, Clone, Serialize)]
struct Attempt {
    /// `at-once`, `one-after-another` or `other-body`.
    phase: &'static str,
    status: u16,
    /// Whether the answer carried `Idempotent-Replayed: true`.
    replayed: bool,
    /// The order the answer names, if any.
    order_id: Option<String>,
    /// How long the answer took.
    ms: f64,
}

fn count(field: &str, value: Option<usize>) -> Result<usize, Problem> {
    let n = value.unwrap_or(DEFAULT_SENDS);
    if (1..=MAX_SENDS).contains(&n) {
        Ok(n)
    } else {
        Err(Problem::invalid_field(
            field,
            format!("1 to {MAX_SENDS} requests, not {n}"),
        ))
    }
}

/// Sends one order many times with one key through the edge replay; shows one order.
#[utoipa::path(post, path = "/api/demo/idempotency", tag = "demo", request_body = IdempotencyDemo,
    responses((status = 200, body = super::DemoReport), (status = 422, body = lab_http::Problem),
        (status = 502, body = lab_http::Problem), (status = 503, body = lab_http::Problem)))]
pub(crate) async fn run_idempotency(
    State(state): State<AppState>,
    visitor: Option<Extension<Visitor>>,
    Json(body): Json<IdempotencyDemo>,
) -> Result<Json<DemoReport>, Problem> {
    let parallel = count("parallel", body.parallel)?;
    let sequential = count("sequential", body.sequential)?;
    let provider = body.provider.unwrap_or_else(|| "stripe".to_owned());
    if provider != "stripe" && provider != "paypal" {
        return Err(Problem::invalid_field("provider", "`stripe` or `paypal`"));
    }
    let services = Services::of(&state)?;
    let visitor = visitor.map(|Extension(v)| v);
    let mut run = Run::new(
        &state,
        "idempotency",
        visitor.as_ref().map(|v| v.session.to_string()),
    );
    let product = services.product(&mut run, PLENTY_SKU).await?;
    services
        .ensure_stock(&mut run, &product, RESTOCK_BELOW, RESTOCK_TO)
        .await?;

    // A buyer of its own for this run: its replay space and its orders are the demo's alone.
    let buyer = Visitor {
        session: SessionId::random(),
        fresh: false,
        client_ip: visitor.map_or([127, 0, 0, 1].into(), |v| v.client_ip),
        bearer: false,
    };
    let customer = format!("session:{}", buyer.session);
    let edge = state.edge.replayed(state.proxy.router());
    let key = Uuid::now_v7().to_string();
    let order = |quantity: u32| {
        Bytes::from(
            json!({ "lines": [{ "product_id": id_of(&product), "quantity": quantity }], "provider": provider })
                .to_string(),
        )
    };
    let same = order(1);

    let mut attempts: Vec<Attempt> = futures::future::join_all(
        (0..parallel).map(|_| send(&edge, &buyer, &key, same.clone(), "at-once")),
    )
    .await;
    run.step(
        format!("sent the order {parallel} times at once with one Idempotency-Key"),
        None,
        json!({ "idempotency_key": key, "attempts": &attempts }),
    );
    let mut one_by_one = Vec::with_capacity(sequential);
    for _ in 0..sequential {
        one_by_one.push(send(&edge, &buyer, &key, same.clone(), "one-after-another").await);
    }
    run.step(
        format!("sent it {sequential} more times, one after another"),
        None,
        json!({ "attempts": &one_by_one }),
    );
    attempts.extend(one_by_one);
    let other = send(&edge, &buyer, &key, order(2), "other-body").await;
    run.step(
        "sent the same key with another body (two units)",
        None,
        json!({ "attempt": &other }),
    );

    let named: BTreeSet<&str> = attempts
        .iter()
        .filter_map(|a| a.order_id.as_deref())
        .collect();
    let orders_says = orders_answer_for_key(&services, &customer, &key, &same).await?;
    run.step(
        "asked orders itself for the key, past the edge",
        None,
        json!({ "order_id": orders_says }),
    );
    let view = match named.iter().next() {
        Some(id) => services.order(&customer, id).await?,
        None => Value::Null,
    };

    let placed = attempts.iter().filter(|a| a.status == 202).count();
    let in_flight = attempts.iter().filter(|a| a.status == 409).count();
    let replayed = attempts.iter().filter(|a| a.replayed).count();
    let unexpected = attempts
        .iter()
        .filter(|a| a.status != 202 && a.status != 409)
        .count();
    let one_order = named.len() == 1 && named.iter().next().copied() == orders_says.as_deref();
    let held = one_order && unexpected == 0 && other.status == 422 && view["order_id"].is_string();
    let summary = format!(
        "{} request(s) named {} order(s) (orders itself names {}); {placed} answered 202 \
         ({replayed} of them replayed by the edge), {in_flight} got 409 while the first was in \
         flight, another body got {}",
        attempts.len(),
        named.len(),
        orders_says.as_deref().unwrap_or("none"),
        other.status
    );
    Ok(Json(run.finish(
        None,
        held,
        summary,
        json!({
            "idempotency_key": key,
            "attempts": attempts,
            "other_body": other,
            "order_ids": named,
            "orders_says": orders_says,
            "order": view,
            "counts": { "placed": placed, "replayed": replayed, "in_flight": in_flight },
        }),
    )))
}

/// `POST /api/orders` through `edge` as `buyer`, with `key` and `body`.
async fn send(
    edge: &axum::Router,
    buyer: &Visitor,
    key: &str,
    body: Bytes,
    phase: &'static str,
) -> Attempt {
    let started = Instant::now();
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/orders")
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", key)
        .extension(buyer.clone())
        .body(Body::from(body));
    let response = match request {
        Ok(request) => match edge.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        Err(e) => {
            tracing::error!(error = %e, "building the demo's request");
            return Attempt {
                phase,
                status: 0,
                replayed: false,
                order_id: None,
                ms: 0.0,
            };
        }
    };
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get(&IDEMPOTENT_REPLAYED)
        .is_some_and(|v| v.as_bytes() == b"true");
    // An order's answer is a few hundred bytes; a body that does not come whole is no order.
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let order_id = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["order_id"].as_str().map(str::to_owned));
    Attempt {
        phase,
        status,
        replayed,
        order_id,
        ms: started.elapsed().as_secs_f64() * 1_000.0,
    }
}

/// The order orders itself holds for `key`: the same placement sent straight to orders, whose
/// claim on the key answers with the order it already made.
async fn orders_answer_for_key(
    services: &Services,
    customer: &str,
    key: &str,
    body: &Bytes,
) -> Result<Option<String>, Problem> {
    let response = services
        .http
        .post(format!("{}/orders", services.orders))
        .header("idempotency-key", key)
        .header("x-lab-customer", customer)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.clone())
        .send()
        .await
        .map_err(|e| upstream_failed("orders", "asking for the key", e))?;
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    Ok(answer["order_id"].as_str().map(str::to_owned))
}
