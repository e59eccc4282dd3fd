//! `lab run` refuses bad set-ups with one line naming what is wrong and how to fix it, and a
//! non-zero exit, never a panic.

use std::process::{Output, Stdio};
use std::time::Duration;

use crate::support::LAB;

/// Runs `lab run <service>` with `env`, expecting it to exit on its own quickly.
async fn lab_run(service: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(LAB);
    cmd.args(["run", service])
        // Errors only: the assertion is about what the operator sees when it fails.
        .env("LAB_LOG", "error")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("lab run did not exit")
        .unwrap()
}

fn one_error_line(out: &Output) -> String {
    assert!(!out.status.success(), "exit status {:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    assert!(lines[0].starts_with("lab: "), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    lines[0].to_owned()
}

#[tokio::test]
async fn a_port_already_in_use_is_one_line_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();

    let out = lab_run("psp", &[("LAB_PSP__HTTP__LISTEN", &addr)]).await;

    let line = one_error_line(&out);
    assert!(
        line.contains(&addr) && line.contains("already in use"),
        "{line}"
    );
}

#[tokio::test]
async fn an_unreachable_postgres_is_one_line_naming_the_variable_to_fix() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("postgres://lab_orders:lab@127.0.0.1:{port}/lab");

    let out = lab_run("orders", &[("LAB_ORDERS__DATABASE__URL", &url)]).await;

    let line = one_error_line(&out);
    assert!(line.contains("unreachable"), "{line}");
    assert!(line.contains("LAB_ORDERS__DATABASE__URL"), "{line}");
    assert!(!line.contains(":lab@"), "the password leaked: {line}");
}

#[tokio::test]
async fn a_bad_setting_value_is_one_line_naming_the_variable() {
    let out = lab_run("psp", &[("LAB_PSP__HTTP__REPLICA", "second")]).await;

    let line = one_error_line(&out);
    assert!(line.contains("LAB_PSP__HTTP__REPLICA"), "{line}");
    assert!(line.contains("second"), "{line}");
}
