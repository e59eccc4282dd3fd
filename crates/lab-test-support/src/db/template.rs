//! The template every test database is cloned from: built once per set of migrations, by one
//! process at a time, marked complete only at the end; outdated ones are swept.

use std::time::Duration;

use anyhow::Context;
use lab_db::bootstrap::{self, SCHEMA_SERVICES, STATIC_PASSWORD};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::{ServiceMigrator, connect_admin, ddl, ident, literal, login_settings, unix_now};

/// Advisory-lock key (cluster-wide) serialising template builds across test processes.
const TEMPLATE_LOCK: i64 = 7_270_100;

/// Bumped when the bootstrap itself changes, so templates built by older code are not reused.
const TEMPLATE_FORMAT: u64 = 1;

/// `lab_tpl_<16 hex>`: a stable hash of everything the template holds.
pub fn template_name(migrators: &[ServiceMigrator]) -> String {
    let mut hash = Fnv64::default();
    hash.u64(TEMPLATE_FORMAT);
    for service in SCHEMA_SERVICES {
        hash.bytes(service.as_bytes());
    }
    let mut sorted: Vec<&ServiceMigrator> = migrators.iter().collect();
    sorted.sort_by_key(|(service, _)| *service);
    for (service, migrator) in sorted {
        hash.bytes(service.as_bytes());
        for m in migrator.iter() {
            hash.u64(m.version as u64);
            hash.bytes(m.description.as_bytes());
            hash.bytes(&m.checksum);
        }
    }
    format!("lab_tpl_{:016x}", hash.0)
}

/// FNV-1a: stable across processes and toolchains, unlike `DefaultHasher`.
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }

    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

/// `Some(true)` when the template exists and is complete, `Some(false)` when a build was left
/// half-done, `None` when there is none.
async fn template_state(conn: &mut PgConnection, name: &str) -> anyhow::Result<Option<bool>> {
    let row: Option<bool> =
        sqlx::query_scalar("SELECT datistemplate FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row)
}

pub(super) async fn ensure_template(
    admin: &PgConnectOptions,
    migrators: &[ServiceMigrator],
) -> anyhow::Result<String> {
    let name = template_name(migrators);
    let mut conn = connect_admin(admin, "postgres").await?;
    if template_state(&mut conn, &name).await? == Some(true) {
        let _ = conn.close().await;
        return Ok(name);
    }
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut conn)
        .await?;
    let built = async {
        // Another process may have built it while this one waited for the lock.
        match template_state(&mut conn, &name).await? {
            Some(true) => return Ok(()),
            Some(false) => {
                ddl(
                    &mut conn,
                    format!("DROP DATABASE {} WITH (FORCE)", ident(&name)),
                )
                .await?
            }
            None => {}
        }
        build_template(admin, &mut conn, &name, migrators).await
    }
    .await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    built.with_context(|| format!("building the test template database {name}"))?;
    Ok(name)
}

async fn build_template(
    admin: &PgConnectOptions,
    conn: &mut PgConnection,
    name: &str,
    migrators: &[ServiceMigrator],
) -> anyhow::Result<()> {
    ddl(conn, format!("CREATE DATABASE {}", ident(name))).await?;
    let mut tpl = connect_admin(admin, name).await?;
    for service in SCHEMA_SERVICES {
        bootstrap::ensure_service_schema(&mut tpl, service).await?;
        bootstrap::ensure_static_login(&mut tpl, service, STATIC_PASSWORD).await?;
        bootstrap::grant_connect(&mut tpl, name, service).await?;
    }
    let _ = tpl.close().await;
    // Each service migrates as its own login, exactly as it does at start-up, so every object is
    // owned by its owner role.
    for (service, migrator) in migrators {
        let settings = login_settings(admin, name, service);
        let pool = lab_db::connect(
            &settings,
            service,
            "lab-test-template",
            "LAB_TEST_PG_ADMIN_URL",
        )
        .await?;
        lab_db::migrate(&pool, migrator, service).await?;
        pool.close().await;
    }
    // Marked complete last; no connections allowed, so cloning never meets a straggler. The
    // comment records when, for the sweep of outdated templates.
    ddl(
        conn,
        format!(
            "COMMENT ON DATABASE {} IS {}",
            ident(name),
            literal(&format!("{BUILT_AT}{}", unix_now().as_secs()))
        ),
    )
    .await?;
    ddl(
        conn,
        format!(
            "ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false",
            ident(name)
        ),
    )
    .await?;
    sweep_old_templates(conn, name).await;
    Ok(())
}

/// Prefix of a template's comment, followed by its build time in Unix seconds.
const BUILT_AT: &str = "lab test template built at ";

/// A template built this long ago by other code (another branch, an older migration) is
/// dropped when a new one is built; if something still wants it, it is rebuilt in a second.
const TEMPLATE_KEPT_FOR: Duration = Duration::from_secs(24 * 3_600);

/// Drops the templates of older migrations so they do not pile up on the server. Runs under
/// the template lock, so no template is being built meanwhile.
async fn sweep_old_templates(conn: &mut PgConnection, current: &str) {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT datname::text, shobj_description(oid, 'pg_database') FROM pg_database \
         WHERE datname LIKE 'lab\\_tpl\\_%' AND datname <> $1",
    )
    .bind(current)
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default();
    let cutoff = unix_now().saturating_sub(TEMPLATE_KEPT_FOR).as_secs();
    for (name, comment) in rows {
        let built = comment
            .as_deref()
            .and_then(|c| c.strip_prefix(BUILT_AT))
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0);
        if built < cutoff {
            let _ = ddl(
                conn,
                format!("ALTER DATABASE {} WITH IS_TEMPLATE false", ident(&name)),
            )
            .await;
            let _ = ddl(
                conn,
                format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(&name)),
            )
            .await;
        }
    }
}
