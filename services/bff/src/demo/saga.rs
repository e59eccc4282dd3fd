//! `POST /api/demo/saga`: an order through the whole checkout saga, with the buyer's choice made
//! on the sandbox PSP — `success` (approve: stock committed, payment captured, `Completed`),
//! `payment-declined` (decline: stock released, `Cancelled`), and `last-unit-race` (two buyers
//! for the one unit left: one `Completed`, one `Rejected`, stock never negative), and
//! `payment-expired` (the order asks for a payment window of a few seconds — orders takes that
//! only with the BFF's `demo`-scoped token — the session is left unpaid, checkout's deadline
//! fires: stock released, session voided, `Cancelled`; then the buyer tries to pay late). The
//! evidence is
//! each order's saga history as orders recorded it, the payment as payments recorded it, and the
//! product's stock before and after.

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

/// How long the saga may take to reach its final state: a handful of hops over RabbitMQ and two
/// PSP round trips take well under a second on a healthy cluster; a chaos run may slow it.
const SAGA_DEADLINE: Duration = Duration::from_secs(30);
/// How long payments may take to open the PSP session after the order is placed.
const SESSION_DEADLINE: Duration = Duration::from_secs(15);
/// Polling period while waiting on the services.
const POLL: Duration = Duration::from_millis(100);
/// The demo products (catalog's seed): one with plenty of stock, one kept at a single unit.
pub(super) const PLENTY_SKU: &str = "DEMO-RACE";
const LAST_UNIT_SKU: &str = "DEMO-LAST-UNIT";
/// Below this the plenty product is restocked before a run, so demos never run dry.
pub(super) const RESTOCK_BELOW: i64 = 10;
pub(super) const RESTOCK_TO: i64 = 100;

/// The scenarios this demo runs.
const SCENARIOS: &[&str] = &[
    "success",
    "payment-declined",
    "last-unit-race",
    "idempotent-retry",
    "payment-expired",
];
/// The payment-expired scenario's window unless asked otherwise: the PSP session expires with it
/// (in whole seconds, counted from before the session is opened), so a few seconds of margin
/// keep it open long enough to be created; short enough to watch it lapse.
const DEFAULT_PAYMENT_WINDOW_S: u32 = 5;
/// The windows orders accepts from the demo (see orders' `DEMO_PAYMENT_WINDOW_S`).
const PAYMENT_WINDOW_S: std::ops::RangeInclusive<u32> = 2..=30;
/// How long after the window the saga may take to cancel: checkout's deadline poll, the void at
/// the PSP and the stock release over RabbitMQ.
const EXPIRY_GRACE: Duration = Duration::from_secs(30);
/// Requests per phase of the idempotent-retry scenario (in sequence, then at once).
const RETRIES: usize = 5;

/// Which saga to run.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SagaDemo {
    /// `success`, `payment-declined`, `last-unit-race`, `idempotent-retry` or `payment-expired`.
    pub scenario: String,
    /// `stripe` (default) or `paypal`.
    #[serde(default)]
    pub provider: Option<String>,
    /// `payment-expired` only: the payment window in seconds, 2–30 (default 5).
    #[serde(default)]
    pub payment_window_s: Option<u32>,
}

/// Runs one saga scenario end to end.
#[utoipa::path(post, path = "/api/demo/saga", tag = "demo", request_body = SagaDemo, responses(
    (status = 200, body = super::DemoReport), (status = 422, body = lab_http::Problem),
    (status = 502, body = lab_http::Problem), (status = 503, body = lab_http::Problem)))]
pub(crate) async fn run_saga(
    State(state): State<AppState>,
    visitor: Option<Extension<Visitor>>,
    Json(body): Json<SagaDemo>,
) -> Result<Json<DemoReport>, Problem> {
    let provider = body.provider.unwrap_or_else(|| "stripe".to_owned());
    let session = visitor.map(|Extension(v)| v.session.to_string());
    if body.scenario == "payment-expired" || body.payment_window_s.is_some() {
        let window = body.payment_window_s.unwrap_or(DEFAULT_PAYMENT_WINDOW_S);
        if body.scenario != "payment-expired" || !PAYMENT_WINDOW_S.contains(&window) {
            return Err(Problem::invalid_field(
                "payment_window_s",
                format!(
                    "{} to {} seconds, for the payment-expired scenario only",
                    PAYMENT_WINDOW_S.start(),
                    PAYMENT_WINDOW_S.end()
                ),
            ));
        }
        if provider != "stripe" && provider != "paypal" {
            return Err(Problem::invalid_field("provider", "`stripe` or `paypal`"));
        }
        return expired(&state, session, provider, window).await.map(Json);
    }
    saga(&state, session, body.scenario, provider)
        .await
        .map(Json)
}

/// The payment-expired scenario: a short payment window left to lapse.
async fn expired(
    state: &AppState,
    session: Option<String>,
    provider: String,
    window_s: u32,
) -> Result<DemoReport, Problem> {
    let services = Services::of(state)?;
    let token = state.service_token.get().await?;
    let mut run = Run::new(state, "saga", session);
    let customer = format!("demo:{}", Uuid::now_v7());
    let product = services.product(&mut run, PLENTY_SKU).await?;
    services
        .ensure_stock(&mut run, &product, RESTOCK_BELOW, RESTOCK_TO)
        .await?;
    let before = services.inventory(&product).await?;
    let order = services
        .place_with_window(&mut run, &customer, &product, &provider, window_s, &token)
        .await?;
    let session_id = services.payment_session(&mut run, &order).await?;
    run.step(
        format!("left the payment session unpaid: its window is {window_s} s"),
        None,
        json!({ "session_id": session_id, "payment_window_s": window_s }),
    );
    let within = Duration::from_secs(u64::from(window_s)) + EXPIRY_GRACE;
    let finished = services
        .finished_within(&mut run, &customer, &order, within)
        .await?;
    let after = services.settled_inventory(&product, &before, false).await?;
    let payment = services.payment(&order).await?;
    run.step(
        "the payment as payments recorded it",
        None,
        json!({ "state": payment["state"] }),
    );
    let late = services.pay_late(&mut run, &session_id, &order).await?;
    let got_order = finished["status"].as_str().unwrap_or_default().to_owned();
    let sold = after["sold"].as_i64().unwrap_or(0) - before["sold"].as_i64().unwrap_or(0);
    let reserved_back = after["reserved"] == before["reserved"];
    let held = got_order == "Cancelled" && reserved_back && sold == 0;
    let summary = format!(
        "the {window_s} s payment window lapsed: order {got_order} (expected Cancelled), payment          {}, {sold} unit(s) sold, reservations back to where they were: {reserved_back}; a late          payment: {}",
        payment["state"].as_str().unwrap_or("?"),
        late["outcome"].as_str().unwrap_or("?")
    );
    Ok(run.finish(
        Some("payment-expired".into()),
        held,
        summary,
        json!({
            "order": finished,
            "payment": payment,
            "stock_before": before,
            "stock_after": after,
            "payment_window_s": window_s,
            "late_payment": late,
        }),
    ))
}

/// Runs `scenario` for `session` (its steps pushed to that visitor; none for a background
/// journey).
pub(crate) async fn saga(
    state: &AppState,
    session: Option<String>,
    scenario: String,
    provider: String,
) -> Result<DemoReport, Problem> {
    if provider != "stripe" && provider != "paypal" {
        return Err(Problem::invalid_field("provider", "`stripe` or `paypal`"));
    }
    if !SCENARIOS.contains(&scenario.as_str()) {
        return Err(Problem::invalid_field(
            "scenario",
            format!(
                "`{scenario}` is not a saga scenario: {}",
                SCENARIOS.join(", ")
            ),
        ));
    }
    let services = Services::of(state)?;
    let mut run = Run::new(state, "saga", session);
    let customer = format!("demo:{}", Uuid::now_v7());
    let report = match scenario.as_str() {
        "success" | "payment-declined" => {
            let approve = scenario == "success";
            let product = services.product(&mut run, PLENTY_SKU).await?;
            services
                .ensure_stock(&mut run, &product, RESTOCK_BELOW, RESTOCK_TO)
                .await?;
            let before = services.inventory(&product).await?;
            let order = services
                .place(&mut run, &customer, &product, &provider)
                .await?;
            let session_id = services.payment_session(&mut run, &order).await?;
            services.buyer(&mut run, &session_id, approve).await?;
            let finished = services.finished(&mut run, &customer, &order).await?;
            let payment = services.payment(&order).await?;
            let after = services
                .settled_inventory(&product, &before, approve)
                .await?;
            let (want_order, want_payment) = if approve {
                ("Completed", "captured")
            } else {
                ("Cancelled", "declined")
            };
            let got_order = finished["status"].as_str().unwrap_or_default().to_owned();
            let got_payment = payment["state"].as_str().unwrap_or_default().to_owned();
            let sold = after["sold"].as_i64().unwrap_or(0) - before["sold"].as_i64().unwrap_or(0);
            let reserved_back = after["reserved"] == before["reserved"];
            let held = got_order == want_order
                && got_payment == want_payment
                && reserved_back
                && sold == i64::from(approve);
            let summary = format!(
                "order {got_order} (expected {want_order}), payment {got_payment} (expected \
                 {want_payment}), {sold} unit(s) sold, reservations back to where they were: \
                 {reserved_back}"
            );
            run.finish(
                Some(scenario),
                held,
                summary,
                json!({ "order": finished, "payment": payment, "stock_before": before, "stock_after": after }),
            )
        }
        "idempotent-retry" => {
            let product = services.product(&mut run, PLENTY_SKU).await?;
            services
                .ensure_stock(&mut run, &product, RESTOCK_BELOW, RESTOCK_TO)
                .await?;
            let key = Uuid::now_v7().to_string();
            let mut placed = Vec::new();
            for _ in 0..RETRIES {
                placed.push(
                    services
                        .place_keyed(&customer, &product, &provider, &key)
                        .await?,
                );
            }
            let parallel = futures::future::join_all(
                (0..RETRIES).map(|_| services.place_keyed(&customer, &product, &provider, &key)),
            )
            .await;
            for order in parallel {
                placed.push(order?);
            }
            let distinct: std::collections::BTreeSet<&String> = placed.iter().collect();
            run.step(
                format!("sent the same order {} times ({RETRIES} in sequence, {RETRIES} at once) with one Idempotency-Key", placed.len()),
                None,
                json!({ "idempotency_key": key, "order_ids": distinct }),
            );
            let order = placed[0].clone();
            let session_id = services.payment_session(&mut run, &order).await?;
            services.buyer(&mut run, &session_id, true).await?;
            let finished = services.finished(&mut run, &customer, &order).await?;
            let status = finished["status"].as_str().unwrap_or_default().to_owned();
            let held = distinct.len() == 1 && status == "Completed";
            run.finish(
                Some(scenario),
                held,
                format!(
                    "{} distinct order(s) from {} requests; the order ended {status}",
                    distinct.len(),
                    placed.len()
                ),
                json!({ "order": finished, "order_ids": distinct }),
            )
        }
        "last-unit-race" => {
            let product = services.product(&mut run, LAST_UNIT_SKU).await?;
            services.set_stock(&mut run, &product, 1).await?;
            let before = services.inventory(&product).await?;
            let (one, two) = tokio::join!(
                services.place_quiet(&customer, &product, &provider),
                services.place_quiet(&customer, &product, &provider),
            );
            let orders = [one?, two?];
            run.step(
                "two buyers placed an order for the last unit at once",
                None,
                json!({ "orders": orders }),
            );
            // Whoever got the unit pays; the other is rejected before any payment.
            let mut finals = Vec::new();
            for order in &orders {
                let outcome = services.pay_if_asked(&mut run, &customer, order).await?;
                finals.push(outcome);
            }
            let after = services.inventory(&product).await?;
            let statuses: Vec<&str> = finals
                .iter()
                .map(|o| o["status"].as_str().unwrap_or_default())
                .collect();
            let completed = statuses.iter().filter(|s| **s == "Completed").count();
            let rejected = statuses.iter().filter(|s| **s == "Rejected").count();
            let free = after["on_hand"].as_i64().unwrap_or(-1);
            let held = completed == 1 && rejected == 1 && free == 0;
            run.finish(
                Some(scenario),
                held,
                format!("{completed} completed, {rejected} rejected, {free} unit(s) left"),
                json!({ "orders": finals, "stock_before": before, "stock_after": after }),
            )
        }
        other => {
            return Err(Problem::invalid_field(
                "scenario",
                format!(
                    "`{other}` is not a saga scenario: success, payment-declined or last-unit-race"
                ),
            ));
        }
    };
    Ok(report)
}

/// The services a saga demo talks to, and the calls it makes.
pub(super) struct Services {
    pub(super) http: reqwest::Client,
    pub(super) catalog: String,
    pub(super) orders: String,
    pub(super) payments: String,
    pub(super) psp: String,
}

impl Services {
    pub(super) fn of(state: &AppState) -> Result<Self, Problem> {
        Ok(Self {
            http: state.http.clone(),
            catalog: upstream(state, "catalog")?,
            orders: upstream(state, "orders")?,
            payments: upstream(state, "payments")?,
            psp: upstream(state, "psp")?,
        })
    }

    /// The seed product with `sku`.
    pub(super) async fn product(&self, run: &mut Run<'_>, sku: &str) -> Result<Value, Problem> {
        let url = format!("{}/products?q={sku}&per_page=100", self.catalog);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| upstream_failed("catalog", "listing products", e))?;
        let instance = instance_of(&response);
        let page: Value = response
            .json()
            .await
            .map_err(|e| upstream_failed("catalog", "listing products", e))?;
        let product = page["items"]
            .as_array()
            .and_then(|items| items.iter().find(|p| p["sku"] == sku))
            .cloned()
            .ok_or_else(|| {
                upstream_failed(
                    "catalog",
                    "finding the demo product",
                    format!("no product {sku}"),
                )
            })?;
        run.step(
            format!("found the demo product {sku}"),
            instance,
            json!({ "id": product["id"], "price_minor": product["price_minor"] }),
        );
        Ok(product)
    }

    pub(super) async fn inventory(&self, product: &Value) -> Result<Value, Problem> {
        let url = format!("{}/products/{}/inventory", self.catalog, id_of(product));
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| upstream_failed("catalog", "reading stock", e))?;
        response
            .json()
            .await
            .map_err(|e| upstream_failed("catalog", "reading stock", e))
    }

    /// Stock as it settles after the saga: compensations and commits land just after the order's
    /// final state is announced.
    async fn settled_inventory(
        &self,
        product: &Value,
        before: &Value,
        sold: bool,
    ) -> Result<Value, Problem> {
        let settled = poll(SAGA_DEADLINE, || async {
            let now = self.inventory(product).await?;
            let sold_now = now["sold"].as_i64().unwrap_or(0) - before["sold"].as_i64().unwrap_or(0);
            let settled = now["reserved"] == before["reserved"] && sold_now == i64::from(sold);
            Ok(settled.then_some(now))
        })
        .await?;
        // Not settled in time: the stock as it stands is the evidence of that.
        match settled {
            Some(now) => Ok(now),
            None => self.inventory(product).await,
        }
    }

    pub(super) async fn ensure_stock(
        &self,
        run: &mut Run<'_>,
        product: &Value,
        below: i64,
        to: i64,
    ) -> Result<(), Problem> {
        let current = self.inventory(product).await?;
        if current["on_hand"].as_i64().unwrap_or(0) < below {
            self.set_stock(run, product, to).await?;
        }
        Ok(())
    }

    /// Sets the free stock with the row's current ETag (catalog's optimistic concurrency).
    pub(super) async fn set_stock(
        &self,
        run: &mut Run<'_>,
        product: &Value,
        on_hand: i64,
    ) -> Result<(), Problem> {
        let url = format!("{}/products/{}/inventory", self.catalog, id_of(product));
        for _ in 0..5 {
            let current = self
                .http
                .get(&url)
                .send()
                .await
                .map_err(|e| upstream_failed("catalog", "reading stock", e))?;
            let etag = current.headers().get("etag").cloned();
            let Some(etag) = etag else {
                return Err(upstream_failed("catalog", "reading stock", "no ETag"));
            };
            let response = self
                .http
                .put(&url)
                .header("if-match", etag)
                .json(&json!({ "on_hand": on_hand }))
                .send()
                .await
                .map_err(|e| upstream_failed("catalog", "setting stock", e))?;
            let status = response.status();
            let instance = instance_of(&response);
            if status.is_success() {
                run.step(
                    format!("set the free stock to {on_hand}"),
                    instance,
                    json!({ "status": status.as_u16() }),
                );
                return Ok(());
            }
            if status != reqwest::StatusCode::PRECONDITION_FAILED {
                let body = response.text().await.unwrap_or_default();
                return Err(upstream_failed(
                    "catalog",
                    "setting stock",
                    format!("{status}: {body}"),
                ));
            }
            // Someone else wrote in between: read the new ETag and try again.
        }
        Err(upstream_failed(
            "catalog",
            "setting stock",
            "five writes in a row lost the race",
        ))
    }

    pub(super) async fn place(
        &self,
        run: &mut Run<'_>,
        customer: &str,
        product: &Value,
        provider: &str,
    ) -> Result<String, Problem> {
        let (order, instance) = self.place_once(customer, product, provider).await?;
        run.step("placed the order", instance, json!({ "order_id": order }));
        Ok(order)
    }

    /// Places an order with its own payment window, with the BFF's `demo` token (orders refuses
    /// the window to anyone else).
    async fn place_with_window(
        &self,
        run: &mut Run<'_>,
        customer: &str,
        product: &Value,
        provider: &str,
        window_s: u32,
        token: &str,
    ) -> Result<String, Problem> {
        let key = Uuid::now_v7().to_string();
        let (order, instance) = self
            .post_order(customer, product, provider, &key, Some((window_s, token)))
            .await?;
        run.step(
            format!("placed the order with a {window_s} s payment window"),
            instance,
            json!({ "order_id": order }),
        );
        Ok(order)
    }

    /// The buyer tries to pay after the window: the PSP refuses an expired session, or, if it
    /// takes the payment, payments refunds it (a late authorization after expiry). Either way is
    /// recorded; neither fails the demo.
    async fn pay_late(
        &self,
        run: &mut Run<'_>,
        session: &str,
        order: &str,
    ) -> Result<Value, Problem> {
        let response = self
            .http
            .post(format!("{}/sandbox/sessions/{session}/approve", self.psp))
            .send()
            .await
            .map_err(|e| upstream_failed("psp", "paying late", e))?;
        let status = response.status();
        let instance = instance_of(&response);
        if !status.is_success() {
            let late = json!({ "outcome": "refused by the PSP", "status": status.as_u16() });
            run.step(
                "the buyer tried to pay late: the PSP refused",
                instance,
                late.clone(),
            );
            return Ok(late);
        }
        let refunded = poll(SESSION_DEADLINE, || async {
            let payment = self.payment(order).await?;
            Ok((payment["state"] == "refunded").then_some(payment))
        })
        .await?;
        let late = json!({
            "outcome": if refunded.is_some() { "refunded" } else { "taken, not refunded yet" },
            "status": status.as_u16(),
            "payment": refunded,
        });
        run.step("the buyer paid late", instance, late.clone());
        Ok(late)
    }

    async fn place_quiet(
        &self,
        customer: &str,
        product: &Value,
        provider: &str,
    ) -> Result<String, Problem> {
        self.place_once(customer, product, provider)
            .await
            .map(|(order, _)| order)
    }

    async fn place_once(
        &self,
        customer: &str,
        product: &Value,
        provider: &str,
    ) -> Result<(String, Option<String>), Problem> {
        self.post_order(
            customer,
            product,
            provider,
            &Uuid::now_v7().to_string(),
            None,
        )
        .await
    }

    async fn place_keyed(
        &self,
        customer: &str,
        product: &Value,
        provider: &str,
        key: &str,
    ) -> Result<String, Problem> {
        self.post_order(customer, product, provider, key, None)
            .await
            .map(|(order, _)| order)
    }

    /// `POST /orders` for one unit of `product`; with a payment window, under the BFF's `demo`
    /// token (orders honours a window from nobody else). Answers the order id and the instance.
    async fn post_order(
        &self,
        customer: &str,
        product: &Value,
        provider: &str,
        key: &str,
        window: Option<(u32, &str)>,
    ) -> Result<(String, Option<String>), Problem> {
        let mut body = json!({ "lines": [{ "product_id": id_of(product), "quantity": 1 }], "provider": provider });
        let mut request = self.http.post(format!("{}/orders", self.orders));
        if let Some((window_s, token)) = window {
            body["payment_window_s"] = json!(window_s);
            request = request.bearer_auth(token);
        }
        let response = request
            .header("idempotency-key", key)
            .header("x-lab-customer", customer)
            .json(&body)
            .send()
            .await
            .map_err(|e| upstream_failed("orders", "placing the order", e))?;
        let status = response.status();
        let instance = instance_of(&response);
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != reqwest::StatusCode::ACCEPTED {
            return Err(upstream_failed(
                "orders",
                "placing the order",
                format!("{status}: {body}"),
            ));
        }
        let order = body["order_id"].as_str().unwrap_or_default().to_owned();
        Ok((order, instance))
    }

    pub(super) async fn payment(&self, order: &str) -> Result<Value, Problem> {
        let response = self
            .http
            .get(format!("{}/payments/{order}", self.payments))
            .send()
            .await
            .map_err(|e| upstream_failed("payments", "reading the payment", e))?;
        Ok(response.json().await.unwrap_or(Value::Null))
    }

    /// Waits for payments to open the PSP session; its id.
    pub(super) async fn payment_session(
        &self,
        run: &mut Run<'_>,
        order: &str,
    ) -> Result<String, Problem> {
        let opened = poll(SESSION_DEADLINE, || async {
            let payment = self.payment(order).await?;
            Ok(payment["session_id"].is_string().then_some(payment))
        })
        .await?;
        let Some(payment) = opened else {
            return Err(upstream_failed(
                "payments",
                "opening the payment session",
                format!("no session within {SESSION_DEADLINE:?}"),
            ));
        };
        let session = payment["session_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        run.step(
            "payments opened a session at the PSP",
            None,
            json!({ "session_id": session, "state": payment["state"] }),
        );
        Ok(session)
    }

    /// The buyer approves or declines on the PSP.
    pub(super) async fn buyer(
        &self,
        run: &mut Run<'_>,
        session: &str,
        approve: bool,
    ) -> Result<(), Problem> {
        let action = if approve { "approve" } else { "decline" };
        let response = self
            .http
            .post(format!("{}/sandbox/sessions/{session}/{action}", self.psp))
            .send()
            .await
            .map_err(|e| upstream_failed("psp", "the buyer's choice", e))?;
        let status = response.status();
        let instance = instance_of(&response);
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(upstream_failed(
                "psp",
                "the buyer's choice",
                format!("{status}: {body}"),
            ));
        }
        run.step(
            format!("the buyer chose to {action} on the PSP"),
            instance,
            body,
        );
        Ok(())
    }

    pub(super) async fn order(&self, customer: &str, order: &str) -> Result<Value, Problem> {
        let response = self
            .http
            .get(format!("{}/orders/{order}", self.orders))
            .header("x-lab-customer", customer)
            .send()
            .await
            .map_err(|e| upstream_failed("orders", "reading the order", e))?;
        Ok(response.json().await.unwrap_or(Value::Null))
    }

    /// Waits for the order's final state.
    pub(super) async fn finished(
        &self,
        run: &mut Run<'_>,
        customer: &str,
        order: &str,
    ) -> Result<Value, Problem> {
        self.finished_within(run, customer, order, SAGA_DEADLINE)
            .await
    }

    /// Waits up to `within` for the order's final state.
    async fn finished_within(
        &self,
        run: &mut Run<'_>,
        customer: &str,
        order: &str,
        within: Duration,
    ) -> Result<Value, Problem> {
        let finished = poll(within, || async {
            let view = self.order(customer, order).await?;
            Ok(is_final(&view).then_some(view))
        })
        .await?;
        let Some(view) = finished else {
            return Err(upstream_failed(
                "orders",
                "waiting for the order's final state",
                format!("still Pending after {within:?}"),
            ));
        };
        run.step(
            format!(
                "the order ended {}",
                view["status"].as_str().unwrap_or_default()
            ),
            None,
            json!({ "order_id": order, "history": view["history"] }),
        );
        Ok(view)
    }

    /// Pays for `order` if its saga asks for a payment (it got the stock); its final view.
    async fn pay_if_asked(
        &self,
        run: &mut Run<'_>,
        customer: &str,
        order: &str,
    ) -> Result<Value, Problem> {
        // Either the saga finished without a payment (rejected), or it opened one to pay.
        let next = poll(SAGA_DEADLINE, || async {
            if is_final(&self.order(customer, order).await?) {
                return Ok(Some(None));
            }
            let payment = self.payment(order).await?;
            Ok(payment["session_id"].as_str().map(|s| Some(s.to_owned())))
        })
        .await?;
        match next {
            Some(Some(session)) => self.buyer(run, &session, true).await?,
            Some(None) => {}
            None => {
                return Err(upstream_failed(
                    "orders",
                    "waiting for the order",
                    format!("no payment and no final state after {SAGA_DEADLINE:?}"),
                ));
            }
        }
        self.finished(run, customer, order).await
    }
}

/// Whether an order view is in a final state.
pub(super) fn is_final(view: &Value) -> bool {
    view["status"].as_str().is_some_and(|s| s != "Pending")
}

/// Calls `probe` every [`POLL`] until it yields a value or `within` has passed (then `None`); a
/// failed call ends the wait with its problem.
pub(super) async fn poll<T, F, Fut>(within: Duration, mut probe: F) -> Result<Option<T>, Problem>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, Problem>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await? {
            return Ok(Some(value));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(POLL).await;
    }
}

pub(super) fn id_of(product: &Value) -> &str {
    product["id"].as_str().unwrap_or_default()
}
