//! One proxied request: the body checked against the limit (and kept for a retry when small),
//! the call made through the upstream's resilience stack, and the answer streamed back or the
//! failed hop turned into the gateway's problem.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, Uri, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use lab_http::{PROBLEM_JSON, Problem};
use lab_resilience::{CallPolicy, Failure, Outcome, Replay, call};

use super::Inner;
use super::headers;
use super::routes::{Route, Timeouts};

/// Bodies up to this size with a declared length are held in memory so a failed attempt can be
/// sent again (Envoy buffers for retries the same way); the services' JSON commands are well
/// under it. Longer or chunked bodies stream through and get one attempt.
const REPLAY_BUFFER_LIMIT: u64 = 64 * 1024;

/// An upstream's answer, judged by `lab-resilience`: a 5xx counts against the replica.
struct Answer(http::Response<Incoming>);

impl Outcome for Answer {
    fn failure(&self) -> Option<Failure> {
        let status = self.0.status();
        status
            .is_server_error()
            .then_some(Failure::UpstreamStatus(status))
    }
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
    let path = match parts.uri.query() {
        Some(query) => format!("{prefix}{rest}?{query}"),
        None => format!("{prefix}{rest}"),
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
        let sent = build(&method, endpoint, &path, headers, body)
            .map(|request| proxy.client.request(request));
        async move {
            match sent {
                Ok(response) => response.await.map(Answer).map_err(classify),
                Err(failure) => Err(failure),
            }
        }
    })
    .await;

    match result {
        Ok(Answer(response)) => {
            let (mut parts, body) = response.into_parts();
            if parts.status.is_server_error() && !is_problem(&parts.headers) {
                let failure = Failure::UpstreamStatus(parts.status);
                tracing::warn!(service = route.service, %failure, "upstream failed");
                return failure.problem(route.service).into_response();
            }
            headers::to_caller(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(failure) => {
            tracing::warn!(service = route.service, %failure, "upstream failed");
            if let Failure::RequestBody {
                too_large: true, ..
            } = failure
            {
                return too_large(proxy.body_limit);
            }
            failure.problem(route.service).into_response()
        }
    }
}

fn policy_for(route: &Route, standard: &CallPolicy) -> CallPolicy {
    match route.timeouts {
        Timeouts::Standard => *standard,
        Timeouts::Demo => {
            let (attempt, total) = Timeouts::DEMO;
            standard.with_timeouts(attempt, total)
        }
    }
}

fn build(
    method: &Method,
    endpoint: &str,
    path: &str,
    headers: HeaderMap,
    body: Body,
) -> Result<http::Request<Body>, Failure> {
    let mut target = String::with_capacity(endpoint.len() + path.len());
    target.push_str(endpoint);
    target.push_str(path);
    // From the `String` itself: `parse` on a `&str` would copy it again.
    let uri = Uri::try_from(target)
        .map_err(|e| Failure::Refused(format!("bad upstream address {endpoint}: {e}")))?;
    let mut request = http::Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Turns a client error into the failure kind the table knows.
fn classify(error: hyper_util::client::legacy::Error) -> Failure {
    let detail = chain(&error);
    if error.is_connect() {
        return Failure::Refused(detail);
    }
    let mut too_large = false;
    let mut body_failed = false;
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        too_large |= cause.is::<LengthLimitError>();
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

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn is_problem(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON))
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
