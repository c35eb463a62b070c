//! Validation of the SSH step specs (`SshDeploy`, `SshRollback`,
//! `SshCommand`), the `Ssh` infrastructure spec and the `Ssh` connector spec.
//!
//! Decision: credentials live in an `Ssh` **connector** (`user`, `privateKey`
//! or `password`, optional `passphrase`, all secret references), named by the
//! infrastructure's `connectorRef`. The infrastructure says *where* (hosts,
//! port, base directory, host-key policy); the connector says *who* and is
//! shared by every infrastructure that logs in the same way, rotated in one
//! place, and its `delegateSelectors` route the work to delegates that hold
//! the secrets.
//!
//! Any value may be an expression (`<+…>`), checked only once rendered (by the
//! delegate, which refuses bad task parameters naming the field).

use std::sync::Arc;

use dray_shared::task::ssh::{PhaseSize, is_sha256_fingerprint};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::{EnvVariable, SpecRules, StepTypes, Typed, selector_rules};
use crate::model::validate::check_duration;
use crate::model::yaml::index_path;

/// Host-key policies an `Ssh` infrastructure may name.
pub const HOST_KEY_POLICIES: &[&str] = &["KnownHosts", "Pinned", "AcceptAnyInsecure"];

/// Registers the SSH step validators.
pub fn register(t: &mut StepTypes) {
    t.register(Arc::new(Typed::<SshDeploySpec>::new("SshDeploy")));
    t.register(Arc::new(Typed::<SshRollbackSpec>::new("SshRollback")));
    t.register(Arc::new(Typed::<SshCommandSpec>::new("SshCommand")));
}

/// A number or a string (a count, a percentage or an expression).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NumberOrText {
    /// `2`.
    Number(i64),
    /// `"40%"`, `"2"` or `<+…>`.
    Text(String),
}

impl NumberOrText {
    fn text(&self) -> String {
        match self {
            NumberOrText::Number(n) => n.to_string(),
            NumberOrText::Text(t) => t.clone(),
        }
    }
}

fn is_expr(s: &str) -> bool {
    s.contains("<+")
}

/// `phaseSize` and `maxParallel` problems.
fn rollout_rules(phase: &Option<NumberOrText>, max_parallel: &Option<NumberOrText>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(p) = phase {
        let t = p.text();
        if !is_expr(&t)
            && let Err(e) = PhaseSize::parse(&t)
        {
            out.push(("phaseSize".into(), e));
        }
    }
    if let Some(m) = max_parallel {
        let t = m.text();
        if !is_expr(&t) && !t.trim().parse::<u32>().is_ok_and(|n| n > 0) {
            out.push(("maxParallel".into(), format!("{t:?} is not a positive number of hosts")));
        }
    }
    out
}

/// `SshDeploy` spec: copy the service's artifact and config files into a new
/// release on every host, phase by phase, and make it current.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SshDeploySpec {
    /// Hosts per phase: a count (`2`) or a percentage (`"40%"`); default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_size: Option<NumberOrText>,
    /// Hosts worked on at once within a phase (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<NumberOrText>,
    /// Releases kept per host, the new one included (default 3, at least 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_releases: Option<NumberOrText>,
    /// Delegate tags the task needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegate_selectors: Vec<String>,
}

impl SpecRules for SshDeploySpec {
    fn rules(&self) -> Vec<(String, String)> {
        let mut out = rollout_rules(&self.phase_size, &self.max_parallel);
        if let Some(k) = &self.keep_releases {
            let t = k.text();
            if !is_expr(&t) && !t.trim().parse::<u32>().is_ok_and(|n| n >= 2) {
                out.push(("keepReleases".into(), format!("{t:?}: keep at least 2 releases")));
            }
        }
        out.extend(selector_rules(&self.delegate_selectors));
        out
    }
}

/// `SshRollback` spec: every host whose current release is the one this
/// stage deployed goes back to its previous release (from the host's own
/// release history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SshRollbackSpec {
    /// Which release to undo: absent = the one this stage deployed (hosts on
    /// another release are left alone); `Current` = whatever is current on
    /// each host; otherwise a release id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Hosts per phase (default all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_size: Option<NumberOrText>,
    /// Hosts worked on at once within a phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<NumberOrText>,
    /// Delegate tags the task needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegate_selectors: Vec<String>,
}

impl SpecRules for SshRollbackSpec {
    fn rules(&self) -> Vec<(String, String)> {
        let mut out = rollout_rules(&self.phase_size, &self.max_parallel);
        if let Some(r) = &self.release
            && !is_expr(r)
            && r != "Current"
            && !dray_shared::task::ssh::is_safe_name(r)
        {
            out.push(("release".into(), format!("{r:?} is neither Current nor a release id")));
        }
        out.extend(selector_rules(&self.delegate_selectors));
        out
    }
}

/// `SshCommand` spec: a bash script on all or some of the hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SshCommandSpec {
    /// The script (a template).
    pub script: String,
    /// Only these hosts (entries of the infrastructure's host list); default all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Variables exported to the script.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_variables: Vec<EnvVariable>,
    /// Hosts per phase (default all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_size: Option<NumberOrText>,
    /// Hosts worked on at once within a phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<NumberOrText>,
    /// Delegate tags the task needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegate_selectors: Vec<String>,
}

impl SpecRules for SshCommandSpec {
    fn rules(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.script.trim().is_empty() {
            out.push(("script".into(), "the script is empty".into()));
        }
        for (i, h) in self.hosts.iter().enumerate() {
            if h.trim().is_empty() {
                out.push((index_path("hosts", i), "empty host".into()));
            }
        }
        for (i, v) in self.environment_variables.iter().enumerate() {
            if !dray_shared::task::is_env_name(&v.name) {
                out.push((
                    format!("{}.name", index_path("environmentVariables", i)),
                    format!("{:?} is not a valid environment variable name", v.name),
                ));
            }
        }
        out.extend(rollout_rules(&self.phase_size, &self.max_parallel));
        out.extend(selector_rules(&self.delegate_selectors));
        out
    }
}

/// Problems in the `spec` of an infrastructure of type `infra_type`, as
/// (path within the spec, message); `None` when this platform does not own
/// that type.
pub fn infrastructure_rules(
    infra_type: &str,
    spec: &serde_json::Map<String, Json>,
) -> Option<Vec<(String, String)>> {
    if infra_type != "Ssh" {
        return None;
    }
    const KNOWN: &[&str] = &[
        "connectorRef",
        "hosts",
        "hostsFile",
        "port",
        "baseDir",
        "hostKeyPolicy",
        "knownHostsFile",
        "hostKeyFingerprints",
        "connectTimeout",
    ];
    let mut out = Vec::new();
    for k in spec.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
        out.push((k.clone(), format!("unknown field; known: {}", KNOWN.join(", "))));
    }
    let text = |k: &str| spec.get(k).and_then(Json::as_str);
    if spec.get("connectorRef").is_none() {
        out.push(("connectorRef".into(), "name the Ssh connector that holds the credentials".into()));
    }
    match spec.get("hosts") {
        None if spec.get("hostsFile").is_none() => {
            out.push(("hosts".into(), "list the hosts (or give a hostsFile on the delegate)".into()))
        }
        None | Some(Json::String(_)) => {}
        Some(Json::Array(items)) => {
            if items.is_empty() && spec.get("hostsFile").is_none() {
                out.push(("hosts".into(), "list at least one host".into()));
            }
            for (i, h) in items.iter().enumerate() {
                if h.as_str().is_none_or(|s| s.trim().is_empty()) {
                    out.push((index_path("hosts", i), "must be a host name, host:port or a range".into()));
                }
            }
        }
        Some(_) => out.push(("hosts".into(), "must be a list of hosts or an expression".into())),
    }
    if let Some(f) = text("hostsFile")
        && !is_expr(f)
        && !f.starts_with('/')
    {
        out.push(("hostsFile".into(), "must be an absolute path on the delegate".into()));
    }
    match spec.get("port") {
        None => {}
        Some(Json::Number(n)) if n.as_u64().is_some_and(|p| (1..=65535).contains(&p)) => {}
        Some(Json::String(s)) if is_expr(s) || s.parse::<u16>().is_ok_and(|p| p > 0) => {}
        Some(v) => out.push(("port".into(), format!("{v} is not a port (1–65535)"))),
    }
    match text("baseDir") {
        None => {
            out.push(("baseDir".into(), "give the directory that holds the releases on each host".into()))
        }
        Some(d) if !is_expr(d) && !d.starts_with('/') => {
            out.push(("baseDir".into(), format!("{d:?} must be an absolute path")))
        }
        Some(_) => {}
    }
    match text("hostKeyPolicy") {
        None => out.push((
            "hostKeyPolicy".into(),
            format!("choose how host keys are checked: {}", HOST_KEY_POLICIES.join(", ")),
        )),
        Some(p) if is_expr(p) => {}
        Some("KnownHosts") => match text("knownHostsFile") {
            None => out.push((
                "knownHostsFile".into(),
                "KnownHosts needs the known_hosts file on the delegate".into(),
            )),
            Some(f) if !is_expr(f) && !f.starts_with('/') => {
                out.push(("knownHostsFile".into(), "must be an absolute path on the delegate".into()))
            }
            Some(_) => {}
        },
        Some("Pinned") => match spec.get("hostKeyFingerprints") {
            Some(Json::Array(fps)) if !fps.is_empty() => {
                for (i, f) in fps.iter().enumerate() {
                    if !f.as_str().is_some_and(|f| is_expr(f) || is_sha256_fingerprint(f)) {
                        out.push((
                            index_path("hostKeyFingerprints", i),
                            "must be a SHA256:… fingerprint (as `ssh-keygen -lf` prints)".into(),
                        ));
                    }
                }
            }
            _ => out.push((
                "hostKeyFingerprints".into(),
                "Pinned needs at least one SHA256:… fingerprint".into(),
            )),
        },
        Some("AcceptAnyInsecure") => {}
        Some(other) => out.push((
            "hostKeyPolicy".into(),
            format!("unknown policy {other:?}; known: {}", HOST_KEY_POLICIES.join(", ")),
        )),
    }
    if let Some(t) = text("connectTimeout")
        && !is_expr(t)
        && let Err(e) = check_duration(t)
    {
        out.push(("connectTimeout".into(), e));
    }
    Some(out)
}

/// Problems in the `spec` of a connector of type `Ssh`, as (path within the
/// spec, message). Credentials must be secret references: the manager never
/// holds a key or a password.
pub fn connector_rules(spec: &serde_json::Map<String, Json>) -> Vec<(String, String)> {
    const KNOWN: &[&str] = &["user", "privateKey", "passphrase", "password", "delegateSelectors"];
    let mut out = Vec::new();
    for k in spec.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
        out.push((k.clone(), format!("unknown field; known: {}", KNOWN.join(", "))));
    }
    if spec.get("user").and_then(Json::as_str).is_none_or(|u| u.trim().is_empty()) {
        out.push(("user".into(), "name the login user".into()));
    }
    if spec.get("privateKey").is_none() && spec.get("password").is_none() {
        out.push(("privateKey".into(), "give a privateKey or a password (as secret references)".into()));
    }
    for k in ["privateKey", "passphrase", "password"] {
        match spec.get(k) {
            None => {}
            Some(Json::String(s)) if s.trim_start().starts_with("<+secrets.getValue(") => {}
            Some(_) => out.push((
                k.into(),
                "must be a secret reference such as <+secrets.getValue(\"file:/path\")>; the manager never stores credentials"
                    .into(),
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(t: &str, spec: Json) -> Vec<(String, String)> {
        StepTypes::builtin().get(t).unwrap().validate(&spec)
    }

    fn paths(v: &[(String, String)]) -> Vec<&str> {
        v.iter().map(|(p, _)| p.as_str()).collect()
    }

    #[test]
    fn step_specs() {
        assert_eq!(check("SshDeploy", json!({"phaseSize": 2, "maxParallel": 10, "keepReleases": 3})), vec![]);
        assert_eq!(check("SshDeploy", json!({"phaseSize": "40%"})), vec![]);
        assert_eq!(check("SshDeploy", json!({"phaseSize": "<+pipeline.variables.phase>"})), vec![]);
        assert_eq!(check("SshRollback", json!({})), vec![]);
        assert_eq!(check("SshRollback", json!({"release": "Current"})), vec![]);
        assert_eq!(paths(&check("SshRollback", json!({"release": "../x"}))), ["release"]);
        assert_eq!(check("SshCommand", json!({"script": "uptime", "hosts": ["web01"]})), vec![]);
        assert_eq!(
            paths(&check("SshDeploy", json!({"phaseSize": "0%", "maxParallel": 0, "keepReleases": 1}))),
            ["phaseSize", "maxParallel", "keepReleases"]
        );
        assert_eq!(
            paths(&check("SshCommand", json!({"script": " ", "hosts": [""]}))),
            ["script", "hosts[0]"]
        );
        assert_eq!(paths(&check("SshDeploy", json!({"phases": 2}))), ["phases"]);
    }

    #[test]
    fn infrastructure_specs() {
        let good = json!({"connectorRef": "c", "hosts": ["web[01:20].example"], "port": 22, "baseDir": "/opt/app",
            "hostKeyPolicy": "KnownHosts", "knownHostsFile": "/etc/ssh/known"});
        let rules = |v: Json| infrastructure_rules("Ssh", v.as_object().unwrap()).unwrap();
        assert_eq!(rules(good.clone()), vec![]);
        assert_eq!(infrastructure_rules("KubernetesDirect", good.as_object().unwrap()), None);
        assert_eq!(
            paths(&rules(
                json!({"hosts": [], "baseDir": "rel", "port": 70000, "hostKeyPolicy": "Trust", "x": 1})
            )),
            ["x", "connectorRef", "hosts", "port", "baseDir", "hostKeyPolicy"]
        );
        assert_eq!(
            paths(&rules(
                json!({"connectorRef": "c", "hosts": "<+pipeline.variables.hosts>", "baseDir": "/a",
                "hostKeyPolicy": "Pinned", "hostKeyFingerprints": ["MD5:x"]})
            )),
            ["hostKeyFingerprints[0]"]
        );
        assert_eq!(
            paths(&rules(
                json!({"connectorRef": "c", "hostsFile": "/etc/hosts.txt", "baseDir": "/a", "hostKeyPolicy": "KnownHosts"})
            )),
            ["knownHostsFile"]
        );
    }

    #[test]
    fn connector_specs_hold_only_references() {
        let good = json!({"user": "deploy", "privateKey": "<+secrets.getValue(\"file:/k\")>", "delegateSelectors": ["ssh"]});
        assert_eq!(connector_rules(good.as_object().unwrap()), vec![]);
        let bad = json!({"user": "", "password": "hunter2"});
        assert_eq!(paths(&connector_rules(bad.as_object().unwrap())), ["user", "password"]);
    }
}
