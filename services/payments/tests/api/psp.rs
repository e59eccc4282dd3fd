//! End to end against the real sandbox PSP (`services/psp`): sessions opened over HTTP, the buyer
//! acting on the sandbox, the PSP's own signed webhooks (HMAC for Stripe, RSA with its CA for
//! PayPal) coming back, then capture, void and refund.

use std::path::PathBuf;

use lab_config::SecretString;
use lab_contracts::{CapturePayment, CreatePaymentSession, Money, RefundPayment, VoidPayment};
use lab_payments::{NAME, PayPalSettings, StripeSettings};
use lab_test_support::{Bus, TestApp};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{env, settings};

/// The Stripe webhook secret both sides share in these tests.
const SECRET: &str = "whsec_e2e";

/// Payments and the PSP, each pointing at the other, and a tap on `payments.#`.
struct Pair {
    payments: TestApp,
    psp: TestApp,
    bus: Bus,
}

async fn pair() -> Pair {
    pair_with(lab_psp::Scenario::default()).await
}

/// The pair with the PSP applying `scenario` to every new session.
async fn pair_with(scenario: lab_psp::Scenario) -> Pair {
    let env = env().await;
    // One certificate directory for every test process: the PSP's RSA key is made once.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("payments-psp-certs");
    let made = dir.clone();
    tokio::task::spawn_blocking(move || lab_psp::certs::ensure(&made))
        .await
        .unwrap()
        .unwrap();
    let port = lab_test_support::free_port();
    let psp_url = format!("http://127.0.0.1:{port}");
    let payments_settings = lab_payments::Settings {
        stripe: StripeSettings {
            api_url: format!("{psp_url}/stripe"),
            webhook_secrets: SecretString::new(SECRET),
            ..StripeSettings::default()
        },
        paypal: PayPalSettings {
            api_url: format!("{psp_url}/paypal"),
            ca_pem_file: dir
                .join(lab_psp::certs::CA_CERT_FILE)
                .to_string_lossy()
                .into_owned(),
            cert_url_hosts: format!("127.0.0.1:{port}"),
            ..PayPalSettings::default()
        },
        ..settings(&env)
    };
    let bus = Bus::connect(
        &env,
        &[(NAME, lab_payments::commands::routing_keys())],
        "payments.#",
    )
    .await;
    let payments = env.spawn(lab_payments::build, payments_settings).await;
    let mut psp_settings = lab_psp::Settings {
        http: env.http(1),
        ..lab_psp::Settings::default()
    };
    psp_settings.http.listen = ([127, 0, 0, 1], port).into();
    psp_settings.stripe.webhook_url = payments.url("/webhooks/stripe");
    psp_settings.stripe.webhook_secrets = SecretString::new(SECRET);
    psp_settings.paypal.webhook_url = payments.url("/webhooks/paypal");
    psp_settings.paypal.cert_dir = dir;
    psp_settings.scenario = scenario;
    psp_settings.webhooks.backoff_base_ms = 20;
    psp_settings.webhooks.backoff_cap_ms = 200;
    let psp = env.spawn(lab_psp::build, psp_settings).await;
    Pair { payments, psp, bus }
}

impl Pair {
    async fn create(&self, order_id: Uuid, provider: &str) -> Value {
        self.bus
            .send(&CreatePaymentSession {
                order_id,
                amount: eur(1234),
                provider: provider.into(),
                expires_at: chrono::Utc::now() + chrono::Duration::minutes(30),
            })
            .await;
        let seen = self.bus.until("payments.session-created").await;
        seen.last().unwrap().payload.clone()
    }

    /// The buyer presses a button on the hosted page.
    async fn buyer(&self, session_id: &str, action: &str) {
        let response = self
            .psp
            .client
            .post(
                self.psp
                    .url(&format!("/sandbox/sessions/{session_id}/{action}")),
            )
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{action}: {}",
            response.status()
        );
    }

    async fn payment(&self, order_id: Uuid) -> Value {
        self.payments
            .get_json(&format!("/payments/{order_id}"))
            .await
            .1
    }
}

fn eur(minor: i64) -> Money {
    Money {
        amount_minor: minor,
        currency: "EUR".into(),
    }
}

/// Session, approval, capture and refund at one provider.
async fn full_cycle(provider: &str) {
    let p = pair().await;
    let order = Uuid::now_v7();

    let created = p.create(order, provider).await;
    p.buyer(created["session_id"].as_str().unwrap(), "approve")
        .await;
    let authorized = p.bus.until("payments.authorized").await;
    p.bus
        .send(&CapturePayment {
            order_id: order,
            amount: eur(1234),
        })
        .await;
    let captured = p.bus.until("payments.captured").await;
    p.bus
        .send(&RefundPayment {
            order_id: order,
            reason: "requires review".into(),
        })
        .await;
    let refunded = p.bus.until("payments.refunded").await;

    for step in [&authorized, &captured, &refunded] {
        assert_eq!(step.last().unwrap().payload["amount"]["amount_minor"], 1234);
    }
    assert!(created["payment_url"].as_str().unwrap().contains("/pay/"));
    let payment = p.payment(order).await;
    assert_eq!(payment["state"], "refunded", "{payment:#}");
    assert!(payment["refund_id"].is_string(), "{payment:#}");
}

#[tokio::test]
async fn a_stripe_payment_is_authorized_by_the_psp_webhook_then_captured_and_refunded() {
    full_cycle("stripe").await;
}

#[tokio::test]
async fn a_paypal_payment_is_authorized_by_the_psp_webhook_then_captured_and_refunded() {
    full_cycle("paypal").await;
}

#[tokio::test]
async fn a_buyer_who_declines_is_reported_as_payment_declined() {
    let p = pair().await;
    let order = Uuid::now_v7();

    let created = p.create(order, "stripe").await;
    p.buyer(created["session_id"].as_str().unwrap(), "decline")
        .await;

    p.bus.until("payments.declined").await;
    assert_eq!(p.payment(order).await["state"], "declined");
}

#[tokio::test]
async fn voiding_an_open_stripe_session_expires_it_and_its_expiry_webhook_changes_nothing() {
    let p = pair().await;
    let order = Uuid::now_v7();
    p.create(order, "stripe").await;

    p.bus.send(&VoidPayment { order_id: order }).await;

    p.bus.until("payments.voided").await;
    let payment = lab_test_support::eventually(crate::helpers::DEADLINE, || async {
        let payment = p.payment(order).await;
        let expired_seen = payment["events"]
            .as_array()?
            .iter()
            .any(|e| e["kind"] == "checkout.session.expired");
        expired_seen.then_some(payment)
    })
    .await
    .expect("the PSP's checkout.session.expired never arrived");
    assert_eq!(payment["state"], "voided");
    let nothing_more = p.bus.drain(std::time::Duration::from_millis(1_000)).await;
    assert!(nothing_more.is_empty(), "{nothing_more:?}");
}

#[tokio::test]
async fn a_buyer_approving_at_once_with_duplicated_out_of_order_webhooks_is_authorized_once() {
    let p = pair_with(lab_psp::Scenario {
        auto: lab_psp::Auto::Approve,
        duplicate_webhooks: true,
        out_of_order: true,
        ..lab_psp::Scenario::default()
    })
    .await;
    let order = Uuid::now_v7();

    p.create(order, "paypal").await;

    p.bus.until("payments.authorized").await;
    let more = p.bus.drain(std::time::Duration::from_millis(1_500)).await;
    assert!(more.is_empty(), "{more:?}");
    assert_eq!(p.payment(order).await["state"], "authorized");
}

#[tokio::test]
async fn an_authorization_for_another_amount_is_reported_with_what_the_psp_authorized() {
    let p = pair_with(lab_psp::Scenario {
        authorize_amount_delta_minor: 100,
        ..lab_psp::Scenario::default()
    })
    .await;
    let order = Uuid::now_v7();
    let created = p.create(order, "stripe").await;

    p.buyer(created["session_id"].as_str().unwrap(), "approve")
        .await;

    let seen = p.bus.until("payments.authorized").await;
    assert_eq!(seen.last().unwrap().payload["amount"]["amount_minor"], 1334);
    assert_eq!(p.payment(order).await["amount_mismatch"], true);
}

#[tokio::test]
async fn a_capture_the_psp_refuses_is_reported_once_though_both_the_answer_and_a_webhook_say_so() {
    let p = pair_with(lab_psp::Scenario {
        fail_capture: true,
        ..lab_psp::Scenario::default()
    })
    .await;
    let order = Uuid::now_v7();
    let created = p.create(order, "paypal").await;
    p.buyer(created["session_id"].as_str().unwrap(), "approve")
        .await;
    p.bus.until("payments.authorized").await;

    p.bus
        .send(&CapturePayment {
            order_id: order,
            amount: eur(1234),
        })
        .await;

    p.bus.until("payments.capture-failed").await;
    let denied = lab_test_support::eventually(crate::helpers::DEADLINE, || async {
        let payment = p.payment(order).await;
        payment["events"]
            .as_array()?
            .iter()
            .any(|e| e["kind"] == "PAYMENT.CAPTURE.DENIED")
            .then_some(payment)
    })
    .await
    .expect("the PSP's PAYMENT.CAPTURE.DENIED never arrived");
    assert_eq!(denied["state"], "authorized");
    let more = p.bus.drain(std::time::Duration::from_millis(1_000)).await;
    assert!(more.is_empty(), "{more:?}");
}
