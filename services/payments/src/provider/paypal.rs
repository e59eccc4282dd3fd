//! The PayPal adapter: Orders v2 with intent `AUTHORIZE`, then the authorization's capture or
//! void and the capture's refund (JSON, OAuth2 client-credentials token, `PayPal-Request-Id` on
//! every POST). Amounts cross as decimal strings, converted exactly ([`crate::money`]).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use lab_config::SecretString;
use lab_contracts::Money;
use reqwest::Client;
use serde_json::{Value, json};

use super::http::{self, Answer, RetryPolicy, text};
use super::{Done, Provider, ProviderError, Session, SessionRequest, idempotency_key};
use crate::money;
use crate::state::PaymentState;
use crate::store::Payment;

const NAME: &str = "paypal";

/// A token is renewed this long before PayPal says it expires, so a call never carries one that
/// dies in flight.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// A PayPal client.
pub struct PayPal {
    /// Shared connection pool.
    http: Client,
    /// `https://api-m.paypal.com` or the PSP's `…/paypal`.
    base: String,
    /// OAuth2 client id.
    client_id: String,
    /// OAuth2 client secret.
    client_secret: SecretString,
    /// Attempts and timeout per call.
    policy: RetryPolicy,
    /// The current access token and when to renew it; the lock is never held across a call.
    token: Mutex<Option<(String, Instant)>>,
}

impl PayPal {
    pub fn new(
        http: Client,
        base: &str,
        client_id: String,
        client_secret: SecretString,
        policy: RetryPolicy,
    ) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            client_id,
            client_secret,
            policy,
            token: Mutex::new(None),
        }
    }

    async fn token(&self) -> Result<String, ProviderError> {
        let cached = self
            .token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some((token, renew_at)) = cached
            && Instant::now() < renew_at
        {
            return Ok(token);
        }
        let url = format!("{}/v1/oauth2/token", self.base);
        let answer = http::send(NAME, self.policy, || {
            self.http
                .post(&url)
                .basic_auth(&self.client_id, Some(self.client_secret.expose()))
                .form(&[("grant_type", "client_credentials")])
        })
        .await?;
        let body = ok(answer)?;
        let token = text(&body, "/access_token").ok_or_else(|| missing("access_token"))?;
        let lifetime = Duration::from_secs(body["expires_in"].as_u64().unwrap_or(0));
        let renew_at = Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN);
        *self.token.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((token.clone(), renew_at));
        Ok(token)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: &Value,
    ) -> Result<Value, ProviderError> {
        let token = self.token().await?;
        let url = format!("{}{path}", self.base);
        let answer = http::send(NAME, self.policy, || {
            let mut request = self.http.request(method.clone(), &url).bearer_auth(&token);
            if let Some(key) = key {
                request = request.header("PayPal-Request-Id", key).json(body);
            }
            request
        })
        .await?;
        if answer.status == reqwest::StatusCode::UNAUTHORIZED {
            // The token was revoked or the PSP restarted: forget it so the retry gets a new one.
            *self.token.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        ok(answer)
    }
}

/// The body of a 2xx; a PayPal error otherwise.
fn ok(answer: Answer) -> Result<Value, ProviderError> {
    answer.success(NAME, |body| {
        let code = text(body, "/name")
            .or_else(|| text(body, "/error"))
            .unwrap_or_default();
        let message = text(body, "/message")
            .or_else(|| text(body, "/details/0/description"))
            .unwrap_or_default();
        (code, message)
    })
}

fn missing(what: &str) -> ProviderError {
    ProviderError::Protocol {
        provider: NAME,
        reason: format!("no {what} in the answer"),
    }
}

/// PayPal's `{currency_code, value}` as minor units; `None` when absent or not exact.
pub fn money(amount: &Value) -> Option<Money> {
    let currency = amount.get("currency_code")?.as_str()?.to_ascii_uppercase();
    let minor = money::parse_decimal(amount.get("value")?.as_str()?, &currency).ok()?;
    Some(Money {
        amount_minor: minor,
        currency,
    })
}

fn amount_json(amount: &Money) -> Result<Value, ProviderError> {
    let value = money::format_decimal(amount.amount_minor, &amount.currency).map_err(|e| {
        ProviderError::Refused {
            provider: NAME,
            status: 0,
            code: "INVALID_AMOUNT".into(),
            message: e.to_string(),
        }
    })?;
    Ok(json!({"currency_code": amount.currency.to_ascii_uppercase(), "value": value}))
}

impl PayPal {
    async fn do_create(&self, r: &SessionRequest) -> Result<Session, ProviderError> {
        let order = r.order_id.to_string();
        let body = json!({
            "intent": "AUTHORIZE",
            "purchase_units": [{
                "reference_id": order,
                "custom_id": order,
                "amount": amount_json(&r.amount)?,
            }],
        });
        let key = idempotency_key(r.order_id, "create-session");
        let answer = self
            .call(
                reqwest::Method::POST,
                "/v2/checkout/orders",
                Some(&key),
                &body,
            )
            .await?;
        let approve = answer["links"].as_array().and_then(|links| {
            links
                .iter()
                .find(|l| l["rel"] == "approve")
                .and_then(|l| text(l, "/href"))
        });
        Ok(Session {
            session_id: text(&answer, "/id").ok_or_else(|| missing("id"))?,
            payment_url: approve.ok_or_else(|| missing("approve link"))?,
            intent_id: None,
        })
    }

    /// The payment's authorization id, asked of the order when no webhook has told us yet.
    async fn authorization(&self, p: &Payment) -> Result<String, ProviderError> {
        if let Some(id) = &p.authorization_id {
            return Ok(id.clone());
        }
        let order = p.session_id.as_deref().ok_or_else(|| missing("order id"))?;
        let path = format!("/v2/checkout/orders/{order}");
        let body = self
            .call(reqwest::Method::GET, &path, None, &Value::Null)
            .await?;
        text(&body, "/purchase_units/0/payments/authorizations/0/id").ok_or_else(|| {
            ProviderError::Refused {
                provider: NAME,
                status: 0,
                code: "NOT_AUTHORIZED".into(),
                message: format!("order {order} has no authorization"),
            }
        })
    }

    async fn do_capture(&self, p: &Payment, amount: &Money) -> Result<Done, ProviderError> {
        let authorization = self.authorization(p).await?;
        let key = idempotency_key(p.order_id, "capture");
        let path = format!("/v2/payments/authorizations/{authorization}/capture");
        let body = json!({"amount": amount_json(amount)?, "final_capture": true});
        let answer = self
            .call(reqwest::Method::POST, &path, Some(&key), &body)
            .await?;
        Ok(Done {
            id: text(&answer, "/id"),
            amount: money(&answer["amount"]),
        })
    }

    async fn do_void(&self, p: &Payment) -> Result<Done, ProviderError> {
        if p.state() == PaymentState::SessionCreated && p.authorization_id.is_none() {
            // An unapproved PayPal order has nothing to cancel: it lapses by itself, and with
            // the payment voided here a late approval is voided when it arrives.
            return Ok(Done::default());
        }
        let authorization = self.authorization(p).await?;
        let key = idempotency_key(p.order_id, "void");
        let path = format!("/v2/payments/authorizations/{authorization}/void");
        self.call(reqwest::Method::POST, &path, Some(&key), &json!({}))
            .await?;
        Ok(Done {
            id: Some(authorization),
            amount: None,
        })
    }

    async fn do_refund(&self, p: &Payment) -> Result<Done, ProviderError> {
        let capture = p
            .capture_id
            .as_deref()
            .ok_or_else(|| missing("capture id"))?;
        let key = idempotency_key(p.order_id, "refund");
        let path = format!("/v2/payments/captures/{capture}/refund");
        let answer = self
            .call(reqwest::Method::POST, &path, Some(&key), &json!({}))
            .await?;
        Ok(Done {
            id: text(&answer, "/id"),
            amount: money(&answer["amount"]),
        })
    }
}

impl Provider for PayPal {
    fn name(&self) -> &'static str {
        NAME
    }

    fn create_session<'a>(
        &'a self,
        request: &'a SessionRequest,
    ) -> BoxFuture<'a, Result<Session, ProviderError>> {
        Box::pin(self.do_create(request))
    }

    fn capture<'a>(
        &'a self,
        payment: &'a Payment,
        amount: &'a Money,
    ) -> BoxFuture<'a, Result<Done, ProviderError>> {
        Box::pin(self.do_capture(payment, amount))
    }

    fn void<'a>(&'a self, payment: &'a Payment) -> BoxFuture<'a, Result<Done, ProviderError>> {
        Box::pin(self.do_void(payment))
    }

    fn refund<'a>(&'a self, payment: &'a Payment) -> BoxFuture<'a, Result<Done, ProviderError>> {
        Box::pin(self.do_refund(payment))
    }
}
