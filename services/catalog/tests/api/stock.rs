//! Stock reservations: all or nothing, never oversold, idempotent per order, conserved under any
//! interleaving (a property test over random concurrent command sequences on the real database).

use std::collections::HashMap;

use lab_catalog::products::{self, NewProduct};
use lab_catalog::stock::{self, Line, ReserveOutcome};
use lab_test_support::TestEnv;
use proptest::prelude::*;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::MIGRATIONS;

async fn pool(env: &TestEnv) -> PgPool {
    lab_db::connect(&env.database("catalog"), "catalog", "stock-test", "-")
        .await
        .unwrap()
}

async fn product(pool: &PgPool, stock: i32) -> Uuid {
    let id = Uuid::now_v7();
    let new = NewProduct {
        id,
        sku: format!("T-{}", id.simple()).to_uppercase(),
        name: "t".into(),
        description: String::new(),
        price_minor: 1,
        currency: "USD",
        demo: false,
        initial_stock: stock,
    };
    products::create(pool, &new).await.unwrap().unwrap();
    id
}

async fn inventory(pool: &PgPool, id: Uuid) -> (i32, i32, i32, i64) {
    let i = products::inventory(pool, id).await.unwrap().unwrap();
    (i.on_hand, i.reserved, i.sold, i.received)
}

fn line(product_id: Uuid, quantity: i32) -> Line {
    Line {
        product_id,
        quantity,
    }
}

#[tokio::test]
async fn a_reservation_takes_every_line_or_none() {
    let env = TestEnv::builder().with_database(MIGRATIONS).start().await;
    let pool = pool(&env).await;
    let (plenty, scarce) = (product(&pool, 10).await, product(&pool, 1).await);

    let refused = stock::reserve(&pool, Uuid::now_v7(), &[line(plenty, 3), line(scarce, 2)])
        .await
        .unwrap();

    let ReserveOutcome::Refused { short, .. } = refused else {
        panic!("expected a refusal")
    };
    assert_eq!(short.len(), 1);
    assert_eq!(
        (short[0].product_id, short[0].requested, short[0].available),
        (scarce, 2, 1)
    );
    assert_eq!(
        inventory(&pool, plenty).await,
        (10, 0, 0, 10),
        "the line that fitted was given back"
    );
    assert_eq!(inventory(&pool, scarce).await, (1, 0, 0, 1));
}

#[tokio::test]
async fn repeating_a_reservation_returns_the_same_answer_and_takes_nothing_more() {
    let env = TestEnv::builder().with_database(MIGRATIONS).start().await;
    let pool = pool(&env).await;
    let p = product(&pool, 5).await;
    let order = Uuid::now_v7();

    let first = stock::reserve(&pool, order, &[line(p, 2)]).await.unwrap();
    let again = stock::reserve(&pool, order, &[line(p, 2)]).await.unwrap();

    assert_eq!(first, again);
    assert!(matches!(first, ReserveOutcome::Reserved { .. }));
    assert_eq!(inventory(&pool, p).await, (3, 2, 0, 5));
}

#[tokio::test]
async fn commit_and_release_are_idempotent_and_ignore_unknown_orders() {
    let env = TestEnv::builder().with_database(MIGRATIONS).start().await;
    let pool = pool(&env).await;
    let p = product(&pool, 5).await;
    let (sold, returned) = (Uuid::now_v7(), Uuid::now_v7());
    stock::reserve(&pool, sold, &[line(p, 2)]).await.unwrap();
    stock::reserve(&pool, returned, &[line(p, 1)])
        .await
        .unwrap();

    assert_eq!(stock::commit(&pool, sold).await.unwrap().units, 2);
    assert_eq!(stock::commit(&pool, sold).await.unwrap().units, 0);
    assert_eq!(
        stock::release(&pool, sold).await.unwrap().units,
        0,
        "a committed order is not released"
    );
    assert_eq!(stock::release(&pool, returned).await.unwrap().units, 1);
    assert_eq!(stock::release(&pool, returned).await.unwrap().units, 0);
    assert_eq!(stock::commit(&pool, Uuid::now_v7()).await.unwrap().units, 0);

    assert_eq!(inventory(&pool, p).await, (3, 0, 2, 5));
}

#[tokio::test]
async fn a_release_that_overtakes_its_reserve_makes_the_late_reserve_take_nothing() {
    let env = TestEnv::builder().with_database(MIGRATIONS).start().await;
    let pool = pool(&env).await;
    let p = product(&pool, 5).await;
    let order = Uuid::now_v7();

    stock::release(&pool, order).await.unwrap();
    let late = stock::reserve(&pool, order, &[line(p, 2)]).await.unwrap();

    assert!(matches!(late, ReserveOutcome::Refused { .. }), "{late:?}");
    assert_eq!(inventory(&pool, p).await, (5, 0, 0, 5));
}

#[tokio::test]
async fn of_twenty_buyers_of_the_last_unit_exactly_one_gets_it() {
    let env = TestEnv::builder().with_database(MIGRATIONS).start().await;
    let pool = pool(&env).await;
    let p = product(&pool, 1).await;

    let buyers = (0..20).map(|_| {
        let pool = pool.clone();
        async move { stock::reserve(&pool, Uuid::now_v7(), &[line(p, 1)]).await }
    });
    let outcomes = futures::future::join_all(buyers).await;

    let won = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(ReserveOutcome::Reserved { .. })))
        .count();
    assert_eq!(won, 1);
    assert_eq!(inventory(&pool, p).await, (0, 1, 0, 1));
}

#[derive(Debug, Clone)]
enum Op {
    Reserve(usize, Vec<(usize, i32)>),
    Commit(usize),
    Release(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..6usize, prop::collection::vec((0..3usize, 1..4i32), 1..3)).prop_map(|(o, l)| Op::Reserve(o, l)),
        1 => (0..6usize).prop_map(Op::Commit),
        1 => (0..6usize).prop_map(Op::Release),
    ]
}

/// Applies `batches` of commands, each batch concurrently, and checks after each batch that
/// every product's stock is conserved, nothing is negative, and `reserved` equals the open
/// reservations.
async fn run_case(pool: &PgPool, batches: Vec<Vec<Op>>) -> Result<(), String> {
    let products = [
        product(pool, 5).await,
        product(pool, 3).await,
        product(pool, 8).await,
    ];
    let orders: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
    for batch in batches {
        let running = batch.into_iter().map(|op| {
            let (pool, orders) = (pool.clone(), orders.clone());
            async move {
                match op {
                    Op::Reserve(o, lines) => {
                        let lines: Vec<Line> = lines
                            .into_iter()
                            .map(|(p, q)| line(products[p], q))
                            .collect();
                        stock::reserve(&pool, orders[o], &lines).await.map(|_| ())
                    }
                    Op::Commit(o) => stock::commit(&pool, orders[o]).await.map(|_| ()),
                    Op::Release(o) => stock::release(&pool, orders[o]).await.map(|_| ()),
                }
            }
        });
        for result in futures::future::join_all(running).await {
            result.map_err(|e| e.to_string())?;
        }
        let open: HashMap<Uuid, i64> = sqlx::query_as::<_, (Uuid, i64)>(
            "SELECT product_id, sum(quantity)::bigint FROM reservations WHERE state = 'reserved' GROUP BY product_id",
        )
        .fetch_all(pool)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
        for p in products {
            let (on_hand, reserved, sold, received) = inventory(pool, p).await;
            if on_hand < 0 || reserved < 0 || sold < 0 {
                return Err(format!(
                    "negative stock for {p}: {on_hand}/{reserved}/{sold}"
                ));
            }
            if i64::from(on_hand + reserved + sold) != received {
                return Err(format!(
                    "stock not conserved for {p}: {on_hand}+{reserved}+{sold} != {received}"
                ));
            }
            if i64::from(reserved) != open.get(&p).copied().unwrap_or(0) {
                return Err(format!(
                    "reserved {reserved} != open reservations {:?} for {p}",
                    open.get(&p)
                ));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_interleaving_of_reserve_commit_and_release_conserves_stock() {
    let env = TestEnv::builder().with_database(MIGRATIONS).start().await;
    let pool = pool(&env).await;
    let handle = tokio::runtime::Handle::current();
    // Each case is a few dozen real transactions; 24 cases keep the test to seconds.
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    });
    let strategy = prop::collection::vec(prop::collection::vec(op(), 1..6), 1..6);

    let result = runner.run(&strategy, |batches| {
        tokio::task::block_in_place(|| handle.block_on(run_case(&pool, batches)))
            .map_err(TestCaseError::fail)
    });

    result.unwrap();
}
