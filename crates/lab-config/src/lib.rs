//! Typed settings for every Lab process.
//!
//! Each service declares one `Settings` struct with `serde` defaults that run on a developer's
//! machine. [`load`] overlays environment variables named `LAB_<SERVICE>__<FIELD>[__<SUBFIELD>]`
//! (double underscore separates levels) and deserializes the result, so a bad value is reported
//! with the variable that caused it. Only the apphost knows ports; it passes them to children this
//! way. Secrets are [`SecretString`], which never prints its value.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Why settings could not be loaded; each variant names what the operator must fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}={value:?} is not valid: {reason}")]
    BadValue {
        var: String,
        value: String,
        reason: String,
    },
    #[error("settings for {service} are not valid: {reason}")]
    Invalid { service: String, reason: String },
}

/// A string that must not reach a log line, a panic message or a `Debug` dump.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is handed to the thing that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(***)")
    }
}

/// The environment prefix of a service: `catalog` → `LAB_CATALOG__`.
pub fn env_prefix(service: &str) -> String {
    format!("LAB_{}__", service.to_ascii_uppercase().replace('-', "_"))
}

/// Loads `T` for `service` from its defaults overlaid with the process environment.
pub fn load<T>(service: &str) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    load_from(service, std::env::vars())
}

/// Loads `T` from its defaults overlaid with the given variables; tests pass their own, so no
/// test ever mutates the process environment.
pub fn load_from<T, I>(service: &str, vars: I) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
    I: IntoIterator<Item = (String, String)>,
{
    let prefix = env_prefix(service);
    let mut tree = serde_json::to_value(T::default()).map_err(|e| ConfigError::Invalid {
        service: service.to_owned(),
        reason: e.to_string(),
    })?;
    // Sorted so that the error for several bad variables is deterministic.
    let overrides: BTreeMap<String, String> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .collect();
    for (var, raw) in &overrides {
        let path: Vec<String> = var[prefix.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        set_path(&mut tree, &path, raw).map_err(|reason| ConfigError::BadValue {
            var: var.clone(),
            value: raw.clone(),
            reason,
        })?;
        // Deserialize after each override so the error names the variable that broke it.
        if let Err(e) = T::deserialize(&tree) {
            return Err(ConfigError::BadValue {
                var: var.clone(),
                value: raw.clone(),
                reason: e.to_string(),
            });
        }
    }
    T::deserialize(&tree).map_err(|e| ConfigError::Invalid {
        service: service.to_owned(),
        reason: e.to_string(),
    })
}

fn set_path(tree: &mut Value, path: &[String], raw: &str) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty setting name".into());
    };
    let mut node = tree;
    for key in parents {
        let map = node
            .as_object_mut()
            .ok_or_else(|| format!("`{key}` is not a section"))?;
        node = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    let map = node
        .as_object_mut()
        .ok_or_else(|| format!("`{last}` has no parent section"))?;
    if !map.contains_key(last) {
        return Err(format!("unknown setting `{last}`"));
    }
    map.insert(last.clone(), typed(&map[last], raw));
    Ok(())
}

/// Interprets `raw` with the type of the default it replaces, so `LAB_X__PORT=80` is a number
/// and `LAB_X__NAME=80` stays a string.
fn typed(default: &Value, raw: &str) -> Value {
    match default {
        Value::String(_) | Value::Null => Value::String(raw.to_owned()),
        _ => serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Db {
        url: String,
        max_connections: u32,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct S {
        name: String,
        port: u16,
        db: Db,
        token: SecretString,
    }

    impl Default for Db {
        fn default() -> Self {
            Self {
                url: "postgres://localhost/lab".into(),
                max_connections: 10,
            }
        }
    }

    impl Default for S {
        fn default() -> Self {
            Self {
                name: "x".into(),
                port: 8080,
                db: Db::default(),
                token: SecretString::new("t"),
            }
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply_when_no_variable_is_set() {
        let s: S = load_from("catalog", vars(&[("OTHER", "1")])).unwrap();
        assert_eq!(s, S::default());
    }

    #[test]
    fn nested_variables_override_their_field_with_its_type() {
        let s: S = load_from(
            "catalog",
            vars(&[
                ("LAB_CATALOG__PORT", "9000"),
                ("LAB_CATALOG__NAME", "123"),
                ("LAB_CATALOG__DB__MAX_CONNECTIONS", "3"),
                ("LAB_ORDERS__PORT", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(s.port, 9000);
        assert_eq!(s.name, "123");
        assert_eq!(s.db.max_connections, 3);
    }

    #[test]
    fn a_bad_value_names_the_variable() {
        let err = load_from::<S, _>("catalog", vars(&[("LAB_CATALOG__PORT", "eighty")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("LAB_CATALOG__PORT"), "{err}");
        assert!(err.contains("eighty"), "{err}");
    }

    #[test]
    fn an_unknown_setting_is_refused_with_its_name() {
        let err = load_from::<S, _>("catalog", vars(&[("LAB_CATALOG__PROT", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown setting `prot`"), "{err}");
    }

    #[test]
    fn a_secret_never_prints() {
        let s = S::default();
        assert!(!format!("{s:?}").contains("\"t\""));
        assert!(format!("{:?}", s.token).contains("***"));
    }
}
