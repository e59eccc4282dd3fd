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

impl SecuritySettings {
    /// Whether any origin besides the BFF's own is allowed: then every answer goes through the
    /// CORS layer, and the BFF's own front (`crate::proxy::Front`) stands aside.
    pub fn cross_origin(&self) -> bool {
        self.origins().next().is_some()
    }

    /// The configured origins, trimmed, empty entries skipped.
    fn origins(&self) -> impl Iterator<Item = &str> {
        self.cors_origins
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
    }
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
        .origins()
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
    let html = is_html(
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(HeaderValue::as_bytes),
    );
    let headers = response.headers_mut();
    let wanted = security_headers(html, |name| headers.contains_key(name), hsts);
    for (name, value) in wanted.into_iter().flatten() {
        headers.insert(name, value);
    }
}

/// The headers [`secure`] sets on an answer whose `Content-Type` is HTML or not and which has
/// the headers `has` says it has; each replaces any of the same name (only
/// `X-Content-Type-Options` ever does: the others are given only where the answer has none).
/// One rule for the router's answers and for the proxy's fast path (`proxy/front.rs`).
pub(crate) fn security_headers(
    html: bool,
    has: impl Fn(&HeaderName) -> bool,
    hsts: bool,
) -> [Option<(HeaderName, HeaderValue)>; 4] {
    let missing = |name: HeaderName, value: &'static str| {
        (!has(&name)).then(|| (name, HeaderValue::from_static(value)))
    };
    [
        html.then(|| missing(header::CONTENT_SECURITY_POLICY, PAGE_CSP))
            .flatten(),
        hsts.then(|| missing(header::STRICT_TRANSPORT_SECURITY, HSTS))
            .flatten(),
        Some((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        )),
        missing(header::REFERRER_POLICY, "strict-origin-when-cross-origin"),
    ]
}

/// Whether a `Content-Type` is a page's (which gets the CSP); JSON and other data need none.
pub(crate) fn is_html(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|v| v.starts_with(b"text/html"))
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
