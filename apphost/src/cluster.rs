//! Bringing the infrastructure up: private instances (in parallel) or existing servers by
//! address, then the database bootstrap and OpenBao's database engine. The result is the
//! [`Wiring`] the services get, and the infrastructure rows of the process table.

use std::time::Duration;

use anyhow::Context;
use lab_db::bootstrap::{SCHEMA_SERVICES, STATIC_PASSWORD};

use crate::bootstrap;
use crate::datadir::{DataDir, Secrets, State};
use crate::infra::{self, InfraError, Instance, PidFile, openbao, postgres, rabbitmq, redis};
use crate::plan::Wiring;
use crate::ports;
use crate::table::{Health, ProcessInfo};

/// Where the infrastructure is; each address left out means "run a private one".
#[derive(Debug, Clone, clap::Args)]
pub struct InfraArgs {
    /// Administrator URL of an existing PostgreSQL (e.g. postgres://postgres@127.0.0.1:5432/postgres).
    #[arg(long, env = "LAB_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// URL of an existing Redis (e.g. redis://127.0.0.1:6379).
    #[arg(long, env = "LAB_REDIS_URL")]
    pub redis_url: Option<String>,
    /// URL of an existing RabbitMQ (e.g. amqp://guest:guest@127.0.0.1:5672/%2f).
    #[arg(long, env = "LAB_AMQP_URL")]
    pub amqp_url: Option<String>,
    /// Address of an existing OpenBao/Vault (needs --vault-token).
    #[arg(long, env = "LAB_VAULT_ADDR")]
    pub vault_addr: Option<String>,
    /// Token for --vault-addr.
    #[arg(long, env = "LAB_VAULT_TOKEN", hide_env_values = true)]
    pub vault_token: Option<String>,
    /// Run without OpenBao.
    #[arg(long)]
    pub no_vault: bool,
    /// The database holding every service schema.
    #[arg(long, default_value = "lab")]
    pub database: String,
}

/// The infrastructure, ready for the services.
pub struct Infra {
    /// What the services are told.
    pub wiring: Wiring,
    /// Rows for the process table.
    pub rows: Vec<ProcessInfo>,
    /// One line per piece: started (with its boot time), reused, or external.
    pub summary: Vec<String>,
}

/// Private binaries resolved before anything starts, so a missing one fails with nothing started.
struct Binaries {
    /// `initdb` and `postgres`, when PostgreSQL is private.
    postgres: Option<postgres::Binaries>,
    /// `redis-server`, when Redis is private.
    redis: Option<std::path::PathBuf>,
    /// RabbitMQ's start script, when the broker is private.
    rabbitmq: Option<std::path::PathBuf>,
    /// `bao`, when OpenBao is private.
    openbao: Option<std::path::PathBuf>,
}

/// Starts or finds every piece of infrastructure and prepares it; on failure, stops what this
/// call started.
pub async fn bring_up(
    dir: &DataDir,
    args: &InfraArgs,
    state: &mut State,
    secrets: &Secrets,
) -> anyhow::Result<Infra> {
    if args.vault_addr.is_some() && args.vault_token.is_none() && !args.no_vault {
        anyhow::bail!("--vault-addr needs a token: pass --vault-token or set LAB_VAULT_TOKEN");
    }
    let private_vault = !args.no_vault && args.vault_addr.is_none();
    let bins = Binaries {
        postgres: args
            .postgres_url
            .is_none()
            .then(postgres::preflight)
            .transpose()?,
        redis: args
            .redis_url
            .is_none()
            .then(redis::preflight)
            .transpose()?,
        rabbitmq: args
            .amqp_url
            .is_none()
            .then(rabbitmq::preflight)
            .transpose()?,
        openbao: if private_vault {
            Some(openbao::preflight().await?)
        } else {
            None
        },
    };
    let port = |state: &mut State, key: &str| -> anyhow::Result<u16> {
        let running = PidFile::running(dir, key).map(|p| p.port);
        match running {
            Some(p) => {
                state.ports.insert(key.to_owned(), p);
                Ok(p)
            }
            None => ports::assign(state, key, false).context("no free port"),
        }
    };
    let pg_port = port(state, "postgres")?;
    let redis_port = port(state, "redis")?;
    let amqp_port = port(state, "rabbitmq")?;
    let dist_port = ports::assign(
        state,
        "rabbitmq-dist",
        PidFile::running(dir, "rabbitmq").is_some(),
    )?;
    let bao_port = port(state, "openbao")?;
    state.save(dir)?;

    let (pg, rd, mq, bao) = tokio::join!(
        maybe(bins.postgres.as_ref(), |b| postgres::ensure(
            dir,
            b,
            pg_port,
            &secrets.postgres_admin
        )),
        maybe(bins.redis.as_ref(), |b| redis::ensure(dir, b, redis_port)),
        maybe(bins.rabbitmq.as_ref(), |b| rabbitmq::ensure(
            dir, b, amqp_port, dist_port
        )),
        maybe(bins.openbao.as_ref(), |b| openbao::ensure(
            dir,
            b,
            bao_port,
            &secrets.vault_root_token
        )),
    );
    let results = [pg, rd, mq, bao];
    let mut instances: Vec<Instance> = Vec::new();
    let mut first_error: Option<InfraError> = None;
    for r in results {
        match r {
            Ok(Some(i)) => instances.push(i),
            Ok(None) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        undo(dir, &instances).await;
        return Err(e.into());
    }
    match prepare(dir, args, &instances, secrets).await {
        Ok(wiring) => Ok(Infra {
            rows: rows(args, &instances, &wiring),
            summary: summary(args, &instances),
            wiring,
        }),
        Err(e) => {
            undo(dir, &instances).await;
            Err(e)
        }
    }
}

async fn maybe<'a, B, F, Fut>(bin: Option<&'a B>, f: F) -> Result<Option<Instance>, InfraError>
where
    F: FnOnce(&'a B) -> Fut,
    Fut: std::future::Future<Output = Result<Instance, InfraError>>,
{
    match bin {
        Some(b) => f(b).await.map(Some),
        None => Ok(None),
    }
}

async fn undo(dir: &DataDir, instances: &[Instance]) {
    futures::future::join_all(instances.iter().map(|i| infra::undo(dir, i))).await;
}

fn port_of(instances: &[Instance], name: &str) -> Option<u16> {
    instances.iter().find(|i| i.name == name).map(|i| i.port)
}

/// Database, schemas, logins and OpenBao's engine; returns what the services are told.
async fn prepare(
    dir: &DataDir,
    args: &InfraArgs,
    instances: &[Instance],
    secrets: &Secrets,
) -> anyhow::Result<Wiring> {
    let private_pg = port_of(instances, "postgres");
    let admin_url = match (&args.postgres_url, private_pg) {
        (Some(url), _) => url.clone(),
        (None, Some(p)) => postgres::admin_url(p, &secrets.postgres_admin),
        (None, None) => anyhow::bail!("no PostgreSQL: pass --postgres-url"),
    };
    // On an existing server the static logins keep lab_db's well-known password (a trust-auth
    // development server never checks it); the private server gets a generated one.
    let static_pw = if private_pg.is_some() {
        secrets.static_login.as_str()
    } else {
        STATIC_PASSWORD
    };
    let vault = match (&args.vault_addr, port_of(instances, "openbao")) {
        _ if args.no_vault => None,
        (Some(addr), _) => Some(
            lab_vault::Vault::new(
                addr,
                lab_config::SecretString::new(args.vault_token.clone().unwrap_or_default()),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        (None, Some(p)) => Some(openbao::client(p, &secrets.vault_root_token)?),
        (None, None) => None,
    };
    let vault_pw = vault.as_ref().map(|_| secrets.vault_admin.as_str());
    // Measured: well under a second; a server that just started may still be finishing recovery.
    tokio::time::timeout(
        Duration::from_secs(30),
        bootstrap::prepare(&admin_url, &args.database, static_pw, vault_pw),
    )
    .await
    .context("PostgreSQL bootstrap timed out")??;
    if let Some(vault) = &vault {
        let target = openbao::EngineTarget {
            host_port: bootstrap::host_port(&admin_url)?,
            database: &args.database,
            admin_user: bootstrap::VAULT_ADMIN,
            admin_password: &secrets.vault_admin,
        };
        openbao::configure(vault, &target).await?;
    }
    let mut database_urls = std::collections::BTreeMap::new();
    for service in SCHEMA_SERVICES {
        database_urls.insert(
            service.to_owned(),
            bootstrap::service_url(&admin_url, &args.database, service, static_pw)?,
        );
    }
    let redis_url = match (&args.redis_url, port_of(instances, "redis")) {
        (Some(u), _) => u.clone(),
        (None, Some(p)) => format!("redis://127.0.0.1:{p}"),
        (None, None) => anyhow::bail!("no Redis: pass --redis-url"),
    };
    let amqp_url = match (&args.amqp_url, port_of(instances, "rabbitmq")) {
        (Some(u), _) => u.clone(),
        (None, Some(p)) => rabbitmq::url(p),
        (None, None) => anyhow::bail!("no RabbitMQ: pass --amqp-url"),
    };
    // A server this cluster does not own may carry another cluster too: give this one its own
    // names there. Stable per data directory, so a restarted cluster finds its queues again.
    let namespace = namespace(dir.root());
    Ok(Wiring {
        database_urls,
        redis_url,
        amqp_url,
        redis_prefix: match args.redis_url {
            Some(_) => format!("{namespace}:"),
            None => String::new(),
        },
        amqp_prefix: match args.amqp_url {
            Some(_) => format!("{namespace}."),
            None => String::new(),
        },
        vault_addr: vault.as_ref().map(|v| v.addr().to_owned()),
        vault_token: vault.as_ref().map(|_| match &args.vault_addr {
            Some(_) => args.vault_token.clone().unwrap_or_default(),
            None => secrets.vault_root_token.clone(),
        }),
        psp_cert_dir: dir.root().join("psp-certs"),
        bff_session_key: secrets.bff_session_key.clone(),
        // Fresh each `lab up`: identity and every BFF get it from this one plan.
        bff_client_secret: crate::datadir::random_secret(),
    })
}

/// The cluster's name on shared servers: `lab-` and the CRC-32 of its data directory's path.
fn namespace(root: &std::path::Path) -> String {
    format!(
        "lab-{:08x}",
        crc32fast::hash(root.as_os_str().as_encoded_bytes())
    )
}

/// Rows for the process table: private instances with their pid, external servers without.
fn rows(args: &InfraArgs, instances: &[Instance], wiring: &Wiring) -> Vec<ProcessInfo> {
    let external = [
        ("postgres", args.postgres_url.clone(), 5432),
        ("redis", Some(wiring.redis_url.clone()), 6379),
        ("rabbitmq", Some(wiring.amqp_url.clone()), 5672),
        ("openbao", wiring.vault_addr.clone(), 8200),
    ];
    external
        .into_iter()
        .filter_map(|(name, url, default_port)| {
            let private = instances.iter().find(|i| i.name == name);
            let url = url?;
            let port = private.map(|i| i.port).unwrap_or_else(|| {
                reqwest::Url::parse(&url)
                    .ok()
                    .and_then(|u| u.port())
                    .unwrap_or(default_port)
            });
            Some(ProcessInfo {
                name: name.to_owned(),
                kind: "infra".into(),
                replica: 1,
                pid: private.map(|i| i.pid),
                port,
                url: redact(&url),
                health: Health::Ready,
                restarts: 0,
                uptime_s: None,
                ready_ms: private.and_then(|i| i.boot).map(|d| d.as_millis() as u64),
                last_error: None,
            })
        })
        .chain(
            // The private PostgreSQL's admin URL is not in the wiring; show where it is.
            instances
                .iter()
                .filter(|i| i.name == "postgres" && args.postgres_url.is_none())
                .map(|i| ProcessInfo {
                    name: "postgres".into(),
                    kind: "infra".into(),
                    replica: 1,
                    pid: Some(i.pid),
                    port: i.port,
                    url: format!("postgres://127.0.0.1:{}/{}", i.port, args.database),
                    health: Health::Ready,
                    restarts: 0,
                    uptime_s: None,
                    ready_ms: i.boot.map(|d| d.as_millis() as u64),
                    last_error: None,
                }),
        )
        .collect()
}

/// A URL without its password, for display.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

fn summary(args: &InfraArgs, instances: &[Instance]) -> Vec<String> {
    let mut out: Vec<String> = instances
        .iter()
        .map(|i| match i.boot {
            Some(d) if i.started_now => format!(
                "{} started in {:.2} s{} (pid {}, port {})",
                i.name,
                d.as_secs_f64(),
                i.init
                    .map(|t| format!(" after initdb {:.2} s", t.as_secs_f64()))
                    .unwrap_or_default(),
                i.pid,
                i.port
            ),
            _ => format!(
                "{} already running (pid {}, port {})",
                i.name, i.pid, i.port
            ),
        })
        .collect();
    for (name, given) in [
        ("postgres", &args.postgres_url),
        ("redis", &args.redis_url),
        ("rabbitmq", &args.amqp_url),
        ("openbao", &args.vault_addr),
    ] {
        if let Some(url) = given {
            out.push(format!("{name}: existing server {}", redact(url)));
        }
    }
    if args.no_vault {
        out.push("openbao: skipped (--no-vault)".into());
        out.push("identity: skipped (its signing keys live only in OpenBao)".into());
    }
    out
}

/// Starts a private instance again after chaos killed or stopped it: the same binary, port and
/// data as the first start (`ensure` finds the data already initialised).
#[derive(Clone)]
pub struct Relaunch {
    /// Where the instances keep their data and pid files.
    pub dir: DataDir,
    /// PostgreSQL's admin password and OpenBao's root token.
    pub secrets: Secrets,
    /// RabbitMQ's Erlang distribution port, kept from the first start.
    pub dist_port: u16,
}

impl Relaunch {
    /// Starts `name` on `port`; OpenBao is refused by the caller (a dev server forgets its
    /// leases and keys on restart).
    pub async fn start(&self, name: &str, port: u16) -> Result<Instance, InfraError> {
        match name {
            "postgres" => {
                let bins = postgres::preflight()?;
                postgres::ensure(&self.dir, &bins, port, &self.secrets.postgres_admin).await
            }
            "redis" => redis::ensure(&self.dir, &redis::preflight()?, port).await,
            "rabbitmq" => {
                rabbitmq::ensure(&self.dir, &rabbitmq::preflight()?, port, self.dist_port).await
            }
            other => Err(InfraError::Setup {
                what: "chaos",
                reason: format!("{other} cannot be started again by the apphost"),
            }),
        }
    }
}
