//! Offers that are rejected (capability check) or never acknowledged go to
//! another eligible delegate.

use std::time::Duration;

use dray_tests::*;
use nix::sys::signal::Signal;

both_stores!(rejected_offer_goes_elsewhere, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?;
    // Only `has-secret` can resolve the reference; `lacks-secret` rejects the offer.
    let _a = Delegate::enrol(&m, "lacks-secret", DelegateOpts { capacity: 8, ..Default::default() })?;
    let _b = Delegate::enrol(
        &m,
        "has-secret",
        DelegateOpts { capacity: 1, env: vec![("DEPLOY_KEY".into(), "k-123".into())], ..Default::default() },
    )?;
    let id = m.run_task(r#"test -n "<+secrets.getValue("env:DEPLOY_KEY")>""#, &[])?;
    let t = m.wait_state(&id, &["succeeded", "failed", "expired"], Duration::from_secs(20))?;
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(t["delegate"], "has-secret");
    assert!(t["epoch"].as_u64().unwrap_or_default() >= 2, "offered to the other delegate first: {t}");
    Ok(())
});

both_stores!(unacknowledged_offer_goes_elsewhere, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?; // offer timeout 2s
    let stuck = Delegate::enrol(&m, "stuck", DelegateOpts { capacity: 8, ..Default::default() })?;
    let _ok = Delegate::enrol(&m, "ok", DelegateOpts { capacity: 1, ..Default::default() })?;
    let pid = stuck.pid().expect("pid");
    signal(pid, Signal::SIGSTOP);
    let id = m.run_task("echo hi", &[])?;
    let t = m.wait_state(&id, &["succeeded", "failed", "expired"], Duration::from_secs(20));
    signal(pid, Signal::SIGCONT);
    let t = t?;
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(t["delegate"], "ok");
    assert_eq!(t["epoch"], 2, "first offer (to the frozen delegate) expired: {t}");
    Ok(())
});

both_stores!(no_eligible_delegate_explained, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?;
    let _web = Delegate::enrol_scoped(
        &m,
        "web-only",
        "acme/web",
        DelegateOpts { tags: vec!["linux".into()], ..Default::default() },
    )?;
    let _mac = Delegate::enrol(&m, "mac", DelegateOpts { tags: vec!["macos".into()], ..Default::default() })?;

    // Selectors and project scope are respected.
    let a = m.run_task("echo web", &["--project", "acme/web", "--selector", "linux"])?;
    assert_eq!(m.wait_state(&a, &["succeeded"], Duration::from_secs(20))?["delegate"], "web-only");
    let b = m.run_task("echo mac", &["--selector", "macos"])?;
    assert_eq!(m.wait_state(&b, &["succeeded"], Duration::from_secs(20))?["delegate"], "mac");

    // Nobody can take this one: project api + tag linux.
    let c =
        m.run_task("echo never", &["--project", "acme/api", "--selector", "linux", "--queue-timeout", "2s"])?;
    let t = m.wait_state(&c, &["expired"], Duration::from_secs(20))?;
    let reason = t["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("web-only ("), "{reason}");
    assert!(
        reason.contains("wrong scope (delegate serves default/acme/web, task is in default/acme/api)"),
        "{reason}"
    );
    assert!(reason.contains("mac ("), "{reason}");
    assert!(reason.contains("missing tag(s) linux"), "{reason}");
    let out = m.cli(&["task", "run", "--wait", "--queue-timeout", "1s", "--selector", "nope", "--", "true"]);
    assert_eq!(out.status.code(), Some(5), "expired exits 5");
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing tag(s) nope"));
    Ok(())
});
