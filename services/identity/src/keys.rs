//! The token signing keys: kept in OpenBao (KV v2), never in source, env or the database.
//!
//! At start identity reads the key document; when there is none it creates a key and stores it.
//! A rotation makes a new current key and keeps the old one among the `previous` keys, so the
//! JWKS lists them all and tokens signed before the rotation verify until they expire. A retired
//! key is dropped at a later rotation once every token it signed must have expired (retired
//! longer ago than the access-token lifetime plus leeway), so even two quick rotations in a row
//! invalidate nothing.
//! Other replicas pick a rotation up by re-reading the document every `key_reload_s`.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use lab_auth::{Jwks, KeySource, SigningKey};
use lab_config::SecretString;
use lab_vault::{Vault, VaultError};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Where the signing keys live in OpenBao.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct VaultSettings {
    /// `http://127.0.0.1:8200`.
    pub addr: String,
    /// A token allowed to read and write the key document.
    pub token: SecretString,
    /// The KV v2 mount.
    pub kv_mount: String,
    /// The key document's path under the mount.
    pub signing_keys_path: String,
    /// How often a replica re-reads the document to pick up another replica's rotation.
    pub key_reload_s: u64,
}

impl Default for VaultSettings {
    fn default() -> Self {
        Self {
            addr: "http://127.0.0.1:8200".into(),
            token: SecretString::default(),
            // The dev server's default KV v2 mount.
            kv_mount: "secret".into(),
            signing_keys_path: "lab/identity/signing-keys".into(),
            // A minute: rotations are rare, and the rotating replica's JWKS already has both keys.
            key_reload_s: 60,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("the signing key document in OpenBao is not valid: {0}")]
    Invalid(String),
}

/// One key as stored: its id and its 32-byte Ed25519 seed, base64url.
#[derive(Clone, Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    seed: String,
    /// When it stopped signing (unix seconds); absent for the current key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired_at: Option<i64>,
}

/// The document at `kv_mount/signing_keys_path`.
#[derive(Clone, Serialize, Deserialize)]
struct StoredKeys {
    current: StoredKey,
    /// Retired keys whose tokens may still be alive, newest first.
    #[serde(default)]
    previous: Vec<StoredKey>,
}

impl StoredKey {
    fn generate() -> Self {
        let seed: [u8; 32] = rand::random();
        Self {
            // Time-ordered, so operators can tell which key is newer.
            kid: uuid::Uuid::now_v7().to_string(),
            seed: lab_auth::jwt::b64url(&seed),
            retired_at: None,
        }
    }

    fn signing_key(&self) -> Result<SigningKey, KeyError> {
        let seed = lab_auth::jwt::b64url_decode(&self.seed)
            .filter(|s| s.len() == 32)
            .ok_or_else(|| KeyError::Invalid(format!("key {} has no 32-byte seed", self.kid)))?;
        SigningKey::from_seed(self.kid.clone(), &seed).map_err(|e| KeyError::Invalid(e.to_string()))
    }
}

/// The keys in use.
pub struct Keys {
    /// Signs every new token.
    pub current: SigningKey,
    /// Retired but still published, so tokens they signed verify until they expire; newest first.
    pub previous: Vec<SigningKey>,
}

impl Keys {
    fn from_stored(stored: &StoredKeys) -> Result<Self, KeyError> {
        Ok(Self {
            current: stored.current.signing_key()?,
            previous: stored
                .previous
                .iter()
                .map(StoredKey::signing_key)
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn jwks(&self) -> Jwks {
        let mut keys = vec![self.current.jwk()];
        keys.extend(self.previous.iter().map(SigningKey::jwk));
        Jwks { keys }
    }
}

/// The signing keys, loaded from OpenBao and swappable at run time.
#[derive(Clone)]
pub struct KeyRing {
    vault: Vault,
    mount: String,
    path: String,
    keys: Arc<ArcSwap<Keys>>,
}

impl KeyRing {
    /// Reads the key document, creating it with a fresh key when OpenBao has none.
    pub async fn load(settings: &VaultSettings) -> Result<Self, KeyError> {
        let vault = Vault::new(&settings.addr, settings.token.clone())?;
        let mount = settings.kv_mount.clone();
        let path = settings.signing_keys_path.clone();
        // A dev server has `secret/` already; elsewhere the mount may be missing. Best effort:
        // a token without the right to mount gets its answer from the read below.
        if let Err(e) = vault.mount(&mount, "kv").await {
            tracing::debug!(error = %e, mount = %mount, "could not ensure the KV mount");
        }
        let stored = match vault.kv_get::<StoredKeys>(&mount, &path).await? {
            Some(stored) => stored,
            None => {
                let fresh = StoredKeys {
                    current: StoredKey::generate(),
                    previous: Vec::new(),
                };
                // Check-and-set: of two replicas starting at once, one key wins and both use it.
                if vault.kv_create(&mount, &path, &fresh).await? {
                    tracing::info!(kid = %fresh.current.kid, "created the first token signing key in OpenBao");
                    fresh
                } else {
                    vault
                        .kv_get::<StoredKeys>(&mount, &path)
                        .await?
                        .ok_or_else(|| KeyError::Invalid("the key document disappeared".into()))?
                }
            }
        };
        let keys = Keys::from_stored(&stored)?;
        Ok(Self {
            vault,
            mount,
            path,
            keys: Arc::new(ArcSwap::from_pointee(keys)),
        })
    }

    pub fn current(&self) -> Arc<Keys> {
        self.keys.load_full()
    }

    /// Makes a new current key, retires the current one, drops retired keys older than
    /// `token_lifetime`, stores the result and swaps it in. Returns the new and the retired kid.
    pub async fn rotate(&self, token_lifetime: Duration) -> Result<(String, String), KeyError> {
        // Start from what OpenBao holds, in case another replica rotated since we last read.
        let latest = self
            .vault
            .kv_get::<StoredKeys>(&self.mount, &self.path)
            .await?
            .ok_or_else(|| KeyError::Invalid("the key document disappeared".into()))?;
        let now = chrono::Utc::now().timestamp();
        let oldest_needed = now.saturating_sub(token_lifetime.as_secs() as i64);
        let retiring = StoredKey {
            retired_at: Some(now),
            ..latest.current
        };
        let previous = retiring.kid.clone();
        let mut retired = vec![retiring];
        retired.extend(
            latest
                .previous
                .into_iter()
                .filter(|k| k.retired_at.unwrap_or(now) >= oldest_needed),
        );
        let stored = StoredKeys {
            current: StoredKey::generate(),
            previous: retired,
        };
        let keys = Keys::from_stored(&stored)?;
        self.vault.kv_put(&self.mount, &self.path, &stored).await?;
        let current = keys.current.kid().to_owned();
        self.keys.store(Arc::new(keys));
        Ok((current, previous))
    }

    /// Re-reads the document every `every` until `shutdown`, picking up other replicas' rotations.
    pub fn spawn_reloader(
        &self,
        every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let ring = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                match ring
                    .vault
                    .kv_get::<StoredKeys>(&ring.mount, &ring.path)
                    .await
                {
                    Ok(Some(stored)) if stored.current.kid != ring.current().current.kid() => {
                        match Keys::from_stored(&stored) {
                            Ok(keys) => {
                                tracing::info!(kid = %stored.current.kid, "picked up a rotated signing key");
                                ring.keys.store(Arc::new(keys));
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "ignoring an invalid key document")
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "could not re-read the signing keys"),
                }
            }
        })
    }
}

/// Identity verifies its own tokens (for `/me`, `/logout`) from the key ring, not over HTTP.
impl KeySource for KeyRing {
    fn fetch(&self) -> BoxFuture<'_, Result<Jwks, String>> {
        let jwks = self.current().jwks();
        Box::pin(async move { Ok(jwks) })
    }
}
