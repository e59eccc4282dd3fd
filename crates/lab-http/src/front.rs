//! A service's own HTTP/1 server, in front of hyper: it reads each request head itself
//! (`httparse`), lets the service's [`Fast`] path answer the requests that are its own (the BFF's
//! proxied reads), and passes every other request to the router, reading a small body of known
//! length first and writing the router's answer back, streamed. What it does not serve itself —
//! a chunked or large request body, `Expect`, `Upgrade`, HTTP/1.0, HTTP/2's preface, a head that
//! is malformed, too long or has too many headers — hands the connection over to hyper and the
//! router for the rest of its life, with every byte read and not answered, so hyper sees the
//! same stream the client sent from that request on.
//!
//! Why: hyper's server and client around the router cost more per proxied read than the whole
//! of nginx's proxy path on this machine (docs/BENCHMARKS.md, `lab bench bff`), and a browser's
//! connection carries its pages, its reads and its commands: it should stay on the fast server
//! for all of them, not only when its first request happens to be a read.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use futures::FutureExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version, header};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Header slots parsed per head; a head with more goes to hyper (which allows 100).
const MAX_HEADERS: usize = 64;

/// A request head longer than this goes to hyper, which has its own limits and answers.
const MAX_HEAD: usize = 16 * 1024;

/// A request body of known length up to this is read here and handed to the router whole; a
/// longer one goes to hyper, which streams it. The BFF holds bodies up to 64 KiB for retries
/// anyway, and every command a service takes is a small JSON document.
const MAX_BODY: usize = 64 * 1024;

/// How long a request head or body may take to arrive once it has begun (a slow or stalled
/// client); hyper's default header timeout.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The requests a service answers itself, before the router.
pub trait Fast: Send + Sync + 'static {
    /// Answers `request` (which has no body) when it is the fast path's, on `io`, with `out` as
    /// a scratch buffer; resolves to whether the connection can carry another request. `None`
    /// leaves the request to the router. A future of the implementation's own type, not boxed:
    /// the server is generic over its fast path, so a read costs no allocation for it.
    fn answer<'a>(
        &'a self,
        request: &'a Head<'a>,
        io: &'a mut TcpStream,
        out: &'a mut Vec<u8>,
    ) -> Option<impl Future<Output = bool> + Send + 'a>;

    /// Called when a connection is handed over to hyper (for the service's metrics).
    fn handed_over(&self) {}
}

/// [`serve`] for one fast path, ready to run: what [`crate::Application`] keeps.
pub(crate) type Server = Box<
    dyn FnOnce(
            TcpListener,
            Router,
            CancellationToken,
            Duration,
        ) -> futures::future::BoxFuture<'static, io::Result<()>>
        + Send,
>;

/// The server for `fast`.
pub(crate) fn server<F: Fast>(fast: Arc<F>) -> Server {
    Box::new(move |listener, router, shutdown, grace| {
        Box::pin(serve(listener, router, fast, shutdown, grace))
    })
}

/// A request head the server read.
pub struct Head<'a> {
    pub method: &'a str,
    /// The request target as sent: `/path?query`.
    pub target: &'a str,
    pub headers: &'a [httparse::Header<'a>],
    /// The socket peer.
    pub peer: SocketAddr,
    /// Whether the caller asked to close the connection after this answer.
    pub close: bool,
}

/// Serves `listener` with this server and `fast`, the router answering the rest, until
/// `shutdown`; then stops accepting and lets in-flight requests finish for at most `grace`. The
/// same contract as [`crate::serve`], which serves with hyper alone.
pub(crate) async fn serve<F: Fast>(
    listener: TcpListener,
    router: Router,
    fast: Arc<F>,
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
        let connection = Connection {
            fast: Arc::clone(&fast),
            router: router.clone(),
            peer,
            shutdown: shutdown.clone(),
        };
        connections.spawn(connection.run(tcp));
    }
    drop(listener);
    connections.close();
    tokio::select! {
        () = connections.wait() => {}
        () = crate::grace_over(grace) => {}
    }
    Ok(())
}

/// One accepted connection and what serves it.
struct Connection<F> {
    fast: Arc<F>,
    router: Router,
    peer: SocketAddr,
    shutdown: CancellationToken,
}

/// What to do with a parsed request head.
enum Next {
    /// Answer it: its body (if any) is the `usize` bytes after the head.
    Serve { body: usize, close: bool },
    /// Read more: its body has not all arrived.
    Wait,
    /// Hand the connection over to hyper.
    HandOver,
}

impl<F: Fast> Connection<F> {
    async fn run(self, mut tcp: TcpStream) {
        let mut read: Vec<u8> = Vec::with_capacity(4 * 1024);
        let mut out: Vec<u8> = Vec::with_capacity(2 * 1024);
        // Made once: a wait made afresh for every idle read registers and unregisters itself
        // with the token each time.
        let mut shutdown = std::pin::pin!(self.shutdown.clone().cancelled_owned());
        loop {
            // Left uninitialised: the parser writes the slots it fills, and a head of a few
            // headers need not pay for clearing 64 (2 KiB) on every request.
            let mut slots =
                [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut request = httparse::Request::new(&mut []);
            let next = match request.parse_with_uninit_headers(&read, &mut slots) {
                Ok(httparse::Status::Complete(length)) => {
                    let next = what_next(&request, read.len() - length);
                    if let Next::Serve { body, close } = next {
                        let keep = self
                            .answer(
                                &request,
                                &read[length..length + body],
                                close,
                                &mut tcp,
                                &mut out,
                            )
                            .await;
                        let Some(keep) = keep else {
                            return self.hand_over(tcp, read).await;
                        };
                        if !keep || close || self.shutdown.is_cancelled() {
                            return;
                        }
                        let used = length + body;
                        if used == read.len() {
                            read.clear();
                        } else {
                            read.drain(..used);
                        }
                        continue;
                    }
                    next
                }
                Ok(httparse::Status::Partial) if read.len() < MAX_HEAD => Next::Wait,
                // Malformed, too many headers or too long: hyper answers it.
                _ => Next::HandOver,
            };
            match next {
                Next::HandOver => return self.hand_over(tcp, read).await,
                Next::Wait | Next::Serve { .. } => {}
            }
            if read.capacity() - read.len() < 1024 {
                read.reserve(4 * 1024);
            }
            if !more(&mut tcp, &mut read, shutdown.as_mut()).await {
                return;
            }
        }
    }

    /// Answers one request, through the fast path or the router; whether the connection can go
    /// on, or `None` when it must be handed over after all (a head the router cannot take).
    async fn answer(
        &self,
        request: &httparse::Request<'_, '_>,
        body: &[u8],
        close: bool,
        tcp: &mut TcpStream,
        out: &mut Vec<u8>,
    ) -> Option<bool> {
        let head = Head {
            method: request.method.unwrap_or_default(),
            target: request.path.unwrap_or_default(),
            headers: request.headers,
            peer: self.peer,
            close,
        };
        if body.is_empty()
            && let Some(answered) = self.fast.answer(&head, tcp, out)
        {
            return Some(answered.await);
        }
        let routed = to_request(&head, Bytes::copy_from_slice(body))?;
        let head_only = routed.method() == Method::HEAD;
        let answer = match self.router.clone().oneshot(routed).await {
            Ok(answer) => answer,
            Err(never) => match never {},
        };
        Some(write_response(tcp, out, answer, head_only, close).await)
    }

    /// hyper and the router serve the rest of the connection, as `axum::serve` serves one:
    /// HTTP/1 with upgrades, the peer as `ConnectInfo`, a graceful close on shutdown.
    async fn hand_over(self, tcp: TcpStream, unread: Vec<u8>) {
        self.fast.handed_over();
        let peer = self.peer;
        let service =
            self.router
                .map_request(move |mut request: Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request.map(Body::new)
                });
        let service = TowerToHyperService::new(service);
        let io = TokioIo::new(Prefixed { unread, at: 0, tcp });
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
                () = self.shutdown.cancelled(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Whether a complete head (with `after` bytes read past it) is this server's to answer, and
/// with how much body; anything unusual is hyper's.
fn what_next(request: &httparse::Request<'_, '_>, after: usize) -> Next {
    if request.version != Some(1) {
        return Next::HandOver;
    }
    let mut length: Option<usize> = None;
    let mut close = false;
    for h in request.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let Some(n) = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
            else {
                return Next::HandOver;
            };
            if length.is_some_and(|m| m != n) {
                return Next::HandOver;
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Next::HandOver;
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"close"));
        }
    }
    match length.unwrap_or(0) {
        n if n > MAX_BODY => Next::HandOver,
        n if n > after => Next::Wait,
        body => Next::Serve { body, close },
    }
}

/// The comma-separated tokens of a header value, trimmed.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// The request for the router; `None` when the head is not one the `http` types accept (hyper
/// then answers it).
fn to_request(head: &Head<'_>, body: Bytes) -> Option<Request> {
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for h in head.headers {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        headers.append(name, value);
    }
    let mut request = Request::new(Body::from(body));
    *request.method_mut() = Method::from_bytes(head.method.as_bytes()).ok()?;
    *request.uri_mut() = head.target.parse::<Uri>().ok()?;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    request.extensions_mut().insert(ConnectInfo(head.peer));
    Some(request)
}

/// Writes the router's `answer`, its body streamed as it comes (chunked when its length is not
/// known); whether the connection can go on.
async fn write_response(
    tcp: &mut TcpStream,
    out: &mut Vec<u8>,
    answer: Response,
    head_only: bool,
    close: bool,
) -> bool {
    let (parts, mut body) = answer.into_parts();
    let status = parts.status;
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let known = declared.or_else(|| http_body::Body::size_hint(&body).exact());
    // Chunked only for a body that has one and no known length.
    let chunked = !bodiless && !head_only && known.is_none();
    out.clear();
    put_status_line(out, status);
    let mut dated = false;
    for (name, value) in &parts.headers {
        if *name == header::TRANSFER_ENCODING
            || *name == header::CONTENT_LENGTH
            || (*name == header::CONNECTION && close)
        {
            continue;
        }
        dated |= *name == header::DATE;
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        put_date(out);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        put_header(out, b"connection", b"close");
    }
    // As hyper frames them: none for 1xx and 204; a 304 keeps the length it was given; a HEAD
    // answer the GET's length when it is known.
    let length = if status.is_informational() || status == StatusCode::NO_CONTENT {
        None
    } else if status == StatusCode::NOT_MODIFIED {
        declared
    } else {
        known
    };
    if let Some(length) = length {
        put_header(
            out,
            b"content-length",
            itoa::Buffer::new().format(length).as_bytes(),
        );
    } else if chunked {
        put_header(out, b"transfer-encoding", b"chunked");
    }
    out.extend_from_slice(b"\r\n");
    if bodiless || head_only {
        return tcp.write_all(out).await.is_ok();
    }
    // The first frame, when it is ready now (a document in memory), goes out with the head.
    let mut first = body.frame().now_or_never();
    let mut written: u64 = 0;
    loop {
        let frame = match first.take() {
            Some(frame) => frame,
            None => {
                if !out.is_empty() {
                    if tcp.write_all(out).await.is_err() {
                        return false;
                    }
                    out.clear();
                }
                body.frame().await
            }
        };
        let data = match frame {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers: HTTP/1 answers here carry none.
                Err(_) => continue,
            },
            Some(Err(e)) => {
                tracing::debug!(error = %e, "an answer's body failed; closing the connection");
                let _ = tcp.write_all(out).await;
                return false;
            }
        };
        if data.is_empty() {
            continue;
        }
        written += data.len() as u64;
        if chunked {
            let _ = write!(out, "{:x}\r\n", data.len());
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(&data);
        }
        // Small pieces are gathered; a stream (server-sent events) is written as it comes.
        if out.len() >= 16 * 1024 {
            if tcp.write_all(out).await.is_err() {
                return false;
            }
            out.clear();
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    let whole = known.is_none_or(|length| length == written);
    tcp.write_all(out).await.is_ok() && whole
}

/// Waits for more of a request; false when the connection is done: closed, broken, stalled
/// mid-request, or idle when the service shuts down.
async fn more(
    tcp: &mut TcpStream,
    read: &mut Vec<u8>,
    shutdown: Pin<&mut WaitForCancellationFutureOwned>,
) -> bool {
    let got = if read.is_empty() {
        tokio::select! {
            () = shutdown => return false,
            got = tcp.read_buf(read) => got,
        }
    } else {
        match tokio::time::timeout(READ_TIMEOUT, tcp.read_buf(read)).await {
            Ok(got) => got,
            Err(_) => return false,
        }
    };
    matches!(got, Ok(n) if n > 0)
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

/// Appends the status line of `status`, with its canonical reason as hyper writes it.
pub fn put_status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        status
            .canonical_reason()
            .unwrap_or("<unknown status code>")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
}

/// Appends `name: value\r\n`.
pub fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// This second's `Date` value, made once a second per thread (hyper keeps one the same way).
    static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
}

/// Appends the current `Date` value (RFC 9110 §5.6.7) to `out`.
pub fn put_date(out: &mut Vec<u8>) {
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != second || text.is_empty() {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// A socket read first from the bytes the server had already read.
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
