//! Secret resolution. Only delegates ever see secret values: the manager stores
//! and forwards references (`<+secrets.getValue("env:NAME")>`, `file:/path`,
//! `vault://BACKEND/MOUNT/PATH#KEY`), and this module turns them into values on
//! the delegate host, in memory only.
//!
//! Values are wrapped in [`SecretValue`], whose `Debug`/`Display` print `***`, so
//! a stray `{:?}` in a log line cannot leak one. Everything resolved for a task is
//! also fed to a [`Masker`] that scrubs the task's logs and result message.

pub mod env;
pub mod file;
pub mod mask;
pub mod vault;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use std::sync::Arc;

use dray_shared::error_type::ErrorType;
use dray_shared::secret_ref::{self, InvalidSecretRef, SecretRef};

pub use env::EnvSource;
pub use mask::Masker;
pub use vault::VaultBackends;

/// A resolved secret value. Redacted in `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        SecretValue(value)
    }

    /// The plain value. Call only where the value must be used (substitution,
    /// masking); never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A secret that cannot be resolved on this delegate. Messages name the
/// reference, never a value, because they travel to the manager as offer
/// rejections and task results.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is not set in the delegate process.
    #[error("secret env:{name} is not set on this delegate")]
    EnvMissing {
        /// Variable name.
        name: String,
    },
    /// The environment variable is set but not valid UTF-8.
    #[error("secret env:{name} is not valid UTF-8 on this delegate")]
    EnvNotUnicode {
        /// Variable name.
        name: String,
    },
    /// The file cannot be read.
    #[error("secret file:{path} cannot be read on this delegate: {reason}", path = path.display())]
    FileUnreadable {
        /// The file.
        path: PathBuf,
        /// Why (from the OS).
        reason: String,
    },
    /// The file is not valid UTF-8 text.
    #[error("secret file:{path} is not valid UTF-8 text", path = path.display())]
    FileNotUnicode {
        /// The file.
        path: PathBuf,
    },
    /// The file is larger than [`file::MAX_SECRET_FILE_BYTES`].
    #[error("secret file:{path} is larger than {max} bytes", path = path.display())]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: u64,
    },
    /// A `vault://` reference could not be read.
    #[error("secret {reference}: {detail}")]
    Vault {
        /// The reference (`vault://prod/kv/app#password`).
        reference: String,
        /// What kind of failure.
        failure: VaultFailure,
        /// What happened (from Vault's answer; never a value).
        detail: String,
    },
    /// A reference in `field` is malformed.
    #[error("in {field}: {source}")]
    Malformed {
        /// Where the reference was found (`script`, `env.NAME`, ...).
        field: String,
        /// The parse error.
        #[source]
        source: InvalidSecretRef,
    },
}

/// Why a `vault://` reference could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultFailure {
    /// No secret at that path, or no such key in it.
    NotFound,
    /// Vault refused the read (403: policy, revoked or expired token).
    Denied,
    /// Vault refused the login (bad AppRole or Kubernetes credentials) or the
    /// credentials could not be read on the delegate.
    LoginRefused,
    /// Vault could not be reached or is unavailable (sealed, 5xx gateway).
    Unreachable,
    /// The reference names a backend this delegate does not have.
    NotConfigured,
    /// Anything else.
    Other,
}

impl SecretError {
    /// The failure type a task reports when resolving a secret failed: the one
    /// place that decides it, so failure strategies can match on it.
    pub fn error_type(&self) -> ErrorType {
        match self {
            SecretError::EnvMissing { .. } => ErrorType::NotFound,
            SecretError::FileUnreadable { .. } => ErrorType::NotFound,
            SecretError::Vault { failure, .. } => match failure {
                VaultFailure::NotFound => ErrorType::NotFound,
                VaultFailure::Denied => ErrorType::Authorization,
                VaultFailure::LoginRefused => ErrorType::Authentication,
                VaultFailure::Unreachable => ErrorType::Connectivity,
                VaultFailure::NotConfigured | VaultFailure::Other => ErrorType::Unknown,
            },
            SecretError::EnvNotUnicode { .. }
            | SecretError::FileNotUnicode { .. }
            | SecretError::FileTooLarge { .. }
            | SecretError::Malformed { .. } => ErrorType::Unknown,
        }
    }
}

/// Where the delegate looks secrets up.
#[derive(Debug, Clone)]
pub struct SecretStore {
    env: EnvSource,
    vault: Arc<VaultBackends>,
}

impl SecretStore {
    /// Resolves `env:` references against this process's environment.
    pub fn from_process() -> Self {
        SecretStore { env: EnvSource::Process, vault: Arc::new(VaultBackends::none()) }
    }

    /// Resolves `env:` references against a fixed map (tests, embedding).
    pub fn with_env(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        SecretStore {
            env: EnvSource::Fixed(vars.into_iter().collect()),
            vault: Arc::new(VaultBackends::none()),
        }
    }

    /// The same store resolving `vault://` references with `backends`.
    pub fn with_vault(self, backends: VaultBackends) -> Self {
        SecretStore { vault: Arc::new(backends), ..self }
    }

    /// Resolves one reference.
    pub async fn resolve(&self, secret: &SecretRef) -> Result<SecretValue, SecretError> {
        match secret {
            SecretRef::Env(name) => self.env.lookup(name),
            SecretRef::File(path) => file::read(path).await,
            SecretRef::Vault(r) => self.vault.read(r).await,
        }
    }

    /// Checks, before an offer is acked, that this delegate can resolve every
    /// reference in `text`: `env:` and `file:` are resolved (values dropped);
    /// for `vault://` only the backend must be configured, since reading it here
    /// would turn a missing secret into an offer refusal instead of a step
    /// failure a failure strategy can match.
    pub async fn check_text(&self, field: &str, text: &str) -> Result<(), SecretError> {
        let found = secret_ref::find(text)
            .map_err(|source| SecretError::Malformed { field: field.to_string(), source })?;
        for f in found {
            match &f.secret {
                SecretRef::Vault(r) => self.vault.check(r)?,
                other => {
                    self.resolve(other).await?;
                }
            }
        }
        Ok(())
    }

    /// Replaces every reference in `text` (found in `field`) with its value,
    /// recording each value in `resolved` so it can be masked later.
    pub async fn substitute(
        &self,
        field: &str,
        text: &str,
        resolved: &mut Resolved,
    ) -> Result<String, SecretError> {
        let found = secret_ref::find(text)
            .map_err(|source| SecretError::Malformed { field: field.to_string(), source })?;
        for f in &found {
            if !resolved.values.contains_key(&f.secret) {
                let value = self.resolve(&f.secret).await?;
                resolved.values.insert(f.secret.clone(), value);
            }
        }
        secret_ref::substitute(text, |r| {
            // Every reference was resolved just above, so the lookup cannot miss;
            // an empty string is the harmless answer if it somehow did.
            Ok::<_, SecretError>(resolved.values.get(r).map(|v| v.expose().to_string()).unwrap_or_default())
        })
        .map_err(|source| SecretError::Malformed { field: field.to_string(), source })?
    }
}

/// The values resolved for one task, by reference.
#[derive(Debug, Default, Clone)]
pub struct Resolved {
    values: HashMap<SecretRef, SecretValue>,
}

impl Resolved {
    /// Every value resolved so far.
    pub fn values(&self) -> impl Iterator<Item = &SecretValue> {
        self.values.values()
    }

    /// True when nothing was resolved.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> SecretStore {
        SecretStore::with_env([("DB_PASSWORD".to_string(), "hunter2".to_string())])
    }

    #[test]
    fn values_are_redacted_in_debug_and_display() {
        let v = SecretValue::new("hunter2".into());
        assert_eq!(format!("{v:?} {v}"), "*** ***");
        assert_eq!(v.expose(), "hunter2");
    }

    #[tokio::test]
    async fn substitutes_env_and_file_references() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cr3t\n").unwrap();
        let text = format!(
            r#"login <+secrets.getValue("env:DB_PASSWORD")> <+secrets.getValue('file:{}')>"#,
            path.display()
        );
        let mut resolved = Resolved::default();
        let out = store().substitute("script", &text, &mut resolved).await.unwrap();
        assert_eq!(out, "login hunter2 s3cr3t");
        let mut values: Vec<_> = resolved.values().map(|v| v.expose().to_string()).collect();
        values.sort();
        assert_eq!(values, ["hunter2", "s3cr3t"]);
    }

    #[tokio::test]
    async fn resolution_errors_name_the_reference_not_the_value() {
        let s = store();
        let e = s.check_text("env.X", r#"<+secrets.getValue("env:NOPE_NOT_SET")>"#).await.unwrap_err();
        assert_eq!(e.to_string(), "secret env:NOPE_NOT_SET is not set on this delegate");
        let e =
            s.check_text("script", r#"<+secrets.getValue("file:/definitely/not/here")>"#).await.unwrap_err();
        assert!(
            e.to_string().starts_with("secret file:/definitely/not/here cannot be read on this delegate"),
            "{e}"
        );
        let e = s.check_text("script", "<+secrets.getValue(env:X)>").await.unwrap_err();
        assert!(e.to_string().starts_with("in script: bad secret reference at offset 0"), "{e}");
        let mut r = Resolved::default();
        assert!(
            s.substitute("script", "echo <+secrets.getValue(\"env:NOPE_NOT_SET\")>", &mut r).await.is_err()
        );
        assert!(r.is_empty());
    }

    #[test]
    fn error_types_are_decided_in_one_place() {
        let vault = |failure| SecretError::Vault {
            reference: "vault://p/kv/a#k".into(),
            failure,
            detail: "x".into(),
        };
        let cases = [
            (vault(VaultFailure::NotFound), ErrorType::NotFound),
            (vault(VaultFailure::Denied), ErrorType::Authorization),
            (vault(VaultFailure::LoginRefused), ErrorType::Authentication),
            (vault(VaultFailure::Unreachable), ErrorType::Connectivity),
            (vault(VaultFailure::NotConfigured), ErrorType::Unknown),
            (vault(VaultFailure::Other), ErrorType::Unknown),
            (SecretError::EnvMissing { name: "X".into() }, ErrorType::NotFound),
            (SecretError::FileUnreadable { path: "/x".into(), reason: "gone".into() }, ErrorType::NotFound),
            (SecretError::FileTooLarge { path: "/x".into(), max: 1 }, ErrorType::Unknown),
        ];
        for (e, want) in cases {
            assert_eq!(e.error_type(), want, "{e}");
        }
        assert_eq!(vault(VaultFailure::Denied).to_string(), "secret vault://p/kv/a#k: x");
    }

    #[tokio::test]
    async fn vault_references_need_a_configured_backend() {
        let e = store()
            .check_text("script", r#"<+secrets.getValue("vault://prod/kv/app#pw")>"#)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("vault backend \"prod\" is not configured on this delegate"), "{e}");
    }
}
