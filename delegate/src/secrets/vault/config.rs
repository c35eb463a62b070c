//! Configuration of the delegate's Vault / OpenBao backends: the `[vault.NAME]`
//! tables of the delegate's TOML config file ([`VaultOptions`]) and their
//! validated form ([`BackendConfig`]). Pure: no I/O (credential files and the CA
//! file are read when the backend starts or logs in).
//!
//! ```toml
//! [vault.prod]
//! address = "https://vault.internal:8200"
//! namespace = "team-a"             # optional (Vault Enterprise / OpenBao namespaces)
//! ca-file = "/etc/dray/vault-ca.pem" # optional; else the system roots
//! kv-version = 2                   # default 2; per mount: kv-mounts = { legacy = 1 }
//! cache-ttl = "30s"                # how long a read secret is reused; "0s" = never
//! timeout = "10s"                  # per request
//! [vault.prod.auth]
//! method = "approle"               # or "token", "kubernetes"
//! role-id = "..."                  # or role-id-file / role-id-env
//! secret-id-file = "/etc/dray/secret-id"   # or secret-id-env
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use dray_shared::secret_ref::is_backend_name;
use serde::Deserialize;

use crate::config::ConfigError;

/// Where the service-account token of a pod is mounted.
pub const DEFAULT_K8S_JWT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Default mount of the AppRole auth method.
pub const DEFAULT_APPROLE_MOUNT: &str = "approle";
/// Default mount of the Kubernetes auth method.
pub const DEFAULT_K8S_MOUNT: &str = "kubernetes";
/// Default `cache-ttl`.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30);
/// Default `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `kv-version`.
pub const DEFAULT_KV_VERSION: u8 = 2;

/// One `[vault.NAME]` table as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VaultOptions {
    /// `http(s)://host:port` of the Vault or OpenBao server.
    pub address: String,
    /// Namespace sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// PEM file with the CA certificate(s) the server's certificate chains to.
    pub ca_file: Option<PathBuf>,
    /// KV engine version of every mount not listed in `kv-mounts` (1 or 2).
    pub kv_version: Option<u8>,
    /// KV engine version per mount.
    #[serde(default)]
    pub kv_mounts: BTreeMap<String, u8>,
    /// How long a read secret is reused.
    #[serde(default, deserialize_with = "duration")]
    pub cache_ttl: Option<Duration>,
    /// Per-request timeout.
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// How the delegate logs in.
    pub auth: AuthOptions,
}

/// The `auth` table as written; `method` picks the variant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AuthOptions {
    /// A token read from a file or an environment variable of the delegate.
    #[serde(rename_all = "kebab-case")]
    Token {
        /// File holding the token (re-read when the token is refused, so an
        /// agent can rotate it).
        token_file: Option<PathBuf>,
        /// Environment variable holding the token.
        token_env: Option<String>,
    },
    /// AppRole login.
    #[serde(rename_all = "kebab-case")]
    Approle {
        /// Auth mount (default `approle`).
        mount: Option<String>,
        /// The role id itself (not a secret).
        role_id: Option<String>,
        /// File holding the role id.
        role_id_file: Option<PathBuf>,
        /// Environment variable holding the role id.
        role_id_env: Option<String>,
        /// File holding the secret id.
        secret_id_file: Option<PathBuf>,
        /// Environment variable holding the secret id.
        secret_id_env: Option<String>,
    },
    /// Kubernetes service-account login.
    #[serde(rename_all = "kebab-case")]
    Kubernetes {
        /// Auth mount (default `kubernetes`).
        mount: Option<String>,
        /// The Vault role bound to the service account.
        role: String,
        /// The service-account token (default [`DEFAULT_K8S_JWT_PATH`]).
        jwt_file: Option<PathBuf>,
    },
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e} (examples: 0s, 30s, 2m)")))
}

/// Where a credential comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Given inline (only for non-secret values such as a role id).
    Inline(String),
    /// The contents of a file, surrounding whitespace trimmed.
    File(PathBuf),
    /// An environment variable of the delegate process.
    Env(String),
}

impl Credential {
    /// Reads the credential now. Errors name the file or variable, never a value.
    pub fn read(&self) -> Result<String, String> {
        let value = match self {
            Credential::Inline(v) => v.clone(),
            Credential::File(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?
                .trim()
                .to_string(),
            Credential::Env(name) => std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set on this delegate"))?
                .trim()
                .to_string(),
        };
        if value.is_empty() {
            return Err(format!("{} is empty", self.describe()));
        }
        Ok(value)
    }

    /// Where it comes from, for messages.
    pub fn describe(&self) -> String {
        match self {
            Credential::Inline(_) => "the inline value".into(),
            Credential::File(p) => format!("file {}", p.display()),
            Credential::Env(n) => format!("environment variable {n}"),
        }
    }
}

/// A validated auth method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A ready token.
    Token {
        /// Where it is read from.
        token: Credential,
    },
    /// AppRole login.
    AppRole {
        /// Auth mount.
        mount: String,
        /// Role id.
        role_id: Credential,
        /// Secret id.
        secret_id: Credential,
    },
    /// Kubernetes service-account login.
    Kubernetes {
        /// Auth mount.
        mount: String,
        /// Vault role.
        role: String,
        /// Service-account token file.
        jwt_file: PathBuf,
    },
}

impl Auth {
    /// The method's name as written in the config.
    pub fn method(&self) -> &'static str {
        match self {
            Auth::Token { .. } => "token",
            Auth::AppRole { .. } => "approle",
            Auth::Kubernetes { .. } => "kubernetes",
        }
    }
}

/// A validated backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// Its name (`vault://NAME/...`).
    pub name: String,
    /// Server address.
    pub address: String,
    /// Namespace, if any.
    pub namespace: Option<String>,
    /// CA file, if any.
    pub ca_file: Option<PathBuf>,
    /// KV version of mounts not in `kv_mounts`.
    pub kv_version: u8,
    /// KV version per mount.
    pub kv_mounts: BTreeMap<String, u8>,
    /// Cache lifetime of a read secret (zero: no cache).
    pub cache_ttl: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Login method.
    pub auth: Auth,
}

impl BackendConfig {
    /// The KV version of `mount`.
    pub fn kv_version_of(&self, mount: &str) -> u8 {
        self.kv_mounts.get(mount).copied().unwrap_or(self.kv_version)
    }
}

/// Validates every `[vault.NAME]` table. Errors name the key (`vault.NAME.auth.token-file`).
pub fn validate(tables: BTreeMap<String, VaultOptions>) -> Result<Vec<BackendConfig>, ConfigError> {
    tables.into_iter().map(|(name, o)| validate_one(name, o)).collect()
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { source_name: key.to_string(), value: value.to_string(), reason: reason.into() }
}

fn validate_one(name: String, o: VaultOptions) -> Result<BackendConfig, ConfigError> {
    let at = |k: &str| format!("vault.{name}.{k}");
    if !is_backend_name(&name) {
        return Err(invalid(
            "vault backend name",
            &name,
            "must be 1 to 64 letters, digits, '-' or '_' (it is written in vault://NAME/... references)",
        ));
    }
    let address = o.address.trim().trim_end_matches('/').to_string();
    check_address(&address).map_err(|r| invalid(&at("address"), &o.address, r))?;
    let namespace = match o.namespace.map(|n| n.trim().trim_matches('/').to_string()) {
        Some(n) if n.is_empty() || n.chars().any(|c| c.is_control() || c.is_whitespace()) => {
            return Err(invalid(&at("namespace"), &n, "must be a non-empty path without spaces"));
        }
        n => n,
    };
    let kv_version = o.kv_version.unwrap_or(DEFAULT_KV_VERSION);
    if !matches!(kv_version, 1 | 2) {
        return Err(invalid(&at("kv-version"), &kv_version.to_string(), "must be 1 or 2"));
    }
    for (mount, v) in &o.kv_mounts {
        if !matches!(v, 1 | 2) {
            return Err(invalid(&at(&format!("kv-mounts.{mount}")), &v.to_string(), "must be 1 or 2"));
        }
        if mount.is_empty() || mount.contains('/') {
            return Err(invalid(
                &at("kv-mounts"),
                mount,
                "a mount is one path segment (as in vault://NAME/MOUNT/...)",
            ));
        }
    }
    let timeout = o.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        return Err(invalid(&at("timeout"), "0s", "must be more than zero"));
    }
    let auth = validate_auth(&name, o.auth)?;
    Ok(BackendConfig {
        name,
        address,
        namespace,
        ca_file: o.ca_file,
        kv_version,
        kv_mounts: o.kv_mounts,
        cache_ttl: o.cache_ttl.unwrap_or(DEFAULT_CACHE_TTL),
        timeout,
        auth,
    })
}

fn check_address(address: &str) -> Result<(), String> {
    let rest = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .ok_or("must start with https:// (or http:// for a local development server)")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("has no host".into());
    }
    let uri: http::Uri = address.parse().map_err(|e| format!("{e}"))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err("must be just scheme, host and port (the client adds /v1/...)".into());
    }
    Ok(())
}

/// Exactly one of the given sources; `what` names the credential in messages.
fn one_source(
    backend: &str,
    what: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
    env: Option<String>,
) -> Result<Credential, ConfigError> {
    let key = |suffix: &str| format!("vault.{backend}.auth.{what}{suffix}");
    let mut found = Vec::new();
    if let Some(v) = inline {
        if v.trim().is_empty() {
            return Err(invalid(&key(""), "", "must not be empty"));
        }
        found.push(Credential::Inline(v.trim().to_string()));
    }
    if let Some(p) = file {
        if !p.is_absolute() {
            return Err(invalid(&key("-file"), &p.display().to_string(), "must be an absolute path"));
        }
        found.push(Credential::File(p));
    }
    if let Some(n) = env {
        if !dray_shared::task::is_env_name(&n) {
            return Err(invalid(&key("-env"), &n, "is not a valid environment variable name"));
        }
        found.push(Credential::Env(n));
    }
    let allowed = if what == "secret-id" || what == "token" {
        format!("{what}-file or {what}-env")
    } else {
        format!("{what}, {what}-file or {what}-env")
    };
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(ConfigError::Invalid {
            source_name: format!("vault.{backend}.auth"),
            value: what.to_string(),
            reason: format!("missing: set {allowed}"),
        }),
        _ => Err(ConfigError::Invalid {
            source_name: format!("vault.{backend}.auth"),
            value: what.to_string(),
            reason: format!("set only one of {allowed}"),
        }),
    }
}

fn check_mount(backend: &str, mount: Option<String>, default: &str) -> Result<String, ConfigError> {
    let m = mount.map(|m| m.trim().trim_matches('/').to_string()).unwrap_or_else(|| default.to_string());
    if m.is_empty() || m.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(
            &format!("vault.{backend}.auth.mount"),
            &m,
            "must be a non-empty path without spaces",
        ));
    }
    Ok(m)
}

fn validate_auth(backend: &str, a: AuthOptions) -> Result<Auth, ConfigError> {
    Ok(match a {
        AuthOptions::Token { token_file, token_env } => {
            Auth::Token { token: one_source(backend, "token", None, token_file, token_env)? }
        }
        AuthOptions::Approle { mount, role_id, role_id_file, role_id_env, secret_id_file, secret_id_env } => {
            Auth::AppRole {
                mount: check_mount(backend, mount, DEFAULT_APPROLE_MOUNT)?,
                role_id: one_source(backend, "role-id", role_id, role_id_file, role_id_env)?,
                secret_id: one_source(backend, "secret-id", None, secret_id_file, secret_id_env)?,
            }
        }
        AuthOptions::Kubernetes { mount, role, jwt_file } => {
            if role.trim().is_empty() {
                return Err(invalid(&format!("vault.{backend}.auth.role"), &role, "must not be empty"));
            }
            let jwt_file = jwt_file.unwrap_or_else(|| PathBuf::from(DEFAULT_K8S_JWT_PATH));
            if !jwt_file.is_absolute() {
                return Err(invalid(
                    &format!("vault.{backend}.auth.jwt-file"),
                    &jwt_file.display().to_string(),
                    "must be an absolute path",
                ));
            }
            Auth::Kubernetes {
                mount: check_mount(backend, mount, DEFAULT_K8S_MOUNT)?,
                role: role.trim().to_string(),
                jwt_file,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct File {
        vault: BTreeMap<String, VaultOptions>,
    }

    fn parse(toml_text: &str) -> Result<Vec<BackendConfig>, String> {
        let f: File = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        validate(f.vault).map_err(|e| e.to_string())
    }

    #[test]
    fn full_tables_validate_with_defaults() {
        let b = parse(
            r#"
            [vault.prod]
            address = "https://vault.internal:8200/"
            namespace = "/team-a/"
            ca-file = "/etc/ca.pem"
            kv-mounts = { legacy = 1 }
            cache-ttl = "5s"
            [vault.prod.auth]
            method = "approle"
            role-id = "r-1"
            secret-id-file = "/etc/sid"

            [vault.k8s]
            address = "http://127.0.0.1:8200"
            auth = { method = "kubernetes", role = "dray" }

            [vault.tok]
            address = "http://127.0.0.1:8200"
            kv-version = 1
            auth = { method = "token", token-env = "VAULT_TOKEN" }
            "#,
        )
        .unwrap();
        let names: Vec<&str> = b.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["k8s", "prod", "tok"]);
        let k8s = &b[0];
        assert_eq!(
            k8s.auth,
            Auth::Kubernetes {
                mount: "kubernetes".into(),
                role: "dray".into(),
                jwt_file: DEFAULT_K8S_JWT_PATH.into()
            }
        );
        assert_eq!((k8s.cache_ttl, k8s.timeout, k8s.kv_version), (DEFAULT_CACHE_TTL, DEFAULT_TIMEOUT, 2));
        let prod = &b[1];
        assert_eq!(prod.address, "https://vault.internal:8200");
        assert_eq!(prod.namespace.as_deref(), Some("team-a"));
        assert_eq!(prod.cache_ttl, Duration::from_secs(5));
        assert_eq!((prod.kv_version_of("legacy"), prod.kv_version_of("secret")), (1, 2));
        assert_eq!(
            prod.auth,
            Auth::AppRole {
                mount: "approle".into(),
                role_id: Credential::Inline("r-1".into()),
                secret_id: Credential::File("/etc/sid".into()),
            }
        );
        assert_eq!(b[2].auth, Auth::Token { token: Credential::Env("VAULT_TOKEN".into()) });
        assert_eq!(b[2].kv_version_of("anything"), 1);
    }

    #[test]
    fn errors_name_the_key() {
        let table = |body: &str| format!("[vault.p]\naddress = \"http://127.0.0.1:8200\"\n{body}");
        let cases = [
            (
                table("auth = { method = \"token\" }"),
                "invalid vault.p.auth \"token\": missing: set token-file or token-env",
            ),
            (
                table("auth = { method = \"token\", token-file = \"/t\", token-env = \"T\" }"),
                "set only one of token-file or token-env",
            ),
            (
                table("auth = { method = \"token\", token-file = \"t\" }"),
                "invalid vault.p.auth.token-file \"t\": must be an absolute path",
            ),
            (table("auth = { method = \"token\", token-env = \"1X\" }"), "vault.p.auth.token-env"),
            (
                table("auth = { method = \"approle\", secret-id-env = \"S\" }"),
                "missing: set role-id, role-id-file or role-id-env",
            ),
            (
                table("auth = { method = \"approle\", role-id = \"r\" }"),
                "missing: set secret-id-file or secret-id-env",
            ),
            (table("auth = { method = \"kubernetes\", role = \" \" }"), "vault.p.auth.role"),
            (
                table("auth = { method = \"kubernetes\", role = \"r\", jwt-file = \"rel\" }"),
                "vault.p.auth.jwt-file",
            ),
            (table("auth = { method = \"ldap\" }"), "unknown variant `ldap`"),
            (table("auth = { method = \"token\", token-fil = \"/t\" }"), "unknown field `token-fil`"),
            (
                table("kv-version = 3\nauth = { method = \"token\", token-env = \"T\" }"),
                "invalid vault.p.kv-version \"3\": must be 1 or 2",
            ),
            (
                table("kv-mounts = { kv = 0 }\nauth = { method = \"token\", token-env = \"T\" }"),
                "vault.p.kv-mounts.kv",
            ),
            (
                table("cache-ttl = \"soon\"\nauth = { method = \"token\", token-env = \"T\" }"),
                "invalid duration \"soon\"",
            ),
            (table("timeout = \"0s\"\nauth = { method = \"token\", token-env = \"T\" }"), "vault.p.timeout"),
            (
                table("namespace = \"a b\"\nauth = { method = \"token\", token-env = \"T\" }"),
                "vault.p.namespace",
            ),
            (table(""), "missing field `auth`"),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(want), "{text}\n=> {e}");
        }
        let addr = |a: &str| {
            parse(&format!(
                "[vault.p]\naddress = \"{a}\"\nauth = {{ method = \"token\", token-env = \"T\" }}"
            ))
        };
        assert!(
            addr("vault:8200")
                .unwrap_err()
                .starts_with("invalid vault.p.address \"vault:8200\": must start with https://")
        );
        assert!(addr("https:///v1").unwrap_err().contains("has no host"));
        assert!(addr("https://v:8200/v1").unwrap_err().contains("just scheme, host and port"));
        let e = parse("[vault.\"bad name\"]\naddress = \"http://h:1\"\nauth = { method = \"token\", token-env = \"T\" }")
            .unwrap_err();
        assert!(e.starts_with("invalid vault backend name \"bad name\""), "{e}");
    }

    #[test]
    fn credentials_are_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sid");
        std::fs::write(&p, "  abc\n").unwrap();
        assert_eq!(Credential::File(p.clone()).read().unwrap(), "abc");
        std::fs::write(&p, "\n").unwrap();
        assert_eq!(Credential::File(p.clone()).read().unwrap_err(), format!("file {} is empty", p.display()));
        let e = Credential::File(dir.path().join("nope")).read().unwrap_err();
        assert!(e.starts_with("cannot read "), "{e}");
        let e = Credential::Env("DRAY_TEST_SURELY_UNSET_VAULT_VAR".into()).read().unwrap_err();
        assert_eq!(e, "environment variable DRAY_TEST_SURELY_UNSET_VAULT_VAR is not set on this delegate");
        assert_eq!(Credential::Inline("r".into()).read().unwrap(), "r");
    }
}
