//! The pass-through bench runs end to end (on a tiny load: its numbers are not asserted).

use lab_faultproxy::bench::{BenchOptions, run};

#[tokio::test]
async fn the_bench_pushes_its_traffic_direct_through_a_bare_relay_and_through_the_proxy() {
    let options = BenchOptions {
        bulk_bytes: 4 * 1024 * 1024,
        round_trips: 200,
        message_bytes: 64,
    };

    let report = run(&options).await.expect("bench");

    for path in [report.direct, report.bare, report.proxied] {
        assert!(
            path.mib_per_s > 0.0 && path.mib_per_s.is_finite(),
            "{report:?}"
        );
        assert!(
            path.round_trip_us > 0.0 && path.round_trip_us.is_finite(),
            "{report:?}"
        );
    }
    assert!(report.to_string().contains("fault proxy"));
}
