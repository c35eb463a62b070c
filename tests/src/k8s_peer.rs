//! The Kubernetes API emulator (`tests/peers/k8s_api_emulator.py`) as a test peer.
//!
//! [`K8sPeer::start`] runs it on a free loopback port with TLS (a fresh CA and
//! server certificate), requiring a bearer token, and writes a kubeconfig for
//! it (CA data + the token). The tests reach the same API through the
//! emulator's plain-HTTP control port, where they play the controller: mark
//! Deployments' `/status` ready or failing and create the Pods a ReplicaSet
//! would ([`K8sPeer::controller`]). Killed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::{free_port, peers, wait_for};

/// Start-up options.
#[derive(Debug, Clone, Default)]
pub struct K8sOpts {
    /// Namespaces where every write is answered 403 Forbidden.
    pub forbid_namespaces: Vec<String>,
    /// Leave the token out of the kubeconfig (the connector supplies it).
    pub kubeconfig_without_token: bool,
}

/// A running emulator.
pub struct K8sPeer {
    child: Child,
    dir: tempfile::TempDir,
    /// The TLS API port.
    pub port: u16,
    /// The plain-HTTP control port (tests only).
    pub control_port: u16,
    /// The bearer token the API requires.
    pub token: String,
    api_view: K8sApi,
}

impl std::ops::Deref for K8sPeer {
    type Target = K8sApi;

    fn deref(&self) -> &K8sApi {
        // The API view lives in the peer so `peer.get(..)` reads naturally.
        &self.api_view
    }
}

impl Drop for K8sPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.1 request to the control port; returns status and JSON body.
fn request(
    port: u16,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> anyhow::Result<(u16, Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).context("connect to the emulator")?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let code: u16 = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no status line")?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((code, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

impl K8sPeer {
    /// Starts the emulator and writes its kubeconfig.
    pub fn start(opts: K8sOpts) -> anyhow::Result<K8sPeer> {
        peers::require();
        let dir = tempfile::tempdir()?;
        let ca = dray_shared::pki::Authority::generate("k8s emulator CA")?;
        let server =
            ca.issue_server(&["127.0.0.1".to_string(), "localhost".to_string()], Duration::from_secs(86400))?;
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem)?;
        std::fs::write(dir.path().join("tls.crt"), &server.cert_pem)?;
        std::fs::write(dir.path().join("tls.key"), &server.key_pem)?;
        let (port, control_port) = (free_port(), free_port());
        let token = format!("dray-test-{}", uuid::Uuid::now_v7().simple());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/k8s_api_emulator.py");
        let mut cmd = Command::new(peers::python());
        cmd.arg(&script)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--control-port",
                &control_port.to_string(),
            ])
            .arg("--tls-cert")
            .arg(dir.path().join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.path().join("tls.key"))
            .args(["--token", &token]);
        for ns in &opts.forbid_namespaces {
            cmd.args(["--forbid-namespace", ns]);
        }
        let log = std::fs::File::create(dir.path().join("emulator.log"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start the k8s emulator")?;
        let peer = K8sPeer { child, dir, port, control_port, token, api_view: K8sApi { port: control_port } };
        wait_for("the k8s emulator", Duration::from_secs(30), || {
            request(control_port, "GET", "/api/v1/namespaces", "application/json", b"")
                .ok()
                .filter(|(c, _)| *c == 200)
        })
        .with_context(|| peer.log())?;
        peer.write_kubeconfig(!opts.kubeconfig_without_token)?;
        Ok(peer)
    }

    fn write_kubeconfig(&self, with_token: bool) -> anyhow::Result<()> {
        let ca = std::fs::read(self.dir.path().join("ca.pem"))?;
        let user = if with_token { json!({"token": self.token}) } else { json!({}) };
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {
                "server": format!("https://127.0.0.1:{}", self.port),
                "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca),
            }}],
            "users": [{"name": "dray", "user": user}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "dray", "namespace": "default"}}],
            "current-context": "emulator",
        });
        // JSON is YAML: kubeconfig readers take it as is.
        std::fs::write(self.kubeconfig(), serde_json::to_vec_pretty(&config)?)?;
        Ok(())
    }

    /// The API through the control port.
    pub fn api(&self) -> K8sApi {
        K8sApi { port: self.control_port }
    }

    /// The kubeconfig file.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The emulator's output.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("emulator.log")).unwrap_or_default()
    }

    /// Plays the Deployment controller until dropped: every 100 ms, each
    /// Deployment whose status is behind its generation is marked ready and
    /// gets its Pods, unless its first container's image ends in `:broken`
    /// (marked failed: `ProgressDeadlineExceeded`) or `:stuck` (left alone, so
    /// it never becomes ready); Pods of deleted Deployments are removed.
    pub fn controller(&self) -> Controller {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let api = self.api();
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                if let Err(e) = api.reconcile() {
                    eprintln!("k8s test controller: {e:#}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Controller { stop, handle: Some(handle) }
    }
}

/// The emulator's API through its plain-HTTP control port (the tests' door).
#[derive(Debug, Clone, Copy)]
pub struct K8sApi {
    port: u16,
}

impl K8sApi {
    /// GET `path`; `None` on 404.
    pub fn get(&self, path: &str) -> anyhow::Result<Option<Value>> {
        match request(self.port, "GET", path, "application/json", b"")? {
            (200, v) => Ok(Some(v)),
            (404, _) => Ok(None),
            (code, v) => bail!("GET {path}: HTTP {code}: {v}"),
        }
    }

    /// A Deployment, if it exists.
    pub fn deployment(&self, ns: &str, name: &str) -> anyhow::Result<Option<Value>> {
        self.get(&format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}"))
    }

    /// A Service, if it exists.
    pub fn service(&self, ns: &str, name: &str) -> anyhow::Result<Option<Value>> {
        self.get(&format!("/api/v1/namespaces/{ns}/services/{name}"))
    }

    /// A merge patch of `path`.
    pub fn merge_patch(&self, path: &str, patch: &Value) -> anyhow::Result<Value> {
        match request(self.port, "PATCH", path, "application/merge-patch+json", patch.to_string().as_bytes())?
        {
            (200, v) => Ok(v),
            (code, v) => bail!("PATCH {path}: HTTP {code}: {v}"),
        }
    }

    /// Creates an object at the collection `path`.
    pub fn create(&self, path: &str, obj: &Value) -> anyhow::Result<Value> {
        match request(self.port, "POST", path, "application/json", obj.to_string().as_bytes())? {
            (200 | 201, v) => Ok(v),
            (code, v) => bail!("POST {path}: HTTP {code}: {v}"),
        }
    }

    /// Deletes the object at `path` (absent is fine).
    pub fn delete(&self, path: &str) -> anyhow::Result<()> {
        match request(self.port, "DELETE", path, "application/json", b"")? {
            (200 | 202 | 404, _) => Ok(()),
            (code, v) => bail!("DELETE {path}: HTTP {code}: {v}"),
        }
    }

    /// Marks a Deployment's rollout done, as its controller would.
    pub fn mark_ready(&self, d: &Value) -> anyhow::Result<()> {
        let (ns, name) = (str_at(d, "/metadata/namespace"), str_at(d, "/metadata/name"));
        let n = d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
        let generation = d.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
        let status = json!({"status": {"observedGeneration": generation, "replicas": n, "updatedReplicas": n,
            "readyReplicas": n, "availableReplicas": n, "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                 "message": format!("ReplicaSet \"{name}\" has successfully progressed.")}]}});
        self.merge_patch(&format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}/status"), &status)
            .map(drop)
    }

    /// Marks a Deployment's rollout failed (`Progressing=False`,
    /// `ProgressDeadlineExceeded`), as its controller would.
    pub fn mark_failed(&self, d: &Value) -> anyhow::Result<()> {
        let (ns, name) = (str_at(d, "/metadata/namespace"), str_at(d, "/metadata/name"));
        let generation = d.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
        let status = json!({"status": {"observedGeneration": generation, "updatedReplicas": 1, "readyReplicas": 0,
            "availableReplicas": 0, "unavailableReplicas": 1, "conditions": [
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                 "message": format!("ReplicaSet \"{name}-7d4b9c\" has timed out progressing.")}]}});
        self.merge_patch(&format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}/status"), &status)
            .map(drop)
    }

    /// Makes the Pods of a Deployment match its spec: `spec.replicas` pods
    /// with the template's labels and containers, on `node-1`, Running.
    pub fn sync_pods(&self, d: &Value) -> anyhow::Result<()> {
        let (ns, name) = (str_at(d, "/metadata/namespace"), str_at(d, "/metadata/name"));
        let n = d.pointer("/spec/replicas").and_then(Value::as_u64).unwrap_or(1);
        let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let image = template.pointer("/spec/containers/0/image").and_then(Value::as_str).unwrap_or("");
        let hash =
            format!("{:x}", image.bytes().fold(5381u32, |h, b| h.wrapping_mul(33) ^ u32::from(b)) & 0xfffff);
        let want: Vec<String> = (0..n).map(|i| format!("{name}-{hash}-{i}")).collect();
        let pods =
            self.get(&format!("/api/v1/namespaces/{ns}/pods?labelSelector=dray-test%2Fowner%3D{name}"))?;
        for p in pods.as_ref().and_then(|p| p["items"].as_array()).into_iter().flatten() {
            let pod = str_at(p, "/metadata/name");
            if !want.iter().any(|w| w == pod) {
                self.delete(&format!("/api/v1/namespaces/{ns}/pods/{pod}"))?;
            }
        }
        for pod in &want {
            if self.get(&format!("/api/v1/namespaces/{ns}/pods/{pod}"))?.is_some() {
                continue;
            }
            let mut labels = template.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
            labels["dray-test/owner"] = json!(name);
            self.create(
                &format!("/api/v1/namespaces/{ns}/pods"),
                &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "labels": labels},
                        "spec": {"nodeName": "node-1", "containers": template.pointer("/spec/containers").cloned().unwrap_or(json!([]))},
                        "status": {"phase": "Running"}}),
            )?;
        }
        Ok(())
    }

    fn reconcile(&self) -> anyhow::Result<()> {
        let (code, list) = request(self.port, "GET", "/apis/apps/v1/deployments", "application/json", b"")?;
        if code != 200 {
            bail!("list deployments: HTTP {code}");
        }
        let mut alive = Vec::new();
        for d in list["items"].as_array().into_iter().flatten() {
            alive.push((
                str_at(d, "/metadata/namespace").to_string(),
                str_at(d, "/metadata/name").to_string(),
            ));
            let generation = d.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
            let observed = d.pointer("/status/observedGeneration").and_then(Value::as_i64).unwrap_or(0);
            let replicas = d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            let ready = d.pointer("/status/readyReplicas").and_then(Value::as_i64).unwrap_or(-1);
            let image =
                d.pointer("/spec/template/spec/containers/0/image").and_then(Value::as_str).unwrap_or("");
            let broken = image.ends_with(":broken");
            if image.ends_with(":stuck") || (observed >= generation && (ready == replicas || broken)) {
                continue;
            }
            if broken {
                self.mark_failed(d)?;
            } else {
                self.sync_pods(d)?;
                self.mark_ready(d)?;
            }
        }
        let pods = self.get("/api/v1/pods?labelSelector=dray-test%2Fowner")?.unwrap_or(Value::Null);
        for p in pods["items"].as_array().into_iter().flatten() {
            let (ns, owner) =
                (str_at(p, "/metadata/namespace"), str_at(p, "/metadata/labels/dray-test~1owner"));
            if !alive.iter().any(|(n, o)| n == ns && o == owner) {
                self.delete(&format!("/api/v1/namespaces/{ns}/pods/{}", str_at(p, "/metadata/name")))?;
            }
        }
        Ok(())
    }
}

/// The controller thread; stopped and joined on drop.
pub struct Controller {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}
