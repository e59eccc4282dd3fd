//! Redis prefixes, RabbitMQ names, a private Redis, an OpenBao dev server.

use lab_cache::redis::{self, AsyncCommands};
use lab_messaging::Topology;
use lab_messaging::lapin::options::QueueDeclareOptions;
use lab_messaging::lapin::types::FieldTable;
use lab_messaging::lapin::{Connection, ConnectionProperties};
use lab_test_support::{TestEnv, require_bao, test_client};

async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection")
}

#[tokio::test]
async fn keys_under_a_tests_prefix_are_removed_with_its_environment() {
    let env = TestEnv::builder().start().await;
    let settings = env.redis();
    let mut conn = connection(&settings.url).await;
    let key = format!("{}catalog:probe", settings.prefix);
    let _: () = conn.set(&key, "x").await.unwrap();

    drop(env);

    let exists: bool = conn.exists(&key).await.unwrap();
    assert!(!exists);
}

#[tokio::test]
async fn a_private_redis_stops_and_comes_back_on_the_same_port() {
    let env = TestEnv::builder().with_private_redis().start().await;
    let url = env.redis().url;
    let addr = url.trim_start_matches("redis://").to_owned();

    env.stop_redis().await;
    let stopped = tokio::net::TcpStream::connect(&addr).await;
    env.start_redis().await;
    let mut conn = connection(&url).await;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();

    assert!(stopped.is_err());
    assert_eq!(env.redis().url, url);
    assert_eq!(pong, "PONG");
}

#[tokio::test]
async fn a_dev_vault_answers_with_its_root_token() {
    require_bao!();
    let env = TestEnv::builder().with_vault().start().await;
    let vault = env.vault();

    let response = test_client()
        .get(format!("{}/v1/auth/token/lookup-self", vault.addr))
        .header("X-Vault-Token", &vault.root_token)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["data"]["policies"][0], "root");
}

#[tokio::test]
async fn rabbitmq_objects_under_a_tests_prefix_are_deleted_with_its_environment() {
    let env = TestEnv::builder().start().await;
    let settings = env.amqp();
    let conn = Connection::connect(settings.url.expose(), ConnectionProperties::default())
        .await
        .unwrap();
    let topology = Topology::new(&settings, "orders");
    let channel = conn.create_channel().await.unwrap();
    topology.declare(&channel, &[]).await.unwrap();
    assert!(topology.queue().starts_with(&env.amqp_prefix()));

    drop(env);

    for queue in [topology.queue(), topology.dead_queue()] {
        let channel = conn.create_channel().await.unwrap();
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let still_there = channel
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await;
        assert!(still_there.is_err(), "{queue} survived its test");
    }
    let _ = conn.close(200, "done".into()).await;
}
