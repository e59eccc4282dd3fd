//! The two-level cache: invalidation reaches every replica, a load that raced an invalidation is
//! never cached (checked deterministically), misses are collapsed, and Redis going away degrades
//! but never breaks reads and writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lab_cache::{CacheConfig, Redis, Source, TwoLevel, Versioned};
use lab_test_support::{TestEnv, eventually};
use reqwest::Method;
use serde_json::json;
use tokio::sync::oneshot;

use crate::catalog::{demo_id, get, replicas, two, write};
use crate::helpers::{MIGRATIONS, env};

fn cache(env: &TestEnv) -> Arc<TwoLevel<String>> {
    let redis = Redis::new(&env.redis(), "catalog").unwrap();
    TwoLevel::new(
        CacheConfig {
            kind: "test",
            l1_capacity: 100,
            l1_ttl: Duration::from_secs(60),
            l2_ttl: Duration::from_secs(60),
        },
        redis,
    )
}

fn entry(version: i64) -> Versioned<String> {
    Versioned {
        version,
        value: format!("v{version}"),
    }
}

#[tokio::test]
async fn a_write_on_one_replica_evicts_the_other_replicas_l1() {
    let (a, b) = two().await;
    let path = format!("/products/{}", demo_id("DEMO-CACHE"));
    let _ = get(&b, &path).await;
    let (_, etag, cached, before) = get(&b, &path).await;
    assert_eq!(cached.as_deref(), Some("l1"));

    let (status, _, updated, _) = write(
        &a,
        Method::PATCH,
        &path,
        etag.as_deref(),
        false,
        json!({"price_minor": 4321}),
    )
    .await;
    let seen = eventually(Duration::from_secs(2), || async {
        let (_, _, source, body) = get(&b, &path).await;
        (body["version"] == updated["version"]).then_some((source, body))
    })
    .await;

    assert_eq!(status, 200);
    let (source, body) = seen.expect("replica B served the new version within 2 s");
    assert_eq!(body["price_minor"], 4321);
    assert_ne!(
        source.as_deref(),
        Some("l1"),
        "the new version came from L2 or the database, not a stale L1"
    );
    assert!(body["version"].as_i64() > before["version"].as_i64());
}

#[tokio::test]
async fn a_load_overtaken_by_an_invalidation_is_returned_but_never_cached() {
    let env = TestEnv::builder().start().await;
    let cache = cache(&env);
    let (release, gate) = oneshot::channel::<()>();

    // The reader reads version 1 from the "database", then stalls before caching it.
    let reader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get("k", true, || async move {
                    let row = entry(1);
                    let _ = gate.await;
                    Ok(Some(row))
                })
                .await
        })
    };
    tokio::task::yield_now().await;
    // A write commits version 2 and invalidates while the reader holds version 1.
    assert!(cache.invalidate("k", 2).await);
    release.send(()).unwrap();
    let (served, source) = reader.await.unwrap().unwrap().unwrap();

    assert_eq!(served.version, 1, "the racing caller still gets its answer");
    assert_eq!(source, Source::Db);
    assert!(cache.peek_l1("k").is_none(), "stale version kept out of L1");
    assert_eq!(
        cache.peek_l2("k").await.unwrap(),
        None,
        "stale version kept out of L2"
    );
    assert_eq!(cache.stats.stale_loads_refused.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn another_replicas_stale_load_is_refused_by_the_floor_in_redis_even_before_the_message_arrives()
 {
    let env = TestEnv::builder().start().await;
    let (writer, reader) = (cache(&env), cache(&env));

    // The reader never hears the pub/sub message (no subscriber): only Redis can stop it.
    assert!(writer.invalidate("k", 5).await);
    reader.store("k", &Arc::new(entry(4))).await;
    reader.store("k", &Arc::new(entry(5))).await;

    assert_eq!(reader.stats.stale_loads_refused.load(Ordering::Relaxed), 1);
    assert_eq!(reader.peek_l1("k").map(|e| e.version), Some(5));
    assert_eq!(
        reader.peek_l2("k").await.unwrap().map(|e| e.version),
        Some(5)
    );
}

#[tokio::test]
async fn concurrent_cold_reads_make_one_load_with_single_flight_and_one_each_without() {
    let env = TestEnv::builder().start().await;
    let cache = cache(&env);
    let loads = Arc::new(AtomicUsize::new(0));

    let mut counts = Vec::new();
    for (key, single_flight) in [("a", true), ("b", false)] {
        let before = loads.load(Ordering::SeqCst);
        let readers = (0..20).map(|_| {
            let (cache, loads) = (cache.clone(), loads.clone());
            async move {
                cache
                    .get(key, single_flight, || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        // Long enough that every reader arrives while the first load runs.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok(Some(entry(1)))
                    })
                    .await
                    .unwrap()
            }
        });
        futures::future::join_all(readers).await;
        counts.push(loads.load(Ordering::SeqCst) - before);
    }

    assert_eq!(counts, vec![1, 20]);
}

#[tokio::test]
async fn with_redis_down_reads_and_writes_still_work_and_its_return_drops_l1() {
    let env = TestEnv::builder()
        .with_database(MIGRATIONS)
        .with_private_redis()
        .start()
        .await;
    let app = replicas(&env, 1).await.remove(0);
    app.wait_ready().await;
    let id = demo_id("DEMO-CACHE");
    let path = format!("/products/{id}");

    env.stop_redis().await;
    let (read, etag, _, _) = get(&app, &path).await;
    let (written, _, _, _) = write(
        &app,
        Method::PATCH,
        &path,
        etag.as_deref(),
        false,
        json!({"price_minor": 777}),
    )
    .await;
    let (_, _, _, fresh) = get(&app, &path).await;
    let degraded = app.wait_readyz(|b| b["status"] == "degraded").await;
    let (_, _, _, state_down) = get(&app, &format!("/cache/products/{id}")).await;
    env.start_redis().await;
    app.wait_ready().await;
    // The subscriber may not have noticed the outage yet when Redis is back (it still says
    // subscribed, on the dead connection): wait for the reconnect itself, whose mark is the
    // dropped L1.
    let healed = eventually(Duration::from_secs(10), || async {
        let (_, _, _, s) = get(&app, &format!("/cache/products/{id}")).await;
        (s["subscribed"] == true && s["l1_version"].is_null()).then_some(s)
    })
    .await;

    assert_eq!((read, written), (200, 200));
    assert_eq!(
        fresh["price_minor"], 777,
        "a write during the outage is read back at once"
    );
    assert!(
        degraded["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "redis" && c["status"] == "down")
    );
    assert_eq!(
        state_down["l1_version"], fresh["version"],
        "L1 kept serving during the outage"
    );
    let healed = healed.expect("the subscriber reconnected and dropped L1");
    assert_eq!(
        healed["l1_version"],
        serde_json::Value::Null,
        "L1 dropped on reconnect: it may have missed invalidations"
    );
}

#[tokio::test]
async fn the_cache_and_stampede_demos_pass_across_two_replicas() {
    let env = env().await;
    let apps = replicas(&env, 2).await;

    let cache_demo: serde_json::Value = apps[0]
        .client
        .post(apps[0].url("/demo/cache"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stampede: serde_json::Value = apps[1]
        .client
        .post(apps[1].url("/demo/stampede"))
        .json(&json!({"n": 10}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(cache_demo["verdict"], "pass", "{cache_demo:#}");
    assert_eq!(cache_demo["evidence"]["reader"], apps[1].base_url);
    assert_eq!(stampede["verdict"], "pass", "{stampede:#}");
    assert_eq!(stampede["evidence"]["db_queries_single_flight"], 1);
}
