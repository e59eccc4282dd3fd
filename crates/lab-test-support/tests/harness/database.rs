//! Per-test databases cloned from a migrated template.

use std::borrow::Cow;

use lab_test_support::db::template_name;
use lab_test_support::{ServiceMigrator, TestDb, TestEnv};
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// A fixture migrator standing in for a service's own ("orders" owns a schema).
static FIXTURE: Migrator = sqlx::migrate!("tests/fixtures/migrations");
const WITH_FIXTURE: &[ServiceMigrator] = &[("orders", &FIXTURE)];

async fn database_exists(db: &TestDb, name: &str) -> bool {
    let mut conn = db.admin_connection().await.expect("admin connection");
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .expect("pg_database query")
}

#[tokio::test]
async fn a_test_database_holds_the_migrations_owned_by_the_owner_role() {
    let env = TestEnv::builder().with_database(WITH_FIXTURE).start().await;

    let mut conn = env.db().admin_connection().await.unwrap();
    let owner: String = sqlx::query_scalar(
        "SELECT tableowner::text FROM pg_tables WHERE schemaname = 'orders' AND tablename = 'widgets'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let strays = env.db().objects_not_owned_by_owner("orders").await.unwrap();

    assert_eq!(owner, "orders_owner");
    assert_eq!(strays, Vec::<(String, String)>::new());
    assert_eq!(
        env.db()
            .migrations_table_owner("orders")
            .await
            .unwrap()
            .as_deref(),
        Some("orders_owner")
    );
}

#[tokio::test]
async fn the_service_login_can_use_its_schema_in_the_clone() {
    let env = TestEnv::builder().with_database(WITH_FIXTURE).start().await;
    let settings = env.database("orders");

    let pool = lab_db::connect(&settings, "orders", "harness-test", "TEST")
        .await
        .unwrap();
    sqlx::query("INSERT INTO widgets (name) VALUES ('a')")
        .execute(&pool)
        .await
        .unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM widgets")
        .fetch_one(&pool)
        .await
        .unwrap();

    assert_eq!(count, 1);
    pool.close().await;
}

#[tokio::test]
async fn two_environments_never_share_a_database_or_a_prefix() {
    let first = TestEnv::builder().with_database(WITH_FIXTURE).start().await;
    let second = TestEnv::builder().with_database(WITH_FIXTURE).start().await;

    assert_ne!(first.db().name, second.db().name);
    assert_ne!(first.redis_prefix(), second.redis_prefix());
    assert_ne!(first.amqp_prefix(), second.amqp_prefix());
    assert!(first.amqp_prefix().starts_with("test."));
}

#[tokio::test]
async fn a_test_database_is_dropped_with_its_environment() {
    let keeper = TestEnv::builder().with_database(WITH_FIXTURE).start().await;
    let env = TestEnv::builder().with_database(WITH_FIXTURE).start().await;
    let name = env.db().name.clone();
    assert!(database_exists(keeper.db(), &name).await);

    drop(env);

    assert!(!database_exists(keeper.db(), &name).await);
}

#[test]
fn the_template_name_is_stable_and_follows_every_migration_change() {
    let changed = Box::leak(Box::new(Migrator::with_migrations(vec![Migration::new(
        1,
        Cow::Borrowed("widgets"),
        MigrationType::Simple,
        "CREATE TABLE widgets (id bigint PRIMARY KEY)".into_sql_str(),
        false,
    )])));

    let base = template_name(WITH_FIXTURE);

    assert_eq!(base, template_name(WITH_FIXTURE));
    assert!(base.starts_with("lab_tpl_") && base.len() < 63, "{base}");
    assert_ne!(base, template_name(&[]));
    assert_ne!(base, template_name(&[("catalog", &FIXTURE)]));
    assert_ne!(base, template_name(&[("orders", changed)]));
}
