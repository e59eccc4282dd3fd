//! The browser-facing edge: CORS for the configured origins and the security headers on every
//! answer (`X-Content-Type-Options`, `Referrer-Policy`, a CSP on pages, HSTS behind TLS).

use std::time::Duration;

use axum::Router;
use axum::response::Response;
use http::{HeaderName, HeaderValue, Method, header};
use serde::{Deserialize, Serialize};
use tower::util::MapResponseLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// What the browser edge allows (`LAB_BFF__SECURITY__…`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SecuritySettings {
    /// Origins other than the BFF's own that may call the API from a browser, comma-separated
    /// (`https://lab.example,http://localhost:5173`); empty, the API is same-origin only.
    pub cors_origins: String,
    /// Whether the BFF is reached over TLS (directly or behind a terminating proxy): only then is
    /// `Strict-Transport-Security` sent, since over plain HTTP it would be ignored or lock a
    /// local run out.
    pub behind_tls: bool,
}

/// The pages load their own scripts, styles and images and talk only to the BFF (fetch and
/// SSE): nothing else is allowed, and no one may frame them.
const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// A year, OWASP's recommended minimum for HSTS; no `preload`, which is a commitment for the
/// domain's owner to make, not for the software.
const HSTS: &str = "max-age=31536000; includeSubDomains";

/// A browser may cache a preflight for this long (Chromium caps it at 2 h); 10 min keeps a
/// changed origin list from lingering.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Request headers the pages send cross-origin.
static ALLOWED_HEADERS: [HeaderName; 8] = [
    header::CONTENT_TYPE,
    header::AUTHORIZATION,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    HeaderName::from_static("idempotency-key"),
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
];

/// Response headers the pages read: the evidence the demos show.
static EXPOSED_HEADERS: [HeaderName; 10] = [
    header::ETAG,
    header::RETRY_AFTER,
    header::LOCATION,
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("x-instance-id"),
    HeaderName::from_static("x-upstream-instance-id"),
    HeaderName::from_static("x-cache"),
    HeaderName::from_static("idempotent-replayed"),
    HeaderName::from_static("ratelimit-limit"),
    HeaderName::from_static("ratelimit-remaining"),
];

/// Wraps `router` (platform middleware included) with CORS and the security headers.
pub fn layer(router: Router, settings: &SecuritySettings) -> Router {
    let origins: Vec<HeaderValue> = settings
        .cors_origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .filter_map(|o| match HeaderValue::from_str(o.trim_end_matches('/')) {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(
                    origin = o,
                    "ignoring a CORS origin that is not a header value"
                );
                None
            }
        })
        .collect();
    let mut router = router;
    if !origins.is_empty() {
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::PATCH,
                    Method::DELETE,
                ])
                .allow_headers(ALLOWED_HEADERS.clone())
                .expose_headers(EXPOSED_HEADERS.clone())
                // The session is a cookie.
                .allow_credentials(true)
                .max_age(PREFLIGHT_MAX_AGE),
        );
    }
    // The headers in one layer, not one `SetResponseHeaderLayer` each: axum layers every route
    // separately and clones and boxes each layer of a route per request (callgrind, `lab bench
    // bff`, session 6).
    let hsts = settings.behind_tls;
    router.layer(MapResponseLayer::new(move |mut response: Response| {
        secure(&mut response, hsts);
        response
    }))
}

/// The security headers on one answer: a CSP on a page and HSTS behind TLS when the handler set
/// none, `X-Content-Type-Options` always ours, `Referrer-Policy` unless the handler chose one.
fn secure(response: &mut Response, hsts: bool) {
    let csp = page_csp(response);
    let headers = response.headers_mut();
    if let Some(csp) = csp {
        headers
            .entry(header::CONTENT_SECURITY_POLICY)
            .or_insert(csp);
    }
    if hsts {
        headers
            .entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert(HeaderValue::from_static(HSTS));
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers
        .entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("strict-origin-when-cross-origin"));
}

/// The CSP for HTML answers; JSON and other data need none.
fn page_csp(response: &Response) -> Option<HeaderValue> {
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    html.then(|| HeaderValue::from_static(PAGE_CSP))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::response::Html;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    async fn answer(path: &str, settings: &SecuritySettings) -> Response {
        let router = Router::new()
            .route("/", get(|| async { Html("<h1>Lab</h1>") }))
            .route("/api/x", get(|| async { axum::Json(1) }));
        let request = http::Request::get(path)
            .body(Body::empty())
            .expect("a request");
        match layer(router, settings).oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    #[tokio::test]
    async fn a_page_gets_the_csp_and_an_api_answer_does_not() {
        let settings = SecuritySettings::default();

        let page = answer("/", &settings).await;
        let api = answer("/api/x", &settings).await;

        assert_eq!(page.headers()[header::CONTENT_SECURITY_POLICY], PAGE_CSP);
        assert!(api.headers().get(header::CONTENT_SECURITY_POLICY).is_none());
        for response in [&page, &api] {
            assert_eq!(
                response.headers()[header::X_CONTENT_TYPE_OPTIONS],
                "nosniff"
            );
            assert!(response.headers().contains_key(header::REFERRER_POLICY));
            assert!(
                !response
                    .headers()
                    .contains_key(header::STRICT_TRANSPORT_SECURITY)
            );
        }
    }

    #[tokio::test]
    async fn behind_tls_every_answer_carries_hsts() {
        let settings = SecuritySettings {
            behind_tls: true,
            ..SecuritySettings::default()
        };

        let api = answer("/api/x", &settings).await;

        assert_eq!(api.headers()[header::STRICT_TRANSPORT_SECURITY], HSTS);
    }
}
