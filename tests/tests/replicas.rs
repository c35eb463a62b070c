//! Every manager process registers itself as a replica in the store and keeps a
//! heartbeat there; `dray get replicas` lists them, marks the one answering, and
//! calls a replica dead once its heartbeat is older than the replica TTL (a
//! `kill -9`), while a clean shutdown removes the registration.

use std::time::Duration;

use dray_tests::*;
use serde_json::Value;

both_stores!(replicas_heartbeat_die_and_leave, |kind| -> anyhow::Result<()> {
    let mut m = Manager::start(kind)?;
    let first = m.replicas()?;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!((first[0]["live"].as_bool(), first[0]["this"].as_bool()), (Some(true), Some(true)));
    assert_eq!(first[0]["grpcUrl"], m.url().as_str());
    let old = first[0]["id"].as_str().unwrap_or_default().to_string();
    let beat = first[0]["heartbeatMs"].as_i64().unwrap_or_default();
    let refreshed = wait_for("a newer heartbeat", Duration::from_secs(10), || {
        m.replicas().ok()?.into_iter().find(|r| r["heartbeatMs"].as_i64() > Some(beat))
    })?;
    assert_eq!(refreshed["id"], old.as_str());

    // kill -9: the old registration stays, and is dead once its heartbeat is stale.
    m.kill9();
    m.restart()?;
    let both = wait_for("the killed replica to be declared dead", Duration::from_secs(20), || {
        let rs = m.replicas().ok()?;
        let dead = rs.iter().find(|r| r["id"] == old.as_str() && r["live"] == false)?.clone();
        Some((rs, dead))
    })?;
    let (rs, dead) = both;
    assert_eq!(dead["this"], false);
    let new: Vec<&Value> = rs.iter().filter(|r| r["this"] == true).collect();
    assert_eq!(new.len(), 1, "{rs:?}");
    assert_eq!(new[0]["live"], true);
    assert_ne!(new[0]["id"], old.as_str(), "a new process is a new replica");
    let new_id = new[0]["id"].as_str().unwrap_or_default().to_string();

    // A clean stop deregisters; the next process does not see it.
    signal(m.pid().expect("running"), nix::sys::signal::Signal::SIGTERM);
    wait_for("the manager to stop", Duration::from_secs(20), || {
        (http_get(m.http_port, "/healthz").is_none()).then_some(())
    })?;
    m.restart()?;
    let after = m.replicas()?;
    assert!(after.iter().all(|r| r["id"] != new_id.as_str()), "{after:?}");
    Ok(())
});
