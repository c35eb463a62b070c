//! `dray server`: loads the data dir, opens and migrates the store, starts the
//! lease engine, and serves gRPC (TLS, client certificates optional at the
//! handshake and required by the delegate session) and HTTP until SIGINT/SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use dray_shared::pb::pipelines_server::PipelinesServer;
use dray_shared::pb::triggers_server::TriggersServer;
use dray_shared::pb::{self, api_server::ApiServer, delegate_service_server::DelegateServiceServer};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::{error, info};

use crate::config::Config;
use crate::grpc::api_svc::{ApiSvc, bearer_check};
use crate::grpc::delegate_svc::DelegateSvc;
use crate::grpc::pipelines_svc::PipelinesSvc;
use crate::grpc::triggers_svc::TriggersSvc;
use crate::http::{HttpState, router};
use crate::lease::Engine;
use crate::metrics::Metrics;
use crate::replica::Replica;
use crate::triggers::receiver::{self, WebhookState};
use crate::triggers::scheduler::Scheduler;
use crate::triggers::secret::MasterKey;
use crate::{data_dir, pipeline, store};

/// Runs the manager until a shutdown signal or a fatal error.
pub async fn run(config: Config) -> anyhow::Result<()> {
    dray_shared::tls::install_crypto_provider();
    let materials = data_dir::load_or_create(&config.data_dir, &config.advertise_hosts)
        .context("preparing the data directory")?;
    let store = store::open(&config.database_url, config.database_schema.as_deref())
        .await
        .with_context(|| format!("opening the store at {}", redact(&config.database_url)))?;
    store.migrate().await.context("migrating the store")?;
    let metrics = Arc::new(Metrics::new());
    let (engine, handle) = Engine::start(store.clone(), config.engine.clone(), metrics.clone())
        .await
        .context("loading unfinished tasks")?;
    let mut engine_task = tokio::spawn(engine.run());
    let (pipelines, pipelines_handle) = pipeline::Engine::start(
        store.clone(),
        handle.clone(),
        Arc::new(pipeline::steps::Registry::builtin()),
    )
    .await
    .context("loading unfinished executions")?;
    let mut pipelines_task = tokio::spawn(pipelines.run());
    let trigger_key = MasterKey::load_or_create(&*store, dray_shared::clock::now_ms())
        .await
        .context("loading the trigger master key")?;

    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding gRPC address {}", config.grpc_addr))?;
    let http_listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding HTTP address {}", config.http_addr))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;

    let ready = Arc::new(AtomicBool::new(false));
    let webhooks =
        WebhookState { store: store.clone(), engine: pipelines_handle.clone(), key: trigger_key.clone() };
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
    let replica = Replica::new(replica_url(&config, grpc_addr));
    let api_svc = ApiSvc::new(store.clone(), handle.clone(), replica.id.clone());
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
        .add_service(PipelinesServer::with_interceptor(
            PipelinesSvc::new(store.clone(), pipelines_handle.clone()),
            bearer_check(materials.admin_token.clone()),
        ))
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

    replica.register(&*store).await.context("registering this replica")?;
    let mut heartbeat_task = tokio::spawn(replica.clone().heartbeat(store.clone()));
    let mut scheduler_task = tokio::spawn(Scheduler::new(store.clone(), pipelines_handle.clone()).run());
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
        r = &mut pipelines_task => {
            error!("The pipeline engine stopped.");
            match r { Ok(Ok(())) => Ok(()), Ok(Err(e)) => Err(anyhow::Error::new(e).context("pipeline engine")), Err(e) => Err(e.into()) }
        }
        r = &mut grpc_task => Err(anyhow::anyhow!("gRPC server stopped: {r:?}")),
        r = &mut scheduler_task => Err(anyhow::anyhow!("cron scheduler stopped: {r:?}")),
        r = &mut heartbeat_task => Err(anyhow::anyhow!("replica heartbeat stopped: {r:?}")),
        r = &mut http_task => Err(anyhow::anyhow!("HTTP server stopped: {r:?}")),
    };
    ready.store(false, Ordering::Release);
    scheduler_task.abort();
    heartbeat_task.abort();
    replica.deregister(&*store).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), grpc_task).await;
    result
}

/// The gRPC URL this replica is reached on: the first host the operator
/// advertised, else the bound address (`localhost` for a wildcard bind).
fn replica_url(config: &Config, bound: std::net::SocketAddr) -> String {
    let defaults = ["localhost", "127.0.0.1"];
    let host = match config.advertise_hosts.iter().find(|h| !defaults.contains(&h.as_str())) {
        Some(h) => h.clone(),
        None if bound.ip().is_unspecified() => "localhost".to_string(),
        None => bound.ip().to_string(),
    };
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    format!("https://{host}:{}", bound.port())
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
