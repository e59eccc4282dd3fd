//! The invariants no one service can judge alone: each reads two services' reports (see
//! [`super::invariants`] for the order of the reads that keeps work in flight from counting).

use serde_json::{Map, Value};

use super::invariants::{Answer, FETCH_TIMEOUT, Invariant, MAX_IDS, ids_at, judged, unknown};
use crate::AppState;

/// No order is both refunded (payments) and `Completed` (orders). Both are final states, so the
/// order of the two reads cannot matter.
pub(super) fn refunded_never_completed(payments: &Answer, orders: &Answer) -> Invariant {
    const NAME: &str = "cross.refunded_never_completed";
    const SERVICES: [&str; 2] = ["payments", "orders"];
    let (Some(p), Some(o)) = (payments.value(), orders.value()) else {
        return unknown(
            NAME.into(),
            &SERVICES,
            "payments or orders did not answer".into(),
        );
    };
    let listed = ids_at(Some(p), &["refunded", "order_ids"]);
    let refunded = p["refunded"]["count"].as_i64().unwrap_or(0);
    let completed: Vec<String> = listed
        .iter()
        .filter(|id| o["statuses_of"][id.as_str()] == "Completed")
        .cloned()
        .collect();
    let mut numbers = Map::new();
    numbers.insert("refunded".into(), refunded.into());
    numbers.insert("checked".into(), listed.len().into());
    numbers.insert("refunded_and_completed".into(), completed.len().into());
    if completed.is_empty() && usize::try_from(refunded).unwrap_or(usize::MAX) > listed.len() {
        let mut partial = unknown(
            NAME.into(),
            &SERVICES,
            format!(
                "only {} of {refunded} refunded orders could be checked",
                listed.len()
            ),
        );
        partial.numbers = numbers;
        return partial;
    }
    judged(
        NAME.into(),
        &SERVICES,
        completed.is_empty(),
        numbers,
        completed,
    )
}

/// No order is terminal in orders while its saga is not terminal in checkout, for the sagas
/// checkout listed as idle in flight; each suspect's saga is read again after orders (see the
/// note in [`super::invariants`]), so work in flight is never reported.
pub(super) async fn terminal_orders_have_terminal_sagas(
    state: &AppState,
    checkout: &Answer,
    orders: &Answer,
    in_flight: &[String],
) -> Invariant {
    const NAME: &str = "cross.terminal_orders_have_terminal_sagas";
    const SERVICES: [&str; 2] = ["orders", "checkout"];
    let (Ok((checkout_url, _)), Some(o)) = (&checkout.report, orders.value()) else {
        return unknown(
            NAME.into(),
            &SERVICES,
            "orders or checkout did not answer".into(),
        );
    };
    let suspects: Vec<&String> = in_flight
        .iter()
        .filter(|id| {
            o["statuses_of"][id.as_str()]
                .as_str()
                .is_some_and(|status| status != "Pending")
        })
        .collect();
    let mut violations = Vec::new();
    for id in suspects.iter().take(MAX_IDS) {
        match saga_terminal(&state.http, checkout_url, id).await {
            Ok(true) => {}
            Ok(false) => violations.push((*id).clone()),
            Err(reason) => {
                return unknown(
                    NAME.into(),
                    &SERVICES,
                    format!("re-reading saga {id}: {reason}"),
                );
            }
        }
    }
    let mut numbers = Map::new();
    numbers.insert("sagas_checked".into(), in_flight.len().into());
    numbers.insert("violations".into(), violations.len().into());
    judged(
        NAME.into(),
        &SERVICES,
        violations.is_empty(),
        numbers,
        violations,
    )
}

/// Whether checkout now calls order `id`'s saga terminal.
async fn saga_terminal(
    http: &reqwest::Client,
    checkout_url: &str,
    id: &str,
) -> Result<bool, String> {
    let response = http
        .get(format!("{checkout_url}/sagas/{id}"))
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let saga: Value = response
        .json()
        .await
        .map_err(|e| format!("unreadable saga: {e}"))?;
    saga["terminal"]
        .as_bool()
        .ok_or_else(|| "the saga has no `terminal` flag".to_owned())
}
