//! An `ssh` task: deploy an artifact to SSH hosts in phases, roll back, or run
//! commands on them. Executed by the delegate's `ssh` target (russh).
//!
//! The manager builds these parameters from the step spec and the stage's
//! target (infrastructure, connector, service); the delegate expands the host
//! list (ranges, an inventory file on the delegate), resolves the credential
//! references and does the work. Credentials only ever appear here as secret
//! references (`<+secrets.getValue(…)>`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{InvalidTaskSpec, check_refs, field, with_placeholders};

/// Default SSH port.
pub const DEFAULT_PORT: u16 = 22;
/// Releases kept per host by default (the current one included).
pub const DEFAULT_KEEP_RELEASES: u32 = 3;
/// Hosts worked on at once by default.
pub const DEFAULT_MAX_PARALLEL: u32 = 50;
/// Most hosts one task may address (after range expansion).
pub const MAX_HOSTS: usize = 10_000;
/// Output: per-host status, a JSON array of [`HostReport`].
pub const HOSTS_OUTPUT: &str = "hosts";
/// Output: the release id a deploy installed or a rollback left current.
pub const RELEASE_OUTPUT: &str = "release";

/// What an `ssh` task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Copy the artifact and config files into a new release directory, run
    /// the service's commands and make it `current`.
    Deploy,
    /// Make the previous release `current` again.
    Rollback,
    /// Run a script on the hosts.
    Command,
}

/// How the delegate decides whether it talks to the right host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum HostKeyPolicy {
    /// The host's key must be in this OpenSSH `known_hosts` file on the
    /// delegate (`[host]:port` entries for ports other than 22).
    KnownHosts {
        /// Path on the delegate.
        file: String,
    },
    /// The host's key must have one of these SHA-256 fingerprints
    /// (`SHA256:…`, as `ssh-keygen -lf` prints them).
    Pinned {
        /// Accepted fingerprints.
        fingerprints: Vec<String>,
    },
    /// Any key is accepted: no protection against a man in the middle. Only
    /// when the user asked for it by this name.
    AcceptAnyInsecure,
}

/// Credentials; values are secret references resolved by the delegate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Login user.
    pub user: String,
    /// OpenSSH private key text (Ed25519, ECDSA or RSA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// Passphrase of an encrypted private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<String>,
    /// Password, when the host takes passwords.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// Which hosts, and how to reach them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// `host`, `host:port`, `[v6addr]:port`, or a range such as
    /// `web[01:20].example` (zero padding kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// An inventory file on the delegate: one entry per line as in `hosts`;
    /// blank lines and `#` comments are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts_file: Option<String>,
    /// Port of entries that name none.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Host key policy.
    pub host_key: HostKeyPolicy,
    /// TCP connect and handshake timeout in ms (0: 10 s).
    #[serde(default)]
    pub connect_timeout_ms: u64,
}

fn default_port() -> u16 {
    DEFAULT_PORT
}

/// How many hosts a phase takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseSize {
    /// This many hosts (at least 1).
    Count(u32),
    /// This percentage of the hosts, rounded up (1–100).
    Percent(u8),
}

impl Default for PhaseSize {
    fn default() -> Self {
        PhaseSize::Percent(100)
    }
}

impl PhaseSize {
    /// Parses `2`, `"2"` or `"40%"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let size = if let Some(p) = t.strip_suffix('%') {
            let p: u8 =
                p.trim().parse().map_err(|_| format!("{text:?} is not a percentage such as \"40%\""))?;
            PhaseSize::Percent(p)
        } else {
            let n: u32 =
                t.parse().map_err(|_| format!("{text:?} is neither a host count nor a percentage"))?;
            PhaseSize::Count(n)
        };
        size.check().map(|()| size)
    }

    /// Checks the bounds.
    pub fn check(&self) -> Result<(), String> {
        match *self {
            PhaseSize::Count(0) => Err("a phase needs at least 1 host".into()),
            PhaseSize::Percent(p) if p == 0 || p > 100 => Err(format!("{p}% is not within 1–100%")),
            _ => Ok(()),
        }
    }

    /// Hosts per phase out of `total` (at least 1 when `total > 0`).
    pub fn per_phase(&self, total: usize) -> usize {
        let n = match *self {
            PhaseSize::Count(n) => n as usize,
            PhaseSize::Percent(p) => (total * p as usize).div_ceil(100),
        };
        n.clamp(1, total.max(1))
    }
}

/// The service's lifecycle commands, bash run on each host. Each runs with
/// `set -e` in the release directory, with `DRAY_*` variables set (see the
/// delegate's `ssh::script`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Commands {
    /// Before activation, in the new release directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<String>,
    /// Stops what runs, in the current release directory (if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
    /// Starts the now-current release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Fails (non-zero) when the started release is unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<String>,
}

/// Where the artifact comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ArtifactSource {
    /// Downloaded by the delegate over HTTP(S).
    Http {
        /// `http://` or `https://` URL; may hold secret references.
        url: String,
    },
    /// A file on the delegate.
    File {
        /// Absolute path.
        path: String,
    },
}

/// The artifact copied to every host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Where it comes from.
    pub source: ArtifactSource,
    /// Expected SHA-256, 64 hex digits.
    pub sha256: String,
    /// File name in the release directory (default: the URL's or path's last
    /// segment). A `.tar`, `.tar.gz` or `.tgz` is also unpacked there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
}

impl Artifact {
    /// The file name in the release directory.
    pub fn name(&self) -> String {
        if let Some(n) = &self.file_name {
            return n.clone();
        }
        let raw = match &self.source {
            ArtifactSource::Http { url } => url.split(['?', '#']).next().unwrap_or(url),
            ArtifactSource::File { path } => path,
        };
        raw.rsplit('/').find(|s| !s.is_empty()).unwrap_or("artifact").to_string()
    }
}

/// A config file written into each release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Path relative to the release directory.
    pub path: String,
    /// Content (rendered by the manager; may hold secret references).
    pub content: String,
}

/// Parameters of a `ssh` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshParams {
    /// What to do.
    pub action: Action,
    /// The hosts.
    pub inventory: Inventory,
    /// How to log in.
    pub credentials: Credentials,
    /// Absolute directory holding `releases/`, `current` and the release
    /// history on each host. `{host}` and `{port}` are replaced per host (for
    /// several "hosts" sharing one machine, as in tests).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub base_dir: String,
    /// Hosts per phase; phases run one after the other and the first failing
    /// phase stops the rollout.
    #[serde(default)]
    pub phase_size: PhaseSize,
    /// Hosts worked on at once within a phase.
    #[serde(default = "default_max_parallel")]
    pub max_parallel: u32,
    /// Deploy: the release id (a directory name under `releases/`).
    /// Rollback: the release to roll back; hosts whose current release is
    /// another are left alone. Empty on rollback: roll back whatever is current.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub release: String,
    /// Deploy: the artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// Deploy: config files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_files: Vec<ConfigFile>,
    /// Deploy and rollback: lifecycle commands.
    #[serde(default)]
    pub commands: Commands,
    /// Deploy: releases kept per host, the new one included.
    #[serde(default = "default_keep")]
    pub keep_releases: u32,
    /// Command: the bash script.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub script: String,
    /// Command: only hosts whose entry (after expansion) is listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only_hosts: Vec<String>,
    /// Variables exported to every remote script; values may hold secret references.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

fn default_max_parallel() -> u32 {
    DEFAULT_MAX_PARALLEL
}

fn default_keep() -> u32 {
    DEFAULT_KEEP_RELEASES
}

/// One host's result, reported in the [`HOSTS_OUTPUT`] output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostReport {
    /// The host entry (`name` or `name:port`).
    pub host: String,
    /// 1-based phase.
    pub phase: usize,
    /// `Succeeded`, `Failed`, `Skipped` (a later phase after a failure),
    /// `Unchanged` (a rollback found nothing to undo).
    pub status: String,
    /// The release current on the host afterwards, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub release: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// True when `s` is a safe single path segment for a release id or file name.
pub fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
}

/// True when `p` is a relative path without `..`, empty or odd segments.
pub fn is_safe_relative_path(p: &str) -> bool {
    !p.starts_with('/') && !p.ends_with('/') && p.split('/').all(is_safe_name)
}

impl SshParams {
    /// Checks what the schema cannot.
    pub fn validate(&self) -> Result<(), InvalidTaskSpec> {
        let inv = &self.inventory;
        if inv.hosts.is_empty() && inv.hosts_file.is_none() {
            return Err(field("inventory.hosts", "name at least one host or a hosts_file"));
        }
        if inv.hosts.len() > MAX_HOSTS {
            return Err(field(
                "inventory.hosts",
                format!("{} entries; at most {MAX_HOSTS}", inv.hosts.len()),
            ));
        }
        if let Some((i, _)) = inv.hosts.iter().enumerate().find(|(_, h)| h.trim().is_empty()) {
            return Err(field("inventory.hosts", format!("entry {i} is empty")));
        }
        if inv.hosts_file.as_deref().is_some_and(|f| !f.starts_with('/')) {
            return Err(field("inventory.hosts_file", "must be an absolute path on the delegate"));
        }
        if inv.port == 0 {
            return Err(field("inventory.port", "must be 1–65535"));
        }
        match &inv.host_key {
            HostKeyPolicy::KnownHosts { file } if !file.starts_with('/') => {
                return Err(field("inventory.host_key.file", "must be an absolute path on the delegate"));
            }
            HostKeyPolicy::Pinned { fingerprints } => {
                if fingerprints.is_empty() {
                    return Err(field("inventory.host_key.fingerprints", "pin at least one fingerprint"));
                }
                if let Some(f) = fingerprints.iter().find(|f| !is_sha256_fingerprint(f)) {
                    return Err(field(
                        "inventory.host_key.fingerprints",
                        format!("{f:?} is not a SHA256:… fingerprint (as `ssh-keygen -lf` prints)"),
                    ));
                }
            }
            _ => {}
        }
        let c = &self.credentials;
        if c.user.trim().is_empty() {
            return Err(field("credentials.user", "must not be empty"));
        }
        if c.private_key.is_none() && c.password.is_none() {
            return Err(field("credentials", "give a private_key or a password (as secret references)"));
        }
        for (name, v) in
            [("private_key", &c.private_key), ("passphrase", &c.passphrase), ("password", &c.password)]
        {
            if let Some(v) = v {
                check_refs(format!("credentials.{name}"), v)?;
            }
        }
        self.phase_size.check().map_err(|e| field("phase_size", e))?;
        if self.max_parallel == 0 {
            return Err(field("max_parallel", "must be at least 1"));
        }
        for (k, v) in &self.env {
            if !super::is_env_name(k) {
                return Err(field("env", format!("{k:?} is not a valid environment variable name")));
            }
            check_refs(format!("env.{k}"), v)?;
        }
        match self.action {
            Action::Deploy | Action::Rollback => self.validate_release_layout()?,
            Action::Command => {
                if self.script.trim().is_empty() {
                    return Err(field("script", "must not be empty"));
                }
                check_refs("script", &self.script)?;
            }
        }
        Ok(())
    }

    fn validate_release_layout(&self) -> Result<(), InvalidTaskSpec> {
        if !self.base_dir.starts_with('/') || self.base_dir.contains("/../") || self.base_dir.ends_with("/..")
        {
            return Err(field(
                "base_dir",
                format!("{:?} must be an absolute path without ..", self.base_dir),
            ));
        }
        // A rollback may leave the release open (roll back whatever is current).
        let open_rollback = self.release.is_empty() && self.action == Action::Rollback;
        if !open_rollback && !is_safe_name(&self.release) {
            return Err(field(
                "release",
                format!("{:?} must be a name of letters, digits, '.', '_', '-' or '+'", self.release),
            ));
        }
        for (name, cmd) in [
            ("install", &self.commands.install),
            ("stop", &self.commands.stop),
            ("start", &self.commands.start),
            ("health_check", &self.commands.health_check),
        ] {
            if let Some(c) = cmd {
                check_refs(format!("commands.{name}"), c)?;
            }
        }
        if self.action != Action::Deploy {
            return Ok(());
        }
        if self.keep_releases < 2 {
            return Err(field("keep_releases", "keep at least 2 releases, so there is one to roll back to"));
        }
        let Some(a) = &self.artifact else {
            return Err(field("artifact", "a deploy needs an artifact"));
        };
        if a.sha256.len() != 64 || !a.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(field("artifact.sha256", format!("{:?} is not 64 hex digits", a.sha256)));
        }
        match &a.source {
            ArtifactSource::Http { url } => {
                let u = with_placeholders("artifact.url", url)?;
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(field(
                        "artifact.url",
                        format!("{url:?} must start with http:// or https://"),
                    ));
                }
            }
            ArtifactSource::File { path } if !path.starts_with('/') => {
                return Err(field(
                    "artifact.path",
                    format!("{path:?} must be an absolute path on the delegate"),
                ));
            }
            ArtifactSource::File { .. } => {}
        }
        let name = a.name();
        if !is_safe_name(&name) {
            return Err(field("artifact.file_name", format!("{name:?} is not a safe file name")));
        }
        let mut seen = Vec::new();
        for cf in &self.config_files {
            if !is_safe_relative_path(&cf.path) {
                return Err(field(
                    "config_files",
                    format!("{:?} must be a relative path within the release (no .., no leading /)", cf.path),
                ));
            }
            if cf.path == name || seen.contains(&&cf.path) {
                return Err(field("config_files", format!("{:?} is written twice", cf.path)));
            }
            seen.push(&cf.path);
            check_refs(format!("config_files.{}", cf.path), &cf.content)?;
        }
        Ok(())
    }
}

/// `SHA256:` followed by unpadded or padded base64 of 32 bytes.
pub fn is_sha256_fingerprint(f: &str) -> bool {
    let Some(b64) = f.strip_prefix("SHA256:") else {
        return false;
    };
    let b64 = b64.trim_end_matches('=');
    b64.len() == 43 && b64.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deploy() -> serde_json::Value {
        json!({
            "action": "deploy",
            "inventory": {"hosts": ["web[01:03].example", "db:2222"], "port": 22, "host_key": {"policy": "known_hosts", "file": "/etc/ssh/kh"}},
            "credentials": {"user": "deploy", "private_key": "<+secrets.getValue(\"file:/k\")>"},
            "base_dir": "/opt/app",
            "release": "r1",
            "keep_releases": 3,
            "phase_size": {"percent": 40},
            "artifact": {"source": {"type": "http", "url": "https://x.example/app-1.tar.gz?sig=1"}, "sha256": "a".repeat(64)},
            "config_files": [{"path": "conf/app.env", "content": "A=1"}],
            "commands": {"start": "./run", "health_check": "curl -f localhost"}
        })
    }

    fn parse(v: serde_json::Value) -> Result<SshParams, String> {
        let p: SshParams = serde_json::from_value(v).map_err(|e| e.to_string())?;
        p.validate().map_err(|e| e.to_string())?;
        Ok(p)
    }

    fn with(mut v: serde_json::Value, pointer: &str, value: serde_json::Value) -> serde_json::Value {
        *v.pointer_mut(pointer).unwrap() = value;
        v
    }

    #[test]
    fn a_full_deploy_parses_with_defaults() {
        let p = parse(deploy()).unwrap();
        assert_eq!(p.inventory.port, 22);
        assert_eq!(p.keep_releases, DEFAULT_KEEP_RELEASES);
        assert_eq!(p.max_parallel, DEFAULT_MAX_PARALLEL);
        assert_eq!(p.artifact.unwrap().name(), "app-1.tar.gz");
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            ("/inventory/hosts", json!([]), "invalid inventory.hosts"),
            ("/inventory/port", json!(0), "invalid inventory.port"),
            (
                "/inventory/host_key",
                json!({"policy": "known_hosts", "file": "kh"}),
                "inventory.host_key.file",
            ),
            ("/inventory/host_key", json!({"policy": "pinned", "fingerprints": ["MD5:aa"]}), "SHA256"),
            ("/credentials", json!({"user": "u"}), "invalid credentials"),
            ("/credentials/user", json!(" "), "credentials.user"),
            ("/credentials/private_key", json!("<+secrets.getValue(\"nope\")>"), "credentials.private_key"),
            ("/base_dir", json!("opt/app"), "base_dir"),
            ("/base_dir", json!("/opt/../etc"), "base_dir"),
            ("/release", json!("../x"), "release"),
            ("/phase_size", json!({"percent": 0}), "phase_size"),
            ("/phase_size", json!({"count": 0}), "phase_size"),
            ("/artifact/sha256", json!("abc"), "artifact.sha256"),
            ("/artifact/source", json!({"type": "http", "url": "ftp://x/a"}), "artifact.url"),
            ("/artifact/source", json!({"type": "file", "path": "rel/a"}), "artifact.path"),
            ("/config_files", json!([{"path": "../etc/passwd", "content": ""}]), "config_files"),
            ("/config_files", json!([{"path": "/etc/passwd", "content": ""}]), "config_files"),
            ("/config_files", json!([{"path": "app-1.tar.gz", "content": ""}]), "written twice"),
            ("/keep_releases", json!(1), "keep_releases"),
        ];
        for (pointer, value, expect) in cases {
            let e = parse(with(deploy(), pointer, value.clone())).unwrap_err();
            assert!(e.contains(expect), "{pointer} = {value}: {e}");
        }
        let e = parse(with(deploy(), "/action", json!("command"))).unwrap_err();
        assert_eq!(e, "invalid script: must not be empty");
        let e = parse(with(deploy(), "/inventory/hosts", json!(["a", ""]))).unwrap_err();
        assert_eq!(e, "invalid inventory.hosts: entry 1 is empty");
    }

    #[test]
    fn rollback_needs_no_artifact_and_may_leave_the_release_open() {
        let mut v = deploy();
        v["action"] = json!("rollback");
        v["release"] = json!("");
        v.as_object_mut().unwrap().remove("artifact");
        assert!(parse(v).is_ok());
    }

    #[test]
    fn phase_sizes_parse_and_divide() {
        assert_eq!(PhaseSize::parse("2"), Ok(PhaseSize::Count(2)));
        assert_eq!(PhaseSize::parse(" 40% "), Ok(PhaseSize::Percent(40)));
        assert!(PhaseSize::parse("0").is_err());
        assert!(PhaseSize::parse("101%").is_err());
        assert!(PhaseSize::parse("two").is_err());
        assert_eq!(PhaseSize::Percent(40).per_phase(5), 2);
        assert_eq!(PhaseSize::Percent(40).per_phase(6), 3, "rounded up");
        assert_eq!(PhaseSize::Percent(1).per_phase(3), 1, "never 0");
        assert_eq!(PhaseSize::Count(10).per_phase(3), 3);
        assert_eq!(PhaseSize::default().per_phase(7), 7);
    }

    #[test]
    fn fingerprints_and_names() {
        assert!(is_sha256_fingerprint("SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"));
        assert!(is_sha256_fingerprint("SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s="));
        assert!(!is_sha256_fingerprint("uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"));
        assert!(is_safe_relative_path("conf/app.env"));
        assert!(!is_safe_relative_path("conf//app.env"));
        assert!(!is_safe_relative_path("conf/../x"));
        assert!(!is_safe_name("a b"));
    }
}
