//! The soak's report, as JSON (everything) and Markdown (the same, for a person): the verdict
//! and why, the run's settings, traffic by phase, journeys and orders by final state, every fault
//! with its recovery time, and every invariant with its numbers.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::faults::FaultRecord;
use super::journeys::Tally;

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub settings: Settings,
    pub verdict: Verdict,
    pub phases: Vec<PhaseStats>,
    pub journeys: Tally,
    pub faults: Vec<FaultRecord>,
    pub recovery: RecoverySummary,
    pub settle: Settle,
    /// `GET /api/chaos/invariants` after the settle phase, as the BFF answered it.
    pub invariants: Value,
}

/// How the run was set up.
#[derive(Debug, Serialize)]
pub struct Settings {
    /// Replays the same draws of journeys and faults (`--seed`).
    pub seed: u64,
    /// Unix seconds at the start.
    pub started_at_unix_s: u64,
    pub warm_up_s: f64,
    pub chaos_s: f64,
    /// Journeys started per second during warm-up and chaos.
    pub rate: f64,
    pub max_overlap: usize,
    pub settle_timeout_s: f64,
    pub bff: String,
    /// The command line, for the record.
    pub command: String,
}

/// Passed, or why not.
#[derive(Debug, Serialize)]
pub struct Verdict {
    pub passed: bool,
    pub reasons: Vec<String>,
}

/// The traffic of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseStats {
    pub phase: String,
    pub seconds: f64,
    pub requests: u64,
    /// No answer, a 5xx, or a 429.
    pub errors: u64,
    pub error_rate: f64,
    /// Answers by status (or `no answer`, `timeout`).
    pub by_status: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Recovery times: fault end → every breaker closed and every instance healthy.
#[derive(Debug, Default, Serialize)]
pub struct RecoverySummary {
    /// Faults whose recovery was seen.
    pub measured: usize,
    pub median_ms: f64,
    pub max_ms: f64,
    /// The same over the faults that ended alone (no other fault active at their end).
    pub alone_measured: usize,
    pub alone_median_ms: f64,
    pub alone_max_ms: f64,
    /// Injected faults whose recovery was never seen.
    pub unrecovered: usize,
}

impl RecoverySummary {
    pub fn of(faults: &[FaultRecord]) -> Self {
        let mut all: Vec<f64> = faults.iter().filter_map(|f| f.recovery_ms).collect();
        let mut alone: Vec<f64> = faults
            .iter()
            .filter(|f| !f.overlapped)
            .filter_map(|f| f.recovery_ms)
            .collect();
        let q = |v: &mut Vec<f64>, q| {
            let x = crate::bench::quantile(v, q);
            if x.is_nan() { 0.0 } else { x }
        };
        Self {
            measured: all.len(),
            median_ms: q(&mut all, 0.5),
            max_ms: q(&mut all, 1.0),
            alone_measured: alone.len(),
            alone_median_ms: q(&mut alone, 0.5),
            alone_max_ms: q(&mut alone, 1.0),
            unrecovered: faults
                .iter()
                .filter(|f| f.injected && f.recovery_ms.is_none())
                .count(),
        }
    }
}

/// The settle phase.
#[derive(Debug, Serialize)]
pub struct Settle {
    pub seconds: f64,
    pub timed_out: bool,
    /// What was still not settled at the end (empty when it settled).
    pub waiting_on: Vec<String>,
}

impl Report {
    /// The report for a person.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let s = &self.settings;
        let _ = writeln!(md, "# Soak report\n");
        let _ = writeln!(
            md,
            "**{}** — {}\n",
            if self.verdict.passed {
                "PASSED"
            } else {
                "FAILED"
            },
            if self.verdict.reasons.is_empty() {
                "every invariant held, the cluster settled".to_owned()
            } else {
                self.verdict.reasons.join("; ")
            }
        );
        let _ = writeln!(md, "`{}`\n", s.command);
        let _ = writeln!(
            md,
            "Seed {}, {:.0} s warm-up + {:.0} s chaos at {} journeys/s, up to {} faults at once, \
             settle bounded at {:.0} s; BFF {}; started at Unix {}.\n",
            s.seed,
            s.warm_up_s,
            s.chaos_s,
            s.rate,
            s.max_overlap,
            s.settle_timeout_s,
            s.bff,
            s.started_at_unix_s
        );

        let _ = writeln!(md, "## Traffic by phase\n");
        let _ = writeln!(
            md,
            "Errors: no answer, 5xx or 429 — expected during chaos, counted, not failures.\n"
        );
        let _ = writeln!(
            md,
            "| phase | s | requests | errors | error rate | p50 ms | p99 ms | max ms | answers |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
        for p in &self.phases {
            let answers: Vec<String> = p
                .by_status
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {:.0} | {} | {} | {:.2} % | {:.1} | {:.1} | {:.1} | {} |",
                p.phase,
                p.seconds,
                p.requests,
                p.errors,
                p.error_rate * 100.0,
                p.p50_ms,
                p.p99_ms,
                p.max_ms,
                answers.join(", ")
            );
        }

        let j = &self.journeys;
        let _ = writeln!(md, "\n## Journeys and orders\n");
        let _ = writeln!(md, "| journey | runs | as planned | with trouble |");
        let _ = writeln!(md, "|---|---|---|---|");
        for (kind, k) in &j.journeys {
            let _ = writeln!(
                md,
                "| {kind} | {} | {} | {} |",
                k.runs, k.clean, k.with_trouble
            );
        }
        let finals: Vec<String> = j.orders.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            md,
            "\nOrders by final state (as their buyers saw them): {}; placements with no order id \
             after every retry: {}.\n",
            if finals.is_empty() {
                "none".to_owned()
            } else {
                finals.join(", ")
            },
            j.unplaced
        );
        if !j.violations.is_empty() {
            let _ = writeln!(md, "Broken promises seen by buyers:\n");
            for v in &j.violations {
                let _ = writeln!(md, "- {v}");
            }
            let _ = writeln!(md);
        }
        if !j.troubles.is_empty() {
            let mut troubles: Vec<(&String, &u64)> = j.troubles.iter().collect();
            troubles.sort_by(|a, b| b.1.cmp(a.1));
            let _ = writeln!(md, "Most frequent trouble (journeys that hit it):\n");
            for (t, n) in troubles.into_iter().take(8) {
                let _ = writeln!(md, "- {n} × {t}");
            }
            let _ = writeln!(md);
        }

        let r = &self.recovery;
        let _ = writeln!(md, "## Faults\n");
        let _ = writeln!(
            md,
            "Recovery: fault end → every BFF breaker closed and every instance healthy \
             (`/api/breakers`, `/api/health`). {} measured: median {:.0} ms, max {:.0} ms; \
             {} that ended alone: median {:.0} ms, max {:.0} ms; {} never seen recovered.\n",
            r.measured,
            r.median_ms,
            r.max_ms,
            r.alone_measured,
            r.alone_median_ms,
            r.alone_max_ms,
            r.unrecovered
        );
        let _ = writeln!(
            md,
            "| # | recipe | target | start s | duration s | fault | recovery ms |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for f in &self.faults {
            let recovery = match (f.injected, f.recovery_ms) {
                (false, _) => format!(
                    "refused: {}",
                    f.refused.as_deref().unwrap_or("").replace('|', "/")
                ),
                (true, Some(ms)) => {
                    format!("{ms:.0}{}", if f.overlapped { " (overlapped)" } else { "" })
                }
                (true, None) => "not seen".into(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.1} | {:.0} | `{}` | {} |",
                f.n, f.recipe, f.target, f.start_s, f.duration_s, f.body, recovery
            );
        }

        let st = &self.settle;
        let _ = writeln!(md, "\n## Settle\n");
        let _ = writeln!(
            md,
            "{} after {:.1} s{}\n",
            if st.timed_out { "Timed out" } else { "Settled" },
            st.seconds,
            if st.waiting_on.is_empty() {
                String::new()
            } else {
                format!("; still waiting on: {}", st.waiting_on.join("; "))
            }
        );

        let _ = writeln!(md, "## Invariants\n");
        let _ = writeln!(
            md,
            "Overall: **{}**\n",
            self.invariants["status"].as_str().unwrap_or("no answer")
        );
        let _ = writeln!(md, "| invariant | status | numbers | offending ids |");
        let _ = writeln!(md, "|---|---|---|---|");
        for i in self.invariants["invariants"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let numbers = i["numbers"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let ids: Vec<&str> = i["offending_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut status = i["status"].as_str().unwrap_or("?").to_owned();
            if let Some(reason) = i["reason"].as_str() {
                status = format!("{status} ({reason})");
            }
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                i["name"].as_str().unwrap_or("?"),
                status,
                numbers.replace('|', "/"),
                ids.join(", ")
            );
        }
        if let Some(counts) = self.invariants["counts"].as_object() {
            let _ = writeln!(
                md,
                "\nCounts by service (the whole database, not only this run):\n"
            );
            for (service, c) in counts {
                let _ = writeln!(md, "- {service}: {c}");
            }
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::json;

    use super::*;
    use crate::soak::faults::Layer;

    fn fault(n: usize, recovery_ms: Option<f64>, overlapped: bool) -> FaultRecord {
        FaultRecord {
            n,
            recipe: "tcp-blackhole".into(),
            layer: Layer::Tcp,
            target: "edge bff→catalog-1".into(),
            body: json!({ "kind": "blackhole" }),
            start_s: 1.0,
            duration_s: 3.0,
            injected: true,
            refused: None,
            recovery_ms,
            overlapped,
            ended: Some(Instant::now()),
        }
    }

    #[test]
    fn recovery_is_summarised_over_all_faults_and_over_those_that_ended_alone() {
        let faults = [
            fault(1, Some(100.0), false),
            fault(2, Some(5_000.0), true),
            fault(3, Some(300.0), false),
            fault(4, None, false),
        ];

        let r = RecoverySummary::of(&faults);

        assert_eq!((r.measured, r.median_ms, r.max_ms), (3, 300.0, 5_000.0));
        assert_eq!(
            (r.alone_measured, r.alone_median_ms, r.alone_max_ms),
            (2, 300.0, 300.0)
        );
        assert_eq!(r.unrecovered, 1);
    }

    #[test]
    fn the_markdown_names_the_verdict_each_fault_and_each_invariant_with_its_numbers() {
        let report = Report {
            settings: Settings {
                seed: 7,
                started_at_unix_s: 0,
                warm_up_s: 10.0,
                chaos_s: 50.0,
                rate: 5.0,
                max_overlap: 2,
                settle_timeout_s: 120.0,
                bff: "http://127.0.0.1:1".into(),
                command: "lab soak --duration 60s".into(),
            },
            verdict: Verdict {
                passed: false,
                reasons: vec!["catalog.stock_conserved violated".into()],
            },
            phases: Vec::new(),
            journeys: Tally::default(),
            faults: vec![fault(1, Some(1_234.0), false)],
            recovery: RecoverySummary::default(),
            settle: Settle {
                seconds: 3.0,
                timed_out: false,
                waiting_on: Vec::new(),
            },
            invariants: json!({ "status": "violated", "invariants": [{
                "name": "catalog.stock_conserved", "status": "violated",
                "numbers": { "initial": 10, "accounted": 9 }, "offending_ids": ["p-1"] }] }),
        };

        let md = report.markdown();

        assert!(
            md.contains("**FAILED** — catalog.stock_conserved violated"),
            "{md}"
        );
        assert!(
            md.contains("| 1 | tcp-blackhole | edge bff→catalog-1 |"),
            "{md}"
        );
        assert!(md.contains("| 1234 |"), "{md}");
        assert!(
            md.contains("| catalog.stock_conserved | violated | accounted 9, initial 10 | p-1 |"),
            "{md}"
        );
    }
}
