//! One connection's life: several requests on it in turn or pipelined in one write, a request
//! or a protocol version that ends it, a client that half-closes, and the BFF shutting down
//! with connections idle and busy.

use std::time::Duration;

use lab_test_support::poll::eventually;

use super::client::{Conn, WAIT, get, request};
use super::{echoed, echoed_path, for_both, proxied, spawn};
use crate::stub::{Mode, streamed_body};

#[tokio::test]
async fn three_gets_on_one_connection_are_answered_in_order_each_framed() {
    for_both(|own_front| async move {
        let (bff, _stub) = spawn(own_front, Mode::Echo).await;
        let mut conn = Conn::open(bff.addr).await;

        for n in 1..=3 {
            let answer = conn
                .exchange("GET", &get(&format!("/api/products/{n}?n={n}"), &[]))
                .await;

            assert_eq!(answer.status, 200, "{answer:?}");
            assert_eq!(answer.version, "HTTP/1.1");
            assert!(!answer.close_delimited, "{answer:?}");
            assert!(!answer.connection_has("close"), "{answer:?}");
            assert_eq!(echoed_path(&answer), format!("/products/{n}?n={n}"));
        }
    })
    .await;
}

#[tokio::test]
async fn three_gets_pipelined_in_one_write_are_answered_in_order() {
    for_both(|own_front| async move {
        let (bff, _stub) = spawn(own_front, Mode::Echo).await;
        let mut conn = Conn::open(bff.addr).await;
        // The first is the slowest upstream answer: answers must still come in request order.
        let paths = [
            "/api/products/1?delay_ms=200",
            "/api/products/2?delay_ms=50",
            "/api/products/3",
        ];
        let wire: Vec<u8> = paths.iter().flat_map(|p| get(p, &[])).collect();

        conn.send(&wire).await;

        for path in paths {
            let answer = conn.answer("GET").await;
            assert_eq!(answer.status, 200, "{answer:?}");
            assert_eq!(echoed_path(&answer), path.trim_start_matches("/api"));
        }
        conn.silent_for(Duration::from_millis(100)).await;
    })
    .await;
}

#[tokio::test]
async fn a_burst_of_fifty_pipelined_gets_is_answered_in_order() {
    for_both(|own_front| async move {
        let (bff, _stub) = spawn(own_front, Mode::Echo).await;
        let mut conn = Conn::open(bff.addr).await;
        // ~3 KiB of requests: more than one read's worth for a front that reads in small pieces.
        let wire: Vec<u8> = (0..50)
            .flat_map(|n| get(&format!("/api/products/{n}?n={n}"), &[]))
            .collect();

        conn.send(&wire).await;

        for n in 0..50 {
            let answer = conn.answer("GET").await;
            assert_eq!(answer.status, 200, "answer {n}: {answer:?}");
            assert_eq!(echoed_path(&answer), format!("/products/{n}?n={n}"));
        }
        conn.silent_for(Duration::from_millis(100)).await;
    })
    .await;
}

#[tokio::test]
async fn a_get_a_post_with_a_json_body_and_a_get_share_one_connection_in_order() {
    for_both(|own_front| async move {
        let (bff, _stub) = spawn(own_front, Mode::Echo).await;
        let mut conn = Conn::open(bff.addr).await;
        let json = br#"{"name":"wire","price_cents":1234}"#;

        let first = conn.exchange("GET", &get("/api/products/1", &[])).await;
        let post = request(
            "POST",
            "/api/products",
            &["Content-Type: application/json"],
            json,
        );
        let posted = conn.exchange("POST", &post).await;
        let last = conn.exchange("GET", &get("/api/products/3", &[])).await;

        assert_eq!(first.status, 200, "{first:?}");
        assert_eq!(echoed_path(&first), "/products/1");
        assert_eq!(posted.status, 200, "{posted:?}");
        let echo = posted.json();
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["path"], "/products");
        assert_eq!(echo["body"].as_str().unwrap().as_bytes(), json);
        assert_eq!(echoed(&posted, "content-type"), ["application/json"]);
        assert_eq!(last.status, 200, "{last:?}");
        assert_eq!(echoed_path(&last), "/products/3");
    })
    .await;
}

#[tokio::test]
async fn a_get_a_head_a_post_and_a_get_pipelined_in_one_write_are_answered_in_order() {
    for_both(|own_front| async move {
        let (bff, stub) = spawn(own_front, Mode::Echo).await;
        let mut conn = Conn::open(bff.addr).await;
        let json = br#"{"name":"pipelined"}"#;
        let mut wire = get("/api/products/1?delay_ms=100", &[]);
        wire.extend(request("HEAD", "/api/products/2", &[], b""));
        wire.extend(request(
            "POST",
            "/api/products",
            &["Content-Type: application/json"],
            json,
        ));
        wire.extend(get("/api/products/4", &[]));

        conn.send(&wire).await;
        let first = conn.answer("GET").await;
        let head = conn.answer("HEAD").await;
        let posted = conn.answer("POST").await;
        let last = conn.answer("GET").await;

        assert_eq!(echoed_path(&first), "/products/1?delay_ms=100");
        assert_eq!(head.status, 200, "{head:?}");
        assert!(head.body.is_empty());
        assert_eq!(posted.status, 200, "{posted:?}");
        assert_eq!(posted.json()["body"].as_str().unwrap().as_bytes(), json);
        assert_eq!(echoed_path(&last), "/products/4");
        conn.silent_for(Duration::from_millis(100)).await;
        assert_eq!(
            proxied(&stub),
            [
                "/products/1?delay_ms=100",
                "/products/2",
                "/products",
                "/products/4"
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn a_connection_close_request_is_answered_then_the_bff_closes() {
    for_both(|own_front| async move {
        let (bff, _stub) = spawn(own_front, Mode::Echo).await;
        let mut conn = Conn::open(bff.addr).await;

        let answer = conn
            .exchange("GET", &get("/api/products/1", &["Connection: close"]))
            .await;

        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(echoed_path(&answer), "/products/1");
        // RFC 9112 §9.6: the server SHOULD say `close` in its last answer, and MUST close.
        assert!(answer.connection_has("close"), "{answer:?}");
        conn.eof().await;
    })
    .await;
}

#[tokio::test]
async fn a_request_pipelined_after_connection_close_is_not_answered() {
    for_both(|own_front| async move {
        let (bff, stub) = spawn(own_front, Mode::Echo).await;
        let mut conn = Conn::open(bff.addr).await;
        let mut wire = get("/api/products/1", &["Connection: close"]);
        wire.extend(get("/api/products/2", &[]));

        conn.send(&wire).await;
        let answer = conn.answer("GET").await;

        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(echoed_path(&answer), "/products/1");
        conn.closed().await;
        assert_eq!(proxied(&stub), ["/products/1"]);
    })
    .await;
}

#[tokio::test]
async fn an_http_1_0_request_is_answered_without_chunks_and_closed() {
    for_both(|own_front| async move {
        let (bff, _stub) = spawn(own_front, Mode::Echo).await;
        let mut conn = Conn::open(bff.addr).await;

        // No `Host`: HTTP/1.0 does not require one.
        let answer = conn
            .exchange("GET", b"GET /api/products/9?v=10 HTTP/1.0\r\n\r\n")
            .await;

        assert_eq!(answer.status, 200, "{answer:?}");
        // RFC 9112 §6.1: no Transfer-Encoding to a client that did not say HTTP/1.1.
        assert!(answer.all("transfer-encoding").is_empty(), "{answer:?}");
        assert_eq!(echoed_path(&answer), "/products/9?v=10");
        if !answer.close_delimited {
            conn.eof().await;
        }
    })
    .await;
}

#[tokio::test]
async fn an_http_1_0_request_for_a_streamed_body_gets_it_whole_without_chunks() {
    for_both(|own_front| async move {
        let (bff, _stub) = spawn(own_front, Mode::Streamed).await;
        let mut conn = Conn::open(bff.addr).await;

        let answer = conn
            .exchange("GET", b"GET /api/products/9 HTTP/1.0\r\n\r\n")
            .await;

        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(answer.all("transfer-encoding").is_empty(), "{answer:?}");
        assert!(
            answer.body == streamed_body(),
            "the body changed on the way ({} bytes)",
            answer.body.len()
        );
        if !answer.close_delimited {
            conn.eof().await;
        }
    })
    .await;
}

#[tokio::test]
async fn an_http_1_0_keep_alive_request_is_kept_alive_or_closed_the_same_by_both_fronts() {
    let kept = for_both(|own_front| async move {
        let (bff, _stub) = spawn(own_front, Mode::Echo).await;
        let mut conn = Conn::open(bff.addr).await;
        let ask = b"GET /api/products/1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";

        let first = conn.exchange("GET", ask).await;

        assert_eq!(first.status, 200, "{first:?}");
        assert!(first.all("transfer-encoding").is_empty(), "{first:?}");
        // Kept only when the answer says so, and then it must take another request.
        let kept = first.connection_has("keep-alive");
        if kept {
            assert!(!first.close_delimited, "{first:?}");
            let second = conn.exchange("GET", ask).await;
            assert_eq!(second.status, 200, "{second:?}");
        } else if !first.close_delimited {
            conn.eof().await;
        }
        kept
    })
    .await;
    assert_eq!(kept[0], kept[1], "kept alive by hyper, by the own front");
}

#[tokio::test]
#[ignore = "today's behaviour is wrong: hyper's server (half_close off) closes the connection \
            without answering when the client shuts its write side after a complete request"]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    for_both(|own_front| async move {
        let (bff, _stub) = spawn(own_front, Mode::Echo).await;
        let mut conn = Conn::open(bff.addr).await;

        // As `printf … | nc` does: the request, then the write side shut.
        conn.send(&get("/api/products/1?delay_ms=50", &[])).await;
        conn.shutdown_write().await;
        let answer = conn.answer("GET").await;

        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(echoed_path(&answer), "/products/1?delay_ms=50");
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_an_idle_keep_alive_connection_and_finishes_a_request_in_flight() {
    for_both(|own_front| async move {
        let (bff, stub) = spawn(own_front, Mode::Echo).await;
        let mut idle = Conn::open(bff.addr).await;
        let warm = idle.exchange("GET", &get("/api/products/1", &[])).await;
        assert_eq!(warm.status, 200, "{warm:?}");
        let mut busy = Conn::open(bff.addr).await;
        busy.send(&get("/api/products/2?delay_ms=300", &[])).await;
        let slow = "/products/2?delay_ms=300";
        let arrived = eventually(WAIT, || async {
            proxied(&stub).contains(&slow.to_owned()).then_some(())
        })
        .await;
        assert!(arrived.is_some(), "the slow request never reached the stub");

        let started = tokio::time::Instant::now();
        let stopping = tokio::spawn(bff.shutdown());
        idle.eof().await;
        let closed_after = started.elapsed();
        let answer = busy.answer("GET").await;

        // Well inside the 2 s grace: closed by the drain, not cut off when the grace ran out.
        assert!(closed_after < Duration::from_secs(1), "{closed_after:?}");
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(echoed_path(&answer), "/products/2?delay_ms=300");
        busy.eof().await;
        let stopped = tokio::time::timeout(WAIT, stopping).await;
        assert!(
            matches!(stopped, Ok(Ok(Ok(())))),
            "shutdown did not finish cleanly: {stopped:?}"
        );
    })
    .await;
}
