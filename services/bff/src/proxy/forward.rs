//! One proxied request: the body checked against the limit (and kept for a retry when small),
//! the call made through the upstream's resilience stack, and the answer streamed back or the
//! failed hop turned into the gateway's problem.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, Uri, header};
use http_body_util::{BodyExt, Limited};
use lab_http::{PROBLEM_JSON, Problem};
use lab_resilience::{CallPolicy, Failure, Outcome, Replay, call};

use super::Inner;
use super::headers;
use super::pool::Returning;
use super::routes::{Route, Timeouts};

/// Bodies up to this size with a declared length are held in memory so a failed attempt can be
/// sent again (Envoy buffers for retries the same way); the services' JSON commands are well
/// under it. Longer or chunked bodies stream through and get one attempt.
const REPLAY_BUFFER_LIMIT: u64 = 64 * 1024;

/// An upstream's answer, judged by `lab-resilience`: a 5xx counts against the replica.
struct Answer(http::Response<Returning>);

impl Outcome for Answer {
    fn failure(&self) -> Option<Failure> {
        judged(self.0.status())
    }
}

/// How `lab-resilience` judges an upstream's answer with `status`: a 5xx counts against the
/// replica (the router's proxy and the fast path alike).
pub(super) fn judged(status: StatusCode) -> Option<Failure> {
    status
        .is_server_error()
        .then_some(Failure::UpstreamStatus(status))
}

/// The gateway's answer for a failed hop to `service`, logged once.
pub(super) fn failed(service: &str, failure: &Failure) -> Response {
    tracing::warn!(service, %failure, "upstream failed");
    failure.problem(service).into_response()
}

pub(super) async fn forward(proxy: &Inner, route: &'static Route, request: Request) -> Response {
    let Some(upstream) = proxy.upstreams.get(route.service) else {
        return Failure::NoEndpoint.problem(route.service).into_response();
    };
    let (parts, body) = request.into_parts();
    let declared = http_body::Body::size_hint(&body).exact();
    if declared.is_some_and(|length| length > proxy.body_limit) {
        return too_large(proxy.body_limit);
    }
    let method = parts.method;
    let mut head = parts.headers;
    let keyed = head.contains_key("idempotency-key");
    headers::to_upstream(&mut head);
    headers::set_customer(&mut head, parts.extensions.get::<crate::session::Visitor>());
    let (prefix, rest) = route.upstream_path(parts.uri.path());
    let query = parts.uri.query();
    let mut path =
        String::with_capacity(prefix.len() + rest.len() + query.map_or(0, |q| q.len() + 1));
    path.push_str(prefix);
    path.push_str(rest);
    if let Some(query) = query {
        path.push('?');
        path.push_str(query);
    }
    // Origin form (`/path?query`): the connection is already the endpoint's, and the pool sets
    // `Host`. Made once from the `String` itself (`parse` on a `&str` would copy it), then
    // shared by every attempt.
    let uri = match Uri::try_from(path) {
        Ok(uri) => uri,
        Err(e) => {
            return Problem::typed(StatusCode::BAD_REQUEST, "bad-path", "Bad request path")
                .detail(e.to_string())
                .into_response();
        }
    };

    // A small body of known length is read first so it can be replayed; the rest stream.
    let (buffered, mut streamed, replay) = match declared {
        Some(length) if length <= REPLAY_BUFFER_LIMIT => {
            let bytes = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) => {
                    let failure = Failure::RequestBody {
                        too_large: false,
                        detail: e.to_string(),
                    };
                    return failure.problem(route.service).into_response();
                }
            };
            let replay = if is_idempotent(&method) || keyed {
                Replay::Safe
            } else {
                Replay::UnsentOnly
            };
            (Some(bytes), None, replay)
        }
        _ => {
            let limited = Body::new(Limited::new(body, limit_usize(proxy.body_limit)));
            (None, Some(limited), Replay::Never)
        }
    };

    let policy = policy_for(route, &proxy.policy);
    let result = call(upstream, &policy, replay, |endpoint| {
        let body = match &buffered {
            Some(bytes) => Body::from(Bytes::clone(bytes)),
            None => streamed.take().unwrap_or_else(Body::empty),
        };
        // A streamed request has one attempt: it takes the headers instead of copying them.
        let headers = match replay {
            Replay::Never => std::mem::take(&mut head),
            _ => head.clone(),
        };
        let sent = match proxy.pools.get(endpoint) {
            Some(pool) => Ok((pool, build(&method, &uri, headers, body))),
            None => Err(Failure::NoEndpoint),
        };
        async move {
            let (pool, request) = sent?;
            pool.send(request).await.map(Answer)
        }
    })
    .await;

    match result {
        Ok(Answer(response)) => {
            let (mut parts, body) = response.into_parts();
            if parts.status.is_server_error() && !is_problem(&parts.headers) {
                return failed(route.service, &Failure::UpstreamStatus(parts.status));
            }
            headers::to_caller(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(
            failure @ Failure::RequestBody {
                too_large: true, ..
            },
        ) => {
            tracing::warn!(service = route.service, %failure, "upstream failed");
            too_large(proxy.body_limit)
        }
        Err(failure) => failed(route.service, &failure),
    }
}

pub(super) fn policy_for(route: &Route, standard: &CallPolicy) -> CallPolicy {
    match route.timeouts {
        Timeouts::Standard => *standard,
        Timeouts::Demo => {
            let (attempt, total) = Timeouts::DEMO;
            standard.with_timeouts(attempt, total)
        }
    }
}

fn build(method: &Method, uri: &Uri, headers: HeaderMap, body: Body) -> http::Request<Body> {
    let mut request = http::Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri.clone();
    *request.headers_mut() = headers;
    request
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn is_problem(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| is_problem_type(v.as_bytes()))
}

/// Whether a `Content-Type` value is a problem document's.
pub(super) fn is_problem_type(content_type: &[u8]) -> bool {
    content_type.starts_with(PROBLEM_JSON.as_bytes())
}

fn too_large(limit: u64) -> Response {
    Problem::typed(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        "Request body too large",
    )
    .detail(format!("request bodies are limited to {limit} bytes"))
    .with("limit_bytes", limit)
    .into_response()
}

fn limit_usize(limit: u64) -> usize {
    usize::try_from(limit).unwrap_or(usize::MAX)
}
