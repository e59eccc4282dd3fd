//! `POST /api/demo/saga`: an order through the whole checkout saga, with the buyer's choice made
//! on the sandbox PSP — `success` (approve: stock committed, payment captured, `Completed`),
//! `payment-declined` (decline: stock released, `Cancelled`), and `last-unit-race` (two buyers
//! for the one unit left: one `Completed`, one `Rejected`, stock never negative). The evidence is
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
const PLENTY_SKU: &str = "DEMO-RACE";
const LAST_UNIT_SKU: &str = "DEMO-LAST-UNIT";
/// Below this the plenty product is restocked before a run, so demos never run dry.
const RESTOCK_BELOW: i64 = 10;
const RESTOCK_TO: i64 = 100;

/// The scenarios this demo runs.
const SCENARIOS: &[&str] = &[
    "success",
    "payment-declined",
    "last-unit-race",
    "idempotent-retry",
];
/// Requests per phase of the idempotent-retry scenario (in sequence, then at once).
const RETRIES: usize = 5;

/// Which saga to run.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SagaDemo {
    /// `success`, `payment-declined`, `last-unit-race` or `idempotent-retry`.
    pub scenario: String,
    /// `stripe` (default) or `paypal`.
    #[serde(default)]
    pub provider: Option<String>,
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
    saga(&state, session, body.scenario, provider)
        .await
        .map(Json)
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
struct Services {
    http: reqwest::Client,
    catalog: String,
    orders: String,
    payments: String,
    psp: String,
}

impl Services {
    fn of(state: &AppState) -> Result<Self, Problem> {
        Ok(Self {
            http: state.http.clone(),
            catalog: upstream(state, "catalog")?,
            orders: upstream(state, "orders")?,
            payments: upstream(state, "payments")?,
            psp: upstream(state, "psp")?,
        })
    }

    /// The seed product with `sku`.
    async fn product(&self, run: &mut Run<'_>, sku: &str) -> Result<Value, Problem> {
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

    async fn inventory(&self, product: &Value) -> Result<Value, Problem> {
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

    async fn ensure_stock(
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
    async fn set_stock(
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

    async fn place(
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
        self.place_with(customer, product, provider, &Uuid::now_v7().to_string())
            .await
    }

    async fn place_keyed(
        &self,
        customer: &str,
        product: &Value,
        provider: &str,
        key: &str,
    ) -> Result<String, Problem> {
        self.place_with(customer, product, provider, key)
            .await
            .map(|(order, _)| order)
    }

    async fn place_with(
        &self,
        customer: &str,
        product: &Value,
        provider: &str,
        key: &str,
    ) -> Result<(String, Option<String>), Problem> {
        let response = self
            .http
            .post(format!("{}/orders", self.orders))
            .header("idempotency-key", key)
            .header("x-lab-customer", customer)
            .json(&json!({ "lines": [{ "product_id": id_of(product), "quantity": 1 }], "provider": provider }))
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

    async fn payment(&self, order: &str) -> Result<Value, Problem> {
        let response = self
            .http
            .get(format!("{}/payments/{order}", self.payments))
            .send()
            .await
            .map_err(|e| upstream_failed("payments", "reading the payment", e))?;
        Ok(response.json().await.unwrap_or(Value::Null))
    }

    /// Waits for payments to open the PSP session; its id.
    async fn payment_session(&self, run: &mut Run<'_>, order: &str) -> Result<String, Problem> {
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
    async fn buyer(&self, run: &mut Run<'_>, session: &str, approve: bool) -> Result<(), Problem> {
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

    async fn order(&self, customer: &str, order: &str) -> Result<Value, Problem> {
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
    async fn finished(
        &self,
        run: &mut Run<'_>,
        customer: &str,
        order: &str,
    ) -> Result<Value, Problem> {
        let finished = poll(SAGA_DEADLINE, || async {
            let view = self.order(customer, order).await?;
            Ok(is_final(&view).then_some(view))
        })
        .await?;
        let Some(view) = finished else {
            return Err(upstream_failed(
                "orders",
                "waiting for the order's final state",
                format!("still Pending after {SAGA_DEADLINE:?}"),
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
fn is_final(view: &Value) -> bool {
    view["status"].as_str().is_some_and(|s| s != "Pending")
}

/// Calls `probe` every [`POLL`] until it yields a value or `within` has passed (then `None`); a
/// failed call ends the wait with its problem.
async fn poll<T, F, Fut>(within: Duration, mut probe: F) -> Result<Option<T>, Problem>
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

fn id_of(product: &Value) -> &str {
    product["id"].as_str().unwrap_or_default()
}
