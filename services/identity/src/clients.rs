//! Client tokens: narrow, short-lived tokens identity issues to one configured client (the
//! BFF) so it can make anonymous demo calls to other services.
//!
//! The client proves itself with its secret (compared in constant time); the token it gets has
//! `sub = client:<id>`, no roles, no session, and only the configured scopes, so a service
//! accepts it on `RequireScope<…>` routes and refuses it on `RequireUser` ones. Without a
//! configured secret the endpoint refuses everyone.

use lab_auth::{Audience, Claims};
use lab_config::SecretString;
use serde::{Deserialize, Serialize};

use crate::keys::KeyRing;

/// The one client allowed to ask for client tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientSettings {
    /// Its id (`LAB_IDENTITY__CLIENT__ID`).
    pub id: String,
    /// Its secret (`LAB_IDENTITY__CLIENT__SECRET`); empty disables client tokens.
    pub secret: SecretString,
    /// Space-separated scopes its tokens carry.
    pub scope: String,
    /// `aud` of its tokens.
    pub audience: String,
    /// Lifetime of its tokens.
    pub ttl_s: i64,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            id: "bff".into(),
            secret: SecretString::default(),
            scope: "demo".into(),
            audience: "lab".into(),
            // Five minutes: the client asks again cheaply; a leaked token is soon useless.
            ttl_s: 300,
        }
    }
}

/// A client token as handed out.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClientToken {
    pub access_token: String,
    /// `Bearer`.
    pub token_type: &'static str,
    pub expires_in: i64,
    /// What the token may do.
    pub scope: String,
}

/// Compares in time independent of where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ClientSettings {
    /// Whether `id` and `secret` are the configured client's.
    pub fn authenticates(&self, id: &str, secret: &str) -> bool {
        let expected = self.secret.expose();
        // Both compared, always, so timing tells neither which one was wrong.
        let id_ok = constant_time_eq(id.as_bytes(), self.id.as_bytes());
        let secret_ok = constant_time_eq(secret.as_bytes(), expected.as_bytes());
        !expected.is_empty() && id_ok && secret_ok
    }

    /// Signs a token for the configured client.
    pub fn issue(&self, keys: &KeyRing, issuer: &str) -> Result<ClientToken, String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            iss: issuer.to_owned(),
            aud: Audience::One(self.audience.clone()),
            sub: format!("client:{}", self.id),
            jti: uuid::Uuid::new_v4().to_string(),
            exp: now + self.ttl_s,
            iat: now,
            nbf: None,
            roles: Vec::new(),
            scope: self.scope.clone(),
            sid: None,
        };
        let token = keys
            .current()
            .current
            .sign(&claims)
            .map_err(|e| e.to_string())?;
        Ok(ClientToken {
            access_token: token,
            token_type: "Bearer",
            expires_in: self.ttl_s,
            scope: self.scope.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unconfigured_secret_authenticates_nobody() {
        let settings = ClientSettings::default();
        assert!(!settings.authenticates("bff", ""));
    }

    #[test]
    fn only_the_configured_id_and_secret_authenticate() {
        let settings = ClientSettings {
            secret: SecretString::new("s3cret"),
            ..ClientSettings::default()
        };
        assert!(settings.authenticates("bff", "s3cret"));
        assert!(!settings.authenticates("bff", "s3creT"));
        assert!(!settings.authenticates("other", "s3cret"));
    }
}
