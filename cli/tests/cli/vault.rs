//! OpenBao as `lab up` configures it: a leased login per service runs as the schema's owner role,
//! so what it creates is owned by the owner, and revoking the lease ends the user.

use std::time::Duration;

use lab_config::SecretString;
use lab_db::sqlx::{self, Connection, PgConnection};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn a_leased_login_acts_as_the_owner_role_and_its_revocation_drops_it() {
    let sandbox = Sandbox::new("vault");
    let mut cmd = sandbox.lab(&["up"]);
    cmd.args(["--postgres-url", SHARED_PG, "--redis-url", SHARED_REDIS])
        .args(["--amqp-url", SHARED_AMQP, "--database", &sandbox.database]);
    let child = sandbox.spawn_logged(cmd);
    let control = sandbox.control_url(Duration::from_secs(60)).await;
    let rows = wait_until(
        &control,
        Duration::from_secs(60),
        "all ready",
        all_services_ready,
    )
    .await;
    let bao = row(&rows, "openbao");
    let secrets: Value =
        serde_json::from_str(&std::fs::read_to_string(sandbox.dir.join("secrets.json")).unwrap())
            .unwrap();
    let vault = lab_vault::Vault::new(
        &format!("http://127.0.0.1:{}", bao["port"]),
        SecretString::new(secrets["vault_root_token"].as_str().unwrap()),
    )
    .unwrap();

    let creds = vault.db_credentials("database", "catalog").await.unwrap();
    let url = format!(
        "postgres://{}:{}@127.0.0.1:5432/{}",
        creds.username,
        creds.password.expose(),
        sandbox.database
    );
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let who: (String, String) = sqlx::query_as("SELECT current_user::text, session_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE catalog.leased_probe (x int)")
        .execute(&mut conn)
        .await
        .unwrap();
    let owner: String = sqlx::query_scalar(
        "SELECT tableowner::text FROM pg_tables WHERE tablename = 'leased_probe'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let renewed = vault
        .renew(&creds.lease.id, Duration::from_secs(60))
        .await
        .unwrap();
    vault.revoke(&creds.lease.id).await.unwrap();
    let mut admin = PgConnection::connect(SHARED_PG).await.unwrap();
    let left: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(&creds.username)
            .fetch_one(&mut admin)
            .await
            .unwrap();

    assert_eq!(who, ("catalog_owner".to_owned(), creds.username.clone()));
    assert_eq!(owner, "catalog_owner");
    assert!(renewed.duration > Duration::ZERO);
    assert!(!left, "the leased user outlived its lease");
    assert!(
        sqlx::query("SELECT 1").execute(&mut conn).await.is_err(),
        "revocation ends the user's sessions"
    );

    let (apphost, _) = sandbox.apphost();
    let _ = kill(Pid::from_raw(apphost as i32), Signal::SIGTERM);
    let _ = finish(child, Duration::from_secs(30)).await;
    let down = sandbox.lab(&["down"]).output().await.unwrap();
    assert!(down.status.success(), "{down:?}");
}
