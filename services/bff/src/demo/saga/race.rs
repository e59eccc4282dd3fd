//! `last-unit-race`: two buyers for the one unit left; one order `Completed`, the other
//! `Rejected` before any payment, the stock never negative.

use lab_http::Problem;
use serde_json::{Value, json};

use super::{LAST_UNIT_SKU, SAGA_DEADLINE, Services, is_final, wait_for};
use crate::demo::{DemoReport, Run};

pub(super) async fn run(
    services: &Services,
    mut run: Run<'_>,
    scenario: &str,
    customer: &str,
    provider: &str,
) -> Result<DemoReport, Problem> {
    let product = services.product(&mut run, LAST_UNIT_SKU).await?;
    services.set_stock(&mut run, &product, 1).await?;
    let before = services.inventory(&product).await?;
    let (one, two) = tokio::join!(
        services.place_quiet(customer, &product, provider),
        services.place_quiet(customer, &product, provider),
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
        let outcome = services.pay_if_asked(&mut run, customer, order).await?;
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
    Ok(run.finish(
        Some(scenario.into()),
        held,
        format!("{completed} completed, {rejected} rejected, {free} unit(s) left"),
        json!({ "orders": finals, "stock_before": before, "stock_after": after }),
    ))
}

impl Services {
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

    /// Pays for `order` if its saga asks for a payment (it got the stock); its final view.
    async fn pay_if_asked(
        &self,
        run: &mut Run<'_>,
        customer: &str,
        order: &str,
    ) -> Result<Value, Problem> {
        // Either the saga finished without a payment (rejected), or it opened one to pay.
        let session = wait_for(
            SAGA_DEADLINE,
            ("orders", "waiting for the order"),
            format!("no payment and no final state after {SAGA_DEADLINE:?}"),
            || async {
                if is_final(&self.order(customer, order).await?) {
                    return Ok(Some(None));
                }
                let payment = self.payment(order).await?;
                Ok(payment["session_id"].as_str().map(|s| Some(s.to_owned())))
            },
        )
        .await?;
        if let Some(session) = session {
            self.buyer(run, &session, true).await?;
        }
        self.finished(run, customer, order).await
    }
}
