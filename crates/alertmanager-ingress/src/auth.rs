//! Who may post: bearer token and basic auth (what Alertmanager's `http_config` sends) and
//! an optional HMAC signature of the body. Comparisons are constant-time over SHA-256
//! digests, so neither content nor length leaks through timing.

use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sre_runtime::{SecretError, SecretStore};
use subtle::ConstantTimeEq;

use crate::config::AuthConfig;

/// Why a request was not let in (no detail goes back to the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No or wrong `Authorization`.
    Credentials,
    /// Missing or wrong signature.
    Signature,
}

/// Accepted credentials, held as digests (the secrets themselves are not kept around).
pub struct Auth {
    authorization: Vec<[u8; 32]>,
    hmac: Option<(String, SecretString)>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("authorization_methods", &self.authorization.len())
            .field("hmac", &self.hmac.as_ref().map(|(h, _)| h))
            .finish()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Auth {
    /// Resolves the configured secrets; fails when one is missing.
    pub fn from_config(config: &AuthConfig, secrets: &SecretStore) -> Result<Self, SecretError> {
        let mut authorization = Vec::new();
        if let Some(r) = &config.bearer {
            let token = secrets.resolve(r, "token")?;
            authorization.push(digest(format!("Bearer {}", token.expose_secret()).as_bytes()));
        }
        if let Some(r) = &config.basic {
            let user = secrets.resolve(r, "username")?;
            let pass = secrets.resolve(r, "password")?;
            let pair = format!("{}:{}", user.expose_secret(), pass.expose_secret());
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            authorization.push(digest(format!("Basic {encoded}").as_bytes()));
        }
        let hmac = match &config.hmac {
            Some(h) => Some((h.header.clone(), secrets.resolve(&h.secret_ref, "secret")?)),
            None => None,
        };
        Ok(Self { authorization, hmac })
    }

    /// An open webhook (no method configured).
    pub fn open() -> Self {
        Self { authorization: Vec::new(), hmac: None }
    }

    /// True when nothing is checked.
    pub fn is_open(&self) -> bool {
        self.authorization.is_empty() && self.hmac.is_none()
    }

    /// Checks the `Authorization` header (before the body is read).
    pub fn check_authorization(&self, header: Option<&[u8]>) -> Result<(), Denied> {
        if self.authorization.is_empty() {
            return Ok(());
        }
        let presented = digest(header.unwrap_or_default());
        let mut ok = subtle::Choice::from(0u8);
        for accepted in &self.authorization {
            ok |= presented.ct_eq(accepted);
        }
        if bool::from(ok) { Ok(()) } else { Err(Denied::Credentials) }
    }

    /// The header carrying the signature, when signatures are required.
    pub fn signature_header(&self) -> Option<&str> {
        self.hmac.as_ref().map(|(h, _)| h.as_str())
    }

    /// Checks `sha256=<hex>` against HMAC-SHA256(secret, body), with the check every
    /// webhook shares (`sre_runtime::inbound::signed_by_any`).
    pub fn check_signature(&self, header: Option<&[u8]>, body: &[u8]) -> Result<(), Denied> {
        let Some((_, secret)) = &self.hmac else { return Ok(()) };
        let presented = header
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| h.trim().strip_prefix("sha256="))
            .ok_or(Denied::Signature)?;
        if sre_runtime::inbound::signed_by_any(std::slice::from_ref(secret), body, [presented]) {
            Ok(())
        } else {
            Err(Denied::Signature)
        }
    }
}

/// `sha256=<hex>` of HMAC-SHA256(secret, body), as a sender computes it.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // new_from_slice accepts keys of any length for HMAC.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sre_runtime::{SecretRef, Vars};

    fn store() -> SecretStore {
        let vars: Vars = [
            ("SECRET_AM_BEARER_TOKEN", "t0ken"),
            ("SECRET_AM_BASIC_USERNAME", "alertmanager"),
            ("SECRET_AM_BASIC_PASSWORD", "pa:ss"),
            ("SECRET_AM_HMAC_SECRET", "k3y"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        SecretStore::new(None, vars)
    }

    fn secret_ref(s: &str) -> SecretRef {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).expect("ref")
    }

    #[test]
    fn bearer_and_basic_are_both_accepted() {
        let config =
            AuthConfig { bearer: Some(secret_ref("am/bearer")), basic: Some(secret_ref("am/basic")), hmac: None };
        let auth = Auth::from_config(&config, &store()).expect("resolves");
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alertmanager:pa:ss"));
        assert_eq!(auth.check_authorization(Some(b"Bearer t0ken")), Ok(()));
        assert_eq!(auth.check_authorization(Some(basic.as_bytes())), Ok(()));
        for bad in [&b"Bearer t0ke"[..], b"Bearer t0ken2", b"bearer t0ken", b"", b"Basic YWxlcnRtYW5hZ2VyOnBhc3M="] {
            assert_eq!(
                auth.check_authorization(Some(bad)),
                Err(Denied::Credentials),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(auth.check_authorization(None), Err(Denied::Credentials));
        assert!(!format!("{auth:?}").contains("t0ken"));
    }

    #[test]
    fn hmac_signatures() {
        let config = AuthConfig {
            bearer: None,
            basic: None,
            hmac: Some(crate::config::HmacConfig {
                secret_ref: secret_ref("am/hmac"),
                header: "X-Signature-256".into(),
            }),
        };
        let auth = Auth::from_config(&config, &store()).expect("resolves");
        let body = br#"{"version":"4"}"#;
        let sig = sign("k3y", body);
        assert_eq!(auth.check_signature(Some(sig.as_bytes()), body), Ok(()));
        assert_eq!(auth.check_signature(Some(sig.as_bytes()), b"{\"version\":\"5\"}"), Err(Denied::Signature));
        assert_eq!(auth.check_signature(Some(sign("other", body).as_bytes()), body), Err(Denied::Signature));
        assert_eq!(auth.check_signature(None, body), Err(Denied::Signature));
        assert_eq!(auth.check_signature(Some(b"sha256=zz"), body), Err(Denied::Signature));
        assert_eq!(auth.check_authorization(None), Ok(()), "no authorization configured");
    }

    #[test]
    fn a_missing_secret_is_an_error_naming_it() {
        let config = AuthConfig { bearer: Some(secret_ref("am/missing")), basic: None, hmac: None };
        let err = Auth::from_config(&config, &store()).expect_err("missing");
        assert!(err.to_string().contains("am/missing") && err.to_string().contains("token"), "{err}");
    }
}
