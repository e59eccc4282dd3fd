//! The proxy in front of real catalog replicas and the stub: routing of the public paths,
//! round-robin, ejection and return of a replica, headers and bodies across the hop.

use std::collections::BTreeSet;
use std::time::Duration;

use lab_bff::proxy::X_UPSTREAM_INSTANCE_ID;
use lab_test_support::poll::eventually;
use lab_test_support::{TestApp, TestEnv};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{MIGRATIONS, quick_proxy, spawn_bff, spawn_bff_with, spawn_catalog};
use crate::stub::{Mode, STUB_INSTANCE, Stub};

/// The upstream instance that answered a proxied `GET path`.
async fn served_by(bff: &TestApp, path: &str) -> (StatusCode, String) {
    let response = bff.get(path).await;
    let upstream = response
        .headers()
        .get(&X_UPSTREAM_INSTANCE_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (response.status(), upstream)
}

#[tokio::test]
async fn product_reads_alternate_between_the_two_catalog_replicas() {
    let env = TestEnv::builder().with_database(MIGRATIONS).start().await;
    let first = spawn_catalog(&env, 1).await;
    let second = spawn_catalog(&env, 2).await;
    let urls = format!("{},{}", first.base_url, second.base_url);
    let bff = spawn_bff(&env, &[("catalog", urls)]).await;

    let mut seen = Vec::new();
    for _ in 0..4 {
        let (status, upstream) = served_by(&bff, "/api/products").await;
        assert_eq!(status, StatusCode::OK);
        seen.push(upstream);
    }

    let both: BTreeSet<&str> = [first.instance_id.as_str(), second.instance_id.as_str()].into();
    assert_eq!(
        seen.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        both,
        "{seen:?}"
    );
    for pair in seen.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "consecutive reads on one replica: {seen:?}"
        );
    }
}

#[tokio::test]
async fn a_killed_replica_is_ejected_the_other_serves_everything_and_a_restarted_one_is_probed_back_in()
 {
    let env = TestEnv::builder().with_database(MIGRATIONS).start().await;
    let first = spawn_catalog(&env, 1).await;
    let second = spawn_catalog(&env, 2).await;
    let first_addr = first.addr;
    let urls = format!("{},{}", first.base_url, second.base_url);
    let bff = spawn_bff_with(&env, &[("catalog", urls)], quick_proxy()).await;
    first.shutdown().await.expect("first replica stopped");

    // Reads keep working (a refused attempt goes to the other replica) while the dead one's
    // breaker collects failures and opens.
    for _ in 0..12 {
        let (status, upstream) = served_by(&bff, "/api/products").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(upstream, second.instance_id);
    }
    let (_, breakers) = bff.get_json("/api/breakers").await;
    let dead = &breakers["breakers"][0];
    assert_eq!(
        dead["endpoint"],
        format!("http://{first_addr}"),
        "{breakers:#}"
    );
    assert_eq!(dead["state"], "open", "{breakers:#}");

    let mut restarted_settings = lab_catalog::Settings {
        http: env.http(1),
        database: env.database(lab_catalog::NAME),
        redis: env.redis(),
        amqp: env.amqp(),
        ..lab_catalog::Settings::default()
    };
    restarted_settings.http.listen = first_addr;
    let restarted = env.spawn(lab_catalog::build, restarted_settings).await;

    let back = eventually(Duration::from_secs(10), || async {
        let (_, upstream) = served_by(&bff, "/api/products").await;
        (upstream == restarted.instance_id).then_some(())
    })
    .await;
    assert!(back.is_some(), "the restarted replica never served again");
    let (_, breakers) = bff.get_json("/api/breakers").await;
    assert_eq!(breakers["breakers"][0]["state"], "closed", "{breakers:#}");
}

#[tokio::test]
async fn a_catalog_problem_passes_through_with_the_replica_that_answered() {
    let env = TestEnv::builder().with_database(MIGRATIONS).start().await;
    let catalog = spawn_catalog(&env, 1).await;
    let bff = spawn_bff(&env, &[("catalog", catalog.base_url.clone())]).await;

    let response = bff.get("/api/products?page=0").await;

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        response.headers()[&X_UPSTREAM_INSTANCE_ID],
        catalog.instance_id.as_str()
    );
    assert_eq!(
        response.headers()["x-instance-id"],
        bff.instance_id.as_str()
    );
    let body: Value = response.json().await.expect("a problem document");
    assert_eq!(body["field"], "page", "{body:#}");
}

#[tokio::test]
async fn the_request_id_and_trace_context_reach_the_upstream_and_hop_by_hop_headers_do_not() {
    let env = TestEnv::builder().start().await;
    let stub = Stub::start(Mode::Ok).await;
    let bff = spawn_bff(&env, &[("catalog", stub.url.clone())]).await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    let response = bff
        .client
        .get(bff.url("/api/products/42"))
        .header("x-request-id", "req-from-the-test")
        .header("traceparent", traceparent)
        .header("connection", "x-hop-secret")
        .header("x-hop-secret", "only for the first hop")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .send()
        .await
        .expect("proxied");

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-request-id"], "req-from-the-test");
    assert_eq!(response.headers()[&X_UPSTREAM_INSTANCE_ID], STUB_INSTANCE);
    assert!(
        response.headers().get("x-stub-hop").is_none(),
        "the upstream's hop header leaked"
    );
    let (seen, _) = stub.last();
    assert_eq!(seen["x-request-id"], "req-from-the-test");
    assert_eq!(seen["traceparent"], traceparent);
    assert!(seen.get("x-hop-secret").is_none(), "{seen:?}");
    assert!(seen.get("proxy-authorization").is_none(), "{seen:?}");
    assert_ne!(seen["host"], bff.addr.to_string().as_str());
}

#[tokio::test]
async fn a_request_id_made_by_the_bff_is_the_one_the_upstream_sees() {
    let env = TestEnv::builder().start().await;
    let stub = Stub::start(Mode::Ok).await;
    let bff = spawn_bff(&env, &[("catalog", stub.url.clone())]).await;

    let response = bff.get("/api/products").await;

    let (seen, _) = stub.last();
    assert_eq!(response.headers()["x-request-id"], seen["x-request-id"]);
}

#[tokio::test]
async fn a_streamed_request_body_reaches_the_upstream_intact() {
    let env = TestEnv::builder().start().await;
    let stub = Stub::start(Mode::Ok).await;
    let bff = spawn_bff(&env, &[("catalog", stub.url.clone())]).await;
    // Larger than what the proxy keeps for a retry, so it streams through.
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();

    let response = bff
        .client
        .put(bff.url("/api/products/7/inventory"))
        .body(body.clone())
        .send()
        .await
        .expect("proxied");

    assert_eq!(response.status(), StatusCode::OK);
    let (_, received) = stub.last();
    assert_eq!(received.len(), body.len());
    assert!(received == body, "the body changed on the way");
    let echoed = response.bytes().await.expect("the echo");
    assert!(echoed == body, "the response body changed on the way back");
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_problem_and_never_reaches_the_upstream() {
    let env = TestEnv::builder().start().await;
    let stub = Stub::start(Mode::Ok).await;
    let proxy = lab_bff::ProxySettings {
        body_limit_bytes: 1_000,
        ..lab_bff::ProxySettings::default()
    };
    let bff = spawn_bff_with(&env, &[("orders", stub.url.clone())], proxy).await;

    let response = bff
        .client
        .post(bff.url("/api/orders"))
        .body(vec![b'x'; 5_000])
        .send()
        .await
        .expect("answered");

    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(stub.hits(), 0);
}

#[tokio::test]
async fn each_public_path_reaches_its_services_own_path() {
    let env = TestEnv::builder().start().await;
    let identity = Stub::start(Mode::Ok).await;
    let orders = Stub::start(Mode::Ok).await;
    let bff = spawn_bff(
        &env,
        &[
            ("identity", identity.url.clone()),
            ("orders", orders.url.clone()),
        ],
    )
    .await;

    let refreshed = bff
        .client
        .post(bff.url("/api/auth/refresh"))
        .body("{}")
        .send()
        .await
        .expect("proxied");
    let claim = bff.get("/api/claims/k-1?verbose=1").await;

    assert_eq!(refreshed.status(), StatusCode::OK);
    assert_eq!(claim.status(), StatusCode::OK);
    assert_eq!(identity.paths(), ["/token/refresh"]);
    assert_eq!(orders.paths(), ["/claims/k-1?verbose=1"]);
}

/// Sends a chunked `POST path` by hand (the test client only sends bodies of known length) and
/// returns the status line's code. Writes after the BFF has answered may fail; that is the
/// point of a limit.
async fn post_chunked(bff: &TestApp, path: &str, chunks: &[Vec<u8>]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(bff.addr)
        .await
        .expect("connecting to the BFF");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        bff.addr
    );
    let mut wire = head.into_bytes();
    for chunk in chunks {
        wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let _ = stream.write_all(&wire).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

#[tokio::test]
async fn a_chunked_body_streams_through_intact() {
    let env = TestEnv::builder().start().await;
    let stub = Stub::start(Mode::Ok).await;
    let bff = spawn_bff(&env, &[("payments", stub.url.clone())]).await;
    let chunks: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 10_000]).collect();

    let status = post_chunked(&bff, "/api/webhooks/stripe", &chunks).await;

    assert_eq!(status, 200);
    let (_, received) = stub.last();
    assert!(received == chunks.concat(), "the body changed on the way");
}

#[tokio::test]
async fn a_chunked_body_that_outgrows_the_limit_is_cut_off_with_a_413() {
    let env = TestEnv::builder().start().await;
    let stub = Stub::start(Mode::Ok).await;
    let proxy = lab_bff::ProxySettings {
        body_limit_bytes: 30_000,
        ..lab_bff::ProxySettings::default()
    };
    let bff = spawn_bff_with(&env, &[("payments", stub.url.clone())], proxy).await;
    let chunks: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 10_000]).collect();

    let status = post_chunked(&bff, "/api/webhooks/stripe", &chunks).await;

    assert_eq!(status, 413);
    assert_eq!(stub.hits(), 0, "a cut-off body reached the handler");
}

#[tokio::test]
async fn a_callers_own_customer_header_is_replaced_by_its_session_and_a_bearer_caller_gets_none() {
    let env = TestEnv::builder().start().await;
    let stub = Stub::start(Mode::Ok).await;
    let bff = spawn_bff(&env, &[("orders", stub.url.clone())]).await;

    let anonymous = bff
        .client
        .get(bff.url("/api/orders/0190d5f4-0000-7000-8000-000000000001"))
        .header("x-lab-customer", "user:someone-else")
        .send()
        .await
        .expect("proxied");
    let (seen_anonymous, _) = stub.last();
    let with_token = bff
        .client
        .get(bff.url("/api/orders/0190d5f4-0000-7000-8000-000000000001"))
        .header("x-lab-customer", "user:someone-else")
        .header("authorization", "Bearer a.b.c")
        .send()
        .await
        .expect("proxied");
    let (seen_with_token, _) = stub.last();

    assert_eq!(anonymous.status(), StatusCode::OK);
    let cookie = anonymous.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let session = cookie
        .strip_prefix("lab_session=")
        .and_then(|c| c.split('.').next())
        .expect("a session cookie");
    assert_eq!(
        seen_anonymous["x-lab-customer"],
        format!("session:{session}").as_str()
    );
    assert_eq!(with_token.status(), StatusCode::OK);
    assert!(
        seen_with_token.get("x-lab-customer").is_none(),
        "{seen_with_token:?}"
    );
    assert_eq!(seen_with_token["authorization"], "Bearer a.b.c");
}

/// One counter's value in a Prometheus text exposition.
fn counter(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn proxied_reads_are_answered_by_the_fast_path_and_other_requests_by_the_router_on_the_same_connection()
 {
    let env = TestEnv::builder().start().await;
    let stub = Stub::start(Mode::Ok).await;
    let bff = spawn_bff(&env, &[("catalog", stub.url.clone())]).await;

    for _ in 0..3 {
        let (status, upstream) = served_by(&bff, "/api/products?limit=2").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(upstream, STUB_INSTANCE);
    }
    // Same client, same keep-alive connection: `/metrics` is the router's, answered by the
    // same server without handing the connection to hyper.
    let metrics = bff.get("/metrics").await.text().await.expect("metrics");

    assert_eq!(
        counter(&metrics, "bff_front_requests_total"),
        Some(3),
        "{metrics}"
    );
    assert_eq!(
        counter(&metrics, "bff_front_handoffs_total"),
        Some(0),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_chunked_request_body_hands_its_connection_to_hyper_which_answers_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let env = TestEnv::builder().start().await;
    let stub = Stub::start(Mode::Ok).await;
    let bff = spawn_bff(&env, &[("catalog", stub.url.clone())]).await;
    let mut tcp = tokio::net::TcpStream::connect(bff.addr)
        .await
        .expect("connecting");

    tcp.write_all(
        b"POST /api/products HTTP/1.1\r\nHost: lab\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    )
    .await
    .expect("writing");
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut answer))
        .await
        .expect("an answer in time")
        .expect("reading");
    let metrics = bff.get("/metrics").await.text().await.expect("metrics");

    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert_eq!(
        counter(&metrics, "bff_front_handoffs_total"),
        Some(1),
        "{metrics}"
    );
}

#[tokio::test]
async fn with_the_front_switched_off_the_router_answers_every_read() {
    let env = TestEnv::builder().start().await;
    let stub = Stub::start(Mode::Ok).await;
    let proxy = lab_bff::ProxySettings {
        own_front: false,
        ..lab_bff::ProxySettings::default()
    };
    let bff = spawn_bff_with(&env, &[("catalog", stub.url.clone())], proxy).await;

    let (status, upstream) = served_by(&bff, "/api/products").await;
    let metrics = bff.get("/metrics").await.text().await.expect("metrics");

    assert_eq!(status, StatusCode::OK);
    assert_eq!(upstream, STUB_INSTANCE);
    assert_eq!(counter(&metrics, "bff_front_requests_total"), None);
}
