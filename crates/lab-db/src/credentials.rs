//! Leased PostgreSQL logins from OpenBao's database secrets engine, renewed on a timer and
//! rotated without failing a request (VAULT.md, ADR 0005).
//!
//! A service keeps one plain [`PgPool`]; only its connect options change. A rotation leases login
//! B, points the pool's future connections at B, lets every connection of the old login A finish
//! the query it runs and closes it when it comes back to the pool (the pool's `before_acquire` /
//! `after_release` hooks refuse connections opened before the swap), waits until PostgreSQL shows
//! no session of A, and only then revokes A's lease (which drops the user). Every step and its
//! timing is published as a [`CredentialStatus`] on a `watch` channel.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lab_config::SecretString;
use lab_vault::{DbCredentials, DbRole, Vault, VaultError};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// Connections opened up to this long after a swap are closed like the old login's: a connect
/// that checked its login just before the swap gets its creation time stamped just after it.
const SWAP_GRACE: Duration = Duration::from_millis(250);

/// How often the drain step looks at `pg_stat_activity` for sessions of the old login.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// A session of the old login idle this long is not between two statements of a request (those
/// follow each other within milliseconds): it is a pool leftover or a `LISTEN` connection.
const IDLE_SETTLE: Duration = Duration::from_secs(1);

/// First and longest pause between attempts while OpenBao does not answer.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// A renewal that comes back this much shorter than asked was capped by the role's `max_ttl`.
const CAP_TOLERANCE: Duration = Duration::from_secs(2);

/// Shortest demo TTL: below it a rotation (a few hundred ms under load) would not fit in a lease.
const MIN_DEMO_TTL_S: u64 = 5;

/// Where a service's leased login comes from. An empty `addr` means no OpenBao: the service logs
/// in with the static login of its database URL and reports Vault as disabled.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct VaultLogin {
    /// OpenBao's address, `http://127.0.0.1:8200`; empty disables leasing.
    pub addr: String,
    /// A token allowed to read `<mount>/creds/<role>` and renew and revoke its leases.
    pub token: SecretString,
    /// Where the database secrets engine is mounted.
    pub mount: String,
    /// The engine role to lease from; empty means the service's schema name.
    pub role: String,
    /// How long a rotation waits for the old login's sessions to end before revoking it anyway
    /// (revocation then terminates what is left).
    pub drain_timeout_ms: u64,
}

impl Default for VaultLogin {
    fn default() -> Self {
        Self {
            addr: String::new(),
            token: SecretString::default(),
            mount: "database".into(),
            role: String::new(),
            // Longer than any request a service answers; shorter than the shortest lease.
            drain_timeout_ms: 30_000,
        }
    }
}

impl VaultLogin {
    /// Whether leasing is configured.
    pub fn enabled(&self) -> bool {
        !self.addr.trim().is_empty()
    }
}

/// Why leasing or rotating failed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("leasing database credentials is disabled (no OpenBao configured)")]
    Disabled,
    #[error("OpenBao: {0}")]
    Vault(#[from] VaultError),
    #[error("PostgreSQL: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("the rotation failed, the current login stays in use: {0}")]
    Rotation(String),
    #[error("the credential manager has stopped")]
    Stopped,
    #[error("a demo TTL must be at least {MIN_DEMO_TTL_S} s")]
    TtlTooShort,
}

/// One step of a rotation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The new login was leased.
    Leased,
    /// The pool opens new connections with the new login.
    PoolSwapped,
    /// No session of the old login is left (or the drain timed out, see `drained`).
    OldDrained,
    /// The old lease was revoked and its user dropped.
    OldRevoked,
}

/// When a stage was reached, in ms after the rotation started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct StageTiming {
    pub stage: Stage,
    pub after_ms: f64,
}

/// What one rotation did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RotationReport {
    /// Why it ran: `forced`, `capped`, `lease_age`, `lease_lost`.
    pub reason: String,
    /// Unix time in ms when it started.
    pub started_at_ms: u64,
    /// The login rotated away from.
    pub old_user: String,
    /// The login rotated to.
    pub new_user: String,
    /// The stages reached, in order.
    pub stages: Vec<StageTiming>,
    /// Whether every session of the old login ended before revocation; `false` means the drain
    /// timed out and revocation terminated the rest.
    pub drained: bool,
    /// Whether the old lease is revoked; `false` when OpenBao refused, retried later.
    pub revoked: bool,
    /// Total duration in ms.
    pub total_ms: f64,
}

/// Leasing state as operators and the /chaos page see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CredentialStatus {
    /// `vault` (leased logins) or `static` (no OpenBao configured).
    pub source: String,
    /// `ok`, `degraded` (OpenBao unreachable or refusing; current login still used) or
    /// `disabled` (static login).
    pub state: String,
    /// The engine role leased from.
    pub role: Option<String>,
    /// The login new connections use.
    pub username: Option<String>,
    /// The current lease id, all but its last 4 characters hidden.
    pub lease_id: Option<String>,
    /// Unix time in ms when the current lease ends unless renewed.
    pub lease_expires_at_ms: Option<u64>,
    /// Seconds left on the current lease when this status was read.
    pub ttl_left_s: Option<u64>,
    /// Renewals of the current lease.
    pub renewals: u64,
    /// Rotations since start.
    pub rotations: u64,
    /// The last rotation, stage by stage.
    pub last_rotation: Option<RotationReport>,
    /// The last failure talking to OpenBao, cleared when it answers again.
    pub last_error: Option<String>,
    /// The renewal increment asked for (the demo shortens it), in seconds.
    pub ttl_s: Option<u64>,
    /// Leases are rotated once this old (demo), in seconds.
    pub rotate_after_s: Option<u64>,
}

impl CredentialStatus {
    fn disabled() -> Self {
        Self {
            source: "static".into(),
            state: "disabled".into(),
            role: None,
            username: None,
            lease_id: None,
            lease_expires_at_ms: None,
            ttl_left_s: None,
            renewals: 0,
            rotations: 0,
            last_rotation: None,
            last_error: None,
            ttl_s: None,
            rotate_after_s: None,
        }
    }

    /// This status with `ttl_left_s` computed for now.
    fn at_now(mut self) -> Self {
        self.ttl_left_s = self
            .lease_expires_at_ms
            .map(|end| end.saturating_sub(unix_ms()) / 1_000);
        self
    }
}

/// `database/creds/catalog/AbCdEf123` → `database/creds/catalog/…f123`: enough to match a log
/// line, not enough to use.
pub fn redact_lease_id(id: &str) -> String {
    let (prefix, last) = id.rsplit_once('/').unwrap_or(("", id));
    let tail: String = last
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if prefix.is_empty() {
        format!("…{tail}")
    } else {
        format!("{prefix}/…{tail}")
    }
}

/// The engine role for `service` (VAULT.md): users are created in `<service>_owner`, every session
/// runs as that owner, the engine's admin `engine_admin` is granted the user (PostgreSQL 15
/// needs it to terminate its sessions), and revocation ends the sessions, hands anything owned to
/// the owner, and drops the user.
pub fn engine_role(
    connection: &str,
    service: &str,
    engine_admin: &str,
    ttl: Duration,
    max_ttl: Duration,
) -> DbRole {
    let owner = crate::bootstrap::owner_role(service);
    DbRole {
        db_name: connection.into(),
        creation_statements: vec![
            format!(
                "CREATE ROLE \"{{{{name}}}}\" WITH LOGIN PASSWORD '{{{{password}}}}' \
                 VALID UNTIL '{{{{expiration}}}}' IN ROLE \"{owner}\";"
            ),
            format!("ALTER ROLE \"{{{{name}}}}\" SET role = '{owner}';"),
            format!("GRANT \"{{{{name}}}}\" TO \"{engine_admin}\";"),
        ],
        revocation_statements: vec![
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}';"
                .into(),
            format!("REASSIGN OWNED BY \"{{{{name}}}}\" TO \"{owner}\";"),
            "DROP OWNED BY \"{{name}}\";".into(),
            "DROP ROLE IF EXISTS \"{{name}}\";".into(),
        ],
        default_ttl: ttl.as_secs(),
        max_ttl: max_ttl.as_secs(),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000.0 * 10.0).round() / 10.0
}

/// Which connections the pool still hands out: those opened after the last swap, as the login
/// the swap installed. Read by the pool's hooks on every acquire and release.
#[derive(Debug, Default)]
pub(crate) struct SwapGate {
    inner: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    /// When new connections started to use `expected_user`.
    swapped_at: Option<Instant>,
    /// The login a newly opened connection must have.
    expected_user: Option<String>,
}

impl SwapGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a connection `age` old was opened after the last swap (with its grace).
    pub(crate) fn keeps(&self, age: Duration) -> bool {
        let Some(at) = self.lock().swapped_at else {
            return true;
        };
        let cutoff = at + SWAP_GRACE;
        match Instant::now().checked_sub(age) {
            Some(opened) => opened >= cutoff,
            None => true,
        }
    }

    /// The login new connections must have.
    pub(crate) fn expected_user(&self) -> Option<String> {
        self.lock().expected_user.clone()
    }

    fn swap(&self, user: &str) {
        let mut state = self.lock();
        state.expected_user = Some(user.to_owned());
        state.swapped_at = Some(Instant::now());
    }

    fn expect(&self, user: &str) {
        self.lock().expected_user = Some(user.to_owned());
    }
}

/// The pool options a leased login needs: [`crate::pool_options`] with this gate, whose
/// `before_acquire` closes a connection of an old login about to be handed out; here connections
/// of an old login are also closed when they come back to the pool (never mid-query), and a
/// connection that was opened with a login other than the current one is refused (the pool then
/// connects again).
pub(crate) fn gated(
    settings: &crate::DbSettings,
    gate: &Arc<SwapGate>,
) -> sqlx::pool::PoolOptions<sqlx::Postgres> {
    let on_release = gate.clone();
    let on_connect = gate.clone();
    crate::pool_options(settings, Some(gate.clone()))
        .after_release(move |_, meta| {
            let keep = on_release.keeps(meta.age);
            Box::pin(async move { Ok(keep) })
        })
        .after_connect(move |conn, _| {
            let expected = on_connect.expected_user();
            Box::pin(async move {
                let Some(expected) = expected else {
                    return Ok(());
                };
                let user: String = sqlx::query_scalar("SELECT session_user::text")
                    .fetch_one(&mut *conn)
                    .await?;
                if user == expected {
                    Ok(())
                } else {
                    // Opened with the options of before a swap: refused, the pool connects again.
                    Err(sqlx::Error::Protocol(format!(
                        "connection logged in as {user}, expected {expected} after a rotation"
                    )))
                }
            })
        })
}

/// What the manager is asked to do.
enum Command {
    Rotate(oneshot::Sender<Result<RotationReport, String>>),
    SetTtl(Duration, oneshot::Sender<()>),
}

/// A handle on a service's database credentials: status, changes, forced rotation. Cheap to
/// clone; a static login has a handle too, whose status says `disabled`.
#[derive(Clone)]
pub struct Credentials {
    status: watch::Receiver<CredentialStatus>,
    commands: Option<mpsc::Sender<Command>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl Credentials {
    /// The handle of a static login.
    pub fn disabled() -> Self {
        let (tx, rx) = watch::channel(CredentialStatus::disabled());
        // Keep the channel open: a receiver of a dropped sender still reads the last value.
        drop(tx);
        Self {
            status: rx,
            commands: None,
        }
    }

    /// Whether logins are leased from OpenBao.
    pub fn enabled(&self) -> bool {
        self.commands.is_some()
    }

    /// The current status, its TTL left computed now.
    pub fn status(&self) -> CredentialStatus {
        self.status.borrow().clone().at_now()
    }

    /// Every change of the status (a renewal, each rotation stage, an OpenBao failure).
    pub fn subscribe(&self) -> watch::Receiver<CredentialStatus> {
        self.status.clone()
    }

    /// Rotates now and answers when the old lease is revoked.
    pub async fn rotate(&self) -> Result<RotationReport, CredentialError> {
        let commands = self.commands.as_ref().ok_or(CredentialError::Disabled)?;
        let (tx, rx) = oneshot::channel();
        commands
            .send(Command::Rotate(tx))
            .await
            .map_err(|_| CredentialError::Stopped)?;
        match rx.await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(reason)) => Err(CredentialError::Rotation(reason)),
            Err(_) => Err(CredentialError::Stopped),
        }
    }

    /// Demo: renews every lease to `ttl` from now on (renewing the current one at once) and
    /// rotates each lease once it is twice that old, so rotations come every few seconds.
    pub async fn set_ttl(&self, ttl: Duration) -> Result<(), CredentialError> {
        if ttl < Duration::from_secs(MIN_DEMO_TTL_S) {
            return Err(CredentialError::TtlTooShort);
        }
        let commands = self.commands.as_ref().ok_or(CredentialError::Disabled)?;
        let (tx, rx) = oneshot::channel();
        commands
            .send(Command::SetTtl(ttl, tx))
            .await
            .map_err(|_| CredentialError::Stopped)?;
        rx.await.map_err(|_| CredentialError::Stopped)
    }
}

/// The lease in use.
struct Current {
    username: String,
    /// Kept to look at the login's own sessions while it drains.
    password: SecretString,
    lease_id: String,
    /// What the lease was first granted; renewals ask for it again unless the demo changed it.
    granted: Duration,
    renewable: bool,
    /// When the lease ends unless renewed.
    expires: Instant,
    leased_at: Instant,
    renewals: u64,
}

impl Current {
    fn from(creds: &DbCredentials) -> Self {
        let now = Instant::now();
        Self {
            username: creds.username.clone(),
            password: creds.password.clone(),
            lease_id: creds.lease.id.clone(),
            granted: creds.lease.duration,
            renewable: creds.lease.renewable,
            expires: now + creds.lease.duration,
            leased_at: now,
            renewals: 0,
        }
    }
}

/// What the manager works with.
pub(crate) struct Manager {
    pub(crate) vault: Vault,
    pub(crate) mount: String,
    pub(crate) role: String,
    pub(crate) pool: PgPool,
    /// The options without a login; each lease adds its own.
    pub(crate) base: PgConnectOptions,
    pub(crate) gate: Arc<SwapGate>,
    pub(crate) drain_timeout: Duration,
}

/// Leases the first login (start-up fails without one) and returns options for it.
pub(crate) async fn first_lease(
    vault: &Vault,
    mount: &str,
    role: &str,
    base: &PgConnectOptions,
) -> Result<(DbCredentials, PgConnectOptions), VaultError> {
    let creds = vault.db_credentials(mount, role).await?;
    let options = with_login(base, &creds);
    Ok((creds, options))
}

fn with_login(base: &PgConnectOptions, creds: &DbCredentials) -> PgConnectOptions {
    base.clone()
        .username(&creds.username)
        .password(creds.password.expose())
}

impl Manager {
    /// Starts the renew/rotate loop for `first`, already installed in the pool.
    pub(crate) fn start(self, first: DbCredentials, shutdown: CancellationToken) -> Credentials {
        self.gate.expect(&first.username);
        let current = Current::from(&first);
        let status = CredentialStatus {
            source: "vault".into(),
            state: "ok".into(),
            role: Some(self.role.clone()),
            username: Some(current.username.clone()),
            lease_id: Some(redact_lease_id(&current.lease_id)),
            lease_expires_at_ms: Some(unix_ms() + duration_ms(current.granted)),
            ttl_left_s: None,
            renewals: 0,
            rotations: 0,
            last_rotation: None,
            last_error: None,
            ttl_s: Some(current.granted.as_secs()),
            rotate_after_s: None,
        };
        let (status_tx, status_rx) = watch::channel(status);
        // A handful of operator commands at most; a full queue makes the caller wait.
        let (commands_tx, commands_rx) = mpsc::channel(8);
        tokio::spawn(
            Loop {
                m: self,
                current,
                status: status_tx,
                ttl_override: None,
                retry: RETRY_FIRST,
                unrevoked: Vec::new(),
            }
            .run(commands_rx, shutdown),
        );
        Credentials {
            status: status_rx,
            commands: Some(commands_tx),
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

struct Loop {
    m: Manager,
    current: Current,
    status: watch::Sender<CredentialStatus>,
    /// The demo's TTL: renewals ask for it, and leases rotate at twice its age.
    ttl_override: Option<Duration>,
    /// Pause before the next attempt while OpenBao fails.
    retry: Duration,
    /// Old leases whose revocation failed; retried on every turn.
    unrevoked: Vec<String>,
}

/// What the loop does next.
enum Next {
    Renew,
    Rotate(&'static str),
}

impl Loop {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        let mut failing = false;
        loop {
            let (wait, next) = if failing {
                (self.retry, self.due())
            } else {
                self.schedule()
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                command = commands.recv() => match command {
                    None => break,
                    Some(Command::Rotate(reply)) => {
                        let result = self.rotate("forced").await.map_err(|e| e.to_string());
                        failing = result.is_err();
                        let _ = reply.send(result);
                    }
                    Some(Command::SetTtl(ttl, reply)) => {
                        self.ttl_override = Some(ttl);
                        self.status.send_modify(|s| {
                            s.ttl_s = Some(ttl.as_secs());
                            s.rotate_after_s = Some(ttl.as_secs() * 2);
                        });
                        failing = self.renew().await.is_err();
                        let _ = reply.send(());
                    }
                },
                () = tokio::time::sleep(wait) => {
                    let result = match next {
                        Next::Renew => self.renew().await,
                        Next::Rotate(reason) => self.rotate(reason).await.map(|_| ()),
                    };
                    failing = result.is_err();
                }
            }
            if failing {
                self.retry = (self.retry * 2).min(RETRY_MAX);
            } else {
                self.retry = RETRY_FIRST;
                self.revoke_leftovers().await;
            }
        }
        self.stop().await;
    }

    /// The increment renewals ask for.
    fn ttl(&self) -> Duration {
        self.ttl_override.unwrap_or(self.current.granted)
    }

    /// What is due now, ignoring timing (used while retrying).
    fn due(&self) -> Next {
        if let Some(ttl) = self.ttl_override
            && self.current.leased_at.elapsed() >= ttl * 2
        {
            return Next::Rotate("lease_age");
        }
        if !self.current.renewable {
            return Next::Rotate("not_renewable");
        }
        Next::Renew
    }

    /// When to act next and how: renew at half the lease's remaining life, rotate when the demo's
    /// lease age is reached or a lease cannot be renewed (at two thirds of its life).
    fn schedule(&self) -> (Duration, Next) {
        let now = Instant::now();
        let left = self.current.expires.saturating_duration_since(now);
        if let Some(ttl) = self.ttl_override {
            let rotate_at = self.current.leased_at + ttl * 2;
            let renew_in = left / 2;
            let rotate_in = rotate_at.saturating_duration_since(now);
            if rotate_in <= renew_in {
                return (rotate_in, Next::Rotate("lease_age"));
            }
            return (renew_in, Next::Renew);
        }
        if !self.current.renewable {
            return (left * 2 / 3, Next::Rotate("not_renewable"));
        }
        (left / 2, Next::Renew)
    }

    fn degraded(&self, e: &CredentialError) {
        tracing::warn!(error = %e, role = %self.m.role, "database credentials: OpenBao failed; serving on the current login");
        let message = e.to_string();
        self.status.send_modify(|s| {
            s.state = "degraded".into();
            s.last_error = Some(message);
        });
    }

    async fn renew(&mut self) -> Result<(), CredentialError> {
        let asked = self.ttl();
        match self.m.vault.renew(&self.current.lease_id, asked).await {
            Ok(lease) => {
                self.current.expires = Instant::now() + lease.duration;
                self.current.renewals += 1;
                let renewals = self.current.renewals;
                self.status.send_modify(|s| {
                    s.state = "ok".into();
                    s.last_error = None;
                    s.renewals = renewals;
                    s.lease_expires_at_ms = Some(unix_ms() + duration_ms(lease.duration));
                });
                if lease.duration + CAP_TOLERANCE < asked {
                    // Capped by max_ttl: the lease cannot be kept much longer.
                    return self.rotate("capped").await.map(|_| ());
                }
                Ok(())
            }
            // The lease is gone (expired, revoked, or OpenBao restarted and forgot it).
            Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
                tracing::warn!(error = %e, "database lease lost; leasing a new login");
                self.rotate("lease_lost").await.map(|_| ())
            }
            Err(e) => {
                let e = CredentialError::Vault(e);
                self.degraded(&e);
                Err(e)
            }
        }
    }

    fn stage(&self, report: &mut RotationReport, started: Instant, stage: Stage) {
        report.stages.push(StageTiming {
            stage,
            after_ms: ms(started.elapsed()),
        });
        report.total_ms = ms(started.elapsed());
        let snapshot = report.clone();
        self.status
            .send_modify(|s| s.last_rotation = Some(snapshot));
    }

    /// Lease B → swap the pool to B → drain A → revoke A.
    async fn rotate(&mut self, reason: &str) -> Result<RotationReport, CredentialError> {
        let started = Instant::now();
        let new = match self
            .m
            .vault
            .db_credentials(&self.m.mount, &self.m.role)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                let e = CredentialError::Vault(e);
                self.degraded(&e);
                return Err(e);
            }
        };
        let old = std::mem::replace(&mut self.current, Current::from(&new));
        let mut report = RotationReport {
            reason: reason.to_owned(),
            started_at_ms: unix_ms(),
            old_user: old.username.clone(),
            new_user: new.username.clone(),
            stages: Vec::new(),
            drained: false,
            revoked: false,
            total_ms: 0.0,
        };
        self.stage(&mut report, started, Stage::Leased);

        self.m.gate.swap(&new.username);
        self.m
            .pool
            .set_connect_options(with_login(&self.m.base, &new));
        let granted = new.lease.duration;
        let lease_id = redact_lease_id(&new.lease.id);
        let username = new.username.clone();
        self.status.send_modify(|s| {
            s.state = "ok".into();
            s.last_error = None;
            s.username = Some(username);
            s.lease_id = Some(lease_id);
            s.lease_expires_at_ms = Some(unix_ms() + duration_ms(granted));
            s.renewals = 0;
        });
        self.stage(&mut report, started, Stage::PoolSwapped);

        report.drained = self.drain(&old).await;
        self.stage(&mut report, started, Stage::OldDrained);

        match self.m.vault.revoke(&old.lease_id).await {
            Ok(()) => {
                report.revoked = true;
                self.stage(&mut report, started, Stage::OldRevoked);
            }
            Err(e) => {
                tracing::warn!(error = %e, "revoking the old database lease failed; retrying later");
                self.unrevoked.push(old.lease_id);
            }
        }
        let rotations = self.status.borrow().rotations + 1;
        let snapshot = report.clone();
        self.status.send_modify(|s| {
            s.rotations = rotations;
            s.last_rotation = Some(snapshot);
        });
        tracing::info!(
            reason,
            old = %report.old_user,
            new = %report.new_user,
            drained = report.drained,
            total_ms = report.total_ms,
            "database credentials rotated"
        );
        Ok(report)
    }

    /// Waits until no session of the old login is doing work: none running a statement or inside
    /// a transaction, none that ran one within [`IDLE_SETTLE`]. Idle pooled connections of it are
    /// taken out and put back on the way, which closes them. What may remain idle is a connection
    /// the pool will never hand out again, or one held outside the pool that waits for
    /// notifications (`LISTEN`); revocation ends those and their owner reconnects with the new
    /// login. `false` when the drain timeout passed first.
    async fn drain(&self, old: &Current) -> bool {
        let deadline = Instant::now() + self.m.drain_timeout;
        // A session of the old login itself, out of the owner role: only a session of the same
        // user sees the state of the login's other sessions.
        let mut own = match self.own_session(old).await {
            Ok(conn) => Some(conn),
            Err(e) => {
                tracing::warn!(error = %e, "cannot look at the old login's sessions as itself");
                None
            }
        };
        let drained = loop {
            let mut idle = Vec::new();
            while let Some(conn) = self.m.pool.try_acquire() {
                idle.push(conn);
            }
            drop(idle);
            let busy = match own.as_mut() {
                Some(conn) => busy_sessions(conn, &old.username).await,
                None => sessions_of(&self.m.pool, &old.username).await,
            };
            match busy {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "counting the old login's sessions failed"),
            }
            if Instant::now() >= deadline {
                if let Some(conn) = own.as_mut() {
                    let left: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
                        "SELECT state, left(query, 80) FROM pg_stat_activity \
                         WHERE usename = $1 AND pid <> pg_backend_pid()",
                    )
                    .bind(&old.username)
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap_or_default();
                    tracing::warn!(user = %old.username, sessions = ?left, "the old login did not drain in time; revocation ends its sessions");
                }
                break false;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        };
        if let Some(conn) = own {
            let _ = sqlx::Connection::close(conn).await;
        }
        drained
    }

    async fn own_session(&self, old: &Current) -> Result<sqlx::PgConnection, sqlx::Error> {
        use sqlx::Connection as _;
        let options = self
            .m
            .base
            .clone()
            .username(&old.username)
            .password(old.password.expose());
        let mut conn = sqlx::PgConnection::connect_with(&options).await?;
        sqlx::query("SET ROLE NONE").execute(&mut conn).await?;
        Ok(conn)
    }

    async fn revoke_leftovers(&mut self) {
        let mut still = Vec::new();
        for id in std::mem::take(&mut self.unrevoked) {
            match self.m.vault.revoke(&id).await {
                Ok(()) => {}
                // Unknown to OpenBao (it restarted): nothing left to revoke there.
                Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {}
                Err(_) => still.push(id),
            }
        }
        self.unrevoked = still;
    }

    /// On shutdown: old leases whose revocation failed are tried once more. The current lease is
    /// left to expire (within one TTL, when OpenBao drops its user): the service may still be
    /// finishing requests on it during its grace period, and revoking would cut them off.
    async fn stop(mut self) {
        self.revoke_leftovers().await;
    }
}

/// Sessions of `user`, other than the caller's, that are running a statement, are inside a
/// transaction, or ran a statement within [`IDLE_SETTLE`]; `conn` must be a session of `user`
/// itself (without `SET ROLE`), or their state is hidden and every one counts as busy.
async fn busy_sessions(conn: &mut sqlx::PgConnection, user: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE usename = $1 AND pid <> pg_backend_pid() \
           AND (state IS DISTINCT FROM 'idle' \
                OR state_change > clock_timestamp() - make_interval(secs => $2))",
    )
    .bind(user)
    .bind(IDLE_SETTLE.as_secs_f64())
    .fetch_one(conn)
    .await
}

/// Sessions of `user` on the whole server, from `pg_stat_activity`.
pub async fn sessions_of(pool: &PgPool, user: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = $1")
        .bind(user)
        .fetch_one(pool)
        .await
}

/// OpenBao as a non-critical readiness check: down while leasing or renewing fails (the service
/// keeps serving on its current login until that expires).
pub struct VaultProbe(pub Credentials);

impl lab_http::Probe for VaultProbe {
    fn name(&self) -> &str {
        "openbao"
    }

    fn critical(&self) -> bool {
        false
    }

    fn check(&self) -> futures::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let status = self.0.status();
            if status.state == "degraded" {
                Err(status
                    .last_error
                    .unwrap_or_else(|| "OpenBao is not answering".into()))
            } else {
                Ok(())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redacted_lease_id_keeps_its_path_and_last_four_characters() {
        assert_eq!(
            redact_lease_id("database/creds/catalog/AbCdEf123"),
            "database/creds/catalog/…f123"
        );
        assert_eq!(redact_lease_id("xy"), "…xy");
    }

    #[test]
    fn the_gate_refuses_connections_opened_before_a_swap_and_keeps_later_ones() {
        let gate = SwapGate::default();
        assert!(gate.keeps(Duration::from_secs(3600)), "no swap yet");
        gate.swap("b");
        // Opened within the grace after the swap: possibly with the old login.
        assert!(!gate.keeps(Duration::ZERO));
        // Opened a second before the swap.
        assert!(!gate.keeps(Duration::from_secs(1)));
        std::thread::sleep(SWAP_GRACE + Duration::from_millis(50));
        // Opened just now, well after the swap and its grace.
        assert!(gate.keeps(Duration::ZERO));
        assert_eq!(gate.expected_user().as_deref(), Some("b"));
    }
}
