//! `idempotent-retry`: the same order sent ten times with one `Idempotency-Key` (five in
//! sequence, five at once) makes one order, which completes.

use lab_http::Problem;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{PLENTY_SKU, RESTOCK_BELOW, RESTOCK_TO, Services};
use crate::demo::{DemoReport, Run};

/// Requests per phase (in sequence, then at once).
const RETRIES: usize = 5;

pub(super) async fn run(
    services: &Services,
    mut run: Run<'_>,
    scenario: &str,
    customer: &str,
    provider: &str,
) -> Result<DemoReport, Problem> {
    let product = services.product(&mut run, PLENTY_SKU).await?;
    services
        .ensure_stock(&mut run, &product, RESTOCK_BELOW, RESTOCK_TO)
        .await?;
    let key = Uuid::now_v7().to_string();
    let mut placed = Vec::new();
    for _ in 0..RETRIES {
        placed.push(
            services
                .place_keyed(customer, &product, provider, &key)
                .await?,
        );
    }
    let parallel = futures::future::join_all(
        (0..RETRIES).map(|_| services.place_keyed(customer, &product, provider, &key)),
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
    let finished = services.finished(&mut run, customer, &order).await?;
    let status = finished["status"].as_str().unwrap_or_default().to_owned();
    let held = distinct.len() == 1 && status == "Completed";
    Ok(run.finish(
        Some(scenario.into()),
        held,
        format!(
            "{} distinct order(s) from {} requests; the order ended {status}",
            distinct.len(),
            placed.len()
        ),
        json!({ "order": finished, "order_ids": distinct }),
    ))
}

impl Services {
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
}
