//! [`Verifier`]: one call that takes a bearer token to trusted claims, or says why not.

use std::sync::Arc;
use std::time::Duration;

use lab_cache::RedisSettings;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::jwks::{HttpKeySource, JwksCache, KeySource, Lookup};
use crate::jwt::{self, Claims, JwtError};
use crate::revocation::{RevocationError, Revocations, now_s};

/// How a service checks access tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    /// Identity's key set: `http://<identity>/.well-known/jwks.json`.
    pub jwks_url: String,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` this service accepts.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_s: u64,
    /// Fewest milliseconds between two JWKS fetches, however many unknown `kid`s arrive.
    pub jwks_min_refresh_ms: u64,
    /// Oldest the cached key set may get before the next token refetches it.
    pub jwks_max_age_s: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            // Identity's local default port (the apphost passes the real one).
            jwks_url: "http://127.0.0.1:7101/.well-known/jwks.json".into(),
            issuer: "lab-identity".into(),
            audience: "lab".into(),
            // 30 s: machines in one cluster agree far better; a minute would stretch 15-minute
            // tokens noticeably.
            leeway_s: 30,
            // A rotation needs one fetch; a flood of forged kids gets one fetch per 5 s.
            jwks_min_refresh_ms: 5_000,
            // Picks up a retired key's removal within 10 minutes even if no unknown kid shows up.
            jwks_max_age_s: 600,
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token was presented")]
    Missing,
    #[error(transparent)]
    Jwt(#[from] JwtError),
    #[error("the token was signed by an unknown key {0:?}")]
    UnknownKid(String),
    #[error("the signing keys cannot be fetched: {0}")]
    KeysUnavailable(String),
    #[error("the token was issued by {0:?}, not by this service's issuer")]
    Issuer(String),
    #[error("the token is not meant for this service (audience)")]
    Audience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token has been revoked")]
    Revoked,
    /// A service that takes no identity tokens was shown something other than its admin token.
    #[error("the bearer token is not valid")]
    NotAccepted,
}

/// Why a verifier could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the JWKS HTTP client could not be built: {0}")]
    Client(String),
    #[error(transparent)]
    Revocation(#[from] RevocationError),
}

struct Inner {
    settings: AuthSettings,
    jwks: JwksCache,
    revocations: Arc<Revocations>,
}

/// Checks tokens: signature against the cached JWKS, issuer, audience, lifetime, revocation.
#[derive(Clone)]
pub struct Verifier(Arc<Inner>);

impl Verifier {
    /// A verifier with keys from `source` and revocations from `revocations`.
    pub fn new(
        settings: AuthSettings,
        source: Arc<dyn KeySource>,
        revocations: Arc<Revocations>,
    ) -> Self {
        let jwks = JwksCache::new(
            source,
            Duration::from_millis(settings.jwks_min_refresh_ms),
            Duration::from_secs(settings.jwks_max_age_s),
        );
        Self(Arc::new(Inner {
            settings,
            jwks,
            revocations,
        }))
    }

    /// A verifier fetching keys from `settings.jwks_url`, following revocations in `redis`
    /// until `shutdown`.
    pub fn start(
        settings: AuthSettings,
        redis: &RedisSettings,
        shutdown: CancellationToken,
    ) -> Result<Self, StartError> {
        let source = HttpKeySource::new(settings.jwks_url.clone()).map_err(StartError::Client)?;
        let revocations = Revocations::new(redis)?;
        revocations.spawn_subscriber(shutdown);
        Ok(Self::new(settings, Arc::new(source), revocations))
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.0.settings
    }

    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.0.revocations
    }

    /// The claims of `token` if every check passes.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let unverified = jwt::decode(token)?;
        let kid = unverified.kid().to_owned();
        let key = match self.0.jwks.key(&kid).await {
            Lookup::Found(key) => key,
            Lookup::Unknown => return Err(AuthError::UnknownKid(kid)),
            Lookup::Unavailable(why) => return Err(AuthError::KeysUnavailable(why)),
        };
        let claims = unverified.verify(&key)?;
        let settings = &self.0.settings;
        if claims.iss != settings.issuer {
            return Err(AuthError::Issuer(claims.iss));
        }
        if !claims.aud.contains(&settings.audience) {
            return Err(AuthError::Audience);
        }
        let now = now_s();
        let leeway = settings.leeway_s as i64;
        if now > claims.exp.saturating_add(leeway) {
            return Err(AuthError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| now.saturating_add(leeway) < nbf)
        {
            return Err(AuthError::NotYetValid);
        }
        if self.0.revocations.is_revoked(&claims.jti).await {
            return Err(AuthError::Revoked);
        }
        Ok(claims)
    }
}
