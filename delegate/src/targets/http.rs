//! The `http` target: makes one HTTP request and reports the response.
//!
//! - Secret references in the URL, header values and body are resolved through
//!   the run context, so their values are masked in the log lines and in the
//!   outputs (the runner masks every output value before it leaves).
//! - Any response is a success, whatever its status: judging the status is the
//!   caller's business (a pipeline step's assertion). Redirects are not followed;
//!   a 3xx is the response.
//! - Outputs: `httpResponseCode`, `httpResponseBody` (at most `max_body_bytes`,
//!   64 KiB by default, UTF-8 lossy) and `httpResponseHeaders` (a JSON object).
//! - Log lines: the request line and the status line.
//! - Error types: DNS, connect, TLS and broken connections are `Connectivity`;
//!   the run timeout is `Timeout`; anything else is `Unknown`.
//! - The client is hyper over rustls with the ring provider, trusting the
//!   system's root certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` override them).

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dray_shared::error_type::ErrorType;
use dray_shared::pb::{LogStream, TaskSpec};
use dray_shared::task::{self, HttpParams, TaskParams, http_output, kind};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tracing::{debug, warn};

use super::{CheckContext, Outcome, RunContext, Target};
use crate::link::error_chain;
use crate::proxy::{self, ProxyConnector};

/// Timeout when the spec says 0.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Idle pooled connections are closed after this long.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// The hyper client of the `http` target, also used by targets that download.
pub(crate) type HttpClient = Client<HttpsConnector<ProxyConnector>, Full<Bytes>>;

/// One client for the targets that download files (the `ssh` target's
/// and Lambda artifacts), built on first use; same TLS setup as `http` tasks.
pub(crate) fn shared_client() -> &'static HttpClient {
    static CLIENT: OnceLock<HttpClient> = OnceLock::new();
    CLIENT.get_or_init(build_client)
}

/// Runs `http` tasks. The client (and its connection pool) is built on first use.
#[derive(Default)]
pub struct Http {
    client: OnceLock<HttpClient>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http").field("client_ready", &self.client.get().is_some()).finish()
    }
}

fn http_params(spec: &TaskSpec) -> Result<HttpParams, String> {
    match task::parse_params(spec) {
        Ok(TaskParams::Http(p)) => Ok(p),
        Ok(_) => Err(format!("task kind {:?} is not an http task", spec.kind)),
        Err(e) => Err(e.to_string()),
    }
}

/// A client config on ring trusting the system roots. A delegate host without
/// any roots can still reach plain `http` URLs; `https` ones then fail with an
/// unknown-issuer error that names the problem.
fn tls_config() -> rustls::ClientConfig {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        warn!(error = %e, "Could not load some system root certificates for http tasks.");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        warn!("No system root certificates found; https requests of http tasks will fail.");
    }
    debug!(roots = added, ignored, "Loaded root certificates for http tasks.");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // Only fails for a provider without the default protocol versions, which ring has.
        .unwrap_or_else(|e| unreachable!("ring supports the default TLS versions: {e}"))
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The delegate's HTTP(S) client: rustls on ring, system roots, through the proxy.
fn build_client() -> HttpClient {
    // Direct or through the configured proxy; TLS is layered on top for https.
    let http = ProxyConnector::new();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE).build(https)
}

/// The request once every secret is resolved.
struct Prepared {
    request: http::Request<Full<Bytes>>,
    line: String,
}

/// Builds the request; a failure is the task's outcome.
async fn prepare(p: &HttpParams, cx: &mut RunContext) -> Result<Prepared, Outcome> {
    let secret = |e: crate::secrets::SecretError| Outcome::secret_failure(&e);
    let url = cx.substitute("url", &p.url).await.map_err(secret)?;
    // Secrets may make a valid template an invalid URL; the message is masked.
    let uri = task::check_url(&url)
        .map_err(|e| Outcome::failed(format!("invalid url once secrets are resolved: {e}")))?;
    let proxy_auth = proxy::global().absolute_form_authorization(&uri);
    let mut request = http::Request::builder().method(p.method.as_str()).uri(uri);
    if let Some(auth) = proxy_auth {
        request = request.header(http::header::PROXY_AUTHORIZATION, auth);
    }
    for (name, value) in &p.headers {
        let value = cx.substitute(&format!("headers.{name}"), value).await.map_err(secret)?;
        let value = http::HeaderValue::from_bytes(value.as_bytes()).map_err(|_| {
            Outcome::failed(format!(
                "header {name}: its value contains control characters once secrets are resolved"
            ))
        })?;
        request = request.header(name.as_str(), value);
    }
    let body = match &p.body {
        Some(b) => cx.substitute("body", b).await.map_err(secret)?,
        None => String::new(),
    };
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Outcome::failed(format!("invalid request: {e}")))?;
    Ok(Prepared { request, line: format!("{} {url}", p.method) })
}

/// A response as reported.
struct Response {
    status: http::StatusCode,
    headers: String,
    body: String,
    body_bytes: usize,
    truncated: bool,
}

/// Why a request produced no response.
enum Failure {
    /// The transport failed (DNS, connect, TLS, reset...).
    Transport(String),
    /// Anything else.
    Other(String),
}

async fn send(
    client: &HttpClient,
    request: http::Request<Full<Bytes>>,
    limit: usize,
) -> Result<Response, Failure> {
    let response = client.request(request).await.map_err(|e| {
        // The legacy client reports connector failures (DNS, TCP, TLS) as
        // connect errors and a broken exchange as a hyper error inside.
        if e.is_connect()
            || find_source::<hyper::Error>(&e).is_some()
            || find_source::<std::io::Error>(&e).is_some()
        {
            Failure::Transport(error_chain(&e))
        } else {
            Failure::Other(error_chain(&e))
        }
    })?;
    let (parts, mut body) = response.into_parts();
    let mut buf: Vec<u8> = Vec::new();
    let mut truncated = false;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| Failure::Transport(format!("reading the response body: {}", error_chain(&e))))?;
        if let Ok(data) = frame.into_data() {
            let room = limit - buf.len();
            if data.len() > room {
                buf.extend_from_slice(&data[..room]);
                // Stop reading: the rest is not wanted; dropping the body closes the connection.
                truncated = true;
                break;
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Response {
        status: parts.status,
        headers: headers_json(&parts.headers),
        body_bytes: buf.len(),
        body: utf8_prefix(&buf),
        truncated,
    })
}

/// Headers as a JSON object; repeated headers are joined with ", " (RFC 9110
/// list syntax), values are UTF-8 lossy.
fn headers_json(headers: &http::HeaderMap) -> String {
    let mut map: BTreeMap<&str, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        map.entry(name.as_str())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
}

/// `bytes` as text; a multi-byte character cut by truncation is dropped rather
/// than shown as a replacement character.
fn utf8_prefix(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(e) if e.error_len().is_none() => String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

fn find_source<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

#[async_trait::async_trait]
impl Target for Http {
    fn kinds(&self) -> &'static [&'static str] {
        &[kind::HTTP]
    }

    async fn check(&self, spec: &TaskSpec, cx: &CheckContext) -> Result<(), String> {
        let p = http_params(spec)?;
        cx.secrets.check_text("url", &p.url).await.map_err(|e| e.to_string())?;
        for (name, value) in &p.headers {
            cx.secrets.check_text(&format!("headers.{name}"), value).await.map_err(|e| e.to_string())?;
        }
        if let Some(body) = &p.body {
            cx.secrets.check_text("body", body).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn run(&self, spec: TaskSpec, mut cx: RunContext) -> Outcome {
        let p = match http_params(&spec) {
            Ok(p) => p,
            Err(e) => return Outcome::failed(e),
        };
        let timeout = match spec.timeout_ms {
            0 => DEFAULT_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        let Prepared { request, line } = match prepare(&p, &mut cx).await {
            Ok(r) => r,
            Err(failed) => return failed,
        };
        cx.logs.line(LogStream::Stdout, &line);
        cx.logs.flush().await;
        let client = self.client.get_or_init(build_client);
        let mut stop = cx.stop.clone();
        let result = tokio::select! {
            reason = stop.stopped() => return Outcome::stopped(reason),
            r = tokio::time::timeout(timeout, send(client, request, p.body_limit())) => r,
        };
        let outcome = match result {
            Err(_) => Outcome::failed_as(
                ErrorType::Timeout,
                format!("timed out after {}", humantime::format_duration(timeout)),
            ),
            Ok(Err(Failure::Transport(e))) => Outcome::failed_as(ErrorType::Connectivity, e),
            Ok(Err(Failure::Other(e))) => Outcome::failed(e),
            Ok(Ok(r)) => {
                let reason = r.status.canonical_reason().map(|s| format!(" {s}")).unwrap_or_default();
                let size = if r.truncated {
                    format!("body truncated to {} bytes", r.body_bytes)
                } else {
                    format!("{} body bytes", r.body_bytes)
                };
                cx.logs.line(LogStream::Stdout, &format!("HTTP {}{reason} ({size})", r.status.as_u16()));
                Outcome::succeeded().with_outputs(BTreeMap::from([
                    (http_output::CODE.to_string(), r.status.as_u16().to_string()),
                    (http_output::BODY.to_string(), r.body),
                    (http_output::HEADERS.to_string(), r.headers),
                ]))
            }
        };
        if !outcome.success {
            cx.logs.line(LogStream::Stdout, &format!("request failed: {}", outcome.message));
        }
        cx.logs.flush().await;
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::mask::MASK;
    use crate::targets::StopReason;
    use crate::targets::testing::{context, lines};
    use axum::Router;
    use axum::extract::Path;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::routing::{any, get};
    use serde_json::{Value, json};

    /// Echoes the request as JSON.
    async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: String) -> axum::Json<Value> {
        let headers: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned())))
            .collect();
        axum::Json(
            json!({ "method": method.as_str(), "uri": uri.to_string(), "headers": headers, "body": body }),
        )
    }

    async fn status(Path(code): Path<u16>) -> (StatusCode, HeaderMap, &'static str) {
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT);
        let mut headers = HeaderMap::new();
        headers.append("x-reply", "one".parse().unwrap());
        headers.append("x-reply", "two".parse().unwrap());
        (code, headers, "nope")
    }

    /// A local server; returns its base URL.
    async fn server() -> String {
        let app = Router::new()
            .route("/echo", any(echo))
            .route("/status/{code}", get(status))
            .route("/accents", get(|| async { "é".repeat(10) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    /// A server that accepts connections and never answers.
    async fn silent_server() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        format!("http://{addr}")
    }

    fn spec(params: Value, timeout_ms: u64) -> TaskSpec {
        TaskSpec {
            kind: kind::HTTP.into(),
            params_json: params.to_string(),
            timeout_ms,
            ..Default::default()
        }
    }

    fn stdout(outbox: &crate::link::stream::Outbox) -> Vec<String> {
        lines(outbox).into_iter().filter(|(s, _)| *s == LogStream::Stdout).map(|(_, t)| t).collect()
    }

    #[tokio::test]
    async fn requests_carry_method_headers_and_body_with_secrets_resolved_and_masked() {
        let base = server().await;
        let (cx, outbox, _h) = context(&[("TOKEN", "s3cr\"et"), ("Q", "q-s3cret")]);
        let masker = cx.masker();
        let params = json!({
            "method": "post",
            "url": format!("{base}/echo?q=<+secrets.getValue(\"env:Q\")>x"),
            "headers": {"X-Token": "Bearer <+secrets.getValue(\"env:TOKEN\")>", "Content-Type": "application/json"},
            "body": "{\"k\":\"v\"}",
        });
        let mut o = Http::default().run(spec(params, 10_000), cx).await;
        assert!(o.success, "{o:?}");
        assert_eq!(o.error_type, None);
        let echoed: Value = serde_json::from_str(&o.outputs[http_output::BODY]).unwrap();
        assert_eq!(echoed["method"], "POST");
        assert_eq!(echoed["headers"]["x-token"], "Bearer s3cr\"et", "the real value was sent");
        assert_eq!(echoed["headers"]["content-type"], "application/json");
        assert_eq!(echoed["body"], "{\"k\":\"v\"}");
        assert_eq!(o.outputs[http_output::CODE], "200");
        let headers: Value = serde_json::from_str(&o.outputs[http_output::HEADERS]).unwrap();
        assert_eq!(headers["content-type"], "application/json");

        // The runner masks outputs before they leave: the JSON-escaped value too.
        o.mask(&masker);
        let body = &o.outputs[http_output::BODY];
        assert!(!body.contains("s3cr"), "{body}");
        assert!(body.contains(&format!("\"x-token\":\"Bearer {MASK}\"")), "{body}");
        let out = stdout(&outbox);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(echoed["uri"], "/echo?q=q-s3cretx");
        assert!(!out[0].contains("s3cr"), "request line is masked: {out:?}");
        assert!(out[0].starts_with(&format!("POST {base}/echo?q=")), "{out:?}");
        assert!(out[1].starts_with("HTTP 200 OK ("), "{out:?}");
    }

    #[tokio::test]
    async fn any_status_is_a_response_and_repeated_headers_are_joined() {
        let base = server().await;
        let (cx, outbox, _h) = context(&[]);
        let o = Http::default().run(spec(json!({"url": format!("{base}/status/503")}), 10_000), cx).await;
        assert!(o.success, "a 503 is still a response: {o:?}");
        assert_eq!(o.outputs[http_output::CODE], "503");
        assert_eq!(o.outputs[http_output::BODY], "nope");
        let headers: Value = serde_json::from_str(&o.outputs[http_output::HEADERS]).unwrap();
        assert_eq!(headers["x-reply"], "one, two");
        assert_eq!(stdout(&outbox)[1], "HTTP 503 Service Unavailable (4 body bytes)");
    }

    #[tokio::test]
    async fn long_bodies_are_cut_on_a_character_boundary() {
        let base = server().await;
        let (cx, outbox, _h) = context(&[]);
        let params = json!({"url": format!("{base}/accents"), "max_body_bytes": 5});
        let o = Http::default().run(spec(params, 10_000), cx).await;
        assert_eq!(o.outputs[http_output::BODY], "éé", "5 bytes keep two whole characters");
        assert_eq!(stdout(&outbox)[1], "HTTP 200 OK (body truncated to 5 bytes)");
    }

    #[tokio::test]
    async fn refused_connections_and_tls_failures_are_connectivity_errors() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (cx, outbox, _h) = context(&[]);
        let o =
            Http::default().run(spec(json!({"url": format!("http://127.0.0.1:{port}/")}), 10_000), cx).await;
        assert_eq!((o.success, o.error_type), (false, Some(ErrorType::Connectivity)), "{o:?}");
        assert!(o.message.to_lowercase().contains("connection refused"), "{o:?}");
        assert!(stdout(&outbox).last().is_some_and(|l| l.starts_with("request failed: ")));

        // TLS spoken to a plain HTTP server.
        let base = server().await.replace("http://", "https://");
        let (cx, _, _h) = context(&[]);
        let o = Http::default().run(spec(json!({"url": format!("{base}/echo")}), 10_000), cx).await;
        assert_eq!((o.success, o.error_type), (false, Some(ErrorType::Connectivity)), "{o:?}");
    }

    #[tokio::test]
    async fn no_answer_in_time_is_a_timeout_and_cancel_stops_waiting() {
        let base = silent_server().await;
        let (cx, _, _h) = context(&[]);
        let o = Http::default().run(spec(json!({"url": format!("{base}/")}), 300), cx).await;
        assert_eq!(o, Outcome::failed_as(ErrorType::Timeout, "timed out after 300ms"));

        let (cx, _, handle) = context(&[]);
        let run =
            tokio::spawn(async move { Http::default().run(spec(json!({"url": base}), 600_000), cx).await });
        handle.stop(StopReason::Cancelled);
        let o = tokio::time::timeout(Duration::from_secs(10), run).await.unwrap().unwrap();
        assert_eq!(o, Outcome::stopped(StopReason::Cancelled));
    }

    #[tokio::test]
    async fn check_and_run_report_unusable_secrets_by_reference() {
        let (cx, outbox, _h) = context(&[]);
        let ccx = CheckContext { key: cx.key, secrets: Arc::clone(&cx.secrets) };
        let params = json!({"url": "http://h/", "headers": {"A": "<+secrets.getValue(\"env:NOPE\")>"}});
        assert_eq!(
            Http::default().check(&spec(params.clone(), 0), &ccx).await,
            Err("secret env:NOPE is not set on this delegate".into())
        );
        assert!(Http::default().check(&spec(json!({"url": "ftp://h/"}), 0), &ccx).await.is_err());
        let o = Http::default().run(spec(params, 0), cx).await;
        assert_eq!(o, Outcome::failed_as(ErrorType::NotFound, "secret env:NOPE is not set on this delegate"));
        assert!(lines(&outbox).is_empty(), "nothing was sent");

        let (cx, _, _h) = context(&[("NL", "a\nb")]);
        let params = json!({"url": "http://h/", "headers": {"A": "<+secrets.getValue(\"env:NL\")>"}});
        let o = Http::default().run(spec(params, 0), cx).await;
        assert_eq!(o.message, "header A: its value contains control characters once secrets are resolved");

        // A value that makes the URL invalid: refused, and the message (which
        // quotes the URL) is masked like everything else that leaves.
        let (cx, _, _h) = context(&[("SP", "two words")]);
        let masker = cx.masker();
        let params = json!({"url": "http://h/?q=<+secrets.getValue(\"env:SP\")>"});
        let mut o = Http::default().run(spec(params, 0), cx).await;
        o.mask(&masker);
        assert!(o.message.starts_with("invalid url once secrets are resolved: "), "{o:?}");
        assert!(!o.message.contains("two words") && o.message.contains(MASK), "{o:?}");
    }
}
