//! `GET /api/chaos/invariants`: the verdict of a chaos run (ARCHITECTURE.md §8), assembled from
//! every service's own `GET /invariants` and cross-checked where one service alone cannot tell.
//!
//! Every check comes back `held`, `violated` or `unknown` (its service did not answer, or it
//! could only be checked in part), with its numbers and at most [`MAX_IDS`] offending ids; the
//! report holds only when every check is `held`. Replicas of a service share its database, so
//! the first instance (in configuration order) that answers speaks for the service.
//!
//! Reads go in an order that cannot invent a violation out of work in flight:
//! 1. catalog, checkout and payments, concurrently;
//! 2. orders, judging its pending orders by checkout's longest saga plus a grace period, and
//!    telling the status of payments' refunded orders and checkout's idle in-flight sagas;
//! 3. for an order orders calls terminal while its saga was in flight, the saga again: states
//!    only move forward and a saga finishes before its order does, so a saga still not terminal
//!    *after* orders said the order was is a real violation, not a race between the two reads.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::extract::State;
use lab_http::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::AppState;

/// Offending ids listed per check: enough to start an investigation, few enough to read.
pub const MAX_IDS: usize = 20;

/// How long one instance's `/invariants` may take: a handful of aggregate queries that answer in
/// milliseconds; 5 s means the instance or its database is in trouble, which is `unknown`.
pub(super) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Added to checkout's longest saga before a pending order counts as overdue: the saga's last
/// event still has to reach orders through the broker (retry queues reach 25 s).
const ORDER_DEADLINE_GRACE_MS: u64 = 60_000;

/// The checks each service reports, by the field that carries them in its `/invariants`.
const SERVICE_CHECKS: [(&str, &[&str]); 4] = [
    (
        "catalog",
        &[
            "stock_conserved",
            "stock_non_negative",
            "reservations_match_inventory",
        ],
    ),
    (
        "orders",
        &["terminal_or_within_deadline", "one_claim_per_key"],
    ),
    ("checkout", &["no_stuck_sagas"]),
    (
        "payments",
        &["no_double_capture", "captured_within_authorized"],
    ),
];

/// Where a check (or the whole report) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Held,
    Violated,
    /// Not judged: the service did not answer, or only part could be checked.
    Unknown,
}

/// The whole verdict.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvariantsReport {
    /// True only when every check is held.
    pub held: bool,
    /// `violated` if any check is, else `unknown` if any is, else `held`.
    pub status: Verdict,
    /// Every check, service by service, then the cross-checks.
    pub invariants: Vec<Invariant>,
    /// Per service, its counts by status or state (orders, checkout).
    #[schema(value_type = Object)]
    pub counts: BTreeMap<String, Value>,
    /// Every instance asked, and whether it answered.
    pub sources: Vec<Source>,
}

/// One invariant.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Invariant {
    /// `<service>.<check>` (`catalog.stock_conserved`, `orders.outbox_drains`) or
    /// `cross.<check>` for those judged across two services.
    pub name: String,
    /// The services whose data it is judged from.
    pub services: Vec<String>,
    pub status: Verdict,
    /// Whether `status` is `held`.
    pub held: bool,
    /// The numbers it was judged on.
    #[schema(value_type = Object)]
    pub numbers: Map<String, Value>,
    /// Offending ids (orders, products, claims, messages), at most 20.
    pub offending_ids: Vec<String>,
    /// Why it is `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One instance asked for its invariants.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Source {
    pub service: String,
    /// Its base URL.
    pub url: String,
    /// Whether it answered with a report.
    pub answered: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A service's report from the first instance that answered, or why none did.
pub(super) struct Answer {
    /// The answering instance's URL and its report.
    pub(super) report: Result<(String, Value), String>,
}

impl Answer {
    pub(super) fn value(&self) -> Option<&Value> {
        self.report.as_ref().ok().map(|(_, v)| v)
    }
}

/// Every invariant of the cluster, judged now.
#[utoipa::path(get, path = "/api/chaos/invariants", tag = "chaos",
    responses((status = 200, body = InvariantsReport)))]
pub(crate) async fn get_invariants(State(state): State<AppState>) -> Json<InvariantsReport> {
    Json(judge(&state).await)
}

async fn judge(state: &AppState) -> InvariantsReport {
    let mut sources = Vec::new();
    let (catalog, checkout, payments) = tokio::join!(
        ask(state, "catalog", ""),
        ask(state, "checkout", ""),
        ask(state, "payments", ""),
    );
    let longest = checkout
        .0
        .value()
        .and_then(|c| c["longest_saga_ms"].as_u64());
    let refunded = ids_at(payments.0.value(), &["refunded", "order_ids"]);
    let in_flight = ids_at(checkout.0.value(), &["in_flight_order_ids"]);
    let asked: BTreeSet<&String> = refunded.iter().chain(&in_flight).collect();
    let mut query = format!(
        "?statuses_of={}",
        asked
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    if let Some(longest) = longest {
        query.push_str(&format!(
            "&deadline_ms={}",
            longest + ORDER_DEADLINE_GRACE_MS
        ));
    }
    let orders = ask(state, "orders", &query).await;
    let answers: BTreeMap<&str, Answer> = [
        ("catalog", catalog),
        ("orders", orders),
        ("checkout", checkout),
        ("payments", payments),
    ]
    .into_iter()
    .map(|(name, (answer, asked))| {
        sources.extend(asked);
        (name, answer)
    })
    .collect();

    let mut invariants = Vec::new();
    let mut counts = BTreeMap::new();
    for (service, checks) in SERVICE_CHECKS {
        let answer = &answers[service];
        for check in checks {
            invariants.push(from_service(service, check, answer, &[check]));
        }
        invariants.push(from_service(
            service,
            "outbox_drains",
            answer,
            &["messaging", "outbox"],
        ));
        invariants.push(from_service(
            service,
            "dead_letters",
            answer,
            &["messaging", "dead_letters"],
        ));
        if let Some(v) = answer.value() {
            for field in ["by_status", "by_state"] {
                if let Some(c) = v.get(field) {
                    counts.insert(service.to_owned(), c.clone());
                }
            }
        }
    }
    invariants.push(super::cross::refunded_never_completed(
        &answers["payments"],
        &answers["orders"],
    ));
    invariants.push(
        super::cross::terminal_orders_have_terminal_sagas(
            state,
            &answers["checkout"],
            &answers["orders"],
            &in_flight,
        )
        .await,
    );

    let status = if invariants.iter().any(|i| i.status == Verdict::Violated) {
        Verdict::Violated
    } else if invariants.iter().any(|i| i.status == Verdict::Unknown) {
        Verdict::Unknown
    } else {
        Verdict::Held
    };
    InvariantsReport {
        held: status == Verdict::Held,
        status,
        invariants,
        counts,
        sources,
    }
}

/// Asks every instance of `service` for `/invariants{query}` at once; the first (in
/// configuration order) that answered speaks for the service.
async fn ask(state: &AppState, service: &str, query: &str) -> (Answer, Vec<Source>) {
    let urls: Vec<String> = state
        .settings
        .instances()
        .into_iter()
        .filter(|(s, _)| s == service)
        .map(|(_, url)| url)
        .collect();
    let replies =
        futures::future::join_all(urls.iter().map(|url| fetch(&state.http, url, query))).await;
    let sources = urls
        .iter()
        .zip(&replies)
        .map(|(url, reply)| Source {
            service: service.to_owned(),
            url: url.clone(),
            answered: reply.is_ok(),
            reason: reply.as_ref().err().cloned(),
        })
        .collect();
    let configured = !urls.is_empty();
    let report = match urls.into_iter().zip(replies).find(|(_, r)| r.is_ok()) {
        Some((url, Ok(value))) => Ok((url, value)),
        _ if !configured => Err(format!("no instance of {service} is configured")),
        _ => Err(format!("no instance of {service} answered")),
    };
    (Answer { report }, sources)
}

/// One instance's `/invariants{query}` as JSON, or why not.
async fn fetch(http: &reqwest::Client, url: &str, query: &str) -> Result<Value, String> {
    let response = http
        .get(format!("{url}/invariants{query}"))
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(format!(
            "answered {status}: {}",
            body.chars().take(200).collect::<String>()
        ));
    }
    response
        .json::<Value>()
        .await
        .map_err(|e| format!("unreadable report: {e}"))
}

/// The ids (as strings) in the array at `path` of `report`.
pub(super) fn ids_at(report: Option<&Value>, path: &[&str]) -> Vec<String> {
    let mut v = report;
    for key in path {
        v = v.and_then(|v| v.get(key));
    }
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|id| id.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// An invariant that could not be judged.
pub(super) fn unknown(name: String, services: &[&str], reason: String) -> Invariant {
    Invariant {
        name,
        services: services.iter().map(|s| (*s).to_owned()).collect(),
        status: Verdict::Unknown,
        held: false,
        numbers: Map::new(),
        offending_ids: Vec::new(),
        reason: Some(reason),
    }
}

/// An invariant judged `held` or `violated` from `numbers`, with the first [`MAX_IDS`] ids.
pub(super) fn judged(
    name: String,
    services: &[&str],
    held: bool,
    numbers: Map<String, Value>,
    ids: Vec<String>,
) -> Invariant {
    Invariant {
        name,
        services: services.iter().map(|s| (*s).to_owned()).collect(),
        status: if held {
            Verdict::Held
        } else {
            Verdict::Violated
        },
        held,
        numbers,
        offending_ids: ids.into_iter().take(MAX_IDS).collect(),
        reason: None,
    }
}

/// Check `name` of `service`, read from the object at `path` of its report: `held`, the
/// `…_ids` arrays as offending ids, every other field as its numbers.
fn from_service(service: &str, name: &str, answer: &Answer, path: &[&str]) -> Invariant {
    let full = format!("{service}.{name}");
    let report = match &answer.report {
        Ok((_, report)) => report,
        Err(reason) => return unknown(full, &[service], reason.clone()),
    };
    let mut v = Some(report);
    for key in path {
        v = v.and_then(|v| v.get(key));
    }
    let Some(check) = v.and_then(Value::as_object) else {
        return unknown(
            full,
            &[service],
            format!("{service} did not report {}", path.join(".")),
        );
    };
    let Some(held) = check.get("held").and_then(Value::as_bool) else {
        return unknown(
            full,
            &[service],
            format!("{service}'s {name} has no verdict"),
        );
    };
    let mut numbers = Map::new();
    let mut ids = Vec::new();
    for (key, value) in check {
        if key == "held" {
            continue;
        }
        match value.as_array() {
            Some(list) if key.ends_with("_ids") => {
                ids.extend(list.iter().filter_map(|id| id.as_str().map(str::to_owned)));
            }
            _ => {
                numbers.insert(key.clone(), value.clone());
            }
        }
    }
    judged(full, &[service], held, numbers, ids)
}
