//! `success` and `payment-declined`: one order, the buyer approves or declines on the PSP; the
//! stock is committed and the payment captured (`Completed`), or the stock released (`Cancelled`).

use lab_http::Problem;
use serde_json::json;

use super::{PLENTY_SKU, RESTOCK_BELOW, RESTOCK_TO, Services};
use crate::demo::{DemoReport, Run};

/// Runs `scenario`: the buyer approves on `success`, declines on `payment-declined`.
pub(super) async fn run(
    services: &Services,
    mut run: Run<'_>,
    scenario: &str,
    customer: &str,
    provider: &str,
) -> Result<DemoReport, Problem> {
    let approve = scenario == "success";
    let product = services.product(&mut run, PLENTY_SKU).await?;
    services
        .ensure_stock(&mut run, &product, RESTOCK_BELOW, RESTOCK_TO)
        .await?;
    let before = services.inventory(&product).await?;
    let order = services
        .place(&mut run, customer, &product, provider)
        .await?;
    let session_id = services.payment_session(&mut run, &order).await?;
    services.buyer(&mut run, &session_id, approve).await?;
    let finished = services.finished(&mut run, customer, &order).await?;
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
    Ok(run.finish(
        Some(scenario.into()),
        held,
        summary,
        json!({ "order": finished, "payment": payment, "stock_before": before, "stock_after": after }),
    ))
}
