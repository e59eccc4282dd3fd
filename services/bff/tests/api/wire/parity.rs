//! The two fronts side by side: the same requests (reads the own front serves, requests it hands
//! over) must get the same status, header names and values, and body from both.

use std::collections::{BTreeMap, BTreeSet};

use super::client::{Answer, Conn, request};
use super::{for_both, spawn};
use crate::stub::Mode;

/// The header values two BFFs legitimately answer differently: the time, the ids of the
/// request and of the replica, and the rate limit's counters (its `RateLimit-Limit` is
/// compared). `Set-Cookie` is compared without its session id.
const VOLATILE: &[&str] = &[
    "date",
    "x-request-id",
    "x-instance-id",
    "ratelimit-remaining",
    "ratelimit-reset",
];

/// What must be equal between the two fronts' answers to one request.
#[derive(Debug, PartialEq, Eq)]
struct Comparable {
    version: String,
    status: u16,
    names: BTreeSet<String>,
    values: BTreeMap<String, Vec<String>>,
    body: String,
    close_delimited: bool,
}

fn comparable(method: &str, answer: &Answer) -> Comparable {
    // A HEAD answer's `Content-Length: 0` where the upstream sent none: hyper writes the length
    // of the (empty) body it relays, the own front passes on the upstream's head as it is, as
    // nginx does. Neither says anything about the GET's body, so it is not compared.
    let invented =
        |name: &str, value: &str| method == "HEAD" && name == "content-length" && value == "0";
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &answer.headers {
        if VOLATILE.contains(&name.as_str()) || invented(name, value) {
            continue;
        }
        let value = match (name.as_str(), value.split_once(';')) {
            ("set-cookie", Some((pair, attributes))) => {
                let cookie = pair.split('=').next().unwrap_or_default();
                format!("{cookie}=<session>;{attributes}")
            }
            _ => value.clone(),
        };
        values.entry(name.clone()).or_default().push(value);
    }
    Comparable {
        version: answer.version.clone(),
        status: answer.status,
        // Only `Date` may be missing from one: a proxy may pass the upstream's or set its own.
        names: answer
            .headers
            .iter()
            .filter(|(n, v)| n != "date" && !invented(n, v))
            .map(|(n, _)| n.clone())
            .collect(),
        values,
        body: answer.text(),
        close_delimited: answer.close_delimited,
    }
}

/// One request compared, and the stub's mode for it.
struct Case {
    mode: Mode,
    method: &'static str,
    path: &'static str,
    /// Extra header lines, `Name: value`.
    headers: &'static [&'static str],
    body: &'static [u8],
}

const fn case(mode: Mode, method: &'static str, path: &'static str) -> Case {
    Case {
        mode,
        method,
        path,
        headers: &[],
        body: b"",
    }
}

/// The requests compared: reads the own front serves, and requests it hands over to hyper.
const COMPARED: &[Case] = &[
    case(Mode::Ok, "GET", "/api/products/42?q=a%20b"),
    case(Mode::Large, "GET", "/api/products/42"),
    case(Mode::Large, "HEAD", "/api/products/42"),
    case(Mode::Streamed, "GET", "/api/products"),
    case(Mode::Streamed, "HEAD", "/api/products"),
    case(Mode::NoContent, "GET", "/api/products/42"),
    Case {
        headers: &["If-None-Match: \"v1\""],
        ..case(Mode::NotModified, "GET", "/api/products/42")
    },
    case(Mode::PlainError, "GET", "/api/products/42"),
    case(Mode::ProblemUnavailable, "GET", "/api/products/42"),
    Case {
        // A cookie that does not verify: a new session, as without one.
        headers: &[
            "Cookie: lab_session=forged.c2ln",
            "Accept: application/json",
        ],
        ..case(Mode::Ok, "GET", "/api/products/42")
    },
    case(Mode::Ok, "GET", "/api/nowhere"),
    Case {
        headers: &["Content-Type: application/json"],
        body: br#"{"name":"wire"}"#,
        ..case(Mode::Ok, "POST", "/api/products")
    },
    case(Mode::Ok, "GET", "/livez"),
];

#[tokio::test]
async fn both_fronts_answer_the_same_requests_with_the_same_heads_and_bodies() {
    let [hyper, own] = for_both(|own_front| async move {
        let (bff, stub) = spawn(own_front, Mode::Ok).await;
        let mut answers = Vec::new();
        for case in COMPARED {
            stub.set(case.mode);
            let mut conn = Conn::open(bff.addr).await;
            let wire = request(case.method, case.path, case.headers, case.body);
            let answer = conn.exchange(case.method, &wire).await;
            assert!(
                answer
                    .header("x-request-id")
                    .is_some_and(|id| !id.is_empty()),
                "{answer:?}"
            );
            assert_eq!(
                answer.header("x-instance-id"),
                Some(bff.instance_id.as_str())
            );
            answers.push(comparable(case.method, &answer));
        }
        answers
    })
    .await;

    for (case, (hyper, own)) in COMPARED.iter().zip(hyper.iter().zip(&own)) {
        let Case { method, path, .. } = case;
        assert_eq!(hyper, own, "{method} {path}: hyper, then the own front");
    }
}
