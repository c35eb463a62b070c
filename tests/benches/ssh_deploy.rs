//! SSH deploy benchmark: a 5 MiB artifact copied to N real sshd hosts on
//! loopback plus 3 commands per host, three ways, side by side:
//!
//! - **dray**: one `SshDeploy` step (all hosts in one phase, `maxParallel` =
//!   N), timed from `dray run --wait` to its end (so including the manager,
//!   the lease and the delegate).
//! - **ssh/scp**: a bash script starting `scp` + `ssh` per host as background
//!   jobs, all at once, then `wait`.
//! - **ansible**: `ansible-playbook` from the peers venv (`forks` = N), a
//!   `copy` task and 3 `shell` tasks.
//!
//! Run with `scripts/bench.sh` or
//! `cargo bench -p dray-tests --bench ssh_deploy` (after `cargo build --release --bins`).
//! `BENCH_SSH_HOSTS=20,50` (default) picks the host counts.
//! Prints `ssh_deploy hosts=N dray=…s dray_step=…s ssh_scp=…s ansible=…s` and
//! a table (`dray_step` is the step's own start-to-end time on the manager).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dray_tests::sshd::{self, Sshd};
use dray_tests::*;
use sha2::Digest as _;

const ARTIFACT_BYTES: usize = 5 * 1024 * 1024;
const CMD_INSTALL: &str = "test -s \"$DRAY_ARTIFACT\"";
const CMD_START: &str = "echo started > \"$DRAY_BASE_DIR/running\"";
const CMD_CHECK: &str = "test -f \"$DRAY_BASE_DIR/running\"";

fn pipeline(hosts: usize) -> String {
    format!(
        r#"
service:
  name: Bench app
  identifier: bench_app
  serviceDefinition:
    type: Ssh
    spec:
      artifacts:
        primary:
          type: File
          spec:
            path: <+pipeline.variables.artifact_path>
            sha256: <+pipeline.variables.artifact_sha256>
      commands:
        install: '{CMD_INSTALL}'
        start: '{CMD_START}'
        healthCheck: '{CMD_CHECK}'
---
pipeline:
  name: SSH bench
  identifier: ssh_bench
  variables:
    - {{ name: hosts, type: String, value: <+input> }}
    - {{ name: base_dir, type: String, value: <+input> }}
    - {{ name: known_hosts, type: String, value: <+input> }}
    - {{ name: artifact_path, type: String, value: <+input> }}
    - {{ name: artifact_sha256, type: String, value: <+input> }}
    - {{ name: ssh_user, type: String, value: <+input> }}
  stages:
    - stage:
        name: Deploy
        identifier: deploy
        type: Deployment
        spec:
          deploymentType: Ssh
          service: {{ serviceRef: bench_app }}
          environment:
            environmentRef: ssh_staging
            infrastructureDefinitions: [ {{ identifier: web_hosts }} ]
          execution:
            steps:
              - step:
                  name: Deploy
                  identifier: deploy
                  type: SshDeploy
                  timeout: 10m
                  spec: {{ phaseSize: "100%", maxParallel: {hosts} }}
"#
    )
}

fn user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Wall time of `dray run --wait`, and the step's own time (task start to end).
fn dray(
    hosts: &[Sshd],
    root: &Path,
    known: &Path,
    artifact: &Path,
    sha: &str,
    key: &str,
) -> anyhow::Result<(Duration, Duration)> {
    let m = Manager::start(StoreKind::Sqlite)?;
    let _d = Delegate::enrol(
        &m,
        "bench",
        DelegateOpts {
            tags: vec!["local".into()],
            env: vec![("SSH_DEPLOY_KEY".into(), key.to_string())],
            ..Default::default()
        },
    )?;
    m.apply(&examples_dir().join("ssh.yaml"))?;
    let file = root.join("bench.yaml");
    std::fs::write(&file, pipeline(hosts.len()))?;
    m.apply(&file)?;
    let addrs: Vec<String> = hosts.iter().map(Sshd::address).collect();
    let sets = [
        format!("hosts={}", addrs.join(",")),
        format!("base_dir={}", root.join("dray").display()),
        format!("known_hosts={}", known.display()),
        format!("artifact_path={}", artifact.display()),
        format!("artifact_sha256={sha}"),
        format!("ssh_user={}", user()),
    ];
    let mut args: Vec<&str> = vec!["run", "ssh_bench", "--wait"];
    for s in &sets {
        args.push("--set");
        args.push(s);
    }
    let start = Instant::now();
    let out = m.cli(&args);
    let took = start.elapsed();
    anyhow::ensure!(out.status.success(), "dray run failed: {}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().trim().to_string();
    let e = m.execution(&id)?;
    anyhow::ensure!(e["status"] == "Succeeded", "{e:#}");
    let step = node(&e, "deploy.deploy");
    let ms = step["endedMs"].as_u64().unwrap_or(0).saturating_sub(step["startedMs"].as_u64().unwrap_or(0));
    Ok((took, Duration::from_millis(ms)))
}

fn ssh_opts(known: &Path, key: &Path) -> String {
    format!(
        "-o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -i {}",
        known.display(),
        key.display()
    )
}

fn plain(hosts: &[Sshd], root: &Path, known: &Path, key: &Path, artifact: &Path) -> anyhow::Result<Duration> {
    let opts = ssh_opts(known, key);
    let mut script = String::from("set -e\n");
    for h in hosts {
        let dir = root.join("plain").join(h.port.to_string());
        std::fs::create_dir_all(&dir)?;
        let d = dir.display();
        script.push_str(&format!(
            "( scp -q {opts} -P {p} {a} 127.0.0.1:{d}/app.bin && ssh {opts} -p {p} 127.0.0.1 \
             'cd {d} && test -s app.bin && echo started > running && test -f running' ) &\n",
            p = h.port,
            a = artifact.display(),
        ));
    }
    script.push_str("for j in $(jobs -p); do wait $j || exit 1; done\n");
    let start = Instant::now();
    let st = Command::new("bash").arg("-c").arg(&script).status()?;
    let took = start.elapsed();
    anyhow::ensure!(st.success(), "parallel scp/ssh failed");
    Ok(took)
}

fn ansible(
    hosts: &[Sshd],
    root: &Path,
    known: &Path,
    key: &Path,
    artifact: &Path,
) -> anyhow::Result<Duration> {
    let bin = peers::venv_bin("ansible-playbook");
    anyhow::ensure!(bin.exists(), "{} is missing: run scripts/peers.sh", bin.display());
    let mut inv = String::from("[web]\n");
    for h in hosts {
        let dir = root.join("ansible").join(h.port.to_string());
        std::fs::create_dir_all(&dir)?;
        inv.push_str(&format!(
            "h{p} ansible_host=127.0.0.1 ansible_port={p} dir={d}\n",
            p = h.port,
            d = dir.display()
        ));
    }
    inv.push_str(&format!(
        "[web:vars]\nansible_user={}\nansible_ssh_private_key_file={}\nansible_python_interpreter=/usr/bin/python3\n\
         ansible_ssh_common_args='-o StrictHostKeyChecking=yes -o UserKnownHostsFile={}'\n",
        user(),
        key.display(),
        known.display()
    ));
    let inv_path = root.join("inventory.ini");
    std::fs::write(&inv_path, inv)?;
    let play = format!(
        "- hosts: web\n  gather_facts: false\n  tasks:\n\
         \x20   - copy: {{ src: {a}, dest: \"{{{{ dir }}}}/app.bin\" }}\n\
         \x20   - shell: test -s app.bin\n      args: {{ chdir: \"{{{{ dir }}}}\" }}\n\
         \x20   - shell: echo started > running\n      args: {{ chdir: \"{{{{ dir }}}}\" }}\n\
         \x20   - shell: test -f running\n      args: {{ chdir: \"{{{{ dir }}}}\" }}\n",
        a = artifact.display()
    );
    let play_path = root.join("play.yml");
    std::fs::write(&play_path, play)?;
    let start = Instant::now();
    let out = Command::new(&bin)
        .arg("-i")
        .arg(&inv_path)
        .arg("--forks")
        .arg(hosts.len().to_string())
        .arg(&play_path)
        .env("ANSIBLE_LOCAL_TEMP", root.join("ansible-tmp"))
        .env("ANSIBLE_REMOTE_TEMP", root.join("ansible-remote-tmp"))
        .output()?;
    let took = start.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "ansible-playbook failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(took)
}

fn main() -> anyhow::Result<()> {
    peers::require();
    let counts: Vec<usize> = std::env::var("BENCH_SSH_HOSTS")
        .unwrap_or_else(|_| "20,50".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut rows = Vec::new();
    for n in counts {
        let root = tempfile::tempdir()?;
        let key = sshd::keygen(root.path(), "bench")?;
        let hosts = sshd::start(n, &[&key.public])?;
        let known = root.path().join("known_hosts");
        std::fs::write(
            &known,
            hosts.iter().map(Sshd::known_hosts_line).collect::<Vec<_>>().join("\n") + "\n",
        )?;
        let data: Vec<u8> =
            (0..ARTIFACT_BYTES).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let artifact = root.path().join("app.bin");
        std::fs::write(&artifact, &data)?;
        let sha = hex::encode(sha2::Sha256::digest(&data));
        let (d, step) = dray(&hosts, root.path(), &known, &artifact, &sha, &key.private_text)?;
        let p = plain(&hosts, root.path(), &known, &key.private, &artifact)?;
        let a = ansible(&hosts, root.path(), &known, &key.private, &artifact)?;
        println!(
            "ssh_deploy hosts={n} dray={:.2}s dray_step={:.2}s ssh_scp={:.2}s ansible={:.2}s dray/ssh_scp={:.2} ansible/dray={:.1}",
            secs(d),
            secs(step),
            secs(p),
            secs(a),
            secs(d) / secs(p),
            secs(a) / secs(d)
        );
        rows.push((n, d, step, p, a));
    }
    println!(
        "\n| hosts | dray (run --wait) | dray step | parallel scp+ssh | ansible (forks=N) | dray / scp+ssh | ansible / dray |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (n, d, step, p, a) in rows {
        println!(
            "| {n} | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2}× | {:.1}× |",
            secs(d),
            secs(step),
            secs(p),
            secs(a),
            secs(d) / secs(p),
            secs(a) / secs(d)
        );
    }
    Ok(())
}
