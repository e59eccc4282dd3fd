//! Idempotency at the edge: a mutating request (`POST`, `PUT`, `PATCH`, `DELETE`) sent with an
//! `Idempotency-Key` runs once per visitor and key; a repeat gets the first answer again, byte for
//! byte, with `Idempotent-Replayed: true`, from any replica.
//!
//! In Redis, per visitor scope and SHA-256 of the key: an in-flight marker (`SET NX PX`, holding
//! the request's fingerprint) while the first attempt runs — a repeat meanwhile gets 409 with
//! `Retry-After` — then the answer (status, the headers that describe it, body) for 24 h. The
//! fingerprint is SHA-256 of method, path and body: the same key with another request is 422. A
//! 5xx answer is not kept (the marker is removed) so a retry can succeed; nor is one whose body is
//! larger than [`MAX_STORED_BODY`], which passes through with a log line. With Redis unreachable
//! requests pass through unprotected (and say so in the log): the services' own idempotency
//! (orders, payments) still holds, and refusing every write would be worse.

use axum::body::{Body, Bytes};
use std::future::Future;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use lab_http::Problem;
use sha2::{Digest, Sha256};

use crate::session::Visitor;

mod store;

pub use store::ReplayStore;
use store::Stored;

pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// What a repeat arriving during the first attempt is told to wait.
const RETRY_IN_FLIGHT_AFTER_S: u32 = 1;
/// The largest request body fingerprinted: far beyond any JSON command the services take.
const MAX_REQUEST_BODY: usize = 1024 * 1024;
/// The largest answer kept for replay: the services' answers to a write are a few KiB.
pub const MAX_STORED_BODY: usize = 256 * 1024;
/// The longest key accepted.
const MAX_KEY_LEN: usize = 255;

/// The answer's headers that are part of it; the rest (dates, ids of this hop) are per response.
const STORED_HEADERS: [HeaderName; 7] = [
    header::CONTENT_TYPE,
    header::CONTENT_LOCATION,
    header::LOCATION,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CACHE_CONTROL,
    HeaderName::from_static("x-instance-id"),
];

/// Why a request with an `Idempotency-Key` is refused.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters, sent once")]
    BadKey,
    #[error("the body is larger than {MAX_REQUEST_BODY} bytes")]
    BodyTooLarge,
    #[error("this Idempotency-Key was used for a different request (method, path or body)")]
    Mismatch,
    #[error("a request with this Idempotency-Key is still being processed")]
    InFlight,
}

impl IntoResponse for ReplayError {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        let problem = match self {
            Self::BadKey => Problem::typed(
                StatusCode::BAD_REQUEST,
                "idempotency-key",
                "Invalid Idempotency-Key",
            ),
            Self::BodyTooLarge => Problem::new(StatusCode::PAYLOAD_TOO_LARGE),
            Self::Mismatch => Problem::typed(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key reused for another request",
            ),
            Self::InFlight => Problem::typed(
                StatusCode::CONFLICT,
                "idempotency-in-flight",
                "The first request with this key is still running",
            )
            .header(
                header::RETRY_AFTER,
                HeaderValue::from(RETRY_IN_FLIGHT_AFTER_S),
            ),
        };
        problem.detail(detail).into_response()
    }
}

/// A valid `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// 1 to 255 printable ASCII characters (space included).
    pub fn parse(value: &HeaderValue) -> Result<Self, ReplayError> {
        let bytes = value.as_bytes();
        if bytes.is_empty()
            || bytes.len() > MAX_KEY_LEN
            || !bytes.iter().all(|b| (0x20..=0x7e).contains(b))
        {
            return Err(ReplayError::BadKey);
        }
        Ok(Self(String::from_utf8_lossy(bytes).into_owned()))
    }

    /// What names it in Redis: its hash, so a key's length or content never shapes ours.
    fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

/// What identifies "the same request": method, path with query, body.
fn fingerprint(method: &Method, path_and_query: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(method.as_str().as_bytes());
    hash.update([0]);
    hash.update(path_and_query.as_bytes());
    hash.update([0]);
    hash.update(body);
    hex::encode(hash.finalize())
}

/// Where a keyed request stands before it runs.
enum Prepared {
    /// Answered at the edge: a replay, or a refusal.
    Answer(Response),
    /// The first attempt: run it, then keep its answer under `record` and drop `lock`.
    First {
        req: Request,
        record: String,
        lock: String,
        fingerprint: String,
    },
    /// Redis is unreachable: run it without protection.
    Unprotected(Request),
}

/// A kept answer for this request: replayed when it is the same request, else refused.
fn answer_from(store: &ReplayStore, stored: Option<String>, fingerprint: &str) -> Option<Response> {
    let stored: Stored = serde_json::from_str(&stored?).ok()?;
    Some(if stored.fingerprint == fingerprint {
        store.metrics.replay("replayed");
        stored.into_response()
    } else {
        store.metrics.replay("mismatch");
        ReplayError::Mismatch.into_response()
    })
}

/// Whether `req` is a mutating request with an `Idempotency-Key`: the only kind [`guard`]
/// has anything to do with.
pub fn applies(req: &Request) -> bool {
    matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) && req.headers().contains_key(&IDEMPOTENCY_KEY)
}

/// Runs a keyed mutating request once (through `run`, the rest of the stack) and replays its
/// answer to repeats; any other request goes straight to `run`.
pub async fn guard<F, Fut>(store: &ReplayStore, req: Request, run: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    if !applies(&req) {
        return run(req).await;
    }
    let mut keys = req.headers().get_all(&IDEMPOTENCY_KEY).iter();
    let Some(value) = keys.next() else {
        return run(req).await;
    };
    if keys.next().is_some() {
        return ReplayError::BadKey.into_response();
    }
    let key = match IdempotencyKey::parse(value) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    match prepare(store, key, req).await {
        Prepared::Answer(response) => response,
        Prepared::Unprotected(req) => {
            store.metrics.replay("unprotected");
            run(req).await
        }
        Prepared::First {
            req,
            record,
            lock,
            fingerprint,
        } => {
            let response = run(req).await;
            finish(store, &record, &lock, fingerprint, response).await
        }
    }
}

/// Reads the body, then looks for a kept answer or claims the key with the in-flight marker.
async fn prepare(store: &ReplayStore, key: IdempotencyKey, req: Request) -> Prepared {
    let scope = req
        .extensions()
        .get::<Visitor>()
        .map_or_else(crate::session::unknown_scope, Visitor::scope);
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST_BODY).await else {
        return Prepared::Answer(ReplayError::BodyTooLarge.into_response());
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let fingerprint = fingerprint(&parts.method, path, &body);
    let record = store.redis.key(&format!("idem:{scope}:{}", key.digest()));
    let lock = format!("{record}:lock");
    let req = Request::from_parts(parts, Body::from(body));

    let unreachable = |e: lab_cache::redis::RedisError, req| {
        tracing::warn!(error = %e, "Redis is unreachable: a keyed request runs without replay protection");
        Prepared::Unprotected(req)
    };
    match store.get(&record).await {
        Ok(stored) => {
            if let Some(answer) = answer_from(store, stored, &fingerprint) {
                return Prepared::Answer(answer);
            }
        }
        Err(e) => return unreachable(e, req),
    }
    match store.mark(&lock, &fingerprint).await {
        Ok(true) => Prepared::First {
            req,
            record,
            lock,
            fingerprint,
        },
        Ok(false) => {
            // Either the first attempt finished in between, or it is still running.
            let kept = store.get(&record).await.ok().flatten();
            if let Some(answer) = answer_from(store, kept, &fingerprint) {
                return Prepared::Answer(answer);
            }
            let running = store.get(&lock).await.ok().flatten();
            Prepared::Answer(if running.is_some_and(|f| f != fingerprint) {
                store.metrics.replay("mismatch");
                ReplayError::Mismatch.into_response()
            } else {
                store.metrics.replay("in_flight");
                ReplayError::InFlight.into_response()
            })
        }
        Err(e) => unreachable(e, req),
    }
}

/// Keeps the first attempt's answer when it can be replayed, and frees the key when not.
async fn finish(
    store: &ReplayStore,
    record: &str,
    lock: &str,
    fingerprint: String,
    response: Response,
) -> Response {
    if response.status().is_server_error() {
        store.metrics.replay("not_kept");
        store.unmark(lock).await;
        return response;
    }
    let (parts, body) = response.into_parts();
    match buffer(body).await {
        Buffered::Whole(bytes) => {
            let stored = Stored {
                fingerprint,
                status: parts.status.as_u16(),
                headers: STORED_HEADERS
                    .iter()
                    .flat_map(|name| {
                        parts.headers.get_all(name).iter().filter_map(|v| {
                            v.to_str()
                                .ok()
                                .map(|v| (name.as_str().to_owned(), v.to_owned()))
                        })
                    })
                    .collect(),
                body: STANDARD.encode(&bytes),
            };
            store.metrics.replay("kept");
            store.keep(record, lock, &stored).await;
            Response::from_parts(parts, Body::from(bytes))
        }
        Buffered::TooLarge(body) => {
            tracing::info!(
                limit = MAX_STORED_BODY,
                "an answer to a keyed request is too large to keep; a repeat will run again"
            );
            store.metrics.replay("not_kept");
            store.unmark(lock).await;
            Response::from_parts(parts, body)
        }
        Buffered::Failed => {
            store.metrics.replay("not_kept");
            store.unmark(lock).await;
            Problem::new(StatusCode::BAD_GATEWAY)
                .detail("the answer broke off while it was being read")
                .into_response()
        }
    }
}

enum Buffered {
    /// The whole body, within [`MAX_STORED_BODY`].
    Whole(Bytes),
    /// Larger: what was read, followed by the rest, still streaming.
    TooLarge(Body),
    /// The body failed before its end.
    Failed,
}

/// Reads `body` up to [`MAX_STORED_BODY`] without losing what lies beyond.
async fn buffer(mut body: Body) -> Buffered {
    let mut read = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Buffered::Failed;
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        read.extend_from_slice(&data);
        if read.len() > MAX_STORED_BODY {
            let head = futures::stream::iter([Ok::<_, axum::Error>(Bytes::from(read))]);
            return Buffered::TooLarge(Body::from_stream(head.chain(body.into_data_stream())));
        }
    }
    Buffered::Whole(Bytes::from(read))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<IdempotencyKey, ReplayError> {
        let value = HeaderValue::from_bytes(bytes).unwrap_or_else(|e| panic!("{e}"));
        IdempotencyKey::parse(&value)
    }

    #[test]
    fn a_key_is_1_to_255_printable_characters() {
        assert!(parse(b"order-7f3a 2").is_ok());
        assert!(parse("k".repeat(255).as_bytes()).is_ok());
        assert!(matches!(parse(b""), Err(ReplayError::BadKey)));
        assert!(matches!(
            parse("k".repeat(256).as_bytes()),
            Err(ReplayError::BadKey)
        ));
        assert!(matches!(parse(b"caf\xc3\xa9"), Err(ReplayError::BadKey)));
        assert!(matches!(parse(b"tab\there"), Err(ReplayError::BadKey)));
    }

    #[test]
    fn the_fingerprint_changes_with_method_path_or_body_and_keys_hash_apart() {
        let base = fingerprint(&Method::POST, "/api/orders", b"{}");

        assert_eq!(base, fingerprint(&Method::POST, "/api/orders", b"{}"));
        assert_ne!(base, fingerprint(&Method::PUT, "/api/orders", b"{}"));
        assert_ne!(base, fingerprint(&Method::POST, "/api/orders?x=1", b"{}"));
        assert_ne!(base, fingerprint(&Method::POST, "/api/orders", b"{ }"));
        let (a, b) = (parse(b"a"), parse(b"b"));
        let (Ok(a), Ok(b)) = (a, b) else {
            panic!("valid keys")
        };
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.digest().len(), 64);
    }

    #[tokio::test]
    async fn a_body_beyond_the_limit_passes_through_whole() {
        let big = vec![7u8; MAX_STORED_BODY + 10];
        let chunks = big
            .chunks(4096)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>();
        let body = Body::from_stream(futures::stream::iter(chunks));

        let Buffered::TooLarge(rest) = buffer(body).await else {
            panic!("a large body must pass through")
        };

        let bytes = axum::body::to_bytes(rest, usize::MAX)
            .await
            .unwrap_or_default();
        assert_eq!(bytes.as_ref(), big.as_slice());
    }
}
