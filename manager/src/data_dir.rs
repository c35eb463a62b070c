//! The manager's data directory: its CA, its gRPC server certificate and the admin
//! API token. Created on first start, reused afterwards.
//!
//! ```text
//! <data-dir>/ca.pem         CA certificate (give it to delegates and CLI users)
//! <data-dir>/ca.key         CA private key (0600)
//! <data-dir>/server.pem     server certificate for --advertise-host names
//! <data-dir>/server.key     its key (0600)
//! <data-dir>/admin.token    admin API bearer token (0600)
//! <data-dir>/dray.db        SQLite store (the default)
//! ```

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dray_shared::pki::{self, Authority, CertifiedKey};
use tracing::info;

/// A data-dir operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Generating or parsing a certificate failed.
    #[error("{path}: {source}")]
    Pki {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: pki::Error,
    },
}

/// Everything the manager loads from its data dir.
#[derive(Debug, Clone)]
pub struct Materials {
    /// The CA that signs delegate certificates.
    pub ca: Authority,
    /// The gRPC server's certificate and key.
    pub server: CertifiedKey,
    /// Admin API bearer token.
    pub admin_token: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Writes a file readable only by its owner, atomically (temp file + rename).
pub fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(contents.as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn read(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io { path: path.to_path_buf(), source: e }),
    }
}

/// Loads the materials, creating whatever is missing. The server certificate is
/// re-issued when the names change or it is within 30 days of expiry.
pub fn load_or_create(dir: &Path, hosts: &[String]) -> Result<Materials, Error> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (ca_pem, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let ca = match (read(&ca_pem)?, read(&ca_key)?) {
        (Some(cert_pem), Some(key_pem)) => Authority { cert_pem, key_pem },
        _ => {
            let ca = Authority::generate("Dray manager CA")
                .map_err(|source| Error::Pki { path: ca_pem.clone(), source })?;
            write_private(&ca_key, &ca.key_pem)?;
            write_private(&ca_pem, &ca.cert_pem)?;
            std::fs::set_permissions(&ca_pem, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .map_err(io(&ca_pem))?;
            info!(path = %ca_pem.display(), "Created the manager CA; give this certificate to delegates and CLI users.");
            ca
        }
    };

    let (srv_pem, srv_key, srv_names) =
        (dir.join("server.pem"), dir.join("server.key"), dir.join("server.names"));
    let names = hosts.join(",");
    let fresh = match (read(&srv_pem)?, read(&srv_key)?, read(&srv_names)?) {
        (Some(cert_pem), Some(key_pem), Some(n)) if n == names => {
            let thirty_days = 30 * 24 * 3600 * 1000;
            let ok =
                pki::not_after_ms(&cert_pem).is_ok_and(|t| t > dray_shared::clock::now_ms() + thirty_days);
            ok.then_some(CertifiedKey { cert_pem, key_pem })
        }
        _ => None,
    };
    let server = match fresh {
        Some(s) => s,
        None => {
            let s = ca
                .issue_server(hosts, Duration::from_secs(365 * 24 * 3600))
                .map_err(|source| Error::Pki { path: srv_pem.clone(), source })?;
            write_private(&srv_key, &s.key_pem)?;
            write_private(&srv_pem, &s.cert_pem)?;
            write_private(&srv_names, &names)?;
            info!(path = %srv_pem.display(), names = %names, "Issued the gRPC server certificate.");
            s
        }
    };

    let token_path = dir.join("admin.token");
    let admin_token = match read(&token_path)? {
        Some(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let t = crate::auth::new_secret("dray_admin_");
            write_private(&token_path, &format!("{t}\n"))?;
            info!(path = %token_path.display(), "Created the admin API token.");
            t
        }
    };
    Ok(Materials { ca, server, admin_token })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_once_and_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let a = load_or_create(dir.path(), &hosts).unwrap();
        let b = load_or_create(dir.path(), &hosts).unwrap();
        assert_eq!(a.ca.cert_pem, b.ca.cert_pem);
        assert_eq!(a.server.cert_pem, b.server.cert_pem);
        assert_eq!(a.admin_token, b.admin_token);
        let mode = std::fs::metadata(dir.path().join("admin.token")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let c = load_or_create(dir.path(), &["other.example".to_string()]).unwrap();
        assert_ne!(a.server.cert_pem, c.server.cert_pem, "new names re-issue the server cert");
        assert_eq!(a.ca.cert_pem, c.ca.cert_pem);
    }
}
