//! Delegate configuration: [`Options`] gathered from three layers — a TOML file
//! (`--config`), `DRAY_*` environment variables and command-line flags, in that
//! order of precedence (a flag beats the environment beats the file) — and
//! validated into a [`Config`]. Every error names the flag, variable or key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::secrets::vault::config::{self as vault_config, BackendConfig, VaultOptions};

/// Default `--capacity`.
pub const DEFAULT_CAPACITY: u32 = 4;
/// Largest accepted `--capacity`.
pub const MAX_CAPACITY: u32 = 1024;
/// Default `--drain-grace`.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(30);
/// Default `--state-dir`.
pub const DEFAULT_STATE_DIR: &str = "./dray-delegate-state";

/// A configuration problem. The binary exits with code 2 on any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required setting is absent from every layer.
    #[error("missing {what}: pass {flag}, set {env} or add `{key}` to the config file")]
    Missing {
        /// What it is.
        what: &'static str,
        /// Its flag.
        flag: &'static str,
        /// Its environment variable.
        env: &'static str,
        /// Its config-file key.
        key: &'static str,
    },
    /// A setting has a bad value.
    #[error("invalid {source_name} {value:?}: {reason}")]
    Invalid {
        /// Where it came from: `--capacity`, `DRAY_CAPACITY`, `capacity in FILE`...
        source_name: String,
        /// The offending value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A file cannot be read.
    #[error("cannot read {what} {path}: {reason}", path = path.display())]
    Read {
        /// "config file", "CA file"...
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The config file is not valid TOML for these options.
    #[error("invalid config file {path}: {reason}", path = path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key).
        reason: String,
    },
    /// First run without a token.
    #[error(
        "no enrolment in {state_dir} and no token given: pass --token or set DRAY_TOKEN on the first run",
        state_dir = state_dir.display()
    )]
    NeedToken {
        /// The state directory searched.
        state_dir: PathBuf,
    },
}

/// Settings from one layer; `None` = not given here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Options {
    /// Manager URL (`https://host:port`).
    pub manager: Option<String>,
    /// Manager CA certificate file.
    #[serde(alias = "ca_file")]
    pub ca_file: Option<PathBuf>,
    /// Enrolment token (first run only).
    pub token: Option<String>,
    /// Delegate name.
    pub name: Option<String>,
    /// Tags (a list, or one comma-separated string).
    #[serde(default, deserialize_with = "tags_from_toml")]
    pub tags: Option<Vec<String>>,
    /// State directory.
    #[serde(alias = "state_dir")]
    pub state_dir: Option<PathBuf>,
    /// Concurrent task slots.
    pub capacity: Option<u32>,
    /// How long a drain waits for running tasks.
    #[serde(default, alias = "drain_grace", deserialize_with = "duration_from_toml")]
    pub drain_grace: Option<Duration>,
    /// Address of the health endpoint (`/healthz`, `/readyz`); off when unset.
    #[serde(alias = "http_addr")]
    pub http_addr: Option<String>,
    /// Vault / OpenBao secret backends by name (`[vault.NAME]` tables; config
    /// file only, see [`crate::secrets::vault::config`]).
    pub vault: Option<BTreeMap<String, VaultOptions>>,
}

fn tags_from_toml<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Tags {
        List(Vec<String>),
        Csv(String),
    }
    Ok(Some(match Tags::deserialize(d)? {
        Tags::List(v) => v,
        Tags::Csv(s) => split_tags(&s),
    }))
}

fn duration_from_toml<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map(Some).map_err(|e| {
        serde::de::Error::custom(format!("invalid duration {s:?}: {e} (examples: 30s, 2m, 1h 30m)"))
    })
}

/// Splits `a, b,c` into tags, dropping empty pieces (so `--tags ""` means none).
pub fn split_tags(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect()
}

impl Options {
    /// Parses a TOML config file's text.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text)
            .map_err(|e| ConfigError::File { path: path.to_path_buf(), reason: e.to_string() })
    }

    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            what: "config file",
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_toml(&text, path)
    }

    /// Reads the `DRAY_*` variables through `lookup` (the process environment
    /// in the binary, a map in tests). Empty values count as unset.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let capacity = match get("DRAY_CAPACITY") {
            None => None,
            Some(v) => Some(v.trim().parse::<u32>().map_err(|e| ConfigError::Invalid {
                source_name: "DRAY_CAPACITY".into(),
                value: v.clone(),
                reason: e.to_string(),
            })?),
        };
        let drain_grace = match get("DRAY_DRAIN_GRACE") {
            None => None,
            Some(v) => Some(humantime::parse_duration(v.trim()).map_err(|e| ConfigError::Invalid {
                source_name: "DRAY_DRAIN_GRACE".into(),
                value: v.clone(),
                reason: e.to_string(),
            })?),
        };
        Ok(Options {
            manager: get("DRAY_MANAGER"),
            ca_file: get("DRAY_CA_FILE").map(PathBuf::from),
            token: get("DRAY_TOKEN"),
            name: get("DRAY_NAME"),
            tags: get("DRAY_TAGS").map(|t| split_tags(&t)),
            state_dir: get("DRAY_STATE_DIR").map(PathBuf::from),
            capacity,
            drain_grace,
            http_addr: get("DRAY_HTTP_ADDR"),
            vault: None,
        })
    }

    /// `self` where set, else `lower`.
    pub fn over(self, lower: Options) -> Options {
        Options {
            manager: self.manager.or(lower.manager),
            ca_file: self.ca_file.or(lower.ca_file),
            token: self.token.or(lower.token),
            name: self.name.or(lower.name),
            tags: self.tags.or(lower.tags),
            state_dir: self.state_dir.or(lower.state_dir),
            capacity: self.capacity.or(lower.capacity),
            drain_grace: self.drain_grace.or(lower.drain_grace),
            http_addr: self.http_addr.or(lower.http_addr),
            vault: self.vault.or(lower.vault),
        }
    }

    /// Merges flags over environment over file, then validates.
    pub fn resolve(
        flags: Options,
        env: Options,
        file: Option<Options>,
        hostname: impl FnOnce() -> Option<String>,
    ) -> Result<Config, ConfigError> {
        flags.over(env).over(file.unwrap_or_default()).validate(hostname)
    }

    /// Checks every setting and fills defaults. `hostname` supplies the default name.
    pub fn validate(self, hostname: impl FnOnce() -> Option<String>) -> Result<Config, ConfigError> {
        let invalid = |source_name: &str, value: &str, reason: &str| ConfigError::Invalid {
            source_name: source_name.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let manager = self.manager.map(|m| m.trim().to_string()).ok_or(ConfigError::Missing {
            what: "manager URL",
            flag: "--manager",
            env: "DRAY_MANAGER",
            key: "manager",
        })?;
        // Several addresses (replicas, or fallbacks) are comma-separated.
        let managers: Vec<String> =
            manager.split(',').map(str::trim).filter(|m| !m.is_empty()).map(str::to_string).collect();
        if managers.is_empty() {
            return Err(invalid("manager URL", &manager, "no address given"));
        }
        for m in &managers {
            check_manager_url(m).map_err(|reason| invalid("manager URL", m, &reason))?;
        }
        let manager = managers.join(",");
        let ca_file = self.ca_file.ok_or(ConfigError::Missing {
            what: "manager CA certificate",
            flag: "--ca-file",
            env: "DRAY_CA_FILE",
            key: "ca-file",
        })?;
        let name = match self.name {
            Some(n) => n.trim().to_string(),
            None => hostname().unwrap_or_default().trim().to_string(),
        };
        if name.is_empty() {
            return Err(invalid(
                "name",
                &name,
                "must not be empty (pass --name; the hostname is unavailable)",
            ));
        }
        if name.chars().any(char::is_control) || name.len() > 253 {
            return Err(invalid("name", &name, "must be at most 253 characters without control characters"));
        }
        let mut tags: Vec<String> = Vec::new();
        for t in self.tags.unwrap_or_default() {
            if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c == ',') {
                return Err(invalid("tag", &t, "tags must be non-empty, without spaces or commas"));
            }
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        let capacity = self.capacity.unwrap_or(DEFAULT_CAPACITY);
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(invalid(
                "capacity",
                &capacity.to_string(),
                &format!("must be between 1 and {MAX_CAPACITY}"),
            ));
        }
        let token = self.token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).map(Token);
        let http_addr = match self.http_addr {
            None => None,
            Some(a) => Some(a.trim().parse::<std::net::SocketAddr>().map_err(|_| {
                invalid("health endpoint address", &a, "expected an address like 127.0.0.1:7081")
            })?),
        };
        let vault = vault_config::validate(self.vault.unwrap_or_default())?;
        Ok(Config {
            manager,
            ca_file,
            token,
            name,
            tags,
            state_dir: self.state_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            capacity,
            drain_grace: self.drain_grace.unwrap_or(DEFAULT_DRAIN_GRACE),
            http_addr,
            vault,
            managers,
        })
    }
}

fn check_manager_url(url: &str) -> Result<(), String> {
    let rest =
        url.strip_prefix("https://").ok_or("must start with https:// (the manager only speaks TLS)")?;
    let uri: tonic::transport::Uri = url.parse().map_err(|e| format!("{e}"))?;
    if uri.host().is_none_or(str::is_empty) || rest.starts_with('/') {
        return Err("has no host".into());
    }
    Ok(())
}

/// An enrolment token. Redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Manager addresses as given (comma-separated), for display.
    pub manager: String,
    /// Manager addresses, `https://...`, in order of preference.
    pub managers: Vec<String>,
    /// Manager CA certificate file.
    pub ca_file: PathBuf,
    /// Enrolment token, needed only when the state directory has no identity.
    pub token: Option<Token>,
    /// Delegate name.
    pub name: String,
    /// Tags announced to the manager (deduplicated, in order).
    pub tags: Vec<String>,
    /// State directory.
    pub state_dir: PathBuf,
    /// Concurrent task slots.
    pub capacity: u32,
    /// How long a drain waits for running tasks before stopping them.
    pub drain_grace: Duration,
    /// Health endpoint address, if any.
    pub http_addr: Option<std::net::SocketAddr>,
    /// Vault / OpenBao secret backends.
    pub vault: Vec<BackendConfig>,
}

impl Config {
    /// Reads the CA certificate file.
    pub fn read_ca(&self) -> Result<String, ConfigError> {
        let read_err =
            |reason: String| ConfigError::Read { what: "CA file", path: self.ca_file.clone(), reason };
        let pem = std::fs::read_to_string(&self.ca_file).map_err(|e| read_err(e.to_string()))?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(read_err("no PEM certificate in it".into()));
        }
        Ok(pem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<Options, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Options::from_env(|k| map.get(k).cloned())
    }

    fn host() -> Option<String> {
        Some("build-host".into())
    }

    fn base() -> Options {
        Options {
            manager: Some("https://m:7443".into()),
            ca_file: Some("/ca.pem".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_fill_in() {
        let c = base().validate(host).unwrap();
        assert_eq!(c.name, "build-host");
        assert_eq!(c.capacity, DEFAULT_CAPACITY);
        assert_eq!(c.drain_grace, DEFAULT_DRAIN_GRACE);
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert!(c.tags.is_empty() && c.token.is_none());
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let file = Options::from_toml(
            r#"
            manager = "https://file:1"
            ca-file = "/file/ca.pem"
            name = "file-name"
            tags = ["f1", "f2"]
            capacity = 2
            drain-grace = "10s"
            state_dir = "/file/state"
            "#,
            Path::new("d.toml"),
        )
        .unwrap();
        let env = env(&[
            ("DRAY_MANAGER", "https://env:2"),
            ("DRAY_NAME", "env-name"),
            ("DRAY_CAPACITY", "3"),
            ("DRAY_TAGS", ""),
        ])
        .unwrap();
        let flags = Options { manager: Some("https://flag:3".into()), ..Default::default() };
        let c = Options::resolve(flags, env, Some(file), host).unwrap();
        assert_eq!(c.manager, "https://flag:3", "flag wins");
        assert_eq!(c.name, "env-name", "env beats file");
        assert_eq!(c.capacity, 3, "env beats file");
        assert_eq!(c.ca_file, PathBuf::from("/file/ca.pem"), "file fills the rest");
        assert_eq!(c.tags, ["f1", "f2"], "empty env value counts as unset");
        assert_eq!(c.drain_grace, Duration::from_secs(10));
        assert_eq!(c.state_dir, PathBuf::from("/file/state"));
    }

    #[test]
    fn env_layer_parses_every_variable() {
        let o = env(&[
            ("DRAY_MANAGER", "https://m:1"),
            ("DRAY_CA_FILE", "/ca"),
            ("DRAY_TOKEN", "tok"),
            ("DRAY_NAME", "n"),
            ("DRAY_TAGS", "a, b,c"),
            ("DRAY_STATE_DIR", "/s"),
            ("DRAY_CAPACITY", "8"),
            ("DRAY_DRAIN_GRACE", "1m 30s"),
        ])
        .unwrap();
        let c = o.validate(host).unwrap();
        assert_eq!(c.tags, ["a", "b", "c"]);
        assert_eq!(c.token, Some(Token("tok".into())));
        assert_eq!(c.capacity, 8);
        assert_eq!(c.drain_grace, Duration::from_secs(90));
        assert!(!format!("{c:?}").contains("tok\""), "token is redacted");
    }

    #[test]
    fn errors_name_the_problem() {
        let e = Options::default().validate(host).unwrap_err();
        assert_eq!(
            e.to_string(),
            "missing manager URL: pass --manager, set DRAY_MANAGER or add `manager` to the config file"
        );
        let e = Options { ca_file: None, ..base() }.validate(host).unwrap_err();
        assert!(e.to_string().contains("--ca-file"), "{e}");
        let e = Options { manager: Some("http://m:1".into()), ..base() }.validate(host).unwrap_err();
        assert!(e.to_string().contains("must start with https://"), "{e}");
        let e = Options { capacity: Some(0), ..base() }.validate(host).unwrap_err();
        assert_eq!(e.to_string(), "invalid capacity \"0\": must be between 1 and 1024");
        let e = Options { tags: Some(vec!["a b".into()]), ..base() }.validate(host).unwrap_err();
        assert!(e.to_string().starts_with("invalid tag \"a b\""), "{e}");
        let e = base().validate(|| None).unwrap_err();
        assert!(e.to_string().contains("name"), "{e}");
        let e = env(&[("DRAY_CAPACITY", "lots")]).unwrap_err();
        assert!(e.to_string().starts_with("invalid DRAY_CAPACITY \"lots\""), "{e}");
        let e = env(&[("DRAY_DRAIN_GRACE", "soon")]).unwrap_err();
        assert!(e.to_string().starts_with("invalid DRAY_DRAIN_GRACE \"soon\""), "{e}");
    }

    #[test]
    fn file_errors_name_the_key() {
        let e = Options::from_toml("capacty = 3", Path::new("d.toml")).unwrap_err();
        assert!(e.to_string().starts_with("invalid config file d.toml"), "{e}");
        assert!(e.to_string().contains("capacty"), "{e}");
        let e = Options::from_toml("drain-grace = \"forever\"", Path::new("d.toml")).unwrap_err();
        assert!(e.to_string().contains("invalid duration \"forever\""), "{e}");
        let o = Options::from_toml("tags = \"x,y\"", Path::new("d.toml")).unwrap();
        assert_eq!(o.tags, Some(vec!["x".to_string(), "y".to_string()]));
        let e = Options::from_file(Path::new("/no/such/file.toml")).unwrap_err();
        assert!(e.to_string().starts_with("cannot read config file /no/such/file.toml"), "{e}");
    }

    #[test]
    fn vault_backends_come_from_the_file() {
        let file = Options::from_toml(
            r#"
            manager = "https://m:1"
            ca-file = "/ca.pem"
            [vault.prod]
            address = "http://127.0.0.1:8200"
            auth = { method = "token", token-file = "/etc/dray/vault-token" }
            "#,
            Path::new("d.toml"),
        )
        .unwrap();
        let c = Options::resolve(Options::default(), env(&[]).unwrap(), Some(file), host).unwrap();
        assert_eq!(c.vault.len(), 1);
        assert_eq!(c.vault[0].name, "prod");
        let bad = Options::from_toml(
            "[vault.prod]\naddress = \"ftp://x\"\nauth = { method = \"token\", token-env = \"T\" }",
            Path::new("d.toml"),
        )
        .unwrap();
        let e = Options { vault: bad.vault, ..base() }.validate(host).unwrap_err();
        assert!(e.to_string().starts_with("invalid vault.prod.address \"ftp://x\""), "{e}");
    }

    #[test]
    fn ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "nope").unwrap();
        let c = Options { ca_file: Some(p), ..base() }.validate(host).unwrap();
        assert!(c.read_ca().unwrap_err().to_string().contains("no PEM certificate"));
    }

    #[test]
    fn several_manager_addresses_are_each_checked() {
        let c =
            Options { manager: Some(" https://a:1 , https://b:2,".into()), ..base() }.validate(host).unwrap();
        assert_eq!(c.managers, vec!["https://a:1".to_string(), "https://b:2".to_string()]);
        assert_eq!(c.manager, "https://a:1,https://b:2");
        let e =
            Options { manager: Some("https://a:1,http://b:2".into()), ..base() }.validate(host).unwrap_err();
        assert!(e.to_string().contains("http://b:2"), "the bad address is named: {e}");
        let e = Options { manager: Some(" , ".into()), ..base() }.validate(host).unwrap_err();
        assert!(e.to_string().contains("no address given"), "{e}");
    }
}
