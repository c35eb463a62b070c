//! Prometheus metrics, named `dray_<noun>_<unit>[_total]`. Served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label set with a task state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// `queued`, `running`, `succeeded`...
    pub state: String,
}

/// Every metric the manager exports.
pub struct Metrics {
    registry: Registry,
    /// Unfinished tasks by state.
    pub tasks: Family<StateLabel, Gauge>,
    /// Tasks that reached a final state, by state.
    pub tasks_finished: Family<StateLabel, Counter>,
    /// Tasks submitted.
    pub tasks_submitted: Counter,
    /// Leases granted (acknowledged offers).
    pub leases_granted: Counter,
    /// Lease renewals (heartbeats accepted).
    pub leases_renewed: Counter,
    /// Leases lost (not renewed in time, delegate restarted or revoked).
    pub leases_lost: Counter,
    /// Offers the delegate rejected.
    pub offers_rejected: Counter,
    /// Offers not acknowledged in time.
    pub offers_expired: Counter,
    /// Messages refused for a stale epoch or a lease the sender does not hold.
    pub stale_refused: Counter,
    /// Connected delegate sessions.
    pub delegates_connected: Gauge,
    /// Time from submission to lease grant.
    pub dispatch_latency: Histogram,
    /// Duration of one store commit (one batch).
    pub commit_seconds: Histogram,
    /// Task rows written per commit.
    pub commit_rows: Histogram,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let tasks = Family::<StateLabel, Gauge>::default();
        let tasks_finished = Family::<StateLabel, Counter>::default();
        let m = Metrics {
            tasks,
            tasks_finished,
            tasks_submitted: Counter::default(),
            leases_granted: Counter::default(),
            leases_renewed: Counter::default(),
            leases_lost: Counter::default(),
            offers_rejected: Counter::default(),
            offers_expired: Counter::default(),
            stale_refused: Counter::default(),
            delegates_connected: Gauge::default(),
            dispatch_latency: Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            commit_seconds: Histogram::new([
                0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0,
            ]),
            commit_rows: Histogram::new([1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0]),
            registry: Registry::default(),
        };
        registry.register("dray_tasks", "Unfinished tasks by state", m.tasks.clone());
        registry.register(
            "dray_tasks_finished",
            "Tasks that reached a final state",
            m.tasks_finished.clone(),
        );
        registry.register("dray_tasks_submitted", "Tasks submitted", m.tasks_submitted.clone());
        registry.register("dray_leases_granted", "Leases granted", m.leases_granted.clone());
        registry.register("dray_leases_renewed", "Lease renewals accepted", m.leases_renewed.clone());
        registry.register("dray_leases_lost", "Leases lost", m.leases_lost.clone());
        registry.register("dray_offers_rejected", "Offers rejected by delegates", m.offers_rejected.clone());
        registry.register("dray_offers_expired", "Offers not acknowledged in time", m.offers_expired.clone());
        registry.register(
            "dray_stale_refused",
            "Delegate messages refused for a stale epoch",
            m.stale_refused.clone(),
        );
        registry.register(
            "dray_delegates_connected",
            "Connected delegate sessions",
            m.delegates_connected.clone(),
        );
        registry.register(
            "dray_dispatch_latency_seconds",
            "Time from task submission to lease grant",
            m.dispatch_latency.clone(),
        );
        registry.register(
            "dray_store_commit_seconds",
            "Duration of one store commit",
            m.commit_seconds.clone(),
        );
        registry.register("dray_store_commit_rows", "Task rows written per commit", m.commit_rows.clone());
        Metrics { registry, ..m }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// An unfinished task this process stops tracking (another replica has it).
    pub fn forget(&self, state: dray_shared::pb::TaskState) {
        if !state.is_final() {
            self.tasks.get_or_create(&StateLabel { state: state.short_name().into() }).dec();
        }
    }

    /// Records a task moving between states.
    pub fn transition(&self, from: Option<dray_shared::pb::TaskState>, to: dray_shared::pb::TaskState) {
        if from == Some(to) {
            return;
        }
        if let Some(from) = from
            && !from.is_final()
        {
            self.tasks.get_or_create(&StateLabel { state: from.short_name().into() }).dec();
        }
        let label = StateLabel { state: to.short_name().into() };
        if to.is_final() {
            self.tasks_finished.get_or_create(&label).inc();
        } else {
            self.tasks.get_or_create(&label).inc();
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
