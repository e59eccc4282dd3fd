//! Which headers cross the proxy, and how: hop-by-hop ones stop at the BFF both ways, repeated
//! ones keep their order, the request id is kept, made or replaced, the customer header is the
//! BFF's to set, and an `Upgrade` goes no further.

use super::client::{Conn, get};
use super::{echoed, for_both, spawn};
use crate::stub::{Mode, STUB_INSTANCE};

#[tokio::test]
async fn hop_by_hop_headers_stop_at_the_bff_in_both_directions() {
    for_both(|own_front| async move {
        let (bff, _stub) = spawn(own_front, Mode::Echo).await;
        let mut conn = Conn::open(bff.addr).await;
        let hops = [
            "Connection: x-secret",
            "X-Secret: 1",
            "Keep-Alive: timeout=5",
            "TE: trailers",
            "Proxy-Authorization: Basic c2VjcmV0",
            "X-End-To-End: kept",
        ];

        let answer = conn.exchange("GET", &get("/api/products/1", &hops)).await;

        assert_eq!(answer.status, 200, "{answer:?}");
        for hop in [
            "connection",
            "x-secret",
            "keep-alive",
            "te",
            "proxy-authorization",
        ] {
            assert!(
                echoed(&answer, hop).is_empty(),
                "{hop} reached the upstream: {}",
                answer.text()
            );
        }
        assert_eq!(echoed(&answer, "x-end-to-end"), ["kept"]);
        assert!(answer.header("x-stub-hop").is_none(), "{answer:?}");
        assert!(!answer.connection_has("x-stub-hop"), "{answer:?}");
        assert_eq!(answer.header("x-upstream-instance-id"), Some(STUB_INSTANCE));
        assert_eq!(
            answer.header("x-instance-id"),
            Some(bff.instance_id.as_str())
        );
    })
    .await;
}

#[tokio::test]
async fn repeated_request_headers_reach_the_upstream_in_order() {
    for_both(|own_front| async move {
        let (bff, _stub) = spawn(own_front, Mode::Echo).await;
        let mut conn = Conn::open(bff.addr).await;
        let lines = [
            "X-Multi: one",
            "accept: application/json",
            "x-MULTI: two",
            "X-Empty:",
            "X-Spaced: \t padded value \t",
        ];

        let answer = conn.exchange("GET", &get("/api/products/1", &lines)).await;

        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(echoed(&answer, "x-multi"), ["one", "two"]);
        assert_eq!(echoed(&answer, "accept"), ["application/json"]);
        assert_eq!(echoed(&answer, "x-empty"), [""]);
        assert_eq!(echoed(&answer, "x-spaced"), ["padded value"]);
    })
    .await;
}

#[tokio::test]
async fn request_ids_are_kept_made_or_replaced_and_reach_the_upstream() {
    for_both(|own_front| async move {
        let (bff, _stub) = spawn(own_front, Mode::Echo).await;
        let mut conn = Conn::open(bff.addr).await;
        let overlong = "r".repeat(200);

        let kept = conn
            .exchange(
                "GET",
                &get("/api/products/1", &["X-Request-Id: wire-req-1"]),
            )
            .await;
        let made = conn.exchange("GET", &get("/api/products/2", &[])).await;
        let replaced = conn
            .exchange(
                "GET",
                &get("/api/products/3", &[&format!("X-Request-Id: {overlong}")]),
            )
            .await;

        assert_eq!(kept.header("x-request-id"), Some("wire-req-1"));
        assert_eq!(echoed(&kept, "x-request-id"), ["wire-req-1"]);
        let made_id = made.header("x-request-id").unwrap_or_default();
        assert!(!made_id.is_empty(), "{made:?}");
        assert_eq!(echoed(&made, "x-request-id"), [made_id]);
        let replacement = replaced.header("x-request-id").unwrap_or_default();
        assert!(
            !replacement.is_empty() && replacement != overlong && replacement != made_id,
            "{replaced:?}"
        );
        assert_eq!(echoed(&replaced, "x-request-id"), [replacement]);
    })
    .await;
}

#[tokio::test]
async fn a_callers_customer_header_is_replaced_by_its_session_at_the_upstream() {
    for_both(|own_front| async move {
        let (bff, _stub) = spawn(own_front, Mode::Echo).await;
        let mut conn = Conn::open(bff.addr).await;
        let forged = "X-Lab-Customer: user:someone-else";

        let first = conn
            .exchange("GET", &get("/api/products/1", &[forged]))
            .await;
        let cookie = first.header("set-cookie").unwrap_or_default().to_owned();
        let pair = cookie.split(';').next().unwrap_or_default().to_owned();
        let session = pair
            .strip_prefix("lab_session=")
            .and_then(|v| v.split('.').next())
            .unwrap_or_else(|| panic!("no session cookie in {first:?}"))
            .to_owned();
        let returning = conn
            .exchange(
                "GET",
                &get("/api/products/2", &[forged, &format!("Cookie: {pair}")]),
            )
            .await;

        let expected = format!("session:{session}");
        assert_eq!(echoed(&first, "x-lab-customer"), [expected.as_str()]);
        assert_eq!(echoed(&returning, "x-lab-customer"), [expected.as_str()]);
        assert!(returning.header("set-cookie").is_none(), "{returning:?}");
    })
    .await;
}

#[tokio::test]
async fn an_upgrade_request_is_answered_as_a_plain_get_and_the_upgrade_stops_at_the_bff() {
    for_both(|own_front| async move {
        let (bff, _stub) = spawn(own_front, Mode::Echo).await;
        let mut conn = Conn::open(bff.addr).await;
        let upgrade = ["Connection: upgrade", "Upgrade: websocket"];

        let answer = conn
            .exchange("GET", &get("/api/products/1", &upgrade))
            .await;
        let next = conn.exchange("GET", &get("/api/products/2", &[])).await;

        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(echoed(&answer, "upgrade").is_empty(), "{}", answer.text());
        assert!(answer.header("upgrade").is_none(), "{answer:?}");
        assert_eq!(next.status, 200, "{next:?}");
    })
    .await;
}
