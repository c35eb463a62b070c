//! `dray-delegate`: the Dray delegate agent.
//!
//! `dray-delegate run --manager https://host:7443 --ca-file ca.pem --token T`
//! enrols on first run (state in `--state-dir`), then keeps a session to the
//! manager and runs the tasks it leases. SIGTERM/SIGINT drain it. Every flag
//! has a `DRAY_*` environment variable and a key in the `--config` TOML file;
//! a flag beats the environment, which beats the file. Exit codes: 0 after a
//! drain, 1 when the delegate cannot continue, 2 for bad flags or config.
//!
//! `dray-delegate install --systemd --manager URL --ca-file ca.pem --token T`
//! enrols, then writes and starts a hardened systemd unit (see
//! `dray_delegate::install`). Exit codes: 0 installed, 1 failed (enrolment,
//! files, systemctl), 2 bad flags or settings.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use dray_delegate::config::{ConfigError, Options};
use dray_delegate::proxy;
use tracing::{error, info};

#[derive(Debug, Parser)]
#[command(
    name = "dray-delegate",
    version,
    about = "The Dray delegate: leases tasks from the manager and runs them."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enrol if needed, connect to the manager and run tasks until stopped.
    Run(DelegateArgs),
    /// Install this host as a delegate: enrol, write the service unit and its
    /// environment file, then enable and start the service.
    Install(InstallArgs),
}

#[derive(Debug, Args)]
struct InstallArgs {
    /// Install as a systemd service (the only kind of install there is).
    #[arg(long, required = true)]
    systemd: bool,
    /// The delegate's settings, as for `run` (the state dir defaults to
    /// /var/lib/dray-delegate; the token is used once, now, and written nowhere).
    #[command(flatten)]
    settings: DelegateArgs,
    /// Where the unit file goes
    #[arg(long, value_name = "DIR", default_value = dray_delegate::install::DEFAULT_UNIT_DIR)]
    unit_dir: PathBuf,
    /// Where delegate.env and the CA copy go
    #[arg(long, visible_alias = "env-dir", value_name = "DIR", default_value = dray_delegate::install::DEFAULT_CONFIG_DIR)]
    config_dir: PathBuf,
    /// The dray-delegate binary the unit runs [default: this executable]
    #[arg(long, value_name = "PATH")]
    bin_path: Option<PathBuf>,
    /// Service user, created as a system user when missing
    #[arg(long, value_name = "USER", default_value = dray_delegate::install::DEFAULT_USER)]
    user: String,
    /// Enrol and write the files, but do not run systemctl
    #[arg(long)]
    no_start: bool,
}

impl InstallArgs {
    fn options(&self) -> Result<dray_delegate::install::InstallOptions, ConfigError> {
        let flags = self.settings.options();
        let env = Options::from_env(|k| std::env::var(k).ok())?;
        // An installed delegate keeps its state under /var/lib, not in the cwd.
        let default_state = Options {
            state_dir: Some(dray_delegate::install::DEFAULT_STATE_DIR.into()),
            ..Options::default()
        };
        let file = match self.settings.config.as_deref() {
            Some(path) => Options::from_file(path)?.over(default_state),
            None => default_state,
        };
        let mut config = Options::resolve(flags, env, Some(file), hostname)?;
        config.state_dir = absolute(&config.state_dir);
        config.ca_file = absolute(&config.ca_file);
        let bin_path = match &self.bin_path {
            Some(p) => absolute(p),
            None => std::env::current_exe().map_err(|e| ConfigError::Invalid {
                source_name: "--bin-path".into(),
                value: String::new(),
                reason: format!("cannot find this executable ({e}); pass --bin-path"),
            })?,
        };
        Ok(dray_delegate::install::InstallOptions {
            config,
            unit_dir: absolute(&self.unit_dir),
            config_dir: absolute(&self.config_dir),
            bin_path,
            user: self.user.clone(),
            no_start: self.no_start,
        })
    }
}

/// `p` against the current directory (the unit needs absolute paths).
fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Settings shared by `run` and `install` (each also from env and the config file).
#[derive(Debug, Args)]
struct DelegateArgs {
    /// Manager URL, e.g. https://127.0.0.1:7443; several comma-separated addresses (replicas) are tried in turn [env: DRAY_MANAGER]
    #[arg(long, value_name = "URL")]
    manager: Option<String>,
    /// The manager's CA certificate (PEM) [env: DRAY_CA_FILE]
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// One-time enrolment token, needed on the first run only [env: DRAY_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Delegate name [env: DRAY_NAME] [default: the hostname]
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Comma-separated tags tasks can select [env: DRAY_TAGS]
    #[arg(long, value_name = "a,b", value_delimiter = ',')]
    tags: Option<Vec<String>>,
    /// Where the key and certificate live [env: DRAY_STATE_DIR] [default: ./dray-delegate-state; install: /var/lib/dray-delegate]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Tasks run at once [env: DRAY_CAPACITY] [default: 4]
    #[arg(long, value_name = "N")]
    capacity: Option<u32>,
    /// How long a drain waits for running tasks, e.g. 30s, 2m (an installed unit's stop timeout is this plus 15s) [env: DRAY_DRAIN_GRACE] [default: 30s]
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    drain_grace: Option<Duration>,
    /// Serve /healthz and /readyz (ready = connected to the manager) here, e.g. 127.0.0.1:7081 [env: DRAY_HTTP_ADDR]
    #[arg(long, value_name = "ADDR")]
    http_addr: Option<String>,
    /// TOML file with any of the settings above (keys like `ca-file`) and
    /// `[vault.NAME]` secret backends
    #[arg(long, value_name = "FILE", env = "DRAY_CONFIG", hide_env_values = true)]
    config: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 2m, 1h 30m)"))
}

impl DelegateArgs {
    fn options(&self) -> Options {
        Options {
            manager: self.manager.clone(),
            ca_file: self.ca_file.clone(),
            token: self.token.clone(),
            name: self.name.clone(),
            tags: self.tags.as_ref().map(|t| dray_delegate::config::split_tags(&t.join(","))),
            state_dir: self.state_dir.clone(),
            capacity: self.capacity,
            drain_grace: self.drain_grace,
            http_addr: self.http_addr.clone(),
            // Vault backends are tables: config file only.
            vault: None,
        }
    }

    fn config(&self) -> Result<dray_delegate::config::Config, ConfigError> {
        let file = self.config.as_deref().map(Options::from_file).transpose()?;
        let env = Options::from_env(|k| std::env::var(k).ok())?;
        Options::resolve(self.options(), env, file, hostname)
    }
}

fn hostname() -> Option<String> {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok())
}

fn main() -> ExitCode {
    // clap prints its own errors and exits with code 2 on bad flags.
    let cli = Cli::parse();
    // vaultrs and its HTTP layer log every refused or missing secret as an
    // ERROR of their own; the delegate reports those (classified, with the
    // reference) as task failures, so by default their events are off.
    dray_shared::telemetry::init("info,vaultrs=off,rustify=off");
    let args = match cli.command {
        Command::Run(args) => args,
        Command::Install(args) => return install(&args),
    };
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            error!("invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    match proxy::Proxies::from_env() {
        Ok(p) => {
            if p.https.is_some() || p.http.is_some() {
                info!(
                    https_proxy = ?p.https,
                    http_proxy = ?p.http,
                    no_proxy = ?p.no_proxy,
                    "Outbound connections go through a proxy."
                );
            }
            proxy::init(p);
        }
        Err(e) => {
            error!("invalid proxy setting: {e}");
            return ExitCode::from(2);
        }
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.downcast_ref::<dray_delegate::Error>().map_or(1, dray_delegate::Error::exit_code);
            // Library errors already spell out their causes in their message, so
            // the plain form; the alternate form would repeat every cause.
            error!("{e}");
            ExitCode::from(code)
        }
    }
}

fn install(args: &InstallArgs) -> ExitCode {
    let opts = match args.options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    match runtime.block_on(dray_delegate::install::systemd(&opts, &mut stdout)) {
        Ok(done) => {
            let unit = dray_delegate::install::unit::UNIT_NAME;
            if done.started {
                println!("dray-delegate {} is running. Check it with:", done.delegate_id);
                println!("  systemctl status {unit}");
                println!("  journalctl -u {unit} -f        # look for \"Delegate connected\"");
            } else {
                println!("Installed without starting (--no-start). Start it with:");
                println!("  systemctl daemon-reload && systemctl enable --now {unit}");
            }
            println!(
                "  dray get delegates              # on the manager: {} should be connected",
                done.delegate_id
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(config: dray_delegate::config::Config) -> anyhow::Result<()> {
    // One thread: the delegate mostly waits on the network and child processes,
    // and a single-threaded runtime keeps idle memory small. The blocking pool
    // (file secrets, temp-dir removal, DNS) is capped for the same reason.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(8)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(dray_delegate::run(config))?;
    Ok(())
}
