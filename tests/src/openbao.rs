//! A real OpenBao server for tests: `bao server -dev` (in memory, unsealed, root
//! token `root`) on a free loopback port, killed on drop, plus the few HTTP API
//! calls tests need to set it up (KV secrets, policies, tokens, AppRole).
//!
//! The HTTP client is a tiny HTTP/1.1 one over `TcpStream` (the plain dev server
//! speaks HTTP), so tests do not depend on the code under test. The TLS dev
//! server ([`OpenBao::start_tls`]) is driven through the `bao` CLI instead.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::{free_port, peers, wait_for};

/// The dev server's root token.
pub const ROOT_TOKEN: &str = "root";

/// A running OpenBao dev server.
pub struct OpenBao {
    /// Its HTTP port (it also holds `port + 1` for its cluster listener).
    pub port: u16,
    /// Holds its log and its `HOME` (the dev server stores a token helper file there).
    pub dir: tempfile::TempDir,
    tls: bool,
    child: Child,
}

impl OpenBao {
    /// Starts a plain-HTTP dev server and waits until `/v1/sys/health` answers 200.
    pub fn start() -> anyhow::Result<OpenBao> {
        Self::spawn(false)
    }

    /// Starts a dev server on HTTPS with a generated CA ([`OpenBao::ca_file`]);
    /// waits until `bao status` succeeds. Set it up with [`OpenBao::cli`].
    pub fn start_tls() -> anyhow::Result<OpenBao> {
        Self::spawn(true)
    }

    fn spawn(tls: bool) -> anyhow::Result<OpenBao> {
        peers::require();
        let bao = peers::bao();
        let dir = tempfile::tempdir()?;
        let port = free_port_pair();
        let log = std::fs::File::create(dir.path().join("bao.log"))?;
        let mut cmd = Command::new(&bao);
        cmd.args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-root-token-id={ROOT_TOKEN}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"));
        if tls {
            let certs = dir.path().join("tls");
            std::fs::create_dir(&certs)?;
            cmd.arg("-dev-tls").arg(format!("-dev-tls-cert-dir={}", certs.display()));
        }
        let child = cmd
            .env("HOME", dir.path())
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bao.display()))?;
        let mut b = OpenBao { port, dir, tls, child };
        wait_for("OpenBao to be healthy", Duration::from_secs(20), || {
            if let Ok(Some(status)) = b.child.try_wait() {
                return Some(Err(anyhow::anyhow!("bao exited with {status}:\n{}", b.log())));
            }
            let healthy = if b.tls {
                b.ca_file().is_some_and(|ca| ca.exists()) && b.cli(&["status"]).is_ok()
            } else {
                matches!(b.request("GET", "/v1/sys/health", None, None), Ok((200, _)))
            };
            healthy.then_some(Ok(()))
        })??;
        Ok(b)
    }

    /// `http://127.0.0.1:PORT`, or `https://` for a TLS server.
    pub fn address(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The generated CA certificate of a TLS server.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.path().join("tls/vault-ca.pem"))
    }

    /// Runs the `bao` CLI against this server as root; returns its stdout.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = Command::new(peers::bao());
        cmd.args(args)
            .env("HOME", self.dir.path())
            .env("BAO_ADDR", self.address())
            .env("BAO_TOKEN", ROOT_TOKEN)
            .stdin(Stdio::null());
        if let Some(ca) = self.ca_file() {
            cmd.env("BAO_CACERT", ca);
        }
        let out = cmd.output()?;
        if !out.status.success() {
            bail!("bao {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default()
    }

    /// One API call; returns the status and the JSON body (`null` when empty).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        if let Some(t) = token {
            req.push_str(&format!("X-Vault-Token: {t}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(req.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8(raw).context("response is not UTF-8")?;
        let (head, rest) = text.split_once("\r\n\r\n").context("no header end in response")?;
        let code: u16 = head.split_whitespace().nth(1).context("no status")?.parse()?;
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let payload = if chunked { dechunk(rest)? } else { rest.to_string() };
        let value = if payload.trim().is_empty() { Value::Null } else { serde_json::from_str(&payload)? };
        Ok((code, value))
    }

    /// A call with the root token that must succeed; returns the body.
    pub fn root(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let (code, v) = self.request(method, path, Some(ROOT_TOKEN), body.as_ref())?;
        if !(200..300).contains(&code) {
            bail!("{method} {path}: HTTP {code}: {v}");
        }
        Ok(v)
    }

    /// Writes a KV v2 secret (`mount` must be a KV v2 engine; the dev server's `secret/` is).
    pub fn kv2_put(&self, mount: &str, path: &str, data: Value) -> anyhow::Result<()> {
        self.root("POST", &format!("/v1/{mount}/data/{path}"), Some(json!({ "data": data }))).map(drop)
    }

    /// Mounts a KV v1 engine at `mount`.
    pub fn mount_kv1(&self, mount: &str) -> anyhow::Result<()> {
        let body = json!({"type": "kv", "options": {"version": "1"}});
        self.root("POST", &format!("/v1/sys/mounts/{mount}"), Some(body)).map(drop)
    }

    /// Writes a KV v1 secret.
    pub fn kv1_put(&self, mount: &str, path: &str, data: Value) -> anyhow::Result<()> {
        self.root("POST", &format!("/v1/{mount}/{path}"), Some(data)).map(drop)
    }

    /// Creates or replaces an ACL policy.
    pub fn put_policy(&self, name: &str, hcl: &str) -> anyhow::Result<()> {
        self.root("POST", &format!("/v1/sys/policies/acl/{name}"), Some(json!({ "policy": hcl }))).map(drop)
    }

    /// Creates a token with `policies` and `ttl` (e.g. "1h"); returns it.
    pub fn create_token(&self, policies: &[&str], ttl: &str) -> anyhow::Result<String> {
        let v = self.root(
            "POST",
            "/v1/auth/token/create",
            Some(json!({"policies": policies, "ttl": ttl, "no_default_policy": false})),
        )?;
        v["auth"]["client_token"].as_str().map(str::to_string).context("no client_token in answer")
    }

    /// Revokes a token (and its children).
    pub fn revoke_token(&self, token: &str) -> anyhow::Result<()> {
        self.root("POST", "/v1/auth/token/revoke", Some(json!({ "token": token }))).map(drop)
    }

    /// Enables AppRole at `approle/` and creates `role` with `policies`;
    /// returns `(role_id, secret_id)`.
    pub fn approle(&self, role: &str, policies: &[&str]) -> anyhow::Result<(String, String)> {
        self.approle_with_ttl(role, policies, "1h", "24h")
    }

    /// [`OpenBao::approle`] whose tokens live `ttl`, renewable up to `max_ttl`.
    pub fn approle_with_ttl(
        &self,
        role: &str,
        policies: &[&str],
        ttl: &str,
        max_ttl: &str,
    ) -> anyhow::Result<(String, String)> {
        let (code, v) = self.request("GET", "/v1/sys/auth", Some(ROOT_TOKEN), None)?;
        if code != 200 || v.get("approle/").is_none() {
            self.root("POST", "/v1/sys/auth/approle", Some(json!({"type": "approle"})))?;
        }
        self.root(
            "POST",
            &format!("/v1/auth/approle/role/{role}"),
            Some(json!({"token_policies": policies, "token_ttl": ttl, "token_max_ttl": max_ttl})),
        )?;
        let v = self.root("GET", &format!("/v1/auth/approle/role/{role}/role-id"), None)?;
        let role_id = v["data"]["role_id"].as_str().context("no role_id")?.to_string();
        let v = self.root("POST", &format!("/v1/auth/approle/role/{role}/secret-id"), None)?;
        let secret_id = v["data"]["secret_id"].as_str().context("no secret_id")?.to_string();
        Ok((role_id, secret_id))
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port whose successor is free too (the dev server binds both).
fn free_port_pair() -> u16 {
    loop {
        let p = free_port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// Decodes a chunked HTTP/1.1 body.
fn dechunk(mut s: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size_line, rest) = s.split_once("\r\n").context("bad chunk header")?;
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("short chunk")?);
        s = rest.get(size + 2..).context("no chunk end")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(dechunk("4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\n\r\n").unwrap(), "Wikipedia");
        assert!(dechunk("zz\r\n").is_err());
    }
}
