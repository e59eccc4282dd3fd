use super::*;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Fixed(&'static str, bool, Result<(), String>);

impl Probe for Fixed {
    fn name(&self) -> &str {
        self.0
    }
    fn critical(&self) -> bool {
        self.1
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        let r = self.2.clone();
        Box::pin(async move { r })
    }
}

fn app(readiness: Readiness) -> Router {
    let routes = Router::new().route("/boom", get(boom)).route(
        "/echo",
        axum::routing::post(|Json(v): Json<serde_json::Value>| async move { Json(v) }),
    );
    ServiceApp {
        name: "test",
        instance_id: "test-1-abcd".into(),
        metrics: Metrics::default(),
        readiness,
        openapi: utoipa::openapi::OpenApiBuilder::new().build(),
    }
    .router(routes)
}

async fn call(
    app: Router,
    req: http::Request<axum::body::Body>,
) -> (StatusCode, http::HeaderMap, serde_json::Value) {
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, body)
}

fn get_req(path: &str) -> http::Request<axum::body::Body> {
    http::Request::get(path)
        .body(axum::body::Body::empty())
        .unwrap()
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem_with_both_ids() {
    let (status, headers, body) = call(app(Readiness::new()), get_req("/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_JSON);
    assert_eq!(body["status"], 404);
    assert_eq!(headers[&X_INSTANCE_ID], "test-1-abcd");
    assert!(!headers[&X_REQUEST_ID].is_empty());
}

#[tokio::test]
async fn the_callers_request_id_is_kept_and_a_forged_one_replaced() {
    let req = http::Request::get("/livez")
        .header("x-request-id", "abc-123")
        .body(axum::body::Body::empty())
        .unwrap();
    let (_, headers, _) = call(app(Readiness::new()), req).await;
    assert_eq!(headers[&X_REQUEST_ID], "abc-123");
    let req = http::Request::get("/livez")
        .header("x-request-id", "a b\tc")
        .body(axum::body::Body::empty())
        .unwrap();
    let (_, headers, _) = call(app(Readiness::new()), req).await;
    assert_ne!(headers[&X_REQUEST_ID], "a b\tc");
}

#[tokio::test]
async fn a_panicking_handler_answers_a_500_problem() {
    let (status, headers, body) = call(app(Readiness::new()), get_req("/boom")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_JSON);
    assert_eq!(body["status"], 500);
}

#[tokio::test]
async fn a_malformed_body_is_a_400_problem_and_a_wrong_method_a_405() {
    let req = http::Request::post("/echo")
        .header("content-type", "application/json")
        .body(axum::body::Body::from("{nope"))
        .unwrap();
    let (status, headers, _) = call(app(Readiness::new()), req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_JSON);
    let (status, headers, _) = call(app(Readiness::new()), get_req("/echo")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_JSON);
}

#[tokio::test]
async fn readiness_is_503_when_a_critical_probe_fails_and_degraded_otherwise() {
    let down = Readiness::new()
        .with(Fixed("postgres", true, Err("connection refused".into())))
        .with(Fixed("redis", false, Ok(())));
    let (status, _, body) = call(app(down), get_req("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"][0]["reason"], "connection refused");

    let degraded = Readiness::new()
        .with(Fixed("postgres", true, Ok(())))
        .with(Fixed("redis", false, Err("down".into())));
    let (status, _, body) = call(app(degraded), get_req("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "degraded");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_openapi_lists_platform_routes() {
    let app = app(Readiness::new());
    let _ = call(app.clone(), get_req("/livez")).await;
    let resp = app.clone().oneshot(get_req("/metrics")).await.unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("http_requests_total{method=\"GET\",route=\"/livez\",status=\"200\"} 1"),
        "{text}"
    );
    let (_, _, doc) = call(app, get_req("/openapi.json")).await;
    assert!(doc["paths"]["/readyz"].is_object());
}

async fn boom() -> &'static str {
    panic!("kaboom")
}
