//! Several `dray server` replicas on one PostgreSQL database (same database URL
//! and schema, same data dir for the CA and admin token, their own ports): any
//! replica takes API calls and delegate streams, a task submitted on one runs on
//! a delegate connected to another, `kill -9` of a replica mid-task loses and
//! repeats nothing, a cron trigger fires once per fire time however many replicas
//! run its scheduler, and a pipeline started through any replica completes even
//! when the replica driving it is killed (see `docs/ha-design.md`).
//!
//! PostgreSQL only: SQLite is single-replica by design.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use dray_shared::clock::now_ms;
use dray_tests::cron::{CRON_FIXTURES, cron_fires, distinct};
use dray_tests::*;

const T: Duration = Duration::from_secs(60);
const FINAL: &[&str] = &["succeeded", "failed", "cancelled", "lost", "expired"];

/// Lease TTL for these tests: well over the 5 s replica TTL, so a replica's
/// death is noticed (and its work adopted) before the leases it held run out.
fn ha_opts() -> ManagerOpts {
    ManagerOpts { lease_ttl: "15s", ..Default::default() }
}

/// Replicas on one schema and data dir. Dropped last-started first: the first
/// replica drops the schema and deletes the data dir, so it goes last.
struct Cluster(Vec<Manager>);

impl Cluster {
    /// Starts `n` replicas and waits until each lists all of them as live.
    fn start(n: usize) -> anyhow::Result<Cluster> {
        let mut c = Cluster(vec![Manager::start_with(StoreKind::Postgres, ha_opts())?]);
        for _ in 1..n {
            let replica = Manager::start_replica_of(&c.0[0])?;
            c.0.push(replica);
        }
        let want: BTreeSet<String> = c.0.iter().map(Manager::url).collect();
        wait_for("every replica to list every replica as live", Duration::from_secs(20), || {
            c.0.iter().all(|m| live_urls(m).is_some_and(|live| live == want)).then_some(())
        })?;
        Ok(c)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        while self.0.pop().is_some() {}
    }
}

impl std::ops::Deref for Cluster {
    type Target = [Manager];
    fn deref(&self) -> &[Manager] {
        &self.0
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut [Manager] {
        &mut self.0
    }
}

/// gRPC URLs of the replicas `m` lists as live.
fn live_urls(m: &Manager) -> Option<BTreeSet<String>> {
    let rs = m.replicas().ok()?;
    Some(
        rs.iter()
            .filter(|r| r["live"] == true)
            .filter_map(|r| r["grpcUrl"].as_str().map(String::from))
            .collect(),
    )
}

/// A delegate with a token created through `first`, given the URLs of `managers`
/// (tried in order: it enrols and connects through the first that answers);
/// waits until connected.
fn delegate_on(
    first: &Manager,
    managers: &[&Manager],
    name: &str,
    opts: DelegateOpts,
) -> anyhow::Result<Delegate> {
    let token = first.token(&format!("tok-{name}"), &[])?;
    let mut d = Delegate::with_token(first, name, &token, opts)?;
    d.set_manager(&managers.iter().map(|m| m.url()).collect::<Vec<_>>().join(","));
    d.spawn()?;
    d.wait_connected(1)?;
    Ok(d)
}

/// Waits for a task to end, asking `m`; requires success.
fn succeeded(m: &Manager, id: &str) -> anyhow::Result<Value> {
    let t = m.wait_state(id, FINAL, T)?;
    anyhow::ensure!(t["state"] == "succeeded", "task {id} did not succeed: {t}");
    Ok(t)
}

/// `dray get tasks -o json` on `m`.
fn tasks(m: &Manager, limit: usize) -> anyhow::Result<Vec<Value>> {
    Ok(serde_json::from_str(&m.cli_ok(&["get", "tasks", "--limit", &limit.to_string(), "-o", "json"])?)?)
}

#[test]
fn tasks_submitted_on_one_replica_run_on_delegates_of_others() -> anyhow::Result<()> {
    let rs = Cluster::start(3)?;
    let (a, b, c) = (&rs[0], &rs[1], &rs[2]);
    // A holds no delegate; d1 only ever talks to B, d2 only to C.
    let d1 = delegate_on(b, &[b], "d1", DelegateOpts { tags: vec!["on-b".into()], ..Default::default() })?;
    let d2 = delegate_on(c, &[c], "d2", DelegateOpts { tags: vec!["on-c".into()], ..Default::default() })?;
    assert_eq!(d1.sessions(), [b.url()], "{}", d1.log());
    assert_eq!(d2.sessions(), [c.url()], "{}", d2.log());

    // A third pinned to each delegate by tag, a third free to go to either.
    let n = 42;
    let pin = |i: usize| match i % 3 {
        0 => Some(("on-b", "d1")),
        1 => Some(("on-c", "d2")),
        _ => None,
    };
    let mut ids = Vec::new();
    for i in 0..n {
        let script = format!("echo ha-task-{i}; sleep 0.2");
        let id = match pin(i) {
            Some((tag, _)) => a.run_task(&script, &["--selector", tag])?,
            None => a.run_task(&script, &[])?,
        };
        ids.push(id);
    }

    let mut ran_on = HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        let t = succeeded(a, id).with_context(|| format!("task {i}"))?;
        let delegate = t["delegate"].as_str().unwrap_or_default().to_string();
        match pin(i) {
            Some((_, want)) => assert_eq!(delegate, want, "task {i} is pinned by tag: {t}"),
            None => assert!(delegate == "d1" || delegate == "d2", "task {i}: {t}"),
        }
        ran_on.insert(delegate);
        // Every replica reads the same row, and the log whichever replica holds it.
        for (r, m) in rs.iter().enumerate() {
            assert_eq!(m.task(id)?, t, "task {i} read from replica {r}");
        }
        let log = rs[i % 3].logs(id)?;
        let line = format!("ha-task-{i}");
        assert_eq!(log.lines().filter(|l| *l == line).count(), 1, "task {i}'s log: {log}");
    }
    assert_eq!(ran_on.len(), 2, "both delegates ran tasks: {ran_on:?}");

    // The task lists agree too: the same rows, each once.
    let want: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    for (r, m) in rs.iter().enumerate() {
        let list = tasks(m, 200)?;
        let listed: Vec<&str> = list.iter().filter_map(|t| t["id"].as_str()).collect();
        assert_eq!(listed.len(), n, "replica {r} lists {n} tasks: {listed:?}");
        assert_eq!(listed.iter().copied().collect::<BTreeSet<_>>(), want, "replica {r}");
    }
    Ok(())
}

#[test]
fn kill9_of_a_replica_mid_task_loses_nothing() -> anyhow::Result<()> {
    replica_gone_mid_task(Manager::kill9)
}

/// A clean stop (a rolling upgrade) deregisters the replica at once; what it
/// owned is adopted as an unregistered owner's.
#[test]
fn a_replica_stopped_cleanly_mid_task_loses_nothing() -> anyhow::Result<()> {
    replica_gone_mid_task(|m| {
        signal(m.pid().expect("running"), nix::sys::signal::Signal::SIGTERM);
        let _ = wait_for("the replica to stop", Duration::from_secs(20), || {
            http_get(m.http_port, "/healthz").is_none().then_some(())
        });
    })
}

/// A task runs on a delegate through B, B goes (`stop`), the delegate moves
/// to A and the task finishes there: once, recorded once.
fn replica_gone_mid_task(stop: impl FnOnce(&mut Manager)) -> anyhow::Result<()> {
    let mut rs = Cluster::start(2)?;
    let work = tempfile::tempdir()?;
    let runs = marker(work.path(), "runs");
    let a_url = rs[0].url();
    // The delegate prefers B and falls back to A.
    let mut d = delegate_on(&rs[1], &[&rs[1], &rs[0]], "mover", DelegateOpts::default())?;
    assert_eq!(d.sessions(), [rs[1].url()], "{}", d.log());

    let script = format!(
        "echo start >> {r}; echo marker-begin-7f3a; sleep 8; echo marker-end-7f3a; echo end >> {r}",
        r = runs.display()
    );
    let id = rs[0].run_task(&script, &[])?;
    rs[0].wait_state(&id, &["running"], Duration::from_secs(20))?;
    wait_for("the script to start", Duration::from_secs(20), || (count_lines(&runs) == 1).then_some(()))?;
    // Log lines are not acknowledged one by one: lines still in flight when a
    // replica dies are lost with it (see docs/ha-design.md). Stop B once the
    // first line is stored, so what follows is about the task and later lines.
    wait_for("the first log line to be stored", T, || {
        rs[0].logs(&id).ok().filter(|l| l.contains("marker-begin-7f3a")).map(|_| ())
    })?;

    stop(&mut rs[1]);
    d.wait_connected(2)?;
    assert_eq!(d.sessions()[1], a_url, "moved to the surviving replica: {}", d.log());

    let a = &rs[0];
    let t = a.wait_state(&id, FINAL, T)?;
    assert_eq!(t["state"], "succeeded", "{t}\nmanager A:\n{}\ndelegate:\n{}", a.log(), d.log());
    assert_eq!(std::fs::read_to_string(&runs)?, "start\nend\n", "the script ran exactly once");
    let log = a.logs(&id)?;
    assert_eq!(log.matches("marker-begin-7f3a").count(), 1, "{log}");
    assert_eq!(log.matches("marker-end-7f3a").count(), 1, "{log}");
    let list = tasks(a, 50)?;
    assert_eq!(list.iter().filter(|t| t["id"] == id.as_str()).count(), 1, "{list:#?}");
    assert_eq!(list.len(), 1, "no task was added: {list:#?}");
    Ok(())
}

#[test]
fn a_cron_trigger_fires_once_not_once_per_replica() -> anyhow::Result<()> {
    let rs = Cluster::start(3)?;
    let _d = delegate_on(&rs[0], &[&rs[0], &rs[1], &rs[2]], "local", DelegateOpts::default())?;
    let _fixtures = rs[0].apply_yaml(CRON_FIXTURES)?;
    wait_for("the first fire", T, || cron_fires(&rs[0]).ok().filter(|f| !f.is_empty()))?;

    // Watch ten seconds of fires.
    let since = now_ms();
    std::thread::sleep(Duration::from_secs(10));
    let until = now_ms();
    let seen: Vec<Vec<i64>> = rs.iter().map(cron_fires).collect::<anyhow::Result<_>>()?;
    for (r, fires) in seen.iter().enumerate() {
        assert!(distinct(fires), "replica {r} lists a fire time twice: {fires:?}");
    }
    // Every replica lists the same fires (up to the newest all of them had seen).
    let newest = seen.iter().map(|f| f.iter().copied().max().unwrap_or_default()).min().unwrap_or_default();
    let upto = |f: &Vec<i64>| f.iter().copied().filter(|&t| t <= newest).collect::<BTreeSet<_>>();
    for (r, fires) in seen.iter().enumerate() {
        assert_eq!(upto(fires), upto(&seen[0]), "replica {r} and replica 0 list different fires");
    }

    // Roughly one per two seconds: a tick may be late, never doubled.
    let fires: Vec<i64> = upto(&seen[0]).into_iter().collect();
    let window = fires.iter().filter(|&&t| t >= since && t <= until).count();
    assert!((4..=6).contains(&window), "{window} fires in 10 s: {fires:?}");
    for pair in fires.windows(2) {
        assert!(pair[1] - pair[0] <= 4000, "more than one tick missed between fires: {fires:?}");
    }

    // Each fire ran its pipeline once, to the end.
    for e in rs[0].executions("tick")? {
        let id = e["id"].as_str().unwrap_or_default();
        let e = rs[1].wait_execution(id, &["Succeeded", "Failed", "Aborted"], T)?;
        assert_eq!(e["status"], "Succeeded", "{e:#}");
        assert_eq!(node(&e, "tick.say")["tasks"].as_array().map(Vec::len), Some(1), "{e:#}");
    }
    Ok(())
}

/// Cron is driven by the leader alone: the other replicas do not even try, so
/// the trigger's events hold one start per fire and no refused duplicate. (An
/// idempotency key alone keeps the fire times distinct, which the test above
/// checks; this one checks that only one scheduler fires.)
#[test]
fn cron_fires_from_the_leader_only() -> anyhow::Result<()> {
    let rs = Cluster::start(2)?;
    let _d = delegate_on(&rs[0], &[&rs[0], &rs[1]], "local", DelegateOpts::default())?;
    let _fixtures = rs[1].apply_yaml(CRON_FIXTURES)?;
    let fires = wait_for("three fires", T, || cron_fires(&rs[0]).ok().filter(|f| f.len() >= 3))?;
    let events: Vec<Value> =
        serde_json::from_str(&rs[1].cli_ok(&["trigger", "events", "every2s", "-o", "json"])?)?;
    let outcomes: Vec<&str> = events.iter().map(|e| e["outcome"].as_str().unwrap_or_default()).collect();
    assert!(
        outcomes.iter().all(|o| *o == "started"),
        "one scheduler fires: {outcomes:?} for fires {fires:?}"
    );
    Ok(())
}

/// An approval, then three steps appending to `<dir>/runs`; the middle one takes a few seconds.
const FAILOVER: &str = r#"
pipeline:
  name: Failover
  identifier: failover
  variables:
    - name: dir
      type: String
      value: <+input>
  stages:
    - stage:
        name: Gate
        identifier: gate
        type: Approval
        spec:
          execution:
            steps:
              - step:
                  name: Go
                  identifier: go
                  type: HarnessApproval
                  timeout: 1h
                  spec:
                    approvalMessage: "Go?"
                    approvers: { userGroups: [operators], minimumCount: 1 }
    - stage:
        name: Work
        identifier: work
        type: Custom
        spec:
          execution:
            steps:
              - step:
                  name: One
                  identifier: one
                  type: ShellScript
                  spec: { shell: Bash, source: { type: Inline, spec: { script: "echo one >> <+pipeline.variables.dir>/runs" } } }
              - step:
                  name: Two
                  identifier: two
                  type: ShellScript
                  spec: { shell: Bash, source: { type: Inline, spec: { script: "echo two >> <+pipeline.variables.dir>/runs; sleep 5" } } }
              - step:
                  name: Three
                  identifier: three
                  type: ShellScript
                  spec: { shell: Bash, source: { type: Inline, spec: { script: "echo three >> <+pipeline.variables.dir>/runs" } } }
"#;

/// Checks a finished execution of `failover`: succeeded, every step once.
fn ran_once(e: &Value, runs: &std::path::Path) -> anyhow::Result<()> {
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    assert_eq!(node(e, "gate.go")["outputs"]["approvedBy"], "admin", "{e:#}");
    let lines = std::fs::read_to_string(runs)?;
    assert_eq!(lines.lines().collect::<Vec<_>>(), ["one", "two", "three"], "no step ran twice");
    for p in ["work.one", "work.two", "work.three"] {
        assert_eq!(node(e, p)["attempt"], 1, "{p}: {e:#}");
        assert_eq!(node(e, p)["tasks"].as_array().map(Vec::len), Some(1), "{p}: {e:#}");
    }
    Ok(())
}

#[test]
fn pipelines_run_through_any_replica_and_survive_a_leader_kill() -> anyhow::Result<()> {
    let mut rs = Cluster::start(2)?;
    // One delegate per replica, each able to move to the other.
    let _da = delegate_on(&rs[0], &[&rs[0], &rs[1]], "da", DelegateOpts::default())?;
    let _db = delegate_on(&rs[1], &[&rs[1], &rs[0]], "db", DelegateOpts::default())?;
    let _pipeline = rs[0].apply_yaml(FAILOVER)?;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir()).collect::<Result<_, _>>()?;
    let set = |i: usize| format!("dir={}", dirs[i].path().display());

    // Started through each replica (so through one that does not lead), approved
    // through the other one: both complete.
    let started: Vec<String> =
        (0..2).map(|i| rs[i].run_pipeline("failover", &["--set", &set(i)])).collect::<anyhow::Result<_>>()?;
    for (i, id) in started.iter().enumerate() {
        let other = &rs[1 - i];
        other.wait_node(id, "gate.go", &["Waiting"], T)?;
        other.cli_ok(&["approve", id, "--comment", "go"])?;
    }
    for (i, id) in started.iter().enumerate() {
        let e = rs[i].wait_execution(id, &["Succeeded", "Failed", "Aborted"], T)?;
        ran_once(&e, &dirs[i].path().join("runs")).with_context(|| format!("execution {i}"))?;
        // Both replicas show the same execution.
        assert_eq!(rs[1 - i].execution(id)?, e, "execution {i} read through the other replica");
    }

    // Kill the leader (the replica that says so, else the first one started: it
    // took the leadership when it was alone) while a step runs; started and
    // approved through the survivor.
    let victim = leader(&rs)?.unwrap_or(0);
    let survivor = 1 - victim;
    let id = rs[survivor].run_pipeline("failover", &["--set", &set(2)])?;
    rs[survivor].wait_node(&id, "gate.go", &["Waiting"], T)?;
    rs[survivor].cli_ok(&["approve", &id])?;
    let runs = dirs[2].path().join("runs");
    rs[survivor].wait_node(&id, "work.two", &["Running"], T)?;
    wait_for("step two to start", T, || (count_lines(&runs) == 2).then_some(()))?;
    let killed_at = Instant::now();
    rs[victim].kill9();

    let m = &rs[survivor];
    let e = m.wait_execution(&id, &["Succeeded", "Failed", "Aborted"], T).with_context(|| m.log())?;
    ran_once(&e, &runs)?;
    assert!(
        killed_at.elapsed() < T.mul_f64(patience()),
        "completed {:?} after the kill",
        killed_at.elapsed()
    );
    Ok(())
}

/// The index of the replica `get replicas` marks as leader, if it marks one.
fn leader(rs: &[Manager]) -> anyhow::Result<Option<usize>> {
    let listed = rs[0].replicas()?;
    let url = listed.iter().find(|r| r["leader"] == true).and_then(|r| r["grpcUrl"].as_str());
    Ok(url.and_then(|u| rs.iter().position(|m| m.url() == u)))
}

const RELEASE_HOOK: &str = r#"
pipeline:
  name: Release
  identifier: release
  variables:
    - name: version
      type: String
      value: <+input>
  stages:
    - stage:
        name: Say
        identifier: say
        type: Custom
        spec:
          execution:
            steps:
              - step:
                  name: Echo
                  identifier: echo
                  type: ShellScript
                  spec: { shell: Bash, source: { type: Inline, spec: { script: "echo version=<+pipeline.variables.version>" } } }
---
trigger:
  name: Release hook
  identifier: release_hook
  pipelineIdentifier: release
  inputs:
    version: <+trigger.payload.version>
  source:
    type: Webhook
    spec:
      type: Custom
      spec: {}
"#;

/// A webhook delivery posted to a replica that does not lead is relayed to the
/// leader: the same answer (202 with the execution), one execution, and the
/// same delivery id posted to the other replica is a duplicate of it.
#[test]
fn webhook_deliveries_to_any_replica_start_one_execution() -> anyhow::Result<()> {
    let rs = Cluster::start(2)?;
    let _d = delegate_on(&rs[0], &[&rs[0], &rs[1]], "local", DelegateOpts::default())?;
    let _fixtures = rs[0].apply_yaml(RELEASE_HOOK)?;
    let leader_at = leader(&rs)?.context("a replica leads")?;
    let follower = &rs[1 - leader_at];
    let v: Value =
        serde_json::from_str(&follower.cli_ok(&["trigger", "webhook-url", "release_hook", "-o", "json"])?)?;
    let (path, secret) = (v["path"].as_str().unwrap_or_default(), v["secret"].as_str().unwrap_or_default());
    let bearer = format!("Bearer {secret}");
    let headers = [("Authorization", bearer.as_str()), ("X-Dray-Delivery", "rel-7")];
    let body = br#"{"version": "7.0"}"#;
    let (code, text) =
        http_post(follower.http_port, path, &headers, body).context("no reply from the follower")?;
    assert_eq!(code, 202, "{text}");
    let reply: Value = serde_json::from_str(&text)?;
    let id = reply["executionId"].as_str().context("an execution id")?.to_string();
    let e = follower.wait_execution(&id, &["Succeeded", "Failed", "Aborted"], T)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");

    // The same delivery again, this time to the leader: nothing new starts.
    let (code, text) = http_post(rs[leader_at].http_port, path, &headers, body).context("no reply")?;
    assert_eq!(code, 202, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text)?["executionId"], id.as_str());
    assert_eq!(rs[leader_at].executions("release")?.len(), 1);
    Ok(())
}

/// Leases and delegate sessions live in the replica holding them; listing them
/// through any replica shows every replica's, each marked with where it is held.
#[test]
fn leases_and_delegates_are_listed_through_any_replica() -> anyhow::Result<()> {
    let rs = Cluster::start(2)?;
    let (a, b) = (&rs[0], &rs[1]);
    let _d = delegate_on(b, &[b], "on-b", DelegateOpts::default())?;
    let b_id = b.replicas()?.into_iter().find(|r| r["this"] == true).context("B lists itself")?["id"].clone();
    let work = tempfile::tempdir()?;
    let go = work.path().join("go");
    let id = a.run_task(&format!("while [ ! -e {} ]; do sleep 0.1; done", go.display()), &[])?;
    a.wait_state(&id, &["running"], T)?;

    let delegates = a.delegates()?;
    let d = delegates.iter().find(|d| d["name"] == "on-b").context("listed")?;
    assert_eq!((d["connected"].as_bool(), &d["replica"]), (Some(true), &b_id), "{d}");
    assert_eq!(d["running"], 1, "{d}");
    let leases: Vec<Value> = serde_json::from_str(&a.cli_ok(&["get", "leases", "-o", "json"])?)?;
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(
        (&leases[0]["task_id"], &leases[0]["replica"]),
        (&Value::from(id.as_str()), &b_id),
        "{leases:?}"
    );

    std::fs::write(&go, "")?;
    succeeded(a, &id)?;
    Ok(())
}

/// A replica stops cleanly (leaving the registry) and its delegate is gone
/// too: another replica adopts the running task as an unregistered owner's and
/// its lease runs out there, so the task ends as lost instead of staying
/// running forever.
#[test]
fn a_task_whose_replica_and_delegate_both_went_is_lost_not_stuck() -> anyhow::Result<()> {
    let mut rs = Cluster::start(2)?;
    let mut d = delegate_on(&rs[1], &[&rs[1]], "short-lived", DelegateOpts::default())?;
    let id = rs[0].run_task("sleep 600", &[])?;
    rs[0].wait_state(&id, &["running"], T)?;
    d.kill9();
    let b = &mut rs[1];
    signal(b.pid().expect("running"), nix::sys::signal::Signal::SIGTERM);
    wait_for("B to stop", Duration::from_secs(20), || {
        http_get(b.http_port, "/healthz").is_none().then_some(())
    })?;
    let t = rs[0].wait_state(&id, FINAL, T)?;
    assert_eq!(t["state"], "lost", "{t}\n{}", rs[0].log());
    Ok(())
}
