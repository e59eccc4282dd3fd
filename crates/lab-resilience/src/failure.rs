//! Why an outbound call failed, classified once, and the one table that turns each kind into
//! the gateway's answer (linkerd2-proxy's shape: timeout 504, unavailable 503, bad upstream 502).

use std::time::Duration;

use http::{HeaderValue, StatusCode, header};
use lab_http::Problem;

/// A failed hop. An upstream's own error response is not a `Failure` unless it is a 5xx that
/// is not problem+json (see [`Failure::UpstreamStatus`]): the service's problem passes through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// No answer within the attempt's or the call's time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// No connection could be made: nothing was sent.
    #[error("connection refused: {0}")]
    Refused(String),
    /// The connection broke after the request may have been sent.
    #[error("connection lost: {0}")]
    Reset(String),
    /// Every endpoint's breaker is open.
    #[error("circuit open, retry after {retry_after:?}")]
    Open { retry_after: Duration },
    /// The upstream answered 5xx without a problem document (a broken hop, not the service
    /// explaining itself).
    #[error("upstream answered {0}")]
    UpstreamStatus(StatusCode),
    /// No endpoint is configured for the service.
    #[error("no endpoint configured")]
    NoEndpoint,
    /// A fault injected on purpose (chaos, a demo) answered for the upstream; `trips_breaker`
    /// says whether it counts against the endpoint.
    #[error("injected fault: {status}")]
    Injected {
        status: StatusCode,
        trips_breaker: bool,
    },
    /// The caller's own request body failed (too large, or the upload broke off): the caller's
    /// fault, not the upstream's.
    #[error("request body: {detail}")]
    RequestBody { too_large: bool, detail: String },
}

impl Failure {
    /// The table: every failure's status at the gateway.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Refused(_) | Self::Reset(_) | Self::Open { .. } | Self::NoEndpoint => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::UpstreamStatus(_) => StatusCode::BAD_GATEWAY,
            Self::Injected { status, .. } => *status,
            Self::RequestBody {
                too_large: true, ..
            } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestBody { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// The problem slug: what a client may branch on.
    fn slug(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "upstream-timeout",
            Self::Refused(_) => "upstream-refused",
            Self::Reset(_) => "upstream-reset",
            Self::Open { .. } => "circuit-open",
            Self::UpstreamStatus(_) => "bad-gateway",
            Self::NoEndpoint => "no-upstream",
            Self::Injected { .. } => "injected-fault",
            Self::RequestBody { .. } => "request-body",
        }
    }

    /// Whether the request may have reached the upstream (so retrying it could repeat its effect).
    pub fn maybe_sent(&self) -> bool {
        !matches!(
            self,
            Self::Refused(_) | Self::Open { .. } | Self::NoEndpoint
        )
    }

    /// Whether it says something about the endpoint's health (counts against its breaker).
    pub fn counts_against_upstream(&self) -> bool {
        match self {
            Self::Injected { trips_breaker, .. } => *trips_breaker,
            other => !matches!(
                other,
                Self::RequestBody { .. } | Self::Open { .. } | Self::NoEndpoint
            ),
        }
    }

    /// Whether another attempt could go differently.
    pub fn transient(&self) -> bool {
        match self {
            Self::UpstreamStatus(status) => matches!(
                *status,
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            ),
            // As the real failure would be: another attempt may be spared.
            Self::Injected { .. } => true,
            other => other.counts_against_upstream(),
        }
    }

    /// The gateway's problem+json for this failure on a call to `service`, with `Retry-After`
    /// when the breaker says when to come back.
    pub fn problem(&self, service: &str) -> Problem {
        let title = match self.status() {
            StatusCode::GATEWAY_TIMEOUT => "Upstream timed out",
            StatusCode::BAD_GATEWAY => "Bad upstream response",
            StatusCode::PAYLOAD_TOO_LARGE => "Request body too large",
            StatusCode::BAD_REQUEST => "Bad request body",
            _ if matches!(self, Self::Injected { .. }) => "Injected upstream failure",
            _ => "Upstream unavailable",
        };
        let problem = Problem::typed(self.status(), self.slug(), title)
            .detail(format!("{service}: {self}"))
            .with("upstream", service);
        match self {
            Self::Open { retry_after } => {
                // Rounded up: "0" would invite an immediate retry into the same open breaker.
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                problem
                    .with("retry_after_ms", retry_after.as_millis() as u64)
                    .header(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)))
            }
            _ => problem,
        }
    }
}
