//! Webhook signatures checked the way a receiver checks them, with code written here and not
//! borrowed from the PSP: Stripe's HMAC with the `hmac` crate, PayPal's certificate chain with
//! x509-parser and its RSA signature with ring.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use x509_parser::pem::parse_x509_pem;

use crate::helpers::{Hit, NEW_SECRET, OLD_SECRET, Psp, WEBHOOK_ID, cert_dir};

/// Whether `Stripe-Signature` carries a `v1` that `secret` made over `t.body`.
fn stripe_signed_by(hit: &Hit, secret: &str) -> bool {
    let header = hit.header("stripe-signature");
    let mut t = "";
    let mut v1s = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value,
            Some(("v1", value)) => v1s.push(value.to_owned()),
            _ => {}
        }
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", hit.body).as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    !t.is_empty() && v1s.contains(&expected)
}

/// Checks the leaf at `PAYPAL-CERT-URL` chains to the sandbox CA, then the transmission
/// signature against it; true when both hold.
async fn paypal_signature_valid(psp: &Psp, hit: &Hit) -> bool {
    let leaf_pem = psp
        .app
        .client
        .get(hit.header("paypal-cert-url"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ca_pem = lab_psp::certs::ensure(&cert_dir()).unwrap().ca_cert_pem;
    let (_, leaf) = parse_x509_pem(leaf_pem.as_bytes()).unwrap();
    let leaf = leaf.parse_x509().unwrap();
    let (_, ca) = parse_x509_pem(ca_pem.as_bytes()).unwrap();
    let ca = ca.parse_x509().unwrap();
    assert_eq!(leaf.issuer(), ca.subject());
    assert!(leaf.validity().is_valid());
    assert!(ca.is_ca());
    leaf.verify_signature(Some(ca.public_key()))
        .expect("the leaf is signed by the sandbox CA");

    assert_eq!(hit.header("paypal-auth-algo"), "SHA256withRSA");
    let message = format!(
        "{}|{}|{WEBHOOK_ID}|{}",
        hit.header("paypal-transmission-id"),
        hit.header("paypal-transmission-time"),
        crc32fast::hash(hit.body.as_bytes())
    );
    let signature = base64::engine::general_purpose::STANDARD
        .decode(hit.header("paypal-transmission-sig"))
        .unwrap();
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        leaf.public_key().subject_public_key.data.as_ref(),
    );
    key.verify(message.as_bytes(), &signature).is_ok()
}

#[tokio::test]
async fn stripe_events_are_signed_with_both_secrets_during_a_rotation() {
    let psp = Psp::start(&[]).await;
    let session = psp.stripe_session("500", "o", &[]).await;

    psp.buyer(session["id"].as_str().unwrap(), "decline").await;
    let hits = psp.receiver.wait_for(1).await;

    assert!(
        stripe_signed_by(&hits[0], OLD_SECRET),
        "{:?}",
        hits[0].headers
    );
    assert!(stripe_signed_by(&hits[0], NEW_SECRET));
    assert!(!stripe_signed_by(&hits[0], "whsec_other"));
}

#[tokio::test]
async fn a_corrupt_first_stripe_signature_is_invalid_and_the_retry_is_valid() {
    // The receiver refuses the first attempt, as one that verifies signatures would.
    let psp = Psp::start(&[400]).await;
    let session = psp
        .stripe_session(
            "500",
            "o",
            &[("metadata[lab_scenario]", "corrupt_signature")],
        )
        .await;

    psp.buyer(session["id"].as_str().unwrap(), "decline").await;
    let hits = psp.receiver.wait_for(2).await;

    assert_eq!(hits[0].id(), hits[1].id());
    assert!(!stripe_signed_by(&hits[0], OLD_SECRET));
    assert!(!stripe_signed_by(&hits[0], NEW_SECRET));
    assert!(stripe_signed_by(&hits[1], NEW_SECRET));
}

#[tokio::test]
async fn paypal_events_are_signed_by_a_certificate_issued_by_the_sandbox_ca() {
    let psp = Psp::start(&[]).await;
    let token = psp.paypal_token().await;
    let order = psp.paypal_order(&token, "5.00", "o", json!({})).await;

    psp.buyer(order["id"].as_str().unwrap(), "approve").await;
    let hits = psp.receiver.wait_for(2).await;

    assert!(paypal_signature_valid(&psp, &hits[0]).await);
    assert!(paypal_signature_valid(&psp, &hits[1]).await);
}

#[tokio::test]
async fn a_corrupt_first_paypal_signature_is_invalid_and_the_retry_is_valid() {
    let psp = Psp::start(&[400]).await;
    let token = psp.paypal_token().await;
    let order = psp
        .paypal_order(
            &token,
            "5.00",
            "o",
            json!({"lab_scenario": "corrupt_signature"}),
        )
        .await;

    psp.buyer(order["id"].as_str().unwrap(), "decline").await;
    let hits = psp.receiver.wait_for(2).await;

    assert!(!paypal_signature_valid(&psp, &hits[0]).await);
    assert!(paypal_signature_valid(&psp, &hits[1]).await);
}
