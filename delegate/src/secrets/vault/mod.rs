//! `vault://BACKEND/MOUNT/PATH#KEY` secrets from HashiCorp Vault or OpenBao key-value
//! engines. The only module that uses `vaultrs`.
//!
//! - Backends are named in the delegate's config ([`config`]); each has one client,
//!   one token and a short [`cache::TtlCache`] of read secrets (never on disk).
//! - **Login** happens on first use (a delegate starts even when Vault is down):
//!   a token from a file or variable (checked with `lookup-self`), AppRole, or a
//!   Kubernetes service-account JWT.
//! - **Renewal**: a background task renews the token at two thirds of its TTL;
//!   when renewal is refused (or the token is not renewable) it logs in again
//!   (re-reading the token file for the `token` method, so an agent can rotate it).
//!   A read refused with 403 also logs in once more and retries, in case the token
//!   was revoked; a second 403 is the answer.
//! - **KV version** comes from the config (`kv-version`, default 2, and per mount
//!   `kv-mounts`), not from `sys/mounts`: reading `sys/mounts` needs a policy most
//!   delegate tokens should not have. A wrong version reads as `NotFound` and the
//!   message says which version was used.
//! - **Errors** are classified into [`VaultFailure`] and carry the reference, never
//!   a value.

pub mod cache;
pub mod config;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use dray_shared::secret_ref::VaultRef;
use tokio::sync::{Notify, RwLock};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use vaultrs::client::{Client as _, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use self::cache::TtlCache;
use self::config::{Auth, BackendConfig};
use super::{SecretError, SecretValue, VaultFailure};
use crate::config::ConfigError;

/// A token is treated as expired this long before Vault would expire it.
const EXPIRY_MARGIN: Duration = Duration::from_secs(2);
/// Pause after a failed renewal or login in the background before trying again.
const RETRY_PAUSE: Duration = Duration::from_secs(5);

/// Every configured backend, by name.
#[derive(Debug, Default)]
pub struct VaultBackends {
    backends: BTreeMap<String, Arc<Backend>>,
}

impl VaultBackends {
    /// No backends: every `vault://` reference is refused as not configured.
    pub fn none() -> Self {
        VaultBackends::default()
    }

    /// Builds a client per backend (reading its CA file) and starts its token
    /// renewal task. Must run inside a Tokio runtime. Does not contact Vault.
    pub fn start(configs: Vec<BackendConfig>) -> Result<Self, ConfigError> {
        dray_shared::tls::install_crypto_provider();
        let mut backends = BTreeMap::new();
        for cfg in configs {
            let backend = Arc::new(Backend::new(cfg)?);
            tokio::spawn(Arc::clone(&backend).renew_loop());
            backends.insert(backend.cfg.name.clone(), backend);
        }
        Ok(VaultBackends { backends })
    }

    /// The names of the configured backends.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.backends.keys().map(String::as_str)
    }

    fn backend(&self, r: &VaultRef) -> Result<&Arc<Backend>, SecretError> {
        self.backends.get(&r.backend).ok_or_else(|| {
            let known: Vec<&str> = self.names().collect();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            SecretError::Vault {
                reference: r.to_string(),
                failure: VaultFailure::NotConfigured,
                detail: format!(
                    "vault backend {:?} is not configured on this delegate (configured: {known})",
                    r.backend
                ),
            }
        })
    }

    /// Whether this delegate can resolve `r` at all (its backend is configured).
    /// Used before acking an offer; does not contact Vault.
    pub fn check(&self, r: &VaultRef) -> Result<(), SecretError> {
        self.backend(r).map(drop)
    }

    /// Reads the field `r` names.
    pub async fn read(&self, r: &VaultRef) -> Result<SecretValue, SecretError> {
        let backend = self.backend(r)?;
        backend.read(r).await.map_err(|f| SecretError::Vault {
            reference: r.to_string(),
            failure: f.kind,
            detail: f.detail,
        })
    }
}

/// A classified failure inside this module.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    kind: VaultFailure,
    detail: String,
}

impl Failure {
    fn new(kind: VaultFailure, detail: impl Into<String>) -> Self {
        Failure { kind, detail: detail.into() }
    }
}

/// How Vault answered, reduced to what decides the failure kind.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// An HTTP error status, with Vault's error strings.
    Status(u16, Vec<String>),
    /// No connection or no complete response.
    Unreachable(String),
    /// A success response without data.
    Empty,
    /// Anything else (a response we cannot parse...).
    Other(String),
}

fn answer(e: &ClientError) -> Answer {
    use rustify::errors::ClientError as RustifyError;
    match e {
        ClientError::APIError { code, errors } => Answer::Status(*code, errors.clone()),
        ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => Answer::Empty,
        ClientError::RestClientError { source } => match source {
            RustifyError::ServerResponseError { code, .. } => Answer::Status(*code, Vec::new()),
            RustifyError::RequestError { source, .. } | RustifyError::ResponseError { source } => {
                Answer::Unreachable(format!("{source:#}"))
            }
            other => Answer::Other(other.to_string()),
        },
        other => Answer::Other(other.to_string()),
    }
}

fn status_detail(code: u16, errors: &[String]) -> String {
    let errors: Vec<&str> = errors.iter().map(|e| e.trim()).filter(|e| !e.is_empty()).collect();
    if errors.is_empty() { format!("HTTP {code}") } else { format!("HTTP {code}: {}", errors.join("; ")) }
}

/// Classifies a failed read of a secret.
fn classify_read(a: Answer, address: &str) -> Failure {
    match a {
        Answer::Status(code @ (401 | 403), e) => Failure::new(VaultFailure::Denied, status_detail(code, &e)),
        Answer::Status(404, e) => Failure::new(VaultFailure::NotFound, status_detail(404, &e)),
        Answer::Status(code @ (429 | 502..=504), e) => Failure::new(
            VaultFailure::Unreachable,
            format!("{address} unavailable ({})", status_detail(code, &e)),
        ),
        Answer::Status(code, e) => Failure::new(VaultFailure::Other, status_detail(code, &e)),
        Answer::Unreachable(why) => {
            Failure::new(VaultFailure::Unreachable, format!("cannot reach {address}: {why}"))
        }
        Answer::Empty => Failure::new(VaultFailure::NotFound, "the secret has no data"),
        Answer::Other(why) => Failure::new(VaultFailure::Other, why),
    }
}

/// Classifies a failed login: anything Vault refused is an authentication failure.
fn classify_login(a: Answer, address: &str, method: &str) -> Failure {
    match classify_read(a, address) {
        f @ Failure { kind: VaultFailure::Unreachable, .. } => f,
        Failure { detail, .. } => {
            Failure::new(VaultFailure::LoginRefused, format!("{method} login refused: {detail}"))
        }
    }
}

/// Classifies a refused `lookup-self` of a configured token: 403 means the
/// token is revoked, expired or unknown (an authorization failure, as for any
/// refused read); others are a refused login.
fn classify_lookup(a: Answer, address: &str) -> Failure {
    match classify_read(a, address) {
        Failure { kind: VaultFailure::Denied, detail } => Failure::new(
            VaultFailure::Denied,
            format!("the token was refused (revoked or expired?): {detail}"),
        ),
        f @ Failure { kind: VaultFailure::Unreachable, .. } => f,
        Failure { detail, .. } => {
            Failure::new(VaultFailure::LoginRefused, format!("token lookup failed: {detail}"))
        }
    }
}

/// What is known about the current token.
#[derive(Debug, Clone, Copy)]
struct TokenInfo {
    obtained: Instant,
    /// `None`: never expires (root tokens, `ttl = 0`).
    ttl: Option<Duration>,
    renewable: bool,
}

impl TokenInfo {
    fn new(ttl_secs: u64, renewable: bool) -> Self {
        TokenInfo {
            obtained: Instant::now(),
            ttl: (ttl_secs > 0).then(|| Duration::from_secs(ttl_secs)),
            renewable,
        }
    }

    fn usable_at(&self, now: Instant) -> bool {
        match self.ttl {
            None => true,
            Some(ttl) => now + EXPIRY_MARGIN < self.obtained + ttl,
        }
    }

    /// When to renew (or log in again): two thirds into the TTL.
    fn refresh_at(&self) -> Option<Instant> {
        self.ttl.map(|ttl| self.obtained + ttl.mul_f64(2.0 / 3.0))
    }
}

struct Session {
    client: VaultClient,
    token: Option<TokenInfo>,
}

/// One configured backend.
struct Backend {
    cfg: BackendConfig,
    session: RwLock<Session>,
    /// `(mount, path)` → the secret's fields.
    cache: TtlCache<(String, String), Arc<HashMap<String, SecretValue>>>,
    /// Woken after every login, so the renewal task learns the new TTL.
    relogged: Notify,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl Backend {
    fn new(cfg: BackendConfig) -> Result<Self, ConfigError> {
        let mut settings = VaultClientSettingsBuilder::default();
        // Every setting explicit: the builder's defaults read VAULT_* variables.
        settings
            .address(&cfg.address)
            .token("")
            .verify(true)
            .identity(None)
            .timeout(Some(cfg.timeout))
            .namespace(cfg.namespace.clone())
            .ca_certs(Vec::new());
        if let Some(ca) = &cfg.ca_file {
            let key = format!("vault.{}.ca-file", cfg.name);
            let pem = std::fs::read_to_string(ca).map_err(|e| ConfigError::Read {
                what: "vault CA file",
                path: ca.clone(),
                reason: format!("{e} ({key})"),
            })?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(ConfigError::Read {
                    what: "vault CA file",
                    path: ca.clone(),
                    reason: format!("no PEM certificate in it ({key})"),
                });
            }
            settings.ca_certs(vec![ca.display().to_string()]);
        }
        let invalid = |reason: String| ConfigError::Invalid {
            source_name: format!("vault.{}", cfg.name),
            value: cfg.address.clone(),
            reason,
        };
        let settings = settings.build().map_err(|e| invalid(e.to_string()))?;
        let client =
            VaultClient::new(settings).map_err(|e| invalid(format!("cannot build the client: {e}")))?;
        Ok(Backend {
            cache: TtlCache::new(cfg.cache_ttl),
            cfg,
            session: RwLock::new(Session { client, token: None }),
            relogged: Notify::new(),
        })
    }

    async fn read(&self, r: &VaultRef) -> Result<SecretValue, Failure> {
        let key = (r.mount.clone(), r.path.clone());
        let fields = match self.cache.get(&key, Instant::now()) {
            Some(f) => f,
            None => {
                let f = Arc::new(self.fetch(&r.mount, &r.path).await?);
                self.cache.insert(key, Arc::clone(&f), Instant::now());
                f
            }
        };
        fields.get(&r.key).cloned().ok_or_else(|| {
            Failure::new(
                VaultFailure::NotFound,
                format!("the secret {}/{} has no key {:?}", r.mount, r.path, r.key),
            )
        })
    }

    async fn fetch(&self, mount: &str, path: &str) -> Result<HashMap<String, SecretValue>, Failure> {
        self.ensure_token().await?;
        match self.fetch_once(mount, path).await {
            Err(Failure { kind: VaultFailure::Denied, .. }) => {
                // The token may have been revoked or expired early: log in once more
                // (a refused token-file token is re-read) and retry; a second
                // refusal is the answer.
                debug!(vault.backend = %self.cfg.name, "Read refused; logging in again before retrying.");
                {
                    let mut s = self.session.write().await;
                    s.token = None;
                    self.login(&mut s).await?;
                }
                self.fetch_once(mount, path).await
            }
            other => other,
        }
    }

    async fn fetch_once(&self, mount: &str, path: &str) -> Result<HashMap<String, SecretValue>, Failure> {
        let version = self.cfg.kv_version_of(mount);
        let s = self.session.read().await;
        let data: Result<serde_json::Map<String, serde_json::Value>, ClientError> = match version {
            1 => vaultrs::kv1::get(&s.client, mount, path).await,
            _ => vaultrs::kv2::read(&s.client, mount, path).await,
        };
        let data = data.map_err(|e| {
            let mut f = classify_read(answer(&e), &self.cfg.address);
            if f.kind == VaultFailure::NotFound {
                f.detail = format!(
                    "no secret at {mount}/{path} (read as KV v{version}; set kv-version or kv-mounts \
                     in the delegate's vault.{} config if the mount is KV v{}): {}",
                    self.cfg.name,
                    3 - version,
                    f.detail
                );
            }
            f
        })?;
        Ok(data
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, SecretValue::new(text))
            })
            .collect())
    }

    /// Logs in unless the current token is still usable.
    async fn ensure_token(&self) -> Result<(), Failure> {
        let usable = |s: &Session| s.token.is_some_and(|t| t.usable_at(Instant::now()));
        if usable(&*self.session.read().await) {
            return Ok(());
        }
        let mut s = self.session.write().await;
        if usable(&s) {
            return Ok(());
        }
        self.login(&mut s).await
    }

    /// Obtains a fresh token with the configured method. Drops the cache first:
    /// nothing read with an earlier token outlives it.
    async fn login(&self, s: &mut Session) -> Result<(), Failure> {
        self.cache.clear();
        let address = &self.cfg.address;
        let method = self.cfg.auth.method();
        let credential = |what: &str, r: Result<String, String>| {
            r.map_err(|e| Failure::new(VaultFailure::LoginRefused, format!("{method} login: {what}: {e}")))
        };
        let info = match &self.cfg.auth {
            Auth::Token { token } => {
                let t = credential("cannot read the token", token.read())?;
                s.client.set_token(&t);
                let l = vaultrs::token::lookup_self(&s.client)
                    .await
                    .map_err(|e| classify_lookup(answer(&e), address))?;
                TokenInfo::new(l.ttl, l.renewable.unwrap_or(false))
            }
            Auth::AppRole { mount, role_id, secret_id } => {
                let role_id = credential("cannot read the role id", role_id.read())?;
                let secret_id = credential("cannot read the secret id", secret_id.read())?;
                s.client.set_token("");
                let a = vaultrs::auth::approle::login(&s.client, mount, &role_id, &secret_id)
                    .await
                    .map_err(|e| classify_login(answer(&e), address, method))?;
                s.client.set_token(&a.client_token);
                TokenInfo::new(a.lease_duration, a.renewable)
            }
            Auth::Kubernetes { mount, role, jwt_file } => {
                let jwt = credential(
                    "cannot read the service-account token",
                    config::Credential::File(jwt_file.clone()).read(),
                )?;
                s.client.set_token("");
                let a = vaultrs::auth::kubernetes::login(&s.client, mount, role, &jwt)
                    .await
                    .map_err(|e| classify_login(answer(&e), address, method))?;
                s.client.set_token(&a.client_token);
                TokenInfo::new(a.lease_duration, a.renewable)
            }
        };
        info!(
            vault.backend = %self.cfg.name,
            vault.auth = method,
            ttl_s = info.ttl.map_or(0, |t| t.as_secs()),
            renewable = info.renewable,
            "Logged in to the vault backend."
        );
        s.token = Some(info);
        self.relogged.notify_one();
        Ok(())
    }

    /// Keeps the token fresh: renews at two thirds of its TTL, logs in again
    /// when renewal is refused or not possible. Runs for the delegate's life.
    async fn renew_loop(self: Arc<Self>) {
        loop {
            let due = self.session.read().await.token.and_then(|t| t.refresh_at());
            match due {
                // No token yet, or one that never expires: wait for a login.
                None => self.relogged.notified().await,
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {
                            if let Err(f) = self.refresh().await {
                                warn!(vault.backend = %self.cfg.name, error = %f.detail, "Cannot refresh the vault token; retrying.");
                                tokio::time::sleep(RETRY_PAUSE).await;
                            }
                        }
                        () = self.relogged.notified() => {}
                    }
                }
            }
        }
    }

    async fn refresh(&self) -> Result<(), Failure> {
        let current = self.session.read().await.token;
        let Some(current) = current else { return Ok(()) };
        if current.renewable {
            let renewed = {
                let s = self.session.read().await;
                vaultrs::token::renew_self(&s.client, None).await
            };
            match renewed {
                Ok(a) if renewal_is_useful(current.ttl, a.lease_duration) => {
                    let mut s = self.session.write().await;
                    s.token = Some(TokenInfo::new(a.lease_duration, a.renewable));
                    debug!(vault.backend = %self.cfg.name, ttl_s = a.lease_duration, "Renewed the vault token.");
                    return Ok(());
                }
                Ok(_) => {
                    debug!(vault.backend = %self.cfg.name, "Token near its maximum TTL; logging in again.")
                }
                Err(e) => match classify_read(answer(&e), &self.cfg.address) {
                    f @ Failure { kind: VaultFailure::Unreachable, .. } => return Err(f),
                    f => {
                        debug!(vault.backend = %self.cfg.name, error = %f.detail, "Renewal refused; logging in again.")
                    }
                },
            }
        }
        let mut s = self.session.write().await;
        s.token = None;
        self.login(&mut s).await
    }
}

/// A renewal capped well below the token's TTL means the token is close to its
/// maximum TTL: a fresh login is better than renewing ever more often.
fn renewal_is_useful(previous: Option<Duration>, granted_secs: u64) -> bool {
    let granted = Duration::from_secs(granted_secs);
    match previous {
        _ if granted.is_zero() => false,
        None => true,
        Some(prev) => granted * 2 >= prev,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_renewals_lead_to_a_new_login() {
        let ttl = Some(Duration::from_secs(60));
        assert!(renewal_is_useful(ttl, 60));
        assert!(renewal_is_useful(ttl, 30));
        assert!(!renewal_is_useful(ttl, 29), "capped by the max TTL");
        assert!(!renewal_is_useful(ttl, 0));
        assert!(renewal_is_useful(Some(Duration::from_secs(6)), 6), "short TTLs renew too");
    }

    const A: &str = "http://127.0.0.1:8200";

    fn status(code: u16, errors: &[&str]) -> Answer {
        Answer::Status(code, errors.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn read_failures_are_classified() {
        let f = classify_read(status(403, &["permission denied"]), A);
        assert_eq!((f.kind, f.detail.as_str()), (VaultFailure::Denied, "HTTP 403: permission denied"));
        assert_eq!(classify_read(status(404, &[]), A).kind, VaultFailure::NotFound);
        assert_eq!(classify_read(Answer::Empty, A).kind, VaultFailure::NotFound);
        let f = classify_read(status(503, &["Vault is sealed"]), A);
        assert_eq!(f.kind, VaultFailure::Unreachable);
        assert!(f.detail.contains("sealed"), "{}", f.detail);
        let f = classify_read(Answer::Unreachable("connection refused".into()), A);
        assert_eq!(f.detail, "cannot reach http://127.0.0.1:8200: connection refused");
        assert_eq!(classify_read(status(500, &["boom"]), A).kind, VaultFailure::Other);
        assert_eq!(classify_read(Answer::Other("bad json".into()), A).kind, VaultFailure::Other);
    }

    #[test]
    fn login_and_lookup_failures_are_classified() {
        let f = classify_login(status(400, &["invalid role or secret ID"]), A, "approle");
        assert_eq!(f.kind, VaultFailure::LoginRefused);
        assert_eq!(f.detail, "approle login refused: HTTP 400: invalid role or secret ID");
        assert_eq!(classify_login(status(403, &[]), A, "kubernetes").kind, VaultFailure::LoginRefused);
        assert_eq!(
            classify_login(Answer::Unreachable("x".into()), A, "approle").kind,
            VaultFailure::Unreachable
        );
        let f = classify_lookup(status(403, &["permission denied"]), A);
        assert_eq!(f.kind, VaultFailure::Denied, "a revoked token is an authorization failure");
        assert!(f.detail.contains("revoked"), "{}", f.detail);
        assert_eq!(classify_lookup(status(400, &[]), A).kind, VaultFailure::LoginRefused);
    }

    #[test]
    fn client_errors_reduce_to_answers() {
        let e = ClientError::APIError { code: 404, errors: vec![] };
        assert_eq!(answer(&e), Answer::Status(404, vec![]));
        assert_eq!(answer(&ClientError::ResponseDataEmptyError), Answer::Empty);
        let e = ClientError::RestClientError {
            source: rustify::errors::ClientError::ServerResponseError { code: 403, content: None },
        };
        assert_eq!(answer(&e), Answer::Status(403, vec![]));
    }

    #[test]
    fn tokens_refresh_at_two_thirds_and_expire_with_a_margin() {
        let t = TokenInfo::new(30, true);
        assert_eq!(t.refresh_at(), Some(t.obtained + Duration::from_secs(20)));
        assert!(t.usable_at(t.obtained + Duration::from_secs(27)));
        assert!(!t.usable_at(t.obtained + Duration::from_secs(28)));
        let root = TokenInfo::new(0, false);
        assert_eq!(root.refresh_at(), None);
        assert!(root.usable_at(root.obtained + Duration::from_secs(1_000_000)));
    }

    #[tokio::test]
    async fn unknown_backends_are_named() {
        let b = VaultBackends::none();
        let r = VaultRef::parse("prod/kv/app#pw").unwrap();
        let e = b.check(&r).unwrap_err();
        assert_eq!(
            e.to_string(),
            "secret vault://prod/kv/app#pw: vault backend \"prod\" is not configured on this delegate (configured: none)"
        );
        assert_eq!(e.error_type(), dray_shared::error_type::ErrorType::Unknown);
    }

    #[tokio::test]
    async fn an_unreachable_backend_is_a_connectivity_failure() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = BackendConfig {
            name: "down".into(),
            address: format!("http://127.0.0.1:{port}"),
            namespace: None,
            ca_file: None,
            kv_version: 2,
            kv_mounts: BTreeMap::new(),
            cache_ttl: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            auth: Auth::AppRole {
                mount: "approle".into(),
                role_id: config::Credential::Inline("r".into()),
                secret_id: config::Credential::Inline("s".into()),
            },
        };
        let b = VaultBackends::start(vec![cfg]).unwrap();
        let e = b.read(&VaultRef::parse("down/kv/app#pw").unwrap()).await.unwrap_err();
        assert_eq!(e.error_type(), dray_shared::error_type::ErrorType::Connectivity, "{e}");
        assert!(
            e.to_string().starts_with("secret vault://down/kv/app#pw: cannot reach http://127.0.0.1:"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_ca_file_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "nope").unwrap();
        let cfg = BackendConfig {
            name: "p".into(),
            address: "https://v:8200".into(),
            namespace: None,
            ca_file: Some(ca),
            kv_version: 2,
            kv_mounts: BTreeMap::new(),
            cache_ttl: Duration::ZERO,
            timeout: Duration::from_secs(5),
            auth: Auth::Token { token: config::Credential::Env("T".into()) },
        };
        let e = Backend::new(cfg).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate in it (vault.p.ca-file)"), "{e}");
    }
}
