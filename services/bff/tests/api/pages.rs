//! The pages: `GET /` and `GET /chaos` and their hashed assets as the BFF serves them (headers,
//! CSP, caching), and both pages driven in real Chromium (`web/tests/lab.mjs` and
//! `web/tests/chaos.mjs` through playwright-core) against the whole checkout path in-process.
//!
//! The browser test needs `/usr/bin/chromium` (or `LAB_CHROMIUM`) and `web/tests/node_modules`
//! (`scripts/setup` installs both). Without them it is skipped with a message, unless `CI` is
//! set, where a missing browser is a failure.

use std::path::{Path, PathBuf};

use lab_test_cluster::{Cluster, Options};
use lab_test_support::{TestApp, TestEnv, free_port};

use crate::helpers::{settings, spawn_app, spawn_bff};

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
/// cache demo writes on one and reads on the other).
async fn catalog_pair(env: &TestEnv) -> Vec<TestApp> {
    let ports = [free_port(), free_port()];
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
        apps.push(env.spawn(lab_catalog::build, settings).await);
    }
    apps
}

/// `node` and playwright-core and Chromium, or why not.
fn browser() -> Result<PathBuf, String> {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web/tests");
    let chromium = std::env::var("LAB_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Err(format!("{chromium} is missing (apt-get install chromium)"));
    }
    if !tests.join("node_modules/playwright-core").exists() {
        return Err("web/tests/node_modules/playwright-core is missing (scripts/setup)".into());
    }
    match std::process::Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(tests),
        _ => Err("node is missing".into()),
    }
}

/// Runs `web/tests/<script>` against `base`, saving screenshots to docs/screenshots/.
async fn run_browser_test(tests: PathBuf, script: &str, base: String) {
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
    let script = tests.join(script);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(&script)
            .arg(&base)
            .arg(&shots)
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

#[tokio::test]
async fn in_chromium_the_lab_page_runs_every_demo_to_a_pass_and_fits_a_phone() {
    let tests = match browser() {
        Ok(tests) => tests,
        Err(why) if std::env::var_os("CI").is_some() => panic!("browser tests need {why}"),
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    // The outbox and vault-rotation panels act with the BFF's `demo` token (identity, OpenBao)
    // and rotate orders' leased login.
    lab_test_support::require_bao!();
    // The buyer waits on the PSP for the demo to choose, as in the saga demo's own tests.
    let cluster = Cluster::start(Options {
        scenario: lab_psp::Scenario::default(),
        identity: true,
        leased_orders: true,
        ..Options::default()
    })
    .await;
    let catalogs = catalog_pair(&cluster.env).await;
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

    run_browser_test(tests, "lab.mjs", bff.url("")).await;
}

#[tokio::test]
async fn in_chromium_the_chaos_page_injects_a_fault_shows_the_reaction_and_the_recovery_and_fits_a_phone()
 {
    let tests = match browser() {
        Ok(tests) => tests,
        Err(why) if std::env::var_os("CI").is_some() => panic!("browser tests need {why}"),
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    // The journeys' buyer waits on the PSP to choose, as on the Lab page.
    let cluster = Cluster::start(Options {
        scenario: lab_psp::Scenario::default(),
        ..Options::default()
    })
    .await;
    let upstreams = cluster.upstreams();
    let mut bff_settings = settings(&cluster.env, &upstreams);
    // Journeys often enough that the page shows one within the test.
    bff_settings.journeys = lab_bff::journeys::JourneySettings {
        enabled: true,
        every_s: 2,
    };
    let bff = cluster.env.spawn(lab_bff::build, bff_settings).await;

    run_browser_test(tests, "chaos.mjs", bff.url("")).await;
}
