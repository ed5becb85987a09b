//! What a secured bus needs, made in the test: a private CA with server and client
//! certificates (as cert-manager would issue them: `ca.crt`, `tls.crt`, `tls.key`), NKey
//! users, and decentralized JWT accounts (operator, account and user JWTs signed here with
//! the `nkeys` crate, as `nsc` would; nats-server's memory resolver takes them), with
//! `.creds` files.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn io_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// A private CA, and the certificates it signs, written as PEM files into a folder.
pub struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

/// The files of one certificate, in cert-manager's layout.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// `ca.crt`: the CA.
    pub ca: PathBuf,
    /// `tls.crt`: the certificate.
    pub cert: PathBuf,
    /// `tls.key`: its key.
    pub key: PathBuf,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("dir", &self.dir.path()).finish_non_exhaustive()
    }
}

impl Pki {
    /// A new CA.
    pub fn new() -> std::io::Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().map_err(io_error)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(io_error)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "sre-test-ca");
        params.distinguished_name = dn;
        let ca = params.self_signed(&ca_key).map_err(io_error)?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("ca.crt"), ca.pem())?;
        Ok(Self { dir, ca, ca_key })
    }

    /// The CA certificate's file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A certificate named `name` (its common name, and a DNS name) for `ips`, in its own
    /// folder `name/` (`ca.crt`, `tls.crt`, `tls.key`).
    pub fn issue(&self, name: &str, ips: &[IpAddr]) -> std::io::Result<CertFiles> {
        use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
        let key = KeyPair::generate().map_err(io_error)?;
        let mut params = CertificateParams::new(vec![name.to_owned()]).map_err(io_error)?;
        params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).map_err(io_error)?;
        let folder = self.dir.path().join(name);
        std::fs::create_dir_all(&folder)?;
        let files = CertFiles { ca: folder.join("ca.crt"), cert: folder.join("tls.crt"), key: folder.join("tls.key") };
        std::fs::write(&files.ca, self.ca.pem())?;
        std::fs::write(&files.cert, cert.pem())?;
        std::fs::write(&files.key, key.serialize_pem())?;
        Ok(files)
    }

    /// The folder the files are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// An HTTPS server on loopback with `cert`, answering every request `200 hello`; stops
/// when dropped.
#[derive(Debug)]
pub struct HttpsHello {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl HttpsHello {
    /// Starts it.
    pub async fn start(cert: &CertFiles) -> std::io::Result<Self> {
        use rustls::pki_types::pem::PemObject;
        let chain = rustls::pki_types::CertificateDer::pem_file_iter(&cert.cert)
            .map_err(io_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(io_error)?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&cert.key).map_err(io_error)?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io_error)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(io_error)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let _ =
                        tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello").await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Ok(Self { port, task })
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for HttpsHello {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An NKey pair: its seed (`S…`) and public key.
#[derive(Debug)]
pub struct Key(nkeys::KeyPair);

impl Key {
    /// A new operator key.
    pub fn operator() -> Self {
        Self(nkeys::KeyPair::new_operator())
    }

    /// A new account key.
    pub fn account() -> Self {
        Self(nkeys::KeyPair::new_account())
    }

    /// A new user key.
    pub fn user() -> Self {
        Self(nkeys::KeyPair::new_user())
    }

    /// The public key (`O…`, `A…`, `U…`).
    pub fn public(&self) -> String {
        self.0.public_key()
    }

    /// The seed (`SO…`, `SA…`, `SU…`).
    pub fn seed(&self) -> String {
        self.0.seed().expect("a generated key has a seed")
    }

    /// A JWT with `claims` (its `nats` part and `sub`/`name`), signed by this key as issuer.
    fn sign(&self, sub: &str, name: &str, nats: serde_json::Value, exp: Option<i64>) -> String {
        let header = serde_json::json!({"typ": "JWT", "alg": "ed25519-nkey"});
        let iat = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
        let mut claims = serde_json::json!({"iat": iat, "iss": self.public(), "name": name, "sub": sub, "nats": nats});
        if let Some(exp) = exp {
            claims["exp"] = serde_json::json!(exp);
        }
        // `jti`: a unique id of the claims, as the JWT library derives it.
        use sha2::Digest;
        let digest = sha2::Sha256::digest(claims.to_string().as_bytes());
        claims["jti"] = serde_json::json!(data_encoding_base32(&digest));
        let signing_input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = self.0.sign(signing_input.as_bytes()).expect("signs");
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// Base32 without padding (RFC 4648 alphabet), for a `jti`.
fn data_encoding_base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decentralized JWT auth: an operator, one account with JetStream, its users.
#[derive(Debug)]
pub struct Operator {
    key: Key,
    account: Key,
    jwt: String,
    account_jwt: String,
    /// The system account JetStream needs in operator mode.
    system: Key,
    system_jwt: String,
}

/// A user's allow-lists.
#[derive(Debug, Clone, Default)]
pub struct Allow {
    /// Subjects it may publish to.
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
}

impl Operator {
    /// An operator and its account `SRE`, JetStream enabled without limits.
    pub fn new() -> Self {
        let key = Key::operator();
        let account = Key::account();
        let jwt =
            key.sign(&key.public(), "sre-test-operator", serde_json::json!({"type": "operator", "version": 2}), None);
        let limits = serde_json::json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true,
            "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
        });
        let account_jwt = key.sign(
            &account.public(),
            "SRE",
            serde_json::json!({"type": "account", "version": 2, "limits": limits}),
            None,
        );
        let system = Key::account();
        let system_jwt = key.sign(&system.public(), "SYS", serde_json::json!({"type": "account", "version": 2}), None);
        Self { key, account, jwt, account_jwt, system, system_jwt }
    }

    /// The server configuration of operator mode with a memory resolver preloaded with the
    /// account.
    pub fn server_config(&self) -> String {
        format!(
            "operator: {}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {}\n  {}: {}\n}}\n",
            self.jwt,
            self.system.public(),
            self.account.public(),
            self.account_jwt,
            self.system.public(),
            self.system_jwt
        )
    }

    /// A `.creds` file's text for a user `name` of the account, allowed `allow` (none
    /// given: everything), expiring at `exp` (unix seconds) when given.
    pub fn user_creds(&self, name: &str, allow: Option<&Allow>, exp: Option<i64>) -> String {
        let user = Key::user();
        let mut nats = serde_json::json!({"type": "user", "version": 2, "subs": -1, "data": -1, "payload": -1});
        if let Some(allow) = allow {
            nats["pub"] = serde_json::json!({"allow": allow.publish});
            nats["sub"] = serde_json::json!({"allow": allow.subscribe});
        }
        let jwt = self.account.sign(&user.public(), name, nats, exp);
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed()
        )
    }

    /// The operator's key (for checks).
    pub fn key(&self) -> &Key {
        &self.key
    }
}

impl Default for Operator {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_is_rfc_4648_without_padding() {
        assert_eq!(data_encoding_base32(b"f"), "MY");
        assert_eq!(data_encoding_base32(b"foobar"), "MZXW6YTBOI");
    }
}
