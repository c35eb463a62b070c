//! `dray server` options: TOML file, then `DRAY_*` environment, then flags (each
//! later source wins), validated into a [`Config`] that cannot hold bad values.
//! Parsing happens before any port is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::lease::EngineConfig;

/// Options as given on the command line or environment (clap fills these).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// TOML file with any of the options below (kebab-case keys).
    #[arg(long, env = "DRAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the CA, certificates, admin token and SQLite database live [default: ./dray-data].
    #[arg(long, env = "DRAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:7443].
    #[arg(long, env = "DRAY_GRPC_ADDR")]
    pub grpc_addr: Option<String>,
    /// HTTP listen address for /healthz, /readyz, /metrics [default: 127.0.0.1:7080].
    #[arg(long, env = "DRAY_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// `sqlite://PATH` or `postgres://…` [default: SQLite file in the data dir].
    #[arg(long, env = "DRAY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// PostgreSQL schema to use (created if missing) [default: the connection's search_path].
    #[arg(long, env = "DRAY_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,
    /// Extra DNS names or IPs for the server certificate (repeatable; localhost and 127.0.0.1 are always included).
    #[arg(long, env = "DRAY_ADVERTISE_HOST", value_delimiter = ',')]
    pub advertise_host: Vec<String>,
    /// This replica's own host name or IP as other replicas reach it (they relay
    /// pipeline calls to the leader); added to the server certificate. Set it when
    /// replicas share one load-balanced name [default: the first advertised host].
    #[arg(long, env = "DRAY_REPLICA_HOST")]
    pub replica_host: Option<String>,
    /// Lease time-to-live [default: 15s].
    #[arg(long, env = "DRAY_LEASE_TTL")]
    pub lease_ttl: Option<String>,
    /// Time a delegate has to acknowledge an offer [default: 5s].
    #[arg(long, env = "DRAY_OFFER_TIMEOUT")]
    pub offer_timeout: Option<String>,
    /// Default time a task waits for an eligible delegate [default: 10m].
    #[arg(long, env = "DRAY_QUEUE_TIMEOUT")]
    pub queue_timeout: Option<String>,
    /// Default run timeout of a task [default: 1h].
    #[arg(long, env = "DRAY_TASK_TIMEOUT")]
    pub task_timeout: Option<String>,
    /// Lifetime of delegate client certificates [default: 24h].
    #[arg(long, env = "DRAY_DELEGATE_CERT_TTL")]
    pub delegate_cert_ttl: Option<String>,
}

/// The same options as read from a TOML file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileOptions {
    data_dir: Option<PathBuf>,
    grpc_addr: Option<String>,
    http_addr: Option<String>,
    database_url: Option<String>,
    database_schema: Option<String>,
    #[serde(default)]
    advertise_host: Vec<String>,
    replica_host: Option<String>,
    lease_ttl: Option<String>,
    offer_timeout: Option<String>,
    queue_timeout: Option<String>,
    task_timeout: Option<String>,
    delegate_cert_ttl: Option<String>,
}

/// A configuration problem, naming the option.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these options.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// An option has a bad value.
    #[error("--{option}: {message}")]
    Invalid {
        /// Option name.
        option: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// HTTP listen address.
    pub http_addr: SocketAddr,
    /// Store URL.
    pub database_url: String,
    /// PostgreSQL schema.
    pub database_schema: Option<String>,
    /// Names on the server certificate.
    pub advertise_hosts: Vec<String>,
    /// This replica's own host for other replicas, if set.
    pub replica_host: Option<String>,
    /// Engine timing.
    pub engine: EngineConfig,
    /// Delegate certificate lifetime.
    pub delegate_cert_ttl: Duration,
}

fn duration(option: &'static str, value: Option<String>, default: Duration) -> Result<Duration, Error> {
    match value {
        None => Ok(default),
        Some(v) => {
            let d = humantime::parse_duration(v.trim()).map_err(|e| Error::Invalid {
                option,
                message: format!("{v:?} is not a duration ({e}); try 30s, 5m, 1h"),
            })?;
            if d.is_zero() {
                return Err(Error::Invalid { option, message: "must be greater than zero".into() });
            }
            Ok(d)
        }
    }
}

fn addr(option: &'static str, value: Option<String>, default: &str) -> Result<SocketAddr, Error> {
    let v = value.unwrap_or_else(|| default.to_string());
    v.parse().map_err(|_| Error::Invalid {
        option,
        message: format!("{v:?} is not an address like 127.0.0.1:7443"),
    })
}

impl ServerArgs {
    /// Merges file < env/flags and validates.
    pub fn resolve(self) -> Result<Config, Error> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => FileOptions::default(),
        };
        let data_dir = self.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("./dray-data"));
        let database_url = self
            .database_url
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("dray.db").display()));
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(Error::Invalid {
                option: "database-url",
                message: format!("{database_url:?}: expected sqlite://PATH or postgres://…"),
            });
        }
        let mut advertise_hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let replica_host = self.replica_host.or(file.replica_host).filter(|h| !h.is_empty());
        let advertised =
            if self.advertise_host.is_empty() { file.advertise_host } else { self.advertise_host };
        let named = advertised.into_iter().map(|h| ("advertise-host", h));
        for (option, h) in named.chain(replica_host.clone().map(|h| ("replica-host", h))) {
            if h.is_empty() || h.contains(['/', ' ', ':']) && h.parse::<std::net::IpAddr>().is_err() {
                return Err(Error::Invalid { option, message: format!("{h:?} is not a host name or IP") });
            }
            if !advertise_hosts.contains(&h) {
                advertise_hosts.push(h);
            }
        }
        let defaults = EngineConfig::default();
        let engine = EngineConfig {
            lease_ttl: duration("lease-ttl", self.lease_ttl.or(file.lease_ttl), defaults.lease_ttl)?,
            offer_timeout: duration(
                "offer-timeout",
                self.offer_timeout.or(file.offer_timeout),
                defaults.offer_timeout,
            )?,
            queue_timeout: duration(
                "queue-timeout",
                self.queue_timeout.or(file.queue_timeout),
                defaults.queue_timeout,
            )?,
            task_timeout: duration(
                "task-timeout",
                self.task_timeout.or(file.task_timeout),
                defaults.task_timeout,
            )?,
            max_batch: defaults.max_batch,
            replica: None,
        };
        let delegate_cert_ttl = duration(
            "delegate-cert-ttl",
            self.delegate_cert_ttl.or(file.delegate_cert_ttl),
            Duration::from_secs(24 * 3600),
        )?;
        if delegate_cert_ttl < Duration::from_secs(10) {
            return Err(Error::Invalid {
                option: "delegate-cert-ttl",
                message: "must be at least 10s".into(),
            });
        }
        Ok(Config {
            grpc_addr: addr("grpc-addr", self.grpc_addr.or(file.grpc_addr), "127.0.0.1:7443")?,
            http_addr: addr("http-addr", self.http_addr.or(file.http_addr), "127.0.0.1:7080")?,
            data_dir,
            database_url,
            database_schema: self.database_schema.or(file.database_schema),
            advertise_hosts,
            replica_host,
            engine,
            delegate_cert_ttl,
        })
    }
}

fn load_file(path: &Path) -> Result<FileOptions, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.into(), source })?;
    toml::from_str(&text).map_err(|e| Error::Parse { path: path.into(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn defaults() {
        let c = ServerArgs::default().resolve().unwrap();
        assert_eq!(c.grpc_addr.to_string(), "127.0.0.1:7443");
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:7080");
        assert_eq!(c.database_url, "sqlite://./dray-data/dray.db");
        assert_eq!(c.engine.lease_ttl, Duration::from_secs(15));
    }

    #[test]
    fn flags_beat_file() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "grpc-addr = \"127.0.0.1:9000\"\nlease-ttl = \"3s\"\ndata-dir = \"/tmp/x\"").unwrap();
        let args = ServerArgs {
            config: Some(f.path().into()),
            grpc_addr: Some("127.0.0.1:9001".into()),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.grpc_addr.port(), 9001);
        assert_eq!(c.engine.lease_ttl, Duration::from_secs(3));
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn bad_values_name_the_option() {
        let e = ServerArgs { lease_ttl: Some("soon".into()), ..Default::default() }.resolve().unwrap_err();
        assert!(e.to_string().starts_with("--lease-ttl: \"soon\" is not a duration"), "{e}");
        let e = ServerArgs { grpc_addr: Some("nowhere".into()), ..Default::default() }.resolve().unwrap_err();
        assert!(e.to_string().contains("--grpc-addr"), "{e}");
        let e = ServerArgs { database_url: Some("mysql://x".into()), ..Default::default() }
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("--database-url"), "{e}");
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "grpc-adr = \"x\"").unwrap();
        let e = ServerArgs { config: Some(f.path().into()), ..Default::default() }.resolve().unwrap_err();
        assert!(e.to_string().contains("unknown field `grpc-adr`"), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}
