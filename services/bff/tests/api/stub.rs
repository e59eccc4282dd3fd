//! A tiny upstream whose behaviour a test switches: answers, fails plainly, fails with its own
//! problem, or hangs; it counts the requests it gets and keeps the last one's headers and body.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
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
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    inner.hits.fetch_add(1, Ordering::SeqCst);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    inner.paths.lock().expect("not poisoned").push(path);
    *inner.last.lock().expect("not poisoned") = Some((headers, body.clone()));
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
    };
    let headers = response.headers_mut();
    headers.insert("x-instance-id", HeaderValue::from_static(STUB_INSTANCE));
    headers.insert(header::CONNECTION, HeaderValue::from_static("x-stub-hop"));
    headers.insert("x-stub-hop", HeaderValue::from_static("1"));
    response
}
