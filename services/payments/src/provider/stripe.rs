//! The Stripe adapter: Checkout Sessions with manual capture, payment intents, refunds
//! (form-encoded, bearer secret key, `Idempotency-Key` on every POST).

use futures::future::BoxFuture;
use lab_config::SecretString;
use lab_contracts::Money;
use reqwest::Client;
use serde_json::Value;

use super::http::{self, Answer, RetryPolicy, text};
use super::{Done, Provider, ProviderError, Session, SessionRequest, idempotency_key};
use crate::state::PaymentState;
use crate::store::Payment;

const NAME: &str = "stripe";

/// A Stripe client.
pub struct Stripe {
    /// Shared connection pool.
    http: Client,
    /// `https://api.stripe.com` or the PSP's `…/stripe`.
    base: String,
    /// The secret API key.
    secret_key: SecretString,
    /// Attempts and timeout per call.
    policy: RetryPolicy,
}

impl Stripe {
    pub fn new(http: Client, base: &str, secret_key: SecretString, policy: RetryPolicy) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            secret_key,
            policy,
        }
    }

    /// POSTs `form` to `path` with `key` as the idempotency key.
    async fn post(
        &self,
        path: &str,
        key: &str,
        form: &[(&str, String)],
    ) -> Result<Value, ProviderError> {
        let url = format!("{}{path}", self.base);
        let answer = http::send(NAME, self.policy, || {
            self.http
                .post(&url)
                .bearer_auth(self.secret_key.expose())
                .header("Idempotency-Key", key)
                .form(form)
        })
        .await?;
        ok(answer)
    }
}

/// The body of a 2xx; a Stripe error otherwise.
fn ok(answer: Answer) -> Result<Value, ProviderError> {
    answer.success(NAME, |body| {
        let code = text(body, "/error/code")
            .or_else(|| text(body, "/error/type"))
            .unwrap_or_default();
        let message = text(body, "/error/message").unwrap_or_default();
        (code, message)
    })
}

fn missing(what: &str) -> ProviderError {
    ProviderError::Protocol {
        provider: NAME,
        reason: format!("no {what} in the answer"),
    }
}

/// `amount` + `currency` of a Stripe object, currency upper-cased as Lab writes it.
fn money(body: &Value, amount_field: &str) -> Option<Money> {
    Some(Money {
        amount_minor: body.get(amount_field)?.as_i64()?,
        currency: body.get("currency")?.as_str()?.to_ascii_uppercase(),
    })
}

/// The payment intent of a session answer, expanded or not.
fn intent_id(session: &Value) -> Option<String> {
    match session.get("payment_intent")? {
        Value::String(id) => Some(id.clone()),
        object => text(object, "/id"),
    }
}

impl Stripe {
    async fn do_create(&self, r: &SessionRequest) -> Result<Session, ProviderError> {
        let form = [
            ("amount", r.amount.amount_minor.to_string()),
            ("currency", r.amount.currency.to_ascii_lowercase()),
            ("metadata[order_id]", r.order_id.to_string()),
            ("expires_at", r.expires_at.to_string()),
        ];
        let key = idempotency_key(r.order_id, "create-session");
        let body = self.post("/v1/checkout/sessions", &key, &form).await?;
        Ok(Session {
            session_id: text(&body, "/id").ok_or_else(|| missing("id"))?,
            payment_url: text(&body, "/url").ok_or_else(|| missing("url"))?,
            intent_id: intent_id(&body),
        })
    }

    async fn do_capture(&self, p: &Payment, amount: &Money) -> Result<Done, ProviderError> {
        let intent = p
            .intent_id
            .as_deref()
            .ok_or_else(|| missing("payment intent"))?;
        let form = [("amount_to_capture", amount.amount_minor.to_string())];
        let key = idempotency_key(p.order_id, "capture");
        let path = format!("/v1/payment_intents/{intent}/capture");
        let body = self.post(&path, &key, &form).await?;
        Ok(Done {
            id: text(&body, "/id"),
            amount: money(&body, "amount_received"),
        })
    }

    async fn do_void(&self, p: &Payment) -> Result<Done, ProviderError> {
        if p.state() == PaymentState::SessionCreated
            && let Some(session) = p.session_id.as_deref()
        {
            let key = idempotency_key(p.order_id, "expire");
            let path = format!("/v1/checkout/sessions/{session}/expire");
            match self.post(&path, &key, &[]).await {
                Ok(_) => return Ok(Done::default()),
                // The buyer completed it meanwhile: cancel the intent instead.
                Err(ProviderError::Refused { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let intent = p
            .intent_id
            .as_deref()
            .ok_or_else(|| missing("payment intent"))?;
        let key = idempotency_key(p.order_id, "cancel");
        let path = format!("/v1/payment_intents/{intent}/cancel");
        let body = self.post(&path, &key, &[]).await?;
        Ok(Done {
            id: text(&body, "/id"),
            amount: None,
        })
    }

    async fn do_refund(&self, p: &Payment) -> Result<Done, ProviderError> {
        let intent = p
            .intent_id
            .as_deref()
            .ok_or_else(|| missing("payment intent"))?;
        let key = idempotency_key(p.order_id, "refund");
        let body = self
            .post(
                "/v1/refunds",
                &key,
                &[("payment_intent", intent.to_owned())],
            )
            .await?;
        Ok(Done {
            id: text(&body, "/id"),
            amount: money(&body, "amount"),
        })
    }
}

impl Provider for Stripe {
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
