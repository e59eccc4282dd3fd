//! `lab soak --up`: a short soak in CI. It starts its own cluster, runs journeys through the BFF
//! while faults hit every layer, settles, and its report must show every invariant held, orders
//! completed and faults actually injected.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn a_short_soak_under_faults_completes_orders_and_every_invariant_holds() {
    let sandbox = Sandbox::new("soak");
    let report = sandbox.dir.parent().unwrap().join("soak-report");
    let mut cmd = sandbox.lab(&[
        "soak",
        "--up",
        "--duration",
        "60s",
        "--rate",
        "5",
        "--seed",
        "9",
        // A debug cluster on a machine busy with builds can take a minute or two to drain the
        // queues a minute of faults built up; the nextest override allows for it.
        "--settle-timeout",
        "120s",
        "--report",
        report.to_str().unwrap(),
    ]);
    cmd.args([
        "--",
        "--postgres-url",
        SHARED_PG,
        "--redis-url",
        SHARED_REDIS,
    ])
    .args(["--amqp-url", SHARED_AMQP, "--no-vault"])
    .args(["--database", &sandbox.database]);

    let (status, stdout, stderr) = finish(cmd.spawn().unwrap(), Duration::from_secs(300)).await;

    let json = std::fs::read_to_string(report.with_extension("json"))
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stdout:\n{stdout}\nstderr:\n{stderr}"));
    let md = std::fs::read_to_string(report.with_extension("md")).unwrap();
    let report: Value = serde_json::from_str(&json).unwrap();
    assert!(status.success(), "{status}\n{stderr}\n{md}");
    assert_eq!(report["verdict"]["passed"], true, "{md}");
    assert_eq!(report["invariants"]["status"], "held", "{md}");
    let violated: Vec<&Value> = report["invariants"]["invariants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] != "held")
        .collect();
    assert!(violated.is_empty(), "{violated:#?}");
    assert!(
        report["journeys"]["orders"]["Completed"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{md}"
    );
    let injected = report["faults"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["injected"] == true)
        .count();
    assert!(injected > 0, "no fault was injected:\n{md}");
    assert_eq!(report["settle"]["timed_out"], false, "{md}");
    let left = wait_no_leftovers(&sandbox, Duration::from_secs(15)).await;
    assert!(left.is_empty(), "the soak's cluster outlived it: {left:?}");
}
