//! How the cluster reacts to faults a visitor injects through the BFF's `/api/chaos/faults`
//! (relayed to the apphost), on one `lab up` with private PostgreSQL and Redis, the scenarios run
//! one after the other: a paused catalog replica is routed around and serves again once resumed;
//! PostgreSQL blackholed on orders' edge makes only orders unready until the fault expires;
//! RabbitMQ reset on orders' edge backs its outbox up, which drains afterwards; payments killed
//! mid-saga is restarted and the saga completes. Infrastructure faults are the admin's (asked of
//! the control API directly, as `lab chaos` would): a visitor is refused with the reason. The
//! broker is the machine's shared RabbitMQ, in a virtual host of the test's own.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

/// The chaos route's bucket holds 5 requests; these scenarios make more, on purpose not spread
/// over a minute.
const CHAOS_BUCKET: &str = "LAB_BFF__EDGE__RATE_LIMIT__CHAOS__CAPACITY";

struct Cluster {
    client: reqwest::Client,
    bff: String,
    control: String,
    /// What `lab up` printed, for a failure's message.
    out: std::path::PathBuf,
}

impl Cluster {
    /// The last lines `lab up` printed that mention one of `names`.
    fn log(&self, names: &[&str]) -> String {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| names.iter().any(|n| l.contains(n)))
            .collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A visitor's fault, through the BFF's chaos API.
    async fn fault(&self, body: Value) -> (u16, Value) {
        self.post_fault(format!("{}/api/chaos/faults", self.bff), body)
            .await
    }

    /// The admin's fault, on the apphost's control API.
    async fn admin_fault(&self, body: Value) -> (u16, Value) {
        self.post_fault(format!("{}/chaos/faults", self.control), body)
            .await
    }

    async fn post_fault(&self, url: String, body: Value) -> (u16, Value) {
        let response = self.client.post(url).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn chaos(&self) -> Value {
        self.client
            .get(format!("{}/api/chaos", self.bff))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn remove(&self, id: &Value) -> u16 {
        self.client
            .delete(format!("{}/api/chaos/faults/{id}", self.bff))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn processes(&self) -> Vec<Value> {
        reqwest::get(format!("{}/processes", self.control))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn url_of(&self, name: &str) -> String {
        row(&self.processes().await, name)["url"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// Polls `probe` every 100 ms until it yields a value, or `None` after `within`.
async fn poll<T, F, Fut>(within: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `pid` is stopped (`T`), once the signal has taken effect: the kernel stops a process
/// when it is next scheduled, which on a loaded machine takes a moment.
async fn stopped(pid: u64, wanted: bool) -> bool {
    poll(Duration::from_secs(3), || async {
        ((state_of(pid) == "T") == wanted).then_some(())
    })
    .await
    .is_some()
}

/// The scheduler state of `pid` (`T` when stopped).
fn state_of(pid: u64) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next().map(str::to_owned))
        })
        .unwrap_or_default()
}

/// A RabbitMQ virtual host of this test's own on the shared broker: every cluster names its
/// queues `lab.<service>`, so two clusters on one vhost would take each other's saga commands.
struct Vhost(String);

impl Vhost {
    fn new() -> Self {
        let name = format!("lab_reactions_{}", std::process::id());
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Self(name)
    }

    fn url(&self) -> String {
        SHARED_AMQP.replace("%2f", &self.0)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        rabbitmqctl(&["delete_vhost", &self.0]);
    }
}

fn rabbitmqctl(args: &[&str]) {
    let status = std::process::Command::new("rabbitmqctl")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "rabbitmqctl {args:?} failed"
    );
}

#[tokio::test]
async fn the_cluster_routes_around_recovers_from_and_drains_after_each_relayed_fault() {
    let sandbox = Sandbox::new("reactions");
    let vhost = Vhost::new();
    let mut cmd = sandbox.lab(&["up"]);
    cmd.args(["--amqp-url", &vhost.url(), "--no-vault"])
        .env(CHAOS_BUCKET, "100");
    let child = sandbox.spawn_logged(cmd);
    let control = sandbox.control_url(Duration::from_secs(60)).await;
    wait_until(
        &control,
        Duration::from_secs(90),
        "all ready",
        all_services_ready,
    )
    .await;
    let (apphost, bff) = sandbox.apphost();
    let cluster = Cluster {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        bff,
        control,
        out: sandbox.dir.parent().unwrap().join("up.out"),
    };

    surface_and_refusals(&cluster).await;
    paused_replica_is_routed_around(&cluster).await;
    blackholed_database_unreadies_one_service(&cluster).await;
    reset_broker_backs_the_outbox_up_then_it_drains(&cluster).await;
    payments_killed_mid_saga_and_the_saga_completes(&cluster).await;
    admin_kills_and_pauses_infrastructure(&cluster).await;

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(apphost as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (status, _, _) = finish(child, Duration::from_secs(30)).await;
    assert!(status.success(), "{:?}", sandbox.output());
    drop(vhost);
}

/// `GET /api/chaos` offers every layer, and the BFF refuses what a visitor may not do with 422.
async fn surface_and_refusals(c: &Cluster) {
    let state = c.chaos().await;
    let (pause_pg, pause_pg_body) = c
        .fault(json!({ "layer": "process", "target": "postgres", "action": "pause", "duration_s": 10 }))
        .await;
    let (unknown, _) = c
        .fault(json!({ "layer": "process", "target": "mainframe", "action": "kill", "duration_s": 10 }))
        .await;
    let (too_long, too_long_body) = c
        .fault(json!({ "layer": "tcp", "target": "postgres", "fault": { "kind": "refuse" }, "duration_s": 600 }))
        .await;
    let (claims_admin, _) = c
        .fault(json!({ "layer": "tcp", "target": "postgres", "fault": { "kind": "refuse" }, "duration_s": 5, "requester": "admin" }))
        .await;
    let (bad_kind, _) = c
        .fault(json!({ "layer": "tcp", "target": "postgres", "fault": { "kind": "meteor" }, "duration_s": 5 }))
        .await;

    assert_eq!(
        state["layers"],
        json!(["http", "tcp", "process"]),
        "{state:#}"
    );
    assert_eq!(state["role"], "visitor");
    let processes = state["apphost"]["processes"].as_array().unwrap();
    let pg = processes.iter().find(|p| p["name"] == "postgres").unwrap();
    let catalog = processes.iter().find(|p| p["name"] == "catalog-2").unwrap();
    assert!(
        pg["refused"]["pause"]
            .as_str()
            .is_some_and(|r| r.contains("visitors may not")),
        "{pg:#}"
    );
    assert_eq!(catalog["refused"]["pause"], Value::Null, "{catalog:#}");
    let tcp_targets = state["apphost"]["tcp_targets"].as_array().unwrap();
    assert!(tcp_targets.contains(&json!("postgres")), "{state:#}");
    assert_eq!(pause_pg, 422, "{pause_pg_body:#}");
    assert!(
        pause_pg_body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("visitors may not pause")),
        "{pause_pg_body:#}"
    );
    assert_eq!(unknown, 422);
    assert_eq!(too_long, 422);
    assert_eq!(too_long_body["field"], "duration_s", "{too_long_body:#}");
    assert_eq!(
        claims_admin, 422,
        "a visitor cannot claim admin in the body"
    );
    assert_eq!(bad_kind, 422);
}

/// catalog-2 paused: the BFF keeps serving products from catalog-1; once the pause is removed,
/// catalog-2 serves again.
async fn paused_replica_is_routed_around(c: &Cluster) {
    let pid = row(&c.processes().await, "catalog-2")["pid"]
        .as_u64()
        .unwrap();

    let (created, fault) = c
        .fault(json!({ "layer": "process", "target": "catalog-2", "action": "pause", "duration_s": 60 }))
        .await;
    let was_stopped = stopped(pid, true).await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let r = c
            .client
            .get(format!("{}/api/products", c.bff))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    let listed = c.chaos().await;
    let removed = c.remove(&fault["id"]).await;
    let resumed = stopped(pid, false).await;
    let back = wait_until(
        &c.control,
        Duration::from_secs(30),
        "catalog-2 ready after resume",
        |rows| row(rows, "catalog-2")["health"] == "ready",
    )
    .await;

    assert_eq!(created, 201, "{fault:#}");
    assert_eq!(fault["layer"], "process");
    assert!(was_stopped, "catalog-2 was not stopped");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let paused_row = listed["apphost"]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "catalog-2")
        .unwrap();
    assert_eq!(paused_row["state"], "paused", "{listed:#}");
    assert!(
        listed["faults"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == fault["id"] && f["expires_in_ms"].as_u64() > Some(0)),
        "{listed:#}"
    );
    assert_eq!(removed, 204);
    assert!(resumed, "catalog-2 stayed stopped after the removal");
    assert_eq!(
        row(&back, "catalog-2")["pid"].as_u64(),
        Some(pid),
        "resumed, not restarted"
    );
}

/// PostgreSQL blackholed on orders' edge alone: orders' /readyz fails, the other services stay
/// ready, and orders is ready again after the fault expires.
async fn blackholed_database_unreadies_one_service(c: &Cluster) {
    let (created, fault) = c
        .fault(json!({ "layer": "tcp", "edge": "orders→postgres", "fault": { "kind": "blackhole" }, "duration_s": 12 }))
        .await;
    let during = wait_until(
        &c.control,
        Duration::from_secs(12),
        "orders not ready while its database is blackholed",
        |rows| row(rows, "orders")["health"] != "ready",
    )
    .await;
    let recovered = wait_until(
        &c.control,
        Duration::from_secs(45),
        "orders ready again after the blackhole expired",
        |rows| row(rows, "orders")["health"] == "ready",
    )
    .await;
    let after = c.chaos().await;

    assert_eq!(created, 201, "{fault:#}");
    assert_eq!(fault["layer"], "tcp");
    for other in ["catalog-1", "catalog-2", "checkout", "payments"] {
        assert_eq!(
            row(&during, other)["health"],
            "ready",
            "{other}: {during:#?}"
        );
    }
    assert_eq!(row(&recovered, "orders")["health"], "ready");
    assert!(
        !after["faults"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == fault["id"]),
        "the blackhole outlived its expiry: {after:#}"
    );
}

/// The demo product's id, through the BFF.
async fn demo_product(c: &Cluster) -> String {
    let page: Value = c
        .client
        .get(format!("{}/api/products?q=DEMO-RACE&per_page=100", c.bff))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["items"]
        .as_array()
        .and_then(|items| items.iter().find(|p| p["sku"] == "DEMO-RACE"))
        .and_then(|p| p["id"].as_str())
        .unwrap_or_else(|| panic!("no demo product: {page:#}"))
        .to_owned()
}

/// Places one order for the demo product at orders directly; its id.
async fn place_order(c: &Cluster, orders: &str, customer: &str) -> String {
    let product = demo_product(c).await;
    let response = c
        .client
        .post(format!("{orders}/orders"))
        .header(
            "idempotency-key",
            format!("{customer}-{:?}", Instant::now()),
        )
        .header("x-lab-customer", customer)
        .json(&json!({ "lines": [{ "product_id": product, "quantity": 1 }], "provider": "stripe" }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 202, "{body:#}");
    body["order_id"]
        .as_str()
        .or_else(|| body["id"].as_str())
        .unwrap_or_else(|| panic!("no order id: {body:#}"))
        .to_owned()
}

/// Unsent rows in orders' outbox, as orders reports them.
async fn outbox_pending(c: &Cluster, orders: &str) -> Option<i64> {
    let report: Value = c
        .client
        .get(format!("{orders}/invariants"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    report["messaging"]["outbox"]["pending"].as_i64()
}

/// Every connection from orders to RabbitMQ reset for a while: the order placed meanwhile waits
/// in orders' outbox, and is published once the broker is reachable again.
async fn reset_broker_backs_the_outbox_up_then_it_drains(c: &Cluster) {
    let orders = c.url_of("orders").await;
    let (created, fault) = c
        .fault(json!({ "layer": "tcp", "edge": "orders→rabbitmq", "fault": { "kind": "reset", "probability": 1.0 }, "duration_s": 6 }))
        .await;
    // The reset reaches live connections at once; give the relay a moment to notice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let order = place_order(c, &orders, "chaos:outbox").await;
    let backed_up = poll(Duration::from_secs(5), || async {
        outbox_pending(c, &orders).await.filter(|n| *n > 0)
    })
    .await;
    let drained = poll(Duration::from_secs(45), || async {
        outbox_pending(c, &orders).await.filter(|n| *n == 0)
    })
    .await;

    assert_eq!(created, 201, "{fault:#}");
    assert!(
        backed_up.is_some(),
        "order {order} never waited in the outbox"
    );
    assert!(
        drained.is_some(),
        "the outbox did not drain after the reset ended"
    );
}

/// payments killed right after an order is placed: the supervisor restarts it, the saga's
/// command waits in RabbitMQ for it, and with the buyer's approval the order completes.
async fn payments_killed_mid_saga_and_the_saga_completes(c: &Cluster) {
    let orders = c.url_of("orders").await;
    let payments = c.url_of("payments").await;
    let psp = c.url_of("psp").await;
    let customer = "chaos:kill";

    let order = place_order(c, &orders, customer).await;
    let (created, fault) = c
        .fault(
            json!({ "layer": "process", "target": "payments", "action": "kill", "duration_s": 60 }),
        )
        .await;
    let session = poll(Duration::from_secs(45), || async {
        let payment: Value = c
            .client
            .get(format!("{payments}/payments/{order}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        payment["session_id"].as_str().map(str::to_owned)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "payments never opened a session for {order}:\n{}",
            c.log(&["payments", "checkout", "orders", "lab "])
        )
    });
    let approved = c
        .client
        .post(format!("{psp}/sandbox/sessions/{session}/approve"))
        .send()
        .await
        .unwrap()
        .status();
    let finished = poll(Duration::from_secs(45), || async {
        let view: Value = c
            .client
            .get(format!("{orders}/orders/{order}"))
            .header("x-lab-customer", customer)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (view["status"].as_str() != Some("Pending")).then_some(view)
    })
    .await
    .unwrap_or_else(|| panic!("order {order} still pending"));
    let kill = poll(Duration::from_secs(30), || async {
        c.chaos().await["faults"]
            .as_array()?
            .iter()
            .find(|f| f["id"] == fault["id"] && f["status"] != "restarting")
            .cloned()
    })
    .await;

    assert_eq!(created, 201, "{fault:#}");
    assert!(approved.is_success(), "{approved}");
    assert_eq!(finished["status"], "Completed", "{finished:#}");
    let kill = kill.unwrap_or_else(|| panic!("payments was not back within 30 s"));
    assert_eq!(kill["status"], "restarted", "{kill:#}");
    assert!(
        kill["restart_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{kill:#}"
    );
}

/// The admin may kill and pause infrastructure `lab up` owns: a killed Redis is started again
/// (with the time it took), a paused one resumes when the fault is removed.
async fn admin_kills_and_pauses_infrastructure(c: &Cluster) {
    let before = row(&c.processes().await, "redis")["pid"].as_u64().unwrap();

    let (killed, kill) = c
        .admin_fault(json!({ "scope": { "type": "target", "name": "redis" }, "fault": { "kind": "kill" }, "ttl_s": 60, "requester": "admin" }))
        .await;
    let restarted = poll(Duration::from_secs(30), || async {
        let state = chaos_state(&c.control).await?;
        state["faults"]
            .as_array()?
            .iter()
            .find(|f| f["id"] == kill["id"] && f["status"] == "restarted")
            .cloned()
    })
    .await;
    let after = row(&c.processes().await, "redis")["pid"].as_u64();
    let (paused, pause) = c
        .admin_fault(json!({ "scope": { "type": "target", "name": "redis" }, "fault": { "kind": "pause" }, "ttl_s": 60, "requester": "admin" }))
        .await;
    let was_stopped = stopped(after.unwrap_or(0), true).await;
    let removed = reqwest::Client::new()
        .delete(format!("{}/chaos/faults/{}", c.control, pause["id"]))
        .send()
        .await
        .unwrap()
        .status();
    let resumed = stopped(after.unwrap_or(0), false).await;

    assert_eq!(killed, 201, "{kill:#}");
    let restarted = restarted.unwrap_or_else(|| panic!("redis was not started again"));
    assert!(restarted["restart_ms"].as_u64().is_some(), "{restarted:#}");
    assert!(after.is_some_and(|p| p != before), "redis has the same pid");
    assert_eq!(paused, 201, "{pause:#}");
    assert!(was_stopped, "redis was not stopped");
    assert_eq!(removed, 204);
    assert!(resumed, "redis stayed stopped");
}
