//! `GET /api/chaos/invariants` over the whole checkout path in-process: every invariant holds
//! after real orders; a counter broken in catalog's database, or a completed order whose payment
//! is marked refunded, is reported with the offending id; a service that does not answer makes
//! its checks unknown, never held.

use lab_test_cluster::{Cluster, Options, line};
use lab_test_support::TestApp;
use serde_json::Value;

use crate::helpers::spawn_bff;

async fn invariants(bff: &TestApp) -> Value {
    let (status, body) = bff.get_json("/api/chaos/invariants").await;
    assert_eq!(status, 200, "{body:#}");
    body
}

/// The check `name` of `report`.
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["invariants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report:#}"))
}

/// The cluster with two orders placed and completed: their ids.
async fn cluster_with_orders() -> (Cluster, Vec<String>) {
    let cluster = Cluster::start(Options::default()).await;
    let mut ids = Vec::new();
    for provider in ["stripe", "paypal"] {
        let id = cluster
            .place(serde_json::json!([line("LAB-STICKERS", 1)]), provider)
            .await;
        let order = cluster.finished(&id).await;
        assert_eq!(order["status"], "Completed", "{order:#}");
        ids.push(id);
    }
    (cluster, ids)
}

/// Runs `sql` on the cluster's database as its superuser.
async fn execute(cluster: &Cluster, sql: &str) {
    let mut conn = cluster.env.db().admin_connection().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn every_invariant_holds_after_real_orders_and_a_broken_counter_is_reported_by_product() {
    let (cluster, _) = cluster_with_orders().await;
    let bff = spawn_bff(&cluster.env, &cluster.upstreams()).await;

    let before = invariants(&bff).await;
    execute(
        &cluster,
        &format!(
            "UPDATE catalog.inventory SET on_hand = on_hand - 1, reserved = reserved + 1 \
             WHERE product_id = '{}'",
            lab_catalog::seed::seed_id("LAB-STICKERS")
        ),
    )
    .await;
    let after = invariants(&bff).await;

    assert_eq!(before["held"], true, "{before:#}");
    assert_eq!(before["status"], "held", "{before:#}");
    assert_eq!(before["counts"]["orders"]["Completed"], 2, "{before:#}");
    assert_eq!(before["counts"]["checkout"]["Completed"], 2, "{before:#}");
    for name in [
        "catalog.stock_conserved",
        "orders.terminal_or_within_deadline",
        "orders.one_claim_per_key",
        "checkout.no_stuck_sagas",
        "payments.no_double_capture",
        "payments.outbox_drains",
        "catalog.dead_letters",
        "cross.refunded_never_completed",
        "cross.terminal_orders_have_terminal_sagas",
    ] {
        assert_eq!(check(&before, name)["status"], "held", "{name}: {before:#}");
    }
    assert_eq!(
        check(&before, "payments.no_double_capture")["numbers"]["captured"],
        2
    );
    assert_eq!(after["held"], false, "{after:#}");
    assert_eq!(after["status"], "violated", "{after:#}");
    let broken = check(&after, "catalog.reservations_match_inventory");
    assert_eq!(broken["status"], "violated", "{after:#}");
    assert_eq!(
        broken["offending_ids"],
        serde_json::json!([lab_catalog::seed::seed_id("LAB-STICKERS").to_string()]),
        "{after:#}"
    );
    assert_eq!(check(&after, "catalog.stock_conserved")["status"], "held");
}

#[tokio::test]
async fn a_completed_order_whose_payment_was_refunded_is_reported_across_the_two_services() {
    let (cluster, ids) = cluster_with_orders().await;
    let bff = spawn_bff(&cluster.env, &cluster.upstreams()).await;

    execute(
        &cluster,
        &format!(
            "UPDATE payments.payments SET state = 'refunded' WHERE order_id = '{}'",
            ids[0]
        ),
    )
    .await;
    let report = invariants(&bff).await;

    let cross = check(&report, "cross.refunded_never_completed");
    assert_eq!(cross["status"], "violated", "{report:#}");
    assert_eq!(
        cross["offending_ids"],
        serde_json::json!([ids[0]]),
        "{report:#}"
    );
    assert_eq!(cross["numbers"]["refunded"], 1, "{report:#}");
    assert_eq!(report["held"], false);
}

#[tokio::test]
async fn a_terminal_order_whose_saga_is_back_in_flight_is_reported_across_the_two_services() {
    let (cluster, ids) = cluster_with_orders().await;
    let bff = spawn_bff(&cluster.env, &cluster.upstreams()).await;

    // Idle past checkout's grace, so it is listed as in flight for the cross-check.
    execute(
        &cluster,
        &format!(
            "UPDATE checkout.sagas SET state = 'Captured', updated_at = now() - interval '1 hour' \
             WHERE order_id = '{}'",
            ids[1]
        ),
    )
    .await;
    let report = invariants(&bff).await;

    let cross = check(&report, "cross.terminal_orders_have_terminal_sagas");
    assert_eq!(cross["status"], "violated", "{report:#}");
    assert_eq!(
        cross["offending_ids"],
        serde_json::json!([ids[1]]),
        "{report:#}"
    );
    assert_eq!(cross["numbers"]["sagas_checked"], 1, "{report:#}");
    assert_eq!(
        check(&report, "cross.refunded_never_completed")["status"],
        "held"
    );
}

#[tokio::test]
async fn a_service_that_does_not_answer_makes_its_checks_unknown_not_held() {
    let env = lab_test_support::TestEnv::builder().start().await;
    // A port that was just free: nothing listens, every connection is refused.
    let closed = lab_test_support::faults::occupied_port();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let bff = spawn_bff(&env, &[("orders", dead.clone())]).await;

    let report = invariants(&bff).await;

    assert_eq!(report["held"], false, "{report:#}");
    assert_eq!(report["status"], "unknown", "{report:#}");
    let orders = check(&report, "orders.terminal_or_within_deadline");
    assert_eq!(orders["status"], "unknown", "{report:#}");
    assert_eq!(orders["held"], false, "{report:#}");
    assert_eq!(
        orders["reason"], "no instance of orders answered",
        "{report:#}"
    );
    let catalog = check(&report, "catalog.stock_conserved");
    assert_eq!(
        catalog["reason"], "no instance of catalog is configured",
        "{report:#}"
    );
    let source = &report["sources"][0];
    assert_eq!(source["url"], dead, "{report:#}");
    assert_eq!(source["answered"], false, "{report:#}");
    let (_, doc) = bff.get_json("/openapi.json").await;
    assert!(
        doc["paths"]["/api/chaos/invariants"]["get"].is_object(),
        "{doc}"
    );
}

#[tokio::test]
async fn a_dead_replica_is_listed_while_a_live_one_speaks_for_its_service() {
    let env = lab_test_support::TestEnv::builder()
        .with_database(crate::helpers::MIGRATIONS)
        .start()
        .await;
    let live = crate::helpers::spawn_catalog(&env, 1).await;
    let closed = lab_test_support::faults::occupied_port();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let bff = spawn_bff(&env, &[("catalog", format!("{dead},{}", live.base_url))]).await;

    let report = invariants(&bff).await;

    let conserved = check(&report, "catalog.stock_conserved");
    assert_eq!(conserved["status"], "held", "{report:#}");
    assert!(
        conserved["numbers"]["products"].as_i64().unwrap() > 0,
        "{report:#}"
    );
    let sources: Vec<(&str, bool)> = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["url"].as_str().unwrap(), s["answered"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        sources,
        [(dead.as_str(), false), (live.base_url.as_str(), true)],
        "{report:#}"
    );
    // The services nobody configured leave the verdict unknown, never held.
    assert_eq!(report["status"], "unknown", "{report:#}");
}
