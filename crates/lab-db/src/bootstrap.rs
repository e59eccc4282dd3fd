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

/// Creates the owner role and, in the connected database, the schema it owns. Roles are
/// cluster-wide; a cluster-wide advisory lock makes concurrent callers safe.
pub async fn ensure_service_schema(
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
    ddl(
        admin,
        format!(
            "GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}",
            ident(db),
            ident(&owner_role(service))
        ),
    )
    .await?;
    Ok(())
}
