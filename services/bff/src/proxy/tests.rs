//! The proxy's handles for the demos and the push stream, on a router with no server around it.

use axum::body::Body;
use lab_resilience::{BreakerState, ResilienceEvent};
use tower::ServiceExt;

use super::*;

async fn get(proxy: &Proxy, path: &str) -> http::StatusCode {
    let request = http::Request::get(path)
        .body(Body::empty())
        .expect("a request");
    match proxy.router().oneshot(request).await {
        Ok(response) => response.status(),
        Err(never) => match never {},
    }
}

#[tokio::test]
async fn breakers_report_each_replica_and_a_reset_closes_an_open_one_with_an_event() {
    let dead = lab_test_support::closed_port_url("http");
    let settings = ProxySettings {
        max_retries: 0,
        ..ProxySettings::default()
    };
    let proxy = Proxy::new(&[("catalog".to_owned(), dead.clone())], &settings);
    let mut events = proxy.subscribe();
    for _ in 0..5 {
        assert_eq!(
            get(&proxy, "/api/products").await,
            http::StatusCode::SERVICE_UNAVAILABLE
        );
    }

    let opened = events.try_recv();
    let before = proxy.breakers();
    let found = proxy.reset("catalog");

    match opened {
        Ok(ResilienceEvent::BreakerChanged { endpoint, to, .. }) => {
            assert_eq!(&*endpoint, dead.as_str());
            assert_eq!(to, BreakerState::Open);
        }
        other => panic!("expected the breaker to open, got {other:?}"),
    }
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].state, BreakerState::Open);
    assert!(found);
    assert_eq!(proxy.breakers()[0].state, BreakerState::Closed);
    assert!(matches!(
        events.try_recv(),
        Ok(ResilienceEvent::BreakerChanged {
            to: BreakerState::Closed,
            ..
        })
    ));
    assert!(!proxy.reset("nothing-by-that-name"));
}

#[test]
fn proxy_and_security_settings_come_from_lab_bff_variables() {
    let vars = [
        ("LAB_BFF__PROXY__ATTEMPT_TIMEOUT_MS", "700"),
        ("LAB_BFF__PROXY__BREAKER_BREAK_MS", "9000"),
        ("LAB_BFF__PROXY__BODY_LIMIT_BYTES", "2048"),
        ("LAB_BFF__SECURITY__CORS_ORIGINS", "https://lab.example"),
        ("LAB_BFF__SECURITY__BEHIND_TLS", "true"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));

    let settings: crate::Settings = lab_config::load_from(crate::NAME, vars).expect("settings");

    assert_eq!(settings.proxy.attempt_timeout_ms, 700);
    assert_eq!(settings.proxy.breaker_break_ms, 9000);
    assert_eq!(settings.proxy.body_limit_bytes, 2048);
    assert_eq!(
        settings.proxy.total_timeout_ms,
        ProxySettings::default().total_timeout_ms
    );
    assert_eq!(settings.security.cors_origins, "https://lab.example");
    assert!(settings.security.behind_tls);
}
