//! Secrets by reference: `secret_ref: platform/jira-credentials` names a folder under the
//! secrets directory holding one file per key (how Kubernetes mounts a Secret), with
//! environment variables as a fallback. Values are [`SecretString`]s: they never print in
//! `Debug`, logs, metrics or errors (errors name the ref and the key, never a value).

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

use crate::Vars;

/// A reference to a secret, e.g. `platform/jira-credentials`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct SecretRef(String);

impl SecretRef {
    /// The reference as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The environment variable holding `key` of this secret when no file does:
    /// `SECRET_<REF>_<KEY>`, upper-cased, other characters as `_`
    /// (`platform/jira-credentials`, `token` → `SECRET_PLATFORM_JIRA_CREDENTIALS_TOKEN`).
    pub fn env_var(&self, key: &str) -> String {
        let clean = |s: &str| {
            s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect::<String>()
        };
        format!("SECRET_{}_{}", clean(&self.0), clean(key))
    }
}

impl TryFrom<String> for SecretRef {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let valid_segment = |s: &str| {
            !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if value.split('/').count() <= 2 && value.split('/').all(valid_segment) {
            Ok(Self(value))
        } else {
            Err(format!("`{value}` is not a secret ref (expected `name` or `namespace/name`)"))
        }
    }
}

/// A secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret {secret_ref} key {key}: {reason}")]
pub struct SecretError {
    /// The reference.
    pub secret_ref: String,
    /// The key.
    pub key: String,
    /// Why (never the value).
    pub reason: String,
}

/// Resolves secret references.
#[derive(Debug, Clone, Default)]
pub struct SecretStore {
    dir: Option<PathBuf>,
    vars: Vars,
}

impl SecretStore {
    /// A store reading files under `dir`, then the variables in `vars`.
    pub fn new(dir: Option<PathBuf>, vars: Vars) -> Self {
        Self { dir, vars }
    }

    /// An environment variable holding a secret under a name another tool made standard
    /// (e.g. the Argo CD CLI's `ARGOCD_AUTH_TOKEN`); `None` when unset or empty.
    pub fn variable(&self, name: &str) -> Option<SecretString> {
        self.vars.get(name).filter(|v| !v.is_empty()).map(|v| SecretString::from(v.clone()))
    }

    /// The value of `key` in `secret_ref`. A trailing newline in a file is dropped.
    pub fn resolve(&self, secret_ref: &SecretRef, key: &str) -> Result<SecretString, SecretError> {
        let err = |reason: String| SecretError { secret_ref: secret_ref.0.clone(), key: key.to_owned(), reason };
        if key.is_empty() || key.contains('/') || key.starts_with('.') {
            return Err(err("invalid key name".to_owned()));
        }
        if let Some(dir) = &self.dir {
            let path = dir.join(&secret_ref.0).join(key);
            match std::fs::read_to_string(&path) {
                Ok(value) => {
                    return Ok(SecretString::from(value.trim_end_matches(['\n', '\r']).to_owned()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(err(format!("cannot read {}: {}", path.display(), e.kind()))),
            }
        }
        let var = secret_ref.env_var(key);
        match self.vars.get(&var) {
            Some(value) if !value.is_empty() => Ok(SecretString::from(value.clone())),
            _ => Err(err(format!(
                "not found (no file {}/{}/{key} and no variable {var})",
                self.dir.as_ref().map_or_else(|| "$SECRETS_DIR".to_owned(), |d| d.display().to_string()),
                secret_ref.0
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn r(s: &str) -> SecretRef {
        SecretRef::try_from(s.to_owned()).expect("valid ref")
    }

    #[test]
    fn files_first_then_variables() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("platform/jira-credentials")).expect("mkdir");
        std::fs::write(dir.path().join("platform/jira-credentials/token"), "s3cr3t-file\n").expect("write");
        let vars: Vars =
            [("SECRET_PLATFORM_JIRA_CREDENTIALS_EMAIL".to_owned(), "bot@example.com".to_owned())].into_iter().collect();
        let store = SecretStore::new(Some(dir.path().to_owned()), vars);
        let jira = r("platform/jira-credentials");
        assert_eq!(store.resolve(&jira, "token").expect("file").expose_secret(), "s3cr3t-file");
        assert_eq!(store.resolve(&jira, "email").expect("variable").expose_secret(), "bot@example.com");
        let missing = store.resolve(&jira, "password").expect_err("missing");
        assert!(missing.to_string().contains("SECRET_PLATFORM_JIRA_CREDENTIALS_PASSWORD"), "{missing}");
        assert!(store.resolve(&jira, "../token").is_err(), "no path traversal through keys");
    }

    #[test]
    fn values_never_print() {
        let vars: Vars = [("SECRET_X_TOKEN".to_owned(), "hunter2".to_owned())].into_iter().collect();
        let value = SecretStore::new(None, vars).resolve(&r("x"), "token").expect("resolves");
        assert!(!format!("{value:?}").contains("hunter2"));
        let err = SecretStore::new(None, Vars::new()).resolve(&r("x"), "token").expect_err("missing");
        assert!(!format!("{err} {err:?}").contains("hunter2"));
    }

    #[test]
    fn refs_are_checked() {
        for bad in ["", "/x", "a/b/c", "../etc", "a b"] {
            assert!(SecretRef::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
        assert_eq!(r("platform/jira-credentials").env_var("api-token"), "SECRET_PLATFORM_JIRA_CREDENTIALS_API_TOKEN");
    }
}
