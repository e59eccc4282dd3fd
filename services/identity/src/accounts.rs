//! Users in the `users` table: creating one, finding one by email or id.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::Email;

/// A user as `/register` and `/me` show it (never the hash).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("an account with this email already exists")]
    Taken,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Creates a user; [`AccountError::Taken`] when the email is in use.
pub async fn create(
    pool: &PgPool,
    email: &Email,
    password_hash: &str,
    roles: &[String],
) -> Result<User, AccountError> {
    let created = sqlx::query_as::<_, User>(
        "INSERT INTO users (id, email, password_hash, roles) VALUES ($1, $2, $3, $4)
         ON CONFLICT (email) DO NOTHING
         RETURNING id, email, roles, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(email.as_str())
    .bind(password_hash)
    .bind(roles)
    .fetch_optional(pool)
    .await?;
    created.ok_or(AccountError::Taken)
}

/// A user row with its password hash, for login only.
#[derive(sqlx::FromRow)]
struct WithHash {
    #[sqlx(flatten)]
    user: User,
    password_hash: String,
}

/// The user with `email` and its password hash.
pub async fn by_email(pool: &PgPool, email: &Email) -> Result<Option<(User, String)>, sqlx::Error> {
    let row = sqlx::query_as::<_, WithHash>(
        "SELECT id, email, roles, created_at, password_hash FROM users WHERE email = $1",
    )
    .bind(email.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.user, r.password_hash)))
}

pub async fn by_id(pool: &PgPool, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as::<_, User>("SELECT id, email, roles, created_at FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}
