//! A small OpenBao/Vault client over HTTP, for the handful of endpoints Lab needs.
//!
//! `vaultrs` drops the `lease_id` of database credentials and cannot renew or revoke leases, so
//! it cannot drive credential rotation (see VAULT.md); this client covers exactly what Lab uses:
//! token auth (`X-Vault-Token`), `sys/health`, mounting secrets engines, the database secrets
//! engine (connection config, roles, leased credentials), lease renew/revoke, and KV v2.

mod database;

use std::time::Duration;

use lab_config::SecretString;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use database::{DbConnection, DbCredentials, DbRole, Lease};

/// Why a call to OpenBao failed, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("OpenBao at {addr} is unreachable ({reason}): start it, or fix its address")]
    Unreachable { addr: String, reason: String },
    #[error("OpenBao refused {method} {path}: {status} {errors}")]
    Api {
        method: String,
        path: String,
        status: u16,
        errors: String,
    },
    #[error("OpenBao answered {path} with an unexpected body: {reason}")]
    Body { path: String, reason: String },
    #[error("the OpenBao client could not be built: {0}")]
    Client(String),
}

impl VaultError {
    /// The HTTP status OpenBao answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client bound to one OpenBao address and token. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    /// `http://127.0.0.1:8200`, without a trailing slash.
    addr: String,
    /// Sent as `X-Vault-Token` on every call.
    token: SecretString,
    /// Shared connection pool.
    http: reqwest::Client,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("addr", &self.addr).finish()
    }
}

/// What `sys/health` says.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Health {
    /// Whether the server is initialized.
    pub initialized: bool,
    /// Whether it is sealed (a sealed server serves nothing).
    pub sealed: bool,
    /// Its version string.
    #[serde(default)]
    pub version: String,
}

impl Vault {
    /// A client for `addr` with `token`.
    pub fn new(addr: &str, token: SecretString) -> Result<Self, VaultError> {
        let http = reqwest::Client::builder()
            // OpenBao runs next to the caller; a connect slower than this means it is not there.
            .connect_timeout(Duration::from_millis(1_000))
            // Every call here is a small metadata operation; the database engine's own calls to
            // PostgreSQL are the slowest and take well under this.
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| VaultError::Client(e.to_string()))?;
        Ok(Self {
            addr: addr.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    /// The server's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `GET /v1/sys/health`; answers even when sealed (with `sealed: true`).
    pub async fn health(&self) -> Result<Health, VaultError> {
        // Without these, a sealed or standby server answers with a 5xx/4xx status.
        let path = "sys/health?standbyok=true&sealedcode=200&uninitcode=200";
        self.call::<()>(Method::GET, path, None)
            .await?
            .ok_or_else(|| body_error(path, "empty body"))
            .and_then(|v| parse(path, v))
    }

    /// Mounts a secrets engine of `kind` at `path`; an existing mount there is left as it is.
    pub async fn mount(&self, path: &str, kind: &str) -> Result<(), VaultError> {
        let url = format!("sys/mounts/{path}");
        let mut body = serde_json::json!({ "type": kind });
        if kind == "kv" {
            body["options"] = serde_json::json!({ "version": "2" });
        }
        match self.call(Method::POST, &url, Some(&body)).await {
            Ok(_) => Ok(()),
            // "path is already in use": mounting is idempotent for us.
            Err(e) if e.status() == Some(400) && self.is_mounted(path).await? => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn is_mounted(&self, path: &str) -> Result<bool, VaultError> {
        let mounts = self.call::<()>(Method::GET, "sys/mounts", None).await?;
        let key = format!("{}/", path.trim_end_matches('/'));
        Ok(mounts.is_some_and(|m| m.get(&key).is_some() || m["data"].get(&key).is_some()))
    }

    /// `PUT /v1/sys/leases/renew`: extends `lease_id` by `increment`; the answer may be capped by
    /// the role's `max_ttl`, which is the signal to rotate.
    pub async fn renew(&self, lease_id: &str, increment: Duration) -> Result<Lease, VaultError> {
        let body = serde_json::json!({ "lease_id": lease_id, "increment": increment.as_secs() });
        let v = self
            .call(Method::PUT, "sys/leases/renew", Some(&body))
            .await?
            .ok_or_else(|| body_error("sys/leases/renew", "empty body"))?;
        Lease::from_response("sys/leases/renew", &v)
    }

    /// `PUT /v1/sys/leases/revoke`: ends `lease_id` now (OpenBao runs the role's revocation).
    pub async fn revoke(&self, lease_id: &str) -> Result<(), VaultError> {
        let body = serde_json::json!({ "lease_id": lease_id });
        self.call(Method::PUT, "sys/leases/revoke", Some(&body))
            .await?;
        Ok(())
    }

    /// Revokes every lease under `prefix` (e.g. `database/creds/`), before a dev server that keeps
    /// its leases in memory is stopped.
    pub async fn revoke_prefix(&self, prefix: &str) -> Result<(), VaultError> {
        let path = format!("sys/leases/revoke-prefix/{}", prefix.trim_matches('/'));
        self.call::<()>(Method::PUT, &path, None).await?;
        Ok(())
    }

    /// KV v2 write of `data` at `mount/path`.
    pub async fn kv_put<T: Serialize>(
        &self,
        mount: &str,
        path: &str,
        data: &T,
    ) -> Result<(), VaultError> {
        let body = serde_json::json!({ "data": data });
        self.call(Method::POST, &format!("{mount}/data/{path}"), Some(&body))
            .await?;
        Ok(())
    }

    /// KV v2 write of `data` at `mount/path` only if nothing was ever written there
    /// (check-and-set 0); `false` when another writer got there first.
    pub async fn kv_create<T: Serialize>(
        &self,
        mount: &str,
        path: &str,
        data: &T,
    ) -> Result<bool, VaultError> {
        let body = serde_json::json!({ "options": { "cas": 0 }, "data": data });
        match self
            .call(Method::POST, &format!("{mount}/data/{path}"), Some(&body))
            .await
        {
            Ok(_) => Ok(true),
            Err(VaultError::Api {
                status: 400,
                errors,
                ..
            }) if errors.contains("check-and-set") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// KV v2 read of the latest version at `mount/path`; `None` when there is none.
    pub async fn kv_get<T: DeserializeOwned>(
        &self,
        mount: &str,
        path: &str,
    ) -> Result<Option<T>, VaultError> {
        let url = format!("{mount}/data/{path}");
        match self.call::<()>(Method::GET, &url, None).await {
            Ok(Some(v)) => parse(&url, v["data"]["data"].clone()).map(Some),
            Ok(None) => Ok(None),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One call: JSON in, JSON out (`None` for 204), OpenBao's `errors` in the error.
    async fn call<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Option<Value>, VaultError> {
        let url = format!("{}/v1/{path}", self.addr);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("X-Vault-Token", self.token.expose());
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| VaultError::Unreachable {
            addr: self.addr.clone(),
            reason: if e.is_connect() {
                "connection refused".into()
            } else {
                e.to_string()
            },
        })?;
        let status = resp.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let text = resp.text().await.map_err(|e| body_error(path, e))?;
        if !status.is_success() {
            let errors = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("errors").cloned())
                .map(|e| e.to_string())
                .unwrap_or(text);
            return Err(VaultError::Api {
                method: method.to_string(),
                path: path.to_owned(),
                status: status.as_u16(),
                errors,
            });
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| body_error(path, e))
    }
}

fn body_error(path: &str, reason: impl ToString) -> VaultError {
    VaultError::Body {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn parse<T: DeserializeOwned>(path: &str, v: Value) -> Result<T, VaultError> {
    serde_json::from_value(v).map_err(|e| body_error(path, e))
}
