//! Leased logins against a real PostgreSQL and a dev OpenBao: forced rotations under a long query
//! and under load, revocation of the old login, and OpenBao going away and coming back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lab_db::credentials::{Stage, sessions_of};
use lab_db::{Database, DbSettings, VaultProbe};
use lab_http::Probe as _;
use lab_test_support::{TestEnv, eventually, require_bao};
use tokio_util::sync::CancellationToken;

/// Bounds every wait for something that happens in milliseconds when it works.
const WITHIN: Duration = Duration::from_secs(20);

async fn env() -> TestEnv {
    TestEnv::builder()
        .with_database(&[])
        .with_vault()
        .start()
        .await
}

async fn open(settings: &DbSettings, env: &TestEnv) -> Database {
    lab_db::open(
        settings,
        "catalog",
        "rotation-test",
        "LAB_CATALOG__DATABASE__URL",
        env.shutdown_token(),
    )
    .await
    .unwrap_or_else(|e| panic!("opening the leased pool: {e}"))
}

async fn role_exists(env: &TestEnv, user: &str) -> bool {
    let mut admin = env.db().admin_connection().await.expect("admin connection");
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(user)
        .fetch_one(&mut admin)
        .await
        .expect("pg_roles")
}

async fn session_user(db: &Database) -> String {
    sqlx::query_scalar("SELECT session_user::text")
        .fetch_one(&db.pool)
        .await
        .expect("session_user")
}

#[tokio::test]
async fn a_long_query_on_the_old_login_completes_across_a_forced_rotation() {
    require_bao!();
    let env = env().await;
    let db = open(&env.vault_database("catalog").await, &env).await;
    let old_user = session_user(&db).await;
    assert_eq!(
        db.credentials.status().username.as_deref(),
        Some(old_user.as_str())
    );

    let pool = db.pool.clone();
    let long = tokio::spawn(async move {
        sqlx::query_scalar::<_, i32>("SELECT 42 FROM pg_sleep(1.5)")
            .fetch_one(&pool)
            .await
    });
    // The service's own login cannot read other sessions' queries; the superuser can.
    let running = eventually(WITHIN, || {
        let env = env.clone();
        let old_user = old_user.clone();
        async move {
            let mut admin = env.db().admin_connection().await.ok()?;
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE usename = $1 AND query LIKE 'SELECT 42 FROM pg_sleep%' AND state = 'active'",
            )
            .bind(&old_user)
            .fetch_one(&mut admin)
            .await
            .ok()?;
            (n > 0).then_some(())
        }
    })
    .await;
    assert!(running.is_some(), "the long query never started");

    let report = db.credentials.rotate().await.expect("forced rotation");
    let answer = long
        .await
        .expect("task")
        .expect("the long query on the old login failed");
    assert_eq!(answer, 42);

    assert_eq!(report.old_user, old_user);
    assert_ne!(report.new_user, old_user);
    assert!(
        report.drained,
        "the old login's sessions should have ended on their own"
    );
    assert!(report.revoked);
    let stages: Vec<Stage> = report.stages.iter().map(|s| s.stage).collect();
    assert_eq!(
        stages,
        [
            Stage::Leased,
            Stage::PoolSwapped,
            Stage::OldDrained,
            Stage::OldRevoked
        ]
    );
    assert_eq!(session_user(&db).await, report.new_user);
    assert!(
        !role_exists(&env, &old_user).await,
        "the old user should be dropped"
    );
    let status = db.credentials.status();
    assert_eq!(status.rotations, 1);
    assert_eq!(status.state, "ok");
    assert_eq!(status.last_rotation, Some(report));
}

#[tokio::test]
async fn a_load_of_queries_sees_no_error_through_three_forced_rotations() {
    require_bao!();
    let env = env().await;
    let db = open(&env.vault_database("catalog").await, &env).await;
    let stop = CancellationToken::new();
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..8 {
        let (pool, stop, ok, failed) = (db.pool.clone(), stop.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                // Plain queries and transactions, some lasting a few ms.
                let result = if worker % 2 == 0 {
                    sqlx::query("SELECT pg_sleep(0.005)")
                        .execute(&pool)
                        .await
                        .map(|_| ())
                } else {
                    async {
                        let mut tx = lab_db::begin(&pool).await?;
                        sqlx::query("SELECT 1").execute(&mut *tx).await?;
                        sqlx::query("SELECT pg_sleep(0.002)")
                            .execute(&mut *tx)
                            .await?;
                        tx.commit().await
                    }
                    .await
                };
                match result {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("query failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let mut old_users = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let report = db.credentials.rotate().await.expect("forced rotation");
        assert!(report.revoked);
        old_users.push(report.old_user);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    for w in workers {
        w.await.expect("worker");
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "queries failed during rotations"
    );
    assert!(ok.load(Ordering::Relaxed) > 100, "the load did not run");
    assert_eq!(db.credentials.status().rotations, 3);
    for user in old_users {
        assert!(!role_exists(&env, &user).await, "{user} should be dropped");
        assert_eq!(sessions_of(&db.pool, &user).await.expect("sessions"), 0);
    }
}

#[tokio::test]
async fn with_openbao_stopped_the_service_serves_degraded_and_recovers_when_it_returns() {
    require_bao!();
    let env = env().await;
    let db = open(&env.vault_database("catalog").await, &env).await;
    let first_user = session_user(&db).await;
    let probe = VaultProbe(db.credentials.clone());
    assert!(probe.check().await.is_ok());

    env.vault().stop().await;
    assert!(
        db.credentials.rotate().await.is_err(),
        "no lease without OpenBao"
    );
    let status = db.credentials.status();
    assert_eq!(status.state, "degraded");
    assert!(status.last_error.is_some());
    assert!(probe.check().await.is_err());
    assert!(!probe.critical());
    // Still serving on the current login.
    assert_eq!(session_user(&db).await, first_user);

    env.vault()
        .resume()
        .await
        .unwrap_or_else(|e| panic!("restarting OpenBao: {e}"));
    env.configure_vault_engine().await;
    let report = db
        .credentials
        .rotate()
        .await
        .expect("rotation after OpenBao returned");
    assert_ne!(report.new_user, first_user);
    assert_eq!(db.credentials.status().state, "ok");
    assert!(probe.check().await.is_ok());
    assert_eq!(session_user(&db).await, report.new_user);

    // The restarted dev server forgot the first lease, so nothing dropped its user: clean up.
    let mut admin = env.db().admin_connection().await.expect("admin");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP ROLE IF EXISTS \"{first_user}\""
    )))
    .execute(&mut admin)
    .await
    .expect("dropping the forgotten user");
}

#[tokio::test]
async fn a_shortened_ttl_rotates_the_login_on_its_own() {
    require_bao!();
    let env = env().await;
    let db = open(&env.vault_database("catalog").await, &env).await;
    db.credentials
        .set_ttl(Duration::from_secs(5))
        .await
        .expect("demo ttl");
    let status = db.credentials.status();
    assert_eq!(status.ttl_s, Some(5));
    assert!(status.ttl_left_s.is_some_and(|s| s <= 5));
    let mut changes = db.credentials.subscribe();
    let rotated = tokio::time::timeout(
        Duration::from_secs(30),
        changes
            .wait_for(|s| s.rotations >= 1 && s.last_rotation.as_ref().is_some_and(|r| r.revoked)),
    )
    .await;
    assert!(rotated.is_ok(), "no rotation within 30 s of a 5 s TTL");
    assert_eq!(
        db.credentials
            .status()
            .last_rotation
            .map(|r| r.reason)
            .as_deref(),
        Some("lease_age")
    );
}

#[tokio::test]
async fn without_openbao_the_static_login_is_used_and_reported_disabled() {
    let env = TestEnv::builder().with_database(&[]).start().await;
    let db = open(&env.database("catalog"), &env).await;
    assert_eq!(session_user(&db).await, "lab_catalog");
    let status = db.credentials.status();
    assert_eq!(status.state, "disabled");
    assert_eq!(status.source, "static");
    assert!(matches!(
        db.credentials.rotate().await,
        Err(lab_db::credentials::CredentialError::Disabled)
    ));
}

#[tokio::test]
async fn a_lease_is_renewed_and_rotated_when_a_renewal_is_capped_by_max_ttl() {
    require_bao!();
    let env = env().await;
    let settings = env.vault_database("catalog").await;
    // A role of 4 s leases renewable up to 10 s: renewals at half-life, the third one capped.
    let role = lab_db::credentials::engine_role(
        "lab",
        "catalog",
        &env.db().server().1,
        Duration::from_secs(4),
        Duration::from_secs(10),
    );
    env.vault()
        .client()
        .write_db_role("database", "catalog", &role)
        .await
        .expect("short role");
    let db = open(&settings, &env).await;
    let first = session_user(&db).await;
    let mut changes = db.credentials.subscribe();
    let rotated = tokio::time::timeout(
        Duration::from_secs(30),
        changes.wait_for(|s| s.last_rotation.as_ref().is_some_and(|r| r.revoked)),
    )
    .await
    .map(|s| s.map(|s| s.clone()));
    let status = match rotated {
        Ok(Ok(status)) => status,
        other => panic!("no rotation within 30 s of a 10 s max_ttl: {other:?}"),
    };
    let report = status.last_rotation.expect("report");
    assert_eq!(report.reason, "capped");
    assert_eq!(report.old_user, first);
    assert!(!role_exists(&env, &first).await);
    assert_eq!(session_user(&db).await, report.new_user);
}
