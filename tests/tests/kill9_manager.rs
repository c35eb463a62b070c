//! `kill -9` of the manager with tasks queued and running, then a restart:
//! nothing is lost, nothing runs twice, running tasks finish and are recorded.

use std::time::Duration;

use dray_tests::*;

both_stores!(manager_kill9_and_restart, |kind| -> anyhow::Result<()> {
    let mut m = Manager::start_with(kind, ManagerOpts { lease_ttl: "5s", ..Default::default() })?;
    let work = tempfile::tempdir()?;
    let _d = Delegate::enrol(&m, "steady", DelegateOpts { capacity: 2, ..Default::default() })?;

    // Two long tasks fill the delegate; four more wait in the queue.
    let mut ids = Vec::new();
    for i in 0..6 {
        let runs = marker(work.path(), &format!("runs-{i}"));
        let script =
            format!("echo start >> {r}; sleep 3; echo done-{i}; echo end >> {r}", r = runs.display());
        ids.push(m.run_task(&script, &[])?);
    }
    m.wait_state(&ids[0], &["running"], Duration::from_secs(20))?;
    m.wait_state(&ids[1], &["running"], Duration::from_secs(20))?;

    m.restart()?; // SIGKILL, then start on the same store

    for (i, id) in ids.iter().enumerate() {
        let t = m.wait_state(
            id,
            &["succeeded", "failed", "lost", "expired", "cancelled"],
            Duration::from_secs(60),
        )?;
        assert_eq!(t["state"], "succeeded", "task {i}: {t}");
        let runs = std::fs::read_to_string(marker(work.path(), &format!("runs-{i}")))?;
        assert_eq!(runs, "start\nend\n", "task {i} ran exactly once");
        assert!(m.logs(id)?.contains(&format!("done-{i}")), "task {i}'s log was recorded");
    }
    assert!(m.log().contains("Lease engine loaded unfinished tasks"));
    Ok(())
});
