//! Pipelines end to end: the examples applied and run by real `dray` and
//! `dray-delegate` processes on SQLite and PostgreSQL — approvals, output
//! variables across stages, service/environment variables and overrides,
//! failure strategies and rollback order, parallel stages with a barrier,
//! runtime inputs with input sets and overlays, pause/resume/abort, and a
//! manager killed mid-execution that resumes without re-running a step.

use std::time::Duration;

use dray_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

fn local_delegate(m: &Manager) -> anyhow::Result<Delegate> {
    Delegate::enrol(m, "local", DelegateOpts { tags: vec!["local".into()], ..Default::default() })
}

fn status<'a>(e: &'a Value, path: &str) -> &'a str {
    node(e, path)["status"].as_str().unwrap_or_default()
}

both_stores!(release_with_approval, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?;
    let _d = local_delegate(&m)?;
    m.apply(&examples_dir().join("release.yaml"))?;

    let id = m.run_pipeline("release", &[])?;
    let e = m.wait_node(&id, "approve.gate", &["Waiting"], T)?;
    assert_eq!(status(&e, "build.compile"), "Succeeded");
    assert_eq!(node(&e, "build.compile")["outputs"]["outputVariables"]["version"], "1.1.0");
    assert_eq!(status(&e, "deploy"), "NotStarted", "nothing runs past a waiting approval");

    // An input the approval does not declare is refused and changes nothing.
    let bad = m.cli(&["approve", &id, "--input", "nope=1"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not an approver input"));

    m.cli_ok(&["approve", &id, "--comment", "ship it", "--input", "ticket=CHG-7"])?;
    let e = m.wait_execution(&id, &["Succeeded", "Failed", "Aborted"], T)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    let gate = node(&e, "approve.gate");
    assert_eq!(gate["outputs"]["approvedBy"], "admin");
    assert_eq!(gate["outputs"]["comment"], "ship it");

    let log = m.step_logs(&id, "deploy.deploy")?;
    assert!(log.contains("deploying Web 1.1.0"), "{log}");
    assert!(log.contains("to Production (Production) in eu-west-1: port 443, replicas 3"), "{log}");
    assert!(log.contains("change ticket CHG-7"), "{log}");
    assert_eq!(status(&e, "deploy.announce"), "Succeeded");
    assert!(!node(&e, "deploy.deploy")["delegate"].as_str().unwrap_or_default().is_empty());

    // A second run is #2 and is rejected at the gate: the deploy stage never runs.
    let id2 = m.run_pipeline("release", &[])?;
    m.wait_node(&id2, "approve.gate", &["Waiting"], T)?;
    m.cli_ok(&["approve", &id2, "--reject", "--comment", "not today"])?;
    let e2 = m.wait_execution(&id2, &["Succeeded", "Failed", "Aborted"], T)?;
    assert_eq!(e2["status"], "Failed");
    assert_eq!(e2["sequenceId"], 2);
    assert_eq!(node(&e2, "approve.gate")["failureType"], "ApprovalRejection");
    assert_eq!(status(&e2, "deploy"), "Skipped");
    assert!(node(&e2, "deploy.deploy")["tasks"].as_array().is_none_or(|t| t.is_empty()));
    Ok(())
});

both_stores!(rollback_orders_and_retries, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?;
    let _d = local_delegate(&m)?;
    m.apply(&examples_dir().join("rollback.yaml"))?;
    let dir = tempfile::tempdir()?;
    let marker_dir = dir.path().display().to_string();
    let health = format!("http://127.0.0.1:{}/healthz", m.http_port);
    let set = |k: &str, v: &str| format!("{k}={v}");

    // The verification fails its assertion → PipelineRollback: the deploy stage
    // rolls back (group, then stage), then the earlier prepare stage.
    let id = m.run_pipeline(
        "rollback",
        &[
            "--set",
            &set("marker_dir", &marker_dir),
            "--set",
            &set("health_url", &health),
            "--set",
            "verify=fail",
        ],
    )?;
    let e = m.wait_execution(&id, &["Succeeded", "Failed", "Aborted"], T)?;
    assert_eq!(e["status"], "Failed", "{e:#}");
    let flaky = node(&e, "prepare.flaky");
    assert_eq!(flaky["status"], "Succeeded");
    assert_eq!(flaky["attempt"], 2, "retried once, then passed: {flaky}");
    assert_eq!(node(&e, "deploy.verify")["failureType"], "Verification");
    let order = std::fs::read_to_string(dir.path().join(format!("order-{id}")))?;
    assert_eq!(order.lines().collect::<Vec<_>>(), vec!["apply", "undo-apply", "undo-deploy", "undo-prepare"]);

    // An unreachable health endpoint is a Connectivity error → StageRollback: only
    // the deploy stage rolls back.
    let dead = format!("http://127.0.0.1:{}/healthz", free_port());
    let id = m.run_pipeline(
        "rollback",
        &[
            "--set",
            &set("marker_dir", &marker_dir),
            "--set",
            &set("health_url", &dead),
            "--set",
            "verify=pass",
        ],
    )?;
    let e = m.wait_execution(&id, &["Succeeded", "Failed", "Aborted"], T)?;
    assert_eq!(e["status"], "Failed");
    assert_eq!(node(&e, "deploy.verify")["failureType"], "Connectivity");
    let order = std::fs::read_to_string(dir.path().join(format!("order-{id}")))?;
    assert_eq!(order.lines().collect::<Vec<_>>(), vec!["apply", "undo-apply", "undo-deploy"]);

    // All good: no rollback at all.
    let id = m.run_pipeline(
        "rollback",
        &[
            "--set",
            &set("marker_dir", &marker_dir),
            "--set",
            &set("health_url", &health),
            "--set",
            "verify=pass",
        ],
    )?;
    let e = m.wait_execution(&id, &["Succeeded", "Failed", "Aborted"], T)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    assert_eq!(node(&e, "deploy.verify")["outputs"]["httpResponseCode"], 200);
    let order = std::fs::read_to_string(dir.path().join(format!("order-{id}")))?;
    assert_eq!(order.lines().collect::<Vec<_>>(), vec!["apply"]);
    Ok(())
});

both_stores!(parallel_stages_meet_at_the_barrier, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?;
    let _d = local_delegate(&m)?;
    m.apply(&examples_dir().join("parallel.yaml"))?;
    let id = m.run_pipeline("parallel", &[])?;
    let e = m.wait_execution(&id, &["Succeeded", "Failed", "Aborted"], T)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    let warm_end = node(&e, "us.warmup")["endedMs"].as_i64().unwrap_or_default();
    let eu_met = node(&e, "eu.meet")["endedMs"].as_i64().unwrap_or_default();
    let eu_switch = node(&e, "eu.switch_eu")["startedMs"].as_i64().unwrap_or_default();
    assert!(eu_met >= warm_end, "the fast region waited at the barrier for the slow one");
    assert!(eu_switch >= warm_end, "the fast region switched only after the slow one was ready");
    assert_eq!(status(&e, "eu.workers.queue"), "Succeeded");
    Ok(())
});

both_stores!(runtime_inputs_sets_and_overlays, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?;
    let _d = local_delegate(&m)?;
    m.apply(&examples_dir().join("inputs.yaml"))?;

    // A missing required input is refused before anything runs.
    let out = m.cli(&["run", "inputs"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pipeline.variables.greeting"), "{err}");
    let list: Value = serde_json::from_str(&m.cli_ok(&["get", "executions", "-o", "json"])?)?;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "nothing was created");

    // A value outside allowedValues is refused.
    let out = m.cli(&["run", "inputs", "--set", "greeting=hi", "--set", "target=moon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("moon"));

    // Defaults, then input sets and an overlay (later wins), then --set.
    for (args, want) in [
        (vec!["--set", "greeting=hi"], "hi dev small"),
        (vec!["--input-set", "qa", "--set", "greeting=hello"], "hello qa medium"),
        (vec!["--input-set", "qa_big", "--set", "greeting=hey"], "hey qa large"),
        (vec!["--input-set", "qa_big", "--set", "greeting=yo", "--set", "size=tiny"], "yo qa tiny"),
    ] {
        let mut a = args.clone();
        a.push("--wait");
        let out = m.cli(&[&["run", "inputs"][..], &a[..]].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let id = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string();
        let log = m.step_logs(&id, "greet.say")?;
        assert!(log.contains(want), "{args:?}: {log}");
    }
    Ok(())
});

/// Each remaining failure-strategy action, and manual intervention.
const STRATEGIES: &str = r#"
pipeline:
  name: Strategies
  identifier: strategies
  stages:
    - stage:
        name: Actions
        identifier: actions
        type: Custom
        spec:
          execution:
            steps:
              - step:
                  name: Ignored
                  identifier: ignored
                  type: ShellScript
                  failureStrategies:
                    - onFailure: { errors: [AllErrors], action: { type: Ignore } }
                  spec: { shell: Bash, source: { type: Inline, spec: { script: "exit 3" } } }
              - step:
                  name: Marked
                  identifier: marked
                  type: ShellScript
                  failureStrategies:
                    - onFailure: { errors: [AllErrors], action: { type: MarkAsSuccess } }
                  spec: { shell: Bash, source: { type: Inline, spec: { script: "exit 4" } } }
              - step:
                  name: Timed out
                  identifier: slow
                  type: ShellScript
                  timeout: 1s
                  failureStrategies:
                    - onFailure: { errors: [Timeout], action: { type: Ignore } }
                    - onFailure: { errors: [AllErrors], action: { type: Abort } }
                  spec: { shell: Bash, source: { type: Inline, spec: { script: "sleep 30" } } }
              - step:
                  name: Ask
                  identifier: ask
                  type: ShellScript
                  failureStrategies:
                    - onFailure:
                        errors: [AllErrors]
                        action:
                          type: ManualIntervention
                          spec: { timeout: 1h, onTimeout: { action: { type: Abort } } }
                  spec: { shell: Bash, source: { type: Inline, spec: { script: "exit 5" } } }
              - step:
                  name: Fatal
                  identifier: fatal
                  type: ShellScript
                  failureStrategies:
                    - onFailure: { errors: [AllErrors], action: { type: Abort } }
                  spec: { shell: Bash, source: { type: Inline, spec: { script: "exit 6" } } }
              - step:
                  name: Never
                  identifier: never
                  type: ShellScript
                  spec: { shell: Bash, source: { type: Inline, spec: { script: "echo never" } } }
"#;

both_stores!(failure_strategy_actions, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?;
    let _d = local_delegate(&m)?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("strategies.yaml");
    std::fs::write(&file, STRATEGIES)?;
    m.apply(&file)?;
    let id = m.run_pipeline("strategies", &[])?;
    let e = m.wait_node(&id, "actions.ask", &["Waiting"], T)?;
    assert_eq!(status(&e, "actions.ignored"), "IgnoreFailed");
    assert_eq!(status(&e, "actions.marked"), "Succeeded");
    assert_eq!(node(&e, "actions.marked")["failureType"], "Unknown");
    assert_eq!(status(&e, "actions.slow"), "IgnoreFailed");
    assert_eq!(node(&e, "actions.slow")["failureType"], "Timeout");
    assert_eq!(node(&e, "actions.ask")["waitingFor"], "intervention");

    // The operator marks it as success; the next step's Abort ends the execution.
    m.cli_ok(&["intervene", &id, "--step", "actions.ask", "--action", "mark-as-success"])?;
    let e = m.wait_execution(&id, &["Succeeded", "Failed", "Aborted"], T)?;
    assert_eq!(e["status"], "Aborted", "{e:#}");
    assert_eq!(status(&e, "actions.ask"), "Succeeded");
    assert_eq!(status(&e, "actions.fatal"), "Failed");
    assert_eq!(status(&e, "actions.never"), "NotStarted");
    assert!(e["reason"].as_str().unwrap_or_default().contains("actions.fatal"), "{}", e["reason"]);
    Ok(())
});

const LONG: &str = r#"
pipeline:
  name: Long
  identifier: long
  variables:
    - name: dir
      type: String
      value: <+input>
  stages:
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
                  spec: { shell: Bash, source: { type: Inline, spec: { script: "echo two >> <+pipeline.variables.dir>/runs; sleep 3" } } }
              - step:
                  name: Pause here
                  identifier: pause
                  type: Wait
                  spec: { duration: 1s }
              - step:
                  name: Three
                  identifier: three
                  type: ShellScript
                  spec: { shell: Bash, source: { type: Inline, spec: { script: "echo three >> <+pipeline.variables.dir>/runs" } } }
"#;

both_stores!(manager_kill9_mid_execution_resumes_without_rerun, |kind| -> anyhow::Result<()> {
    let mut m = Manager::start(kind)?;
    let _d = local_delegate(&m)?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("long.yaml");
    std::fs::write(&file, LONG)?;
    m.apply(&file)?;
    let runs = dir.path().join("runs");
    let id = m.run_pipeline("long", &["--set", &format!("dir={}", dir.path().display())])?;
    m.wait_node(&id, "work.two", &["Running"], T)?;
    wait_for("step two to start", T, || (count_lines(&runs) == 2).then_some(()))?;

    m.kill9();
    m.restart()?;
    let e = m.wait_execution(&id, &["Succeeded", "Failed", "Aborted"], T)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    let lines = std::fs::read_to_string(&runs)?;
    assert_eq!(lines.lines().collect::<Vec<_>>(), vec!["one", "two", "three"], "no step ran twice");
    for p in ["work.one", "work.two", "work.three"] {
        assert_eq!(node(&e, p)["attempt"], 1, "{p}");
        assert_eq!(node(&e, p)["tasks"].as_array().map(Vec::len), Some(1), "{p}");
    }
    Ok(())
});

both_stores!(pause_resume_and_abort, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?;
    let _d = local_delegate(&m)?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("long.yaml");
    std::fs::write(&file, LONG)?;
    m.apply(&file)?;
    let runs = dir.path().join("runs");
    let set = format!("dir={}", dir.path().display());

    let id = m.run_pipeline("long", &["--set", &set])?;
    m.wait_node(&id, "work.two", &["Running"], T)?;
    m.cli_ok(&["pause", &id])?;
    let e = m.wait_node(&id, "work.two", &["Succeeded"], T)?;
    assert_eq!(e["status"], "Paused");
    std::thread::sleep(Duration::from_millis(1500));
    let e = m.execution(&id)?;
    assert_eq!(status(&e, "work.pause"), "NotStarted", "nothing new starts while paused");
    m.cli_ok(&["resume", &id])?;
    let e = m.wait_execution(&id, &["Succeeded", "Failed", "Aborted"], T)?;
    assert_eq!(e["status"], "Succeeded");

    std::fs::remove_file(&runs)?;
    let id = m.run_pipeline("long", &["--set", &set])?;
    m.wait_node(&id, "work.two", &["Running"], T)?;
    // Running means the task is out; wait until its script has really started.
    wait_for("step two to start", T, || (count_lines(&runs) == 2).then_some(()))?;
    m.cli_ok(&["abort", &id, "--reason", "wrong build"])?;
    let e = m.wait_execution(&id, &["Aborted"], T)?;
    assert_eq!(status(&e, "work.two"), "Aborted");
    assert_eq!(e["reason"], "wrong build");
    let task = node(&e, "work.two")["tasks"][0].as_str().unwrap_or_default().to_string();
    m.wait_state(&task, &["cancelled"], T)?;
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(count_lines(&runs), 2, "step three never ran");
    // Commands on a finished execution are refused with a clear message.
    let out = m.cli(&["resume", &id]);
    assert_eq!(out.status.code(), Some(2));
    Ok(())
});

const SECRET_PIPELINE: &str = r#"
pipeline:
  name: Secret
  identifier: secret
  stages:
    - stage:
        name: Use
        identifier: use
        type: Custom
        spec:
          execution:
            steps:
              - step:
                  name: Use
                  identifier: use
                  type: ShellScript
                  spec:
                    shell: Bash
                    source:
                      type: Inline
                      spec:
                        script: |
                          pw='<+secrets.getValue("env:DB_PASSWORD")>'
                          echo "len=${#pw} value=$pw"
"#;

both_stores!(secret_reference_reaches_the_delegate_unresolved, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?;
    let secret = "s3cr3t-Pipeline-Value-91";
    let _d = Delegate::enrol(
        &m,
        "holder",
        DelegateOpts { env: vec![("DB_PASSWORD".into(), secret.into())], ..Default::default() },
    )?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("secret.yaml");
    std::fs::write(&file, SECRET_PIPELINE)?;
    m.apply(&file)?;
    let id = m.run_pipeline("secret", &["--wait"])?;
    let e = m.execution(&id)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    let log = m.step_logs(&id, "use.use")?;
    assert!(log.contains(&format!("len={}", secret.len())), "the delegate resolved it: {log}");
    assert!(!log.contains(secret), "masked: {log}");
    let dump = store_dump(&m)?;
    let dump = String::from_utf8_lossy(&dump);
    assert!(!dump.contains(secret), "the manager's store never holds the value");
    assert!(dump.contains("env:DB_PASSWORD"), "it holds the reference");
    assert!(!m.log().contains(secret));
    Ok(())
});

const GUARDED: &str = r#"
pipeline:
  name: Guarded
  identifier: guarded
  stages:
    - stage:
        name: Deploy
        identifier: deploy
        type: Deployment
        spec:
          deploymentType: CustomDeployment
          service: { serviceRef: web }
          environment:
            environmentRef: prod
            infrastructureDefinitions: [ { identifier: local_hosts } ]
          execution:
            steps:
              - step:
                  name: Slow deploy
                  identifier: slow
                  type: ShellScript
                  spec: { shell: Bash, source: { type: Inline, spec: { script: "sleep 2" } } }
"#;

both_stores!(one_running_deployment_per_service_and_infrastructure, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?;
    let _d = local_delegate(&m)?;
    m.apply(&examples_dir().join("release.yaml"))?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("guarded.yaml");
    std::fs::write(&file, GUARDED)?;
    m.apply(&file)?;
    let first = m.run_pipeline("guarded", &[])?;
    let second = m.run_pipeline("guarded", &[])?;
    let e2 = m.wait_node(&second, "deploy", &["Queued"], T)?;
    assert_eq!(status(&e2, "deploy.slow"), "NotStarted", "the second waits for the first");
    let e1 = m.wait_execution(&first, &["Succeeded", "Failed", "Aborted"], T)?;
    let e2 = m.wait_execution(&second, &["Succeeded", "Failed", "Aborted"], T)?;
    assert_eq!(e1["status"], "Succeeded");
    assert_eq!(e2["status"], "Succeeded");
    let first_end = node(&e1, "deploy")["endedMs"].as_i64().unwrap_or_default();
    let second_step = node(&e2, "deploy.slow")["startedMs"].as_i64().unwrap_or_default();
    assert!(second_step >= first_end, "stages on the same service + infrastructure never overlap");
    Ok(())
});
