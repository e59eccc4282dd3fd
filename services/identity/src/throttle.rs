//! Login throttling, per account and per client address, in Redis so every replica counts
//! together.
//!
//! Per address: every attempt counts (a password spray across many accounts). Per account:
//! failures count (guessing one account's password), and the counter clears on success. Both
//! are fixed windows started by the first count. An unknown email is counted exactly like a
//! known one, so throttling tells nothing about which accounts exist. With Redis down, logins
//! go on unthrottled (logged): locking everyone out would be worse.

use std::time::Duration;

use lab_cache::Redis;
use serde::{Deserialize, Serialize};

/// Limits of the two counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ThrottleSettings {
    /// Failed logins one account may have per window before it is refused for the rest of it.
    pub account_failures: u32,
    /// The per-account window.
    pub account_window_s: u64,
    /// Login attempts one client address may make per window.
    pub address_attempts: u32,
    /// The per-address window.
    pub address_window_s: u64,
    /// Take the client address from the last `X-Forwarded-For` hop (identity is reached through
    /// the BFF, which appends it); without it every caller counts as one address.
    pub trust_forwarded_for: bool,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            // OWASP's lockout guidance: a handful of failures, then a pause of minutes.
            account_failures: 5,
            account_window_s: 900,
            // A person mistypes a few times a minute; a script tries hundreds.
            address_attempts: 20,
            address_window_s: 60,
            trust_forwarded_for: true,
        }
    }
}

/// Counts one more and returns the count and the window's remaining milliseconds.
const COUNT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}
";

/// Refused until the window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
}

#[derive(Clone)]
pub struct Throttle {
    redis: Redis,
    settings: ThrottleSettings,
}

fn account_id(email: &str) -> String {
    // Hashed: keys in Redis should not list customers' addresses.
    let digest = ring::digest::digest(&ring::digest::SHA256, email.as_bytes());
    lab_auth::jwt::b64url(&digest.as_ref()[..16])
}

fn retry_after(pttl_ms: i64) -> Duration {
    // Round up: a client that waits the advertised seconds must find the window gone.
    Duration::from_secs((pttl_ms.max(0) as u64).div_ceil(1000).max(1))
}

impl Throttle {
    pub fn new(redis: Redis, settings: ThrottleSettings) -> Self {
        Self { redis, settings }
    }

    pub fn settings(&self) -> &ThrottleSettings {
        &self.settings
    }

    async fn count(&self, key: String, window_s: u64) -> Option<(i64, i64)> {
        let mut conn = self.redis.conn();
        match redis::Script::new(COUNT)
            .key(key)
            .arg(window_s.saturating_mul(1000))
            .invoke_async::<(i64, i64)>(&mut conn)
            .await
        {
            Ok(counted) => Some(counted),
            Err(e) => {
                tracing::warn!(error = %e, "login throttling unavailable; letting the attempt through");
                None
            }
        }
    }

    /// Counts an attempt from `address` and checks both limits before the password is looked at.
    pub async fn before_attempt(&self, address: &str, email: &str) -> Result<(), Throttled> {
        let s = &self.settings;
        if let Some((n, pttl)) = self
            .count(
                self.redis.key(&format!("login:addr:{address}")),
                s.address_window_s,
            )
            .await
            && n > i64::from(s.address_attempts)
        {
            return Err(Throttled {
                retry_after: retry_after(pttl),
            });
        }
        let mut conn = self.redis.conn();
        let key = self.redis.key(&format!("login:acct:{}", account_id(email)));
        let state: Result<(Option<i64>, i64), _> = redis::pipe()
            .get(&key)
            .pttl(&key)
            .query_async(&mut conn)
            .await;
        if let Ok((Some(failures), pttl)) = state
            && failures >= i64::from(s.account_failures)
        {
            return Err(Throttled {
                retry_after: retry_after(pttl),
            });
        }
        Ok(())
    }

    /// Counts a failed login against the account.
    pub async fn failed(&self, email: &str) {
        let key = self.redis.key(&format!("login:acct:{}", account_id(email)));
        let _ = self.count(key, self.settings.account_window_s).await;
    }

    /// Clears the account's failures after a successful login.
    pub async fn succeeded(&self, email: &str) {
        let key = self.redis.key(&format!("login:acct:{}", account_id(email)));
        let mut conn = self.redis.conn();
        let _: Result<i64, _> = redis::cmd("DEL").arg(key).query_async(&mut conn).await;
    }
}
