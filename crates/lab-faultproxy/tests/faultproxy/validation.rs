//! Out-of-range parameters, expiries and scopes are refused with typed errors (the BFF's 422s).

use std::time::Duration;

use lab_faultproxy::{
    ADMIN_MAX_TTL, ChaosError, Direction, Fault, FaultError, Requester, Scope, VISITOR_MAX_TTL,
};

use crate::helpers::{Harness, TTL, echo_server, start_proxy};

#[test]
fn out_of_range_parameters_are_refused_with_the_reason() {
    let cases = [
        (
            Fault::Latency {
                ms: 10_001,
                jitter_ms: 0,
                direction: Direction::Both,
            },
            FaultError::LatencyTooLong(10_001),
        ),
        (
            Fault::Latency {
                ms: 100,
                jitter_ms: 101,
                direction: Direction::Both,
            },
            FaultError::JitterAboveLatency {
                ms: 100,
                jitter_ms: 101,
            },
        ),
        (
            Fault::Bandwidth {
                bytes_per_s: 1_023,
                direction: Direction::Both,
            },
            FaultError::BandwidthTooLow(1_023),
        ),
        (
            Fault::Reset { probability: 1.5 },
            FaultError::ProbabilityOutOfRange(1.5),
        ),
        (
            Fault::Reset { probability: -0.1 },
            FaultError::ProbabilityOutOfRange(-0.1),
        ),
        (
            Fault::SlowClose { delay_ms: 30_001 },
            FaultError::SlowCloseTooLong(30_001),
        ),
        (
            Fault::CutAfter {
                bytes: 0,
                direction: Direction::Both,
            },
            FaultError::CutAfterZero,
        ),
    ];
    for (fault, expected) in cases {
        assert_eq!(fault.validate(), Err(expected), "{fault:?}");
    }
    assert!(matches!(
        Fault::Reset {
            probability: f64::NAN
        }
        .validate(),
        Err(FaultError::ProbabilityOutOfRange(_))
    ));
}

#[test]
fn the_bounds_themselves_are_accepted() {
    let cases = [
        Fault::Latency {
            ms: 10_000,
            jitter_ms: 10_000,
            direction: Direction::Upstream,
        },
        Fault::Bandwidth {
            bytes_per_s: 1_024,
            direction: Direction::Downstream,
        },
        Fault::Reset { probability: 0.0 },
        Fault::Reset { probability: 1.0 },
        Fault::SlowClose { delay_ms: 30_000 },
        Fault::CutAfter {
            bytes: 1,
            direction: Direction::Both,
        },
        Fault::Blackhole {
            direction: Direction::Both,
        },
        Fault::Refuse,
    ];
    for fault in cases {
        assert_eq!(fault.validate(), Ok(()), "{fault:?}");
    }
}

#[test]
fn a_fault_reads_from_json_with_defaults_and_unknown_kinds_are_refused() {
    let latency: Fault = serde_json::from_str(r#"{"kind":"latency","ms":250}"#).expect("parse");
    let unknown = serde_json::from_str::<Fault>(r#"{"kind":"meteor"}"#);
    let misspelt = serde_json::from_str::<Fault>(r#"{"kind":"latency","ms":250,"jiter_ms":5}"#);

    assert_eq!(
        latency,
        Fault::Latency {
            ms: 250,
            jitter_ms: 0,
            direction: Direction::Both
        }
    );
    assert!(unknown.is_err());
    assert!(misspelt.is_err(), "{misspelt:?}");
}

#[tokio::test]
async fn the_registry_refuses_bad_expiries_unknown_scopes_and_invalid_faults() {
    let h = Harness::new("a→server", echo_server().await).await;
    let edge = || Scope::Edge("a→server".into());
    let latency = Fault::Latency {
        ms: 10,
        jitter_ms: 0,
        direction: Direction::Both,
    };

    let zero = h
        .chaos
        .apply(edge(), latency.clone(), Duration::ZERO, Requester::Visitor);
    let too_long = h.chaos.apply(
        edge(),
        latency.clone(),
        VISITOR_MAX_TTL + Duration::from_secs(1),
        Requester::Visitor,
    );
    let admin_long = h.chaos.apply(
        edge(),
        latency.clone(),
        VISITOR_MAX_TTL * 10,
        Requester::Admin,
    );
    let admin_too_long =
        h.chaos
            .apply(edge(), latency.clone(), ADMIN_MAX_TTL * 2, Requester::Admin);
    let unknown = h.chaos.apply(
        Scope::Target("nobody".into()),
        latency.clone(),
        TTL,
        Requester::Visitor,
    );
    let invalid = h.chaos.apply(
        edge(),
        Fault::Reset { probability: 2.0 },
        TTL,
        Requester::Visitor,
    );

    assert!(matches!(zero, Err(ChaosError::Expiry { .. })));
    assert!(matches!(too_long, Err(ChaosError::Expiry { max, .. }) if max == VISITOR_MAX_TTL));
    assert!(admin_long.is_ok(), "{admin_long:?}");
    assert!(matches!(admin_too_long, Err(ChaosError::Expiry { .. })));
    assert!(matches!(unknown, Err(ChaosError::UnknownScope(_))));
    assert_eq!(
        invalid,
        Err(ChaosError::Fault(FaultError::ProbabilityOutOfRange(2.0)))
    );
    assert_eq!(
        h.chaos.faults().len(),
        1,
        "only the admin's fault is active"
    );
    assert!(matches!(
        h.chaos.remove(9_999),
        Err(ChaosError::UnknownFault(9_999))
    ));
}

#[tokio::test]
async fn registering_two_edges_under_one_name_is_refused() {
    let h = Harness::new("a→server", echo_server().await).await;
    let twin = start_proxy("a→server", echo_server().await, &h.shutdown).await;

    let second = h.chaos.add_edge(&twin, ["a"]);

    assert_eq!(second, Err(ChaosError::DuplicateEdge("a→server".into())));
}
