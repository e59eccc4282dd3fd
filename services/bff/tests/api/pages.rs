//! The pages: `GET /` and `GET /chaos` and their hashed assets as the BFF serves them (headers,
//! CSP, caching), and both pages driven in real Chromium (playwright-core) and real Firefox
//! (puppeteer-core over WebDriver BiDi) by `web/tests/lab.mjs` and `web/tests/chaos.mjs`, against
//! the whole checkout path in-process.
//!
//! The browser tests need `/usr/bin/chromium` (or `LAB_CHROMIUM`), `/usr/bin/firefox-esr` (or
//! `LAB_FIREFOX`) and `web/tests/node_modules` (`scripts/setup` installs all three). Without them
//! a test is skipped with a message, unless `CI` is set, where a missing browser is a failure.

use std::path::{Path, PathBuf};

use lab_test_cluster::{Cluster, Options};
use lab_test_support::{TestApp, TestEnv, free_ports};

use crate::helpers::{settings, spawn_app, spawn_bff};

/// The apphost's chaos control plane in-process: the registry and the control API `lab up`
/// serves, one real fault proxy on the BFF → catalog edge, and a process table with catalog and
/// an existing PostgreSQL (which the visitor may not touch, shown as such).
struct Apphost {
    url: String,
    _proxy: lab_faultproxy::Proxy,
    shutdown: tokio_util::sync::CancellationToken,
}

impl Apphost {
    async fn start(upstreams: &mut [(&'static str, String)]) -> Self {
        use lab_apphost::table::{Health, ProcessInfo, ProcessTable};
        let shutdown = tokio_util::sync::CancellationToken::new();
        let tracker = tokio_util::task::TaskTracker::new();
        let chaos = lab_faultproxy::Chaos::start(&tracker, shutdown.clone());
        let catalog = upstreams.iter_mut().find(|(s, _)| *s == "catalog").unwrap();
        let upstream = catalog.1.trim_start_matches("http://").parse().unwrap();
        let proxy = lab_faultproxy::Proxy::start(
            lab_faultproxy::ProxyConfig {
                name: "bff→catalog".into(),
                listen: "127.0.0.1:0".parse().unwrap(),
                upstream,
            },
            &shutdown,
        )
        .await
        .unwrap();
        chaos.add_edge(&proxy, ["bff", "catalog"]).unwrap();
        catalog.1 = format!("http://{}", proxy.local_addr());
        let table = ProcessTable::default();
        for (name, kind) in [("catalog", "service"), ("postgres", "infra")] {
            table.add(ProcessInfo {
                name: name.into(),
                kind: kind.into(),
                replica: 1,
                pid: None,
                port: 0,
                url: String::new(),
                health: Health::Ready,
                restarts: 0,
                uptime_s: None,
                ready_ms: None,
                last_error: None,
            });
        }
        let commands = std::sync::Arc::new(std::collections::BTreeMap::new());
        let processes = lab_apphost::faults::ProcessFaults::start(
            table.clone(),
            commands.clone(),
            None,
            chaos.clone(),
            &tracker,
            shutdown.clone(),
        );
        let listener = lab_apphost::control::bind().await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        lab_apphost::control::serve(
            listener,
            lab_apphost::control::ControlState {
                table,
                commands,
                chaos,
                processes,
            },
            shutdown.clone(),
            &tracker,
        );
        Self {
            url,
            _proxy: proxy,
            shutdown,
        }
    }
}

impl Drop for Apphost {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The `/assets/…` names the page refers to.
fn asset_links(html: &str) -> Vec<String> {
    html.split("\"/assets/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|name| format!("/assets/{name}"))
        .collect()
}

#[tokio::test]
async fn the_page_is_html_revalidated_on_every_load_under_a_csp_without_inline_code() {
    let app = spawn_app().await;

    let response = app.client.get(app.url("/")).send().await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type"),
        "text/html; charset=utf-8"
    );
    assert_eq!(header(&response, "cache-control"), "no-cache");
    let csp = header(&response, "content-security-policy");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("style-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let html = response.text().await.unwrap();
    assert!(
        html.contains("<script type=\"module\" src=\"/assets/app."),
        "{html}"
    );
    assert!(
        !html.contains("<script>"),
        "an inline script would be refused by the CSP"
    );
    assert!(
        !html.contains("style=\""),
        "an inline style would be refused by the CSP"
    );
}

#[tokio::test]
async fn the_chaos_page_is_html_revalidated_on_every_load_and_loads_only_hashed_modules() {
    let app = spawn_app().await;

    let response = app.client.get(app.url("/chaos")).send().await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type"),
        "text/html; charset=utf-8"
    );
    assert_eq!(header(&response, "cache-control"), "no-cache");
    let csp = header(&response, "content-security-policy");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let html = response.text().await.unwrap();
    assert!(
        html.contains("<script type=\"module\" src=\"/assets/chaos-app."),
        "{html}"
    );
    assert!(!html.contains("<script>"), "an inline script");
    assert!(!html.contains("style=\""), "an inline style");
    for link in asset_links(&html) {
        let asset = app.client.get(app.url(&link)).send().await.unwrap();
        assert_eq!(asset.status(), 200, "{link}");
    }
}

#[tokio::test]
async fn every_asset_the_page_names_is_served_immutable_with_its_content_type() {
    let app = spawn_app().await;
    let html = app
        .client
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let links = asset_links(&html);

    assert!(links.len() >= 2, "{links:?}");
    for link in links {
        let response = app.client.get(app.url(&link)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{link}");
        assert_eq!(
            header(&response, "cache-control"),
            "public, max-age=31536000, immutable",
            "{link}"
        );
        let expected = if link.ends_with(".js") {
            "text/javascript; charset=utf-8"
        } else {
            "text/css; charset=utf-8"
        };
        assert_eq!(header(&response, "content-type"), expected, "{link}");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    }
}

#[tokio::test]
async fn an_asset_that_does_not_exist_is_a_problem_404() {
    let app = spawn_app().await;

    let response = app
        .client
        .get(app.url("/assets/app.0000000000.js"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 404);
    assert_eq!(
        header(&response, "content-type"),
        "application/problem+json"
    );
}

/// Two catalog replicas on the cluster's database, Redis and bus, each knowing the other (the
/// cache demo writes on one and reads on the other), checking `identity`'s tokens when it runs.
async fn catalog_pair(env: &TestEnv, identity: Option<&TestApp>) -> Vec<TestApp> {
    let ports = free_ports(2);
    let peers = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut apps = Vec::new();
    for (i, port) in ports.into_iter().enumerate() {
        let mut settings = lab_catalog::Settings {
            http: env.http(i as u16 + 1),
            database: env.database(lab_catalog::NAME),
            redis: env.redis(),
            amqp: env.amqp(),
            ..lab_catalog::Settings::default()
        };
        settings.http.listen = ([127, 0, 0, 1], port).into();
        settings.peers = peers.clone();
        if let Some(identity) = identity {
            settings.auth.jwks_url = lab_test_support::identity::jwks_url(identity);
        }
        apps.push(env.spawn(lab_catalog::build, settings).await);
    }
    apps
}

/// A browser the page scripts can drive, by the name they take.
#[derive(Debug, Clone, Copy)]
enum Engine {
    /// Debian's Chromium through playwright-core.
    Chromium,
    /// Debian's Firefox ESR through puppeteer-core over WebDriver BiDi.
    Firefox,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Self::Chromium => "chromium",
            Self::Firefox => "firefox",
        }
    }

    /// The binary (overridable as the scripts' `browser.mjs` allows) and the npm driver.
    fn needs(self) -> (String, &'static str, &'static str) {
        match self {
            Self::Chromium => (
                std::env::var("LAB_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "chromium",
                "playwright-core",
            ),
            Self::Firefox => (
                std::env::var("LAB_FIREFOX").unwrap_or_else(|_| "/usr/bin/firefox-esr".into()),
                "firefox-esr",
                "puppeteer-core",
            ),
        }
    }

    /// Where its screenshots go: Chromium's are the committed ones in docs/screenshots/,
    /// Firefox's (named `…-firefox.png`) stay under the target directory for a person to compare.
    fn shots(self) -> PathBuf {
        match self {
            Self::Chromium => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots"),
            Self::Firefox => Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots"),
        }
    }
}

/// `node`, the engine's driver and its browser, or why not.
fn browser(engine: Engine) -> Result<PathBuf, String> {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web/tests");
    let (binary, package, driver) = engine.needs();
    if !Path::new(&binary).exists() {
        return Err(format!("{binary} is missing (apt-get install {package})"));
    }
    if !tests.join("node_modules").join(driver).exists() {
        return Err(format!(
            "web/tests/node_modules/{driver} is missing (scripts/setup)"
        ));
    }
    match std::process::Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(tests),
        _ => Err("node is missing".into()),
    }
}

/// The scripts' directory when `engine` can run here; `None` (the test is skipped with a
/// message) when it cannot, unless `CI` is set, where a missing browser is a failure.
fn browser_or_skip(engine: Engine) -> Option<PathBuf> {
    match browser(engine) {
        Ok(tests) => Some(tests),
        Err(why) if std::env::var_os("CI").is_some() => panic!("browser tests need {why}"),
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// Runs `web/tests/<script>` in `engine` against `base`.
async fn run_browser_test(tests: PathBuf, script: &str, engine: Engine, base: String) {
    let script = tests.join(script);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(&script)
            .arg(&base)
            .arg(engine.shots())
            .arg(engine.name())
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    println!("{stdout}");
}

/// The Lab page's cluster: the checkout path in-process, two catalog replicas, the BFF in front.
/// Answers the BFF's URL and what must stay alive while the page runs.
async fn lab_page_cluster() -> (String, Cluster, Vec<TestApp>, TestApp) {
    // The buyer waits on the PSP for the demo to choose, as in the saga demo's own tests;
    // identity (its keys in OpenBao) for the identity panel.
    let cluster = Cluster::start(Options {
        scenario: lab_psp::Scenario::default(),
        identity: true,
        // The outbox and vault-rotation panels rotate orders' leased login.
        leased_orders: true,
        ..Options::default()
    })
    .await;
    let catalogs = catalog_pair(&cluster.env, cluster.identity.as_ref()).await;
    let catalog_urls = catalogs
        .iter()
        .map(|c| c.base_url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let mut upstreams = cluster.upstreams();
    for (service, urls) in &mut upstreams {
        if *service == "catalog" {
            *urls = catalog_urls.clone();
        }
    }
    let bff = spawn_bff(&cluster.env, &upstreams).await;
    (bff.url(""), cluster, catalogs, bff)
}

/// The chaos page's cluster: the checkout path in-process and a BFF running journeys.
/// Answers the BFF's URL and what must stay alive while the page runs (the apphost's control
/// plane and fault proxy stop when dropped).
async fn chaos_page_cluster() -> (String, Cluster, TestApp, Apphost) {
    // The journeys' buyer waits on the PSP to choose, as on the Lab page.
    let cluster = Cluster::start(Options {
        scenario: lab_psp::Scenario::default(),
        ..Options::default()
    })
    .await;
    let mut upstreams = cluster.upstreams();
    // The apphost's control plane, as `lab up` runs it, with a fault proxy in front of catalog:
    // the page offers TCP and process faults through it.
    let apphost = Apphost::start(&mut upstreams).await;
    let mut bff_settings = settings(&cluster.env, &upstreams);
    // Journeys often enough that the page shows one within the test.
    bff_settings.journeys = lab_bff::journeys::JourneySettings {
        enabled: true,
        every_s: 2,
    };
    bff_settings.chaos.apphost_url = Some(apphost.url.clone());
    let bff = cluster.env.spawn(lab_bff::build, bff_settings).await;
    (bff.url(""), cluster, bff, apphost)
}

#[tokio::test]
async fn in_chromium_the_lab_page_runs_every_demo_to_a_pass_and_fits_a_phone() {
    lab_test_support::require_bao!();
    let Some(tests) = browser_or_skip(Engine::Chromium) else {
        return;
    };
    let (base, _cluster, _catalogs, _bff) = lab_page_cluster().await;

    run_browser_test(tests, "lab.mjs", Engine::Chromium, base).await;
}

#[tokio::test]
async fn in_firefox_the_lab_page_runs_every_demo_to_a_pass_and_fits_a_phone() {
    lab_test_support::require_bao!();
    let Some(tests) = browser_or_skip(Engine::Firefox) else {
        return;
    };
    let (base, _cluster, _catalogs, _bff) = lab_page_cluster().await;

    run_browser_test(tests, "lab.mjs", Engine::Firefox, base).await;
}

#[tokio::test]
async fn in_chromium_the_chaos_page_injects_a_fault_shows_the_reaction_and_the_recovery_and_fits_a_phone()
 {
    let Some(tests) = browser_or_skip(Engine::Chromium) else {
        return;
    };
    let (base, _cluster, _bff, _apphost) = chaos_page_cluster().await;

    run_browser_test(tests, "chaos.mjs", Engine::Chromium, base).await;
}

#[tokio::test]
async fn in_firefox_the_chaos_page_injects_a_fault_shows_the_reaction_and_the_recovery_and_fits_a_phone()
 {
    let Some(tests) = browser_or_skip(Engine::Firefox) else {
        return;
    };
    let (base, _cluster, _bff, _apphost) = chaos_page_cluster().await;

    run_browser_test(tests, "chaos.mjs", Engine::Firefox, base).await;
}
