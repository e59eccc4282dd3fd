//! Shared set-up of the catalog feature tests: one or two replicas on one database and one Redis
//! prefix, with the administrator's token and every replica knowing its peers.

use lab_catalog::seed::seed_id;
use lab_config::SecretString;
use lab_test_support::{TestApp, TestEnv, free_ports};
use serde_json::Value;

use crate::helpers::{env, settings};

pub const ADMIN: &str = "test-admin-token";

/// `replicas` catalog instances sharing `env`'s database and Redis, each listing all of them as
/// peers (ports are chosen first, so every replica knows the others before it starts).
pub async fn replicas(env: &TestEnv, replicas: u16) -> Vec<TestApp> {
    let ports = free_ports(usize::from(replicas));
    let peers = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut apps = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let mut s = settings(env);
        s.http = env.http(i as u16 + 1);
        s.http.listen = ([127, 0, 0, 1], *port).into();
        s.peers = peers.clone();
        s.admin_token = Some(SecretString::new(ADMIN));
        apps.push(env.spawn(lab_catalog::build, s).await);
    }
    apps
}

/// One replica with its own fresh environment.
pub async fn one() -> TestApp {
    let env = env().await;
    replicas(&env, 1).await.remove(0)
}

/// Two replicas with a fresh environment.
pub async fn two() -> (TestApp, TestApp) {
    let env = env().await;
    let mut apps = replicas(&env, 2).await;
    let b = apps.remove(1);
    (apps.remove(0), b)
}

pub fn demo_id(sku: &str) -> String {
    seed_id(sku).to_string()
}

/// `GET path` → (status, ETag, X-Cache, body).
pub async fn get(app: &TestApp, path: &str) -> (u16, Option<String>, Option<String>, Value) {
    let r = app.get(path).await;
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (status, etag, cache) = (r.status().as_u16(), header("etag"), header("x-cache"));
    (status, etag, cache, r.json().await.unwrap_or(Value::Null))
}

/// A write with an optional `If-Match` and optional admin token → (status, ETag, body, content type).
pub async fn write(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    if_match: Option<&str>,
    admin: bool,
    body: Value,
) -> (u16, Option<String>, Value, String) {
    let mut req = app.client.request(method, app.url(path)).json(&body);
    if let Some(tag) = if_match {
        req = req.header("if-match", tag);
    }
    if admin {
        req = req.bearer_auth(ADMIN);
    }
    let r = req.send().await.expect("request sent");
    let status = r.status().as_u16();
    let etag = r
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, etag, r.json().await.unwrap_or(Value::Null), ctype)
}
