//! The harness every Lab integration test is built on, in the zero2prod / crates.io style.
//!
//! A [`TestEnv`] is one test's slice of the real infrastructure: its own PostgreSQL database
//! (cloned from a migrated template, see [`db`]), its own Redis key prefix or a private
//! `redis-server` it may stop and start, its own RabbitMQ name prefix, and an OpenBao dev server
//! when asked. [`TestEnv::spawn`] starts any service in-process on port 0 from its `build`
//! function and settings, so one harness serves all seven services:
//!
//! ```ignore
//! let env = TestEnv::builder().with_database(&[("catalog", &lab_catalog::MIGRATOR)]).start().await;
//! let app = env.spawn(lab_catalog::build, lab_catalog::Settings {
//!     http: env.http(1), database: env.database("catalog"), redis: env.redis(), amqp: env.amqp(),
//! }).await;
//! ```
//!
//! Each test binary names the migrations its template holds (`with_database(&[…])`): services
//! have this crate only as a dev-dependency, so it cannot list them itself. A binary that runs
//! several services (the BFF's, with catalog instances) passes each one's migrator; every
//! distinct set gets its own template, built once for all runs until a migration changes.
//!
//! Nothing here writes the process environment; it reads `LAB_TEST_PG_ADMIN_URL` (which
//! PostgreSQL to use) and `LAB_TEST_REDIS_URL` / `LAB_TEST_AMQP_URL` (shared Redis, RabbitMQ).

pub mod app;
pub mod bus;
pub mod db;
pub mod faults;
pub mod identity;
pub mod platform;
pub mod poll;
pub mod process;
pub mod sse;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lab_cache::RedisSettings;
use lab_cache::redis::Commands as _;
use lab_config::SecretString;
use lab_db::DbSettings;
use lab_http::{Application, HttpSettings};
use lab_messaging::AmqpSettings;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

pub use app::{TestApp, test_client};
pub use bus::{BUS_DEADLINE, Bus};
pub use db::{ServiceMigrator, TestDb};
pub use poll::eventually;
pub use process::{DevVault, PrivateRedis, closed_port_url, free_port, free_ports};
pub use sse::{SseEvent, SseStream};

/// Leases in tests last as long as in `lab up`: no test waits for a natural rotation.
const VAULT_TEST_TTL: Duration = Duration::from_secs(300);
const VAULT_TEST_MAX_TTL: Duration = Duration::from_secs(900);

/// Shared Redis, unless `LAB_TEST_REDIS_URL` names another.
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Shared RabbitMQ, unless `LAB_TEST_AMQP_URL` names another.
const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A test's infrastructure; cheap to clone, torn down when the last clone (and every app
/// spawned from it) is dropped.
#[derive(Clone)]
pub struct TestEnv(Arc<Inner>);

struct Inner {
    /// Unique per test: `t<unix seconds>x<random>`; names its Redis prefix and RabbitMQ names.
    id: String,
    /// Its OpenBao dev server, when asked for. Declared before `db`: fields drop in order, and
    /// its leases must be revoked while their database still exists.
    vault: Option<DevVault>,
    /// Its database, when asked for.
    db: Option<TestDb>,
    /// Its private Redis, when asked for; behind a lock so a test can stop and start it.
    private_redis: Option<Mutex<PrivateRedis>>,
    /// The private Redis's URL, fixed for the life of the test.
    private_redis_url: Option<String>,
    /// Whether RabbitMQ settings were handed out, so objects under the prefix may exist.
    amqp_used: AtomicBool,
    /// Parent of every spawned app's shutdown token.
    shutdown: CancellationToken,
}

/// What a test asks of [`TestEnv`] before it starts.
#[derive(Default)]
#[must_use]
pub struct TestEnvBuilder {
    migrators: Option<Vec<ServiceMigrator>>,
    private_redis: bool,
    vault: bool,
}

impl TestEnvBuilder {
    /// A fresh database holding the schemas of every service and the migrations of these.
    pub fn with_database(mut self, migrators: &[ServiceMigrator]) -> Self {
        self.migrators = Some(migrators.to_vec());
        self
    }

    /// A `redis-server` of the test's own instead of a prefix on the shared one.
    pub fn with_private_redis(mut self) -> Self {
        self.private_redis = true;
        self
    }

    /// An OpenBao dev server. Guard the test with [`require_bao!`] so it skips where `bao` is
    /// not installed.
    pub fn with_vault(mut self) -> Self {
        self.vault = true;
        self
    }

    /// Starts what was asked for; panics with the reason (test set-up has no one to report to).
    pub async fn start(self) -> TestEnv {
        lab_telemetry::init_logging();
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let id = format!("t{secs}x{:08x}", rand::random::<u32>());
        let db = match &self.migrators {
            Some(m) => Some(
                TestDb::new(m)
                    .await
                    .unwrap_or_else(|e| panic!("test database: {e:#}")),
            ),
            None => None,
        };
        let private_redis = if self.private_redis {
            Some(
                PrivateRedis::start()
                    .await
                    .unwrap_or_else(|e| panic!("private redis: {e:#}")),
            )
        } else {
            None
        };
        let vault = if self.vault {
            Some(
                DevVault::start()
                    .await
                    .unwrap_or_else(|e| panic!("OpenBao dev server: {e:#}")),
            )
        } else {
            None
        };
        TestEnv(Arc::new(Inner {
            id,
            db,
            private_redis_url: private_redis.as_ref().map(PrivateRedis::url),
            private_redis: private_redis.map(Mutex::new),
            vault,
            amqp_used: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
        }))
    }
}

impl TestEnv {
    pub fn builder() -> TestEnvBuilder {
        TestEnvBuilder::default()
    }

    /// This test's unique id.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// HTTP settings for one replica: port 0, and a short grace so a test never waits long.
    pub fn http(&self, replica: u16) -> HttpSettings {
        HttpSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            replica,
            shutdown_grace_ms: 2_000,
        }
    }

    /// The test database; panics when the env was built without one.
    pub fn db(&self) -> &TestDb {
        self.0
            .db
            .as_ref()
            .unwrap_or_else(|| panic!("this TestEnv has no database: use .with_database(…)"))
    }

    /// `service`'s static login on the test database.
    pub fn database(&self, service: &str) -> DbSettings {
        self.db().settings(service)
    }

    /// Database settings pointing at a port where nothing listens.
    pub fn unreachable_database(&self, service: &str) -> DbSettings {
        DbSettings {
            url: SecretString::new(format!(
                "postgres://{}:{}@127.0.0.1:{}/lab",
                lab_db::bootstrap::login_role(service),
                lab_db::bootstrap::STATIC_PASSWORD,
                free_port()
            )),
            // Refused connections fail at once; this only bounds a firewall that drops packets.
            acquire_timeout_ms: 1_000,
            ..DbSettings::local(service)
        }
    }

    /// Redis with this test's key prefix (`test:<id>:`), on the private server if there is one.
    pub fn redis(&self) -> RedisSettings {
        let url = self
            .0
            .private_redis_url
            .clone()
            .unwrap_or_else(shared_redis_url);
        RedisSettings {
            url,
            prefix: self.redis_prefix(),
        }
    }

    /// `test:<id>:`, prepended to every key and channel of this test.
    pub fn redis_prefix(&self) -> String {
        format!("test:{}:", self.0.id)
    }

    /// Kills the private Redis (as a crash would). Panics without `.with_private_redis()`.
    pub async fn stop_redis(&self) {
        self.private_redis().lock().await.stop().await;
    }

    /// Starts the private Redis again on the same port and waits until it answers.
    pub async fn start_redis(&self) {
        self.private_redis()
            .lock()
            .await
            .resume()
            .await
            .unwrap_or_else(|e| panic!("restarting the private redis: {e:#}"));
    }

    fn private_redis(&self) -> &Mutex<PrivateRedis> {
        self.0.private_redis.as_ref().unwrap_or_else(|| {
            panic!("this TestEnv has no private redis: use .with_private_redis()")
        })
    }

    /// The shared RabbitMQ, every name under this test's [`TestEnv::amqp_prefix`].
    pub fn amqp(&self) -> AmqpSettings {
        self.0.amqp_used.store(true, Ordering::Relaxed);
        let url = shared_amqp_url();
        AmqpSettings {
            url: SecretString::new(url),
            prefix: self.amqp_prefix(),
            ..AmqpSettings::default()
        }
    }

    /// RabbitMQ settings pointing at a port where nothing listens.
    pub fn unreachable_amqp(&self) -> AmqpSettings {
        AmqpSettings {
            url: SecretString::new(format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port())),
            prefix: self.amqp_prefix(),
            ..AmqpSettings::default()
        }
    }

    /// `test.<id>.`: the prefix of every exchange and queue this test declares, so parallel
    /// tests never share one.
    pub fn amqp_prefix(&self) -> String {
        format!("test.{}.", self.0.id)
    }

    /// The OpenBao dev server; panics without `.with_vault()`.
    pub fn vault(&self) -> &DevVault {
        self.0
            .vault
            .as_ref()
            .unwrap_or_else(|| panic!("this TestEnv has no OpenBao: use .with_vault()"))
    }

    /// Configures the dev OpenBao's database secrets engine for this test's database (again after
    /// a restart): a connection as the test's superuser and one role per service schema.
    pub async fn configure_vault_engine(&self) {
        let vault = self.vault().client();
        let db = self.db();
        vault
            .mount("database", "database")
            .await
            .unwrap_or_else(|e| panic!("mounting the database engine: {e}"));
        let (host_port, admin_user) = db.server();
        let connection = lab_vault::DbConnection {
            connection_url: format!(
                "postgresql://{{{{username}}}}:{{{{password}}}}@{host_port}/{}?sslmode=disable",
                db.name
            ),
            username: admin_user,
            password: String::new(),
            allowed_roles: "*".into(),
        };
        vault
            .write_db_connection("database", "lab", &connection)
            .await
            .unwrap_or_else(|e| panic!("writing the engine's connection: {e}"));
        for service in lab_db::bootstrap::SCHEMA_SERVICES {
            let role = lab_db::credentials::engine_role(
                "lab",
                service,
                &connection.username,
                VAULT_TEST_TTL,
                VAULT_TEST_MAX_TTL,
            );
            vault
                .write_db_role("database", service, &role)
                .await
                .unwrap_or_else(|e| panic!("writing the engine role {service}: {e}"));
        }
    }

    /// `service`'s database settings with its login leased from the dev OpenBao (engine
    /// configured by [`TestEnv::configure_vault_engine`] first).
    pub async fn vault_database(&self, service: &str) -> DbSettings {
        self.configure_vault_engine().await;
        let vault = self.vault();
        DbSettings {
            vault: lab_db::VaultLogin {
                addr: vault.addr.clone(),
                token: SecretString::new(vault.root_token.clone()),
                // A test's drain never needs long; a stuck one shows up as a timed-out drain.
                drain_timeout_ms: 10_000,
                ..lab_db::VaultLogin::default()
            },
            ..self.database(service)
        }
    }

    /// A fresh shutdown token for one app, cancelled at the latest when the env goes.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.0.shutdown.child_token()
    }

    /// Builds a service with its `build` function and serves it; panics if it does not build.
    pub async fn spawn<S, F, Fut>(&self, build: F, settings: S) -> TestApp
    where
        F: FnOnce(S, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<Application>>,
    {
        self.spawn_with_routes(build, settings, axum::Router::new())
            .await
    }

    /// [`TestEnv::spawn`] with test-only `routes` added to the service (a slow handler, a hook).
    pub async fn spawn_with_routes<S, F, Fut>(
        &self,
        build: F,
        settings: S,
        routes: axum::Router,
    ) -> TestApp
    where
        F: FnOnce(S, CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<Application>>,
    {
        let shutdown = self.shutdown_token();
        let app = build(settings, shutdown.clone())
            .await
            .unwrap_or_else(|e| panic!("the service did not build: {e:#}"))
            .merge_routes(routes);
        TestApp::start(app, shutdown, self.clone())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if self.private_redis.is_none() {
            delete_keys(&shared_redis_url(), &format!("test:{}:", self.id));
        }
        if self.amqp_used.load(Ordering::Relaxed) {
            delete_amqp_objects(&format!("test.{}.", self.id));
        }
    }
}

fn shared_amqp_url() -> String {
    std::env::var("LAB_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.into())
}

fn shared_redis_url() -> String {
    std::env::var("LAB_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.into())
}

/// Best effort: removes this test's keys from the shared Redis so it does not fill up.
fn delete_keys(url: &str, prefix: &str) {
    let Ok(client) = lab_cache::redis::Client::open(url) else {
        return;
    };
    // Synchronous on purpose (this runs in Drop); local Redis answers in well under this.
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
        return;
    };
    let keys: Vec<String> = match conn.scan_match::<_, String>(format!("{prefix}*")) {
        Ok(iter) => iter.filter_map(Result::ok).collect(),
        Err(_) => return,
    };
    if !keys.is_empty() {
        let _: Result<(), _> = lab_cache::redis::cmd("DEL").arg(keys).query(&mut conn);
    }
}

/// Best effort: deletes the exchange and every service's queues (main, retry, dead) under this
/// test's prefix, so the shared broker does not fill up. Retry queues of delays other than the
/// defaults are the test's own to delete (`Topology::delete`).
fn delete_amqp_objects(prefix: &str) {
    let settings = AmqpSettings {
        url: SecretString::new(shared_amqp_url()),
        prefix: prefix.to_owned(),
        ..AmqpSettings::default()
    };
    // Drop cannot await; a short-lived thread with its own runtime does the work.
    let cleaner = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let work = async {
                let properties = lab_messaging::lapin::ConnectionProperties::default();
                let conn =
                    lab_messaging::lapin::Connection::connect(settings.url.expose(), properties)
                        .await
                        .ok()?;
                // Only services with a schema consume messages (their inbox lives there).
                for service in lab_db::bootstrap::SCHEMA_SERVICES {
                    // A channel each: a failed delete closes the channel it ran on.
                    if let Ok(channel) = conn.create_channel().await {
                        let topology = lab_messaging::Topology::new(&settings, service);
                        let _ = topology.delete(&channel).await;
                    }
                }
                let _ = conn.close(200, "test cleanup".into()).await;
                Some(())
            };
            // A local broker answers in milliseconds; never hold a finished test up for long.
            let _ = tokio::time::timeout(Duration::from_secs(5), work).await;
        });
    });
    let _ = cleaner.join();
}

/// Returns from the calling test with a clear message when `bao` is not installed.
#[macro_export]
macro_rules! require_bao {
    () => {
        if !$crate::DevVault::available() {
            eprintln!("{}", $crate::DevVault::MISSING);
            return;
        }
    };
}
