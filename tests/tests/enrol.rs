//! Enrolment: a delegate enrols with a token, keeps its identity across restarts,
//! and refused tokens (expired, used up, revoked) get a clear error and nothing.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use dray_tests::*;

fn expect_refused(m: &Manager, token: &str, name: &str, needle: &str) -> anyhow::Result<()> {
    let mut d = Delegate::with_token(m, name, token, DelegateOpts::default())?;
    d.spawn()?;
    let code = d.wait_exit(Duration::from_secs(20))?;
    assert_ne!(code, Some(0), "a refused enrolment must fail the process");
    let log = d.log();
    assert!(log.contains(needle), "expected {needle:?} in the delegate log:\n{log}");
    assert!(!d.state_dir().join("cert.pem").exists(), "no certificate may be written");
    Ok(())
}

both_stores!(enrol_and_reuse_identity, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?;
    let mut d =
        Delegate::enrol(&m, "builder-1", DelegateOpts { tags: vec!["linux".into()], ..Default::default() })?;
    let id = d.id()?;
    for f in ["key.pem", "cert.pem"] {
        let mode = std::fs::metadata(d.state_dir().join(f))?.permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f} must be private");
    }
    let ds = m.delegates()?;
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0]["id"], id.as_str());
    assert_eq!(ds[0]["name"], "builder-1");
    assert_eq!(ds[0]["connected"], true);
    assert_eq!(ds[0]["tags"][0], "linux");

    // A restart reuses the identity without a token.
    d.restart()?;
    assert_eq!(d.id()?, id);
    assert_eq!(m.delegates()?.len(), 1, "no second enrolment");

    // And it takes work.
    let t = m.run_task("echo hello from $HOSTNAME-less shell", &[])?;
    let t = m.wait_state(&t, &["succeeded"], Duration::from_secs(20))?;
    assert_eq!(t["delegate"], "builder-1");
    assert_eq!(t["exit_code"], 0);
    Ok(())
});

both_stores!(refused_tokens, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?;
    let expired = m.token("short", &["--expires-in", "1s"])?;
    std::thread::sleep(Duration::from_millis(1500));
    expect_refused(&m, &expired, "late", "expired")?;

    let once = m.token("once", &["--max-uses", "1"])?;
    let mut first = Delegate::with_token(&m, "first", &once, DelegateOpts::default())?;
    first.spawn()?;
    first.wait_connected(1)?;
    expect_refused(&m, &once, "second", "used 1 times")?;

    let revoked = m.token("gone", &[])?;
    m.cli_ok(&["delegate-token", "revoke", "gone"])?;
    expect_refused(&m, &revoked, "third", "revoked")?;

    expect_refused(&m, "dray_dt_not-a-real-token", "fourth", "unknown delegate token")?;

    // Only the one good enrolment exists, and nothing else is leased.
    assert_eq!(m.delegates()?.len(), 1);
    let audit_ok = m.log().contains("Refused an enrolment");
    assert!(audit_ok, "refusals are logged:\n{}", m.log());
    Ok(())
});

#[test]
fn token_list_and_bad_input() -> anyhow::Result<()> {
    let m = Manager::start(StoreKind::Sqlite)?;
    m.token("a", &["--project", "acme/web", "--max-uses", "3"])?;
    let list: serde_json::Value =
        serde_json::from_str(&m.cli_ok(&["delegate-token", "list", "-o", "json"])?)?;
    assert_eq!(list[0]["name"], "a");
    assert_eq!(list[0]["scope"], "default/acme/web");
    assert_eq!(list[0]["max_uses"], 3);
    assert!(
        !m.cli_ok(&["delegate-token", "list", "-o", "json"])?.contains("dray_dt_"),
        "secrets are never listed"
    );

    let dup = m.cli(&["delegate-token", "create", "--name", "a"]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let bad = m.cli(&["delegate-token", "create", "--name", "b", "--expires-in", "soon"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--expires-in \"soon\""));
    let unauth = std::process::Command::new(bin("dray"))
        .args(["--server", &m.url(), "--ca-file"])
        .arg(m.ca_file())
        .args(["--token", "wrong", "get", "tasks"])
        .output()?;
    assert!(!unauth.status.success());
    assert!(String::from_utf8_lossy(&unauth.stderr).contains("invalid API token"));
    Ok(())
}
