//! Webhook signatures exactly as each provider makes them.
//!
//! Stripe: `Stripe-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "{t}.{body}")>`, one `v1`
//! per configured secret (two during a rotation). PayPal: base64 of an RSA PKCS#1 v1.5 SHA-256
//! signature over `"{transmission id}|{transmission time}|{webhook id}|{crc32(body)}"`, made
//! with the leaf key from [`crate::certs`].

use base64::Engine as _;
use lab_config::SecretString;
use ring::{hmac, rand::SystemRandom, signature};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};

/// Why the signing key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("the PayPal signing key is not a PKCS#8 RSA key: {0}")]
    Pkcs8(#[from] rsa::pkcs8::Error),
    #[error("ring rejects the PayPal signing key: {0}")]
    Rejected(String),
    #[error("signing failed")]
    Sign,
}

/// The `Stripe-Signature` header for `body` sent at unix second `t`, signed with each secret.
pub fn stripe_header(secrets: &[SecretString], t: i64, body: &[u8]) -> String {
    let mut header = format!("t={t}");
    for secret in secrets {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes());
        let mut context = hmac::Context::with_key(&key);
        context.update(format!("{t}.").as_bytes());
        context.update(body);
        header.push_str(",v1=");
        header.push_str(&hex(context.sign().as_ref()));
    }
    header
}

/// The CRC32 (IEEE) of the body, which PayPal signs instead of the body itself.
pub fn crc32(body: &[u8]) -> u32 {
    crc32fast::hash(body)
}

/// The string PayPal signs for one transmission.
pub fn paypal_message(transmission_id: &str, time: &str, webhook_id: &str, body: &[u8]) -> String {
    format!("{transmission_id}|{time}|{webhook_id}|{}", crc32(body))
}

/// Signs PayPal transmissions with the sandbox leaf key.
pub struct PaypalSigner {
    /// The leaf certificate's private key.
    key: signature::RsaKeyPair,
    /// ring's randomness source (PKCS#1 v1.5 does not use it, the API asks for it).
    rng: SystemRandom,
}

impl PaypalSigner {
    /// Loads the PKCS#8 PEM key written by [`crate::certs`].
    pub fn from_pem(pem: &SecretString) -> Result<Self, SigningError> {
        let der = rsa::RsaPrivateKey::from_pkcs8_pem(pem.expose())?.to_pkcs8_der()?;
        let key = signature::RsaKeyPair::from_pkcs8(der.as_bytes())
            .map_err(|e| SigningError::Rejected(e.to_string()))?;
        Ok(Self {
            key,
            rng: SystemRandom::new(),
        })
    }

    /// `PAYPAL-TRANSMISSION-SIG` for `message` (see [`paypal_message`]).
    pub fn sign(&self, message: &str) -> Result<String, SigningError> {
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &self.rng,
                message.as_bytes(),
                &mut signature,
            )
            .map_err(|_| SigningError::Sign)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(signature))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stripe_header_carries_one_v1_per_secret() {
        let secrets = [SecretString::new("a"), SecretString::new("b")];

        let header = stripe_header(&secrets, 1_700_000_000, b"{}");

        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(header.matches(",v1=").count(), 2);
    }

    #[test]
    fn the_paypal_message_joins_the_four_parts_with_bars() {
        let message = paypal_message("id", "2026-01-01T00:00:00Z", "WH", b"hello");

        assert_eq!(
            message,
            format!("id|2026-01-01T00:00:00Z|WH|{}", 0x3610_a686_u32)
        );
    }
}
