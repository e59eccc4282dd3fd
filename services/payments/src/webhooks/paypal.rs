//! PayPal webhooks: the transmission signature check and the events payments acts on.
//!
//! PayPal signs `"{transmission id}|{transmission time}|{webhook id}|{crc32 of the body}"` with
//! RSA PKCS#1 v1.5 SHA-256 and names the signing certificate by URL. The URL is fetched only from
//! an allowlisted host (any other is refused without a request), the certificate must chain to a
//! configured CA (signature and validity of each link), and verified certificates are cached
//! (bounded, short-lived) so a burst of webhooks costs one fetch.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::HeaderMap;
use reqwest::Url;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::Value;
use x509_parser::certificate::X509Certificate;
use x509_parser::pem::Pem;

use super::{Event, Target};
use crate::provider::paypal::money;
use crate::transitions::Observed;

/// How many verified certificates are kept: PayPal rotates its signing certificate rarely, so a
/// handful covers every URL in use.
const CACHE_CAPACITY: u64 = 32;
/// How long a verified certificate is trusted without fetching it again: long enough that a burst
/// of webhooks costs one fetch, short enough that a revoked URL stops working within the hour.
const CACHE_TTL: Duration = Duration::from_secs(3_600);
/// A certificate chain is a few kilobytes; anything much larger is not one.
const MAX_CERT_BYTES: usize = 64 * 1024;
/// Links followed from the leaf to a trusted CA.
const MAX_CHAIN: usize = 4;

/// Why a PayPal webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    #[error("PAYPAL-AUTH-ALGO `{0}` is not SHA256withRSA")]
    Algorithm(String),
    #[error("PAYPAL-CERT-URL is not a URL: {0}")]
    BadUrl(String),
    #[error("PAYPAL-CERT-URL host `{0}` is not allowed")]
    HostNotAllowed(String),
    #[error("the certificate could not be fetched: {0}")]
    Fetch(String),
    #[error("the certificate is not valid: {0}")]
    Certificate(String),
    #[error("the certificate is not issued by a trusted CA")]
    Untrusted,
    #[error("PAYPAL-TRANSMISSION-SIG is not base64")]
    SignatureEncoding,
    #[error("the transmission signature does not match")]
    BadSignature,
    #[error("no PayPal CA is configured (or its file is not there yet)")]
    NoCa,
}

/// A leaf certificate that chained to the CA, reduced to what a signature check needs.
#[derive(Debug)]
struct Verified {
    /// The RSA public key (PKCS#1 `RSAPublicKey` DER).
    public_key: Vec<u8>,
    /// The earliest `notAfter` of the chain (unix s): trusted until then.
    not_after: i64,
    /// The latest `notBefore` of the chain (unix s).
    not_before: i64,
}

/// Verifies PayPal transmissions.
pub struct PayPalVerifier {
    /// Fetches certificates.
    http: reqwest::Client,
    /// The trusted CA certificates (DER), once read.
    ca: OnceLock<Vec<Vec<u8>>>,
    /// Where they are read from when they were not there at start (the sandbox PSP writes its
    /// CA when it first starts, possibly after payments).
    ca_file: Option<PathBuf>,
    /// Hosts (or `host:port`) certificates may be fetched from.
    allowed_hosts: Vec<String>,
    /// `webhook_id` as configured at PayPal: part of what is signed.
    webhook_id: String,
    /// Verified certificates by URL.
    cache: moka::sync::Cache<String, Arc<Verified>>,
    /// Bound on one certificate fetch.
    fetch_timeout: Duration,
}

/// Reads every certificate of a PEM bundle as DER.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for item in Pem::iter_from_buffer(pem) {
        let item = item.map_err(|e| e.to_string())?;
        if item.label == "CERTIFICATE" {
            out.push(item.contents);
        }
    }
    if out.is_empty() {
        return Err("no CERTIFICATE in the PEM".into());
    }
    Ok(out)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, VerifyError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| VerifyError::Certificate(e.to_string()))
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, VerifyError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(VerifyError::MissingHeader(name))
}

impl PayPalVerifier {
    /// A verifier trusting `ca` (DER certificates), or, while that is empty, whatever
    /// `ca_file` holds once it exists.
    pub fn new(
        http: reqwest::Client,
        ca: Vec<Vec<u8>>,
        ca_file: Option<PathBuf>,
        allowed_hosts: Vec<String>,
        webhook_id: String,
        fetch_timeout: Duration,
    ) -> Self {
        let loaded = OnceLock::new();
        if !ca.is_empty() {
            let _ = loaded.set(ca);
        }
        Self {
            http,
            ca: loaded,
            ca_file,
            allowed_hosts,
            webhook_id,
            cache: moka::sync::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(CACHE_TTL)
                .build(),
            fetch_timeout,
        }
    }

    /// Checks the transmission headers against `body`, at unix time `now`.
    pub async fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<(), VerifyError> {
        let id = header(headers, "paypal-transmission-id")?;
        let time = header(headers, "paypal-transmission-time")?;
        let signature = header(headers, "paypal-transmission-sig")?;
        let cert_url = header(headers, "paypal-cert-url")?;
        if let Ok(algo) = header(headers, "paypal-auth-algo")
            && algo != "SHA256withRSA"
        {
            return Err(VerifyError::Algorithm(algo.to_owned()));
        }
        use base64::Engine as _;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature)
            .map_err(|_| VerifyError::SignatureEncoding)?;
        let url = self.allowed(cert_url)?;
        let ca = self.trusted().await?;
        let cert = self.certificate(url, ca).await?;
        if now < cert.not_before || now > cert.not_after {
            self.cache.invalidate(cert_url);
            return Err(VerifyError::Certificate("expired or not yet valid".into()));
        }
        let message = format!("{id}|{time}|{}|{}", self.webhook_id, crc32fast::hash(body));
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &cert.public_key)
            .verify(message.as_bytes(), &signature)
            .map_err(|_| VerifyError::BadSignature)
    }

    /// The URL, if its scheme is http(s) and its host is allowlisted.
    fn allowed(&self, raw: &str) -> Result<Url, VerifyError> {
        let url = Url::parse(raw).map_err(|e| VerifyError::BadUrl(e.to_string()))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(VerifyError::BadUrl(format!("scheme {}", url.scheme())));
        }
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let with_port = url
            .port_or_known_default()
            .map(|p| format!("{host}:{p}"))
            .unwrap_or_else(|| host.clone());
        let ok = self
            .allowed_hosts
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&host) || a.eq_ignore_ascii_case(&with_port));
        if !ok {
            return Err(VerifyError::HostNotAllowed(with_port));
        }
        Ok(url)
    }

    /// The CA certificates, read from the file on first use when they were not there at start.
    async fn trusted(&self) -> Result<&[Vec<u8>], VerifyError> {
        if let Some(ca) = self.ca.get() {
            return Ok(ca);
        }
        let file = self.ca_file.as_ref().ok_or(VerifyError::NoCa)?;
        let pem = tokio::fs::read(file).await.map_err(|_| VerifyError::NoCa)?;
        let ca = pem_certificates(&pem).map_err(|_| VerifyError::NoCa)?;
        Ok(self.ca.get_or_init(|| ca))
    }

    async fn certificate(&self, url: Url, ca: &[Vec<u8>]) -> Result<Arc<Verified>, VerifyError> {
        if let Some(hit) = self.cache.get(url.as_str()) {
            return Ok(hit);
        }
        let response = self
            .http
            .get(url.clone())
            .timeout(self.fetch_timeout)
            .send()
            .await
            .map_err(|e| VerifyError::Fetch(e.to_string()))?;
        if !response.status().is_success() {
            return Err(VerifyError::Fetch(format!(
                "answered {}",
                response.status()
            )));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| VerifyError::Fetch(e.to_string()))?;
        if bytes.len() > MAX_CERT_BYTES {
            return Err(VerifyError::Fetch("the certificate is too large".into()));
        }
        let chain = pem_certificates(&bytes).map_err(VerifyError::Certificate)?;
        let verified = Arc::new(chain_to(ca, &chain)?);
        self.cache.insert(url.as_str().to_owned(), verified.clone());
        Ok(verified)
    }
}

/// Walks from the leaf (first of `chain`) through the bundle's intermediates to one of the `ca`
/// certificates, checking each signature and noting each validity window.
fn chain_to(trusted: &[Vec<u8>], chain: &[Vec<u8>]) -> Result<Verified, VerifyError> {
    if trusted.is_empty() {
        return Err(VerifyError::NoCa);
    }
    let leaf = parse(&chain[0])?;
    let spki = leaf.public_key();
    let mut verified = Verified {
        public_key: spki.subject_public_key.data.to_vec(),
        not_after: leaf.validity().not_after.timestamp(),
        not_before: leaf.validity().not_before.timestamp(),
    };
    let mut current = leaf;
    for _ in 0..MAX_CHAIN {
        for ca in trusted {
            let ca = parse(ca)?;
            if ca.subject().as_raw() == current.issuer().as_raw()
                && current.verify_signature(Some(ca.public_key())).is_ok()
            {
                verified.not_after = verified.not_after.min(ca.validity().not_after.timestamp());
                verified.not_before = verified
                    .not_before
                    .max(ca.validity().not_before.timestamp());
                return Ok(verified);
            }
        }
        let next = chain[1..].iter().find_map(|der| {
            let candidate = parse(der).ok()?;
            (candidate.subject().as_raw() == current.issuer().as_raw()
                && candidate.is_ca()
                && current
                    .verify_signature(Some(candidate.public_key()))
                    .is_ok())
            .then_some(candidate)
        });
        let Some(next) = next else {
            return Err(VerifyError::Untrusted);
        };
        verified.not_after = verified
            .not_after
            .min(next.validity().not_after.timestamp());
        verified.not_before = verified
            .not_before
            .max(next.validity().not_before.timestamp());
        current = next;
    }
    Err(VerifyError::Untrusted)
}

/// The state a PayPal event type implies; `None` for types payments does not act on.
fn target(kind: &str) -> Option<Target> {
    Some(match kind {
        "PAYMENT.AUTHORIZATION.CREATED" => Target::Authorized,
        "CHECKOUT.PAYMENT-APPROVAL.REVERSED" => Target::Declined,
        "PAYMENT.CAPTURE.COMPLETED" => Target::Captured,
        "PAYMENT.CAPTURE.DENIED" => Target::CaptureFailed,
        "PAYMENT.AUTHORIZATION.VOIDED" => Target::Voided,
        "PAYMENT.CAPTURE.REFUNDED" => Target::Refunded,
        _ => return None,
    })
}

fn text(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Reads a verified event body.
pub fn parse_event(body: &Value) -> Result<Event, String> {
    let event_id = text(body, "/id").ok_or("the event has no id")?;
    let kind = text(body, "/event_type").ok_or("the event has no event_type")?;
    let resource = body.get("resource").cloned().unwrap_or(Value::Null);
    let order_id = text(&resource, "/custom_id")
        .or_else(|| text(&resource, "/purchase_units/0/custom_id"))
        .and_then(|s| s.parse().ok());
    let target = target(&kind);
    let id = text(&resource, "/id");
    let observed = Observed {
        amount: resource.get("amount").and_then(money),
        authorization_id: (target == Some(Target::Authorized))
            .then(|| id.clone())
            .flatten()
            .or_else(|| {
                text(
                    &resource,
                    "/supplementary_data/related_ids/authorization_id",
                )
            }),
        capture_id: matches!(target, Some(Target::Captured | Target::CaptureFailed))
            .then(|| id.clone())
            .flatten(),
        refund_id: (target == Some(Target::Refunded))
            .then(|| id.clone())
            .flatten(),
        reason: text(&resource, "/status_details/reason"),
        ..Observed::default()
    };
    Ok(Event {
        event_id,
        kind,
        order_id,
        target,
        observed,
    })
}
