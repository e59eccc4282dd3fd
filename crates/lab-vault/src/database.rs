//! The database secrets engine: its connection to PostgreSQL, one role per service, and leased
//! credentials with the lease id that renewal and revocation need.

use std::time::Duration;

use lab_config::SecretString;
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use crate::{Vault, VaultError, body_error};

/// The engine's connection to one PostgreSQL database (`database/config/<name>`).
#[derive(Debug, Clone, Serialize)]
pub struct DbConnection {
    /// `postgresql://{{username}}:{{password}}@host:port/db`; OpenBao fills the placeholders.
    pub connection_url: String,
    /// The engine's admin login: creates and drops the leased users.
    pub username: String,
    /// Its password (sent once, never read back).
    pub password: String,
    /// Which roles may use this connection (`*` or a comma-separated list).
    pub allowed_roles: String,
}

/// One role of the engine (`database/roles/<name>`): how a leased user is made and unmade.
#[derive(Debug, Clone, Serialize)]
pub struct DbRole {
    /// The connection (`database/config/<db_name>`) the role uses.
    pub db_name: String,
    /// SQL run to create a user; `{{name}}`, `{{password}}`, `{{expiration}}` are filled in.
    pub creation_statements: Vec<String>,
    /// SQL run when the lease ends or is revoked.
    pub revocation_statements: Vec<String>,
    /// Lease length when none is asked for, in seconds.
    pub default_ttl: u64,
    /// Longest a lease can be renewed to, in seconds; rotation must happen before it.
    pub max_ttl: u64,
}

/// A lease: its id and how long it lasts from now.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Needed to renew or revoke.
    pub id: String,
    /// Time left as granted by the server (capped near `max_ttl`).
    pub duration: Duration,
    /// Whether the server allows renewing it.
    pub renewable: bool,
}

impl Lease {
    pub(crate) fn from_response(path: &str, v: &Value) -> Result<Self, VaultError> {
        let id = v["lease_id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| body_error(path, "no lease_id"))?;
        Ok(Self {
            id: id.to_owned(),
            duration: Duration::from_secs(v["lease_duration"].as_u64().unwrap_or(0)),
            renewable: v["renewable"].as_bool().unwrap_or(false),
        })
    }
}

/// A leased PostgreSQL login.
#[derive(Debug, Clone)]
pub struct DbCredentials {
    /// The generated user name.
    pub username: String,
    /// Its password.
    pub password: SecretString,
    /// The lease that keeps the user alive.
    pub lease: Lease,
}

impl Vault {
    /// Writes the engine's connection `name` (mounted at `mount`), checking that it connects.
    pub async fn write_db_connection(
        &self,
        mount: &str,
        name: &str,
        conn: &DbConnection,
    ) -> Result<(), VaultError> {
        let body = serde_json::json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": conn.connection_url,
            "username": conn.username,
            "password": conn.password,
            "allowed_roles": conn.allowed_roles,
            "verify_connection": true,
        });
        self.call(Method::POST, &format!("{mount}/config/{name}"), Some(&body))
            .await?;
        Ok(())
    }

    /// Creates or replaces role `name` of the engine at `mount`.
    pub async fn write_db_role(
        &self,
        mount: &str,
        name: &str,
        role: &DbRole,
    ) -> Result<(), VaultError> {
        self.call(Method::POST, &format!("{mount}/roles/{name}"), Some(role))
            .await?;
        Ok(())
    }

    /// Leases a new login of role `name`.
    pub async fn db_credentials(
        &self,
        mount: &str,
        name: &str,
    ) -> Result<DbCredentials, VaultError> {
        let path = format!("{mount}/creds/{name}");
        let v = self
            .call::<()>(Method::GET, &path, None)
            .await?
            .ok_or_else(|| body_error(&path, "empty body"))?;
        let field = |k: &str| {
            v["data"][k]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| body_error(&path, format!("no data.{k}")))
        };
        Ok(DbCredentials {
            username: field("username")?,
            password: SecretString::new(field("password")?),
            lease: Lease::from_response(&path, &v)?,
        })
    }
}
