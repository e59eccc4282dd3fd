//! A tiny upstream whose behaviour a test switches: answers (echoing the request, with a large,
//! streamed or empty body, or closing its connection after each answer), fails plainly, fails
//! with its own problem, or hangs; it counts the requests it gets and keeps the last one's headers
//! and body. [`Dropper`] is the rude upstream an axum server cannot be made into: it closes each
//! connection after one answer without saying so, at once or when the next request comes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// What the stub does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 with the request's body echoed.
    Ok,
    /// 503 with a plain-text body: a broken hop, as the gateway sees it.
    PlainUnavailable,
    /// 503 with the service's own problem document.
    ProblemUnavailable,
    /// Never answers.
    Hang,
    /// 200 with the request as JSON (`method`, `path`, `headers` as name → values, `body`),
    /// after `delay_ms` milliseconds when the query has `delay_ms=N`.
    Echo,
    /// 200 with [`large_body`], its length declared.
    Large,
    /// 200 with [`streamed_body`] in chunks of unknown total length (chunked on the wire).
    Streamed,
    /// 204, no body.
    NoContent,
    /// 304 with an `ETag`, no body.
    NotModified,
    /// 500 with a plain-text body.
    PlainError,
    /// 200 with a short body, then the stub closes the connection (`Connection: close`).
    Close,
}

/// The `X-Stub-Hop` header named by the stub's `Connection`, which must stop at the BFF.
pub const STUB_HOP: &str = "x-stub-hop";

/// The body of [`Mode::Large`]: 300 KiB, more than a loopback socket's default buffers, so it
/// crosses in many reads and writes; a pattern that shows a dropped or repeated byte.
pub fn large_body() -> Vec<u8> {
    (0..300 * 1024u32).map(|i| (i % 251) as u8).collect()
}

/// The chunks [`Mode::Streamed`] sends: 40 of 4 KiB, each one letter, the next letter each time.
pub fn streamed_chunks() -> Vec<Vec<u8>> {
    (0..40u8).map(|i| vec![b'a' + i % 26; 4096]).collect()
}

/// All of [`streamed_chunks`], as the caller should receive them.
pub fn streamed_body() -> Vec<u8> {
    streamed_chunks().concat()
}

#[derive(Debug)]
struct Inner {
    mode: Mutex<Mode>,
    hits: AtomicUsize,
    last: Mutex<Option<(HeaderMap, Bytes)>>,
    /// Path and query of every request, in order.
    paths: Mutex<Vec<String>>,
}

/// A running stub; stops when the test's runtime ends.
#[derive(Clone, Debug)]
pub struct Stub {
    pub url: String,
    inner: Arc<Inner>,
}

/// The `X-Instance-Id` the stub answers with.
pub const STUB_INSTANCE: &str = "stub-1-0000";

/// The problem document the stub's `ProblemUnavailable` sends, byte for byte.
pub const STUB_PROBLEM: &str =
    r#"{"type":"urn:stub:problem:maintenance","title":"Down for maintenance","status":503}"#;

impl Stub {
    pub async fn start(mode: Mode) -> Self {
        let inner = Arc::new(Inner {
            mode: Mutex::new(mode),
            hits: AtomicUsize::new(0),
            last: Mutex::new(None),
            paths: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the stub");
        let url = format!("http://{}", listener.local_addr().expect("stub address"));
        let router = axum::Router::new()
            .fallback(answer)
            .with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, inner }
    }

    pub fn set(&self, mode: Mode) {
        *self.inner.mode.lock().expect("not poisoned") = mode;
    }

    pub fn hits(&self) -> usize {
        self.inner.hits.load(Ordering::SeqCst)
    }

    /// Path and query of every request so far.
    pub fn paths(&self) -> Vec<String> {
        self.inner.paths.lock().expect("not poisoned").clone()
    }

    /// The last request's headers and body.
    pub fn last(&self) -> (HeaderMap, Bytes) {
        self.inner
            .last
            .lock()
            .expect("not poisoned")
            .clone()
            .expect("the stub got no request")
    }
}

async fn answer(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    inner.hits.fetch_add(1, Ordering::SeqCst);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    inner.paths.lock().expect("not poisoned").push(path);
    *inner.last.lock().expect("not poisoned") = Some((headers.clone(), body.clone()));
    let mode = *inner.mode.lock().expect("not poisoned");
    let mut response = match mode {
        Mode::Ok => (StatusCode::OK, body).into_response(),
        Mode::PlainUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response(),
        Mode::ProblemUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/problem+json")],
            STUB_PROBLEM,
        )
            .into_response(),
        Mode::Hang => std::future::pending().await,
        Mode::Echo => echo(&method, &uri, &headers, &body).await,
        Mode::Large => (StatusCode::OK, large_body()).into_response(),
        Mode::Streamed => {
            let chunks = streamed_chunks()
                .into_iter()
                .map(|chunk| Ok::<_, std::convert::Infallible>(Bytes::from(chunk)));
            (
                StatusCode::OK,
                Body::from_stream(futures::stream::iter(chunks)),
            )
                .into_response()
        }
        Mode::NoContent => StatusCode::NO_CONTENT.into_response(),
        Mode::NotModified => (StatusCode::NOT_MODIFIED, [(header::ETAG, "\"v1\"")]).into_response(),
        Mode::PlainError => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        Mode::Close => (StatusCode::OK, "closing").into_response(),
    };
    let connection = if mode == Mode::Close {
        "close, x-stub-hop"
    } else {
        STUB_HOP
    };
    let headers = response.headers_mut();
    headers.insert("x-instance-id", HeaderValue::from_static(STUB_INSTANCE));
    headers.insert(header::CONNECTION, HeaderValue::from_static(connection));
    headers.insert(STUB_HOP, HeaderValue::from_static("1"));
    response
}

/// [`Mode::Echo`]'s answer.
async fn echo(method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Response {
    let delay = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("delay_ms="))
        .and_then(|ms| ms.parse().ok());
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut seen: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        seen.entry(name.as_str())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let echoed = serde_json::json!({
        "method": method.as_str(),
        "path": uri.path_and_query().map_or("/", |p| p.as_str()),
        "headers": seen,
        "body": String::from_utf8_lossy(body),
    });
    axum::Json(echoed).into_response()
}

/// When a [`Dropper`] closes a connection it has answered once, without warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropWhen {
    /// Right after the answer: the close arrives with it.
    AfterAnswer,
    /// When the next request arrives on it, unanswered: an idle timeout firing just as the
    /// pooled connection is reused, the race a proxy must retry through.
    OnNextRequest,
}

/// An upstream that answers one request per connection as if the connection would stay open
/// (HTTP/1.1, a length, no `Connection: close`), then closes it as [`DropWhen`] says: what a server's
/// idle timeout does to a pooled connection.
#[derive(Clone, Debug)]
pub struct Dropper {
    pub url: String,
}

/// The body every [`Dropper`] answer carries.
pub const DROPPER_BODY: &str = "dropped after this";

impl Dropper {
    pub async fn start(drop: DropWhen) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the dropper");
        let url = format!("http://{}", listener.local_addr().expect("dropper address"));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer_once(stream, drop));
            }
        });
        Self { url }
    }
}

/// Reads up to the end of a request head; false when the connection ended first.
async fn read_head(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read_buf(&mut head).await {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
    }
    true
}

async fn answer_once(mut stream: tokio::net::TcpStream, drop: DropWhen) {
    use tokio::io::AsyncWriteExt;
    if !read_head(&mut stream).await {
        return;
    }
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-instance-id: {STUB_INSTANCE}\r\n\r\n{DROPPER_BODY}",
        DROPPER_BODY.len()
    );
    if stream.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    if drop == DropWhen::OnNextRequest {
        read_head(&mut stream).await;
    }
    let _ = stream.shutdown().await;
}
