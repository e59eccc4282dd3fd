//! A transaction whose opening is cancelled while PostgreSQL runs its `BEGIN` (a client hanging up
//! on a request, a caller's timeout) must not leave the pooled connection inside a transaction.

use std::pin::pin;
use std::task::Poll;

use lab_db::sqlx::postgres::PgPoolOptions;
use lab_db::sqlx::{self, PgConnection, PgPool};
use lab_test_support::TestEnv;

/// Openings tried before giving up on catching one between its `BEGIN` and the answer; each
/// attempt catches it unless the answer was read in the very poll that sent it. Without the ping
/// on every acquire the window is one round trip shorter, and on a loaded machine (the whole
/// suite at once) 50 attempts once all missed it; an attempt costs about a millisecond.
const ATTEMPTS: usize = 500;
/// Polls of one opening: acquiring (a ping only after a second idle) and `BEGIN` take a handful.
const POLLS: usize = 1_000;

/// The states PostgreSQL shows for the sessions of the pool named `app`.
async fn states(admin: &mut PgConnection, app: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT state FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind(app)
    .fetch_all(admin)
    .await
    .expect("pg_stat_activity")
}

/// Polls a fresh opening one step at a time and drops it as soon as PostgreSQL shows the pool's
/// session inside the transaction its `BEGIN` opened (the answer not yet read). False when every
/// opening completed first.
async fn cancel_an_opening_mid_begin(pool: &PgPool, admin: &mut PgConnection, app: &str) -> bool {
    for _ in 0..ATTEMPTS {
        let mut opening = pin!(lab_db::begin(pool));
        for _ in 0..POLLS {
            if let Poll::Ready(begun) = futures::poll!(opening.as_mut()) {
                drop(begun.expect("begin"));
                // Wait for the dropped transaction's connection to come back rolled back.
                drop(pool.acquire().await.expect("acquire"));
                break;
            }
            if states(admin, app).await == ["idle in transaction"] {
                return true;
            }
        }
    }
    false
}

#[tokio::test]
async fn a_begin_cancelled_during_its_round_trip_leaves_the_pooled_connection_idle() {
    // Arrange: a pool of one connection, so the next borrower gets the cancelled one's.
    let env = TestEnv::builder().with_database(&[]).start().await;
    let app = format!("cancel-{}", env.id());
    let settings = env.db().settings("catalog");
    let options = lab_db::connect_options(&settings.url, "catalog", &app).expect("options");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("pool");
    let mut admin = env.db().admin_connection().await.expect("admin connection");
    assert_eq!(states(&mut admin, &app).await, ["idle"]);

    // Act
    assert!(
        cancel_an_opening_mid_begin(&pool, &mut admin, &app).await,
        "no opening could be caught between its BEGIN and the answer"
    );
    let next = pool
        .acquire()
        .await
        .expect("acquire after the cancellation");

    // Assert: the connection handed out next is outside any transaction.
    assert_eq!(states(&mut admin, &app).await, ["idle"]);
    drop(next);
}
