//! `payment-expired`: the order asks for a payment window of a few seconds (orders takes that
//! only with the BFF's `demo`-scoped token), the session is left unpaid and checkout's deadline
//! fires: stock released, session voided, `Cancelled`; then the buyer tries to pay late.

use std::time::Duration;

use lab_http::Problem;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{PLENTY_SKU, RESTOCK_BELOW, RESTOCK_TO, SESSION_DEADLINE, Services, poll};
use crate::AppState;
use crate::demo::{DemoReport, Run, instance_of, upstream_failed};

/// The window unless asked otherwise: the PSP session expires with it (in whole seconds, counted
/// from before the session is opened), so a few seconds of margin keep it open long enough to be
/// created; short enough to watch it lapse.
pub(super) const DEFAULT_PAYMENT_WINDOW_S: u32 = 5;
/// The windows orders accepts from the demo (see orders' `DEMO_PAYMENT_WINDOW_S`).
pub(super) const PAYMENT_WINDOW_S: std::ops::RangeInclusive<u32> = 2..=30;
/// How long after the window the saga may take to cancel: checkout's deadline poll, the void at
/// the PSP and the stock release over RabbitMQ.
const EXPIRY_GRACE: Duration = Duration::from_secs(30);

/// The payment-expired scenario: a short payment window left to lapse.
pub(super) async fn run(
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

impl Services {
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
}
