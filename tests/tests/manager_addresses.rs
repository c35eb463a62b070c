//! A delegate given several manager addresses: it enrols and connects through
//! whichever answers, moving past dead ones without waiting out a backoff, and
//! comes back when its manager returns.

use std::time::{Duration, Instant};

use dray_tests::*;

#[test]
fn dead_addresses_are_skipped_at_enrolment_and_after_a_restart() -> anyhow::Result<()> {
    let mut m = Manager::start(StoreKind::Sqlite)?;
    let dead = format!("https://127.0.0.1:{}", free_port());
    let token = m.token("tok-addresses", &[])?;
    let mut d = Delegate::with_token(&m, "multi", &token, DelegateOpts::default())?;
    d.set_manager(&format!("{dead},{}", m.url()));
    let started = Instant::now();
    d.spawn()?;
    d.wait_connected(1)?;
    // One failed address costs one connect attempt, not a backoff sleep.
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let log = d.log();
    assert!(log.contains("trying the next manager address"), "{log}");
    assert!(log.contains(&format!("manager.url={}", m.url())), "{log}");

    // The manager goes away and comes back on the same address: the delegate
    // keeps going round both and reconnects.
    m.kill9();
    m.restart()?;
    d.wait_connected(2)?;
    let id = m.run_task("echo via-second-address", &[])?;
    let t = m.wait_state(&id, &["succeeded", "failed", "expired"], Duration::from_secs(30))?;
    assert_eq!(t["state"], "succeeded", "{t}");
    Ok(())
}
