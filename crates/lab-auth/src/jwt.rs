//! Compact JWTs signed with Ed25519 (`alg: EdDSA`), and nothing else.
//!
//! Issuing and checking live side by side so the two cannot drift apart. Verification accepts
//! exactly one algorithm: a header saying `none`, `HS256` or anything but `EdDSA` is refused
//! before any key is looked at, which closes the classic "verify an HMAC with the public key"
//! confusion by construction.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// The only algorithm issued and accepted.
pub const ALG: &str = "EdDSA";

/// The protected header of every token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    /// Must be [`ALG`].
    pub alg: String,
    /// Which JWKS key signed the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `JWT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

/// `aud` as RFC 7519 allows it: one string or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    /// Whether `wanted` is among the audiences.
    pub fn contains(&self, wanted: &str) -> bool {
        match self {
            Self::One(a) => a == wanted,
            Self::Many(all) => all.iter().any(|a| a == wanted),
        }
    }
}

/// The claims identity puts in an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who issued it; checked against the verifier's configured issuer.
    pub iss: String,
    /// Who it is for; a service refuses tokens meant for another audience.
    pub aud: Audience,
    /// The user (or service client) it speaks for.
    pub sub: String,
    /// Unique per token: the handle revocation works on.
    pub jti: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issue time, seconds since the epoch.
    pub iat: i64,
    /// Not valid before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Roles of the subject (`admin`, …).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Space-separated OAuth-style scopes; empty for a user's full-power token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// The refresh-token family (session) the token was issued in, so logout can end both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// Why a token could not be read or its signature did not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is not a compact JWT: {0}")]
    Malformed(String),
    #[error("the token's algorithm {0:?} is not accepted (only EdDSA is)")]
    Algorithm(String),
    #[error("the token names no key (kid)")]
    MissingKid,
    #[error("the token's signature does not verify")]
    BadSignature,
}

/// An Ed25519 signing key with the id it is published under.
pub struct SigningKey {
    /// Published in the JWKS and in every token's header.
    kid: String,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

impl SigningKey {
    /// A key from its 32-byte RFC 8032 seed.
    pub fn from_seed(kid: impl Into<String>, seed: &[u8]) -> Result<Self, JwtError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|e| JwtError::Malformed(format!("an Ed25519 seed: {e}")))?;
        Ok(Self {
            kid: kid.into(),
            pair,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// The JWK that verifies this key's tokens.
    pub fn jwk(&self) -> crate::Jwk {
        crate::Jwk::ed25519(&self.kid, self.public_key())
    }

    /// Signs `claims` into a compact JWT.
    pub fn sign(&self, claims: &Claims) -> Result<String, JwtError> {
        let header = Header {
            alg: ALG.into(),
            kid: Some(self.kid.clone()),
            typ: Some("JWT".into()),
        };
        let header = serde_json::to_vec(&header).map_err(|e| JwtError::Malformed(e.to_string()))?;
        let claims = serde_json::to_vec(claims).map_err(|e| JwtError::Malformed(e.to_string()))?;
        let signing_input = format!("{}.{}", B64.encode(header), B64.encode(claims));
        let signature = self.pair.sign(signing_input.as_bytes());
        Ok(format!(
            "{signing_input}.{}",
            B64.encode(signature.as_ref())
        ))
    }
}

/// A token split and its header decoded, signature not yet checked.
pub struct Unverified<'a> {
    pub header: Header,
    signing_input: &'a str,
    payload: &'a str,
    signature: Vec<u8>,
}

/// Splits `token` and reads its header; refuses every algorithm but EdDSA and a missing `kid`.
pub fn decode(token: &str) -> Result<Unverified<'_>, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    };
    let signing_input = &token[..header.len() + 1 + payload.len()];
    let header_bytes = B64
        .decode(header)
        .map_err(|e| JwtError::Malformed(format!("header: {e}")))?;
    let header: Header = serde_json::from_slice(&header_bytes)
        .map_err(|e| JwtError::Malformed(format!("header: {e}")))?;
    if header.alg != ALG {
        return Err(JwtError::Algorithm(header.alg));
    }
    if header.kid.as_deref().is_none_or(str::is_empty) {
        return Err(JwtError::MissingKid);
    }
    let signature = B64
        .decode(signature)
        .map_err(|e| JwtError::Malformed(format!("signature: {e}")))?;
    Ok(Unverified {
        header,
        signing_input,
        payload,
        signature,
    })
}

impl Unverified<'_> {
    /// The `kid` (present: [`decode`] checked it).
    pub fn kid(&self) -> &str {
        self.header.kid.as_deref().unwrap_or_default()
    }

    /// Checks the signature with the raw Ed25519 `public_key`, then reads the claims.
    pub fn verify(self, public_key: &[u8]) -> Result<Claims, JwtError> {
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| JwtError::BadSignature)?;
        let payload = B64
            .decode(self.payload)
            .map_err(|e| JwtError::Malformed(format!("claims: {e}")))?;
        serde_json::from_slice(&payload).map_err(|e| JwtError::Malformed(format!("claims: {e}")))
    }
}

/// base64url without padding, as JOSE uses it everywhere.
pub fn b64url(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// The inverse of [`b64url`].
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    B64.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            iss: "lab-identity".into(),
            aud: Audience::One("lab".into()),
            sub: "u1".into(),
            jti: "j1".into(),
            exp: 2_000_000_000,
            iat: 1_000_000_000,
            nbf: None,
            roles: vec!["admin".into()],
            scope: String::new(),
            sid: None,
        }
    }

    #[test]
    fn a_signed_token_verifies_with_its_public_key_and_yields_its_claims() {
        let key = SigningKey::from_seed("k1", &[7u8; 32]).expect("key");
        let token = key.sign(&claims()).expect("sign");

        let unverified = decode(&token).expect("decode");
        assert_eq!(unverified.kid(), "k1");
        assert_eq!(unverified.verify(key.public_key()), Ok(claims()));
    }

    #[test]
    fn a_tampered_payload_fails_the_signature_check() {
        let key = SigningKey::from_seed("k1", &[7u8; 32]).expect("key");
        let token = key.sign(&claims()).expect("sign");
        let mut parts: Vec<&str> = token.split('.').collect();
        let mut other = claims();
        other.roles.push("root".into());
        let forged = b64url(&serde_json::to_vec(&other).expect("json"));
        parts[1] = &forged;

        let result = decode(&parts.join(".")).and_then(|u| u.verify(key.public_key()));

        assert_eq!(result, Err(JwtError::BadSignature));
    }

    #[test]
    fn every_algorithm_but_eddsa_is_refused_before_any_key_is_looked_at() {
        for alg in [
            "none", "None", "HS256", "HS512", "RS256", "ES256", "eddsa", "",
        ] {
            let header = b64url(format!(r#"{{"alg":"{alg}","kid":"k1"}}"#).as_bytes());
            let token = format!("{header}.e30.");

            let refused = decode(&token).err();

            assert_eq!(refused, Some(JwtError::Algorithm(alg.into())), "{alg}");
        }
    }

    #[test]
    fn a_token_without_a_kid_is_refused() {
        let header = b64url(br#"{"alg":"EdDSA"}"#);

        assert_eq!(
            decode(&format!("{header}.e30.")).err(),
            Some(JwtError::MissingKid)
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for token in ["", "a", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.e30"] {
            assert!(decode(token).is_err(), "{token:?} was accepted");
        }
    }
}
