//! The real PostgreSQL through a proxy: a query passes, a latency fault slows it by at least the
//! latency, a blackhole makes it time out on the client's own timeout, and lifting the fault
//! lets new queries pass. Read-only queries on the server's `postgres` database, so no
//! per-test database is needed.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use lab_faultproxy::{Direction, Fault};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::time::Instant;

use crate::helpers::{Harness, WAIT};

/// The server every Lab test uses unless `LAB_TEST_PG_ADMIN_URL` names another (as in
/// lab-test-support).
const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The client's own query timeout in the blackhole test: what a service's pool would give up at.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);

/// A proxy in front of the test server, and the options that connect through it.
async fn proxied_postgres() -> (Harness, PgConnectOptions) {
    let url = std::env::var("LAB_TEST_PG_ADMIN_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
    let options = PgConnectOptions::from_str(&url).expect("admin URL");
    let upstream: SocketAddr = tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .expect("resolve PostgreSQL")
        .next()
        .expect("an address for PostgreSQL");
    let h = Harness::new("test→postgres", upstream).await;
    let port = h.proxy.local_addr().port();
    let through = options.host("127.0.0.1").port(port);
    (h, through)
}

async fn connect(options: &PgConnectOptions) -> PgConnection {
    tokio::time::timeout(WAIT, PgConnection::connect_with(options))
        .await
        .expect("connect within the bound")
        .expect("connect through the proxy")
}

async fn one(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(conn)
        .await
        .expect("SELECT 1")
}

#[tokio::test]
async fn a_query_passes_through_the_proxy_and_a_latency_fault_slows_it_by_at_least_the_latency() {
    let (h, options) = proxied_postgres().await;
    let mut conn = connect(&options).await;
    assert_eq!(one(&mut conn).await, 1);

    // Applied to the pooled, already open connection.
    h.apply(Fault::Latency {
        ms: 300,
        jitter_ms: 0,
        direction: Direction::Downstream,
    });
    let started = Instant::now();
    let answer = one(&mut conn).await;
    let elapsed = started.elapsed();

    assert_eq!(answer, 1);
    assert!(elapsed >= Duration::from_millis(300), "took {elapsed:?}");
    let stats = h.proxy.stats();
    assert!(stats.bytes_upstream > 0 && stats.bytes_downstream > 0);
}

#[tokio::test]
async fn a_blackhole_makes_a_query_time_out_on_the_clients_timeout_and_lifting_it_lets_new_queries_pass()
 {
    let (h, options) = proxied_postgres().await;
    let mut held = connect(&options).await;
    assert_eq!(one(&mut held).await, 1);

    h.apply(Fault::Blackhole {
        direction: Direction::Both,
    });
    let during = tokio::time::timeout(
        CLIENT_TIMEOUT,
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&mut held),
    )
    .await;
    assert!(during.is_err(), "a query passed a blackhole: {during:?}");
    // The timed-out connection is in an unknown protocol state; a pool would discard it.
    drop(held);

    assert_eq!(h.chaos.clear(), 1);
    let mut fresh = connect(&options).await;
    assert_eq!(one(&mut fresh).await, 1);
}
