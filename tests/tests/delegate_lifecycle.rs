//! Delegate life cycle: certificate renewal before expiry, reconnection after the
//! manager comes back, and draining on SIGTERM.

use std::time::Duration;

use dray_tests::*;

#[test]
fn renews_its_certificate_before_expiry() -> anyhow::Result<()> {
    let mut m =
        Manager::start_with(StoreKind::Sqlite, ManagerOpts { cert_ttl: "12s", ..Default::default() })?;
    let d = Delegate::enrol(&m, "renewer", DelegateOpts::default())?;
    let first = std::fs::read_to_string(d.state_dir().join("cert.pem"))?;
    wait_for("a renewed certificate", Duration::from_secs(20), || {
        let now = std::fs::read_to_string(d.state_dir().join("cert.pem")).ok()?;
        (now != first).then_some(())
    })?;
    // Wait past the first certificate's expiry, then force a reconnect: only the
    // renewed certificate can open the new session.
    std::thread::sleep(Duration::from_secs(6));
    m.restart()?;
    let mut d = d;
    d.wait_connected(2)?;
    let id = m.run_task("echo after-renewal", &[])?;
    m.wait_state(&id, &["succeeded"], Duration::from_secs(20))?;
    assert!(m.logs(&id)?.contains("after-renewal"));
    assert!(m.log().contains("Renewed a delegate certificate"));
    Ok(())
}

#[test]
fn drains_on_sigterm() -> anyhow::Result<()> {
    let m = Manager::start(StoreKind::Sqlite)?;
    let mut d = Delegate::enrol(&m, "drainer", DelegateOpts { drain_grace: "10s", ..Default::default() })?;
    let short = m.run_task("sleep 2; echo finished-during-drain", &[])?;
    m.wait_state(&short, &["running"], Duration::from_secs(20))?;
    d.sigterm();
    // New work is not offered to a draining delegate.
    std::thread::sleep(Duration::from_millis(500));
    let later = m.run_task("echo later", &["--queue-timeout", "3s"])?;
    let code = d.wait_exit(Duration::from_secs(20))?;
    assert_eq!(code, Some(0), "a drained delegate exits cleanly:\n{}", d.log());
    assert_eq!(m.wait_state(&short, &["succeeded"], Duration::from_secs(10))?["state"], "succeeded");
    assert!(m.logs(&short)?.contains("finished-during-drain"));
    let t = m.wait_state(&later, &["expired", "succeeded"], Duration::from_secs(20))?;
    assert_eq!(t["state"], "expired", "{t}");

    // Past the grace period, running work is handed back as failed.
    let mut d2 = Delegate::enrol(&m, "impatient", DelegateOpts { drain_grace: "1s", ..Default::default() })?;
    let long = m.run_task("sleep 60", &[])?;
    m.wait_state(&long, &["running"], Duration::from_secs(20))?;
    d2.sigterm();
    assert_eq!(d2.wait_exit(Duration::from_secs(20))?, Some(0));
    let t = m.wait_state(&long, &["failed"], Duration::from_secs(10))?;
    assert!(t["reason"].as_str().unwrap_or_default().contains("interrupted: delegate shut down"), "{t}");
    Ok(())
}

#[test]
fn grpc_health_and_reflection() -> anyhow::Result<()> {
    let m = Manager::start(StoreKind::Sqlite)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let ca = std::fs::read_to_string(m.ca_file())?;
        let ch = dray_shared::tls::endpoint(&m.url(), &ca, None)?.connect().await?;
        let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
        let r = health
            .check(tonic_health::pb::HealthCheckRequest { service: "dray.v1.Api".into() })
            .await?
            .into_inner();
        assert_eq!(r.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
        anyhow::Ok(())
    })
}

#[test]
fn health_endpoint_follows_the_session() -> anyhow::Result<()> {
    let mut m = Manager::start(StoreKind::Sqlite)?;
    let port = free_port();
    let d = Delegate::enrol(&m, "probed", DelegateOpts { http_port: Some(port), ..Default::default() })?;
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
    wait_for("ready", Duration::from_secs(10), || (http_get(port, "/readyz")?.0 == 200).then_some(()))?;
    m.kill9();
    wait_for("not ready", Duration::from_secs(20), || (http_get(port, "/readyz")?.0 == 503).then_some(()))?;
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200), "alive while disconnected:\n{}", d.log());
    m.restart()?;
    wait_for("ready again", Duration::from_secs(30), || (http_get(port, "/readyz")?.0 == 200).then_some(()))?;
    Ok(())
}
