//! Bad input and dependencies that are down: at start, and while the service runs.

lab_test_support::fault_tests! {
    service: lab_payments,
    name: "payments",
    helpers: crate::helpers,
    checks: [unreachable_postgres, unreachable_rabbitmq, port_in_use],
}
