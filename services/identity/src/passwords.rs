//! Argon2id password hashes, and a login path that costs the same whether or not the account
//! exists.
//!
//! Parameters: OWASP's first Argon2id recommendation (19 MiB, 2 passes, 1 lane), about 20-40 ms
//! on a laptop core. Hashing runs on the blocking pool so it never stalls the async workers.
//! An unknown email is verified against a dummy hash made at start-up with the same
//! parameters, so both paths do one full Argon2id computation.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};

use crate::domain::Password;

/// 19 MiB, in KiB.
const MEMORY_KIB: u32 = 19 * 1024;
/// Passes over memory.
const ITERATIONS: u32 = 2;
/// Lanes: 1, since the blocking pool already gives concurrency across logins.
const LANES: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("argon2: {0}")]
    Argon2(String),
    #[error("the hashing task failed: {0}")]
    Task(String),
}

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct Hasher {
    /// A hash of a random password nobody knows, verified when the email is unknown.
    dummy: Arc<str>,
}

fn argon2() -> Result<Argon2<'static>, HashError> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, LANES, None)
        .map_err(|e| HashError::Argon2(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_now(password: &str) -> Result<String, HashError> {
    let salt: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Argon2(e.to_string()))?;
    argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Argon2(e.to_string()))
}

fn verify_now(password: &str, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    // Verification uses the parameters stored in the hash, so old hashes keep working after
    // the constants above change.
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

impl Hasher {
    pub async fn new() -> Result<Self, HashError> {
        let secret: [u8; 32] = rand::random();
        let unknown = lab_auth::jwt::b64url(&secret);
        let dummy = tokio::task::spawn_blocking(move || hash_now(&unknown))
            .await
            .map_err(|e| HashError::Task(e.to_string()))??;
        Ok(Self {
            dummy: dummy.into(),
        })
    }

    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let password = password.expose().to_owned();
        tokio::task::spawn_blocking(move || hash_now(&password))
            .await
            .map_err(|e| HashError::Task(e.to_string()))?
    }

    /// Whether `password` matches `hash`; with no hash (unknown email) it checks the dummy and
    /// answers false, in the same time.
    pub async fn verify(&self, password: &Password, hash: Option<String>) -> bool {
        let password = password.expose().to_owned();
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.to_string());
        let matched = tokio::task::spawn_blocking(move || verify_now(&password, &hash))
            .await
            .unwrap_or(false);
        matched && known
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    async fn fastest_of_three(
        hasher: &Hasher,
        password: &Password,
        hash: Option<&str>,
    ) -> Duration {
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            let _ = hasher.verify(password, hash.map(str::to_owned)).await;
            best = best.min(started.elapsed());
        }
        best
    }

    #[tokio::test]
    async fn the_right_password_verifies_and_a_wrong_one_does_not() {
        let hasher = Hasher::new().await.expect("hasher");
        let password = Password::parse(Some("correct horse")).expect("password");
        let hash = hasher.hash(&password).await.expect("hash");
        let wrong = Password::parse(Some("wrong horse")).expect("password");

        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(hasher.verify(&password, Some(hash.clone())).await);
        assert!(!hasher.verify(&wrong, Some(hash)).await);
        assert!(!hasher.verify(&password, None).await);
    }

    #[tokio::test]
    async fn an_unknown_account_costs_about_as_much_as_a_wrong_password() {
        let hasher = Hasher::new().await.expect("hasher");
        let password = Password::parse(Some("correct horse")).expect("password");
        let hash = hasher.hash(&password).await.expect("hash");
        let wrong = Password::parse(Some("wrong horse")).expect("password");

        let known = fastest_of_three(&hasher, &wrong, Some(&hash)).await;
        let unknown = fastest_of_three(&hasher, &wrong, None).await;

        // Both run one full Argon2id; the bound is loose because tests share the machine.
        let ratio = unknown.as_secs_f64() / known.as_secs_f64();
        assert!(
            (0.33..3.0).contains(&ratio),
            "known {known:?}, unknown {unknown:?}"
        );
    }
}
