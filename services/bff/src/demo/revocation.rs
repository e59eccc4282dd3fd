//! `POST /api/demo/jti-revocation`: a throwaway account signs in at identity, its access token is
//! accepted by catalog and orders, then it logs out — identity writes the token's `jti` to Redis
//! and publishes it — and the demo measures how long each service keeps accepting the token. The
//! pattern holds when both refuse it within a second. The token itself never leaves the BFF.

use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::State;
use lab_http::{Json, Problem};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{DemoReport, Run, instance_of, upstream, upstream_failed};
use crate::AppState;
use crate::session::Visitor;

/// The promise: refused everywhere within a second of logout.
const WITHIN: Duration = Duration::from_secs(1);
/// How long the demo keeps asking before it calls the pattern broken.
const GIVE_UP_AFTER: Duration = Duration::from_secs(5);
/// Polling period after logout: fine enough to measure well under the promise.
const POLL: Duration = Duration::from_millis(10);
/// Throwaway accounts' password; the accounts are never used again.
const PASSWORD: &str = "demo password of a throwaway account";

/// Signs in, logs out, and times each service's refusal of the revoked token.
#[utoipa::path(post, path = "/api/demo/jti-revocation", tag = "demo", responses(
    (status = 200, body = super::DemoReport), (status = 502, body = lab_http::Problem),
    (status = 503, body = lab_http::Problem)))]
pub(crate) async fn run_revocation(
    State(state): State<AppState>,
    visitor: Option<Extension<Visitor>>,
) -> Result<Json<DemoReport>, Problem> {
    let identity = upstream(&state, "identity")?;
    let probes = [
        ("catalog", upstream(&state, "catalog")?),
        ("orders", upstream(&state, "orders")?),
    ];
    let mut run = Run::new(
        &state,
        "jti-revocation",
        visitor.map(|Extension(v)| v.session.to_string()),
    );
    let http = &state.http;
    let email = format!("demo-{}@lab.invalid", Uuid::now_v7());
    let credentials = json!({ "email": email, "password": PASSWORD });
    let registered = http
        .post(format!("{identity}/register"))
        .json(&credentials)
        .send()
        .await
        .map_err(|e| upstream_failed("identity", "registering", e))?;
    if !registered.status().is_success() {
        let status = registered.status();
        return Err(upstream_failed("identity", "registering", status));
    }
    let login = http
        .post(format!("{identity}/login"))
        .json(&credentials)
        .send()
        .await
        .map_err(|e| upstream_failed("identity", "signing in", e))?;
    let instance = instance_of(&login);
    let tokens: Value = login
        .json()
        .await
        .map_err(|e| upstream_failed("identity", "signing in", e))?;
    let access = tokens["access_token"]
        .as_str()
        .ok_or_else(|| upstream_failed("identity", "signing in", "no access token"))?
        .to_owned();
    run.step(
        "a throwaway account signed in",
        instance,
        json!({ "token": "(kept by the BFF)" }),
    );

    for (service, url) in &probes {
        let (status, instance) = probe(http, service, url, &access).await?;
        run.step(
            format!("{service} accepted the token ({status})"),
            instance,
            json!({ "status": status }),
        );
        if status == 401 {
            return Ok(Json(run.finish(
                None,
                false,
                format!("{service} refused a fresh token before logout"),
                json!({}),
            )));
        }
    }

    let logout = http
        .post(format!("{identity}/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .map_err(|e| upstream_failed("identity", "logging out", e))?;
    let logged_out = Instant::now();
    run.step(
        format!("logged out ({})", logout.status().as_u16()),
        instance_of(&logout),
        json!({}),
    );

    let mut refusals = serde_json::Map::new();
    let mut held = logout.status().is_success();
    for (service, url) in &probes {
        let refused_after = loop {
            let (status, _) = probe(http, service, url, &access).await?;
            let waited = logged_out.elapsed();
            if status == 401 {
                break Some(waited);
            }
            if waited > GIVE_UP_AFTER {
                break None;
            }
            tokio::time::sleep(POLL).await;
        };
        let ms = refused_after.map(|d| d.as_secs_f64() * 1_000.0);
        held &= refused_after.is_some_and(|d| d <= WITHIN);
        run.step(
            match ms {
                Some(ms) => format!("{service} refused the revoked token {ms:.0} ms after logout"),
                None => format!(
                    "{service} still accepted it {} s after logout",
                    GIVE_UP_AFTER.as_secs()
                ),
            },
            None,
            json!({ "refused_after_ms": ms }),
        );
        refusals.insert((*service).to_owned(), json!(ms));
    }
    let summary = format!(
        "after logout: {} (promise: within {} ms)",
        refusals
            .iter()
            .map(|(s, ms)| match ms.as_f64() {
                Some(ms) => format!("{s} refused in {ms:.0} ms"),
                None => format!("{s} never refused"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        WITHIN.as_millis()
    );
    Ok(Json(run.finish(
        None,
        held,
        summary,
        json!({ "refused_after_ms": refusals }),
    )))
}

/// A call each service authenticates before anything else: catalog's product creation (a
/// valid non-admin token gets past authentication and is stopped later: 403/422) and orders'
/// order lookup (a valid token gets 404 for an order that does not exist). 401 = refused.
async fn probe(
    http: &reqwest::Client,
    service: &str,
    url: &str,
    token: &str,
) -> Result<(u16, Option<String>), Problem> {
    let request = match service {
        "catalog" => http.post(format!("{url}/products")).json(&json!({})),
        _ => http.get(format!("{url}/orders/{}", Uuid::now_v7())),
    };
    let response = request
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| upstream_failed(service, "presenting the token", e))?;
    Ok((response.status().as_u16(), instance_of(&response)))
}
