//! A fresh PostgreSQL database per test, cloned from a template that already holds the bootstrap
//! (owner roles, schemas, static logins) and the migrations of the services under test.
//!
//! The template's name is a hash of the migrations it holds (service, version, checksum), so a
//! changed migration builds a new template and an unchanged one is reused by every later run.
//! Building is serialised across processes (nextest runs each test in its own) by a PostgreSQL
//! advisory lock; a template is only marked usable (`ALLOW_CONNECTIONS false`, `IS_TEMPLATE`)
//! once it is complete, so a crashed build is noticed and redone.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use lab_config::SecretString;
use lab_db::DbSettings;
use lab_db::bootstrap::{self, SCHEMA_SERVICES, STATIC_PASSWORD};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

mod template;

use template::ensure_template;
pub use template::template_name;

/// The server every test uses unless `LAB_TEST_PG_ADMIN_URL` names another (a superuser).
const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Advisory-lock key (cluster-wide) for sweeping leftovers; templates use the next one.
const SWEEP_LOCK: i64 = 7_270_101;

/// A test database left behind by a killed test process is dropped once it is this old; no test
/// runs for an hour, so nothing still in use is touched.
const STALE_AFTER: Duration = Duration::from_secs(3_600);

/// How long to keep retrying a clone while something else is connected to the template
/// (PostgreSQL's "source database is being accessed by other users"): an autovacuum worker or a
/// finishing build leaves within seconds.
const CLONE_RETRY_FOR: Duration = Duration::from_secs(20);

/// The migrations of one service: `("catalog", &lab_catalog::MIGRATOR)`.
pub type ServiceMigrator = (&'static str, &'static Migrator);

/// One test's own database; dropped (best effort) when this value is.
pub struct TestDb {
    /// The database's name, `lab_test_<unix seconds>_<random>`.
    pub name: String,
    /// The administrator's options, pointing at the server (any database).
    admin: PgConnectOptions,
}

impl TestDb {
    /// Clones a fresh database from the template holding `migrators`, building that template
    /// first if no process has yet.
    pub async fn new(migrators: &[ServiceMigrator]) -> anyhow::Result<Self> {
        let admin = admin_options()?;
        let mut conn = connect_admin(&admin, "postgres").await?;
        sweep_stale(&mut conn).await;
        let name = format!(
            "lab_test_{}_{:08x}",
            unix_now().as_secs(),
            rand::random::<u32>()
        );
        // A second round only when the template vanished between check and clone (another
        // process swept it as outdated): it is rebuilt.
        let mut rounds = 0;
        loop {
            let template = ensure_template(&admin, migrators).await?;
            match clone_with_retry(&mut conn, &name, &template).await {
                Err(CloneError::TemplateGone) if rounds == 0 => rounds += 1,
                Err(CloneError::TemplateGone) => {
                    anyhow::bail!("the template {template} keeps disappearing")
                }
                Err(CloneError::Other(e)) => return Err(e),
                Ok(()) => break,
            }
        }
        // Database-level grants are not copied from a template.
        for service in SCHEMA_SERVICES {
            bootstrap::grant_connect(&mut conn, &name, service).await?;
        }
        let _ = conn.close().await;
        Ok(Self { name, admin })
    }

    /// Database settings for `service`'s static login on this test's database.
    pub fn settings(&self, service: &str) -> DbSettings {
        login_settings(&self.admin, &self.name, service)
    }

    /// `host:port` of the server and the administrator's user name.
    pub fn server(&self) -> (String, String) {
        (
            format!("{}:{}", self.admin.get_host(), self.admin.get_port()),
            self.admin.get_username().to_owned(),
        )
    }

    /// A superuser connection to this test's database, for assertions on the catalog.
    pub async fn admin_connection(&self) -> anyhow::Result<PgConnection> {
        connect_admin(&self.admin, &self.name).await
    }
}

/// `service`'s static login on `database` of the admin's server.
fn login_settings(admin: &PgConnectOptions, database: &str, service: &str) -> DbSettings {
    let url = format!(
        "postgres://{}:{STATIC_PASSWORD}@{}:{}/{database}",
        bootstrap::login_role(service),
        admin.get_host(),
        admin.get_port(),
    );
    DbSettings {
        url: SecretString::new(url),
        ..DbSettings::local(service)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; a short-lived thread
        // with its own runtime does the async work.
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = connect_admin(&admin, "postgres").await {
                    // FORCE ends the sessions of services that are still shutting down.
                    let _ = ddl(
                        &mut conn,
                        format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(&name)),
                    )
                    .await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = dropper.join();
    }
}

fn admin_options() -> anyhow::Result<PgConnectOptions> {
    let url = std::env::var("LAB_TEST_PG_ADMIN_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
    PgConnectOptions::from_str(&url)
        .with_context(|| format!("LAB_TEST_PG_ADMIN_URL={url:?} is not a PostgreSQL URL"))
}

async fn connect_admin(admin: &PgConnectOptions, database: &str) -> anyhow::Result<PgConnection> {
    let options = admin.clone().database(database);
    PgConnection::connect_with(&options).await.with_context(|| {
        format!(
            "tests need PostgreSQL at {}:{} as a superuser (set LAB_TEST_PG_ADMIN_URL to use another)",
            admin.get_host(),
            admin.get_port()
        )
    })
}

enum CloneError {
    TemplateGone,
    Other(anyhow::Error),
}

async fn clone_with_retry(
    conn: &mut PgConnection,
    name: &str,
    template: &str,
) -> Result<(), CloneError> {
    let deadline = tokio::time::Instant::now() + CLONE_RETRY_FOR;
    loop {
        let result = ddl(
            conn,
            format!(
                "CREATE DATABASE {} TEMPLATE {}",
                ident(name),
                ident(template)
            ),
        )
        .await;
        match result {
            Ok(()) => return Ok(()),
            Err(sqlx::Error::Database(e))
                // 55006 object_in_use: "source database … is being accessed by other users".
                if e.code().as_deref() == Some("55006") && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // 3D000 invalid_catalog_name: the template no longer exists.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
                return Err(CloneError::TemplateGone);
            }
            Err(e) => {
                return Err(CloneError::Other(
                    anyhow::Error::new(e).context(format!("cloning {template} into {name}")),
                ));
            }
        }
    }
}

/// Drops test databases left by killed test processes. One process sweeps at a time; the others
/// skip rather than wait.
async fn sweep_stale(conn: &mut PgConnection) {
    let Ok(true) = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
        .bind(SWEEP_LOCK)
        .fetch_one(&mut *conn)
        .await
    else {
        return;
    };
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'lab\\_test\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    let cutoff = unix_now().saturating_sub(STALE_AFTER).as_secs();
    for name in names {
        let born = name
            .split('_')
            .nth(2)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        if born < cutoff {
            let _ = ddl(
                conn,
                format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(&name)),
            )
            .await;
        }
    }
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(SWEEP_LOCK)
        .execute(&mut *conn)
        .await;
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// DDL takes no bind parameters; every identifier in it is quoted by [`ident`].
async fn ddl(conn: &mut PgConnection, sql: String) -> Result<(), sqlx::Error> {
    conn.execute(sqlx::raw_sql(AssertSqlSafe(sql))).await?;
    Ok(())
}

impl TestDb {
    /// Every table, index, sequence and view in `schema` whose owner is not `<schema>_owner`, as
    /// `(name, owner)`; empty when ownership is right.
    pub async fn objects_not_owned_by_owner(
        &self,
        schema: &str,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let mut conn = self.admin_connection().await?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT c.relname::text, pg_get_userbyid(c.relowner)::text \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND pg_get_userbyid(c.relowner) <> $2 \
             ORDER BY 1",
        )
        .bind(schema)
        .bind(bootstrap::owner_role(schema))
        .fetch_all(&mut conn)
        .await?;
        let _ = conn.close().await;
        Ok(rows)
    }

    /// The owner of `schema._sqlx_migrations`, from `pg_tables`.
    pub async fn migrations_table_owner(&self, schema: &str) -> anyhow::Result<Option<String>> {
        let mut conn = self.admin_connection().await?;
        let owner: Option<String> = sqlx::query_scalar(
            "SELECT tableowner::text FROM pg_tables \
             WHERE schemaname = $1 AND tablename = '_sqlx_migrations'",
        )
        .bind(schema)
        .fetch_optional(&mut conn)
        .await?;
        let _ = conn.close().await;
        Ok(owner)
    }
}
