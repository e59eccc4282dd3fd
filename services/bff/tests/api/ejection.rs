//! A catalog replica that keeps failing is ejected from the round-robin and probed back in once
//! it answers again, and both are events on the live stream (`breaker` topic) that the /chaos
//! page draws: `replica_ejected` with the time until its probe, `replica_probing`,
//! `replica_restored`.

use std::time::Duration;

use lab_test_support::{SseStream, TestEnv};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{quick_proxy, spawn_bff_with};
use crate::stub::{Mode, Stub};

/// Events arrive within a second; this leaves room for a loaded machine.
const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_failing_catalog_replica_is_ejected_with_its_time_until_probe_and_probed_back_in_on_the_live_stream()
 {
    let env = TestEnv::builder().start().await;
    let sick = Stub::start(Mode::PlainUnavailable).await;
    let healthy = Stub::start(Mode::Ok).await;
    let urls = format!("{},{}", sick.url, healthy.url);
    let bff = spawn_bff_with(&env, &[("catalog", urls)], quick_proxy()).await;
    let mut stream =
        SseStream::connect(&bff.client, &bff.url("/api/events?topics=breaker"), &[]).await;

    // Reads keep succeeding (a failed attempt on the sick replica is retried on the other)
    // while the sick replica's breaker fills and opens.
    for _ in 0..12 {
        assert_eq!(bff.get("/api/products").await.status(), StatusCode::OK);
    }
    let ejected = stream
        .until(WAIT, |e| e.data["data"]["kind"] == "replica_ejected")
        .await
        .expect("no replica_ejected event on the live stream");
    sick.set(Mode::Ok);
    // Traffic for the probe: an ejected replica is probed by the first call after its break.
    let traffic = {
        let (client, url) = (bff.client.clone(), bff.url("/api/products"));
        tokio::spawn(async move {
            loop {
                let _ = client.get(&url).send().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut seen = Vec::new();
    let restored = stream
        .until(WAIT, |e| {
            let kind = e.data["data"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            seen.push(kind.clone());
            kind == "replica_restored"
        })
        .await;
    traffic.abort();

    let ejected: &Value = &ejected.data["data"];
    assert_eq!(ejected["service"], "catalog", "{ejected:#}");
    assert_eq!(ejected["endpoint"], sick.url.as_str(), "{ejected:#}");
    assert_eq!(ejected["replicas"], 2, "{ejected:#}");
    assert_eq!(
        ejected["serving"], 1,
        "the healthy replica still serves: {ejected:#}"
    );
    let probe_in = ejected["probe_in_ms"].as_u64().expect("probe_in_ms");
    // quick_proxy breaks for 400 ms: the probe is due within it, and not already due.
    assert!(probe_in > 0 && probe_in <= 400, "{ejected:#}");
    assert!(
        ejected["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("failed"),
        "{ejected:#}"
    );
    let restored = restored.expect("the replica was never restored on the live stream");
    let restored = &restored.data["data"];
    assert_eq!(restored["endpoint"], sick.url.as_str(), "{restored:#}");
    assert_eq!(restored["reason"], "probe succeeded", "{restored:#}");
    assert_eq!(restored["serving"], 2, "{restored:#}");
    assert!(
        seen.iter().any(|k| k == "replica_probing"),
        "no probe announced before the restore: {seen:?}"
    );
}
