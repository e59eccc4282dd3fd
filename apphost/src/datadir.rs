//! The apphost's data directory (`.lab/` by default) and the small files in it: `state.json`
//! (ports chosen once, so a second start reuses them and the data), `secrets.json` (generated
//! passwords and the OpenBao root token, mode 0600) and `apphost.json` (the running apphost's pid
//! and control API address, which `lab status` and `lab down` read).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why a file of the data directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    // `reason`, not `source`: the message already carries it, and a source would print twice.
    #[error("cannot use {path}: {reason}")]
    Io {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("{path} is corrupt ({reason}): delete it and run `lab up` again")]
    Corrupt { path: PathBuf, reason: String },
}

/// The root of everything the apphost keeps on disk.
#[derive(Debug, Clone)]
pub struct DataDir {
    /// Absolute, so children started elsewhere and `lab status` agree on it.
    root: PathBuf,
}

impl DataDir {
    /// Opens (creating) the data directory at `root`.
    pub fn open(root: &Path) -> Result<Self, DataDirError> {
        std::fs::create_dir_all(root).map_err(|source| io(root, source))?;
        let root = std::path::absolute(root).map_err(|source| io(root, source))?;
        Ok(Self { root })
    }

    /// The data directory without creating it (for `lab status`, which must not leave one behind).
    pub fn existing(root: &Path) -> Self {
        Self {
            root: std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<name>`, created as a directory.
    pub fn subdir(&self, name: &str) -> Result<PathBuf, DataDirError> {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).map_err(|source| io(&dir, source))?;
        Ok(dir)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Reads `name` as JSON; `None` when it does not exist.
    pub fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, DataDirError> {
        let path = self.file(name);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| DataDirError::Corrupt {
                        path,
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(io(&path, source)),
        }
    }

    /// Writes `value` as JSON to `name` atomically (temp file + rename), with file mode `mode`.
    pub fn write_json<T: Serialize>(
        &self,
        name: &str,
        value: &T,
        mode: u32,
    ) -> Result<(), DataDirError> {
        let path = self.file(name);
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{file_name}.tmp"));
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| DataDirError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let write = || -> std::io::Result<()> {
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|source| io(&path, source))
    }

    pub fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.file(name));
    }
}

fn io(path: &Path, reason: std::io::Error) -> DataDirError {
    DataDirError::Io {
        path: path.to_path_buf(),
        reason,
    }
}

/// `state.json`: what must stay the same from one start to the next.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Port of each infrastructure instance and each service process, by name.
    pub ports: BTreeMap<String, u16>,
}

impl State {
    pub const FILE: &str = "state.json";

    pub fn load(dir: &DataDir) -> Result<Self, DataDirError> {
        Ok(dir.read_json(Self::FILE)?.unwrap_or_default())
    }

    pub fn save(&self, dir: &DataDir) -> Result<(), DataDirError> {
        dir.write_json(Self::FILE, self, 0o644)
    }
}

/// `secrets.json`: generated once, readable by its owner only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Secrets {
    /// The private PostgreSQL's superuser (`postgres`) password.
    pub postgres_admin: String,
    /// Password of the services' static logins on the private PostgreSQL.
    pub static_login: String,
    /// Password of OpenBao's admin login on PostgreSQL.
    pub vault_admin: String,
    /// OpenBao dev server's root token.
    pub vault_root_token: String,
    /// The key every BFF replica signs session cookies with, so each accepts the others' and a
    /// restarted BFF the ones it issued before (added later: absent from older files, then made
    /// and saved on the next load).
    #[serde(default)]
    pub bff_session_key: String,
}

impl Secrets {
    pub const FILE: &str = "secrets.json";

    /// The secrets of this data directory, generating and saving them on first use.
    pub fn load_or_create(dir: &DataDir) -> Result<Self, DataDirError> {
        if let Some(mut s) = dir.read_json::<Self>(Self::FILE)? {
            if s.bff_session_key.is_empty() {
                s.bff_session_key = session_key();
                dir.write_json(Self::FILE, &s, 0o600)?;
            }
            return Ok(s);
        }
        let s = Self {
            postgres_admin: random_secret(),
            static_login: random_secret(),
            vault_admin: random_secret(),
            vault_root_token: format!("lab-{}", random_secret()),
            bff_session_key: session_key(),
        };
        dir.write_json(Self::FILE, &s, 0o600)?;
        Ok(s)
    }
}

/// 64 alphanumeric characters: the BFF wants at least 32 bytes of key.
fn session_key() -> String {
    format!("{}{}", random_secret(), random_secret())
}

/// 32 alphanumeric characters (~190 bits): safe inside URLs and SQL literals without escaping.
pub fn random_secret() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// `apphost.json`: the apphost that is running on this data directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApphostInfo {
    /// Its process id; `lab down` signals it.
    pub pid: u32,
    /// Base URL of its control API (`GET /processes`).
    pub control_url: String,
    /// The BFF's public URL.
    pub bff_url: String,
}

impl ApphostInfo {
    pub const FILE: &str = "apphost.json";
}
