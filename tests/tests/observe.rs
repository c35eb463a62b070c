//! What operators watch: `dray leases watch`, `get leases`, `logs -f`,
//! `task run --wait`, cancel, metrics and health endpoints.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use dray_tests::*;

#[test]
fn watch_wait_cancel_and_metrics() -> anyhow::Result<()> {
    let m = Manager::start(StoreKind::Sqlite)?;
    let _d = Delegate::enrol(&m, "watched", DelegateOpts::default())?;

    let mut watcher = Command::new(bin("dray"))
        .args(["--server", &m.url(), "--ca-file"])
        .arg(m.ca_file())
        .args(["--token", &m.admin_token(), "leases", "watch", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = watcher.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(500));

    // --wait streams the log and exits with the task's outcome.
    let out = m.cli(&["task", "run", "--wait", "--", "echo out-line; echo err-line >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(1), "failed exits 1");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("out-line"), "{stdout}");
    assert!(stderr.contains("err-line"), "{stderr}");
    assert!(stderr.contains("failed: exit code 3"), "{stderr}");
    let id = stdout.lines().next().unwrap_or_default().to_string();
    assert_eq!(m.task(&id)?["exit_code"], 3);

    let mut seen = Vec::new();
    let got = wait_for("lease events", Duration::from_secs(10), || {
        while let Ok(line) = rx.try_recv() {
            let v: serde_json::Value = serde_json::from_str(&line).ok()?;
            if v["task_id"] == id.as_str() {
                seen.push(v["event"].as_str().unwrap_or_default().to_string());
            }
        }
        seen.contains(&"finished".to_string()).then(|| seen.clone())
    })?;
    assert_eq!(&got[..2], &["offered".to_string(), "acknowledged".to_string()], "{got:?}");
    let _ = watcher.kill();

    // Cancel a running task: the delegate kills it and the task is cancelled.
    let long = m.run_task("echo begin; sleep 60", &[])?;
    m.wait_state(&long, &["running"], Duration::from_secs(20))?;
    let leases: serde_json::Value = serde_json::from_str(&m.cli_ok(&["get", "leases", "-o", "json"])?)?;
    assert_eq!(leases[0]["task_id"], long.as_str());
    assert_eq!(leases[0]["state"], "running");
    m.cli_ok(&["task", "cancel", &long])?;
    let t = m.wait_state(&long, &["cancelled"], Duration::from_secs(20))?;
    assert_eq!(t["state"], "cancelled");
    let again = m.cli(&["task", "cancel", &long]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already cancelled"));

    // Queued tasks cancel at once.
    let q = m.run_task("true", &["--selector", "nobody"])?;
    m.cli_ok(&["task", "cancel", &q])?;
    assert_eq!(m.task(&q)?["state"], "cancelled");

    // Bad input is refused with a clear message and nothing submitted.
    let before = m.cli_ok(&["get", "tasks", "-o", "json"])?;
    let bad = m.cli(&["task", "run", "--selector", "a b", "--", "true"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("selectors"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let bad = m.cli(&["task", "run", "--", "echo <+secrets.getValue(\"nope:x\")>"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad secret reference"));
    assert_eq!(before, m.cli_ok(&["get", "tasks", "-o", "json"])?, "nothing changed");
    let bad = m.cli(&["task", "get", "not-an-id"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid task id"));

    // Health and metrics.
    assert_eq!(m.http("/healthz").map(|r| r.0), Some(200));
    assert_eq!(m.http("/readyz").map(|r| r.0), Some(200));
    let (_, metrics) = m.http("/metrics").expect("metrics");
    for name in [
        "dray_tasks_finished_total{state=\"failed\"}",
        "dray_leases_granted_total",
        "dray_leases_renewed_total",
        "dray_leases_lost_total",
        "dray_delegates_connected 1",
        "dray_dispatch_latency_seconds_bucket",
        "dray_tasks{state=\"queued\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }

    // yaml and table output work too.
    assert!(m.cli_ok(&["get", "tasks", "-o", "yaml"])?.contains("state:"));
    assert!(m.cli_ok(&["get", "delegates"])?.contains("watched"));
    let ping = m.cli_ok(&["delegate", "ping", &_d.id()?])?;
    assert!(ping.contains("pong from watched"), "{ping}");
    Ok(())
}
