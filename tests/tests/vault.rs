//! `vault://` secrets end to end: the real `dray` and `dray-delegate` against a
//! real OpenBao dev server. A pipeline's ShellScript steps read a database
//! password from KV v2 (token auth), a user from KV v2 and a password from a
//! KV v1 mount (AppRole auth); the values are used (written to files the test
//! reads) and printed raw and base64-encoded, yet masked in every log line and
//! absent from the manager's SQLite files and its log. A revoked token fails
//! its step with `Authorization` and a missing path or key with `NotFound`,
//! each caught by a failure strategy matching exactly that type; refused AppRole
//! and Kubernetes logins are `Authentication`; short-lived tokens are renewed
//! and AppRole logs in again at its max TTL; HTTPS with a CA file.
//!
//! Kubernetes auth is only shown refusing a login: a successful one needs a
//! Kubernetes API answering TokenReview, which no peer here provides.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use dray_tests::openbao::OpenBao;
use dray_tests::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
const MASK: &str = "**************";

/// Reads allowed on both KV mounts, nothing else.
const READER: &str = r#"
path "secret/data/*" { capabilities = ["read"] }
path "legacy/*" { capabilities = ["read"] }
"#;

fn random(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::now_v7().simple().to_string()[16..])
}

fn step(id: &str, script: &str, strategies: &str) -> String {
    let script: String = script.lines().map(|l| format!("                          {l}\n")).collect();
    format!(
        r#"
              - step:
                  name: {id}
                  identifier: {id}
                  type: ShellScript
{strategies}                  spec:
                    shell: Bash
                    source:
                      type: Inline
                      spec:
                        script: |
{script}"#
    )
}

/// Ignore failures of exactly `error_type`; anything else fails the step (and the stage).
fn only(error_type: &str) -> String {
    format!(
        r#"                  failureStrategies:
                    - onFailure:
                        errors: [{error_type}]
                        action:
                          type: Ignore
                    - onFailure:
                        errors: [AllErrors]
                        action:
                          type: MarkAsFailure
"#
    )
}

fn pipeline(out: &Path) -> String {
    let out = out.display();
    let steps = [
        step(
            "kv2_token",
            &format!(
                r#"pw='<+secrets.getValue("vault://main/secret/db#password")>'
printf '%s' "$pw" > {out}/kv2.txt
echo "connecting with password $pw"
printf '%s' "$pw" | base64
echo "$pw" | base64
printf '%s' "$pw" | base64 | tr '+/' '-_' | tr -d '='
urlenc() {{ local s="$1" i c; for ((i = 0; i < ${{#s}}; i++)); do c=${{s:i:1}}; case "$c" in [a-zA-Z0-9.~_-]) printf '%s' "$c" ;; *) printf '%%%02X' "'$c" ;; esac; done; }}
echo "url: postgres://app:$(urlenc "$pw")@db/app""#
            ),
            "",
        ),
        step(
            "approle",
            &format!(
                r#"printf '%s' '<+secrets.getValue("vault://ar/secret/db#user")>' > {out}/user.txt
printf '%s' '<+secrets.getValue("vault://ar/legacy/db#password")>' > {out}/kv1.txt
echo "user <+secrets.getValue("vault://ar/secret/db#user")>, legacy <+secrets.getValue("vault://ar/legacy/db#password")>""#
            ),
            "",
        ),
        step(
            "revoked",
            r#"echo "never runs: <+secrets.getValue("vault://revoked/secret/db#password")>""#,
            &only("Authorization"),
        ),
        step(
            "missing_path",
            r#"echo "<+secrets.getValue("vault://main/secret/nope#password")>""#,
            &only("NotFound"),
        ),
        step(
            "missing_key",
            r#"echo "<+secrets.getValue("vault://main/secret/db#nokey")>""#,
            &only("NotFound"),
        ),
        step("after", &format!("echo done > {out}/after.txt"), ""),
    ];
    format!(
        r#"pipeline:
  name: Vault secrets
  identifier: vault_secrets
  stages:
    - stage:
        name: Deploy
        identifier: deploy
        type: Custom
        spec:
          execution:
            steps:{}
"#,
        steps.concat()
    )
}

fn delegate_config(bao: &OpenBao, dir: &Path) -> String {
    let a = bao.address();
    let d = dir.display();
    format!(
        r#"
[vault.main]
address = "{a}"
kv-mounts = {{ legacy = 1 }}
auth = {{ method = "token", token-file = "{d}/main.token" }}

[vault.ar]
address = "{a}"
kv-mounts = {{ legacy = 1 }}
cache-ttl = "0s"
[vault.ar.auth]
method = "approle"
role-id-file = "{d}/role-id"
secret-id-env = "TEST_VAULT_SECRET_ID"

[vault.revoked]
address = "{a}"
auth = {{ method = "token", token-file = "{d}/revoked.token" }}
"#
    )
}

/// Percent-encoding with RFC 3986 unreserved characters kept (what the step's `urlenc` does).
fn url_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn status<'a>(e: &'a Value, path: &str) -> &'a str {
    node(e, path)["status"].as_str().unwrap_or_default()
}

#[test]
fn vault_secrets_are_read_used_masked_and_classified() -> anyhow::Result<()> {
    let bao = OpenBao::start()?;
    let password = format!("{}+/?&=", random("Pg-pa55"));
    let legacy = random("legacy-pw");
    let user = random("app-user");
    bao.kv2_put("secret", "db", json!({"password": password, "user": user}))?;
    bao.mount_kv1("legacy")?;
    bao.kv1_put("legacy", "db", json!({"password": legacy}))?;
    bao.put_policy("reader", READER)?;
    let (role_id, secret_id) = bao.approle("dray", &["reader"])?;

    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("main.token"), format!("{}\n", bao.create_token(&["reader"], "1h")?))?;
    std::fs::write(dir.path().join("role-id"), &role_id)?;
    let revoked = bao.create_token(&["reader"], "1h")?;
    std::fs::write(dir.path().join("revoked.token"), &revoked)?;
    bao.revoke_token(&revoked)?;
    let config = dir.path().join("delegate.toml");
    std::fs::write(&config, delegate_config(&bao, dir.path()))?;

    let m = Manager::start(StoreKind::Sqlite)?;
    let opts = DelegateOpts {
        env: vec![
            ("DRAY_CONFIG".into(), config.display().to_string()),
            ("TEST_VAULT_SECRET_ID".into(), secret_id.clone()),
        ],
        ..Default::default()
    };
    let d = Delegate::enrol(&m, "vault", opts)?;

    let out = tempfile::tempdir()?;
    let yaml = dir.path().join("pipeline.yaml");
    std::fs::write(&yaml, pipeline(out.path()))?;
    m.apply(&yaml)?;
    let id = m.run_pipeline("vault_secrets", &[])?;
    let e = m.wait_execution(&id, &["Succeeded", "Failed", "Aborted", "IgnoreFailed"], T)?;

    // The values were resolved and used (token auth on KV v2; AppRole on KV v2 and v1).
    assert_eq!(status(&e, "deploy.kv2_token"), "Succeeded", "{e:#}");
    assert_eq!(std::fs::read_to_string(out.path().join("kv2.txt"))?, password);
    assert_eq!(status(&e, "deploy.approle"), "Succeeded", "{e:#}");
    assert_eq!(std::fs::read_to_string(out.path().join("user.txt"))?, user);
    assert_eq!(std::fs::read_to_string(out.path().join("kv1.txt"))?, legacy);

    // Each failure carries its type, and the strategy for exactly that type acted
    // (Ignore; any other type would have hit MarkAsFailure and stopped the stage).
    for (path, want) in [
        ("deploy.revoked", "Authorization"),
        ("deploy.missing_path", "NotFound"),
        ("deploy.missing_key", "NotFound"),
    ] {
        let n = node(&e, path);
        assert_eq!(n["status"], "IgnoreFailed", "{path}: {n:#}");
        assert_eq!(n["failureType"], want, "{path}: {n:#}");
    }
    let why = |p: &str| node(&e, p).to_string();
    assert!(
        why("deploy.revoked").contains("vault://revoked/secret/db#password"),
        "{}",
        why("deploy.revoked")
    );
    assert!(why("deploy.missing_path").contains("vault://main/secret/nope#password"));
    assert!(why("deploy.missing_key").contains("has no key \\\"nokey\\\""), "{}", why("deploy.missing_key"));
    assert_eq!(status(&e, "deploy.after"), "Succeeded");
    assert_eq!(std::fs::read_to_string(out.path().join("after.txt"))?, "done\n");

    // Masked in every log line: the value, its base64 forms, its URL-encoded form.
    let log = m.step_logs(&id, "deploy.kv2_token")?;
    assert!(log.contains(&format!("connecting with password {MASK}")), "{log}");
    assert!(log.matches(MASK).count() >= 4, "value and every encoding masked: {log}");
    assert!(log.contains(&format!("url: postgres://app:{MASK}@db/app")), "{log}");
    let encoded = [
        STANDARD.encode(&password),
        STANDARD.encode(format!("{password}\n")),
        URL_SAFE_NO_PAD.encode(&password),
        url_encoded(&password),
    ];
    let log2 = m.step_logs(&id, "deploy.approle")?;
    assert!(log2.contains(&format!("user {MASK}, legacy {MASK}")), "{log2}");
    let all_logs = m.cli_ok(&["logs", &id])?;
    let manager_log = m.log();
    let store = String::from_utf8_lossy(&store_dump(&m)?).into_owned();
    for secret in [password.as_str(), &legacy, &user, &secret_id, &role_id]
        .into_iter()
        .chain(encoded.iter().map(String::as_str))
    {
        for (what, text) in [("logs", &all_logs), ("manager log", &manager_log), ("store", &store)] {
            assert!(!text.contains(secret), "{secret:?} found in the {what}");
        }
    }
    // The delegate's own log names backends and references, never values.
    let dlog = d.log();
    assert!(dlog.contains("Logged in to the vault backend"), "{dlog}");
    for secret in [password.as_str(), &legacy, &user, &secret_id] {
        assert!(!dlog.contains(secret), "{secret:?} found in the delegate log");
    }
    Ok(())
}

#[test]
fn malformed_vault_references_are_refused_at_apply() -> anyhow::Result<()> {
    let m = Manager::start(StoreKind::Sqlite)?;
    let dir = tempfile::tempdir()?;
    let yaml = dir.path().join("bad.yaml");
    let body = step("bad", r#"echo '<+secrets.getValue("vault://main/secret/db")>'"#, "");
    std::fs::write(
        &yaml,
        format!(
            "pipeline:\n  name: Bad\n  identifier: bad\n  stages:\n    - stage:\n        name: S\n        identifier: s\n        type: Custom\n        spec:\n          execution:\n            steps:{body}"
        ),
    )?;
    let out = m.cli(&["apply", "-f", &yaml.display().to_string()]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no #key"), "{err}");
    assert!(err.contains("script"), "names the field: {err}");
    assert!(m.cli(&["describe", "pipeline", "bad"]).status.code() != Some(0), "nothing was stored");
    Ok(())
}

#[test]
fn refused_logins_are_authentication_failures() -> anyhow::Result<()> {
    let bao = OpenBao::start()?;
    bao.kv2_put("secret", "db", json!({"password": "x"}))?;
    bao.put_policy("reader", READER)?;
    let (role_id, _) = bao.approle("dray", &["reader"])?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("role-id"), &role_id)?;
    std::fs::write(dir.path().join("secret-id"), "not-the-secret-id")?;
    let config = dir.path().join("delegate.toml");
    std::fs::write(
        &config,
        format!(
            "[vault.ar]\naddress = \"{}\"\nauth = {{ method = \"approle\", role-id-file = \"{d}/role-id\", secret-id-file = \"{d}/secret-id\" }}\n",
            bao.address(),
            d = dir.path().display()
        ),
    )?;
    let m = Manager::start(StoreKind::Sqlite)?;
    // Kubernetes auth whose API server (for TokenReview) is not there: the login
    // is refused whatever the JWT says.
    bao.root("POST", "/v1/sys/auth/kubernetes", Some(json!({"type": "kubernetes"})))?;
    let dead = format!("http://127.0.0.1:{}", free_port());
    bao.root(
        "POST",
        "/v1/auth/kubernetes/config",
        Some(json!({
            "kubernetes_host": dead,
            "disable_local_ca_jwt": true,
            // Any CA will do (nothing answers there); the manager's is at hand.
            "kubernetes_ca_cert": std::fs::read_to_string(m.ca_file())?,
        })),
    )?;
    bao.root(
        "POST",
        "/v1/auth/kubernetes/role/dray",
        Some(json!({
            "bound_service_account_names": ["dray"],
            "bound_service_account_namespaces": ["ci"],
            "token_policies": ["reader"],
        })),
    )?;
    let claims = json!({
        "iss": "kubernetes/serviceaccount",
        "sub": "system:serviceaccount:ci:dray",
        "kubernetes.io/serviceaccount/namespace": "ci",
        "kubernetes.io/serviceaccount/service-account.name": "dray",
    });
    let jwt = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode("not-a-signature")
    );
    std::fs::write(dir.path().join("sa-token"), jwt)?;
    let mut text = std::fs::read_to_string(&config)?;
    text.push_str(&format!(
        "[vault.k8s]\naddress = \"{}\"\nauth = {{ method = \"kubernetes\", role = \"dray\", jwt-file = \"{}/sa-token\" }}\n",
        bao.address(),
        dir.path().display()
    ));
    std::fs::write(&config, text)?;

    let opts = DelegateOpts {
        env: vec![("DRAY_CONFIG".into(), config.display().to_string())],
        ..Default::default()
    };
    let _d = Delegate::enrol(&m, "vault", opts)?;
    for (backend, says) in [("ar", "approle login refused"), ("k8s", "kubernetes login refused")] {
        let id =
            m.run_task(&format!(r#"echo <+secrets.getValue("vault://{backend}/secret/db#password")>"#), &[])?;
        let t = m.wait_state(&id, &["failed", "succeeded"], T)?;
        assert_eq!(t["state"], "failed", "{t:#}");
        assert_eq!(t["error_type"], "Authentication", "{t:#}");
        assert!(t.to_string().contains(says), "{t:#}");
    }
    Ok(())
}

#[test]
fn short_lived_tokens_are_renewed_before_they_expire() -> anyhow::Result<()> {
    let bao = OpenBao::start()?;
    bao.kv2_put("secret", "db", json!({"password": "renewed-pw-value"}))?;
    bao.put_policy("reader", READER)?;
    let dir = tempfile::tempdir()?;
    // 6 s: without renewal it is gone before the second read below.
    std::fs::write(dir.path().join("t"), bao.create_token(&["reader"], "6s")?)?;
    let config = dir.path().join("delegate.toml");
    std::fs::write(
        &config,
        format!(
            "[vault.short]\naddress = \"{}\"\ncache-ttl = \"0s\"\nauth = {{ method = \"token\", token-file = \"{}/t\" }}\n",
            bao.address(),
            dir.path().display()
        ),
    )?;
    let m = Manager::start(StoreKind::Sqlite)?;
    let opts = DelegateOpts {
        env: vec![("DRAY_CONFIG".into(), config.display().to_string())],
        ..Default::default()
    };
    let d = Delegate::enrol(&m, "vault", opts)?;
    let script = r#"test "<+secrets.getValue("vault://short/secret/db#password")>" = renewed-pw-value"#;
    let first = m.run_task(script, &[])?;
    assert_eq!(m.wait_state(&first, &["failed", "succeeded"], T)?["state"], "succeeded");
    // Renewed at two thirds of each TTL: twice within ~9 s.
    wait_for("two renewals", Duration::from_secs(20), || {
        (d.log().matches("Renewed the vault token").count() >= 2).then_some(())
    })
    .with_context(|| d.log())?;
    let second = m.run_task(script, &[])?;
    let t = m.wait_state(&second, &["failed", "succeeded"], T)?;
    assert_eq!(t["state"], "succeeded", "read with the renewed token: {t:#}");
    assert_eq!(d.log().matches("Logged in to the vault backend").count(), 1, "no second login was needed");
    Ok(())
}

#[test]
fn approle_logs_in_again_when_its_token_reaches_its_max_ttl() -> anyhow::Result<()> {
    let bao = OpenBao::start()?;
    bao.kv2_put("secret", "db", json!({"password": "relogin-pw-value"}))?;
    bao.put_policy("reader", READER)?;
    // Renewable once (at 4 s, to the 8 s cap); the next renewal would be capped
    // to about a second, so the delegate logs in again instead.
    let (role_id, secret_id) = bao.approle_with_ttl("short", &["reader"], "6s", "8s")?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("delegate.toml");
    std::fs::write(
        &config,
        format!(
            "[vault.ar]\naddress = \"{}\"\ncache-ttl = \"0s\"\nauth = {{ method = \"approle\", role-id = \"{role_id}\", secret-id-env = \"TEST_VAULT_SECRET_ID\" }}\n",
            bao.address()
        ),
    )?;
    let m = Manager::start(StoreKind::Sqlite)?;
    let opts = DelegateOpts {
        env: vec![
            ("DRAY_CONFIG".into(), config.display().to_string()),
            ("TEST_VAULT_SECRET_ID".into(), secret_id),
        ],
        ..Default::default()
    };
    let d = Delegate::enrol(&m, "vault", opts)?;
    let script = r#"test "<+secrets.getValue("vault://ar/secret/db#password")>" = relogin-pw-value"#;
    let first = m.run_task(script, &[])?;
    assert_eq!(m.wait_state(&first, &["failed", "succeeded"], T)?["state"], "succeeded");
    wait_for("a renewal, then a second login", Duration::from_secs(20), || {
        let log = d.log();
        (log.contains("Renewed the vault token")
            && log.matches("Logged in to the vault backend").count() >= 2)
            .then_some(())
    })
    .with_context(|| d.log())?;
    let second = m.run_task(script, &[])?;
    let t = m.wait_state(&second, &["failed", "succeeded"], T)?;
    assert_eq!(t["state"], "succeeded", "read with the new login's token: {t:#}");
    Ok(())
}

#[test]
fn https_backends_trust_the_configured_ca() -> anyhow::Result<()> {
    let bao = OpenBao::start_tls()?;
    bao.cli(&["kv", "put", "secret/db", "password=tls-pw-value"])?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("t"), dray_tests::openbao::ROOT_TOKEN)?;
    let ca = bao.ca_file().expect("TLS server");
    let config = dir.path().join("delegate.toml");
    let table = |name: &str, ca: Option<&Path>| {
        let ca = ca.map(|c| format!("ca-file = \"{}\"\n", c.display())).unwrap_or_default();
        format!(
            "[vault.{name}]\naddress = \"{}\"\n{ca}auth = {{ method = \"token\", token-file = \"{}/t\" }}\n",
            bao.address(),
            dir.path().display()
        )
    };
    std::fs::write(&config, table("tls", Some(&ca)) + &table("untrusted", None))?;
    let m = Manager::start(StoreKind::Sqlite)?;
    let opts = DelegateOpts {
        env: vec![("DRAY_CONFIG".into(), config.display().to_string())],
        ..Default::default()
    };
    let _d = Delegate::enrol(&m, "vault", opts)?;

    let ok =
        m.run_task(r#"test "<+secrets.getValue("vault://tls/secret/db#password")>" = tls-pw-value"#, &[])?;
    let t = m.wait_state(&ok, &["failed", "succeeded"], T)?;
    assert_eq!(t["state"], "succeeded", "{t:#}");
    // The generated CA is in no system store: without ca-file the handshake fails.
    let bad = m.run_task(r#"echo <+secrets.getValue("vault://untrusted/secret/db#password")>"#, &[])?;
    let t = m.wait_state(&bad, &["failed", "succeeded"], T)?;
    assert_eq!(t["state"], "failed", "{t:#}");
    assert_eq!(t["error_type"], "Connectivity", "{t:#}");
    assert!(t["reason"].as_str().unwrap_or_default().contains("UnknownIssuer"), "{t:#}");
    Ok(())
}
