//! Administrative set-up, run by the apphost and the test harness with a privileged connection:
//! the database, and per service its owner role, schema and static login.

use sqlx::{AssertSqlSafe, Executor, PgConnection};

/// Password of the static logins used when OpenBao is not in play. On a trust-auth local server it
/// is never checked; the apphost's private server uses its own generated password instead.
pub const STATIC_PASSWORD: &str = "lab";

/// The services that own a schema, in start-up order.
pub const SCHEMA_SERVICES: [&str; 5] = ["identity", "catalog", "orders", "payments", "checkout"];

/// `catalog` → `catalog_owner`: the NOLOGIN role that owns the schema and everything in it.
pub fn owner_role(service: &str) -> String {
    format!("{service}_owner")
}

/// `catalog` → `lab_catalog`: the static login role (dynamic logins come from OpenBao).
pub fn login_role(service: &str) -> String {
    format!("lab_{service}")
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Runs one DDL statement built from quoted identifiers and literals (DDL takes no parameters).
async fn ddl(admin: &mut PgConnection, sql: String) -> Result<(), sqlx::Error> {
    admin.execute(sqlx::raw_sql(AssertSqlSafe(sql))).await?;
    Ok(())
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Creates database `name` if it does not exist (optionally as a copy of `template`).
pub async fn ensure_database(
    admin: &mut PgConnection,
    name: &str,
    template: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut *admin)
            .await?;
    if exists {
        return Ok(false);
    }
    // DDL takes no bind parameters; identifiers are quoted.
    let sql = match template {
        Some(t) => format!("CREATE DATABASE {} TEMPLATE {}", ident(name), ident(t)),
        None => format!("CREATE DATABASE {}", ident(name)),
    };
    ddl(admin, sql).await?;
    Ok(true)
}

/// Whether `e` is PostgreSQL refusing a concurrent change to a shared catalog row: two sessions
/// altering or creating the same role at once ("tuple concurrently updated", a duplicate role
/// name). Roles are cluster-wide but advisory locks are per database, so bootstraps of two
/// databases can collide; repeating the idempotent step is the fix.
pub fn is_concurrent_catalog_update(e: &sqlx::Error) -> bool {
    let Some(db) = e.as_database_error() else {
        return false;
    };
    matches!(db.code().as_deref(), Some("XX000") if db.message().contains("concurrently"))
        || matches!(
            db.code().as_deref(),
            Some("23505" | "42710" | "40001" | "40P01")
        )
}

/// Runs an idempotent bootstrap step again (up to 8 times, with a growing pause) while it
/// collides with another session changing the same roles.
macro_rules! retrying {
    ($step:expr) => {{
        let mut attempt = 0u32;
        loop {
            match $step.await {
                Err(e) if attempt < 8 && is_concurrent_catalog_update(&e) => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(
                        10 * u64::from(attempt) + u64::from(rand_jitter()),
                    ))
                    .await;
                }
                other => break other,
            }
        }
    }};
}

/// 0–15 ms, so two colliding sessions do not retry in lockstep.
fn rand_jitter() -> u8 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos % 16) as u8
}

/// Creates the owner role and, in the connected database, the schema it owns. Within one
/// database an advisory lock serialises callers; across databases, collisions are retried.
pub async fn ensure_service_schema(
    admin: &mut PgConnection,
    service: &str,
) -> Result<(), sqlx::Error> {
    retrying!(ensure_service_schema_once(&mut *admin, service))
}

async fn ensure_service_schema_once(
    admin: &mut PgConnection,
    service: &str,
) -> Result<(), sqlx::Error> {
    let owner = owner_role(service);
    admin.execute("SELECT pg_advisory_lock(7270001)").await?;
    let result = async {
        let role_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                .bind(&owner)
                .fetch_one(&mut *admin)
                .await?;
        if !role_exists {
            ddl(admin, format!("CREATE ROLE {} NOLOGIN", ident(&owner))).await?;
        }
        ddl(
            admin,
            format!(
                "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}",
                ident(service),
                ident(&owner)
            ),
        )
        .await?;
        // The owner needs to create objects through `SET ROLE`; nothing else gets in.
        ddl(
            admin,
            format!("REVOKE ALL ON SCHEMA {} FROM PUBLIC", ident(service)),
        )
        .await?;
        Ok::<(), sqlx::Error>(())
    }
    .await;
    admin.execute("SELECT pg_advisory_unlock(7270001)").await?;
    result
}

/// Creates or updates the static login of `service`: a member of the owner role whose sessions
/// run as the owner and see the service's schema first.
pub async fn ensure_static_login(
    admin: &mut PgConnection,
    service: &str,
    password: &str,
) -> Result<(), sqlx::Error> {
    retrying!(ensure_static_login_once(&mut *admin, service, password))
}

async fn ensure_static_login_once(
    admin: &mut PgConnection,
    service: &str,
    password: &str,
) -> Result<(), sqlx::Error> {
    let login = login_role(service);
    let owner = owner_role(service);
    admin.execute("SELECT pg_advisory_lock(7270001)").await?;
    let result = async {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                .bind(&login)
                .fetch_one(&mut *admin)
                .await?;
        let verb = if exists { "ALTER" } else { "CREATE" };
        ddl(
            admin,
            format!(
                "{verb} ROLE {} LOGIN PASSWORD {}",
                ident(&login),
                literal(password)
            ),
        )
        .await?;
        ddl(
            admin,
            format!("GRANT {} TO {}", ident(&owner), ident(&login)),
        )
        .await?;
        ddl(
            admin,
            format!(
                "ALTER ROLE {} SET role = {}",
                ident(&login),
                literal(&owner)
            ),
        )
        .await?;
        Ok::<(), sqlx::Error>(())
    }
    .await;
    admin.execute("SELECT pg_advisory_unlock(7270001)").await?;
    result
}

/// Grants the database-level rights every service login needs in database `db`.
pub async fn grant_connect(
    admin: &mut PgConnection,
    db: &str,
    service: &str,
) -> Result<(), sqlx::Error> {
    retrying!(ddl(
        &mut *admin,
        format!(
            "GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}",
            ident(db),
            ident(&owner_role(service))
        ),
    ))
}
