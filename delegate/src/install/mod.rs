//! `dray-delegate install --systemd`: turns a host into a delegate host.
//!
//! Order matters: settings are validated and the delegate **enrols first**, so
//! a bad token or an unreachable manager fails the install before anything is
//! written or enabled. Then the manager's CA is copied next to the environment
//! file (the service cannot see home directories), the environment file (0600:
//! operators add `env:` secrets to it) and the unit ([`unit::TEMPLATE`], the
//! shipped `deploy/systemd/dray-delegate.service`) are written, the state
//! directory is handed to the service user, and unless `--no-start` the unit
//! is enabled and started with `systemctl`.

pub mod unit;

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::{Config, ConfigError};
use crate::link::enrol::{self, EnrolError, EnrolParams};
use crate::link::identity::{IdentityError, StateDir};
use unit::{RenderError, UnitSettings};

/// Default `--unit-dir`.
pub const DEFAULT_UNIT_DIR: &str = "/etc/systemd/system";
/// Default `--config-dir`.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/dray";
/// Default `--user`.
pub const DEFAULT_USER: &str = "dray-delegate";
/// Default `--state-dir` of an installed delegate.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/dray-delegate";

/// Why the install stopped. Nothing after the failing step was done.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Bad settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A path or name cannot go into the unit.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The existing state directory is unusable.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Enrolment was refused or the manager is unreachable.
    #[error("enrolment failed, nothing was installed: {0}")]
    Enrol(#[source] EnrolError),
    /// No token and no earlier enrolment in the state directory.
    #[error(
        "{state_dir} holds no enrolment and no token was given: pass --token or set DRAY_TOKEN",
        state_dir = state_dir.display()
    )]
    NeedToken {
        /// The state directory.
        state_dir: PathBuf,
    },
    /// `--bin-path` is not an executable file.
    #[error("--bin-path {path}: {reason}", path = path.display())]
    Binary {
        /// The path.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A file or directory could not be written.
    #[error("cannot {action} {path}: {source}", path = path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not root, and `--user` is another (or a missing) user.
    #[error("run the install as root, or pass --user with your own user name (--user {user} needs root)")]
    NotRoot {
        /// The requested user.
        user: String,
    },
    /// A system command (`useradd`, `systemctl`) failed.
    #[error("`{command}` failed: {reason}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status and stderr.
        reason: String,
    },
}

impl InstallError {
    /// Process exit code: 2 for bad settings (like `run`), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            InstallError::Config(_)
            | InstallError::Render(_)
            | InstallError::NeedToken { .. }
            | InstallError::Binary { .. }
            | InstallError::NotRoot { .. } => 2,
            _ => 1,
        }
    }
}

/// What to install.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// The delegate's validated settings (manager, CA, token, name, tags…).
    pub config: Config,
    /// Where the unit goes.
    pub unit_dir: PathBuf,
    /// Where the environment file and the CA copy go.
    pub config_dir: PathBuf,
    /// The `dray-delegate` binary the unit runs.
    pub bin_path: PathBuf,
    /// The service user (created as a system user when missing).
    pub user: String,
    /// Write and enrol only; do not run `systemctl`.
    pub no_start: bool,
}

/// What the install did, for the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The unit file written.
    pub unit_path: PathBuf,
    /// The environment file written.
    pub env_path: PathBuf,
    /// The CA copy.
    pub ca_path: PathBuf,
    /// The delegate id (new or kept).
    pub delegate_id: String,
    /// Whether the service was enabled and started.
    pub started: bool,
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> InstallError + 'a {
    move |source| InstallError::Io { action, path: path.to_path_buf(), source }
}

/// Installs the delegate as a systemd service, reporting each step on `out`.
pub async fn systemd(opts: &InstallOptions, out: &mut dyn Write) -> Result<Installed, InstallError> {
    let cfg = &opts.config;
    let ca_pem = cfg.read_ca()?;
    check_binary(&opts.bin_path)?;
    let account = Account::lookup(&opts.user);
    // Creating the user and handing it the state need root; find out now, not
    // after the token has been spent.
    let me = nix::unistd::geteuid().as_raw();
    if me != 0 && account.as_ref().is_none_or(|a| a.uid != me) {
        return Err(InstallError::NotRoot { user: opts.user.clone() });
    }
    let env_path = opts.config_dir.join(unit::ENV_FILE_NAME);
    let ca_path = opts.config_dir.join("ca.pem");
    let unit_path = opts.unit_dir.join(unit::UNIT_NAME);
    // Rendered up front so a bad path or name fails before enrolment.
    let unit_text = unit::render_unit(&UnitSettings {
        bin_path: opts.bin_path.clone(),
        env_file: env_path.clone(),
        user: opts.user.clone(),
        group: account.as_ref().map_or_else(|| opts.user.clone(), |a| a.group.clone()),
        state_dir: cfg.state_dir.clone(),
        drain_grace: cfg.drain_grace,
    })?;

    let state = StateDir::new(&cfg.state_dir);
    let delegate_id = match state.load()? {
        Some(id) => {
            log(
                out,
                &format!("kept the enrolment in {} ({})", cfg.state_dir.display(), id.record.delegate_id),
            );
            id.record.delegate_id.to_string()
        }
        None => {
            let token = cfg
                .token
                .as_ref()
                .ok_or_else(|| InstallError::NeedToken { state_dir: cfg.state_dir.clone() })?;
            dray_shared::tls::install_crypto_provider();
            let params = EnrolParams {
                managers: &cfg.managers,
                ca_pem: &ca_pem,
                token: &token.0,
                name: &cfg.name,
                tags: &cfg.tags,
            };
            // One attempt per address: the operator is watching and a retry
            // loop would hide a wrong URL behind silence.
            let mut result = None;
            for manager in &cfg.managers {
                let attempt = enrol::enrol_once(&params, manager, &state).await;
                let transient = matches!(&attempt, Err(e) if e.is_transient());
                result = Some(attempt);
                if !transient {
                    break;
                }
            }
            let id = result.expect("at least one manager address").map_err(InstallError::Enrol)?;
            log(
                out,
                &format!(
                    "enrolled with {} as {:?} ({}, scope {}); identity in {}",
                    cfg.manager,
                    id.record.name,
                    id.record.delegate_id,
                    id.record.scope,
                    cfg.state_dir.display()
                ),
            );
            id.record.delegate_id.to_string()
        }
    };

    let account = match account {
        Some(a) => a,
        None => {
            create_user(&opts.user)?;
            log(out, &format!("created the system user {}", opts.user));
            Account::lookup(&opts.user).ok_or_else(|| InstallError::Command {
                command: format!("useradd {}", opts.user),
                reason: "the user still does not exist".into(),
            })?
        }
    };
    hand_over(&cfg.state_dir, &account)?;

    create_dir(&opts.config_dir)?;
    write_file(&ca_path, ca_pem.as_bytes(), 0o644)?;
    log(out, &format!("wrote {}", ca_path.display()));
    let mut env_text = env_file(cfg, &ca_path);
    match std::fs::read_to_string(&env_path) {
        Ok(previous) => env_text = unit::merge_env(&env_text, &previous),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(InstallError::Io { action: "read", path: env_path, source: e }),
    }
    write_file(&env_path, env_text.as_bytes(), 0o600)?;
    log(
        out,
        &format!("wrote {} (mode 0600; settings you add there are kept on reinstall)", env_path.display()),
    );
    create_dir(&opts.unit_dir)?;
    write_file(&unit_path, unit_text.as_bytes(), 0o644)?;
    log(out, &format!("wrote {}", unit_path.display()));

    if !opts.no_start {
        // A unit outside systemd's search path is linked in by its path.
        let name = if opts.unit_dir == Path::new(DEFAULT_UNIT_DIR) {
            unit::UNIT_NAME.to_string()
        } else {
            unit_path.display().to_string()
        };
        systemctl(&["daemon-reload"])?;
        systemctl(&["enable", "--now", &name])?;
        log(out, &format!("enabled and started {}", unit::UNIT_NAME));
    }
    Ok(Installed { unit_path, env_path, ca_path, delegate_id, started: !opts.no_start })
}

fn log(out: &mut dyn Write, line: &str) {
    // The summary is best effort: a closed stdout must not undo an install.
    let _ = writeln!(out, "{line}");
}

/// The environment file for `cfg`: every setting the service needs, but never
/// the token (the identity in the state directory replaces it).
pub fn env_file(cfg: &Config, ca_path: &Path) -> String {
    let mut vars = vec![
        ("DRAY_MANAGER", cfg.manager.clone()),
        ("DRAY_CA_FILE", ca_path.display().to_string()),
        ("DRAY_NAME", cfg.name.clone()),
        ("DRAY_STATE_DIR", cfg.state_dir.display().to_string()),
        ("DRAY_CAPACITY", cfg.capacity.to_string()),
        ("DRAY_DRAIN_GRACE", humantime::format_duration(cfg.drain_grace).to_string()),
    ];
    if !cfg.tags.is_empty() {
        vars.push(("DRAY_TAGS", cfg.tags.join(",")));
    }
    if let Some(addr) = cfg.http_addr {
        vars.push(("DRAY_HTTP_ADDR", addr.to_string()));
    }
    let header = "Settings of dray-delegate.service, written by `dray-delegate install --systemd`.\n\
                  Any `dray-delegate run` setting as DRAY_*; changing DRAY_DRAIN_GRACE also needs\n\
                  TimeoutStopSec in the unit (grace + 15s). Secrets for env: references go here too.";
    unit::render_env(header, &vars)
}

fn check_binary(path: &Path) -> Result<(), InstallError> {
    let bad = |reason: String| InstallError::Binary { path: path.to_path_buf(), reason };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(bad("not an executable file".into()));
    }
    Ok(())
}

/// A system account: uid, gid and the group's name.
#[derive(Debug, Clone)]
struct Account {
    uid: u32,
    gid: u32,
    group: String,
}

impl Account {
    fn lookup(name: &str) -> Option<Account> {
        let user = nix::unistd::User::from_name(name).ok().flatten()?;
        let group = nix::unistd::Group::from_gid(user.gid)
            .ok()
            .flatten()
            .map_or_else(|| user.gid.as_raw().to_string(), |g| g.name);
        Some(Account { uid: user.uid.as_raw(), gid: user.gid.as_raw(), group })
    }
}

fn create_user(name: &str) -> Result<(), InstallError> {
    run(
        "useradd",
        &[
            "--system",
            "--user-group",
            "--home-dir",
            "/nonexistent",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
    )
}

/// Gives the state directory and its files to the service user (the install
/// enrolled as whoever ran it, usually root).
fn hand_over(dir: &Path, account: &Account) -> Result<(), InstallError> {
    let me = nix::unistd::geteuid().as_raw();
    if me == account.uid {
        return Ok(());
    }
    let chown = |p: &Path| {
        std::os::unix::fs::chown(p, Some(account.uid), Some(account.gid)).map_err(io_err("chown", p))
    };
    chown(dir)?;
    for entry in std::fs::read_dir(dir).map_err(io_err("read", dir))? {
        let entry = entry.map_err(io_err("read", dir))?;
        chown(&entry.path())?;
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), InstallError> {
    std::fs::create_dir_all(dir).map_err(io_err("create", dir))
}

/// Writes atomically (temp file + rename) with `mode`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let tmp = path.with_extension("dray-tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("write", &tmp))?;
    f.write_all(bytes).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("write", &tmp))?;
    // `mode` on open is masked by the umask; make it exact.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io_err("chmod", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("write", path))
}

fn systemctl(args: &[&str]) -> Result<(), InstallError> {
    run("systemctl", args)
}

fn run(program: &str, args: &[&str]) -> Result<(), InstallError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| InstallError::Command { command: command.clone(), reason: e.to_string() })?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(InstallError::Command { command, reason: format!("{}: {stderr}", out.status) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Options;

    fn config(dir: &Path) -> Config {
        Options {
            manager: Some("https://dray.example:7443".into()),
            ca_file: Some(dir.join("ca.pem")),
            name: Some("web \"1\"".into()),
            tags: Some(vec!["linux".into(), "docker".into()]),
            state_dir: Some(dir.join("state")),
            capacity: Some(8),
            drain_grace: Some(std::time::Duration::from_secs(90)),
            ..Default::default()
        }
        .validate(|| None)
        .unwrap()
    }

    #[test]
    fn env_file_holds_every_setting_but_the_token() {
        let dir = Path::new("/srv/x");
        let mut cfg = config(dir);
        cfg.token = Some(crate::config::Token("dray_dt_secret".into()));
        let text = env_file(&cfg, Path::new("/etc/dray/ca.pem"));
        assert!(text.contains("DRAY_MANAGER=\"https://dray.example:7443\"\n"), "{text}");
        assert!(text.contains("DRAY_CA_FILE=\"/etc/dray/ca.pem\"\n"));
        assert!(text.contains("DRAY_NAME=\"web \\\"1\\\"\"\n"));
        assert!(text.contains("DRAY_STATE_DIR=\"/srv/x/state\"\n"));
        assert!(text.contains("DRAY_CAPACITY=\"8\"\n"));
        assert!(text.contains("DRAY_DRAIN_GRACE=\"1m 30s\"\n"));
        assert!(text.contains("DRAY_TAGS=\"linux,docker\"\n"));
        assert!(!text.contains("DRAY_HTTP_ADDR"));
        assert!(!text.contains("dray_dt_secret") && !text.contains("DRAY_TOKEN"));
    }

    #[tokio::test]
    async fn bad_settings_fail_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\nx\n").unwrap();
        let opts = InstallOptions {
            config: config(dir.path()),
            unit_dir: dir.path().join("units"),
            config_dir: dir.path().join("etc"),
            bin_path: dir.path().join("no-such-binary"),
            user: "root".into(),
            no_start: true,
        };
        let mut out = Vec::new();
        let e = systemd(&opts, &mut out).await.unwrap_err();
        assert!(e.to_string().starts_with("--bin-path "), "{e}");
        let bin = dir.path().join("dray-delegate");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let opts = InstallOptions { bin_path: bin, ..opts };
        let e = systemd(&opts, &mut out).await.unwrap_err();
        assert!(e.to_string().contains("no token was given"), "{e}");
        let opts = InstallOptions { user: "no such user".into(), ..opts };
        let e = systemd(&opts, &mut out).await.unwrap_err();
        assert!(e.to_string().starts_with("invalid --user"), "{e}");
        for p in ["units", "etc", "state"] {
            assert!(!dir.path().join(p).exists(), "{p} was not created");
        }
    }
}
