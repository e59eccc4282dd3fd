//! Rate limits through the edge stack: buckets shared across replicas in Redis, the 429 answer,
//! continuous refill, and the local buckets that take over while Redis is down.

use std::time::Duration;

use lab_bff::rate_limit::{Mode, RouteClass};
use lab_test_support::TestEnv;
use reqwest::StatusCode;
use serde_json::Value;

use crate::stack::{
    Upstream, get_with, new_session, spawn_stack, spawn_stack_with_edge, with_default_bucket,
};

fn header(response: &reqwest::Response, name: &str) -> Option<u64> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn a_sessions_bucket_is_shared_exactly_by_two_replicas() {
    let env = TestEnv::builder().start().await;
    let upstream = Upstream::default();
    // Ten tokens and one more per 100 s: a burst of 30 sees the capacity and nothing else.
    let settings = with_default_bucket(10, 0.01);
    let first = spawn_stack(&env, &settings, &upstream).await;
    let second = spawn_stack(&env, &settings, &upstream).await;
    let cookie = new_session(&first).await;

    let mut allowed = [0, 0];
    for i in 0..30 {
        let replica = if i % 2 == 0 { &first } else { &second };
        if get_with(replica, "/api/ping", &cookie).await.status() == StatusCode::OK {
            allowed[i % 2] += 1;
        }
    }

    let total = allowed[0] + allowed[1];
    assert!((9..=11).contains(&total), "allowed {allowed:?}");
    assert!(allowed[0] > 0 && allowed[1] > 0, "allowed {allowed:?}");
}

#[tokio::test]
async fn a_busy_visitor_leases_tokens_yet_two_replicas_allow_exactly_the_capacity() {
    let env = TestEnv::builder().start().await;
    let upstream = Upstream::default();
    // The bench's accuracy row: capacity 50, practically no refill, a burst of 200 split over
    // two replicas, 16 requests in flight at a time.
    let settings = with_default_bucket(50, 0.001);
    let first = spawn_stack(&env, &settings, &upstream).await;
    let second = spawn_stack(&env, &settings, &upstream).await;
    let cookie = new_session(&first).await;
    let session = cookie
        .trim_start_matches("lab_session=")
        .split('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut redis = redis::Client::open(env.redis().url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = format!("{}bff:rl:default:s:{session}", env.redis_prefix());

    let one = get_with(&first, "/api/ping", &cookie).await;
    let shared: String = redis::cmd("HGET")
        .arg(&key)
        .arg("tokens")
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut statuses = vec![one.status()];
    for chunk in (1..200).collect::<Vec<usize>>().chunks(16) {
        let answers = futures::future::join_all(chunk.iter().map(|i| {
            let replica = if i % 2 == 0 { &first } else { &second };
            get_with(replica, "/api/ping", &cookie)
        }))
        .await;
        statuses.extend(answers.iter().map(reqwest::Response::status));
    }

    // One request took 1/8 of the full bucket: itself and a lease of five.
    let shared: f64 = shared.parse().unwrap();
    assert!((43.9..44.1).contains(&shared), "the bucket holds {shared}");
    assert_eq!(header(&one, "ratelimit-remaining"), Some(49));
    let allowed = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((allowed, refused), (50, 150), "{statuses:?}");
}

#[tokio::test]
async fn over_the_limit_is_a_429_problem_with_retry_after_and_the_bucket_headers() {
    let env = TestEnv::builder().start().await;
    let app = spawn_stack(&env, &with_default_bucket(2, 0.5), &Upstream::default()).await;
    let cookie = new_session(&app).await;

    let first = get_with(&app, "/api/ping", &cookie).await;
    let allowed = get_with(&app, "/api/ping", &cookie).await;
    let refused = get_with(&app, "/api/ping", &cookie).await;

    assert_eq!(header(&first, "ratelimit-remaining"), Some(1));
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(header(&allowed, "ratelimit-limit"), Some(2));
    assert_eq!(header(&allowed, "ratelimit-remaining"), Some(0));
    assert!(header(&allowed, "ratelimit-reset").is_some_and(|s| (1..=4).contains(&s)));
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = header(&refused, "retry-after");
    assert!(
        retry_after.is_some_and(|s| (1..=2).contains(&s)),
        "{retry_after:?}"
    );
    assert_eq!(header(&refused, "ratelimit-remaining"), Some(0));
    assert_eq!(header(&refused, "ratelimit-limit"), Some(2));
    assert_eq!(
        refused
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: Value = refused.json().await.unwrap_or(Value::Null);
    assert_eq!(body["status"], 429, "{body:#}");
    assert_eq!(body["type"], "urn:lab:problem:rate-limited", "{body:#}");
    assert_eq!(body["class"], "default", "{body:#}");
}

#[tokio::test]
async fn tokens_come_back_steadily_not_all_at_once_after_a_window() {
    let env = TestEnv::builder().start().await;
    // Five tokens, two back per second.
    let app = spawn_stack(&env, &with_default_bucket(5, 2.0), &Upstream::default()).await;
    let cookie = new_session(&app).await;
    let mut drained = false;
    for _ in 0..20 {
        if get_with(&app, "/api/ping", &cookie).await.status() == StatusCode::TOO_MANY_REQUESTS {
            drained = true;
            break;
        }
    }
    assert!(drained, "the bucket never ran out");

    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let mut allowed = 0;
    for _ in 0..5 {
        if get_with(&app, "/api/ping", &cookie).await.status() == StatusCode::OK {
            allowed += 1;
        }
    }

    // About two tokens came back in a second: some, never the whole bucket.
    assert!(
        (1..=4).contains(&allowed),
        "allowed {allowed} of 5 after 1 s"
    );
}

#[tokio::test]
async fn an_expensive_route_spends_its_own_stricter_bucket() {
    let env = TestEnv::builder().start().await;
    let mut settings = with_default_bucket(50, 0.01);
    settings.rate_limit.orders = lab_bff::rate_limit::Bucket {
        capacity: 2,
        refill_per_s: 0.01,
    };
    let app = spawn_stack(&env, &settings, &Upstream::default()).await;
    let cookie = new_session(&app).await;

    let mut orders = Vec::new();
    for _ in 0..3 {
        let response = app
            .client
            .post(app.url("/api/orders"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        orders.push(response.status());
    }
    let ping = get_with(&app, "/api/ping", &cookie).await;

    assert_eq!(
        orders,
        [
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(ping.status(), StatusCode::OK);
    assert_eq!(header(&ping, "ratelimit-limit"), Some(50));
}

#[tokio::test]
async fn each_refusal_goes_out_as_an_event_and_an_allowed_request_does_not() {
    let env = TestEnv::builder().start().await;
    let (app, edge) =
        spawn_stack_with_edge(&env, &with_default_bucket(1, 0.01), &Upstream::default()).await;
    let cookie = new_session(&app).await;
    let mut events = edge.rate_limiter().subscribe();

    let statuses = [
        get_with(&app, "/api/ping", &cookie).await.status(),
        get_with(&app, "/api/ping", &cookie).await.status(),
    ];

    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    assert_eq!(statuses, [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let refusal = &seen[0];
    let session = cookie.trim_start_matches("lab_session=").split('.').next();
    assert_eq!(Some(refusal.scope.trim_start_matches("s:")), session);
    assert_eq!(refusal.class, Some(RouteClass::Default));
    assert_eq!((refusal.limit, refusal.mode), (1, Mode::Shared));
    assert!(!refusal.allowed, "{refusal:?}");
    assert_eq!(refusal.remaining, 0);
}

#[tokio::test]
async fn with_redis_down_a_local_bucket_still_limits_and_health_says_local_until_it_returns() {
    let env = TestEnv::builder().with_private_redis().start().await;
    let app = spawn_stack(&env, &with_default_bucket(3, 0.01), &Upstream::default()).await;
    let cookie = new_session(&app).await;
    let (_, health) = app.get_json("/api/health").await;
    assert_eq!(health["rate_limit"]["mode"], "shared", "{health:#}");

    env.stop_redis().await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get_with(&app, "/api/ping", &cookie).await.status());
    }
    let (_, health) = app.get_json("/api/health").await;

    let allowed = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(allowed, 3, "{statuses:?}");
    assert_eq!(health["rate_limit"]["mode"], "local", "{health:#}");
    assert!(
        health["rate_limit"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{health:#}"
    );

    env.start_redis().await;
    let shared = lab_test_support::poll::eventually(Duration::from_secs(20), || async {
        get_with(&app, "/api/ping", &cookie).await;
        let (_, health) = app.get_json("/api/health").await;
        (health["rate_limit"]["mode"] == "shared").then_some(health)
    })
    .await;
    assert!(shared.is_some(), "the limiter never went back to Redis");
}

#[tokio::test]
async fn a_client_that_drops_its_cookies_is_limited_by_its_address() {
    let env = TestEnv::builder().start().await;
    let app = spawn_stack(&env, &with_default_bucket(3, 0.01), &Upstream::default()).await;

    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(app.get("/api/ping").await.status());
    }

    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}
