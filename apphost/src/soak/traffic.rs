//! The soak's HTTP traffic: a visitor (its own session cookie, as a browser keeps one) whose
//! every call is timed and counted under the phase it started in. Errors are what a visitor would
//! call one — no answer, a 5xx, a 429 — and are expected during chaos: they are counted, never
//! fatal.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode, header};
use serde::Serialize;
use serde_json::Value;

use super::report::PhaseStats;

/// The soak's phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    WarmUp,
    Chaos,
    Settle,
    Verify,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Phase::WarmUp, Phase::Chaos, Phase::Settle, Phase::Verify];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::WarmUp => "warm-up",
            Phase::Chaos => "chaos",
            Phase::Settle => "settle",
            Phase::Verify => "verify",
        }
    }
}

/// Calls made in one phase.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    errors: u64,
    by_status: BTreeMap<String, u64>,
    latencies_ms: Vec<f64>,
}

/// Every call of the soak, by phase; the current phase is what new calls count under.
#[derive(Clone)]
pub struct Traffic {
    phase: Arc<AtomicU8>,
    tallies: Arc<Mutex<BTreeMap<Phase, Tally>>>,
    client: reqwest::Client,
}

impl Traffic {
    pub fn new(client: reqwest::Client) -> Self {
        Self {
            phase: Arc::new(AtomicU8::new(0)),
            tallies: Arc::default(),
            client,
        }
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn set_phase(&self, phase: Phase) {
        let index = Phase::ALL.iter().position(|p| *p == phase).unwrap_or(0);
        self.phase.store(index as u8, Ordering::Relaxed);
    }

    pub fn phase(&self) -> Phase {
        Phase::ALL
            .get(usize::from(self.phase.load(Ordering::Relaxed)))
            .copied()
            .unwrap_or(Phase::WarmUp)
    }

    fn record(&self, phase: Phase, outcome: &str, error: bool, elapsed: Duration) {
        let mut tallies = self.tallies.lock().unwrap_or_else(PoisonError::into_inner);
        let tally = tallies.entry(phase).or_default();
        tally.requests += 1;
        tally.errors += u64::from(error);
        *tally.by_status.entry(outcome.to_owned()).or_default() += 1;
        tally.latencies_ms.push(elapsed.as_secs_f64() * 1000.0);
    }

    /// Per phase: calls, errors and their rate, answers by status, latency quantiles.
    pub fn stats(&self, seconds: &BTreeMap<Phase, f64>) -> Vec<PhaseStats> {
        let mut tallies = self.tallies.lock().unwrap_or_else(PoisonError::into_inner);
        Phase::ALL
            .iter()
            .map(|phase| {
                let tally = tallies.entry(*phase).or_default();
                let mut l = std::mem::take(&mut tally.latencies_ms);
                let q = |l: &mut Vec<f64>, q| {
                    let v = crate::bench::quantile(l, q);
                    if v.is_nan() { 0.0 } else { v }
                };
                let stats = PhaseStats {
                    phase: phase.as_str().to_owned(),
                    seconds: seconds.get(phase).copied().unwrap_or(0.0),
                    requests: tally.requests,
                    errors: tally.errors,
                    error_rate: if tally.requests == 0 {
                        0.0
                    } else {
                        tally.errors as f64 / tally.requests as f64
                    },
                    by_status: tally.by_status.clone(),
                    p50_ms: q(&mut l, 0.5),
                    p99_ms: q(&mut l, 0.99),
                    max_ms: l.last().copied().unwrap_or(0.0),
                };
                tally.latencies_ms = l;
                stats
            })
            .collect()
    }
}

/// One answer: status, headers that matter, body as JSON (`Null` when it was not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub etag: Option<String>,
    pub body: Value,
}

/// A visitor: one session cookie, kept from the first answer that sets it.
pub struct Visitor {
    traffic: Traffic,
    base: String,
    cookie: Option<String>,
}

/// Per call: the BFF's own retries and timeouts come first; past this the visitor gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

impl Visitor {
    pub fn new(traffic: &Traffic, base: &str) -> Self {
        Self {
            traffic: traffic.clone(),
            base: base.to_owned(),
            cookie: None,
        }
    }

    /// `method path` (relative to the BFF, or an absolute URL such as the PSP's) with `body`
    /// and `headers`; `Err` only when no answer came (counted as an error either way).
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, String> {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let to_bff = url.starts_with(&self.base);
        let mut request = self
            .traffic
            .client
            .request(method, &url)
            .timeout(CALL_TIMEOUT);
        if to_bff && let Some(cookie) = &self.cookie {
            request = request.header(header::COOKIE, cookie);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let phase = self.traffic.phase();
        let started = Instant::now();
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else {
                    "no answer"
                };
                self.traffic.record(phase, kind, true, started.elapsed());
                return Err(format!("{kind}: {e}"));
            }
        };
        let status = response.status();
        if to_bff
            && let Some(set) = response.headers().get(header::SET_COOKIE)
            && let Ok(set) = set.to_str()
            && let Some(pair) = set.split(';').next()
        {
            self.cookie = Some(pair.trim().to_owned());
        }
        let etag = response
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await;
        let elapsed = started.elapsed();
        let error = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
        match bytes {
            Ok(bytes) => {
                self.traffic.record(phase, status.as_str(), error, elapsed);
                Ok(Answer {
                    status,
                    etag,
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                })
            }
            Err(e) => {
                self.traffic.record(phase, "cut body", true, elapsed);
                Err(format!("{status}, body cut: {e}"))
            }
        }
    }

    /// The same visitor on another connection (same session cookie), for concurrent calls.
    pub fn twin(&self) -> Visitor {
        Visitor {
            traffic: self.traffic.clone(),
            base: self.base.clone(),
            cookie: self.cookie.clone(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Result<Answer, String> {
        self.call(Method::GET, path, None, &[]).await
    }
}
