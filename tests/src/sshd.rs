//! Private `sshd` instances on loopback ports, used as deploy hosts.
//!
//! Each instance is `/usr/sbin/sshd -D -f CONFIG` with its own temp dir, an
//! Ed25519 host key from `ssh-keygen`, and the login of the user running the
//! tests. They all share this machine's filesystem, so every "host" gets its
//! own area: the infrastructure's `baseDir` holds `{port}`
//! (`ROOT/{port}/app`), which the delegate replaces per host. That is enough
//! to prove per-host state (each host's releases, `current` and history live
//! apart; a marker file in one host's area changes only that host).
//! Processes are killed when the handle drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::{free_port, wait_for};

/// A client key pair for logging in.
pub struct ClientKey {
    /// Private key file (OpenSSH format).
    pub private: PathBuf,
    /// Its text.
    pub private_text: String,
    /// Public key line.
    pub public: String,
}

/// Generates an Ed25519 key pair in `dir` named `name`.
pub fn keygen(dir: &Path, name: &str) -> anyhow::Result<ClientKey> {
    let private = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&private)
        .output()
        .context("running ssh-keygen")?;
    if !out.status.success() {
        bail!("ssh-keygen failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(ClientKey {
        private_text: std::fs::read_to_string(&private)?,
        public: std::fs::read_to_string(private.with_extension("pub"))?.trim().to_string(),
        private,
    })
}

/// One running sshd.
pub struct Sshd {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its temp dir (config, host key, log).
    pub dir: tempfile::TempDir,
    /// The host's public key line (`ssh-ed25519 AAAA…`).
    pub host_key: String,
    child: Child,
}

impl Sshd {
    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The `known_hosts` line for this host.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.host_key)
    }

    /// sshd's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `n` sshd instances that accept `authorized` (public key lines);
/// waits until each accepts connections.
pub fn start(n: usize, authorized: &[&str]) -> anyhow::Result<Vec<Sshd>> {
    assert!(Path::new("/usr/sbin/sshd").exists(), "sshd is not installed: run `bash scripts/peers.sh`");
    std::fs::create_dir_all("/run/sshd").ok();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(start_one(authorized)?);
    }
    for s in &mut out {
        let port = s.port;
        let child = &mut s.child;
        wait_for(&format!("sshd on port {port}"), Duration::from_secs(15), || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(anyhow::anyhow!("sshd on port {port} exited with {status}")));
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| Ok(()))
        })??;
    }
    Ok(out)
}

fn start_one(authorized: &[&str]) -> anyhow::Result<Sshd> {
    let dir = tempfile::Builder::new().prefix("dray-sshd-").tempdir()?;
    let host_key = dir.path().join("host_ed25519");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&host_key)
        .status()
        .context("running ssh-keygen")?;
    if !st.success() {
        bail!("ssh-keygen failed for a host key");
    }
    let host_pub = std::fs::read_to_string(host_key.with_extension("pub"))?;
    let host_pub = host_pub.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let auth = dir.path().join("authorized_keys");
    std::fs::write(&auth, authorized.join("\n") + "\n")?;
    let port = free_port();
    let config = dir.path().join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {auth}\nPidFile {pid}\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             PermitRootLogin yes\nSubsystem sftp internal-sftp\nMaxStartups 200\nMaxSessions 100\n\
             LogLevel ERROR\n",
            hk = host_key.display(),
            auth = auth.display(),
            pid = dir.path().join("sshd.pid").display(),
        ),
    )?;
    let log = std::fs::File::create(dir.path().join("sshd.log"))?;
    let child = Command::new("/usr/sbin/sshd")
        .arg("-D")
        .arg("-f")
        .arg(&config)
        .arg("-E")
        .arg(dir.path().join("sshd.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting sshd")?;
    Ok(Sshd { port, dir, host_key: host_pub, child })
}
