//! The soak's fault picker: a table of recipes — what layer applies a fault, which targets it
//! aims at, the body it sends, how long it lasts — and an injector that draws from it while the
//! chaos phase lasts, a few faults overlapping at most, each bounded and ending by itself before
//! the phase does. Targets are read from the cluster (`GET /chaos` of the control API for the TCP
//! edges, `GET /api/chaos` of the BFF for HTTP faults, `GET /processes` for processes), never
//! hard-coded; TCP faults take the edge kinds in turn (postgres, redis, rabbitmq, openbao, each
//! service behind the BFF), so every kind is hit. A new kind of fault (pause, kill) is one more
//! row in [`RECIPES`] and, for a new layer, one more arm in [`Injector::apply`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};

use super::traffic::{Traffic, Visitor};

/// Who applies a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// The apphost's TCP fault proxies (`POST /chaos/faults` of the control API).
    Tcp,
    /// The BFF's HTTP faults on its upstream calls (`POST /api/chaos/faults`).
    Http,
    /// The apphost's supervisor (`POST /processes/{name}/{action}`).
    Process,
}

/// What a recipe aims at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aim {
    /// An edge kind in turn: all its edges at once (a dependency as everybody sees it) or one.
    Edge,
    /// A service the BFF proxies (every replica).
    Service,
    /// A service process the apphost supervises.
    Process,
}

/// One kind of fault the soak injects.
pub struct Recipe {
    /// Its name in the report (`tcp-blackhole`).
    pub name: &'static str,
    pub layer: Layer,
    pub aim: Aim,
    /// Relative chance of being drawn.
    pub weight: u32,
    /// Shortest and longest duration, seconds (ignored by one-shot process actions).
    pub seconds: (u64, u64),
    /// The fault's body: a TCP `fault`, the BFF's fault fields, or the process action's name.
    pub body: fn(&mut StdRng) -> Value,
}

/// Every recipe. Durations are short (seconds): long enough to open breakers and fill retry
/// queues, short enough that a 60 s soak sees a dozen faults and recovers from each.
pub const RECIPES: &[Recipe] = &[
    Recipe {
        name: "tcp-latency",
        layer: Layer::Tcp,
        aim: Aim::Edge,
        weight: 4,
        seconds: (3, 12),
        body: |rng| {
            let ms = rng.random_range(50..400);
            json!({ "kind": "latency", "ms": ms, "jitter_ms": ms / 4, "direction": "both" })
        },
    },
    Recipe {
        name: "tcp-reset",
        layer: Layer::Tcp,
        aim: Aim::Edge,
        weight: 3,
        seconds: (2, 8),
        body: |rng| json!({ "kind": "reset", "probability": rng.random_range(0.2..0.7) }),
    },
    Recipe {
        name: "tcp-blackhole",
        layer: Layer::Tcp,
        aim: Aim::Edge,
        weight: 3,
        seconds: (2, 7),
        body: |_| json!({ "kind": "blackhole", "direction": "both" }),
    },
    Recipe {
        name: "tcp-refuse",
        layer: Layer::Tcp,
        aim: Aim::Edge,
        weight: 2,
        seconds: (2, 6),
        body: |_| json!({ "kind": "refuse" }),
    },
    Recipe {
        name: "tcp-bandwidth",
        layer: Layer::Tcp,
        aim: Aim::Edge,
        weight: 1,
        seconds: (3, 10),
        body: |rng| json!({ "kind": "bandwidth", "bytes_per_s": rng.random_range(4_096..65_536), "direction": "both" }),
    },
    Recipe {
        name: "tcp-slow-close",
        layer: Layer::Tcp,
        aim: Aim::Edge,
        weight: 1,
        seconds: (3, 10),
        body: |rng| json!({ "kind": "slow_close", "delay_ms": rng.random_range(200..1_500) }),
    },
    Recipe {
        name: "http-error",
        layer: Layer::Http,
        aim: Aim::Service,
        weight: 3,
        seconds: (3, 10),
        body: |rng| {
            let status = [500, 502, 503][rng.random_range(0..3)];
            json!({
                "status": status,
                "probability": rng.random_range(0.2..0.8),
                "trips_breaker": rng.random_bool(0.5),
            })
        },
    },
    Recipe {
        name: "http-latency",
        layer: Layer::Http,
        aim: Aim::Service,
        weight: 2,
        seconds: (3, 10),
        body: |rng| json!({ "latency_ms": rng.random_range(200..1_500) }),
    },
    Recipe {
        name: "process-restart",
        layer: Layer::Process,
        aim: Aim::Process,
        weight: 1,
        seconds: (0, 0),
        body: |_| json!("restart"),
    },
];

/// One fault as the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// Its number in the run, from 1.
    pub n: usize,
    pub recipe: String,
    pub layer: Layer,
    /// `target postgres`, `edge catalog-1→redis`, `service orders`, `process checkout`.
    pub target: String,
    /// What was sent.
    pub body: Value,
    /// Seconds since the soak started.
    pub start_s: f64,
    /// How long it was set to last (0 for a one-shot action).
    pub duration_s: f64,
    /// False when the cluster refused it (a bound, a full fault table): `refused` says why.
    pub injected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// From its end to breakers closed and every instance healthy, in ms; `None` when that was
    /// never seen before the verdict.
    pub recovery_ms: Option<f64>,
    /// Another fault was still active when this one ended, so its recovery includes that one's.
    pub overlapped: bool,
    #[serde(skip)]
    pub ended: Option<Instant>,
}

/// The targets found in the running cluster.
#[derive(Debug, Default)]
pub struct Topology {
    /// Edge names by kind (`postgres`, `redis`, …, `catalog` for the BFF → catalog-N edges).
    pub edges: BTreeMap<String, Vec<Edge>>,
    /// Services the BFF applies HTTP faults to.
    pub services: Vec<String>,
    /// Service processes the apphost may restart.
    pub processes: Vec<String>,
}

/// One TCP edge.
#[derive(Debug, Clone)]
pub struct Edge {
    pub name: String,
    /// The edge's dependency-side target (`postgres`, `catalog-1`).
    pub dependency: String,
    /// Whether the client is the BFF (an edge to a service instance, not to infrastructure).
    pub from_bff: bool,
}

/// Processes a soak does not restart: the BFF is its only window on the cluster, and the
/// sandbox PSP stands in for an outside provider (its sessions live in its memory).
const NOT_RESTARTED: [&str; 2] = ["bff", "psp"];

impl Topology {
    /// Reads the edges from `GET /chaos`, the HTTP targets from the BFF's `GET /api/chaos`,
    /// the service processes from `GET /processes`.
    pub async fn discover(
        client: &reqwest::Client,
        control: &str,
        bff: &str,
    ) -> anyhow::Result<Self> {
        let chaos = super::cluster::chaos_state(client, control).await?;
        let mut edges: BTreeMap<String, Vec<Edge>> = BTreeMap::new();
        for e in chaos["edges"].as_array().into_iter().flatten() {
            let Some(name) = e["name"].as_str() else {
                continue;
            };
            let targets: Vec<&str> = e["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let [from, dependency] = targets[..] else {
                continue;
            };
            let kind = dependency
                .rsplit_once('-')
                .filter(|(_, n)| n.chars().all(|c| c.is_ascii_digit()))
                .map_or(dependency, |(base, _)| base)
                .to_owned();
            edges.entry(kind).or_default().push(Edge {
                name: name.to_owned(),
                dependency: dependency.to_owned(),
                from_bff: from == "bff",
            });
        }
        let bff_chaos: Value = client
            .get(format!("{bff}/api/chaos"))
            .send()
            .await
            .context("the BFF did not answer GET /api/chaos")?
            .json()
            .await
            .context("unreadable GET /api/chaos")?;
        let services = bff_chaos["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect();
        let processes = crate::status::fetch(control)
            .await?
            .into_iter()
            .filter(|p| p.kind == "service" && !NOT_RESTARTED.contains(&p.name.as_str()))
            .map(|p| p.name)
            .collect();
        Ok(Self {
            edges,
            services,
            processes,
        })
    }
}

/// Injects faults from [`RECIPES`] while the chaos phase lasts.
pub struct Injector {
    rng: StdRng,
    topology: Topology,
    /// The next edge kind, round robin.
    kind_turn: usize,
    control: String,
    bff: String,
    client: reqwest::Client,
    /// Control-plane calls (HTTP faults go through the BFF's public API, as a visitor's do):
    /// kept out of the journeys' figures.
    control_traffic: Traffic,
    started: Instant,
    pub log: Vec<FaultRecord>,
}

impl Injector {
    pub fn new(
        seed: u64,
        topology: Topology,
        urls: &super::cluster::ClusterUrls,
        client: reqwest::Client,
        started: Instant,
    ) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            topology,
            kind_turn: 0,
            control: urls.control.clone(),
            bff: urls.bff.clone(),
            control_traffic: Traffic::new(client.clone()),
            client,
            started,
            log: Vec::new(),
        }
    }

    /// Injects faults until `until`: at most `overlap` active at once, a new one every 1–4 s
    /// when there is room, each ending by `until`.
    pub async fn run(&mut self, until: Instant, overlap: usize) {
        loop {
            let now = Instant::now();
            if now + Duration::from_secs(2) >= until {
                return;
            }
            let active = self
                .log
                .iter()
                .filter(|f| f.injected && f.ended.is_some_and(|e| e > now))
                .count();
            if active < overlap.max(1) {
                let left = until - now;
                self.inject_one(left).await;
            }
            let gap = Duration::from_millis(self.rng.random_range(1_000..4_000));
            tokio::time::sleep_until((Instant::now() + gap).min(until).into()).await;
        }
    }

    /// Draws a recipe and a target, applies it, and logs it.
    async fn inject_one(&mut self, left: Duration) {
        let usable: Vec<&'static Recipe> = RECIPES
            .iter()
            .filter(|r| match r.aim {
                Aim::Edge => !self.topology.edges.is_empty(),
                Aim::Service => !self.topology.services.is_empty(),
                Aim::Process => !self.topology.processes.is_empty(),
            })
            .collect();
        let total: u32 = usable.iter().map(|r| r.weight).sum();
        if total == 0 {
            return;
        }
        let mut pick = self.rng.random_range(0..total);
        let Some(recipe) = usable.iter().copied().find(|r| {
            if pick < r.weight {
                true
            } else {
                pick -= r.weight;
                false
            }
        }) else {
            return;
        };
        let (lo, hi) = recipe.seconds;
        // Ends by itself before the chaos phase does.
        let seconds = self
            .rng
            .random_range(lo..=hi)
            .min(left.as_secs().saturating_sub(1))
            .max(u64::from(lo > 0));
        let body = (recipe.body)(&mut self.rng);
        let start = Instant::now();
        let (target, result) = self.apply(recipe, &body, seconds).await;
        let (injected, refused) = match result {
            Ok(()) => (true, None),
            Err(e) => (false, Some(e)),
        };
        self.log.push(FaultRecord {
            n: self.log.len() + 1,
            recipe: recipe.name.to_owned(),
            layer: recipe.layer,
            target,
            body,
            start_s: (start - self.started).as_secs_f64(),
            duration_s: seconds as f64,
            injected,
            refused,
            recovery_ms: None,
            overlapped: false,
            ended: Some(start + Duration::from_secs(seconds)),
        });
    }

    /// Applies `recipe` with `body` for `seconds` to a target it picks; the target's name and
    /// whether the cluster took it.
    async fn apply(
        &mut self,
        recipe: &Recipe,
        body: &Value,
        seconds: u64,
    ) -> (String, Result<(), String>) {
        match recipe.layer {
            Layer::Tcp => {
                let (label, scope) = self.pick_edge();
                let request = json!({ "scope": scope, "fault": body, "ttl_s": seconds, "requester": "admin" });
                let sent = self
                    .client
                    .post(format!("{}/chaos/faults", self.control))
                    .json(&request)
                    .send()
                    .await;
                (label, answered(sent).await)
            }
            Layer::Http => {
                let i = self.rng.random_range(0..self.topology.services.len());
                let service = self.topology.services[i].clone();
                let mut request = body.clone();
                request["target"] = json!(service);
                request["duration_s"] = json!(seconds.max(1));
                // A visitor of its own: the chaos bucket is per session.
                let mut visitor = Visitor::new(&self.control_traffic, &self.bff);
                let result = match visitor.get("/api/chaos").await {
                    Err(e) => Err(e),
                    Ok(_) => match visitor
                        .call(
                            reqwest::Method::POST,
                            "/api/chaos/faults",
                            Some(&request),
                            &[],
                        )
                        .await
                    {
                        Ok(a) if a.status.is_success() => Ok(()),
                        Ok(a) => Err(format!("{}: {}", a.status, a.body["detail"])),
                        Err(e) => Err(e),
                    },
                };
                (format!("service {service}"), result)
            }
            Layer::Process => {
                let i = self.rng.random_range(0..self.topology.processes.len());
                let name = self.topology.processes[i].clone();
                let action = body.as_str().unwrap_or("restart");
                let sent = self
                    .client
                    .post(format!("{}/processes/{name}/{action}", self.control))
                    .send()
                    .await;
                (format!("process {name}"), answered(sent).await)
            }
        }
    }

    /// The next edge kind in turn, then all its edges (when they share a dependency that is
    /// not a BFF upstream) or one of them.
    fn pick_edge(&mut self) -> (String, Value) {
        let kinds: Vec<&String> = self.topology.edges.keys().collect();
        let kind = kinds[self.kind_turn % kinds.len()].clone();
        self.kind_turn += 1;
        let edges = &self.topology.edges[&kind];
        let shared = edges
            .iter()
            .all(|e| !e.from_bff && e.dependency == edges[0].dependency);
        if shared && edges.len() > 1 && self.rng.random_bool(0.5) {
            let target = edges[0].dependency.clone();
            return (
                format!("target {target}"),
                json!({ "type": "target", "name": target }),
            );
        }
        let edge = edges[self.rng.random_range(0..edges.len())].name.clone();
        (
            format!("edge {edge}"),
            json!({ "type": "edge", "name": edge }),
        )
    }
}

/// `Ok` for a 2xx, else the status and the problem's detail.
async fn answered(sent: reqwest::Result<reqwest::Response>) -> Result<(), String> {
    let response = sent.map_err(|e| format!("no answer: {e}"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    Err(format!(
        "{status}: {}",
        body["detail"].as_str().unwrap_or("")
    ))
}

/// Fills in each fault's recovery time from the timeline, and whether another fault was still
/// active when it ended. A one-shot action (a restart) counts from when it was asked.
pub fn judge_recovery(log: &mut [FaultRecord], timeline: &super::monitor::Timeline) {
    let samples = timeline.samples();
    let ends: Vec<(usize, Instant, Instant)> = log
        .iter()
        .filter(|f| f.injected)
        .filter_map(|f| {
            let end = f.ended?;
            let start = end - Duration::from_secs_f64(f.duration_s);
            Some((f.n, start, end))
        })
        .collect();
    for fault in log.iter_mut().filter(|f| f.injected) {
        let Some(end) = fault.ended else { continue };
        fault.overlapped = ends
            .iter()
            .any(|(n, s, e)| *n != fault.n && *s <= end && *e > end);
        fault.recovery_ms =
            super::monitor::recovery_after(&samples, end).map(|d| d.as_secs_f64() * 1000.0);
    }
}
