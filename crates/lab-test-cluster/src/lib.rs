//! The whole checkout path in one environment: catalog, orders, checkout, payments and the
//! sandbox PSP, each a real in-process service on a fixed port of its own (so any of them can be
//! stopped and started again at the same address, as a restarted process would be), on one
//! database and one RabbitMQ prefix. Orders are placed over orders' HTTP API, the buyer is the
//! PSP's scenario, and the outcome is read back from every service's own API.
//!
//! A crate of its own (tests only) because checkout's tests and the BFF's (demos, journeys, chaos)
//! drive the same cluster.

// A failed unwrap here is the calling test failing, with the value in the message.
#![expect(
    clippy::unwrap_used,
    reason = "test support: a panic is a failed assertion"
)]

use std::time::Duration;

use lab_test_support::{ServiceMigrator, TestApp, TestEnv, eventually, free_ports};
use serde_json::{Value, json};
use uuid::Uuid;

/// How long a whole saga may take here: a few hops over RabbitMQ and two PSP round trips, plus
/// a restart or a retry-queue delay in the crash tests.
pub const SAGA_DEADLINE: Duration = Duration::from_secs(45);

const MIGRATIONS: &[ServiceMigrator] = &[
    (lab_identity::NAME, &lab_identity::MIGRATOR),
    (lab_catalog::NAME, &lab_catalog::MIGRATOR),
    (lab_orders::NAME, &lab_orders::MIGRATOR),
    (lab_checkout::NAME, &lab_checkout::MIGRATOR),
    (lab_payments::NAME, &lab_payments::MIGRATOR),
];

/// A service of the cluster that a test may restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Catalog,
    Checkout,
    Payments,
}

/// Everything a test may change about the cluster.
pub struct Options {
    /// What the buyer (and the PSP) does with every session.
    pub scenario: lab_psp::Scenario,
    /// Checkout's deadlines.
    pub timeouts: lab_checkout::TimeoutSettings,
    /// Identity too (with an OpenBao dev server for its keys), and catalog and orders checking
    /// its tokens; off by default (it needs `bao`).
    pub identity: bool,
    /// Orders on a login leased from OpenBao (rotatable), not the static one; needs
    /// [`Options::identity`], which brings OpenBao.
    pub leased_orders: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            scenario: lab_psp::Scenario {
                auto: lab_psp::Auto::Approve,
                ..lab_psp::Scenario::default()
            },
            timeouts: lab_checkout::TimeoutSettings::default(),
            identity: false,
            leased_orders: false,
        }
    }
}

pub struct Cluster {
    pub env: TestEnv,
    pub orders: TestApp,
    /// Running when [`Options::identity`] asked for it.
    pub identity: Option<TestApp>,
    /// Kept running for the whole test: the buyer and both providers.
    pub psp: TestApp,
    catalog: Option<TestApp>,
    checkout: Option<TestApp>,
    payments: Option<TestApp>,
    catalog_settings: lab_catalog::Settings,
    checkout_settings: lab_checkout::Settings,
    payments_settings: lab_payments::Settings,
}

fn at(env: &TestEnv, port: u16) -> lab_http::HttpSettings {
    let mut http = env.http(1);
    http.listen = ([127, 0, 0, 1], port).into();
    http
}

impl Cluster {
    pub async fn start(options: Options) -> Self {
        let builder = TestEnv::builder().with_database(MIGRATIONS);
        let env = if options.identity {
            builder.with_vault()
        } else {
            builder
        }
        .start()
        .await;
        let identity = if options.identity {
            let settings = lab_identity::Settings {
                http: env.http(1),
                database: env.database(lab_identity::NAME),
                redis: env.redis(),
                vault: lab_identity::VaultSettings {
                    addr: env.vault().addr.clone(),
                    token: lab_config::SecretString::new(env.vault().root_token.clone()),
                    ..lab_identity::VaultSettings::default()
                },
                // The BFF's narrow `demo` token (the BFF's test settings use the same secret).
                client: lab_identity::ClientSettings {
                    secret: lab_config::SecretString::new(
                        lab_test_support::identity::CLIENT_SECRET,
                    ),
                    ..lab_identity::ClientSettings::default()
                },
                ..lab_identity::Settings::default()
            };
            Some(env.spawn(lab_identity::build, settings).await)
        } else {
            None
        };
        let auth = lab_auth::AuthSettings {
            jwks_url: identity
                .as_ref()
                .map(lab_test_support::identity::jwks_url)
                .unwrap_or_else(|| lab_auth::AuthSettings::default().jwks_url),
            ..lab_auth::AuthSettings::default()
        };
        // One certificate directory for every test process: the PSP's RSA keys are made once.
        let certs = std::env::temp_dir().join("lab-test-cluster-psp-certs");
        let made = certs.clone();
        tokio::task::spawn_blocking(move || lab_psp::certs::ensure(&made))
            .await
            .unwrap()
            .unwrap();
        let [catalog_port, payments_port, psp_port, checkout_port]: [u16; 4] =
            free_ports(4).try_into().unwrap();
        let psp_url = format!("http://127.0.0.1:{psp_port}");
        let payments_url = format!("http://127.0.0.1:{payments_port}");

        let catalog_settings = lab_catalog::Settings {
            http: at(&env, catalog_port),
            database: env.database(lab_catalog::NAME),
            redis: env.redis(),
            amqp: env.amqp(),
            auth: auth.clone(),
            ..lab_catalog::Settings::default()
        };
        let checkout_settings = lab_checkout::Settings {
            http: at(&env, checkout_port),
            database: env.database(lab_checkout::NAME),
            amqp: env.amqp(),
            timeouts: options.timeouts,
            ..lab_checkout::Settings::default()
        };
        let payments_settings = lab_payments::Settings {
            http: at(&env, payments_port),
            database: env.database(lab_payments::NAME),
            amqp: env.amqp(),
            stripe: lab_payments::StripeSettings {
                api_url: format!("{psp_url}/stripe"),
                ..lab_payments::StripeSettings::default()
            },
            paypal: lab_payments::PayPalSettings {
                api_url: format!("{psp_url}/paypal"),
                ca_pem_file: certs
                    .join(lab_psp::certs::CA_CERT_FILE)
                    .to_string_lossy()
                    .into_owned(),
                cert_url_hosts: format!("127.0.0.1:{psp_port}"),
                ..lab_payments::PayPalSettings::default()
            },
            ..lab_payments::Settings::default()
        };
        let mut psp_settings = lab_psp::Settings {
            http: at(&env, psp_port),
            scenario: options.scenario,
            ..lab_psp::Settings::default()
        };
        psp_settings.stripe.webhook_url = format!("{payments_url}/webhooks/stripe");
        psp_settings.paypal.webhook_url = format!("{payments_url}/webhooks/paypal");
        psp_settings.paypal.cert_dir = certs;
        // Short backoff: a webhook refused while payments restarts is retried within the test.
        psp_settings.webhooks.backoff_base_ms = 50;
        psp_settings.webhooks.backoff_cap_ms = 1_000;
        psp_settings.webhooks.max_attempts = 30;

        let psp = env.spawn(lab_psp::build, psp_settings).await;
        let catalog = env
            .spawn(lab_catalog::build, catalog_settings.clone())
            .await;
        let payments = env
            .spawn(lab_payments::build, payments_settings.clone())
            .await;
        let checkout = env
            .spawn(lab_checkout::build, checkout_settings.clone())
            .await;
        let orders_database = if options.leased_orders {
            env.vault_database(lab_orders::NAME).await
        } else {
            env.database(lab_orders::NAME)
        };
        let orders = env
            .spawn(
                lab_orders::build,
                lab_orders::Settings {
                    http: env.http(1),
                    database: orders_database,
                    amqp: env.amqp(),
                    redis: env.redis(),
                    auth,
                    catalog_urls: catalog.base_url.clone(),
                    ..lab_orders::Settings::default()
                },
            )
            .await;
        Self {
            env,
            orders,
            identity,
            psp,
            catalog: Some(catalog),
            checkout: Some(checkout),
            payments: Some(payments),
            catalog_settings,
            checkout_settings,
            payments_settings,
        }
    }

    /// Each service's base URL by name, as the BFF's `upstreams` setting takes them.
    pub fn upstreams(&self) -> Vec<(&'static str, String)> {
        let identity = self
            .identity
            .as_ref()
            .map(|i| ("identity", i.base_url.clone()));
        identity
            .into_iter()
            .chain([
                ("catalog", self.catalog().base_url.clone()),
                ("orders", self.orders.base_url.clone()),
                ("payments", self.payments().base_url.clone()),
                ("checkout", self.checkout().base_url.clone()),
                ("psp", self.psp.base_url.clone()),
            ])
            .collect()
    }

    pub fn catalog(&self) -> &TestApp {
        self.catalog.as_ref().unwrap()
    }

    pub fn checkout(&self) -> &TestApp {
        self.checkout.as_ref().unwrap()
    }

    pub fn payments(&self) -> &TestApp {
        self.payments.as_ref().unwrap()
    }

    /// Stops `part` (its server, consumer and relay) and starts a new instance on the same
    /// database and address, as a crash and a supervisor's restart would.
    pub async fn restart(&mut self, part: Part) {
        let slot = match part {
            Part::Catalog => &mut self.catalog,
            Part::Checkout => &mut self.checkout,
            Part::Payments => &mut self.payments,
        };
        if let Some(app) = slot.take() {
            let _ = app.shutdown().await;
        }
        let app = match part {
            Part::Catalog => {
                self.env
                    .spawn(lab_catalog::build, self.catalog_settings.clone())
                    .await
            }
            Part::Checkout => {
                self.env
                    .spawn(lab_checkout::build, self.checkout_settings.clone())
                    .await
            }
            Part::Payments => {
                self.env
                    .spawn(lab_payments::build, self.payments_settings.clone())
                    .await
            }
        };
        *slot = Some(app);
    }

    /// Places an order for `lines` paid through `provider`; returns its id.
    pub async fn place(&self, lines: Value, provider: &str) -> String {
        let response = self
            .orders
            .client
            .post(self.orders.url("/orders"))
            .header("idempotency-key", Uuid::now_v7().to_string())
            .header("x-lab-customer", "alice")
            .json(&json!({ "lines": lines, "provider": provider }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 202, "{body:#}");
        body["order_id"].as_str().unwrap().to_owned()
    }

    /// The order once it has left `Pending`; panics with its last state after the deadline.
    pub async fn finished(&self, order_id: &str) -> Value {
        let last = std::sync::Mutex::new(Value::Null);
        let done = eventually(SAGA_DEADLINE, || async {
            let order = self.order(order_id).await;
            let status = order["status"].as_str().unwrap_or("Pending").to_owned();
            *last.lock().unwrap() = order.clone();
            (status != "Pending").then_some(order)
        })
        .await;
        done.unwrap_or_else(|| {
            panic!(
                "order {order_id} never finished; last: {:#}",
                last.lock().unwrap()
            )
        })
    }

    pub async fn order(&self, order_id: &str) -> Value {
        let response = self
            .orders
            .client
            .get(self.orders.url(&format!("/orders/{order_id}")))
            .header("x-lab-customer", "alice")
            .send()
            .await
            .unwrap();
        response.json().await.unwrap_or(Value::Null)
    }

    /// The saga as checkout shows it (state, history, deadline).
    pub async fn saga(&self, order_id: &str) -> Value {
        let (_, body) = self
            .checkout()
            .get_json(&format!("/sagas/{order_id}"))
            .await;
        body
    }

    /// The payment as payments shows it, once it exists.
    pub async fn payment(&self, order_id: &str) -> Value {
        let (_, body) = self
            .payments()
            .get_json(&format!("/payments/{order_id}"))
            .await;
        body
    }

    /// Waits until the payment reaches `state` (the compensations run after the order's final
    /// state is announced); panics with the last view.
    pub async fn payment_reaches(&self, order_id: &str, state: &str) -> Value {
        let last = std::sync::Mutex::new(Value::Null);
        let done = eventually(SAGA_DEADLINE, || async {
            let payment = self.payment(order_id).await;
            *last.lock().unwrap() = payment.clone();
            (payment["state"] == state).then_some(payment)
        })
        .await;
        done.unwrap_or_else(|| {
            panic!(
                "payment of {order_id} never reached {state}; last: {:#}",
                last.lock().unwrap()
            )
        })
    }

    pub async fn inventory(&self, sku: &str) -> Value {
        let id = lab_catalog::seed::seed_id(sku);
        let (status, body) = self
            .catalog()
            .get_json(&format!("/products/{id}/inventory"))
            .await;
        assert_eq!(status, 200, "{body:#}");
        body
    }

    /// Waits until `sku`'s inventory satisfies `accept`.
    pub async fn inventory_reaches(&self, sku: &str, accept: impl Fn(&Value) -> bool) -> Value {
        let last = std::sync::Mutex::new(Value::Null);
        let done = eventually(SAGA_DEADLINE, || async {
            let inventory = self.inventory(sku).await;
            *last.lock().unwrap() = inventory.clone();
            accept(&inventory).then_some(inventory)
        })
        .await;
        done.unwrap_or_else(|| panic!("{sku} never settled; last: {:#}", last.lock().unwrap()))
    }
}

/// A line of a seed product.
pub fn line(sku: &str, quantity: i64) -> Value {
    json!({ "product_id": lab_catalog::seed::seed_id(sku), "quantity": quantity })
}
