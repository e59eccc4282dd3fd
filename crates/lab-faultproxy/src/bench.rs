//! What the proxy costs with no fault in force: bulk throughput and small round trips through a
//! [`Proxy`] against the same traffic sent direct, and through a bare relay
//! (`tokio::io::copy_bidirectional`, no fault machinery), all on loopback. Direct → bare is the
//! price of any user-space hop; bare → proxied is what the fault checks add.
//!
//! [`run`] is what `lab bench faultproxy` calls; `examples/bench.rs` runs it standalone. Both
//! servers live in this process, so on a busy machine the ratios move with the load; compare
//! runs made under the same conditions.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::proxy::{Proxy, ProxyConfig};

/// How much traffic to send.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Bytes pushed one way in the bulk run.
    pub bulk_bytes: u64,
    /// Request/response round trips in the latency run.
    pub round_trips: u32,
    /// Bytes per request and per response.
    pub message_bytes: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            bulk_bytes: 1 << 30,
            round_trips: 20_000,
            // About a small SQL query or a Redis GET with its reply.
            message_bytes: 64,
        }
    }
}

/// One path's results.
#[derive(Debug, Clone, Copy)]
pub struct PathResult {
    /// Bulk throughput, MiB/s.
    pub mib_per_s: f64,
    /// Mean round trip, µs.
    pub round_trip_us: f64,
}

/// Direct, through a bare relay, and through the fault proxy.
#[derive(Debug, Clone, Copy)]
pub struct BenchReport {
    /// Client straight to server.
    pub direct: PathResult,
    /// Through `copy_bidirectional`, the least any proxy costs.
    pub bare: PathResult,
    /// Through a fault-free [`Proxy`].
    pub proxied: PathResult,
}

impl BenchReport {
    /// Proxied throughput as a share of direct (1.0: free).
    pub fn throughput_ratio(&self) -> f64 {
        self.proxied.mib_per_s / self.direct.mib_per_s
    }

    /// Proxied round trip as a multiple of direct (1.0: free).
    pub fn round_trip_ratio(&self) -> f64 {
        self.proxied.round_trip_us / self.direct.round_trip_us
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bulk MiB/s     direct {:>8.1}   bare relay {:>8.1}   fault proxy {:>8.1}   proxy/direct {:.2}   proxy/bare {:.2}",
            self.direct.mib_per_s,
            self.bare.mib_per_s,
            self.proxied.mib_per_s,
            self.throughput_ratio(),
            self.proxied.mib_per_s / self.bare.mib_per_s,
        )?;
        write!(
            f,
            "round trip µs  direct {:>8.1}   bare relay {:>8.1}   fault proxy {:>8.1}   proxy/direct {:.2}   proxy/bare {:.2}",
            self.direct.round_trip_us,
            self.bare.round_trip_us,
            self.proxied.round_trip_us,
            self.round_trip_ratio(),
            self.proxied.round_trip_us / self.bare.round_trip_us,
        )
    }
}

/// Runs both workloads direct and through a fault-free proxy.
pub async fn run(options: &BenchOptions) -> io::Result<BenchReport> {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let sink = spawn_server(sink, &shutdown).await?;
    let echo = spawn_server(echo, &shutdown).await?;
    let sink_proxy = start_proxy("bench→sink", sink, &shutdown).await?;
    let echo_proxy = start_proxy("bench→echo", echo, &shutdown).await?;
    let sink_bare = spawn_bare_relay(sink, &shutdown).await?;
    let echo_bare = spawn_bare_relay(echo, &shutdown).await?;

    let direct = PathResult {
        mib_per_s: bulk(sink, options.bulk_bytes).await?,
        round_trip_us: round_trips(echo, options).await?,
    };
    let bare = PathResult {
        mib_per_s: bulk(sink_bare, options.bulk_bytes).await?,
        round_trip_us: round_trips(echo_bare, options).await?,
    };
    let proxied = PathResult {
        mib_per_s: bulk(sink_proxy.local_addr(), options.bulk_bytes).await?,
        round_trip_us: round_trips(echo_proxy.local_addr(), options).await?,
    };
    Ok(BenchReport {
        direct,
        bare,
        proxied,
    })
}

async fn start_proxy(
    name: &str,
    upstream: SocketAddr,
    shutdown: &CancellationToken,
) -> io::Result<Proxy> {
    let config = ProxyConfig {
        name: name.to_owned(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        upstream,
    };
    Proxy::start(config, shutdown)
        .await
        .map_err(io::Error::other)
}

/// Pushes `total` bytes and waits for the server's one-byte acknowledgement of the EOF.
async fn bulk(addr: SocketAddr, total: u64) -> io::Result<f64> {
    let mut stream = TcpStream::connect(addr).await?;
    let chunk = vec![0x5au8; 64 * 1024];
    let started = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        stream.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    stream.shutdown().await?;
    let mut ack = [0u8; 1];
    stream.read_exact(&mut ack).await?;
    let secs = started.elapsed().as_secs_f64().max(f64::EPSILON);
    Ok(total as f64 / (1024.0 * 1024.0) / secs)
}

/// Sends a message and reads its echo, `round_trips` times; the mean in µs.
async fn round_trips(addr: SocketAddr, options: &BenchOptions) -> io::Result<f64> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let message = vec![0x42u8; options.message_bytes];
    let mut reply = vec![0u8; options.message_bytes];
    let started = Instant::now();
    for _ in 0..options.round_trips {
        stream.write_all(&message).await?;
        stream.read_exact(&mut reply).await?;
    }
    let elapsed = started.elapsed();
    Ok(micros(elapsed) / f64::from(options.round_trips.max(1)))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn spawn_server<F, Fut>(handler: F, shutdown: &CancellationToken) -> io::Result<SocketAddr>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let shutdown = shutdown.clone();
    // Lives as long as `run`'s drop guard; nothing to track beyond that.
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            if let Ok((stream, _)) = accepted {
                let _ = stream.set_nodelay(true);
                let served = handler(stream);
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        _ = served => {}
                    }
                });
            }
        }
    });
    Ok(addr)
}

/// The least a proxy can be: accept, connect, `copy_bidirectional`.
async fn spawn_bare_relay(
    upstream: SocketAddr,
    shutdown: &CancellationToken,
) -> io::Result<SocketAddr> {
    spawn_server(
        move |mut client| async move {
            let mut server = TcpStream::connect(upstream).await?;
            server.set_nodelay(true)?;
            tokio::io::copy_bidirectional(&mut client, &mut server)
                .await
                .map(|_| ())
        },
        shutdown,
    )
    .await
}

/// Reads to EOF, then answers one byte.
async fn sink(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    while stream.read(&mut buf).await? > 0 {}
    stream.write_all(&[1]).await
}

/// Writes back what it reads.
async fn echo(mut stream: TcpStream) -> io::Result<()> {
    let (mut read, mut write) = stream.split();
    tokio::io::copy(&mut read, &mut write).await.map(|_| ())
}
