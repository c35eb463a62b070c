//! The Dray delegate: an agent that enrols with the manager, holds a mutually
//! authenticated gRPC session to it, leases tasks and runs them on targets.
//!
//! - [`config`]: options from file, environment and flags, validated.
//! - [`link`]: identity and enrolment, certificate renewal, the session stream,
//!   the outbound queue that keeps heartbeats ahead of task output, reconnects.
//! - [`runner`]: the lease loop — a pure lease book (offers, acks, grants,
//!   results, credits) and the runner that performs its decisions, drains on
//!   SIGTERM/SIGINT.
//! - [`targets`]: what runs a task of each kind (`shell`, `noop`).
//! - [`install`]: `dray-delegate install --systemd` (enrol, write the unit and
//!   its environment file, start the service).
//! - [`secrets`]: resolving secret references on the delegate host only, and
//!   masking their values in everything that leaves it.
//!
//! Design rule: only delegates ever see secret values; the manager stores and
//! sends references.

pub mod config;
pub mod health;
pub mod install;
pub mod lease;
pub mod link;
pub mod proxy;
pub mod runner;
pub mod secrets;
pub mod targets;

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::{Config, ConfigError};
use crate::link::enrol::{self, EnrolError, EnrolParams};
use crate::link::identity::{IdentityError, StateDir};
use crate::link::managers::Managers;
use crate::link::stream::{DEFAULT_LOG_QUEUE_BYTES, Outbox};
use crate::link::{Link, LinkError};
use crate::runner::{Runner, RunnerConfig, RunnerError};
use crate::secrets::{SecretStore, VaultBackends};
use crate::targets::Targets;

/// Why the delegate stopped other than by a clean drain.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration (exit code 2).
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The state directory is unusable.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Enrolment failed or was refused.
    #[error(transparent)]
    Enrol(#[from] EnrolError),
    /// The session was refused or cannot continue.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The runner could not start.
    #[error(transparent)]
    Runner(RunnerError),
    /// The health endpoint's address could not be bound.
    #[error("cannot listen on {addr} for the health endpoint: {source}")]
    Health {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl From<RunnerError> for Error {
    fn from(e: RunnerError) -> Self {
        match e {
            RunnerError::Link(l) => Error::Link(l),
            other => Error::Runner(other),
        }
    }
}

impl Error {
    /// Process exit code for this error: 2 for configuration, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => 2,
            _ => 1,
        }
    }
}

/// Runs the delegate until it is drained (Ok) or cannot continue.
pub async fn run(config: Config) -> Result<(), Error> {
    dray_shared::tls::install_crypto_provider();
    let ca_pem = config.read_ca()?;
    // Clients only (CA files read now, so a bad one stops start-up); each
    // backend logs in on first use.
    let vault = VaultBackends::start(config.vault.clone())?;
    if !config.vault.is_empty() {
        info!(vault.backends = %vault.names().collect::<Vec<_>>().join(","), "Vault secret backends configured.");
    }
    // Bound before enrolment so liveness probes answer from the start.
    let health = match config.http_addr {
        Some(addr) => {
            let l =
                tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Health { addr, source })?;
            info!(http_addr = %addr, "Serving /healthz and /readyz.");
            Some(l)
        }
        None => None,
    };
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    if let Some(l) = health {
        tokio::spawn(health::serve(l, ready_rx));
    }
    let state = StateDir::new(&config.state_dir);
    let identity = match state.load()? {
        Some(id) => {
            if config.token.is_some() {
                info!(state_dir = %state.path().display(), "Already enrolled; the token is not needed and was ignored.");
            }
            if id.record.name != config.name {
                warn!(
                    delegate.name = %id.record.name,
                    config.name = %config.name,
                    "The name is fixed at enrolment; ignoring the configured one."
                );
            }
            id
        }
        None => {
            let token = config
                .token
                .as_ref()
                .ok_or_else(|| ConfigError::NeedToken { state_dir: config.state_dir.clone() })?;
            info!(manager = %config.manager, delegate.name = %config.name, "Enrolling with the manager.");
            let params = EnrolParams {
                managers: &config.managers,
                ca_pem: &ca_pem,
                token: &token.0,
                name: &config.name,
                tags: &config.tags,
            };
            // Nothing to drain yet: a signal during enrolment just stops.
            tokio::select! {
                id = enrol::enrol(&params, &state) => id?,
                () = shutdown_requested() => {
                    info!("Stopped before enrolment completed.");
                    return Ok(());
                }
            }
        }
    };
    info!(
        delegate.id = %identity.record.delegate_id,
        delegate.name = %identity.record.name,
        delegate.scope = %identity.record.scope,
        manager = %config.manager,
        capacity = config.capacity,
        tags = %config.tags.join(","),
        "Starting delegate."
    );

    let outbox = Outbox::new(DEFAULT_LOG_QUEUE_BYTES);
    let runner_cfg = RunnerConfig {
        capacity: config.capacity,
        tags: config.tags.clone(),
        drain_grace: config.drain_grace,
    };
    let (runner, held) = Runner::new(
        runner_cfg,
        Arc::clone(&outbox),
        Targets::builtin(),
        Arc::new(SecretStore::from_process().with_vault(vault)),
    );
    // Readiness follows the session from here on.
    let mut session_up = runner.readiness();
    tokio::spawn(async move {
        while session_up.changed().await.is_ok() {
            let up = *session_up.borrow();
            ready_tx.send_replace(up);
        }
    });
    let (events_tx, events_rx) = mpsc::channel(64);
    let link = Link {
        managers: Managers::new(config.managers.clone()),
        ca_pem,
        state,
        identity,
        outbox,
        events: events_tx,
        held,
    };
    let link = tokio::spawn(link.run());
    runner.run(events_rx, link).await?;
    Ok(())
}

/// Completes on SIGTERM or SIGINT (never, if the handlers cannot be installed).
async fn shutdown_requested() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
