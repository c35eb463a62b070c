//! A delegate that dies (or freezes) mid-task loses its lease within the TTL; the
//! task is `lost`, never silently re-run, and a late result with the old epoch is
//! refused.

use std::time::{Duration, Instant};

use dray_tests::*;
use nix::sys::signal::Signal;

both_stores!(kill9_delegate_mid_task, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?; // lease TTL 3s
    let work = tempfile::tempdir()?;
    let runs = marker(work.path(), "runs");
    let mut d = Delegate::enrol(&m, "victim", DelegateOpts::default())?;
    let script = format!("echo run >> {}; sleep 8", runs.display());
    let id = m.run_task(&script, &[])?;
    m.wait_state(&id, &["running"], Duration::from_secs(20))?;
    wait_for("the script to start", Duration::from_secs(10), || (count_lines(&runs) == 1).then_some(()))?;

    let killed = Instant::now();
    d.kill9();
    let t = m.wait_state(&id, &["lost"], Duration::from_secs(10))?;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(3 + 2), "lost within the TTL (plus a tick): took {took:?}");
    assert!(t["reason"].as_str().unwrap_or_default().contains("lease expired"), "{t}");

    // A healthy delegate appears; the lost task must not be offered to it.
    let _other = Delegate::enrol(&m, "healthy", DelegateOpts::default())?;
    let probe = m.run_task("true", &[])?;
    m.wait_state(&probe, &["succeeded"], Duration::from_secs(20))?;
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(m.task(&id)?["state"], "lost");
    assert_eq!(count_lines(&runs), 1, "a lost task is never re-run");
    Ok(())
});

both_stores!(frozen_delegate_result_is_refused, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?;
    let d = Delegate::enrol(&m, "sleepy", DelegateOpts::default())?;
    let id = m.run_task("sleep 2; echo finished-late", &[])?;
    m.wait_state(&id, &["running"], Duration::from_secs(20))?;
    let epoch = m.task(&id)?["epoch"].as_u64().unwrap_or_default();
    let pid = d.pid().expect("pid");

    // Freeze the delegate past the TTL: no heartbeats, so the lease is lost.
    signal(pid, Signal::SIGSTOP);
    m.wait_state(&id, &["lost"], Duration::from_secs(10))?;
    signal(pid, Signal::SIGCONT);

    // It wakes up, finishes, and reports with the old epoch: refused and audited.
    wait_for("the stale result to be refused", Duration::from_secs(20), || {
        m.log().contains("Refused a delegate message for a lease it does not hold").then_some(())
    })?;
    let t = m.task(&id)?;
    assert_eq!(t["state"], "lost", "a zombie result never changes a lost task: {t}");
    assert_eq!(t["epoch"].as_u64(), Some(epoch));
    let (_, metrics) = m.http("/metrics").expect("metrics");
    assert!(metrics.contains("dray_stale_refused_total"), "{metrics}");
    assert!(!metrics.contains("dray_stale_refused_total 0"), "{metrics}");
    assert!(!m.logs(&id)?.contains("finished-late"), "logs from a lost lease are refused too");
    drop(d);
    Ok(())
});
