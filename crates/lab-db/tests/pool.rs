//! The pool pings a connection before handing it out only when it sat idle (sqlx's ping on every
//! acquire is off): one that died while idle must still be replaced, not handed out.

use std::time::Duration;

use lab_db::sqlx::{self, PgConnection};
use lab_test_support::{TestEnv, eventually};

/// Longer than the pool's idle threshold (1 s) before it pings. A real sleep: the pool measures
/// idleness with `std::time::Instant`, which a paused tokio clock does not move.
const IDLE: Duration = Duration::from_millis(1_300);

/// Bounds the wait for a terminated backend to be gone.
const WITHIN: Duration = Duration::from_secs(10);

/// The backends of the pool named `app`.
async fn backends(admin: &mut PgConnection, app: &str) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind(app)
    .fetch_all(admin)
    .await
    .expect("pg_stat_activity")
}

#[tokio::test]
async fn a_connection_killed_while_idle_is_replaced_before_it_is_handed_out() {
    // Arrange: a pool of one connection, used once, then idle past the threshold and killed.
    let env = TestEnv::builder().with_database(&[]).start().await;
    let app = format!("ping-{}", env.id());
    let mut settings = env.db().settings("catalog");
    settings.max_connections = 1;
    let pool = lab_db::connect(&settings, "catalog", &app, "LAB_CATALOG__DATABASE__URL")
        .await
        .expect("pool");
    let first: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .expect("first query");
    let mut admin = env.db().admin_connection().await.expect("admin connection");
    tokio::time::sleep(IDLE).await;
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(&mut admin)
        .await
        .expect("terminate");
    let gone = eventually(WITHIN, || {
        let env = env.clone();
        let app = app.clone();
        async move {
            let mut admin = env.db().admin_connection().await.ok()?;
            backends(&mut admin, &app).await.is_empty().then_some(())
        }
    })
    .await;

    // Act: the next transaction, through the cancel-safe opening services use.
    let tx = lab_db::begin(&pool).await;

    // Assert: it runs on a new backend; the dead one was noticed by the ping and closed.
    assert!(killed && gone.is_some(), "the backend was not terminated");
    let mut tx = tx.expect("a transaction on a fresh connection");
    let next: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await
        .expect("query on the replacement");
    assert_ne!(next, first);
}
