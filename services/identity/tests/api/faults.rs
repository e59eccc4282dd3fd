//! Bad input and dependencies that are down: at start, and while the service runs.

lab_test_support::fault_tests! {
    service: lab_identity,
    name: "identity",
    helpers: crate::helpers,
    checks: [unreachable_postgres, redis_down_and_back, port_in_use],
}
