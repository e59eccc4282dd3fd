//! What runs: every service process (catalog twice), what it needs, when it may start, and the
//! `LAB_<SERVICE>__…` variables that wire it. This is the only place that knows the topology.

use std::net::SocketAddr;

/// One service of the cluster and what its `Settings` contain.
struct ServiceDef {
    /// Its `lab run` name and env prefix.
    name: &'static str,
    /// How many processes run it.
    replicas: u16,
    /// Whether its settings have a `database` section (a schema of its own).
    database: bool,
    /// Whether its settings have a `redis` section.
    redis: bool,
    /// Whether its settings have an `amqp` section.
    amqp: bool,
}

/// Start order. The BFF comes last and waits for every other process; the rest need only the
/// infrastructure (they talk to each other through RabbitMQ, not at start-up).
const SERVICES: [ServiceDef; 7] = [
    svc("identity", 1, true, true, false),
    svc("catalog", 2, true, true, true),
    svc("orders", 1, true, true, true),
    svc("psp", 1, false, false, false),
    svc("payments", 1, true, false, true),
    svc("checkout", 1, true, false, true),
    svc("bff", 1, false, true, true),
];

const fn svc(
    name: &'static str,
    replicas: u16,
    database: bool,
    redis: bool,
    amqp: bool,
) -> ServiceDef {
    ServiceDef {
        name,
        replicas,
        database,
        redis,
        amqp,
    }
}

/// How the infrastructure is reached, as the services see it.
#[derive(Debug, Clone)]
pub struct Wiring {
    /// Database URL of each service's login, by service.
    pub database_urls: std::collections::BTreeMap<String, String>,
    /// `redis://…`
    pub redis_url: String,
    /// `amqp://…`
    pub amqp_url: String,
    /// Prepended to every Redis key and channel of this cluster's processes; empty on a private
    /// Redis. On a server another cluster may share (`--redis-url`), a per-cluster namespace, so
    /// two clusters never read each other's buckets, faults or live events.
    pub redis_prefix: String,
    /// Prepended to every exchange and queue name, for the same reason: on a shared broker
    /// (`--amqp-url`) two clusters would otherwise consume each other's saga messages.
    pub amqp_prefix: String,
    /// OpenBao's address, when it is in play.
    pub vault_addr: Option<String>,
    /// A token for it (the private server's root token, or `--vault-token`): identity keeps its
    /// signing keys there.
    pub vault_token: Option<String>,
    /// Where the sandbox PSP keeps its CA and signing certificate (made on its first start),
    /// and where payments reads the CA it trusts for PayPal webhooks.
    pub psp_cert_dir: std::path::PathBuf,
    /// The key the BFF replicas sign session cookies with (shared, kept across restarts).
    pub bff_session_key: String,
    /// The secret the BFF proves itself with to get its narrow `demo` client token from
    /// identity; empty leaves client tokens off (the demos that need one answer 503).
    pub bff_client_secret: String,
}

/// One process to run.
#[derive(Debug, Clone)]
pub struct ProcSpec {
    /// `catalog-2`, or just `identity` when the service has one replica.
    pub name: String,
    /// The service (`lab run <service>`).
    pub service: &'static str,
    /// 1-based replica number.
    pub replica: u16,
    /// Where it listens.
    pub listen: SocketAddr,
    /// Names of the processes that must be ready before it starts.
    pub after: Vec<String>,
    /// Its `LAB_…` variables.
    pub env: Vec<(String, String)>,
}

impl ProcSpec {
    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }
}

/// The process names in start order, with the port key each is remembered under.
pub fn process_names() -> Vec<(&'static str, u16, String)> {
    SERVICES
        .iter()
        .flat_map(|s| (1..=s.replicas).map(move |r| (s.name, r, name(s, r))))
        .collect()
}

fn name(s: &ServiceDef, replica: u16) -> String {
    if s.replicas > 1 {
        format!("{}-{replica}", s.name)
    } else {
        s.name.to_owned()
    }
}

/// Every process with its wiring; `listen(name)` gives each one's address.
pub fn plan(wiring: &Wiring, mut listen: impl FnMut(&str) -> SocketAddr) -> Vec<ProcSpec> {
    let mut procs: Vec<ProcSpec> = Vec::new();
    for s in &SERVICES {
        // Identity's signing keys live only in OpenBao (never a default key): without it,
        // identity does not run.
        if s.name == "identity" && wiring.vault_addr.is_none() {
            continue;
        }
        for replica in 1..=s.replicas {
            let name = name(s, replica);
            let addr = listen(&name);
            let prefix = lab_config::env_prefix(s.name);
            let mut env = vec![
                (format!("{prefix}HTTP__LISTEN"), addr.to_string()),
                (format!("{prefix}HTTP__REPLICA"), replica.to_string()),
            ];
            if s.database
                && let Some(url) = wiring.database_urls.get(s.name)
            {
                env.push((format!("{prefix}DATABASE__URL"), url.clone()));
                // With OpenBao, the login is leased from its database engine (role = service
                // name) and rotated; the URL then only supplies host, port and database.
                if let (Some(addr), Some(token)) = (&wiring.vault_addr, &wiring.vault_token) {
                    env.push((format!("{prefix}DATABASE__VAULT__ADDR"), addr.clone()));
                    env.push((format!("{prefix}DATABASE__VAULT__TOKEN"), token.clone()));
                }
            }
            if s.redis {
                env.push((format!("{prefix}REDIS__URL"), wiring.redis_url.clone()));
                if !wiring.redis_prefix.is_empty() {
                    env.push((
                        format!("{prefix}REDIS__PREFIX"),
                        wiring.redis_prefix.clone(),
                    ));
                }
            }
            if s.amqp {
                env.push((format!("{prefix}AMQP__URL"), wiring.amqp_url.clone()));
                if !wiring.amqp_prefix.is_empty() {
                    env.push((format!("{prefix}AMQP__PREFIX"), wiring.amqp_prefix.clone()));
                }
            }
            procs.push(ProcSpec {
                name,
                service: s.name,
                replica,
                listen: addr,
                after: Vec::new(),
                env,
            });
        }
    }
    wire_catalog_users(&mut procs);
    wire_payments(&mut procs, wiring);
    wire_identity(&mut procs, wiring);
    wire_token_checks(&mut procs);
    wire_bff(&mut procs, wiring);
    wire_client_token(&mut procs, wiring);
    procs
}

/// Every catalog replica learns its peers (the race and cache demos span them); orders learns
/// where to snapshot prices and starts after the catalog.
fn wire_catalog_users(procs: &mut [ProcSpec]) {
    let catalog: Vec<(String, String)> = procs
        .iter()
        .filter(|p| p.service == "catalog")
        .map(|p| (p.name.clone(), p.url()))
        .collect();
    let urls = catalog
        .iter()
        .map(|(_, u)| u.as_str())
        .collect::<Vec<_>>()
        .join(",");
    for p in procs.iter_mut() {
        match p.service {
            "catalog" => p.env.push(("LAB_CATALOG__PEERS".into(), urls.clone())),
            "orders" => {
                p.env
                    .push(("LAB_ORDERS__CATALOG_URLS".into(), urls.clone()));
                p.after.extend(catalog.iter().map(|(n, _)| n.clone()));
            }
            _ => {}
        }
    }
}

/// Payments calls the sandbox PSP as its Stripe and PayPal, trusts the PSP's CA and starts after
/// it (so the CA exists); the PSP sends its webhooks to payments.
fn wire_payments(procs: &mut [ProcSpec], wiring: &Wiring) {
    let url_of = |service: &str| {
        procs
            .iter()
            .find(|p| p.service == service)
            .map(|p| (p.name.clone(), p.url(), p.listen.to_string()))
    };
    let (Some((psp_name, psp, psp_addr)), Some((_, payments, _))) =
        (url_of("psp"), url_of("payments"))
    else {
        return;
    };
    let certs = wiring.psp_cert_dir.display().to_string();
    let ca = wiring.psp_cert_dir.join("ca.pem").display().to_string();
    for p in procs.iter_mut() {
        let env: Vec<(&str, String)> = match p.service {
            "psp" => vec![
                ("LAB_PSP__PUBLIC_URL", psp.clone()),
                (
                    "LAB_PSP__STRIPE__WEBHOOK_URL",
                    format!("{payments}/webhooks/stripe"),
                ),
                (
                    "LAB_PSP__PAYPAL__WEBHOOK_URL",
                    format!("{payments}/webhooks/paypal"),
                ),
                ("LAB_PSP__PAYPAL__CERT_DIR", certs.clone()),
            ],
            "payments" => {
                p.after.push(psp_name.clone());
                vec![
                    ("LAB_PAYMENTS__STRIPE__API_URL", format!("{psp}/stripe")),
                    ("LAB_PAYMENTS__PAYPAL__API_URL", format!("{psp}/paypal")),
                    ("LAB_PAYMENTS__PAYPAL__CERT_URL_HOSTS", psp_addr.clone()),
                    ("LAB_PAYMENTS__PAYPAL__CA_PEM_FILE", ca.clone()),
                ]
            }
            _ => continue,
        };
        p.env
            .extend(env.into_iter().map(|(k, v)| (k.to_owned(), v)));
    }
}

/// Identity reads and writes its signing keys in OpenBao's KV.
fn wire_identity(procs: &mut [ProcSpec], wiring: &Wiring) {
    let (Some(addr), Some(token)) = (&wiring.vault_addr, &wiring.vault_token) else {
        return;
    };
    for p in procs.iter_mut().filter(|p| p.service == "identity") {
        p.env
            .push(("LAB_IDENTITY__VAULT__ADDR".into(), addr.clone()));
        p.env
            .push(("LAB_IDENTITY__VAULT__TOKEN".into(), token.clone()));
    }
}

/// The services that check identity's access tokens (lab-auth; the BFF for its chaos API's admin
/// role) fetch its key set from it; the issuer and audience keep lab-auth's defaults, which are
/// identity's. Without identity (no OpenBao) the URL is empty: tokens are refused (503, no keys) rather than checked against
/// whatever else might listen on identity's default port, while catalog's break-glass token and
/// orders' visitor sessions keep working.
fn wire_token_checks(procs: &mut [ProcSpec]) {
    let jwks = procs
        .iter()
        .find(|p| p.service == "identity")
        .map(|p| format!("{}/.well-known/jwks.json", p.url()))
        .unwrap_or_default();
    for p in procs
        .iter_mut()
        .filter(|p| matches!(p.service, "catalog" | "orders" | "bff"))
    {
        let prefix = lab_config::env_prefix(p.service);
        p.env
            .push((format!("{prefix}AUTH__JWKS_URL"), jwks.clone()));
    }
}

/// Identity issues the BFF (and only it) a narrow `demo` client token for anonymous demo
/// calls; both sides get the same secret, and only when identity runs.
fn wire_client_token(procs: &mut [ProcSpec], wiring: &Wiring) {
    if wiring.bff_client_secret.is_empty() || !procs.iter().any(|p| p.service == "identity") {
        return;
    }
    for p in procs
        .iter_mut()
        .filter(|p| matches!(p.service, "identity" | "bff"))
    {
        let prefix = lab_config::env_prefix(p.service);
        p.env.push((
            format!("{prefix}CLIENT__SECRET"),
            wiring.bff_client_secret.clone(),
        ));
    }
}

/// The BFF learns every other instance's URL and starts after all of them.
fn wire_bff(procs: &mut [ProcSpec], wiring: &Wiring) {
    let mut upstreams: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for p in procs.iter().filter(|p| p.service != "bff") {
        upstreams.entry(p.service).or_default().push(p.url());
    }
    let others: Vec<String> = procs
        .iter()
        .filter(|p| p.service != "bff")
        .map(|p| p.name.clone())
        .collect();
    let prefix = lab_config::env_prefix("bff");
    for bff in procs.iter_mut().filter(|p| p.service == "bff") {
        for (service, urls) in &upstreams {
            bff.env.push((
                format!("{prefix}UPSTREAMS__{}", service.to_ascii_uppercase()),
                urls.join(","),
            ));
        }
        if let Some(addr) = &wiring.vault_addr {
            bff.env.push((format!("{prefix}VAULT_ADDR"), addr.clone()));
        }
        if !wiring.bff_session_key.is_empty() {
            bff.env.push((
                format!("{prefix}EDGE__SESSION__KEY"),
                wiring.bff_session_key.clone(),
            ));
        }
        bff.after = others.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_runs_twice_and_the_bff_knows_every_instance() {
        let wiring = Wiring {
            database_urls: [("catalog".to_owned(), "postgres://c".to_owned())].into(),
            redis_url: "redis://r".into(),
            amqp_url: "amqp://a".into(),
            redis_prefix: String::new(),
            amqp_prefix: String::new(),
            vault_addr: Some("http://v".into()),
            vault_token: Some("t".into()),
            psp_cert_dir: "/lab/psp-certs".into(),
            bff_session_key: "k".repeat(64),
            bff_client_secret: "c".repeat(32),
        };
        let mut port = 9000;
        let procs = plan(&wiring, |_| {
            port += 1;
            crate::ports::loopback(port)
        });
        let names: Vec<&str> = procs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "identity",
                "catalog-1",
                "catalog-2",
                "orders",
                "psp",
                "payments",
                "checkout",
                "bff"
            ]
        );
        let bff = procs.last().unwrap();
        let env: std::collections::BTreeMap<_, _> = bff.env.iter().cloned().collect();
        assert_eq!(env["LAB_BFF__EDGE__SESSION__KEY"], "k".repeat(64));
        assert_eq!(env["LAB_BFF__CLIENT__SECRET"], "c".repeat(32));
        let identity: std::collections::BTreeMap<_, _> = procs[0].env.iter().cloned().collect();
        assert_eq!(identity["LAB_IDENTITY__CLIENT__SECRET"], "c".repeat(32));
        assert!(
            env.contains_key("LAB_BFF__AMQP__URL"),
            "the BFF taps the bus"
        );
        assert_eq!(
            env["LAB_BFF__UPSTREAMS__CATALOG"],
            "http://127.0.0.1:9002,http://127.0.0.1:9003"
        );
        assert_eq!(env["LAB_BFF__VAULT_ADDR"], "http://v");
        let orders = procs.iter().find(|p| p.service == "orders").unwrap();
        let orders_env: std::collections::BTreeMap<_, _> = orders.env.iter().cloned().collect();
        assert_eq!(
            orders_env["LAB_ORDERS__CATALOG_URLS"],
            "http://127.0.0.1:9002,http://127.0.0.1:9003"
        );
        assert_eq!(orders.after, ["catalog-1", "catalog-2"]);
        let identity_jwks = format!(
            "{}/.well-known/jwks.json",
            procs
                .iter()
                .find(|p| p.service == "identity")
                .unwrap()
                .url()
        );
        assert_eq!(orders_env["LAB_ORDERS__AUTH__JWKS_URL"], identity_jwks);
        assert_eq!(orders_env["LAB_ORDERS__REDIS__URL"], "redis://r");
        assert!(procs[1].env.contains(&(
            "LAB_CATALOG__AUTH__JWKS_URL".to_owned(),
            identity_jwks.clone()
        )));
        assert!(
            procs[1]
                .env
                .iter()
                .any(|(k, v)| k == "LAB_CATALOG__PEERS" && v.contains("9003"))
        );
        assert_eq!(bff.after.len(), 7);
        let psp = procs.iter().find(|p| p.service == "psp").unwrap();
        let payments = procs.iter().find(|p| p.service == "payments").unwrap();
        let psp_env: std::collections::BTreeMap<_, _> = psp.env.iter().cloned().collect();
        let payments_env: std::collections::BTreeMap<_, _> = payments.env.iter().cloned().collect();
        assert_eq!(
            psp_env["LAB_PSP__STRIPE__WEBHOOK_URL"],
            format!("{}/webhooks/stripe", payments.url())
        );
        assert_eq!(
            payments_env["LAB_PAYMENTS__PAYPAL__API_URL"],
            format!("{}/paypal", psp.url())
        );
        assert_eq!(
            payments_env["LAB_PAYMENTS__PAYPAL__CA_PEM_FILE"],
            "/lab/psp-certs/ca.pem"
        );
        assert_eq!(payments.after, ["psp"]);
        let identity = procs.iter().find(|p| p.service == "identity").unwrap();
        assert!(
            identity
                .env
                .contains(&("LAB_IDENTITY__VAULT__TOKEN".to_owned(), "t".to_owned()))
        );
    }

    #[test]
    fn on_shared_servers_every_process_gets_the_cluster_namespace() {
        let mut wiring = Wiring {
            database_urls: Default::default(),
            redis_url: "redis://r".into(),
            amqp_url: "amqp://a".into(),
            redis_prefix: "lab-0000beef:".into(),
            amqp_prefix: "lab-0000beef.".into(),
            vault_addr: None,
            vault_token: None,
            psp_cert_dir: "/lab/psp-certs".into(),
            bff_session_key: String::new(),
            bff_client_secret: String::new(),
        };
        let procs = plan(&wiring, |_| crate::ports::loopback(0));
        let (mut redis, mut amqp) = (0, 0);
        for p in &procs {
            let prefix = lab_config::env_prefix(p.service);
            let env: std::collections::BTreeMap<_, _> = p.env.iter().cloned().collect();
            if env.contains_key(&format!("{prefix}REDIS__URL")) {
                assert_eq!(env[&format!("{prefix}REDIS__PREFIX")], "lab-0000beef:");
                redis += 1;
            }
            if env.contains_key(&format!("{prefix}AMQP__URL")) {
                assert_eq!(env[&format!("{prefix}AMQP__PREFIX")], "lab-0000beef.");
                amqp += 1;
            }
        }
        assert!(redis >= 3 && amqp >= 4, "redis {redis}, amqp {amqp}");
        wiring.redis_prefix.clear();
        wiring.amqp_prefix.clear();
        let procs = plan(&wiring, |_| crate::ports::loopback(0));
        assert!(
            procs
                .iter()
                .all(|p| p.env.iter().all(|(k, _)| !k.ends_with("__PREFIX")))
        );
    }

    #[test]
    fn with_openbao_every_database_service_leases_its_login_and_without_it_none_does() {
        let mut wiring = Wiring {
            database_urls: lab_db::bootstrap::SCHEMA_SERVICES
                .iter()
                .map(|s| (s.to_string(), format!("postgres://{s}")))
                .collect(),
            redis_url: "redis://r".into(),
            amqp_url: "amqp://a".into(),
            redis_prefix: String::new(),
            amqp_prefix: String::new(),
            vault_addr: Some("http://v".into()),
            vault_token: Some("t".into()),
            psp_cert_dir: "/lab/psp-certs".into(),
            bff_session_key: String::new(),
            bff_client_secret: String::new(),
        };
        let procs = plan(&wiring, |_| crate::ports::loopback(0));
        for service in lab_db::bootstrap::SCHEMA_SERVICES {
            let prefix = lab_config::env_prefix(service);
            for p in procs.iter().filter(|p| p.service == service) {
                let env: std::collections::BTreeMap<_, _> = p.env.iter().cloned().collect();
                assert_eq!(env[&format!("{prefix}DATABASE__VAULT__ADDR")], "http://v");
                assert_eq!(env[&format!("{prefix}DATABASE__VAULT__TOKEN")], "t");
            }
        }
        wiring.vault_addr = None;
        wiring.vault_token = None;
        let procs = plan(&wiring, |_| crate::ports::loopback(0));
        assert!(
            procs
                .iter()
                .flat_map(|p| &p.env)
                .all(|(k, _)| !k.contains("DATABASE__VAULT"))
        );
    }

    #[test]
    fn without_openbao_identity_does_not_run() {
        let wiring = Wiring {
            database_urls: Default::default(),
            redis_url: "redis://r".into(),
            amqp_url: "amqp://a".into(),
            redis_prefix: String::new(),
            amqp_prefix: String::new(),
            vault_addr: None,
            vault_token: None,
            psp_cert_dir: "/lab/psp-certs".into(),
            bff_session_key: "k".repeat(64),
            bff_client_secret: "c".repeat(32),
        };
        let procs = plan(&wiring, |_| crate::ports::loopback(0));
        assert!(procs.iter().all(|p| p.service != "identity"));
        assert!(procs.iter().any(|p| p.service == "catalog"));
        let orders = procs.iter().find(|p| p.service == "orders").unwrap();
        assert!(
            orders
                .env
                .contains(&("LAB_ORDERS__AUTH__JWKS_URL".to_owned(), String::new()))
        );
    }
}
