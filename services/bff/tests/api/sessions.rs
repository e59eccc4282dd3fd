//! Sessions and the client's address, through the edge stack on a real listener.

use lab_test_support::TestEnv;

use crate::stack::{Upstream, edge_settings, spawn_stack, whoami};

#[tokio::test]
async fn a_first_visit_gets_one_signed_httponly_lax_cookie_and_keeps_its_session_after() {
    let env = TestEnv::builder().start().await;
    let bff = spawn_stack(&env, &edge_settings(), &Upstream::default()).await;

    let first = bff
        .client
        .get(bff.url("/api/whoami"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let set_cookie: Vec<String> = first
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let cookie = crate::stack::session_cookie(&first).unwrap_or_default();
    let (_, again_cookie, again) = whoami(&bff, &[("cookie", &cookie)]).await;

    assert_eq!(set_cookie.len(), 1, "{set_cookie:?}");
    let attributes = &set_cookie[0];
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(attributes.contains(attribute), "{attributes}");
    }
    assert!(!attributes.contains("Secure"), "{attributes}");
    let (id, signature) = cookie
        .trim_start_matches("lab_session=")
        .split_once('.')
        .unwrap_or_default();
    assert_eq!(id.len(), 32, "{cookie}");
    assert!(!signature.is_empty(), "{cookie}");
    assert_eq!(again_cookie, None, "a known session gets no new cookie");
    assert_eq!(again["session"], id);
    assert_eq!(again["fresh"], false);
}

#[tokio::test]
async fn a_replica_with_the_same_key_accepts_the_cookie_and_a_tampered_one_gets_a_new_session() {
    let env = TestEnv::builder().start().await;
    let upstream = Upstream::default();
    let first = spawn_stack(&env, &edge_settings(), &upstream).await;
    let second = spawn_stack(&env, &edge_settings(), &upstream).await;
    let mut other_key = edge_settings();
    other_key.session.key = Some(lab_config::SecretString::new("x".repeat(40)));
    other_key.session.secure_cookie = true;
    let stranger = spawn_stack(&env, &other_key, &upstream).await;
    let (_, cookie, issued) = whoami(&first, &[]).await;
    let cookie = cookie.unwrap_or_default();
    let id = issued["session"].as_str().unwrap_or_default().to_owned();
    let tampered = cookie.replacen(&id[..1], if id.starts_with('0') { "1" } else { "0" }, 1);

    let (_, none, on_second) = whoami(&second, &[("cookie", &cookie)]).await;
    let (_, renewed, after_tamper) = whoami(&second, &[("cookie", &tampered)]).await;
    let (_, foreign, on_stranger) = whoami(&stranger, &[("cookie", &cookie)]).await;

    assert_eq!(none, None);
    assert_eq!(on_second["session"], id.as_str());
    assert_eq!(on_second["fresh"], false);
    assert!(renewed.is_some(), "a tampered cookie gets a new one");
    assert_eq!(after_tamper["fresh"], true);
    assert_ne!(after_tamper["session"], id.as_str());
    assert_ne!(on_stranger["session"], id.as_str());
    let secure = stranger
        .client
        .get(stranger.url("/api/whoami"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let attributes = secure
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(foreign.is_some());
    assert!(attributes.ends_with("; Secure"), "{attributes}");
}

#[tokio::test]
async fn forwarded_for_names_the_client_only_when_the_peer_is_a_trusted_proxy() {
    let env = TestEnv::builder().start().await;
    let upstream = Upstream::default();
    let mut behind_proxy = edge_settings();
    behind_proxy.trusted_proxies = "10.0.0.0/8, 127.0.0.0/8".into();
    let trusting = spawn_stack(&env, &behind_proxy, &upstream).await;
    let direct = spawn_stack(&env, &edge_settings(), &upstream).await;
    let forwarded = [("x-forwarded-for", "203.0.113.7, 10.1.2.3")];

    let (_, _, via_proxy) = whoami(&trusting, &forwarded).await;
    let (_, _, spoofed) = whoami(&direct, &forwarded).await;
    let (_, _, plain) = whoami(&trusting, &[("authorization", "Bearer abc.def.ghi")]).await;

    assert_eq!(via_proxy["client_ip"], "203.0.113.7");
    assert_eq!(spoofed["client_ip"], "127.0.0.1");
    assert_eq!(plain["client_ip"], "127.0.0.1");
    assert_eq!(plain["bearer"], true);
    assert_eq!(via_proxy["bearer"], false);
}

#[tokio::test]
async fn the_real_bff_issues_the_session_cookie_on_its_api_routes() {
    let env = TestEnv::builder().start().await;
    let bff = crate::helpers::spawn_bff(&env, &[]).await;

    let response = bff.get("/api/health").await;

    assert!(crate::stack::session_cookie(&response).is_some());
}
