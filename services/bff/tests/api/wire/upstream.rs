//! An upstream that ends its connections (politely, rudely, or just as the BFF reuses one) must
//! not cost the caller an answer; an upstream's own failure becomes the gateway's problem, and
//! its problem document passes through.

use super::client::{Conn, get};
use super::{for_both, proxied, spawn, spawn_to};
use crate::stub::{DROPPER_BODY, DropWhen, Dropper, Mode, STUB_INSTANCE, STUB_PROBLEM};

#[tokio::test]
async fn gets_keep_succeeding_when_the_upstream_closes_after_each_answer() {
    for_both(|own_front| async move {
        let (bff, stub) = spawn(own_front, Mode::Close).await;
        let mut conn = Conn::open(bff.addr).await;

        for n in 0..10 {
            let answer = conn
                .exchange("GET", &get(&format!("/api/products/{n}"), &[]))
                .await;

            assert_eq!(answer.status, 200, "request {n}: {answer:?}");
            assert_eq!(answer.text(), "closing");
            // The upstream's `close` is about its own connection, not the caller's.
            assert!(!answer.connection_has("close"), "request {n}: {answer:?}");
        }
        assert!(proxied(&stub).len() >= 10, "{:?}", proxied(&stub));
    })
    .await;
}

/// Twenty GETs on one client connection through a BFF in front of an upstream that drops its
/// connections `when`: every one answered by the upstream.
async fn twenty_gets_succeed(own_front: bool, when: DropWhen) {
    let dropper = Dropper::start(when).await;
    let bff = spawn_to(own_front, &dropper.url).await;
    let mut conn = Conn::open(bff.addr).await;

    for n in 0..20 {
        let answer = conn
            .exchange("GET", &get(&format!("/api/products/{n}"), &[]))
            .await;

        assert_eq!(answer.status, 200, "request {n}: {answer:?}");
        assert_eq!(answer.text(), DROPPER_BODY);
    }
}

#[tokio::test]
async fn gets_keep_succeeding_when_the_upstream_drops_each_connection_right_after_its_answer() {
    for_both(|own_front| twenty_gets_succeed(own_front, DropWhen::AfterAnswer)).await;
}

#[tokio::test]
#[ignore = "today's behaviour is wrong: each reused connection the upstream closed counts as a \
            failure of the replica, so its breaker opens after 3 of 6 calls and the BFF answers \
            503 (retry-after 5) for a replica that answers every request it gets"]
async fn gets_keep_succeeding_when_the_upstream_drops_a_pooled_connection_as_it_is_reused() {
    for_both(|own_front| twenty_gets_succeed(own_front, DropWhen::OnNextRequest)).await;
}

/// The fast path alone, meanwhile: a pooled socket found closed is replaced by a fresh one and
/// not counted against the replica, so its breaker never opens.
#[tokio::test]
async fn the_fast_path_keeps_succeeding_when_the_upstream_drops_a_pooled_connection_as_it_is_reused()
 {
    twenty_gets_succeed(true, DropWhen::OnNextRequest).await;
}

#[tokio::test]
async fn an_upstream_500_is_a_502_problem_and_an_upstream_503_problem_passes_through() {
    for_both(|own_front| async move {
        let (bff, stub) = spawn(own_front, Mode::PlainError).await;
        let mut conn = Conn::open(bff.addr).await;

        let plain = conn.exchange("GET", &get("/api/products/1", &[])).await;
        stub.set(Mode::ProblemUnavailable);
        let problem = conn.exchange("GET", &get("/api/products/1", &[])).await;

        assert_eq!(plain.status, 502, "{plain:?}");
        assert_eq!(
            plain.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(plain.json()["status"], 502, "{}", plain.text());
        assert_eq!(problem.status, 503, "{problem:?}");
        assert_eq!(
            problem.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(problem.text(), STUB_PROBLEM);
        assert_eq!(
            problem.header("x-upstream-instance-id"),
            Some(STUB_INSTANCE)
        );
    })
    .await;
}
