//! The delegate's identity on disk: the state directory holding `key.pem`,
//! `cert.pem` (both mode 0600) and `identity.json` ({delegate_id, name, scope}).
//!
//! `cert.pem` is written last and atomically (temp file + rename), so its
//! presence means a complete enrolment; a crash mid-enrolment leaves no
//! certificate and the next start enrols again. The private key is generated
//! here and never leaves the host.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use dray_shared::DelegateId;
use dray_shared::pki;
use serde::{Deserialize, Serialize};

/// Fraction of a certificate's lifetime after which it is renewed.
pub const RENEW_AT_FRACTION: f64 = 0.7;

/// A problem with the state directory or the identity in it.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("cannot {action} {path}: {source}", path = path.display())]
    Io {
        /// "read", "write", ...
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `identity.json` is malformed.
    #[error("invalid {path}: {reason}", path = path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The certificate cannot be parsed.
    #[error("invalid certificate in {path}: {source}", path = path.display())]
    Certificate {
        /// The file (or where it came from).
        path: PathBuf,
        /// The parse error.
        #[source]
        source: pki::Error,
    },
}

/// Scope recorded at enrolment (`dray_shared::pb::Scope`, serialisable).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeRecord {
    /// Account.
    pub account: String,
    /// Organisation; empty = whole account.
    #[serde(default)]
    pub org: String,
    /// Project; empty = whole organisation.
    #[serde(default)]
    pub project: String,
}

impl From<dray_shared::pb::Scope> for ScopeRecord {
    fn from(s: dray_shared::pb::Scope) -> Self {
        ScopeRecord { account: s.account, org: s.org, project: s.project }
    }
}

impl fmt::Display for ScopeRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scope = dray_shared::pb::Scope {
            account: self.account.clone(),
            org: self.org.clone(),
            project: self.project.clone(),
        };
        f.write_str(&scope.display())
    }
}

/// Contents of `identity.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    /// Id assigned by the manager.
    pub delegate_id: DelegateId,
    /// Name used at enrolment.
    pub name: String,
    /// Scope of the enrolment token.
    pub scope: ScopeRecord,
}

/// A private key in PEM. Redacted in `Debug`.
#[derive(Clone)]
pub struct KeyPem(String);

impl KeyPem {
    /// Wraps a PEM key.
    pub fn new(pem: String) -> Self {
        KeyPem(pem)
    }

    /// The PEM text, for TLS configuration and CSRs only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyPem(***)")
    }
}

/// Everything the delegate needs to authenticate to the manager.
#[derive(Debug, Clone)]
pub struct Identity {
    /// id, name, scope.
    pub record: IdentityRecord,
    /// Client certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key: KeyPem,
    /// Certificate validity start, Unix ms.
    pub not_before_ms: i64,
    /// Certificate validity end, Unix ms.
    pub not_after_ms: i64,
}

impl Identity {
    /// Builds an identity, reading the validity window out of `cert_pem`.
    pub fn new(
        record: IdentityRecord,
        cert_pem: String,
        key: KeyPem,
        origin: &Path,
    ) -> Result<Self, IdentityError> {
        let bad = |source| IdentityError::Certificate { path: origin.to_path_buf(), source };
        let not_before_ms = pki::not_before_ms(&cert_pem).map_err(bad)?;
        let not_after_ms = pki::not_after_ms(&cert_pem).map_err(bad)?;
        Ok(Identity { record, cert_pem, key, not_before_ms, not_after_ms })
    }

    /// When the certificate should be renewed: after 70% of its lifetime.
    pub fn renew_at_ms(&self) -> i64 {
        renew_at_ms(self.not_before_ms, self.not_after_ms)
    }

    /// True once the certificate can no longer be used.
    pub fn expired(&self, now_ms: i64) -> bool {
        now_ms >= self.not_after_ms
    }
}

/// The instant `RENEW_AT_FRACTION` of the way from `not_before` to `not_after`.
pub fn renew_at_ms(not_before_ms: i64, not_after_ms: i64) -> i64 {
    let life = (not_after_ms - not_before_ms).max(0) as f64;
    not_before_ms + (life * RENEW_AT_FRACTION) as i64
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state directory at `root` (not created until something is saved).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Path of the client certificate.
    pub fn cert_path(&self) -> PathBuf {
        self.file("cert.pem")
    }

    /// Loads the saved identity; `None` when there is no certificate yet.
    pub fn load(&self) -> Result<Option<Identity>, IdentityError> {
        let cert_path = self.cert_path();
        let cert_pem = match std::fs::read_to_string(&cert_path) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(IdentityError::Io { action: "read", path: cert_path, source }),
        };
        let key_path = self.file("key.pem");
        let key = std::fs::read_to_string(&key_path).map_err(|source| IdentityError::Io {
            action: "read",
            path: key_path,
            source,
        })?;
        let id_path = self.file("identity.json");
        let text = std::fs::read_to_string(&id_path).map_err(|source| IdentityError::Io {
            action: "read",
            path: id_path.clone(),
            source,
        })?;
        let record: IdentityRecord = serde_json::from_str(&text)
            .map_err(|e| IdentityError::Malformed { path: id_path, reason: e.to_string() })?;
        Identity::new(record, cert_pem, KeyPem::new(key), &cert_path).map(Some)
    }

    /// Saves a fresh enrolment: key and record first, certificate last.
    pub fn save(&self, identity: &Identity) -> Result<(), IdentityError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(|source| IdentityError::Io { action: "create", path: self.root.clone(), source })?;
        write_private(&self.file("key.pem"), identity.key.expose().as_bytes())?;
        let json = serde_json::to_string_pretty(&identity.record).map_err(|e| IdentityError::Malformed {
            path: self.file("identity.json"),
            reason: e.to_string(),
        })?;
        write_private(&self.file("identity.json"), json.as_bytes())?;
        write_private(&self.cert_path(), identity.cert_pem.as_bytes())
    }

    /// Replaces the certificate (after renewal).
    pub fn save_cert(&self, cert_pem: &str) -> Result<(), IdentityError> {
        write_private(&self.cert_path(), cert_pem.as_bytes())
    }
}

/// Writes `bytes` to `path` atomically with mode 0600: a temp file in the same
/// directory (created 0600, so the content is never readable by others), fsync,
/// rename over the target.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let tmp = path.with_extension("tmp");
    let io = |action: &'static str, p: &Path| {
        let path = p.to_path_buf();
        move |source| IdentityError::Io { action, path, source }
    };
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    drop(f);
    // Mode given to open() is filtered by the umask; make sure it is exactly 0600.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io("chmod", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn identity() -> Identity {
        let ca = pki::Authority::generate("test CA").unwrap();
        let (key, csr) = pki::delegate_key_and_csr("d1").unwrap();
        let id = DelegateId::new();
        let cert = ca.sign_delegate_csr(&csr, id, Duration::from_secs(3600)).unwrap();
        let record = IdentityRecord { delegate_id: id, name: "d1".into(), scope: ScopeRecord::default() };
        Identity::new(record, cert, KeyPem::new(key), Path::new("test")).unwrap()
    }

    #[test]
    fn save_and_load_round_trip_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        assert!(state.load().unwrap().is_none());
        let id = identity();
        state.save(&id).unwrap();
        let back = state.load().unwrap().unwrap();
        assert_eq!(back.record, id.record);
        assert_eq!(back.cert_pem, id.cert_pem);
        for f in ["key.pem", "cert.pem", "identity.json"] {
            let mode = std::fs::metadata(state.path().join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        assert!(!state.path().join("cert.tmp").exists());
        assert!(!format!("{back:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn renewal_is_due_at_seventy_percent() {
        assert_eq!(renew_at_ms(1_000, 2_000), 1_700);
        let id = identity();
        // 5 min back-dated + 1 h lifetime.
        assert!(id.renew_at_ms() > id.not_before_ms && id.renew_at_ms() < id.not_after_ms);
        assert!(!id.expired(id.not_after_ms - 1));
        assert!(id.expired(id.not_after_ms));
    }

    #[test]
    fn a_certificate_without_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        std::fs::write(state.cert_path(), "x").unwrap();
        let e = state.load().unwrap_err();
        assert!(e.to_string().starts_with("cannot read "), "{e}");
        assert!(e.to_string().contains("key.pem"), "{e}");
    }
}
