//! The calls every saga scenario makes: catalog's product and stock, orders' placing and
//! reading, payments' session, the buyer's choice on the sandbox PSP.

use std::time::Duration;

use lab_http::Problem;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{SAGA_DEADLINE, SESSION_DEADLINE, id_of, is_final, poll, wait_for};
use crate::AppState;
use crate::demo::{Run, instance_of, upstream, upstream_failed};

/// The services a saga demo talks to, and the calls it makes.
pub(in crate::demo) struct Services {
    pub(in crate::demo) http: reqwest::Client,
    pub(in crate::demo) catalog: String,
    pub(in crate::demo) orders: String,
    pub(in crate::demo) payments: String,
    pub(in crate::demo) psp: String,
}

impl Services {
    pub(in crate::demo) fn of(state: &AppState) -> Result<Self, Problem> {
        Ok(Self {
            http: state.http.clone(),
            catalog: upstream(state, "catalog")?,
            orders: upstream(state, "orders")?,
            payments: upstream(state, "payments")?,
            psp: upstream(state, "psp")?,
        })
    }

    /// The seed product with `sku`.
    pub(in crate::demo) async fn product(
        &self,
        run: &mut Run<'_>,
        sku: &str,
    ) -> Result<Value, Problem> {
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

    pub(in crate::demo) async fn inventory(&self, product: &Value) -> Result<Value, Problem> {
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
    pub(in crate::demo) async fn settled_inventory(
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

    pub(in crate::demo) async fn ensure_stock(
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
    pub(in crate::demo) async fn set_stock(
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

    pub(in crate::demo) async fn place(
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

    pub(in crate::demo) async fn place_once(
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

    /// `POST /orders` for one unit of `product`; with a payment window, under the BFF's `demo`
    /// token (orders honours a window from nobody else). Answers the order id and the instance.
    pub(in crate::demo) async fn post_order(
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

    pub(in crate::demo) async fn payment(&self, order: &str) -> Result<Value, Problem> {
        let response = self
            .http
            .get(format!("{}/payments/{order}", self.payments))
            .send()
            .await
            .map_err(|e| upstream_failed("payments", "reading the payment", e))?;
        Ok(response.json().await.unwrap_or(Value::Null))
    }

    /// Waits for payments to open the PSP session; its id.
    pub(in crate::demo) async fn payment_session(
        &self,
        run: &mut Run<'_>,
        order: &str,
    ) -> Result<String, Problem> {
        let payment = wait_for(
            SESSION_DEADLINE,
            ("payments", "opening the payment session"),
            format!("no session within {SESSION_DEADLINE:?}"),
            || async {
                let payment = self.payment(order).await?;
                Ok(payment["session_id"].is_string().then_some(payment))
            },
        )
        .await?;
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
    pub(in crate::demo) async fn buyer(
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

    pub(in crate::demo) async fn order(
        &self,
        customer: &str,
        order: &str,
    ) -> Result<Value, Problem> {
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
    pub(in crate::demo) async fn finished(
        &self,
        run: &mut Run<'_>,
        customer: &str,
        order: &str,
    ) -> Result<Value, Problem> {
        self.finished_within(run, customer, order, SAGA_DEADLINE)
            .await
    }

    /// Waits up to `within` for the order's final state.
    pub(in crate::demo) async fn finished_within(
        &self,
        run: &mut Run<'_>,
        customer: &str,
        order: &str,
        within: Duration,
    ) -> Result<Value, Problem> {
        let view = wait_for(
            within,
            ("orders", "waiting for the order's final state"),
            format!("still Pending after {within:?}"),
            || async {
                let view = self.order(customer, order).await?;
                Ok(is_final(&view).then_some(view))
            },
        )
        .await?;
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
}
