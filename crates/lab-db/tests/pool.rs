//! The pool pings a connection before handing it out only when it sat idle (sqlx's ping on every
//! acquire is off): one that died while idle must still be replaced, not handed out, by the
//! static login's pool and by a leased login's (whose acquire check also carries the rotation
//! gate).

use std::time::Duration;

use lab_db::sqlx::{self, PgConnection, PgPool};
use lab_db::{Database, DbSettings};
use lab_test_support::{TestEnv, eventually, require_bao};

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

/// Uses `pool`'s one connection, lets it sit idle past the threshold, terminates its backend,
/// then opens a transaction: it must run on a new backend.
async fn a_connection_killed_while_idle_is_replaced(env: &TestEnv, pool: &PgPool, app: &str) {
    // Arrange: the one connection used once, then idle past the threshold and killed.
    let first: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
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
        async move {
            let mut admin = env.db().admin_connection().await.ok()?;
            backends(&mut admin, app).await.is_empty().then_some(())
        }
    })
    .await;

    // Act: the next transaction, through the cancel-safe opening services use.
    let tx = lab_db::begin(pool).await;

    // Assert: it runs on a new backend; the dead one was noticed by the ping and closed.
    assert!(killed && gone.is_some(), "the backend was not terminated");
    let mut tx = tx.expect("a transaction on a fresh connection");
    let next: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await
        .expect("query on the replacement");
    assert_ne!(next, first);
}

/// `settings` for a pool of one connection, so the next borrower gets the killed one's.
fn one_connection(mut settings: DbSettings) -> DbSettings {
    settings.max_connections = 1;
    settings
}

#[tokio::test]
async fn a_connection_killed_while_idle_is_replaced_before_it_is_handed_out() {
    let env = TestEnv::builder().with_database(&[]).start().await;
    let app = format!("ping-{}", env.id());
    let settings = one_connection(env.db().settings("catalog"));
    let pool = lab_db::connect(&settings, "catalog", &app, "LAB_CATALOG__DATABASE__URL")
        .await
        .expect("pool");

    a_connection_killed_while_idle_is_replaced(&env, &pool, &app).await;
}

#[tokio::test]
async fn a_leased_login_connection_killed_while_idle_is_replaced_before_it_is_handed_out() {
    require_bao!();
    let env = TestEnv::builder()
        .with_database(&[])
        .with_vault()
        .start()
        .await;
    let app = format!("ping-leased-{}", env.id());
    let settings = one_connection(env.vault_database("catalog").await);
    let Database { pool, .. } = lab_db::open(
        &settings,
        "catalog",
        &app,
        "LAB_CATALOG__DATABASE__URL",
        env.shutdown_token(),
    )
    .await
    .unwrap_or_else(|e| panic!("opening the leased pool: {e}"));

    a_connection_killed_while_idle_is_replaced(&env, &pool, &app).await;
}
