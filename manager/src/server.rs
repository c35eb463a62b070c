//! `dray server`: loads the data dir, opens and migrates the store, starts the
//! lease engine, and serves gRPC (TLS, client certificates optional at the
//! handshake and required by the delegate session) and HTTP until SIGINT/SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use dray_shared::pb::pipelines_server::PipelinesServer;
use dray_shared::pb::triggers_server::TriggersServer;
use dray_shared::pb::{self, api_server::ApiServer, delegate_service_server::DelegateServiceServer};
use tokio::sync::watch as watch_channel;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::{error, info, warn};

use crate::cluster::forward::{Relay, ToLeader};
use crate::cluster::leader::{self, Role};
use crate::cluster::{Replica, listen, watch};
use crate::config::Config;
use crate::grpc::api_svc::{ApiSvc, bearer_check};
use crate::grpc::delegate_svc::DelegateSvc;
use crate::grpc::pipelines_svc::PipelinesSvc;
use crate::grpc::triggers_svc::TriggersSvc;
use crate::http::{HttpState, router};
use crate::lease::{self, Engine};
use crate::metrics::Metrics;
use crate::store::postgres::PgStore;
use crate::triggers::receiver::{self, WebhookState};
use crate::triggers::scheduler::Scheduler;
use crate::triggers::secret::MasterKey;
use crate::{data_dir, pipeline, store};

/// Runs the manager until a shutdown signal or a fatal error.
pub async fn run(config: Config) -> anyhow::Result<()> {
    dray_shared::tls::install_crypto_provider();
    let materials = data_dir::load_or_create(&config.data_dir, &config.advertise_hosts)
        .context("preparing the data directory")?;
    let (store, pg) = open_store(&config).await?;
    store.migrate().await.context("migrating the store")?;

    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding gRPC address {}", config.grpc_addr))?;
    let http_listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding HTTP address {}", config.http_addr))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let replica =
        Replica::new(replica_url(&config, "https", grpc_addr), replica_url(&config, "http", http_addr));

    // Registered before the engine can own a task: other replicas adopt the
    // tasks of owners they do not find registered.
    replica.register(&*store).await.context("registering this replica")?;
    let metrics = Arc::new(Metrics::new());
    let mut engine_config = config.engine.clone();
    if pg.is_some() {
        // Other replicas may share this database: claim before offering.
        engine_config.replica = Some(replica.id.clone());
        let takeover = crate::cluster::REPLICA_TTL + 2 * crate::cluster::HEARTBEAT;
        if engine_config.lease_ttl <= takeover {
            warn!(
                lease_ttl = ?engine_config.lease_ttl,
                takeover = ?takeover,
                "The lease TTL is shorter than the time other replicas take to adopt a dead replica's leases: \
                 tasks running through a replica that dies may be lost. Use a longer --lease-ttl."
            );
        }
    }
    let (engine, handle) = Engine::start(store.clone(), engine_config, metrics.clone())
        .await
        .context("loading unfinished tasks")?;
    let mut engine_task = tokio::spawn(engine.run());
    // Pipeline executions and cron triggers run on the leader only; until this
    // replica leads, its pipeline calls are relayed (see `cluster::leader`).
    let (pipelines_handle, pipelines_inbox) = pipeline::engine::channel(store.clone());
    let (role_tx, role_rx) = watch_channel::channel(if pg.is_some() { Role::Unknown } else { Role::Leader });
    let trigger_key = MasterKey::load_or_create(&*store, dray_shared::clock::now_ms())
        .await
        .context("loading the trigger master key")?;

    let ready = Arc::new(AtomicBool::new(false));
    let webhooks = WebhookState {
        store: store.clone(),
        engine: pipelines_handle.clone(),
        key: trigger_key.clone(),
        role: role_rx.clone(),
    };
    let http = axum::serve(
        http_listener,
        router(HttpState { ready: ready.clone(), metrics }).merge(receiver::router(webhooks)),
    );

    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&materials.server.cert_pem, &materials.server.key_pem))
        .client_ca_root(Certificate::from_pem(&materials.ca.cert_pem))
        .client_auth_optional(true);
    let (health, health_svc) = tonic_health::server::health_reporter();
    health.set_serving::<ApiServer<ApiSvc>>().await;
    health.set_serving::<DelegateServiceServer<DelegateSvc>>().await;
    health.set_serving::<PipelinesServer<PipelinesSvc>>().await;
    health.set_serving::<TriggersServer<TriggersSvc>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection")?;
    let delegate_svc =
        DelegateSvc::new(store.clone(), handle.clone(), materials.ca.clone(), config.delegate_cert_ttl);
    let relay = Relay::new(materials.ca.cert_pem.clone());
    let api_svc = ApiSvc::new(store.clone(), handle.clone(), replica.id.clone(), relay.clone());
    let pipelines_svc = ToLeader::new(
        PipelinesServer::with_interceptor(
            PipelinesSvc::new(store.clone(), pipelines_handle.clone()),
            bearer_check(materials.admin_token.clone()),
        ),
        role_rx.clone(),
        relay,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stop_grpc = stop_rx.clone();
    let grpc = Server::builder()
        .tls_config(tls)
        .context("configuring TLS")?
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
        .add_service(health_svc)
        .add_service(reflection)
        .add_service(DelegateServiceServer::new(delegate_svc))
        .add_service(ApiServer::with_interceptor(api_svc, bearer_check(materials.admin_token.clone())))
        .add_service(pipelines_svc)
        .add_service(TriggersServer::with_interceptor(
            TriggersSvc::new(store.clone(), trigger_key),
            bearer_check(materials.admin_token.clone()),
        ))
        .serve_with_incoming_shutdown(
            // No Nagle on accepted connections: small replies would otherwise wait
            // ~40 ms for the peer's delayed ACK.
            TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
            async move {
                let _ = stop_grpc.changed().await;
            },
        );
    let mut stop_http = stop_rx;
    let http = http.with_graceful_shutdown(async move {
        let _ = stop_http.changed().await;
    });
    let mut grpc_task = tokio::spawn(grpc);
    let mut http_task = tokio::spawn(async move { http.await });

    let mut heartbeat_task = tokio::spawn(replica.clone().heartbeat(store.clone()));
    let mut cluster_task = tokio::spawn(cluster(pg.clone(), replica.id.clone(), handle.clone(), role_tx));
    if pg.is_none() {
        store
            .mark_leader(&replica.id, dray_shared::clock::now_ms())
            .await
            .context("recording the leadership")?;
    }
    let leading = Leading {
        store: store.clone(),
        lease: handle.clone(),
        inbox: pipelines_inbox,
        replicas: pg.is_some(),
    };
    let mut leading_task = tokio::spawn(leading.run(role_rx, pipelines_handle));
    ready.store(true, Ordering::Release);
    info!(
        grpc_addr = %grpc_addr,
        http_addr = %http_addr,
        data_dir = %config.data_dir.display(),
        ca_file = %config.data_dir.join("ca.pem").display(),
        admin_token_file = %config.data_dir.join("admin.token").display(),
        replica = %replica.id,
        "Manager ready."
    );

    let result = tokio::select! {
        _ = shutdown_signal() => { info!("Shutting down."); Ok(()) }
        r = &mut engine_task => {
            error!("The lease engine stopped.");
            match r { Ok(Ok(())) => Ok(()), Ok(Err(e)) => Err(anyhow::Error::new(e).context("lease engine")), Err(e) => Err(e.into()) }
        }
        r = &mut leading_task => {
            error!("The pipeline engine or cron scheduler stopped.");
            match r { Ok(r) => r, Err(e) => Err(e.into()) }
        }
        r = &mut cluster_task => match r { Ok(r) => r, Err(e) => Err(e.into()) },
        r = &mut grpc_task => Err(anyhow::anyhow!("gRPC server stopped: {r:?}")),
        r = &mut heartbeat_task => Err(anyhow::anyhow!("replica heartbeat stopped: {r:?}")),
        r = &mut http_task => Err(anyhow::anyhow!("HTTP server stopped: {r:?}")),
    };
    ready.store(false, Ordering::Release);
    leading_task.abort();
    cluster_task.abort();
    heartbeat_task.abort();
    // The engine stops before the registration goes: then other replicas adopt
    // what it owned, and nothing here writes over them.
    if !engine_task.is_finished() {
        engine_task.abort();
        let _ = (&mut engine_task).await;
    }
    replica.deregister(&*store).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), grpc_task).await;
    result
}

/// Opens the store; for PostgreSQL also returns it as such (replicas share it).
async fn open_store(config: &Config) -> anyhow::Result<(Arc<dyn store::Store>, Option<Arc<PgStore>>)> {
    let context = || format!("opening the store at {}", redact(&config.database_url));
    if store::is_postgres(&config.database_url) {
        let pg = Arc::new(
            PgStore::connect(&config.database_url, config.database_schema.as_deref())
                .await
                .with_context(context)?,
        );
        Ok((pg.clone(), Some(pg)))
    } else {
        let store = store::open(&config.database_url, config.database_schema.as_deref())
            .await
            .with_context(context)?;
        Ok((store, None))
    }
}

/// With PostgreSQL: hears the other replicas, adopts dead ones' work, and
/// campaigns for (then holds) the leadership. Returns only on a fatal error.
async fn cluster(
    pg: Option<Arc<PgStore>>,
    me: String,
    lease: lease::Handle,
    role: watch_channel::Sender<Role>,
) -> anyhow::Result<()> {
    let Some(pg) = pg else { return std::future::pending().await };
    tokio::select! {
        _ = listen::run(pg.clone(), me.clone(), lease.clone()) => Err(anyhow::anyhow!("the lease engine stopped")),
        _ = watch::run(pg.clone(), me.clone(), lease) => Err(anyhow::anyhow!("the lease engine stopped")),
        deposed = leader::run(&pg, &me, role) => {
            error!(error = %deposed, "This replica lost the leadership; stopping so that another one takes over cleanly.");
            Err(anyhow::Error::new(deposed))
        }
    }
}

/// What the leader runs: the pipeline engine and the cron scheduler.
struct Leading {
    store: Arc<dyn store::Store>,
    lease: lease::Handle,
    inbox: pipeline::engine::Inbox,
    replicas: bool,
}

impl Leading {
    /// Waits for the leadership, then runs both until one stops.
    async fn run(
        self,
        mut role: watch_channel::Receiver<Role>,
        handle: pipeline::engine::Handle,
    ) -> anyhow::Result<()> {
        if role.wait_for(|r| *r == Role::Leader).await.is_err() {
            return std::future::pending().await;
        }
        let registry = Arc::new(pipeline::steps::Registry::builtin());
        let mut engine = pipeline::Engine::start_with(self.store.clone(), self.lease, registry, self.inbox)
            .await
            .context("loading unfinished executions")?;
        if self.replicas {
            engine = engine.resync_every(std::time::Duration::from_secs(5));
        }
        let scheduler = Scheduler::new(self.store, handle);
        tokio::select! {
            r = engine.run() => r.context("pipeline engine"),
            () = scheduler.run() => Err(anyhow::anyhow!("cron scheduler stopped")),
        }
    }
}

/// The URL this replica's listener is reached on: `--replica-host`, else the
/// first host the operator advertised, else the bound address (`localhost` for
/// a wildcard bind).
fn replica_url(config: &Config, scheme: &str, bound: std::net::SocketAddr) -> String {
    let defaults = ["localhost", "127.0.0.1"];
    let advertised = config.advertise_hosts.iter().find(|h| !defaults.contains(&h.as_str()));
    let host = match config.replica_host.as_ref().or(advertised) {
        Some(h) => h.clone(),
        None if bound.ip().is_unspecified() => "localhost".to_string(),
        None => bound.ip().to_string(),
    };
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    format!("{scheme}://{host}:{}", bound.port())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// A database URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}://{}:***{}", &url[..s], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
