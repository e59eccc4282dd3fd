//! A service's own front on its listener: every accepted connection goes to the front first,
//! which answers what it knows how to answer and hands the connection over to the router (hyper
//! and axum, with the platform middleware) for the rest of its life when a request is not its
//! own. The BFF's HTTP/1 proxy for bodiless reads is one (`lab_bff::front`).
//!
//! A handed-over connection keeps every byte the front read and did not answer: the router sees
//! the same stream the client sent, from the first request the front declined.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use futures::future::BoxFuture;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// What serves a connection before the router does.
pub trait ConnectionFront: Send + Sync + 'static {
    /// Serves requests on `connection` for as long as they are the front's; resolves to the
    /// connection and its unanswered bytes when the router should take it over, or `None` when
    /// the connection is finished (closed by either side, or shut down).
    fn serve(self: Arc<Self>, connection: Connection) -> BoxFuture<'static, Option<Handoff>>;
}

/// An accepted connection, as the front gets it.
pub struct Connection {
    pub tcp: TcpStream,
    /// The socket peer (the BFF decides from it whether `X-Forwarded-For` is believed).
    pub peer: SocketAddr,
    /// Cancelled when the service shuts down: finish the request in flight, then close.
    pub shutdown: CancellationToken,
}

/// A connection the front gives to the router, with what it read and did not answer.
pub struct Handoff {
    pub tcp: TcpStream,
    pub unread: Vec<u8>,
}

/// Serves `listener` through `front`, handing connections over to `router`, until `shutdown`;
/// then stops accepting and lets in-flight requests finish for at most `grace`. The same
/// contract as [`crate::serve`], which serves without a front.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    front: Arc<dyn ConnectionFront>,
    shutdown: CancellationToken,
    grace: Duration,
) -> io::Result<()> {
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        // Without TCP_NODELAY a small answer can wait out the client's delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::trace!(error = %e, "could not set TCP_NODELAY");
        }
        let front = Arc::clone(&front);
        let router = router.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let connection = Connection {
                tcp,
                peer,
                shutdown: shutdown.clone(),
            };
            if let Some(handoff) = front.serve(connection).await {
                hand_over(handoff, peer, router, shutdown).await;
            }
        });
    }
    drop(listener);
    connections.close();
    tokio::select! {
        () = connections.wait() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "in-flight requests outlived the grace period; closing them");
        }
    }
    Ok(())
}

/// The router serves the rest of a handed-over connection, as `axum::serve` serves one: HTTP/1
/// with upgrades, the peer as `ConnectInfo`, a graceful close on shutdown.
async fn hand_over(
    handoff: Handoff,
    peer: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) {
    let service = router.map_request(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.map(axum::body::Body::new)
    });
    let service = TowerToHyperService::new(service);
    let io = TokioIo::new(Prefixed {
        unread: handoff.unread,
        at: 0,
        tcp: handoff.tcp,
    });
    let builder = Builder::new(TokioExecutor::new());
    let mut conn = std::pin::pin!(builder.serve_connection_with_upgrades(io, service));
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// hyper's and axum's advice: a failed accept that is about one connection is skipped; any
/// other (out of file descriptors) waits a second for connections to close.
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A socket read first from the bytes the front had already read.
struct Prefixed {
    unread: Vec<u8>,
    at: usize,
    tcp: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.unread.len() {
            let left = &this.unread[this.at..];
            let n = left.len().min(buf.remaining());
            buf.put_slice(&left[..n]);
            this.at += n;
            if this.at == this.unread.len() {
                this.unread = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
