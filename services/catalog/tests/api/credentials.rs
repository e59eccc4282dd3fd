//! The catalog on a login leased from OpenBao: forced rotations while requests keep coming (none
//! may fail), the shared `/admin/credentials` routes and who may call them, and readiness while
//! OpenBao is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lab_catalog::NAME;
use lab_config::SecretString;
use lab_test_support::{TestApp, TestEnv, require_bao, test_client};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::catalog::ADMIN;
use crate::helpers::{MIGRATIONS, settings};

async fn leased_catalog() -> (TestEnv, TestApp) {
    let env = TestEnv::builder()
        .with_database(MIGRATIONS)
        .with_vault()
        .start()
        .await;
    let mut s = settings(&env);
    s.database = env.vault_database(NAME).await;
    s.admin_token = Some(SecretString::new(ADMIN));
    let app = env.spawn(lab_catalog::build, s).await;
    (env, app)
}

async fn admin_post(app: &TestApp, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = test_client().post(app.url(path)).bearer_auth(ADMIN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn admin_get(app: &TestApp, path: &str) -> (u16, Value) {
    let response = test_client()
        .get(app.url(path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn three_forced_rotations_under_a_load_of_requests_fail_none() {
    require_bao!();
    let (_env, app) = leased_catalog().await;
    let (_, before) = admin_get(&app, "/admin/credentials").await;
    assert_eq!(before["source"], "vault");
    assert_eq!(before["state"], "ok");

    let stop = CancellationToken::new();
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let paths = ["/products?per_page=5", "/products?q=a&per_page=3"];
    let mut workers = Vec::new();
    for worker in 0..6 {
        let url = app.url(paths[worker % paths.len()]);
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let client = test_client();
            while !stop.is_cancelled() {
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => {
                        eprintln!(
                            "{url}: {} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        );
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        eprintln!("{url}: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let mut users = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, report) = admin_post(&app, "/admin/credentials/rotate", None).await;
        assert_eq!(status, 200, "{report:#}");
        let stages: Vec<&str> = report["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["stage"].as_str().unwrap())
            .collect();
        assert_eq!(
            stages,
            ["leased", "pool_swapped", "old_drained", "old_revoked"]
        );
        // Every session of the old login ended on its own (the outbox relay's LISTEN connection
        // idles; it is ended by revocation and reconnects).
        assert_eq!(report["drained"], true, "{report:#}");
        users.push(report["new_user"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during rotations"
    );
    assert!(ok.load(Ordering::Relaxed) > 50, "the load did not run");

    let (status, after) = admin_get(&app, "/admin/credentials").await;
    assert_eq!(status, 200);
    assert_eq!(after["rotations"], 3);
    assert_eq!(after["username"].as_str(), users.last().map(String::as_str));
    let lease = after["lease_id"].as_str().unwrap();
    assert!(lease.starts_with("database/creds/catalog/…"), "{lease}");
    assert!(lease.chars().count() <= "database/creds/catalog/…".chars().count() + 4);
    assert!(after["ttl_left_s"].as_u64().unwrap() > 0);
    let (status, public) = app.get_json("/credentials").await;
    assert_eq!(status, 200, "anybody may read the public status");
    assert_eq!(public["rotations"], 3);
    assert!(public["username"].is_null(), "{public:#}");
    let text = public.to_string();
    for user in &users {
        assert!(
            !text.contains(user.as_str()),
            "{user} shown publicly: {text}"
        );
    }
}

#[tokio::test]
async fn the_credential_routes_answer_only_the_administrator() {
    require_bao!();
    let (_env, app) = leased_catalog().await;
    let anonymous = test_client()
        .get(app.url("/admin/credentials"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let wrong = test_client()
        .post(app.url("/admin/credentials/rotate"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let (status, problem) = admin_post(
        &app,
        "/admin/credentials/ttl",
        Some(serde_json::json!({"ttl_s": 1})),
    )
    .await;
    assert_eq!(status, 422, "{problem:#}");
    assert_eq!(problem["field"], "ttl_s");
    let (status, body) = admin_post(
        &app,
        "/admin/credentials/ttl",
        Some(serde_json::json!({"ttl_s": 30})),
    )
    .await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["ttl_s"], 30);
    assert_eq!(body["rotate_after_s"], 60);
    assert!(body["ttl_left_s"].as_u64().unwrap() <= 30);
}

#[tokio::test]
async fn with_a_static_login_the_credentials_are_reported_disabled_and_not_rotated() {
    let env = crate::helpers::env().await;
    let mut s = settings(&env);
    s.admin_token = Some(SecretString::new(ADMIN));
    let app = env.spawn(lab_catalog::build, s).await;
    let (status, body) = admin_get(&app, "/admin/credentials").await;
    assert_eq!(status, 200);
    assert_eq!(body["state"], "disabled");
    assert_eq!(body["source"], "static");
    let (status, problem) = admin_post(&app, "/admin/credentials/rotate", None).await;
    assert_eq!(status, 409, "{problem:#}");
    assert_eq!(problem["type"], "urn:lab:problem:vault-disabled");
    let ready = app.wait_ready().await;
    let checks = ready["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["name"] != "openbao"), "{ready:#}");
}

#[tokio::test]
async fn with_openbao_down_the_catalog_stays_ready_but_degraded_and_recovers() {
    require_bao!();
    let (env, app) = leased_catalog().await;
    app.wait_ready().await;
    env.vault().stop().await;
    let (status, problem) = admin_post(&app, "/admin/credentials/rotate", None).await;
    assert_eq!(status, 503, "{problem:#}");
    assert_eq!(problem["dependency"], "openbao");
    let report = app.wait_readyz(|b| b["status"] == "degraded").await;
    let openbao = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "openbao")
        .cloned()
        .unwrap();
    assert_eq!(openbao["status"], "down");
    assert_eq!(openbao["critical"], false);
    // Still serving on the current login.
    let listed = test_client()
        .get(app.url("/products?per_page=2"))
        .send()
        .await
        .unwrap();
    assert!(listed.status().is_success());

    env.vault().resume().await.unwrap();
    env.configure_vault_engine().await;
    let (status, report) = admin_post(&app, "/admin/credentials/rotate", None).await;
    assert_eq!(status, 200, "{report:#}");
    app.wait_ready().await;
    // The restarted dev server forgot the first lease, so nothing dropped its user: clean up.
    let mut admin = env.db().admin_connection().await.unwrap();
    let old = report["old_user"].as_str().unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP ROLE IF EXISTS \"{old}\""
    )))
    .execute(&mut admin)
    .await
    .unwrap();
}
