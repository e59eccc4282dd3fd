//! `GET /api/events`: the same events under the same ids from every replica, resume after a
//! reconnect, the bus's saga steps, topic filters, and a Redis outage degrading to one replica.

use std::time::Duration;

use lab_contracts::{Message, SagaTransitioned};
use lab_messaging::lapin::BasicProperties;
use lab_messaging::lapin::options::BasicPublishOptions;
use lab_messaging::{Broker, Envelope, Topology};
use lab_test_support::{SseStream, TestEnv, eventually};

use crate::helpers::{spawn_app, spawn_bff_replica};

/// Long enough for several health pushes (every 200 ms in tests) and a leadership hand-over.
const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn two_replicas_stream_the_same_events_under_the_same_ids() {
    let env = TestEnv::builder().start().await;
    let one = spawn_bff_replica(&env, 1).await;
    let two = spawn_bff_replica(&env, 2).await;
    let mut from_one =
        SseStream::connect(&one.client, &one.url("/api/events?topics=health"), &[]).await;
    let mut from_two =
        SseStream::connect(&two.client, &two.url("/api/events?topics=health"), &[]).await;

    let seen_one = from_one.collect_for(Duration::from_secs(3)).await;
    let seen_two = from_two.collect_for(Duration::from_secs(3)).await;

    let ids = |events: &[lab_test_support::SseEvent]| -> Vec<String> {
        events.iter().skip(1).map(|e| e.id.clone()).collect()
    };
    assert!(
        seen_one.len() >= 5,
        "too few health events: {}",
        seen_one.len()
    );
    let (a, b) = (ids(&seen_one), ids(&seen_two));
    let common: Vec<&String> = a.iter().filter(|id| b.contains(id)).collect();
    assert!(
        common.len() >= a.len().min(b.len()).saturating_sub(2),
        "the replicas streamed different events: {a:?} vs {b:?}"
    );
    // One leader probes for everybody: health reports do not arrive twice per period.
    let sources: std::collections::HashSet<String> = seen_one
        .iter()
        .skip(1)
        .map(|e| e.data["source"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        sources.len(),
        1,
        "more than one replica pushed health: {sources:?}"
    );
    assert_eq!(seen_one[0].event, "health");
    assert_eq!(from_one.retry_ms, Some(3_000));
}

#[tokio::test]
async fn a_viewer_that_reconnects_with_last_event_id_misses_nothing() {
    let app = spawn_app().await;
    let url = app.url("/api/events?topics=health");
    let mut watcher = SseStream::connect(&app.client, &url, &[]).await;
    let mut leaving = SseStream::connect(&app.client, &url, &[]).await;
    // Skip the snapshot sent on connect: resume from a live event.
    leaving
        .next(WAIT)
        .await
        .expect("the snapshot or a first event");
    let last_seen = leaving.next(WAIT).await.expect("a live event").id;
    drop(leaving);

    // Events go on while it is away.
    let mut missed = Vec::new();
    while missed.len() < 4 {
        let e = watcher.next(WAIT).await.expect("the watcher's events");
        if id_after(&e.id, &last_seen) {
            missed.push(e.id);
        }
    }
    let mut back = SseStream::connect(&app.client, &url, &[("last-event-id", &last_seen)]).await;
    let replayed: Vec<String> = {
        let mut got = Vec::new();
        while got.len() < missed.len() {
            got.push(back.next(WAIT).await.expect("replayed events").id);
        }
        got
    };

    assert_eq!(replayed, missed, "resumed after {last_seen}");
}

/// Whether stream id `a` comes after `b`.
fn id_after(a: &str, b: &str) -> bool {
    let parse = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap_or(("0", "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    };
    parse(a) > parse(b)
}

#[tokio::test]
async fn a_saga_step_on_the_bus_reaches_viewers_as_a_message_a_console_line_and_a_saga_event() {
    let env = TestEnv::builder().start().await;
    let app = spawn_bff_replica(&env, 1).await;
    let mut stream = SseStream::connect(
        &app.client,
        &app.url("/api/events?topics=saga,console,message"),
        &[],
    )
    .await;
    let order_id = uuid::Uuid::now_v7();
    let step = SagaTransitioned {
        order_id,
        from: "Captured".into(),
        to: "Completed".into(),
        event: "catalog.stock-committed".into(),
        terminal: true,
        compensations: vec![],
    };
    let envelope = Envelope {
        correlation_id: order_id,
        ..Envelope::new(SagaTransitioned::NAME, serde_json::to_value(&step).unwrap())
    };

    // The tap binds its queue shortly after start: publish until a viewer sees it.
    let settings = env.amqp();
    let broker = Broker::start(&settings, "test-publisher", env.shutdown_token());
    let exchange = Topology::new(&settings, "bff").exchange();
    let mut saga = None;
    for _ in 0..30 {
        if let Ok(conn) = broker.connection()
            && let Ok(channel) = conn.create_channel().await
        {
            let _ = channel
                .basic_publish(
                    exchange.as_str().into(),
                    SagaTransitioned::NAME.into(),
                    BasicPublishOptions::default(),
                    &envelope.to_body().unwrap(),
                    BasicProperties::default(),
                )
                .await;
        }
        saga = stream
            .until(Duration::from_millis(500), |e| e.event == "saga")
            .await;
        if saga.is_some() {
            break;
        }
    }

    let saga = saga.expect("no saga event reached the viewer");
    assert_eq!(saga.data["data"]["order_id"], order_id.to_string());
    assert_eq!(saga.data["data"]["to"], "Completed");
    let mut again =
        SseStream::connect(&app.client, &app.url("/api/events?topics=console"), &[]).await;
    let line = again
        .until(WAIT, |e| {
            e.data["data"]["text"]
                .as_str()
                .is_some_and(|t| t.contains(&order_id.to_string()))
        })
        .await
        .expect("the console backfill has the step");
    assert!(
        line.data["data"]["text"]
            .as_str()
            .unwrap()
            .contains("Captured → Completed"),
        "{}",
        line.data
    );
}

#[tokio::test]
async fn an_unknown_topic_is_a_422_problem() {
    let app = spawn_app().await;

    let response = app.get("/api/events?topics=health,gossip").await;

    assert_eq!(response.status(), 422);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("gossip"),
        "{body}"
    );
}

#[tokio::test]
async fn with_redis_down_a_replica_streams_to_its_own_viewers_and_says_so() {
    let env = TestEnv::builder().with_private_redis().start().await;
    let app = spawn_bff_replica(&env, 1).await;
    let url = app.url("/api/events?topics=health");

    env.stop_redis().await;
    let local = eventually(WAIT, || async {
        let (_, body) = app.get_json("/api/health").await;
        (body["live"]["mode"] == "local").then_some(body)
    })
    .await;
    let mut stream = SseStream::connect(&app.client, &url, &[]).await;
    let during = stream.until(WAIT, |e| e.id.starts_with("local-")).await;
    env.start_redis().await;
    let shared = eventually(WAIT, || async {
        let (_, body) = app.get_json("/api/health").await;
        (body["live"]["mode"] == "shared").then_some(())
    })
    .await;
    let after = stream
        .until(WAIT, |e| !e.id.starts_with("local-") && e.id.contains('-'))
        .await;

    let local = local.expect("/api/health never said the live stream was local");
    assert!(
        local["live"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("Redis")),
        "{local}"
    );
    assert!(during.is_some(), "no health events while Redis was down");
    assert!(shared.is_some(), "the stream never went back to shared");
    assert!(after.is_some(), "no shared events after Redis returned");
}

#[tokio::test]
async fn a_replicas_metrics_snapshot_counts_the_requests_it_served() {
    let app = spawn_app().await;
    let mut stream =
        SseStream::connect(&app.client, &app.url("/api/events?topics=metrics"), &[]).await;

    for _ in 0..7 {
        app.get("/api/health").await;
    }
    let counted = stream
        .until(WAIT, |e| {
            e.data["data"]["requests"].as_u64().unwrap_or(0) >= 7
        })
        .await;

    let counted = counted.expect("no metrics snapshot counted the requests");
    assert!(
        counted.data["data"]["p99_ms"].as_f64().is_some(),
        "{}",
        counted.data
    );
    assert_eq!(counted.data["source"], app.instance_id.as_str());
}

#[tokio::test]
async fn every_database_instances_credentials_reach_the_live_stream() {
    let cluster = lab_test_cluster::Cluster::start(lab_test_cluster::Options::default()).await;
    let bff = crate::helpers::spawn_bff(&cluster.env, &cluster.upstreams()).await;
    let mut stream =
        SseStream::connect(&bff.client, &bff.url("/api/events?topics=vault"), &[]).await;

    let mut instances = std::collections::BTreeSet::new();
    while instances.len() < 4 {
        let Some(event) = stream.next(WAIT).await else {
            break;
        };
        // The test cluster's services log in statically: reported as such, never as leased.
        assert_eq!(
            event.data["data"]["status"]["source"], "static",
            "{}",
            event.data
        );
        instances.insert(event.data["data"]["instance"].as_str().unwrap().to_owned());
    }

    let services: std::collections::BTreeSet<&str> = instances
        .iter()
        .filter_map(|i| i.split('-').next())
        .collect();
    assert_eq!(
        services,
        ["catalog", "checkout", "orders", "payments"]
            .into_iter()
            .collect(),
        "{instances:?}"
    );
}
