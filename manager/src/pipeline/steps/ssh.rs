//! SSH step types. Each turns its spec and the stage's target (an `Ssh`
//! infrastructure, its `Ssh` connector, the service's artifact, config files
//! and commands) into one `ssh` task for a delegate.
//!
//! The release id of a deploy is `<execution id>-<stage>`, so an `SshRollback`
//! in the same stage's rollback steps knows which release to undo: hosts whose
//! current release is another one (they failed before activating it, or were
//! never reached) are left alone. `SshRollback` with `release: Current` rolls
//! back whatever is current on each host (a rollback pipeline of its own).

use dray_shared::expr::Context;
use dray_shared::task::kind;
use dray_shared::task::ssh::{
    Action, Artifact, ArtifactSource, Commands, ConfigFile, Credentials, HOSTS_OUTPUT, HostKeyPolicy,
    Inventory, PhaseSize, SshParams,
};
use serde_json::{Map, Value};

use super::{
    Registry, StartContext, StepError, StepOutcome, StepStart, StepType, TaskOutcome, default_finish,
};

/// Registers the SSH step types.
pub fn register(r: &mut Registry) {
    r.register(std::sync::Arc::new(SshStep { name: "SshDeploy", action: Action::Deploy }));
    r.register(std::sync::Arc::new(SshStep { name: "SshRollback", action: Action::Rollback }));
    r.register(std::sync::Arc::new(SshStep { name: "SshCommand", action: Action::Command }));
}

/// One of the SSH step types.
struct SshStep {
    name: &'static str,
    action: Action,
}

fn err(m: impl Into<String>) -> StepError {
    StepError(m.into())
}

/// A string field, or `None`.
fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

/// A number given as a number or a string.
fn number(v: &Value, key: &str, at: &str) -> Result<Option<u64>, StepError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_u64().map(Some).ok_or_else(|| err(format!("{at}.{key}: {n} is not a positive number")))
        }
        Some(Value::String(s)) => {
            s.trim().parse().map(Some).map_err(|_| err(format!("{at}.{key}: {s:?} is not a number")))
        }
        Some(o) => Err(err(format!("{at}.{key}: {o} is not a number"))),
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        Some(Value::String(s)) if !s.trim().is_empty() => vec![s.clone()],
        _ => vec![],
    }
}

fn inventory(infra: &Value) -> Result<Inventory, StepError> {
    let kind = text(infra, "type").unwrap_or("");
    if kind != "Ssh" {
        return Err(err(format!("SSH steps need an infrastructure of type Ssh, not {kind:?}")));
    }
    let host_key = match text(infra, "hostKeyPolicy") {
        Some("KnownHosts") => HostKeyPolicy::KnownHosts {
            file: text(infra, "knownHostsFile")
                .ok_or_else(|| err("infrastructure spec.knownHostsFile is required with KnownHosts"))?
                .to_string(),
        },
        Some("Pinned") => HostKeyPolicy::Pinned { fingerprints: strings(infra.get("hostKeyFingerprints")) },
        Some("AcceptAnyInsecure") => HostKeyPolicy::AcceptAnyInsecure,
        other => {
            return Err(err(format!(
                "infrastructure spec.hostKeyPolicy: {other:?} is not KnownHosts, Pinned or AcceptAnyInsecure"
            )));
        }
    };
    let port = match number(infra, "port", "infrastructure spec")? {
        None => dray_shared::task::ssh::DEFAULT_PORT,
        Some(p) => {
            u16::try_from(p).map_err(|_| err(format!("infrastructure spec.port: {p} is not a port")))?
        }
    };
    let connect_timeout_ms = match text(infra, "connectTimeout") {
        None => 0,
        Some(t) => humantime::parse_duration(t.trim())
            .map_err(|e| err(format!("infrastructure spec.connectTimeout: {t:?}: {e}")))?
            .as_millis() as u64,
    };
    Ok(Inventory {
        hosts: strings(infra.get("hosts")),
        hosts_file: text(infra, "hostsFile").map(str::to_string),
        port,
        host_key,
        connect_timeout_ms,
    })
}

fn credentials(connector: &Value) -> Result<Credentials, StepError> {
    if text(connector, "type") != Some("Ssh") {
        return Err(err("the Ssh infrastructure's connectorRef must name a connector of type Ssh"));
    }
    let opt = |k: &str| text(connector, k).map(str::to_string);
    Ok(Credentials {
        user: text(connector, "user").ok_or_else(|| err("connector spec.user is required"))?.to_string(),
        private_key: opt("privateKey"),
        passphrase: opt("passphrase"),
        password: opt("password"),
    })
}

fn artifact(a: &Value) -> Result<Artifact, StepError> {
    let sha256 = text(a, "sha256").ok_or_else(|| err("the service's primary artifact needs spec.sha256"))?;
    let source = match text(a, "type") {
        Some("Http") => ArtifactSource::Http {
            url: text(a, "url").ok_or_else(|| err("the Http artifact needs spec.url"))?.to_string(),
        },
        Some("File") => ArtifactSource::File {
            path: text(a, "path").ok_or_else(|| err("the File artifact needs spec.path"))?.to_string(),
        },
        other => {
            return Err(err(format!("SshDeploy deploys an artifact of type Http or File, not {other:?}")));
        }
    };
    Ok(Artifact { source, sha256: sha256.to_string(), file_name: text(a, "fileName").map(str::to_string) })
}

fn config_files(service: &Value) -> Result<Vec<ConfigFile>, StepError> {
    let mut out = Vec::new();
    for (i, item) in service.get("configFiles").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let spec = item.pointer("/configFile/spec").unwrap_or(&Value::Null);
        let path = text(spec, "path")
            .ok_or_else(|| err(format!("service configFiles[{i}].configFile.spec.path is required")))?;
        let content = spec.get("content").and_then(Value::as_str).unwrap_or("");
        out.push(ConfigFile { path: path.to_string(), content: content.to_string() });
    }
    Ok(out)
}

fn commands(service: &Value) -> Commands {
    let c = service.get("commands").unwrap_or(&Value::Null);
    let opt = |k: &str| text(c, k).map(str::to_string);
    Commands {
        install: opt("install"),
        stop: opt("stop"),
        start: opt("start"),
        health_check: opt("healthCheck"),
    }
}

/// `<execution id>-<stage>`: unique per stage run, the same for its rollback.
fn release_id(cx: &StartContext<'_>) -> String {
    let raw = format!("{}-{}", cx.execution_id, cx.stage);
    raw.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

impl StepType for SshStep {
    fn uses_target(&self) -> bool {
        true
    }

    fn type_name(&self) -> &'static str {
        self.name
    }

    fn start(&self, spec: &Value, cx: &StartContext<'_>) -> Result<StepStart, StepError> {
        let target = cx.require_target(self.name)?;
        let infra = &target["infra"];
        let service = &target["service"];
        let phase_size = match spec.get("phaseSize") {
            None | Some(Value::Null) => PhaseSize::default(),
            Some(Value::Number(n)) => {
                PhaseSize::parse(&n.to_string()).map_err(|e| err(format!("spec.phaseSize: {e}")))?
            }
            Some(Value::String(s)) => PhaseSize::parse(s).map_err(|e| err(format!("spec.phaseSize: {e}")))?,
            Some(o) => return Err(err(format!("spec.phaseSize: {o} is not a count or a percentage"))),
        };
        let mut params = SshParams {
            action: self.action,
            inventory: inventory(infra)?,
            credentials: credentials(&target["connector"])?,
            base_dir: text(infra, "baseDir").unwrap_or("").to_string(),
            phase_size,
            max_parallel: number(spec, "maxParallel", "spec")?
                .map(|n| n.min(u32::MAX as u64) as u32)
                .unwrap_or(dray_shared::task::ssh::DEFAULT_MAX_PARALLEL),
            release: String::new(),
            artifact: None,
            config_files: vec![],
            commands: Commands::default(),
            keep_releases: number(spec, "keepReleases", "spec")?
                .map(|n| n.min(u32::MAX as u64) as u32)
                .unwrap_or(dray_shared::task::ssh::DEFAULT_KEEP_RELEASES),
            script: String::new(),
            only_hosts: vec![],
            env: Default::default(),
        };
        match self.action {
            Action::Deploy => {
                params.release = release_id(cx);
                params.artifact = Some(artifact(&target["artifact"])?);
                params.config_files = config_files(service)?;
                params.commands = commands(service);
            }
            Action::Rollback => {
                params.release = match text(spec, "release") {
                    None => release_id(cx),
                    Some("Current") => String::new(),
                    Some(r) => r.to_string(),
                };
                params.commands = commands(service);
            }
            Action::Command => {
                params.script = spec.get("script").and_then(Value::as_str).unwrap_or("").to_string();
                params.only_hosts = strings(spec.get("hosts"));
                for v in spec.get("environmentVariables").and_then(Value::as_array).into_iter().flatten() {
                    let name =
                        text(v, "name").ok_or_else(|| err("spec.environmentVariables[].name is required"))?;
                    let value = v.get("value").and_then(Value::as_str).unwrap_or("");
                    params.env.insert(name.to_string(), value.to_string());
                }
            }
        }
        // Refuse here, naming the field, what the delegate would refuse.
        params.validate().map_err(|e| err(format!("{}: {e}", self.name)))?;
        let params = serde_json::to_value(&params).map_err(|e| err(e.to_string()))?;
        Ok(StepStart::Task { kind: kind::SSH.into(), params })
    }

    fn finish(&self, _spec: &Value, task: &TaskOutcome<'_>, _ctx: &dyn Context) -> StepOutcome {
        default_finish(task, |outputs| {
            outputs
                .iter()
                .map(|(k, v)| {
                    let value = if k == HOSTS_OUTPUT {
                        serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone()))
                    } else {
                        Value::String(v.clone())
                    };
                    (k.clone(), value)
                })
                .collect::<Map<String, Value>>()
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn target() -> Value {
        json!({
            "service": {"name": "Web", "configFiles": [{"configFile": {"identifier": "env", "spec": {"path": "conf/app.env", "content": "PORT=8080"}}}],
                        "commands": {"start": "./start", "healthCheck": "./check"}},
            "artifact": {"type": "File", "path": "/srv/app.tar.gz", "sha256": "ab".repeat(32)},
            "infra": {"type": "Ssh", "hosts": "127.0.0.1:2201, 127.0.0.1:2202", "baseDir": "/tmp/{port}/app",
                      "hostKeyPolicy": "KnownHosts", "knownHostsFile": "/etc/kh", "port": "22"},
            "connector": {"type": "Ssh", "identifier": "c", "user": "deploy", "privateKey": "<+secrets.getValue(\"env:KEY\")>"},
        })
    }

    fn start(ty: &str, spec: Value, t: &Value) -> Result<SshParams, StepError> {
        let r = Registry::builtin();
        let cx = StartContext {
            target: Some(t),
            execution_id: "0190-ab",
            pipeline: "p",
            stage: "deploy",
            step: "s",
        };
        match r.get(ty).unwrap().start(&spec, &cx)? {
            StepStart::Task { kind, params } => {
                assert_eq!(kind, "ssh");
                Ok(serde_json::from_value(params).unwrap())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deploy_takes_hosts_credentials_artifact_and_commands_from_the_target() {
        let p = start("SshDeploy", json!({"phaseSize": "40%", "maxParallel": 5}), &target()).unwrap();
        assert_eq!(p.action, Action::Deploy);
        assert_eq!(p.release, "0190-ab-deploy");
        assert_eq!(p.phase_size, PhaseSize::Percent(40));
        assert_eq!(p.max_parallel, 5);
        assert_eq!(p.inventory.hosts, ["127.0.0.1:2201, 127.0.0.1:2202"]);
        assert_eq!(p.credentials.private_key.as_deref(), Some("<+secrets.getValue(\"env:KEY\")>"));
        assert_eq!(p.config_files[0].path, "conf/app.env");
        assert_eq!(p.commands.health_check.as_deref(), Some("./check"));
        assert!(matches!(p.artifact.unwrap().source, ArtifactSource::File { .. }));
        let r = start("SshRollback", json!({}), &target()).unwrap();
        assert_eq!(r.release, "0190-ab-deploy", "the rollback undoes this stage's release");
        let r = start("SshRollback", json!({"release": "Current"}), &target()).unwrap();
        assert_eq!(r.release, "", "whatever is current on each host");
    }

    #[test]
    fn bad_targets_are_refused_with_the_field() {
        let mut t = target();
        t["infra"]["hostKeyPolicy"] = json!("Trust");
        assert!(start("SshDeploy", json!({}), &t).unwrap_err().0.contains("hostKeyPolicy"));
        let mut t = target();
        t["connector"]["type"] = json!("Aws");
        assert!(start("SshDeploy", json!({}), &t).unwrap_err().0.contains("connector of type Ssh"));
        let mut t = target();
        t["artifact"]["sha256"] = json!("x");
        assert!(start("SshDeploy", json!({}), &t).unwrap_err().0.contains("artifact.sha256"));
        assert!(
            start("SshDeploy", json!({"phaseSize": "0"}), &target()).unwrap_err().0.contains("phaseSize")
        );
        let e = start("SshCommand", json!({}), &target()).unwrap_err();
        assert!(e.0.contains("script"), "{e}");
        let c =
            start("SshCommand", json!({"script": "uptime", "hosts": ["127.0.0.1:2201"]}), &target()).unwrap();
        assert_eq!(c.only_hosts, ["127.0.0.1:2201"]);
    }
}
