//! `POST /api/demo/outbox`: the transactional outbox riding out a broker outage. The demo pauses
//! orders' outbox relay (a timed pause that lifts itself within 30 s whatever happens to the
//! demo, through orders' demo route and the BFF's `demo`-scoped token), places an order — the
//! order row and its `OrderPlaced` row commit together — and shows the event waiting in the
//! outbox while checkout has not heard of the order. It then resumes the relay, shows the
//! backlog drain, pays on the sandbox PSP and follows the saga to its end. The pattern holds
//! when the event waited, the backlog drained and the order reached a final state.

use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use lab_http::{Json, Problem};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::saga::{PLENTY_SKU, RESTOCK_BELOW, RESTOCK_TO, Services, poll};
use super::{DemoReport, Run, instance_of, upstream_failed};
use crate::AppState;
use crate::session::Visitor;

/// The pause unless asked otherwise: long enough to read the backlog twice.
const DEFAULT_PAUSE_S: u64 = 10;
/// Bounds of the pause: orders' demo route lifts any pause after 30 s at the latest; under 2 s
/// the backlog may drain before the demo has looked at it.
const PAUSE_S: std::ops::RangeInclusive<u64> = 2..=30;
/// How long the backlog may take to drain after the resume: the relay wakes on NOTIFY, and
/// sweeps every second when the notification is lost.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// How long the relay stays paused.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboxDemo {
    /// 2–30 seconds (default 10): the longest the relay stays paused, should the demo stop
    /// half-way.
    pub pause_s: Option<u64>,
}

/// Pauses orders' relay, places an order, shows its event waiting, resumes, shows it relayed.
#[utoipa::path(post, path = "/api/demo/outbox", tag = "demo", request_body = OutboxDemo,
    responses((status = 200, body = super::DemoReport), (status = 422, body = lab_http::Problem),
        (status = 502, body = lab_http::Problem), (status = 503, body = lab_http::Problem)))]
pub(crate) async fn run_outbox(
    State(state): State<AppState>,
    visitor: Option<Extension<Visitor>>,
    Json(body): Json<OutboxDemo>,
) -> Result<Json<DemoReport>, Problem> {
    let pause_s = body.pause_s.unwrap_or(DEFAULT_PAUSE_S);
    if !PAUSE_S.contains(&pause_s) {
        return Err(Problem::invalid_field(
            "pause_s",
            format!(
                "{} to {} seconds, not {pause_s}",
                PAUSE_S.start(),
                PAUSE_S.end()
            ),
        ));
    }
    let services = Services::of(&state)?;
    let checkout = super::upstream(&state, "checkout")?;
    let token = state.service_token.get().await?;
    let relay = Relay {
        http: &services.http,
        orders: &services.orders,
        token: &token,
    };
    let mut run = Run::new(
        &state,
        "outbox",
        visitor.map(|Extension(v)| v.session.to_string()),
    );
    let product = services.product(&mut run, PLENTY_SKU).await?;
    services
        .ensure_stock(&mut run, &product, RESTOCK_BELOW, RESTOCK_TO)
        .await?;

    let paused = relay
        .call("pause", Some(json!({ "for_s": pause_s })))
        .await?;
    run.step(
        format!("paused orders' outbox relay (it lifts itself after {pause_s} s)"),
        None,
        paused,
    );
    // From here on the relay is paused: resume it whatever happens next.
    let outcome = while_paused(&mut run, &services, &relay, &checkout, &product).await;
    let resumed = relay.call("resume", None).await;
    let (order, waiting) = outcome?;
    run.step("resumed the relay", None, resumed?);

    let drained = poll(DRAIN_DEADLINE, || async {
        let view = relay.call("status", None).await?;
        Ok((view["pending"].as_i64() == Some(0)).then_some(view))
    })
    .await?;
    run.step(
        if drained.is_some() {
            "the backlog drained: the event reached RabbitMQ"
        } else {
            "the backlog did not drain in time"
        },
        None,
        drained.clone().unwrap_or(Value::Null),
    );
    let customer = order.customer.clone();
    let session = services.payment_session(&mut run, &order.id).await?;
    services.buyer(&mut run, &session, true).await?;
    let finished = services.finished(&mut run, &customer, &order.id).await?;
    let status = finished["status"].as_str().unwrap_or_default().to_owned();
    let pending_while_paused = waiting["pending"].as_i64().unwrap_or(0);
    let held = pending_while_paused >= 1 && drained.is_some() && super::saga::is_final(&finished);
    let summary = format!(
        "{pending_while_paused} event(s) waited in the outbox while the relay was paused; the \
         backlog {}; the order ended {status}",
        if drained.is_some() {
            "drained after the resume"
        } else {
            "did not drain"
        }
    );
    Ok(Json(run.finish(
        None,
        held,
        summary,
        json!({
            "order": finished,
            "outbox_while_paused": waiting,
            "outbox_after": drained,
            "pause_s": pause_s,
        }),
    )))
}

/// The order the demo placed.
struct Placed {
    id: String,
    customer: String,
}

/// Places the order while the relay is paused and reads the backlog and checkout's view.
async fn while_paused(
    run: &mut Run<'_>,
    services: &Services,
    relay: &Relay<'_>,
    checkout: &str,
    product: &Value,
) -> Result<(Placed, Value), Problem> {
    let customer = format!("demo:{}", Uuid::now_v7());
    let id = services.place(run, &customer, product, "stripe").await?;
    let waiting = relay.call("status", None).await?;
    run.step(
        "the OrderPlaced event waits in orders' outbox",
        None,
        waiting.clone(),
    );
    let saga = services
        .http
        .get(format!("{checkout}/sagas/{id}"))
        .send()
        .await
        .map_err(|e| upstream_failed("checkout", "looking for the saga", e))?;
    let instance = instance_of(&saga);
    run.step(
        "checkout has not heard of the order yet",
        instance,
        json!({ "status": saga.status().as_u16() }),
    );
    Ok((Placed { id, customer }, waiting))
}

/// Orders' demo outbox routes, called with the BFF's service token.
struct Relay<'a> {
    http: &'a reqwest::Client,
    orders: &'a str,
    token: &'a str,
}

impl Relay<'_> {
    /// `status` (GET), `pause` or `resume` (POST).
    async fn call(&self, what: &str, body: Option<Value>) -> Result<Value, Problem> {
        let request = match what {
            "status" => self.http.get(format!("{}/demo/outbox", self.orders)),
            _ => self
                .http
                .post(format!("{}/demo/outbox/{what}", self.orders)),
        };
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let response = request
            .bearer_auth(self.token)
            .send()
            .await
            .map_err(|e| upstream_failed("orders", what, e))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(upstream_failed("orders", what, format!("{status}: {body}")));
        }
        Ok(body)
    }
}
