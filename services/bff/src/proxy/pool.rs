//! Connections to the upstreams: per endpoint, a stack of idle HTTP/1 connections (hyper's
//! `client::conn::http1`), one taken for a request and given back when its answer's body has
//! ended. A connection whose answer was cut short, or that failed, is dropped, never reused.
//!
//! Why not hyper-util's pooled `Client` (which the proxy used until session 5): its request goes
//! over a channel to the connection's task and its answer back over another, through a pool
//! behind a mutex keyed by a parsed URI, with the checkout and the connect racing as boxed
//! futures; callgrind counted that at several thousand instructions per proxied read more than
//! driving hyper's connection directly (docs/BENCHMARKS.md, `lab bench bff`, session 5). What the
//! proxy needs of a pool is small: round robin, ejection, timeouts and retries are decided above
//! it, by `lab-resilience`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http::{HeaderValue, Request, Response, Uri, header};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use lab_resilience::Failure;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A connect that takes longer than this on loopback is a dead or frozen upstream, not a slow
/// one: the attempt fails fast and goes to the other replica.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Idle upstream connections are kept this long: longer than the gap between a visitor's clicks,
/// shorter than any server-side idle timeout, so a pooled connection is rarely found dead.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// Idle connections kept per endpoint: nginx's `keepalive 64` doubled, above the concurrency one
/// BFF replica sends to one replica in the benchmarks, so a burst does not reconnect; beyond
/// it a returned connection is closed rather than hoarded.
const MAX_IDLE: usize = 128;

/// Every endpoint's connections, by base URL (as `Settings::instances` gives it); looked up on
/// every proxied request, so with foldhash (the keys are our own settings) rather than SipHash,
/// which was ~200 instructions of a read (callgrind).
pub(super) struct Pools(HashMap<Box<str>, Arc<Endpoint>, foldhash::fast::RandomState>);

impl Pools {
    pub(super) fn new<'a>(urls: impl IntoIterator<Item = &'a str>) -> Self {
        Self(
            urls.into_iter()
                .map(|url| (url.into(), Arc::new(Endpoint::new(url))))
                .collect(),
        )
    }

    pub(super) fn get(&self, url: &str) -> Option<&Arc<Endpoint>> {
        self.0.get(url)
    }
}

/// One upstream replica's address and idle connections.
pub(super) struct Endpoint {
    /// `host:port` to connect to, or why the base URL has none.
    address: Result<Box<str>, String>,
    /// The `Host` header every request to it carries.
    host: HeaderValue,
    /// Idle connections, the most recently used on top (the warmest; the oldest expire).
    idle: Mutex<Vec<Idle<SendRequest<Body>>>>,
    /// Idle connections of the BFF's own front, which speaks HTTP/1 on them itself
    /// ([`super::front`]); kept the same way.
    raw: Mutex<Vec<Idle<RawConn>>>,
}

struct Idle<T> {
    conn: T,
    since: Instant,
}

/// An upstream connection the front speaks HTTP/1 on itself: the socket and its buffers, reused
/// from request to request.
pub(super) struct RawConn {
    pub(super) tcp: TcpStream,
    /// What has been read from the upstream and not yet relayed.
    pub(super) read: Vec<u8>,
    /// The request being sent.
    pub(super) write: Vec<u8>,
    /// The last answer head's header names and values, as offsets into `read` (name start and
    /// end, value start and end), so the head is parsed once.
    pub(super) headers: Vec<[u32; 4]>,
}

impl Endpoint {
    fn new(base: &str) -> Self {
        let authority = base
            .parse::<Uri>()
            .map_err(|e| e.to_string())
            .and_then(|uri| match (uri.scheme_str(), uri.authority()) {
                (Some("http"), Some(authority)) => Ok(authority.clone()),
                _ => Err("not an http:// base URL".to_owned()),
            });
        let address = authority
            .as_ref()
            .map(|a| format!("{}:{}", a.host(), a.port_u16().unwrap_or(80)).into_boxed_str());
        let host = authority
            .as_ref()
            .ok()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .unwrap_or_else(|| HeaderValue::from_static("localhost"));
        Self {
            address: address.map_err(|e| format!("bad upstream address {base}: {e}")),
            host,
            idle: Mutex::new(Vec::new()),
            raw: Mutex::new(Vec::new()),
        }
    }

    /// The `Host` header every request to this endpoint carries.
    pub(super) fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// An idle raw connection, the expired ones dropped; `None` when there is none.
    pub(super) fn take_raw(&self) -> Option<RawConn> {
        let mut raw = lock(&self.raw);
        while let Some(Idle { conn, since }) = raw.pop() {
            if since.elapsed() <= POOL_IDLE {
                return Some(conn);
            }
        }
        None
    }

    /// A new raw connection.
    pub(super) async fn connect_raw(&self) -> Result<RawConn, Failure> {
        Ok(RawConn {
            tcp: self.connect_tcp().await?,
            read: Vec::with_capacity(8 * 1024),
            write: Vec::with_capacity(1024),
            headers: Vec::with_capacity(16),
        })
    }

    /// A raw connection whose last answer was read to its end, for the next request.
    pub(super) fn give_back_raw(&self, mut conn: RawConn) {
        conn.read.clear();
        keep(&self.raw, conn);
    }

    /// Sends `request` (its URI in origin form, `/path?query`) on an idle connection or a new
    /// one; the answer's body gives the connection back when it ends.
    pub(super) async fn send(
        self: &Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<Response<Returning>, Failure> {
        let mut send = match self.checkout().await {
            Some(send) => send,
            None => self.connect().await?,
        };
        request
            .headers_mut()
            .insert(header::HOST, self.host.clone());
        let response = send.send_request(request).await.map_err(classify)?;
        Ok(response.map(|body| Returning {
            body,
            ended: false,
            back: Some((send, Arc::clone(self))),
        }))
    }

    /// An idle connection that can take a request, dropping the closed and expired ones.
    async fn checkout(&self) -> Option<SendRequest<Body>> {
        loop {
            let Idle {
                conn: mut send,
                since,
            } = lock(&self.idle).pop()?;
            if send.is_closed() || since.elapsed() > POOL_IDLE {
                continue;
            }
            // Given back as its answer ended, it may not have seen that end yet: a moment.
            if send.is_ready() || send.ready().await.is_ok() {
                return Some(send);
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Body>, Failure> {
        let tcp = self.connect_tcp().await?;
        let (send, connection) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| Failure::Refused(chain(&e)))?;
        // The connection's task ends by itself when its `SendRequest` is dropped (idle expiry,
        // a cut-short answer) or the upstream closes it.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection closed");
            }
        });
        Ok(send)
    }

    /// A TCP connection to the endpoint, within [`CONNECT_TIMEOUT`], Nagle off.
    async fn connect_tcp(&self) -> Result<TcpStream, Failure> {
        let address = self
            .address
            .as_deref()
            .map_err(|e| Failure::Refused(e.clone()))?;
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(Failure::Refused(format!("connect to {address}: {e}"))),
            Err(_) => {
                return Err(Failure::Refused(format!(
                    "connect to {address}: no answer within {CONNECT_TIMEOUT:?}"
                )));
            }
        };
        // Small requests and answers: Nagle would hold them back for the peer's delayed ACK.
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    fn give_back(&self, send: SendRequest<Body>) {
        if !send.is_closed() {
            keep(&self.idle, send);
        }
    }
}

/// Puts `conn` on top of an idle stack, unless the stack is full.
fn keep<T>(stack: &Mutex<Vec<Idle<T>>>, conn: T) {
    let now = Instant::now();
    let mut idle = lock(stack);
    // The bottom of the stack is the longest idle: expire it here, no reaper task needed.
    if idle
        .first()
        .is_some_and(|oldest| now.duration_since(oldest.since) > POOL_IDLE)
    {
        idle.remove(0);
    }
    if idle.len() < MAX_IDLE {
        idle.push(Idle { conn, since: now });
    }
}

fn lock<T>(stack: &Mutex<Vec<Idle<T>>>) -> std::sync::MutexGuard<'_, Vec<Idle<T>>> {
    // A panic while holding it leaves a plain stack of connections: still usable.
    stack.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An upstream answer's body; when it has been read to its end, its connection goes back to the
/// endpoint's idle stack (on drop, so an answer with an empty body, never polled, counts too).
pub(super) struct Returning {
    body: Incoming,
    ended: bool,
    back: Option<(SendRequest<Body>, Arc<Endpoint>)>,
}

impl http_body::Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.ended = true,
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if (self.ended || http_body::Body::is_end_stream(&self.body))
            && let Some((send, endpoint)) = self.back.take()
        {
            endpoint.give_back(send);
        }
    }
}

/// Turns a failed exchange into the failure kind the table knows.
fn classify(error: hyper::Error) -> Failure {
    let detail = chain(&error);
    let mut too_large = false;
    // A body error of the caller's upload is hyper's "user" error, at the top or as a cause.
    let mut body_failed = error.is_user();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        too_large |= cause.is::<http_body_util::LengthLimitError>();
        body_failed |= cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_user);
        source = cause.source();
    }
    if too_large || body_failed {
        return Failure::RequestBody { too_large, detail };
    }
    Failure::Reset(detail)
}

/// An error and its causes on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
