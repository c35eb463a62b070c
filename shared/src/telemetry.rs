//! Logging set-up shared by both binaries: `tracing` to stderr, filtered by
//! `RUST_LOG` (default `info`), JSON lines when `DRAY_LOG_FORMAT=json`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call once per process.
pub fn init(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("DRAY_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().try_init() } else { builder.with_ansi(false).try_init() };
}
