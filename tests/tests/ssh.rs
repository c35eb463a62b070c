//! SSH deployments end to end: real `dray` and `dray-delegate` against five
//! real `sshd` hosts on loopback (see `dray_tests::sshd` for how each host
//! keeps its own state). `examples/ssh.yaml` is applied and run: a rolling
//! deploy in two phases, a failing health check that stops the rollout and
//! rolls every touched host back, an unknown host key, a wrong key matched by
//! a failure strategy, pinned fingerprints, a step timeout that kills the
//! remote processes, and the private key never reaching the manager.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use dray_tests::sshd::{self, ClientKey, Sshd};
use dray_tests::*;
use serde_json::Value;
use sha2::Digest as _;

const T: Duration = Duration::from_secs(90);
const HOSTS: usize = 5;

struct Setup {
    m: Manager,
    _d: Delegate,
    hosts: Vec<Sshd>,
    key: ClientKey,
    dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> anyhow::Result<Setup> {
        let dir = tempfile::tempdir()?;
        let key = sshd::keygen(dir.path(), "deploy")?;
        let hosts = sshd::start(HOSTS, &[&key.public])?;
        let lines: Vec<String> = hosts.iter().map(Sshd::known_hosts_line).collect();
        std::fs::write(dir.path().join("known_hosts"), lines.join("\n") + "\n")?;
        std::fs::create_dir(dir.path().join("hosts"))?;
        let m = Manager::start(StoreKind::Sqlite)?;
        let d = Delegate::enrol(
            &m,
            "ssh",
            DelegateOpts {
                tags: vec!["local".into()],
                env: vec![("SSH_DEPLOY_KEY".into(), key.private_text.clone())],
                ..Default::default()
            },
        )?;
        m.apply(&examples_dir().join("ssh.yaml"))?;
        Ok(Setup { m, _d: d, hosts, key, dir })
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    /// The base dir of host `i`.
    fn base(&self, i: usize) -> PathBuf {
        self.root().join(self.hosts[i].port.to_string()).join("app")
    }

    fn artifact(&self, name: &str, content: &str) -> anyhow::Result<(PathBuf, String)> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content)?;
        Ok((path, hex::encode(sha2::Sha256::digest(content.as_bytes()))))
    }

    fn run(
        &self,
        artifact: &Path,
        sha: &str,
        known_hosts: &Path,
        phase_size: &str,
    ) -> anyhow::Result<String> {
        let hosts: Vec<String> = self.hosts.iter().map(Sshd::address).collect();
        let sets = [
            format!("hosts={}", hosts.join(",")),
            format!("base_dir={}", self.root().display()),
            format!("known_hosts={}", known_hosts.display()),
            format!("artifact_path={}", artifact.display()),
            format!("artifact_sha256={sha}"),
            format!("ssh_user={}", whoami()),
            format!("phase_size={phase_size}"),
        ];
        let mut args: Vec<&str> = Vec::new();
        for s in &sets {
            args.push("--set");
            args.push(s);
        }
        self.m.run_pipeline("ssh_deploy", &args)
    }

    fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }
}

fn whoami() -> String {
    std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| {
        let out = std::process::Command::new("id").arg("-un").output().expect("id -un");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

fn current(base: &Path) -> String {
    std::fs::read_link(base.join("current")).map(|p| p.display().to_string()).unwrap_or_default()
}

fn status<'a>(e: &'a Value, path: &str) -> &'a str {
    node(e, path)["status"].as_str().unwrap_or_default()
}

fn release_of(id: &str) -> String {
    format!("{id}-deploy")
}

#[test]
fn rolling_deploy_then_a_failed_health_check_rolls_every_touched_host_back() -> anyhow::Result<()> {
    let s = Setup::start()?;
    let (art1, sha1) = s.artifact("app-1.txt", "version one\n")?;
    let id1 = s.run(&art1, &sha1, &s.known_hosts(), "60%")?;
    let e = s.m.wait_execution(&id1, &["Succeeded", "Failed", "Aborted"], T)?;
    assert_eq!(
        e["status"],
        "Succeeded",
        "{e:#}\n{}",
        s.m.step_logs(&id1, "deploy.deploy").unwrap_or_default()
    );
    let r1 = release_of(&id1);
    for i in 0..HOSTS {
        let base = s.base(i);
        assert_eq!(current(&base), format!("releases/{r1}"), "host {i}");
        let rel = base.join("releases").join(&r1);
        assert_eq!(std::fs::read_to_string(rel.join("app-1.txt"))?, "version one\n");
        assert_eq!(
            std::fs::read_to_string(rel.join("conf/app.env"))?,
            "GREETING=hello\nENVIRONMENT=Staging\n"
        );
        assert_eq!(std::fs::read_to_string(base.join(".dray/history"))?, format!("{r1}\n"));
    }
    // Two phases (60% of 5 = 3, then 2), reported per host.
    let hosts = &node(&e, "deploy.deploy")["outputs"]["hosts"];
    let phases: Vec<u64> = hosts.as_array().unwrap().iter().map(|h| h["phase"].as_u64().unwrap()).collect();
    assert_eq!(phases, [1, 1, 1, 2, 2], "{hosts:#}");
    assert!(hosts.as_array().unwrap().iter().all(|h| h["status"] == "Succeeded"), "{hosts:#}");
    let instances: Value =
        serde_json::from_str(node(&e, "deploy.deploy")["outputs"]["dray.instances"].as_str().unwrap())?;
    assert_eq!(instances.as_array().unwrap().len(), HOSTS);
    assert_eq!(instances[0]["host"], s.hosts[0].address());
    assert_eq!(instances[0]["status"], "Running");
    assert_eq!(instances[0]["version"], format!("{r1}/app-1.txt"));
    let log = s.m.step_logs(&id1, "deploy.deploy")?;
    assert!(log.contains(&format!("[{}] dray: health check", s.hosts[4].address())), "{log}");
    assert!(log.contains("in 2 phase(s)"), "{log}");
    let show = s.m.step_logs(&id1, "deploy.show")?;
    assert!(show.contains(&format!("[{}] current is releases/{r1}", s.hosts[2].address())), "{show}");

    // Now 3 phases of 2, 2 and 1 hosts; host 3 (second phase) finds release
    // two unhealthy, so the third phase never starts.
    std::fs::write(s.base(3).join("fail-health"), "app-2.txt")?;
    let (art2, sha2) = s.artifact("app-2.txt", "version two\n")?;
    let id2 = s.run(&art2, &sha2, &s.known_hosts(), "2")?;
    let e = s.m.wait_execution(&id2, &["Succeeded", "Failed", "Aborted"], T)?;
    assert_eq!(e["status"], "Failed", "{e:#}");
    assert_eq!(status(&e, "deploy.deploy"), "Failed");
    assert_eq!(node(&e, "deploy.deploy")["failureType"], "Unknown");
    let why = node(&e, "deploy.deploy")["failure"].as_str().unwrap_or_default();
    assert!(why.contains("phase 2 of 3") && why.contains("health check failed"), "{why}");
    assert!(why.contains("later phases were not started"), "{why}");
    let hosts = &node(&e, "deploy.deploy")["outputs"]["hosts"];
    let statuses: Vec<&str> =
        hosts.as_array().unwrap().iter().map(|h| h["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["Succeeded", "Succeeded", "Succeeded", "Failed", "Skipped"], "{hosts:#}");
    assert_eq!(status(&e, "deploy.show"), "Skipped");
    assert_eq!(status(&e, "deploy.rollback.rollback"), "Succeeded", "{e:#}");
    let r2 = release_of(&id2);
    for i in 0..HOSTS {
        let base = s.base(i);
        assert_eq!(current(&base), format!("releases/{r1}"), "host {i} is back on the previous release");
        assert_eq!(std::fs::read_to_string(base.join(".dray/history"))?, format!("{r1}\n"), "host {i}");
        assert_eq!(std::fs::read_to_string(base.join("running"))?.trim(), r1, "host {i} restarted r1");
    }
    let rb = &node(&e, "deploy.rollback.rollback")["outputs"]["hosts"];
    let statuses: Vec<&str> = rb.as_array().unwrap().iter().map(|h| h["status"].as_str().unwrap()).collect();
    // Hosts 0-3 activated r2 and went back; host 4 was never touched.
    assert_eq!(statuses, ["Succeeded", "Succeeded", "Succeeded", "Succeeded", "Unchanged"], "{rb:#}");
    let rollback_log = s.m.step_logs(&id2, "deploy.rollback.rollback")?;
    assert!(rollback_log.contains(&format!("rolling back from {r2} to {r1}")), "{rollback_log}");
    assert!(rollback_log.contains(&format!("current release is {r1}, not {r2}")), "{rollback_log}");
    Ok(())
}

#[test]
fn unknown_host_keys_are_refused_and_the_key_never_reaches_the_manager() -> anyhow::Result<()> {
    let s = Setup::start()?;
    let (art, sha) = s.artifact("app-1.txt", "one\n")?;
    // A known_hosts file that lacks host 2.
    let partial = s.dir.path().join("known_hosts_partial");
    let lines: Vec<String> =
        s.hosts.iter().enumerate().filter(|(i, _)| *i != 2).map(|(_, h)| h.known_hosts_line()).collect();
    std::fs::write(&partial, lines.join("\n") + "\n")?;
    let id = s.run(&art, &sha, &partial, "60%")?;
    let e = s.m.wait_execution(&id, &["Succeeded", "Failed", "Aborted"], T)?;
    assert_eq!(e["status"], "Failed", "{e:#}");
    assert_eq!(node(&e, "deploy.deploy")["failureType"], "Verification");
    let why = node(&e, "deploy.deploy")["failure"].as_str().unwrap_or_default();
    assert!(
        why.contains(&format!("unknown host key for {}", s.hosts[2].address())) && why.contains("SHA256:"),
        "{why}"
    );
    assert!(!s.base(2).join("current").exists(), "nothing was deployed to the unverified host");

    // The private key: only its reference is in the manager's store and logs.
    let secret_line = s.key.private_text.lines().nth(1).unwrap().to_string();
    assert!(secret_line.len() > 20);
    let dump = store_dump(&s.m)?;
    let dump = String::from_utf8_lossy(&dump);
    assert!(!dump.contains(&secret_line), "the manager's store never holds the key");
    assert!(dump.contains("env:SSH_DEPLOY_KEY"), "it holds the reference");
    assert!(!s.m.log().contains(&secret_line), "nor do its logs");
    Ok(())
}

/// A deploy with the wrong key; a failure strategy on Authentication marks
/// the step as success and the stage goes on.
const WRONG_KEY: &str = r#"
connector:
  name: Wrong key
  identifier: ssh_wrong_key
  type: Ssh
  spec:
    user: <+pipeline.variables.ssh_user>
    privateKey: <+secrets.getValue("env:SSH_WRONG_KEY")>
    delegateSelectors: [local]
---
infrastructureDefinition:
  name: Web hosts, wrong key
  identifier: web_hosts_wrong_key
  environmentRef: ssh_staging
  deploymentType: Ssh
  type: Ssh
  spec:
    connectorRef: ssh_wrong_key
    hosts: <+pipeline.variables.hosts>
    baseDir: <+pipeline.variables.base_dir>/{port}/app
    hostKeyPolicy: AcceptAnyInsecure
---
pipeline:
  name: Wrong key
  identifier: ssh_wrong_key
  variables:
    - { name: hosts, type: String, value: <+input> }
    - { name: base_dir, type: String, value: <+input> }
    - { name: ssh_user, type: String, value: <+input> }
    # The service's artifact is not used by SshCommand but is rendered with the target.
    - { name: artifact_path, type: String, value: /nonexistent/app }
    - { name: artifact_sha256, type: String, value: none }
  stages:
    - stage:
        name: Deploy
        identifier: deploy
        type: Deployment
        spec:
          deploymentType: Ssh
          service: { serviceRef: webapp }
          environment:
            environmentRef: ssh_staging
            infrastructureDefinitions: [ { identifier: web_hosts_wrong_key } ]
          execution:
            steps:
              - step:
                  name: Probe
                  identifier: probe
                  type: SshCommand
                  failureStrategies:
                    - onFailure: { errors: [Authentication], action: { type: MarkAsSuccess } }
                    - onFailure: { errors: [AllErrors], action: { type: Abort } }
                  spec: { script: uptime }
              - step:
                  name: After
                  identifier: after
                  type: ShellScript
                  spec:
                    shell: Bash
                    source: { type: Inline, spec: { script: "echo strategy-matched" } }
                    delegateSelectors: [local]
"#;

#[test]
fn a_wrong_key_is_an_authentication_failure_that_strategies_match() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let right = sshd::keygen(dir.path(), "right")?;
    let wrong = sshd::keygen(dir.path(), "wrong")?;
    let hosts = sshd::start(2, &[&right.public])?;
    let m = Manager::start(StoreKind::Sqlite)?;
    let _d = Delegate::enrol(
        &m,
        "ssh",
        DelegateOpts {
            tags: vec!["local".into()],
            env: vec![
                ("SSH_DEPLOY_KEY".into(), right.private_text.clone()),
                ("SSH_WRONG_KEY".into(), wrong.private_text.clone()),
            ],
            ..Default::default()
        },
    )?;
    m.apply(&examples_dir().join("ssh.yaml"))?;
    let file = dir.path().join("wrong.yaml");
    std::fs::write(&file, WRONG_KEY)?;
    m.apply(&file)?;
    let addrs: Vec<String> = hosts.iter().map(Sshd::address).collect();
    let id = m.run_pipeline(
        "ssh_wrong_key",
        &[
            "--set",
            &format!("hosts={}", addrs.join(",")),
            "--set",
            &format!("base_dir={}", dir.path().display()),
            "--set",
            &format!("ssh_user={}", whoami()),
        ],
    )?;
    let e = m.wait_execution(&id, &["Succeeded", "Failed", "Aborted"], T)?;
    assert_eq!(e["status"], "Succeeded", "the Authentication strategy matched: {e:#}");
    assert_eq!(status(&e, "deploy.probe"), "Succeeded");
    assert_eq!(node(&e, "deploy.probe")["failureType"], "Authentication");
    let why = node(&e, "deploy.probe")["failure"].as_str().unwrap_or_default();
    assert!(why.contains("authentication as") && why.contains("was refused"), "{why}");
    assert_eq!(status(&e, "deploy.after"), "Succeeded");
    assert!(m.step_logs(&id, "deploy.after")?.contains("strategy-matched"));
    // Warnings and failures go to the step's stderr stream.
    let out = m.cli(&["logs", &id, "--step", "deploy.probe"]);
    let err = String::from_utf8_lossy(&out.stderr);
    let warning = format!("[{}] WARNING: host key SHA256:", addrs[0]);
    assert!(
        err.contains(&warning) && err.contains("accepted without checking"),
        "AcceptAnyInsecure is loud: {err}"
    );
    assert!(err.contains("authentication as"), "{err}");
    Ok(())
}

/// A remote command that outlives its step timeout.
const SLEEPER: &str = r#"
pipeline:
  name: Sleeper
  identifier: ssh_sleeper
  variables:
    - { name: hosts, type: String, value: <+input> }
    - { name: base_dir, type: String, value: <+input> }
    - { name: known_hosts, type: String, value: <+input> }
    - { name: ssh_user, type: String, value: <+input> }
    - { name: artifact_path, type: String, value: /nonexistent/app }
    - { name: artifact_sha256, type: String, value: none }
  stages:
    - stage:
        name: Deploy
        identifier: deploy
        type: Deployment
        spec:
          deploymentType: Ssh
          service: { serviceRef: webapp }
          environment:
            environmentRef: ssh_staging
            infrastructureDefinitions: [ { identifier: web_hosts } ]
          execution:
            steps:
              - step:
                  name: Sleep
                  identifier: sleep
                  type: SshCommand
                  timeout: 3s
                  spec:
                    script: |
                      mkdir -p "$DRAY_BASE_DIR"
                      sleep 300 &
                      echo $! > "$DRAY_BASE_DIR/sleep.pid"
                      echo "sleeping"
                      wait
"#;

#[test]
fn a_step_timeout_kills_the_remote_processes() -> anyhow::Result<()> {
    let s = Setup::start()?;
    let file = s.dir.path().join("sleeper.yaml");
    std::fs::write(&file, SLEEPER)?;
    s.m.apply(&file)?;
    let hosts: Vec<String> = s.hosts.iter().take(2).map(Sshd::address).collect();
    let id = s.m.run_pipeline(
        "ssh_sleeper",
        &[
            "--set",
            &format!("hosts={}", hosts.join(",")),
            "--set",
            &format!("base_dir={}", s.root().display()),
            "--set",
            &format!("known_hosts={}", s.known_hosts().display()),
            "--set",
            &format!("ssh_user={}", whoami()),
        ],
    )?;
    let e = s.m.wait_execution(&id, &["Succeeded", "Failed", "Aborted"], T)?;
    assert_eq!(e["status"], "Failed", "{e:#}");
    assert_eq!(node(&e, "deploy.sleep")["failureType"], "Timeout", "{e:#}");
    assert!(s.m.step_logs(&id, "deploy.sleep")?.contains(&format!("[{}] sleeping", hosts[0])));
    for i in 0..2 {
        let pid: u32 = std::fs::read_to_string(s.base(i).join("sleep.pid"))?.trim().parse()?;
        wait_for(&format!("remote sleep {pid} on host {i} to be killed"), Duration::from_secs(15), || {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting for a parent that is itself going.
            (state.is_empty() || state.split_whitespace().nth(2) == Some("Z")).then_some(())
        })
        .with_context(|| format!("delegate log:\n{}\nsshd log:\n{}", s._d.log(), s.hosts[i].log()))?;
    }
    Ok(())
}

/// `ssh-keygen -lf` of a host's public key: `SHA256:…`.
fn fingerprint(h: &Sshd) -> anyhow::Result<String> {
    let out = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(h.dir.path().join("host_ed25519.pub"))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace().nth(1).map(str::to_string).context(text)
}

#[test]
fn pinned_fingerprints_admit_exactly_the_pinned_hosts() -> anyhow::Result<()> {
    let s = Setup::start()?;
    let pins = [fingerprint(&s.hosts[0])?, fingerprint(&s.hosts[1])?];
    let yaml = format!(
        r#"
infrastructureDefinition:
  name: Pinned hosts
  identifier: pinned_hosts
  environmentRef: ssh_staging
  deploymentType: Ssh
  type: Ssh
  spec:
    connectorRef: ssh_deploy_key
    hosts: <+pipeline.variables.hosts>
    baseDir: <+pipeline.variables.base_dir>/{{port}}/app
    hostKeyPolicy: Pinned
    hostKeyFingerprints: ["{}", "{}"]
---
pipeline:
  name: Pinned
  identifier: ssh_pinned
  variables:
    - {{ name: hosts, type: String, value: <+input> }}
    - {{ name: base_dir, type: String, value: <+input> }}
    - {{ name: ssh_user, type: String, value: <+input> }}
    - {{ name: artifact_path, type: String, value: /nonexistent/app }}
    - {{ name: artifact_sha256, type: String, value: none }}
  stages:
    - stage:
        name: Run
        identifier: run
        type: Deployment
        spec:
          deploymentType: Ssh
          service: {{ serviceRef: webapp }}
          environment:
            environmentRef: ssh_staging
            infrastructureDefinitions: [ {{ identifier: pinned_hosts }} ]
          execution:
            steps:
              - step:
                  name: Hello
                  identifier: hello
                  type: SshCommand
                  spec: {{ script: "echo pinned-ok" }}
"#,
        pins[0], pins[1]
    );
    let file = s.dir.path().join("pinned.yaml");
    std::fs::write(&file, yaml)?;
    s.m.apply(&file)?;
    let run = |hosts: &[&Sshd]| -> anyhow::Result<Value> {
        let addrs: Vec<String> = hosts.iter().map(|h| h.address()).collect();
        let id = s.m.run_pipeline(
            "ssh_pinned",
            &[
                "--set",
                &format!("hosts={}", addrs.join(",")),
                "--set",
                &format!("base_dir={}", s.root().display()),
                "--set",
                &format!("ssh_user={}", whoami()),
            ],
        )?;
        s.m.wait_execution(&id, &["Succeeded", "Failed", "Aborted"], T)
    };
    let e = run(&[&s.hosts[0], &s.hosts[1]])?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    let e = run(&[&s.hosts[0], &s.hosts[2]])?;
    assert_eq!(e["status"], "Failed", "{e:#}");
    assert_eq!(node(&e, "run.hello")["failureType"], "Verification");
    let why = node(&e, "run.hello")["failure"].as_str().unwrap_or_default();
    assert!(why.contains(&format!("unknown host key for {}", s.hosts[2].address())), "{why}");
    assert!(why.contains("not one of the pinned fingerprints"), "{why}");
    Ok(())
}
