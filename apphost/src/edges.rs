//! A fault proxy on every edge `lab up` wires: each service → PostgreSQL, Redis, RabbitMQ and
//! OpenBao, and the BFF → each service instance. The processes' URLs are rewritten to point at
//! their proxies (the proxies run inside the apphost, so they outlive any service restart), and
//! every proxy is registered with one [`Chaos`] registry under its two targets — the process and
//! the dependency — so a fault can hit one edge (`catalog-1→postgres`) or a whole target
//! (`postgres` for everybody, `catalog-1` for everything it talks to). The control API exposes
//! the registry (`GET /chaos`, `POST /chaos/faults`, `DELETE /chaos/faults/{id}`).

use std::net::SocketAddr;

use anyhow::Context;
use lab_faultproxy::{Chaos, Proxy, ProxyConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::plan::ProcSpec;

/// The proxies and their registry; the proxies stop with the shutdown token they were started
/// with.
pub struct Edges {
    pub chaos: Chaos,
    /// Kept alive for as long as the cluster runs.
    _proxies: Vec<Proxy>,
}

/// Which dependency an environment variable points at, by its name's ending.
fn dependency_of(key: &str) -> Option<&'static str> {
    [
        ("__DATABASE__URL", "postgres"),
        ("__REDIS__URL", "redis"),
        ("__AMQP__URL", "rabbitmq"),
        ("__DATABASE__VAULT__ADDR", "openbao"),
        ("__VAULT__ADDR", "openbao"),
    ]
    .into_iter()
    .find(|(suffix, _)| key.ends_with(suffix))
    .map(|(_, dependency)| dependency)
}

/// `url` with its host and port replaced by `addr`; `None` when it has no host and port.
fn through(url: &str, addr: SocketAddr) -> Option<String> {
    let mut parsed = reqwest::Url::parse(url).ok()?;
    parsed.port_or_known_default()?;
    parsed.set_host(Some(&addr.ip().to_string())).ok()?;
    parsed.set_port(Some(addr.port())).ok()?;
    let mut rewritten = parsed.to_string();
    // `Url` adds a trailing slash to a bare origin; the services' settings do not want one.
    if !url.ends_with('/') && rewritten.ends_with('/') && parsed.path() == "/" {
        rewritten.pop();
    }
    Some(rewritten)
}

/// Where `url` connects to.
async fn upstream_of(url: &str) -> Option<SocketAddr> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?.trim_matches(['[', ']']).to_owned();
    let port = parsed.port_or_known_default()?;
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .ok()?
        .next()
}

/// Ports the proxies listen on: below the kernel's ephemeral range (32768–60999 here), from which
/// `ports::free_port` picks the services' ports — a proxy bound to port 0 could otherwise take a
/// port just handed to a service that has not bound it yet.
const PROXY_PORTS: std::ops::Range<u16> = 20_000..30_000;

/// A proxy on a random free port of [`PROXY_PORTS`].
async fn start_proxy(
    name: &str,
    upstream: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<Proxy, lab_faultproxy::ProxyError> {
    let mut last = None;
    for _ in 0..64 {
        let port = rand::random_range(PROXY_PORTS);
        match Proxy::start(
            ProxyConfig {
                name: name.to_owned(),
                listen: crate::ports::loopback(port),
                upstream,
            },
            shutdown,
        )
        .await
        {
            Ok(proxy) => return Ok(proxy),
            // Taken: try another.
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(e),
        None => {
            Proxy::start(
                ProxyConfig {
                    name: name.to_owned(),
                    listen: crate::ports::loopback(0),
                    upstream,
                },
                shutdown,
            )
            .await
        }
    }
}

/// Starts a proxy for every edge of `specs` and points their URLs at them.
pub async fn put_on_edges(
    specs: &mut [ProcSpec],
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<Edges> {
    let chaos = Chaos::start(tracker, shutdown.clone());
    let mut proxies = Vec::new();
    // The BFF's upstream URLs name service instances: find each instance by its URL.
    let instances: Vec<(String, String)> =
        specs.iter().map(|s| (s.url(), s.name.clone())).collect();
    for spec in specs.iter_mut() {
        for (key, value) in spec.env.iter_mut() {
            let is_upstreams = key.contains("__UPSTREAMS__");
            let dependency = dependency_of(key);
            if dependency.is_none() && !is_upstreams {
                continue;
            }
            let mut rewritten = Vec::new();
            for url in value.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                let target = match dependency {
                    Some(d) => d.to_owned(),
                    None => instances
                        .iter()
                        .find(|(u, _)| u.trim_end_matches('/') == url.trim_end_matches('/'))
                        .map_or_else(|| url.to_owned(), |(_, name)| name.clone()),
                };
                let name = format!("{}→{target}", spec.name);
                let Some(upstream) = upstream_of(url).await else {
                    rewritten.push(url.to_owned());
                    continue;
                };
                let address = match proxies.iter().find(|p: &&Proxy| p.name() == name) {
                    // One proxy per edge, shared by the variables naming the same dependency.
                    Some(existing) => existing.local_addr(),
                    None => {
                        let proxy = start_proxy(&name, upstream, shutdown)
                            .await
                            .with_context(|| format!("starting the fault proxy {name}"))?;
                        chaos
                            .add_edge(&proxy, [spec.name.clone(), target.clone()])
                            .with_context(|| format!("registering {name}"))?;
                        let address = proxy.local_addr();
                        proxies.push(proxy);
                        address
                    }
                };
                rewritten.push(through(url, address).unwrap_or_else(|| url.to_owned()));
            }
            *value = rewritten.join(",");
        }
    }
    Ok(Edges {
        chaos,
        _proxies: proxies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_keeps_its_credentials_path_and_query_and_only_changes_address() {
        let addr: SocketAddr = "127.0.0.1:40001".parse().unwrap();

        let pg = through(
            "postgres://lab_catalog:secret@127.0.0.1:5432/lab?sslmode=disable",
            addr,
        );
        let amqp = through("amqp://guest:guest@127.0.0.1:5672/%2f", addr);
        let http = through("http://127.0.0.1:7102", addr);

        assert_eq!(
            pg.as_deref(),
            Some("postgres://lab_catalog:secret@127.0.0.1:40001/lab?sslmode=disable")
        );
        assert_eq!(
            amqp.as_deref(),
            Some("amqp://guest:guest@127.0.0.1:40001/%2f")
        );
        assert_eq!(http.as_deref(), Some("http://127.0.0.1:40001"));
    }

    #[test]
    fn each_variable_names_its_dependency() {
        assert_eq!(
            dependency_of("LAB_CATALOG__DATABASE__URL"),
            Some("postgres")
        );
        assert_eq!(
            dependency_of("LAB_ORDERS__DATABASE__VAULT__ADDR"),
            Some("openbao")
        );
        assert_eq!(dependency_of("LAB_IDENTITY__VAULT__ADDR"), Some("openbao"));
        assert_eq!(dependency_of("LAB_BFF__REDIS__URL"), Some("redis"));
        assert_eq!(dependency_of("LAB_CATALOG__AMQP__URL"), Some("rabbitmq"));
        assert_eq!(dependency_of("LAB_CATALOG__HTTP__LISTEN"), None);
    }
}
