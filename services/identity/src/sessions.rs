//! Sessions: an access token and a refresh token per login, rotated refresh tokens, revocation.
//!
//! A session is a refresh-token *family*: the token issued at login and every token rotated from
//! it. A refresh token is 256 random bits, given to the client once and stored only as its
//! SHA-256. Each use marks it used and issues the next one in the same transaction; presenting a
//! used token again means it was stolen (or the client is broken), so the whole family is
//! revoked, its live access tokens included, and a security event is written.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use lab_auth::{Audience, Claims, Revocations};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::keys::KeyRing;

/// Lifetimes and names in the tokens identity issues.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenSettings {
    /// `iss` of every token.
    pub issuer: String,
    /// `aud` of user tokens: every Lab service accepts it.
    pub audience: String,
    /// Access token lifetime.
    pub access_ttl_s: i64,
    /// Refresh token lifetime (of each token; a family lives as long as it is used).
    pub refresh_ttl_s: i64,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            issuer: "lab-identity".into(),
            audience: "lab".into(),
            // 15 minutes: short enough that a leaked token soon dies on its own, long enough that
            // a page view does not refresh.
            access_ttl_s: 900,
            // 14 days: a visitor who comes back within two weeks stays signed in.
            refresh_ttl_s: 14 * 86_400,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("signing the token failed: {0}")]
    Sign(String),
    #[error(transparent)]
    Revocation(#[from] lab_auth::RevocationError),
    /// Unknown, expired or revoked.
    #[error("the refresh token is not valid")]
    InvalidRefresh,
    /// Already used: the session has just been revoked. The caller gets the same answer as for
    /// [`SessionError::InvalidRefresh`].
    #[error("the refresh token was already used")]
    Reused,
}

/// What a login or a refresh hands the client.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    /// The EdDSA-signed JWT to send as `Authorization: Bearer …`.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Single use: trade it at `/token/refresh` for the next pair.
    pub refresh_token: String,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: i64,
}

/// The user a session speaks for.
#[derive(Debug, Clone)]
pub struct Subject {
    pub id: Uuid,
    pub roles: Vec<String>,
}

fn hash(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

/// Signs an access token for `subject` in session `family`.
pub fn access_token(
    keys: &KeyRing,
    settings: &TokenSettings,
    subject: &Subject,
    family: Uuid,
    now: DateTime<Utc>,
) -> Result<(Uuid, Claims, String), SessionError> {
    let jti = Uuid::new_v4();
    let claims = Claims {
        iss: settings.issuer.clone(),
        aud: Audience::One(settings.audience.clone()),
        sub: subject.id.to_string(),
        jti: jti.to_string(),
        exp: now.timestamp() + settings.access_ttl_s,
        iat: now.timestamp(),
        nbf: None,
        roles: subject.roles.clone(),
        scope: String::new(),
        sid: Some(family.to_string()),
    };
    let token = keys
        .current()
        .current
        .sign(&claims)
        .map_err(|e| SessionError::Sign(e.to_string()))?;
    Ok((jti, claims, token))
}

/// Issues a pair in `family` (a new one at login) and records the refresh token, inside `tx`.
async fn issue(
    tx: &mut sqlx::PgConnection,
    keys: &KeyRing,
    settings: &TokenSettings,
    subject: &Subject,
    family: Uuid,
) -> Result<TokenPair, SessionError> {
    let now = Utc::now();
    let (jti, claims, access) = access_token(keys, settings, subject, family, now)?;
    let refresh = lab_auth::jwt::b64url(&rand::random::<[u8; 32]>());
    let access_exp = DateTime::from_timestamp(claims.exp, 0).unwrap_or(now);
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, access_jti, access_exp, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(hash(&refresh))
    .bind(family)
    .bind(subject.id)
    .bind(jti)
    .bind(access_exp)
    .bind(now + ChronoDuration::seconds(settings.refresh_ttl_s))
    .execute(&mut *tx)
    .await?;
    Ok(TokenPair {
        access_token: access,
        token_type: "Bearer",
        expires_in: settings.access_ttl_s,
        refresh_token: refresh,
        refresh_expires_in: settings.refresh_ttl_s,
    })
}

/// A new session for `subject`.
pub async fn start(
    pool: &PgPool,
    keys: &KeyRing,
    settings: &TokenSettings,
    subject: &Subject,
) -> Result<TokenPair, SessionError> {
    let mut conn = pool.acquire().await?;
    issue(&mut conn, keys, settings, subject, Uuid::now_v7()).await
}

/// Trades `refresh_token` for the next pair; a reused token revokes its family.
pub async fn refresh(
    pool: &PgPool,
    keys: &KeyRing,
    revocations: &Revocations,
    settings: &TokenSettings,
    refresh_token: &str,
) -> Result<TokenPair, SessionError> {
    let token_hash = hash(refresh_token);
    let mut tx = lab_db::begin(pool).await?;
    let taken: Option<(Uuid, Uuid, Vec<String>)> = sqlx::query_as(
        "UPDATE refresh_tokens r SET used_at = now()
         FROM users u
         WHERE r.token_hash = $1 AND u.id = r.user_id
           AND r.used_at IS NULL AND r.revoked_at IS NULL AND r.expires_at > now()
         RETURNING r.family_id, r.user_id, u.roles",
    )
    .bind(&token_hash)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((family, user, roles)) = taken {
        let subject = Subject { id: user, roles };
        let pair = issue(&mut tx, keys, settings, &subject, family).await?;
        tx.commit().await?;
        return Ok(pair);
    }
    tx.rollback().await?;
    let seen: Option<(Uuid, Uuid, bool, bool)> = sqlx::query_as(
        "SELECT family_id, user_id, used_at IS NOT NULL, revoked_at IS NOT NULL
         FROM refresh_tokens WHERE token_hash = $1",
    )
    .bind(&token_hash)
    .fetch_optional(pool)
    .await?;
    if let Some((family, user, true, false)) = seen {
        tracing::warn!(
            target: "security",
            user = %user,
            family = %family,
            "a used refresh token was presented again; revoking its whole session"
        );
        record_event(
            pool,
            "refresh_token_reuse",
            Some(user),
            serde_json::json!({ "family_id": family }),
        )
        .await?;
        revoke_family(pool, revocations, family).await?;
        return Err(SessionError::Reused);
    }
    Err(SessionError::InvalidRefresh)
}

/// Revokes every access token in `rows` that has not expired yet.
async fn revoke_access(
    revocations: &Revocations,
    rows: Vec<(Uuid, DateTime<Utc>)>,
) -> Result<(), SessionError> {
    let now = Utc::now();
    for (jti, exp) in rows.into_iter().filter(|(_, exp)| *exp > now) {
        revocations
            .revoke(&jti.to_string(), exp.timestamp())
            .await?;
    }
    Ok(())
}

/// Ends session `family`: its refresh tokens and its live access tokens.
pub async fn revoke_family(
    pool: &PgPool,
    revocations: &Revocations,
    family: Uuid,
) -> Result<u64, SessionError> {
    let rows: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "UPDATE refresh_tokens SET revoked_at = now()
         WHERE family_id = $1 AND revoked_at IS NULL
         RETURNING access_jti, access_exp",
    )
    .bind(family)
    .fetch_all(pool)
    .await?;
    let count = rows.len() as u64;
    revoke_access(revocations, rows).await?;
    Ok(count)
}

/// Ends every session of `user`; returns how many sessions were live.
pub async fn revoke_user(
    pool: &PgPool,
    revocations: &Revocations,
    user: Uuid,
) -> Result<u64, SessionError> {
    let rows: Vec<(Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(
        "UPDATE refresh_tokens SET revoked_at = now()
         WHERE user_id = $1 AND revoked_at IS NULL
         RETURNING family_id, access_jti, access_exp",
    )
    .bind(user)
    .fetch_all(pool)
    .await?;
    let mut families: Vec<Uuid> = rows.iter().map(|(f, _, _)| *f).collect();
    families.sort_unstable();
    families.dedup();
    revoke_access(
        revocations,
        rows.into_iter().map(|(_, j, e)| (j, e)).collect(),
    )
    .await?;
    Ok(families.len() as u64)
}

/// Keeps a security event (reuse, administrator revocation, key rotation).
pub async fn record_event(
    pool: &PgPool,
    kind: &str,
    user: Option<Uuid>,
    detail: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO security_events (kind, user_id, detail) VALUES ($1, $2, $3)")
        .bind(kind)
        .bind(user)
        .bind(detail)
        .execute(pool)
        .await?;
    Ok(())
}
