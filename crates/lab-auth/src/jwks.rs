//! Public keys: the JWKS document identity publishes, and the cache every service verifies with.
//!
//! [`JwksCache`] fetches the key set lazily, refetches it when a token names a `kid` it does not
//! know (a rotation happened) or when its copy is older than a maximum age, and never fetches
//! more often than a minimum interval however many unknown `kid`s arrive, so a flood of forged
//! tokens cannot turn every service into a load generator against identity.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// One public key in JWK form (RFC 8037: `kty: OKP`, `crv: Ed25519`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Jwk {
    /// `OKP`.
    pub kty: String,
    /// `Ed25519`.
    #[serde(default)]
    pub crv: String,
    /// `EdDSA`.
    #[serde(default)]
    pub alg: String,
    /// `sig`.
    #[serde(rename = "use", default)]
    pub use_: String,
    /// The key id tokens name in their header.
    pub kid: String,
    /// The raw public key, base64url.
    #[serde(default)]
    pub x: String,
}

impl Jwk {
    /// The JWK of an Ed25519 public key.
    pub fn ed25519(kid: &str, public_key: &[u8]) -> Self {
        Self {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            alg: crate::jwt::ALG.into(),
            use_: "sig".into(),
            kid: kid.into(),
            x: crate::jwt::b64url(public_key),
        }
    }

    /// The raw key, if this is a well-formed Ed25519 signing key.
    fn ed25519_key(&self) -> Option<Vec<u8>> {
        if self.kty != "OKP"
            || self.crv != "Ed25519"
            || (!self.use_.is_empty() && self.use_ != "sig")
        {
            return None;
        }
        crate::jwt::b64url_decode(&self.x).filter(|k| k.len() == 32)
    }
}

/// `/.well-known/jwks.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// Where a [`JwksCache`] gets its keys: identity's endpoint over HTTP, or identity's own key ring.
pub trait KeySource: Send + Sync + 'static {
    fn fetch(&self) -> BoxFuture<'_, Result<Jwks, String>>;
}

/// `GET <url>` for the key set.
pub struct HttpKeySource {
    /// `http://identity/.well-known/jwks.json`.
    url: String,
    client: reqwest::Client,
}

impl HttpKeySource {
    pub fn new(url: impl Into<String>) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .no_proxy()
            // Identity is in-cluster: a key fetch slower than this fails the request it serves
            // (503) rather than holding it.
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            url: url.into(),
            client,
        })
    }
}

impl KeySource for HttpKeySource {
    fn fetch(&self) -> BoxFuture<'_, Result<Jwks, String>> {
        Box::pin(async move {
            let response = self
                .client
                .get(&self.url)
                .send()
                .await
                .map_err(|e| format!("GET {}: {e}", self.url))?;
            if !response.status().is_success() {
                return Err(format!("GET {}: {}", self.url, response.status()));
            }
            response
                .json::<Jwks>()
                .await
                .map_err(|e| format!("GET {}: {e}", self.url))
        })
    }
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(Arc<[u8]>),
    /// The key set was read and does not hold this `kid`.
    Unknown,
    /// No key set could be read at all.
    Unavailable(String),
}

#[derive(Default)]
struct Refresh {
    /// The last fetch attempt, successful or not: bounds the fetch rate.
    attempted: Option<Instant>,
    /// The last successful fetch: bounds the age of the cached set.
    succeeded: Option<Instant>,
    /// Why the last fetch failed, for the 503 a caller gets when no key set was ever read.
    error: Option<String>,
}

/// Public keys by `kid`, refreshed on demand.
pub struct JwksCache {
    source: Arc<dyn KeySource>,
    keys: ArcSwap<HashMap<String, Arc<[u8]>>>,
    /// Held while fetching, so concurrent misses make one request.
    refresh: Mutex<Refresh>,
    min_interval: Duration,
    max_age: Duration,
}

impl JwksCache {
    pub fn new(source: Arc<dyn KeySource>, min_interval: Duration, max_age: Duration) -> Self {
        Self {
            source,
            keys: ArcSwap::from_pointee(HashMap::new()),
            refresh: Mutex::new(Refresh::default()),
            min_interval,
            max_age,
        }
    }

    /// The key for `kid`, fetching the set when it is unknown or stale (rate-limited).
    pub async fn key(&self, kid: &str) -> Lookup {
        if let Some(key) = self.keys.load().get(kid)
            && !self.stale().await
        {
            return Lookup::Found(key.clone());
        }
        self.refresh().await;
        match self.keys.load().get(kid) {
            Some(key) => Lookup::Found(key.clone()),
            None => match &self.refresh.lock().await.error {
                Some(error) if self.keys.load().is_empty() => Lookup::Unavailable(error.clone()),
                _ => Lookup::Unknown,
            },
        }
    }

    async fn stale(&self) -> bool {
        match self.refresh.try_lock() {
            Ok(state) => state.succeeded.is_none_or(|at| at.elapsed() > self.max_age),
            // Someone is fetching right now; the copy we have is good enough meanwhile.
            Err(_) => false,
        }
    }

    /// Fetches the set unless a fetch was attempted within the minimum interval.
    pub async fn refresh(&self) {
        let mut state = self.refresh.lock().await;
        if state
            .attempted
            .is_some_and(|at| at.elapsed() < self.min_interval)
        {
            return;
        }
        state.attempted = Some(Instant::now());
        match self.source.fetch().await {
            Ok(jwks) => {
                let keys: HashMap<String, Arc<[u8]>> = jwks
                    .keys
                    .iter()
                    .filter_map(|jwk| jwk.ed25519_key().map(|k| (jwk.kid.clone(), Arc::from(k))))
                    .collect();
                tracing::debug!(keys = keys.len(), "JWKS refreshed");
                self.keys.store(Arc::new(keys));
                state.succeeded = Some(Instant::now());
                state.error = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not fetch the JWKS; keeping the keys we have");
                state.error = Some(e);
            }
        }
    }
}
