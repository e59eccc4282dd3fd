//! Is the cluster whole again? A sampler polls the BFF's `GET /api/breakers` and `GET
//! /api/health` and keeps a timeline of samples, each `clean` when every breaker is closed and
//! the health report is `healthy` (every instance ready, every dependency up). A fault's recovery
//! time is read off the timeline afterwards: from the instant the fault ended to the first clean
//! sample taken after it. The soak and `lab bench recovery` share it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// One look at the cluster.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the look started (a slow answer counts from its question, so a sample never claims
    /// a state it may have seen before the instant it is compared with).
    pub at: Instant,
    /// Every breaker closed and the health report `healthy`.
    pub clean: bool,
    /// What was not clean, for the report: `breaker catalog@… open`, `orders-1 not_ready`.
    pub why: Vec<String>,
}

/// What one look found; instances of the services in `absent` (not run by this cluster, such as
/// identity without OpenBao) do not count.
pub async fn look(client: &reqwest::Client, bff: &str, absent: &[String]) -> Sample {
    let at = Instant::now();
    let (breakers_url, health_url) = (format!("{bff}/api/breakers"), format!("{bff}/api/health"));
    let (breakers, health) = tokio::join!(
        get_json(client, &breakers_url),
        get_json(client, &health_url),
    );
    let mut why = Vec::new();
    match breakers {
        Ok(b) => why.extend(open_breakers(&b)),
        Err(e) => why.push(format!("breakers: {e}")),
    }
    match health {
        Ok(h) => why.extend(unhealthy(&h, absent)),
        Err(e) => why.push(format!("health: {e}")),
    }
    Sample {
        at,
        clean: why.is_empty(),
        why,
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    response.json().await.map_err(|e| e.to_string())
}

/// Every breaker not `closed` in a `GET /api/breakers` body.
pub fn open_breakers(body: &Value) -> Vec<String> {
    body["breakers"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|b| b["state"] != "closed")
                .map(|b| {
                    format!(
                        "breaker {}@{} {}",
                        b["service"].as_str().unwrap_or("?"),
                        b["endpoint"].as_str().unwrap_or("?"),
                        b["state"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_else(|| vec!["breakers: no list in the answer".into()])
}

/// Every instance not `ready` and dependency not `up` in a `GET /api/health` body, except the
/// instances of `absent` services.
pub fn unhealthy(body: &Value, absent: &[String]) -> Vec<String> {
    let mut why = Vec::new();
    for s in body["services"].as_array().into_iter().flatten() {
        let service = s["service"].as_str().unwrap_or("?");
        if s["status"] != "ready" && !absent.iter().any(|a| a == service) {
            why.push(format!(
                "{} {} {}",
                s["service"].as_str().unwrap_or("?"),
                s["url"].as_str().unwrap_or("?"),
                s["status"].as_str().unwrap_or("?")
            ));
        }
    }
    for d in body["infrastructure"].as_array().into_iter().flatten() {
        if d["status"] != "up" {
            why.push(format!("{} down", d["name"].as_str().unwrap_or("?")));
        }
    }
    why
}

/// Services the BFF proxies that the cluster runs no process of (identity under `--no-vault`):
/// their instances are down by design, not by a fault.
pub async fn absent_services(
    client: &reqwest::Client,
    urls: &super::cluster::ClusterUrls,
) -> anyhow::Result<Vec<String>> {
    let processes = crate::status::fetch(&urls.control).await?;
    let running: Vec<&str> = processes
        .iter()
        .map(|p| {
            p.name
                .rsplit_once('-')
                .filter(|(_, n)| n.chars().all(|c| c.is_ascii_digit()))
                .map_or(p.name.as_str(), |(base, _)| base)
        })
        .collect();
    let health = get_json(client, &format!("{}/api/health", urls.bff))
        .await
        .map_err(|e| anyhow::anyhow!("GET /api/health: {e}"))?;
    let mut absent: Vec<String> = health["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["service"].as_str())
        .filter(|s| !running.contains(s))
        .map(str::to_owned)
        .collect();
    absent.dedup();
    Ok(absent)
}

/// The samples so far, shared between the sampler and whoever reads them.
#[derive(Clone, Default)]
pub struct Timeline(Arc<Mutex<Vec<Sample>>>);

impl Timeline {
    fn push(&self, sample: Sample) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(sample);
    }

    /// A copy of every sample, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Time from `ended` to the first clean sample started at or after it; `None` when there is
    /// none yet.
    pub fn recovery_after(&self, ended: Instant) -> Option<Duration> {
        recovery_after(&self.samples(), ended)
    }

    /// Samples every `every` until `stop`.
    pub async fn run(
        self,
        client: reqwest::Client,
        bff: String,
        absent: Vec<String>,
        every: Duration,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let sample = tokio::select! {
                () = stop.cancelled() => return,
                s = look(&client, &bff, &absent) => s,
            };
            self.push(sample);
        }
    }
}

/// [`Timeline::recovery_after`] over `samples`.
pub fn recovery_after(samples: &[Sample], ended: Instant) -> Option<Duration> {
    samples
        .iter()
        .find(|s| s.at >= ended && s.clean)
        .map(|s| s.at - ended)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn recovery_counts_from_the_end_to_the_first_clean_sample_started_after_it() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let sample = |ms, clean| Sample {
            at: at(ms),
            clean,
            why: Vec::new(),
        };
        let samples = [
            sample(0, true),
            sample(100, false),
            sample(200, true),
            sample(300, false),
            sample(400, false),
            sample(500, true),
        ];

        assert_eq!(
            recovery_after(&samples, at(250)),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            recovery_after(&samples, at(150)),
            Some(Duration::ZERO + Duration::from_millis(50))
        );
        assert_eq!(recovery_after(&samples, at(600)), None);
    }

    #[test]
    fn an_open_breaker_or_an_instance_not_ready_is_named() {
        let breakers = json!({ "breakers": [
            { "service": "catalog", "endpoint": "http://a", "state": "closed" },
            { "service": "catalog", "endpoint": "http://b", "state": "half_open" },
        ]});
        let health = json!({
            "status": "degraded",
            "services": [
                { "service": "orders", "url": "http://o", "status": "ready" },
                { "service": "catalog", "url": "http://b", "status": "down" },
            ],
            "infrastructure": [{ "name": "redis", "status": "up" }],
        });

        assert_eq!(
            open_breakers(&breakers),
            ["breaker catalog@http://b half_open"]
        );
        assert_eq!(unhealthy(&health, &[]), ["catalog http://b down"]);
        assert!(unhealthy(&health, &["catalog".to_owned()]).is_empty());
    }
}
