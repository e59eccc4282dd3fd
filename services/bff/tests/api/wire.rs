//! The BFF on the wire: raw HTTP/1 over TCP, request bytes written by hand and answers read by
//! the strict reader of [`client`], pinning down what a correct HTTP/1.1 proxy does with
//! keep-alive, pipelining, `HEAD`, bodiless statuses, hop-by-hop headers, `Connection: close`,
//! HTTP/1.0, malformed or slow heads, an upstream that drops its connections, request ids, the
//! customer header, upstream failures, a big head and shutdown.
//!
//! Every scenario runs twice, with `ProxySettings::own_front` off (hyper serves every request)
//! and on (the BFF's own front serves bodiless proxied reads), so the two cannot drift apart;
//! [`both_fronts_answer_the_same_requests_with_the_same_heads_and_bodies`] compares their
//! answers header by header.
//!
//! The scenarios are grouped by what they exercise: [`connections`] (keep-alive, pipelining,
//! `close`, HTTP/1.0, shutdown), [`bodies`] (framing of bodies both ways), [`heads`] (parsing of
//! odd or hostile request heads), [`headers`] (what crosses the proxy), [`upstream`] (an upstream
//! that closes connections or fails) and [`parity`]; this module holds their set-up, and
//! [`client`] the raw client.
//!
//! A test marked `#[ignore = "today's behaviour is wrong: …"]` pins the correct behaviour where
//! hyper's path does not have it yet; run them with `--run-ignored all`.

mod bodies;
mod client;
mod connections;
mod headers;
mod heads;
mod parity;
mod upstream;

use std::future::Future;

use lab_test_support::{TestApp, TestEnv};
use serde_json::Value;

use self::client::Answer;
use crate::helpers::spawn_bff_with;
use crate::stub::{Mode, Stub};

/// Runs `scenario` against a BFF with its own front off, then on; the results, in that order,
/// for tests that compare the two.
async fn for_both<T, F, Fut>(scenario: F) -> [T; 2]
where
    F: Fn(bool) -> Fut,
    Fut: Future<Output = T>,
{
    // Printed so a failure's output says which front failed.
    eprintln!("--- own_front: false");
    let hyper = scenario(false).await;
    eprintln!("--- own_front: true");
    let own = scenario(true).await;
    [hyper, own]
}

/// A BFF (own front on or off) with the catalog routes going to a fresh stub in `mode`.
async fn spawn(own_front: bool, mode: Mode) -> (TestApp, Stub) {
    let stub = Stub::start(mode).await;
    let bff = spawn_to(own_front, &stub.url).await;
    (bff, stub)
}

/// A BFF (own front on or off) with the catalog routes going to `upstream`.
async fn spawn_to(own_front: bool, upstream: &str) -> TestApp {
    let env = TestEnv::builder().start().await;
    let proxy = lab_bff::ProxySettings {
        own_front,
        ..lab_bff::ProxySettings::default()
    };
    spawn_bff_with(&env, &[("catalog", upstream.to_owned())], proxy).await
}

/// The values of header `name` the stub's [`Mode::Echo`] saw.
fn echoed(answer: &Answer, name: &str) -> Vec<String> {
    let body = answer.json();
    body["headers"][name]
        .as_array()
        .map(|values| {
            values
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The paths (and queries) of the requests the BFF proxied to `stub`, in order; without the
/// BFF's own background calls to it (`/readyz` probes, `/credentials`).
fn proxied(stub: &Stub) -> Vec<String> {
    stub.paths()
        .into_iter()
        .filter(|p| p.starts_with("/products"))
        .collect()
}

/// The path and query the stub's [`Mode::Echo`] saw.
fn echoed_path(answer: &Answer) -> String {
    answer.json()["path"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
