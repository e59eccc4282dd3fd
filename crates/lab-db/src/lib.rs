//! PostgreSQL for Lab services.
//!
//! Every service owns one schema and a NOLOGIN owner role that owns every object in it
//! (ARCHITECTURE.md §3). A service logs in as a member of that role whose sessions run `SET ROLE`
//! to the owner (set on the login role itself), with `search_path` set to its schema, so its
//! migrations and tables land in its own schema, owned by the stable role. [`bootstrap`] creates
//! those roles and schemas with an administrator's connection; [`connect`] opens a service's pool;
//! [`begin`] opens a transaction on it that a cancelled request cannot leave open.

pub mod admin;
pub mod bootstrap;
pub mod credentials;
pub mod transaction;

use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use lab_config::SecretString;
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

pub use credentials::{CredentialStatus, Credentials, RotationReport, VaultLogin, VaultProbe};
pub use sqlx;
pub use transaction::{begin, begin_with};

/// How a service reaches its database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DbSettings {
    /// `postgres://user:password@host:port/database`; the user is the service's login role.
    pub url: SecretString,
    /// Pool size; a service process rarely needs more than a few concurrent queries per core.
    pub max_connections: u32,
    /// How long a request may wait for a pooled connection before it fails with 503.
    pub acquire_timeout_ms: u64,
    /// Where a leased login comes from (`…__DATABASE__VAULT__ADDR`, `…__TOKEN`, `…__ROLE`);
    /// without an address the URL's static login is used and Vault reports itself disabled.
    pub vault: VaultLogin,
}

impl DbSettings {
    /// Local defaults for `service`: its static login on the machine's PostgreSQL.
    pub fn local(service: &str) -> Self {
        Self {
            url: SecretString::new(format!(
                "postgres://{}:{}@127.0.0.1:5432/lab",
                bootstrap::login_role(service),
                bootstrap::STATIC_PASSWORD
            )),
            max_connections: 10,
            // Long enough to ride out a pool swap, short enough that a stuck database surfaces
            // as a 503 before the caller's own timeout.
            acquire_timeout_ms: 3_000,
            vault: VaultLogin::default(),
        }
    }
}

impl Default for DbSettings {
    fn default() -> Self {
        Self::local("lab")
    }
}

/// Why a database could not be used, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the database URL is not valid: {0}")]
    BadUrl(String),
    #[error(
        "PostgreSQL at {addr} is unreachable ({reason}): start it, or point {hint} at a running server"
    )]
    Unreachable {
        addr: String,
        reason: String,
        hint: String,
    },
    #[error(
        "no PostgreSQL login could be leased from OpenBao at {addr} (role {role}): {reason}; start it, fix {hint}, or run without OpenBao"
    )]
    Lease {
        addr: String,
        role: String,
        reason: String,
        hint: String,
    },
    #[error("migrations of schema {schema} failed: {reason}")]
    Migration { schema: String, reason: String },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Connection options for `url` with every session scoped to `schema`.
pub fn connect_options(
    url: &SecretString,
    schema: &str,
    app_name: &str,
) -> Result<PgConnectOptions, DbError> {
    let options = PgConnectOptions::from_str(url.expose())
        .map_err(|e| DbError::BadUrl(e.to_string()))?
        .application_name(app_name)
        .options([("search_path", schema)]);
    Ok(options)
}

/// A service's database: its pool and the handle on the login it uses.
#[derive(Debug, Clone)]
pub struct Database {
    /// The one pool every handler uses; a rotation changes its login, never the pool.
    pub pool: PgPool,
    /// Status and control of a leased login (disabled for a static one).
    pub credentials: Credentials,
}

/// Opens `schema`'s pool with a static login (`settings.url`), or with a login leased from
/// OpenBao when `settings.vault` names a server: then the login is renewed and rotated until
/// `shutdown`, after which its lease runs out on its own (requests still finishing keep it).
pub async fn open(
    settings: &DbSettings,
    schema: &str,
    app_name: &str,
    env_hint: &str,
    shutdown: CancellationToken,
) -> Result<Database, DbError> {
    if !settings.vault.enabled() {
        tracing::info!(
            schema,
            "database login: static (no OpenBao configured; leased credentials disabled)"
        );
        let pool = connect(settings, schema, app_name, env_hint).await?;
        return Ok(Database {
            pool,
            credentials: Credentials::disabled(),
        });
    }
    let login = &settings.vault;
    let role = if login.role.is_empty() {
        schema.to_owned()
    } else {
        login.role.clone()
    };
    let lease_error = |reason: String| DbError::Lease {
        addr: login.addr.clone(),
        role: role.clone(),
        reason,
        hint: env_hint.replace("__URL", "__VAULT__ADDR"),
    };
    let vault = lab_vault::Vault::new(&login.addr, login.token.clone())
        .map_err(|e| lease_error(e.to_string()))?;
    let base = connect_options(&settings.url, schema, app_name)?;
    let (first, options) = credentials::first_lease(&vault, &login.mount, &role, &base)
        .await
        .map_err(|e| lease_error(e.to_string()))?;
    probe(&options, settings, env_hint).await?;
    let gate = std::sync::Arc::new(credentials::SwapGate::default());
    let pool = credentials::gated(settings, &gate).connect_lazy_with(options);
    let manager = credentials::Manager {
        vault,
        mount: login.mount.clone(),
        role,
        pool: pool.clone(),
        base,
        gate,
        drain_timeout: Duration::from_millis(login.drain_timeout_ms),
    };
    tracing::info!(
        schema,
        user = %first.username,
        lease = %credentials::redact_lease_id(&first.lease.id),
        ttl_s = first.lease.duration.as_secs(),
        "database login: leased from OpenBao"
    );
    let credentials = manager.start(first, shutdown);
    Ok(Database { pool, credentials })
}

impl Database {
    /// `readiness` with this database's checks: PostgreSQL (critical) and, for a leased login,
    /// OpenBao (non-critical: the service serves on its current login while it is down).
    pub fn probes(&self, readiness: lab_http::Readiness) -> lab_http::Readiness {
        let readiness = readiness.with(PgProbe(self.pool.clone()));
        if self.credentials.enabled() {
            readiness.with(VaultProbe(self.credentials.clone()))
        } else {
            readiness
        }
    }
}

/// A pooled connection idle at least this long is pinged before it is handed out. One in use
/// is handed back and out again within milliseconds under load, so this spares the ping (a round
/// trip) on nearly every transaction; one that sat idle for a second is the kind a PostgreSQL
/// restart, a terminated backend or a revoked login has killed meanwhile.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The options of every service pool: sqlx's ping on every acquire is off (`PING_AFTER_IDLE`
/// instead), and with a leased login's `gate` a connection of a login rotated away from is
/// closed instead of handed out.
fn pool_options(
    settings: &DbSettings,
    gate: Option<std::sync::Arc<credentials::SwapGate>>,
) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            let current = gate.as_ref().is_none_or(|gate| gate.keeps(meta.age));
            Box::pin(async move {
                if !current {
                    return Ok(false);
                }
                // An error closes the connection and the pool tries the next one (or connects).
                if meta.idle_for >= PING_AFTER_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// Opens a pool for `schema` with the static login of `settings.url` and checks that one
/// connection really works, so a wrong address or password stops start-up with a clear message
/// instead of failing the first request.
pub async fn connect(
    settings: &DbSettings,
    schema: &str,
    app_name: &str,
    env_hint: &str,
) -> Result<PgPool, DbError> {
    let options = connect_options(&settings.url, schema, app_name)?;
    probe(&options, settings, env_hint).await?;
    Ok(pool_options(settings, None).connect_lazy_with(options))
}

/// One direct connection: its error says why (refused, bad password, no database), where a pool
/// would only say that it timed out.
async fn probe(
    options: &PgConnectOptions,
    settings: &DbSettings,
    env_hint: &str,
) -> Result<(), DbError> {
    let addr = format!("{}:{}", options.get_host(), options.get_port());
    let probe = tokio::time::timeout(
        Duration::from_millis(settings.acquire_timeout_ms),
        PgConnection::connect_with(options),
    )
    .await;
    let reason = match probe {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            None
        }
        Ok(Err(e)) => Some(short_reason(&e)),
        Err(_) => Some(format!(
            "no answer within {} ms",
            settings.acquire_timeout_ms
        )),
    };
    match reason {
        Some(reason) => Err(DbError::Unreachable {
            addr,
            reason,
            hint: env_hint.to_owned(),
        }),
        None => Ok(()),
    }
}

/// Applies `migrator` to the pool's schema. Concurrent replicas serialise on sqlx's advisory lock.
pub async fn migrate(pool: &PgPool, migrator: &Migrator, schema: &str) -> Result<(), DbError> {
    migrator.run(pool).await.map_err(|e| DbError::Migration {
        schema: schema.to_owned(),
        reason: e.to_string(),
    })
}

/// The first line of an error, without the nesting sqlx adds.
pub fn short_reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::PoolTimedOut => "no connection available in time".into(),
        sqlx::Error::Database(db) => {
            format!("{} ({})", db.message(), db.code().unwrap_or_default())
        }
        other => other.to_string(),
    }
}

/// Readiness probe: a real query on the service's pool.
pub struct PgProbe(pub PgPool);

impl lab_http::Probe for PgProbe {
    fn name(&self) -> &str {
        "postgres"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&self.0)
                .await
                .map(|_| ())
                .map_err(|e| short_reason(&e))
        })
    }
}
