use proptest::prelude::*;

use super::*;

fn usd(amount_minor: i64) -> Money {
    Money {
        amount_minor,
        currency: "USD".into(),
    }
}

fn run(events: &[Event]) -> (Saga, Vec<Command>) {
    let (mut saga, mut commands) = start(usd(1000));
    for e in events {
        let d = decide(&saga, e);
        commands.extend(d.commands);
        saga = d.saga;
    }
    (saga, commands)
}

fn names(commands: &[Command]) -> Vec<&'static str> {
    commands.iter().map(Command::name).collect()
}

#[test]
fn the_happy_path_reserves_opens_a_session_captures_commits_and_completes() {
    let (saga, commands) = run(&[
        Event::StockReserved,
        Event::PaymentSessionCreated,
        Event::PaymentAuthorized { amount: usd(1000) },
        Event::PaymentCaptured { amount: usd(1000) },
        Event::StockCommitted,
    ]);
    assert_eq!(saga.state, State::Completed);
    assert_eq!(
        names(&commands),
        [
            "ReserveStock",
            "CreatePaymentSession",
            "CapturePayment",
            "CommitStock"
        ]
    );
}

#[test]
fn no_stock_rejects_without_compensation() {
    let (saga, commands) = run(&[Event::StockReservationFailed {
        reason: "short".into(),
    }]);
    assert_eq!(saga.state, State::Rejected);
    assert_eq!(names(&commands), ["ReserveStock"]);
}

#[test]
fn a_declined_or_expired_payment_releases_stock_and_voids() {
    for last in [
        Event::PaymentDeclined {
            reason: "card".into(),
        },
        Event::Timeout {
            state: State::PaymentSessionCreated,
        },
    ] {
        let (saga, commands) = run(&[Event::StockReserved, Event::PaymentSessionCreated, last]);
        assert_eq!(saga.state, State::Cancelled);
        assert_eq!(names(&commands)[2..], ["ReleaseStock", "VoidPayment"]);
    }
}

#[test]
fn a_failed_capture_voids_and_releases() {
    let (saga, commands) = run(&[
        Event::StockReserved,
        Event::PaymentSessionCreated,
        Event::PaymentAuthorized { amount: usd(1000) },
        Event::PaymentCaptureFailed {
            reason: "psp".into(),
        },
    ]);
    assert_eq!(saga.state, State::Cancelled);
    assert_eq!(names(&commands)[3..], ["VoidPayment", "ReleaseStock"]);
}

#[test]
fn an_amount_mismatch_refunds_releases_and_asks_for_review() {
    let (saga, commands) = run(&[
        Event::StockReserved,
        Event::PaymentSessionCreated,
        Event::PaymentAuthorized { amount: usd(999) },
    ]);
    assert_eq!(saga.state, State::RequiresReview);
    assert_eq!(names(&commands)[2..], ["RefundPayment", "ReleaseStock"]);
}

#[test]
fn a_late_authorization_after_expiry_is_refunded_once() {
    let (saga, commands) = run(&[
        Event::StockReserved,
        Event::PaymentSessionCreated,
        Event::Timeout {
            state: State::PaymentSessionCreated,
        },
        Event::PaymentAuthorized { amount: usd(1000) },
        Event::PaymentAuthorized { amount: usd(1000) },
        Event::PaymentCaptured { amount: usd(1000) },
    ]);
    assert_eq!(saga.state, State::Cancelled);
    assert_eq!(
        names(&commands)
            .iter()
            .filter(|c| **c == "RefundPayment")
            .count(),
        1
    );
    assert!(!names(&commands).contains(&"CapturePayment"));
}

#[test]
fn a_stale_deadline_is_ignored() {
    let (saga, _) = run(&[
        Event::StockReserved,
        Event::Timeout {
            state: State::Initiated,
        },
    ]);
    assert_eq!(saga.state, State::StockReserved);
}

#[test]
fn a_commit_that_keeps_timing_out_is_retried_then_reviewed() {
    let mut events = vec![
        Event::StockReserved,
        Event::PaymentSessionCreated,
        Event::PaymentAuthorized { amount: usd(1000) },
        Event::PaymentCaptured { amount: usd(1000) },
    ];
    events.extend((0..4).map(|_| Event::Timeout {
        state: State::Captured,
    }));
    let (saga, commands) = run(&events);
    assert_eq!(saga.state, State::RequiresReview);
    assert_eq!(
        names(&commands)
            .iter()
            .filter(|c| **c == "CommitStock")
            .count(),
        4
    );
}

fn money() -> impl Strategy<Value = Money> {
    prop_oneof![4 => Just(usd(1000)), 1 => Just(usd(999)), 1 => Just(Money { amount_minor: 1000, currency: "EUR".into() })]
}

fn event() -> impl Strategy<Value = Event> {
    let state = prop::sample::select(ALL_STATES.to_vec());
    prop_oneof![
        Just(Event::StockReserved),
        Just(Event::StockReservationFailed {
            reason: "short".into()
        }),
        Just(Event::StockCommitted),
        Just(Event::PaymentSessionCreated),
        Just(Event::PaymentSessionFailed {
            reason: "psp".into()
        }),
        money().prop_map(|amount| Event::PaymentAuthorized { amount }),
        Just(Event::PaymentDeclined {
            reason: "card".into()
        }),
        money().prop_map(|amount| Event::PaymentCaptured { amount }),
        Just(Event::PaymentCaptureFailed {
            reason: "psp".into()
        }),
        state.prop_map(|state| Event::Timeout { state }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    /// Random sequences, duplicates, reorderings and late events included.
    #[test]
    fn any_event_sequence_keeps_the_saga_safe(events in prop::collection::vec(event(), 0..40)) {
        let timeouts = Timeouts::default();
        let (mut saga, mut issued) = start(usd(1000));
        for e in &events {
            let before = saga.state;
            let d = decide(&saga, e);
            // Terminal states absorb: nothing moves a finished saga.
            if before.is_terminal() {
                prop_assert_eq!(d.saga.state, before);
            }
            // A cancelled payment is never captured afterwards.
            let stopped = issued.iter().any(|c| matches!(c, Command::VoidPayment | Command::RefundPayment { .. }));
            prop_assert!(!(stopped && d.commands.contains(&Command::CapturePayment)), "capture after void/refund: {:?}", events);
            issued.extend(d.commands.clone());
            saga = d.saga;
            // Never stuck: every state that waits has a deadline.
            prop_assert!(saga.state.is_terminal() || timeouts.for_state(saga.state).is_some());
        }
        // Capture is asked for at most once per order.
        prop_assert!(issued.iter().filter(|c| **c == Command::CapturePayment).count() <= 1);
        // Completed means paid the full total and stock committed, with nothing undone.
        if saga.state == State::Completed {
            prop_assert!(!issued.iter().any(Command::is_compensation));
        }
    }
}
