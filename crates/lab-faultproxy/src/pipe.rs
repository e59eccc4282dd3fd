//! One proxied connection: connect upstream, copy both ways, apply the edge's faults per chunk.
//!
//! Each direction is a loop over one reused buffer: read a chunk, load the edge's fault snapshot,
//! and when that direction is clean write the chunk straight on (the hot path: one atomic load
//! more than a plain copy). Under a latency fault a chunk joins a FIFO delay line, due at its
//! read time + the delay (never before the chunk ahead of it), while reading goes on, so latency
//! delays bytes without capping throughput. Every chunk then leaves through the same stages in
//! a fixed order — blackhole (wait), cut (truncate), bandwidth (paced writes) — so nothing is
//! reordered or dropped. Because the snapshot is read per chunk, faults applied later reach live
//! connections too, as they would a pooled database connection. A third future per connection
//! watches for new reset faults.

use std::collections::VecDeque;
use std::future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::effect::{FaultId, Stage};
use crate::fault::Direction;
use crate::proxy::Edge;

/// Per direction and connection; 64 KiB lets a bulk copy move a socket buffer's worth per
/// system call while a pool of a hundred idle connections costs about 13 MiB.
const BUFFER: usize = 64 * 1024;

/// A slow upstream connect is its own fault; this only bounds a dead one (a SYN never answered).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes a direction holds while they wait out a latency: at 100 ms that still passes 10 MiB/s,
/// more than any Lab edge needs, and bounds memory when the reader outpaces the delay.
const MAX_DELAYED: usize = 1024 * 1024;

/// Bandwidth is paced in slices of 1/50 s of the rate: smooth enough for a progress bar, coarse
/// enough not to turn every chunk into dozens of timers.
const PACING_SLICES_PER_S: u64 = 50;

/// How a connection ended, which decides how its sockets are closed.
enum End {
    /// Both directions saw EOF and forwarded it, or the proxy is stopping: close normally.
    Closed,
    /// A cut-after fault fired: close normally, so the bytes before the cut are delivered (the
    /// kernel still answers with an RST if the peer had sent bytes the proxy never read).
    Cut,
    /// A reset fault fired, or a socket failed: abort both sides with an RST.
    Abort,
}

/// Why one direction stopped before an EOF.
enum Broken {
    Io,
    Cut,
}

/// Serves one accepted connection until it ends.
pub(crate) async fn serve(mut client: TcpStream, edge: Arc<Edge>, stop: CancellationToken) {
    let _open = edge.counters.open_connection();
    // Subscribed before the snapshot is read, so a change in between still wakes this connection.
    let version = edge.version.subscribe();
    let faults = edge.faults.load_full();
    if faults.refuse {
        edge.counters.refused.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut seen = Vec::with_capacity(faults.resets.len());
    for &(id, probability) in &faults.resets {
        seen.push(id);
        if roll(probability) {
            edge.counters.resets.fetch_add(1, Ordering::Relaxed);
            abort(&client);
            return;
        }
    }
    drop(faults);

    let mut upstream =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(edge.upstream)).await {
            Ok(Ok(upstream)) => upstream,
            Ok(Err(e)) => {
                tracing::debug!(edge = %edge.name, error = %e, "upstream refused the connection");
                abort(&client);
                return;
            }
            Err(_) => {
                tracing::debug!(edge = %edge.name, "upstream connect timed out");
                abort(&client);
                return;
            }
        };
    // Request/response traffic (every edge here) must not wait for Nagle.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);

    let end = {
        let (mut client_read, mut client_write) = client.split();
        let (mut upstream_read, mut upstream_write) = upstream.split();
        let both = async {
            tokio::try_join!(
                pump(
                    Direction::Upstream,
                    &mut client_read,
                    &mut upstream_write,
                    &edge,
                    version.clone(),
                ),
                pump(
                    Direction::Downstream,
                    &mut upstream_read,
                    &mut client_write,
                    &edge,
                    version.clone(),
                ),
            )
        };
        tokio::select! {
            result = both => match result {
                Ok(_) => End::Closed,
                Err(Broken::Cut) => End::Cut,
                Err(Broken::Io) => End::Abort,
            },
            () = reset_rolled(&edge, version.clone(), &mut seen) => {
                edge.counters.resets.fetch_add(1, Ordering::Relaxed);
                End::Abort
            }
            () = stop.cancelled() => End::Closed,
        }
    };
    match end {
        End::Closed => {}
        End::Cut => {
            edge.counters.cuts.fetch_add(1, Ordering::Relaxed);
            let _ = client.shutdown().await;
            let _ = upstream.shutdown().await;
        }
        End::Abort => {
            abort(&client);
            abort(&upstream);
        }
    }
}

/// Copies one direction until EOF (forwarded, after any slow-close delay) or a failure.
async fn pump<R, W>(
    flow: Direction,
    reader: &mut R,
    writer: &mut W,
    edge: &Edge,
    version: watch::Receiver<u64>,
) -> Result<(), Broken>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    let mut out = Outlet {
        flow,
        edge,
        version,
        sent: 0,
        next_slice: Instant::now(),
    };
    let mut line = DelayLine::default();
    let mut eof = false;
    loop {
        let read = if line.is_empty() {
            if eof {
                let delay = edge.faults.load().slow_close;
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                return writer.shutdown().await.map_err(|_| Broken::Io);
            }
            reader.read(&mut buf).await
        } else {
            // Chunks are waiting out a latency: deliver each when due, and keep reading (up to
            // the line's bound) meanwhile, so latency delays bytes without capping throughput.
            tokio::select! {
                biased;
                () = line.head_due() => {
                    let chunk = line.pop();
                    out.deliver(writer, &chunk).await?;
                    continue;
                }
                read = reader.read(&mut buf), if !eof && !line.is_full() => read,
            }
        };
        let n = read.map_err(|_| Broken::Io)?;
        if n == 0 {
            eof = true;
            continue;
        }
        let stage = edge.faults.load().stage(flow);
        if line.is_empty() && stage.is_clean() {
            // The hot path.
            writer.write_all(&buf[..n]).await.map_err(|_| Broken::Io)?;
            out.sent += n as u64;
            edge.counters
                .bytes(flow)
                .fetch_add(n as u64, Ordering::Relaxed);
            continue;
        }
        if line.is_empty() && stage.latency.is_zero() {
            out.deliver(writer, &buf[..n]).await?;
        } else {
            // Behind delayed chunks, even with no latency left: bytes never overtake.
            line.push(Instant::now() + delay(&stage), &buf[..n]);
        }
    }
}

/// Where one direction's chunks leave, through the blackhole, cut and bandwidth stages.
struct Outlet<'a> {
    flow: Direction,
    edge: &'a Edge,
    /// Wakes a blackholed chunk when the faults change.
    version: watch::Receiver<u64>,
    /// Bytes forwarded this way on this connection, for cut-after.
    sent: u64,
    /// When the bandwidth cap allows the next slice.
    next_slice: Instant,
}

impl Outlet<'_> {
    /// Forwards `chunk` under the faults in force now; `Broken::Cut` once a cut fired.
    async fn deliver<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        chunk: &[u8],
    ) -> Result<(), Broken> {
        let stage = self.edge.faults.load().stage(self.flow);
        let stage = wait_out_blackhole(self.flow, self.edge, &mut self.version, stage).await;
        let mut chunk = chunk;
        let mut cut = false;
        if let Some(limit) = stage.cut_after {
            let left = limit.saturating_sub(self.sent);
            if chunk.len() as u64 >= left {
                // `left <= chunk.len()`, so it fits a usize.
                chunk = &chunk[..usize::try_from(left).unwrap_or(0)];
                cut = true;
            }
        }
        match stage.bandwidth {
            None => writer.write_all(chunk).await.map_err(|_| Broken::Io)?,
            Some(rate) => {
                let slice = usize::try_from((rate / PACING_SLICES_PER_S).max(1)).unwrap_or(BUFFER);
                for piece in chunk.chunks(slice) {
                    self.next_slice = self.next_slice.max(Instant::now());
                    tokio::time::sleep_until(self.next_slice).await;
                    writer.write_all(piece).await.map_err(|_| Broken::Io)?;
                    self.next_slice += Duration::from_secs_f64(piece.len() as f64 / rate as f64);
                }
            }
        }
        self.sent += chunk.len() as u64;
        self.edge
            .counters
            .bytes(self.flow)
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if cut {
            return Err(Broken::Cut);
        }
        Ok(())
    }
}

/// Chunks read under a latency fault, each with the instant it is due, in read order.
#[derive(Default)]
struct DelayLine {
    chunks: VecDeque<(Instant, Vec<u8>)>,
    /// Bytes held, bounded by [`MAX_DELAYED`].
    bytes: usize,
}

impl DelayLine {
    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    fn is_full(&self) -> bool {
        self.bytes >= MAX_DELAYED
    }

    /// Queues a copy of `chunk`, due no earlier than the chunk before it.
    fn push(&mut self, due: Instant, chunk: &[u8]) {
        let due = self.chunks.back().map_or(due, |(last, _)| due.max(*last));
        self.bytes += chunk.len();
        self.chunks.push_back((due, chunk.to_vec()));
    }

    /// Resolves when the oldest chunk is due (never, when empty).
    async fn head_due(&self) {
        match self.chunks.front() {
            Some((due, _)) => tokio::time::sleep_until(*due).await,
            None => future::pending().await,
        }
    }

    fn pop(&mut self) -> Vec<u8> {
        let chunk = self.chunks.pop_front().map(|(_, c)| c).unwrap_or_default();
        self.bytes -= chunk.len();
        chunk
    }
}

/// Waits while `flow` is blackholed; returns the stage in force once it is not.
async fn wait_out_blackhole(
    flow: Direction,
    edge: &Edge,
    version: &mut watch::Receiver<u64>,
    mut stage: Stage,
) -> Stage {
    while stage.blackhole {
        if version.changed().await.is_err() {
            // The edge is gone; the proxy is stopping and will cancel this connection.
            future::pending::<()>().await;
        }
        stage = edge.faults.load().stage(flow);
    }
    stage
}

/// Resolves when a reset fault this connection has not yet rolled for comes up.
async fn reset_rolled(edge: &Edge, mut version: watch::Receiver<u64>, seen: &mut Vec<FaultId>) {
    loop {
        if version.changed().await.is_err() {
            future::pending::<()>().await;
        }
        let faults = edge.faults.load();
        for &(id, probability) in &faults.resets {
            if !seen.contains(&id) {
                seen.push(id);
                if roll(probability) {
                    return;
                }
            }
        }
    }
}

/// The chunk's delay: latency ± a uniform jitter.
fn delay(stage: &Stage) -> Duration {
    if stage.jitter.is_zero() {
        return stage.latency;
    }
    let spread = stage.jitter.as_secs_f64() * (2.0 * rand::random::<f64>() - 1.0);
    Duration::from_secs_f64((stage.latency.as_secs_f64() + spread).max(0.0))
}

/// True with `probability`.
fn roll(probability: f64) -> bool {
    probability >= 1.0 || rand::random::<f64>() < probability
}

/// Makes the socket's close an RST rather than a FIN.
fn abort(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}
