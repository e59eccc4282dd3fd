//! Database bootstrap through the administrator's connection: the `lab` database, and for each
//! service with a schema its owner role, schema and static login (`lab_db::bootstrap`), plus the
//! login OpenBao's database engine uses to create and drop leased users.

use lab_db::bootstrap as pg;
use lab_db::sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

/// OpenBao's admin login on PostgreSQL: not a superuser; CREATEROLE plus membership in each owner
/// role and `pg_signal_backend` is exactly what its creation and revocation statements need.
pub const VAULT_ADMIN: &str = "lab_vault_admin";

/// Why the database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("cannot connect to PostgreSQL as administrator ({0}): check --postgres-url")]
    Connect(String),
    #[error("preparing database {database} failed: {reason}")]
    Sql { database: String, reason: String },
    #[error("the PostgreSQL URL is not valid: {0}")]
    BadUrl(String),
}

/// The database URL of `service`'s static login, derived from the administrator's URL.
pub fn service_url(
    admin_url: &str,
    database: &str,
    service: &str,
    password: &str,
) -> Result<String, BootstrapError> {
    let mut url =
        reqwest::Url::parse(admin_url).map_err(|e| BootstrapError::BadUrl(e.to_string()))?;
    let bad = |_| BootstrapError::BadUrl(format!("{admin_url} cannot carry a user"));
    url.set_username(&pg::login_role(service)).map_err(bad)?;
    url.set_password(Some(password)).map_err(bad)?;
    url.set_path(&format!("/{database}"));
    Ok(url.to_string())
}

/// `host:port` of the server in `admin_url`.
pub fn host_port(admin_url: &str) -> Result<String, BootstrapError> {
    let url = reqwest::Url::parse(admin_url).map_err(|e| BootstrapError::BadUrl(e.to_string()))?;
    Ok(format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432)
    ))
}

/// Creates `database` and every service's owner role, schema and static login in it; with
/// `vault_admin_password`, also OpenBao's admin login. Idempotent: runs on every `lab up`.
pub async fn prepare(
    admin_url: &str,
    database: &str,
    static_password: &str,
    vault_admin_password: Option<&str>,
) -> Result<(), BootstrapError> {
    let sql = |e: lab_db::sqlx::Error| BootstrapError::Sql {
        database: database.to_owned(),
        reason: lab_db::short_reason(&e),
    };
    let mut admin = PgConnection::connect(admin_url)
        .await
        .map_err(|e| BootstrapError::Connect(lab_db::short_reason(&e)))?;
    pg::ensure_database(&mut admin, database, None)
        .await
        .map_err(sql)?;
    let _ = admin.close().await;

    let mut url =
        reqwest::Url::parse(admin_url).map_err(|e| BootstrapError::BadUrl(e.to_string()))?;
    url.set_path(&format!("/{database}"));
    let mut conn = PgConnection::connect(url.as_str())
        .await
        .map_err(|e| BootstrapError::Connect(lab_db::short_reason(&e)))?;
    for service in pg::SCHEMA_SERVICES {
        pg::ensure_service_schema(&mut conn, service)
            .await
            .map_err(sql)?;
        pg::ensure_static_login(&mut conn, service, static_password)
            .await
            .map_err(sql)?;
        pg::grant_connect(&mut conn, database, service)
            .await
            .map_err(sql)?;
    }
    if let Some(password) = vault_admin_password {
        // Roles are cluster-wide: another database's bootstrap may be changing them right now.
        let mut attempt = 0u64;
        loop {
            match ensure_vault_admin(&mut conn, database, password).await {
                Err(e) if attempt < 8 && pg::is_concurrent_catalog_update(&e) => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(10 * attempt)).await;
                }
                other => break other.map_err(sql)?,
            }
        }
    }
    let _ = conn.close().await;
    Ok(())
}

async fn ensure_vault_admin(
    conn: &mut PgConnection,
    database: &str,
    password: &str,
) -> Result<(), lab_db::sqlx::Error> {
    // Roles are cluster-wide; the same advisory lock as lab_db's bootstrap serialises callers.
    conn.execute("SELECT pg_advisory_lock(7270001)").await?;
    let result = async {
        let exists: bool =
            lab_db::sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                .bind(VAULT_ADMIN)
                .fetch_one(&mut *conn)
                .await?;
        let verb = if exists { "ALTER" } else { "CREATE" };
        // The password is generated alphanumeric, so quoting it as a literal is safe.
        let mut statements = vec![
            format!("{verb} ROLE \"{VAULT_ADMIN}\" LOGIN CREATEROLE PASSWORD '{password}'"),
            format!("GRANT pg_signal_backend TO \"{VAULT_ADMIN}\""),
            format!("GRANT CONNECT ON DATABASE \"{database}\" TO \"{VAULT_ADMIN}\""),
        ];
        for service in pg::SCHEMA_SERVICES {
            statements.push(format!(
                "GRANT \"{}\" TO \"{VAULT_ADMIN}\" WITH ADMIN OPTION",
                pg::owner_role(service)
            ));
        }
        for s in statements {
            conn.execute(lab_db::sqlx::raw_sql(AssertSqlSafe(s)))
                .await?;
        }
        Ok::<(), lab_db::sqlx::Error>(())
    }
    .await;
    conn.execute("SELECT pg_advisory_unlock(7270001)").await?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_url_keeps_the_server_and_swaps_user_password_and_database() {
        let url = service_url(
            "postgres://postgres:secret@127.0.0.1:6543/postgres",
            "lab",
            "catalog",
            "pw",
        )
        .unwrap();
        assert_eq!(url, "postgres://lab_catalog:pw@127.0.0.1:6543/lab");
        assert_eq!(
            host_port("postgres://postgres@127.0.0.1:6543/postgres").unwrap(),
            "127.0.0.1:6543"
        );
    }
}
