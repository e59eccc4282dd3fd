//! Bad input and dependencies that are down: at start, and while the service runs.

lab_test_support::fault_tests! {
    service: lab_catalog,
    name: "catalog",
    helpers: crate::helpers,
    checks: [unreachable_postgres, unreachable_rabbitmq, redis_down_and_back, port_in_use],
}
