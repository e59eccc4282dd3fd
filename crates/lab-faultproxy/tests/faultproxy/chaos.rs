//! The registry: scopes over edges and targets, expiry, extension, removal, events and state.

use std::net::SocketAddr;
use std::time::Duration;

use lab_faultproxy::{Chaos, ChaosEvent, Direction, Fault, Removal, Requester, Scope};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::helpers::{Harness, TTL, WAIT, echo_server, round_trip, start_proxy};

/// An address nothing needs to answer on: these tests never connect through the proxies.
fn nowhere() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9))
}

/// A registry with three edges: two services to postgres, one service to redis.
async fn three_edges(shutdown: &CancellationToken) -> (Chaos, Vec<lab_faultproxy::Proxy>) {
    let chaos = Chaos::start(&TaskTracker::new(), shutdown.clone());
    let mut proxies = Vec::new();
    for (edge, targets) in [
        ("catalog-1→postgres", ["catalog-1", "postgres"]),
        ("orders-1→postgres", ["orders-1", "postgres"]),
        ("catalog-1→redis", ["catalog-1", "redis"]),
    ] {
        let proxy = start_proxy(edge, nowhere(), shutdown).await;
        chaos.add_edge(&proxy, targets).expect("register");
        proxies.push(proxy);
    }
    (chaos, proxies)
}

#[tokio::test]
async fn a_target_fault_covers_every_edge_of_its_target_and_an_edge_fault_only_its_own() {
    let shutdown = CancellationToken::new();
    let (chaos, _proxies) = three_edges(&shutdown).await;

    let target = chaos
        .apply(
            Scope::Target("postgres".into()),
            Fault::Refuse,
            TTL,
            Requester::Visitor,
        )
        .expect("apply to target");
    let edge = chaos
        .apply(
            Scope::Edge("catalog-1→redis".into()),
            Fault::Refuse,
            TTL,
            Requester::Visitor,
        )
        .expect("apply to edge");
    let service = chaos
        .apply(
            Scope::Target("catalog-1".into()),
            Fault::Reset { probability: 0.5 },
            TTL,
            Requester::Visitor,
        )
        .expect("apply to a service");

    assert_eq!(target.edges, ["catalog-1→postgres", "orders-1→postgres"]);
    assert_eq!(edge.edges, ["catalog-1→redis"]);
    assert_eq!(service.edges, ["catalog-1→postgres", "catalog-1→redis"]);
    shutdown.cancel();
}

#[tokio::test]
async fn a_fault_on_a_target_reaches_its_edges_connections_and_not_others() {
    let covered = Harness::new("a→server", echo_server().await).await;
    // A second edge in the same registry, not under target `server`.
    let other = start_proxy("a→other", echo_server().await, &covered.shutdown).await;
    covered
        .chaos
        .add_edge(&other, ["a", "other"])
        .expect("register");

    covered
        .chaos
        .apply(
            Scope::Target("server".into()),
            Fault::Refuse,
            TTL,
            Requester::Visitor,
        )
        .expect("apply");
    let mut refused = covered.connect().await;
    let mut spared = tokio::net::TcpStream::connect(other.local_addr())
        .await
        .expect("connect");

    let mut buf = [0u8; 4];
    let read = tokio::time::timeout(WAIT, refused.read(&mut buf))
        .await
        .expect("bound");
    assert_eq!(read.expect("clean close"), 0);
    assert_eq!(round_trip(&mut spared, b"ok").await, b"ok");
}

#[tokio::test(start_paused = true)]
async fn a_fault_expires_by_itself_and_announces_it() {
    let shutdown = CancellationToken::new();
    let (chaos, _proxies) = three_edges(&shutdown).await;
    let mut events = chaos.subscribe();
    let applied = chaos
        .apply(
            Scope::Target("postgres".into()),
            Fault::Blackhole {
                direction: Direction::Both,
            },
            Duration::from_secs(30),
            Requester::Visitor,
        )
        .expect("apply");

    tokio::time::sleep(Duration::from_secs(29)).await;
    let before = chaos.faults();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = chaos.faults();

    assert_eq!(before.len(), 1);
    assert_eq!(before[0].expires_in_ms, 1_000);
    assert!(after.is_empty(), "still active: {after:?}");
    assert!(matches!(events.try_recv(), Ok(ChaosEvent::Applied { .. })));
    assert_eq!(
        events.try_recv().expect("a removal event"),
        ChaosEvent::Removed {
            id: applied.id,
            reason: Removal::Expired
        }
    );
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn re_applying_the_same_kind_to_the_same_scope_extends_it_and_keeps_its_id() {
    let shutdown = CancellationToken::new();
    let (chaos, _proxies) = three_edges(&shutdown).await;
    let scope = Scope::Edge("orders-1→postgres".into());
    let latency = |ms| Fault::Latency {
        ms,
        jitter_ms: 0,
        direction: Direction::Both,
    };
    let first = chaos
        .apply(
            scope.clone(),
            latency(100),
            Duration::from_secs(60),
            Requester::Visitor,
        )
        .expect("apply");
    let mut events = chaos.subscribe();

    tokio::time::sleep(Duration::from_secs(50)).await;
    let second = chaos
        .apply(
            scope.clone(),
            latency(200),
            Duration::from_secs(60),
            Requester::Visitor,
        )
        .expect("re-apply");
    // Past the first expiry, before the second.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let during = chaos.faults();
    tokio::time::sleep(Duration::from_secs(41)).await;
    let after = chaos.faults();

    assert_eq!(second.id, first.id);
    assert_eq!(second.expires_in_ms, 60_000);
    assert_eq!(second.fault, latency(200));
    assert_eq!(during.len(), 1, "expired at the first expiry");
    assert_eq!(during[0].id, first.id);
    assert!(after.is_empty());
    assert!(
        matches!(events.try_recv(), Ok(ChaosEvent::Extended { fault }) if fault.id == first.id)
    );
    shutdown.cancel();
}

#[tokio::test]
async fn different_kinds_or_scopes_are_separate_faults() {
    let shutdown = CancellationToken::new();
    let (chaos, _proxies) = three_edges(&shutdown).await;
    let pg = Scope::Target("postgres".into());

    let a = chaos
        .apply(pg.clone(), Fault::Refuse, TTL, Requester::Visitor)
        .expect("a");
    let b = chaos
        .apply(
            pg,
            Fault::Reset { probability: 0.1 },
            TTL,
            Requester::Visitor,
        )
        .expect("b");
    let c = chaos
        .apply(
            Scope::Edge("orders-1→postgres".into()),
            Fault::Refuse,
            TTL,
            Requester::Visitor,
        )
        .expect("c");

    assert_ne!(a.id, b.id);
    assert_ne!(a.id, c.id);
    assert_eq!(chaos.faults().len(), 3);
    shutdown.cancel();
}

#[tokio::test]
async fn removing_and_clearing_faults_lifts_them_and_announces_each() {
    let h = Harness::new("a→server", echo_server().await).await;
    let refuse = h.apply(Fault::Refuse);
    h.apply(Fault::Latency {
        ms: 1_000,
        jitter_ms: 0,
        direction: Direction::Both,
    });
    let mut events = h.chaos.subscribe();

    h.chaos.remove(refuse).expect("remove");
    let cleared = h.chaos.clear();
    let mut stream = h.connect().await;

    assert_eq!(cleared, 1);
    assert!(h.chaos.faults().is_empty());
    // Neither refused nor delayed any more: the echo comes back (no timing asserted).
    assert_eq!(round_trip(&mut stream, b"free").await, b"free");
    assert_eq!(
        events.try_recv().expect("event"),
        ChaosEvent::Removed {
            id: refuse,
            reason: Removal::Removed
        }
    );
    assert!(matches!(
        events.try_recv(),
        Ok(ChaosEvent::Removed {
            reason: Removal::Cleared,
            ..
        })
    ));
    assert!(h.chaos.remove(refuse).is_err(), "removed twice");
}

#[tokio::test]
async fn the_state_serialises_edges_counters_and_faults_for_the_api() {
    let h = Harness::new("a→server", echo_server().await).await;
    let mut stream = h.connect().await;
    round_trip(&mut stream, b"12345").await;
    h.apply(Fault::Bandwidth {
        bytes_per_s: 2_048,
        direction: Direction::Upstream,
    });

    let state = serde_json::to_value(h.chaos.state()).expect("serialise");

    let edge = &state["edges"][0];
    assert_eq!(edge["name"], "a→server");
    assert_eq!(edge["targets"], serde_json::json!(["client", "server"]));
    assert_eq!(edge["stats"]["connections_open"], 1);
    assert_eq!(edge["stats"]["bytes_upstream"], 5);
    assert_eq!(edge["stats"]["bytes_downstream"], 5);
    assert_eq!(edge["stats"]["faults_applied"], 1);
    let fault = &state["faults"][0];
    assert_eq!(
        fault["scope"],
        serde_json::json!({"type": "edge", "name": "a→server"})
    );
    assert_eq!(
        fault["fault"],
        serde_json::json!({"kind": "bandwidth", "bytes_per_s": 2048, "direction": "upstream"})
    );
    assert!(fault["expires_in_ms"].as_u64().is_some_and(|ms| ms > 0));
}

#[tokio::test]
async fn a_proxy_reports_its_bound_port_and_stops_listening_when_stopped() {
    let shutdown = CancellationToken::new();
    let proxy = start_proxy("a→echo", echo_server().await, &shutdown).await;
    let addr = proxy.local_addr();
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    assert_eq!(round_trip(&mut stream, b"hi").await, b"hi");
    drop(stream);

    tokio::time::timeout(WAIT, proxy.stop())
        .await
        .expect("stops within the bound");
    let after = tokio::net::TcpStream::connect(addr).await;

    assert_ne!(addr.port(), 0);
    assert!(after.is_err(), "still accepting after stop");
}

// Paused clock: the expiry is the registry's own timer, so the instants are virtual.
#[tokio::test(start_paused = true)]
async fn when_a_blackhole_expires_the_bytes_it_held_on_a_live_connection_flow_again() {
    let h = Harness::new("a→server", echo_server().await).await;
    let mut stream = h.connect().await;
    assert_eq!(round_trip(&mut stream, b"before").await, b"before");
    h.chaos
        .apply(
            Scope::Edge("a→server".into()),
            Fault::Blackhole {
                direction: Direction::Upstream,
            },
            Duration::from_secs(5),
            Requester::Visitor,
        )
        .expect("apply");
    let started = tokio::time::Instant::now();

    let reply = round_trip(&mut stream, b"held").await;

    assert_eq!(reply, b"held");
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "passed after {:?}",
        started.elapsed()
    );
    assert!(h.chaos.faults().is_empty());
}

#[tokio::test]
async fn an_unregistered_edge_is_no_longer_listed_nor_covered_by_its_targets_faults() {
    let h = Harness::new("a→server", echo_server().await).await;
    h.chaos
        .apply(
            Scope::Target("server".into()),
            Fault::Refuse,
            TTL,
            Requester::Visitor,
        )
        .expect("apply");

    h.chaos.remove_edge("a→server");
    let mut stream = h.connect().await;

    assert_eq!(round_trip(&mut stream, b"free").await, b"free");
    assert!(h.chaos.state().edges.is_empty());
    assert_eq!(h.chaos.faults()[0].edges, Vec::<String>::new());
}
