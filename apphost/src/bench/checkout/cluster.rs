//! The services under test, started as `lab up` wires them (orders → catalog, payments ↔ PSP),
//! but in the bench database and under the bench's AMQP prefix, each pinned to the server core.

use std::collections::HashSet;

use anyhow::{Context, bail};
use lab_catalog::seed::seed_id;
use serde_json::{Value, json};
use tokio::process::Child;
use uuid::Uuid;

use super::super::measure::{SERVER_CORE, own_exe, spawn_pinned_logged, wait_ok};
use super::{CheckoutArgs, DATABASE};
use crate::bootstrap;

/// Every exchange and queue of this run, apart from `lab up`'s and the other benches'.
const AMQP_PREFIX: &str = "bench.checkout.";
/// Catalog's administrator token for this run only (restocking needs it); catalog listens on
/// loopback and lives as long as the bench.
const ADMIN_TOKEN: &str = "bench-checkout-admin";
/// The seeded products orders go to, round-robin: spreads the reservations over five inventory
/// rows, so the figure is not one row lock's.
const SKUS: [&str; 5] = [
    "LAB-MUG",
    "LAB-TEE",
    "LAB-STICKERS",
    "LAB-HOODIE",
    "LAB-NOTEBOOK",
];
/// Catalog's ceiling on stock: more than any run sells.
const STOCK: i64 = 1_000_000;

/// The services under test; killed when dropped.
pub struct Cluster {
    _children: Vec<Child>,
    /// Their process ids (`taskset` execs the service, so these are the services themselves).
    pub pids: Vec<u32>,
    /// Base URLs.
    pub catalog: String,
    pub orders: String,
    pub psp: String,
}

/// One process to start: its service, base URL and settings (`LAB_<SERVICE>__` left off).
struct Proc {
    service: &'static str,
    url: String,
    settings: Vec<(&'static str, String)>,
}

impl Cluster {
    pub async fn start(args: &CheckoutArgs, client: &reqwest::Client) -> anyhow::Result<Self> {
        let exe = own_exe()?;
        let urls = crate::ports::free_ports::<5>()
            .context("choosing ports")?
            .map(|p| format!("http://127.0.0.1:{p}"));
        let procs = wiring(args, &urls)?;
        let mut children = Vec::new();
        for p in &procs {
            let prefix = lab_config::env_prefix(p.service);
            let listen = p.url.trim_start_matches("http://").to_owned();
            let env: Vec<(String, String)> =
                [("HTTP__LISTEN", listen), ("HTTP__REPLICA", "1".into())]
                    .into_iter()
                    .chain(p.settings.iter().cloned())
                    .map(|(k, v)| (format!("{prefix}{k}"), v))
                    .chain([("LAB_LOG".to_owned(), "warn".to_owned())])
                    .collect();
            let log = args
                .log_dir
                .as_ref()
                .map(|d| d.join(format!("{}.log", p.service)));
            children.push(spawn_pinned_logged(
                SERVER_CORE,
                &exe,
                &["run", p.service],
                &env,
                log.as_deref(),
            )?);
        }
        for p in &procs {
            wait_ok(client, &format!("{}/readyz", p.url))
                .await
                .with_context(|| format!("{} did not become ready", p.service))?;
        }
        let [catalog, orders, _, _, psp] = urls;
        let pids = children.iter().filter_map(Child::id).collect();
        Ok(Self {
            _children: children,
            pids,
            catalog,
            orders,
            psp,
        })
    }
}

/// What each service needs, wired as `lab up` wires it (`plan.rs`: orders → catalog; payments ↔
/// PSP), in the bench database, under the bench's AMQP prefix, with the PSP approving at once.
fn wiring(args: &CheckoutArgs, urls: &[String; 5]) -> anyhow::Result<Vec<Proc>> {
    let [catalog, orders, checkout, payments, psp] = urls;
    let db = |svc: &str| {
        bootstrap::service_url(
            &args.pg_admin_url,
            DATABASE,
            svc,
            lab_db::bootstrap::STATIC_PASSWORD,
        )
    };
    let amqp = [
        ("AMQP__URL", args.amqp_url.clone()),
        ("AMQP__PREFIX", AMQP_PREFIX.to_owned()),
    ];
    // The PSP makes its CA once and reuses it; payments trusts that CA for PayPal webhooks.
    let cert_dir = std::env::temp_dir().join("lab-bench-checkout-psp-certs");
    let cert_dir = cert_dir.to_string_lossy().into_owned();
    let proc = |service, url: &String, settings: Vec<(&'static str, String)>| Proc {
        service,
        url: url.clone(),
        settings,
    };
    Ok(vec![
        proc(
            "catalog",
            catalog,
            [
                ("DATABASE__URL", db("catalog")?),
                ("REDIS__URL", args.redis_url.clone()),
                ("REDIS__PREFIX", "bench:checkout:".to_owned()),
                ("ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
                ("PEERS", catalog.clone()),
            ]
            .into_iter()
            .chain(amqp.clone())
            .collect(),
        ),
        proc(
            "orders",
            orders,
            [
                ("DATABASE__URL", db("orders")?),
                ("CATALOG_URLS", catalog.clone()),
            ]
            .into_iter()
            .chain(amqp.clone())
            .collect(),
        ),
        proc(
            "checkout",
            checkout,
            [("DATABASE__URL", db("checkout")?)]
                .into_iter()
                .chain(amqp.clone())
                .collect(),
        ),
        proc(
            "payments",
            payments,
            [
                ("DATABASE__URL", db("payments")?),
                ("STRIPE__API_URL", format!("{psp}/stripe")),
                ("PAYPAL__API_URL", format!("{psp}/paypal")),
                (
                    "PAYPAL__CERT_URL_HOSTS",
                    psp.trim_start_matches("http://").to_owned(),
                ),
                ("PAYPAL__CA_PEM_FILE", format!("{cert_dir}/ca.pem")),
            ]
            .into_iter()
            .chain(amqp)
            .collect(),
        ),
        proc(
            "psp",
            psp,
            vec![
                ("SCENARIO__AUTO", "approve".to_owned()),
                ("STRIPE__WEBHOOK_URL", format!("{payments}/webhooks/stripe")),
                ("PAYPAL__WEBHOOK_URL", format!("{payments}/webhooks/paypal")),
                ("PAYPAL__CERT_DIR", cert_dir),
            ],
        ),
    ])
}

/// Sets the free stock of every product in [`SKUS`] to [`STOCK`]; returns their ids.
pub async fn restock(client: &reqwest::Client, catalog: &str) -> anyhow::Result<Vec<Uuid>> {
    let mut ids = Vec::new();
    for sku in SKUS {
        let id = seed_id(sku);
        let url = format!("{catalog}/products/{id}/inventory");
        let current = client.get(&url).send().await?.error_for_status()?;
        let etag = current
            .headers()
            .get("etag")
            .cloned()
            .context("no ETag on the inventory")?;
        let put = client
            .put(&url)
            .bearer_auth(ADMIN_TOKEN)
            .header("if-match", etag)
            .json(&json!({ "on_hand": STOCK }))
            .send()
            .await?;
        if !put.status().is_success() {
            bail!("restocking {sku} answered {}", put.status());
        }
        ids.push(id);
    }
    Ok(ids)
}

/// One webhook delivery attempt as the PSP lists it: session, event id, attempt number (1 for
/// the first).
pub type Attempt = (String, String, u64);

/// Every delivery attempt the PSP remembers (its latest 10 000).
pub async fn webhook_attempts(
    client: &reqwest::Client,
    psp: &str,
) -> anyhow::Result<HashSet<Attempt>> {
    let list: Vec<Value> = client
        .get(format!("{psp}/sandbox/webhooks"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(list
        .iter()
        .filter_map(|a| {
            Some((
                a["session"].as_str()?.to_owned(),
                a["event_id"].as_str()?.to_owned(),
                a["attempt"].as_u64()?,
            ))
        })
        .collect())
}

/// Of the sessions with attempts in `now` but not in `before`: how many, and which needed more
/// than one attempt (payments answered 503 "not known yet", or anything else but 2xx).
pub fn retried_sessions(
    now: &HashSet<Attempt>,
    before: &HashSet<Attempt>,
) -> (usize, HashSet<String>) {
    let fresh: Vec<&Attempt> = now.difference(before).collect();
    let sessions: HashSet<&str> = fresh.iter().map(|a| a.0.as_str()).collect();
    let retried = fresh
        .iter()
        .filter(|a| a.2 > 1)
        .map(|a| a.0.clone())
        .collect();
    (sessions.len(), retried)
}

/// The orders of PSP `sessions`, from payments' table (read as the administrator: no service
/// login may read another's schema).
pub async fn orders_of_sessions(
    admin_url: &str,
    sessions: &HashSet<String>,
) -> anyhow::Result<HashSet<Uuid>> {
    use sqlx::Connection;
    let mut url = reqwest::Url::parse(admin_url).context("--pg-admin-url")?;
    url.set_path(&format!("/{DATABASE}"));
    let mut conn = sqlx::PgConnection::connect(url.as_str())
        .await
        .context("connecting to the bench database as administrator")?;
    let sessions: Vec<&str> = sessions.iter().map(String::as_str).collect();
    let ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT order_id FROM payments.payments WHERE session_id = ANY($1)")
            .bind(&sessions)
            .fetch_all(&mut conn)
            .await
            .context("looking up the orders of retried sessions")?;
    let _ = conn.close().await;
    Ok(ids.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(session: &str, event: &str, n: u64) -> Attempt {
        (session.to_owned(), event.to_owned(), n)
    }

    #[test]
    fn only_sessions_new_since_the_snapshot_count_and_a_second_attempt_marks_a_retry() {
        let before = HashSet::from([attempt("cs_old", "evt_1", 1), attempt("cs_old", "evt_1", 2)]);
        let now: HashSet<Attempt> = before
            .iter()
            .cloned()
            .chain([
                attempt("cs_a", "evt_2", 1),
                attempt("cs_a", "evt_3", 1),
                attempt("cs_b", "evt_4", 1),
                attempt("cs_b", "evt_4", 2),
            ])
            .collect();
        assert_eq!(
            retried_sessions(&now, &before),
            (2, HashSet::from(["cs_b".to_owned()]))
        );
    }
}
