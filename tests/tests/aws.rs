//! AWS targets end to end: the `examples/ecs.yaml` and `examples/lambda.yaml`
//! pipelines applied and run by real `dray` and `dray-delegate` processes
//! against a moto server (see `dray_tests::moto` for what moto does not
//! model; the delegate's unit tests cover those paths with recorded answers).
//!
//! - ECS rolling deploy, then a failing verification that rolls the service
//!   back to the revision recorded by the deploy; a secret reference in the
//!   task definition reaches ECS and is masked in the step logs.
//! - Canary deploy and delete; blue-green create and swap (listener rules
//!   checked through ELBv2), then a failing run whose rollback swaps back.
//! - EcsRunTask waits for the task to stop (the test stops it, as moto's tasks
//!   never exit) and judges its exit code.
//! - An AWS error (ClusterNotFoundException) surfaces with AWS's message and the
//!   error type the stage's failure strategy matches.
//! - Lambda deploy, traffic shift in weighted steps observed on the alias
//!   between steps, and rollback of the alias.

use std::time::Duration;

use dray_tests::moto::{Moto, lambda_zip};
use dray_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(120);
const DB_PASSWORD: &str = "s3cret-Db-Pw-42";

fn aws_delegate(m: &Manager) -> anyhow::Result<Delegate> {
    let env = vec![
        ("AWS_DEPLOY_KEY_ID".to_string(), "AKIDTESTING".to_string()),
        ("AWS_DEPLOY_SECRET".to_string(), "test-secret-key".to_string()),
        ("DB_PASSWORD".to_string(), DB_PASSWORD.to_string()),
    ];
    Delegate::enrol(m, "aws", DelegateOpts { tags: vec!["local".into()], env, ..Default::default() })
}

fn set(args: &mut Vec<String>, k: &str, v: &str) {
    args.push("--set".into());
    args.push(format!("{k}={v}"));
}

fn run(m: &Manager, pipeline: &str, args: &[String]) -> anyhow::Result<String> {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    m.run_pipeline(pipeline, &refs)
}

fn finished(m: &Manager, id: &str) -> anyhow::Result<Value> {
    m.wait_execution(id, &["Succeeded", "Failed", "Aborted", "Errored"], T)
}

/// The common inputs of the ECS pipelines.
fn ecs_inputs(moto: &Moto) -> anyhow::Result<Vec<String>> {
    moto.cluster("demo")?;
    let (subnet, sg, _) = moto.network()?;
    let mut a = Vec::new();
    set(&mut a, "awsEndpoint", &moto.endpoint());
    set(&mut a, "subnet", &subnet);
    set(&mut a, "securityGroup", &sg);
    Ok(a)
}

fn td_of(service: &Value) -> String {
    service["taskDefinition"].as_str().unwrap_or_default().rsplit('/').next().unwrap_or_default().to_string()
}

#[test]
fn ecs_rolling_deploy_rolls_back_to_the_recorded_revision() -> anyhow::Result<()> {
    let moto = Moto::start()?;
    let m = Manager::start(StoreKind::Sqlite)?;
    let _d = aws_delegate(&m)?;
    m.apply(&examples_dir().join("ecs.yaml"))?;
    let inputs = ecs_inputs(&moto)?;

    let id = run(&m, "ecs_rolling", &inputs)?;
    let e = finished(&m, &id)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    let svc = moto.service("demo", "web")?;
    assert_eq!(td_of(&svc), "web:1");
    assert_eq!((svc["runningCount"].as_i64(), svc["desiredCount"].as_i64()), (Some(1), Some(1)));
    let rolling = node(&e, "deploy.rolling");
    assert!(
        rolling["outputs"]["taskDefinitionArn"].as_str().unwrap_or_default().ends_with("web:1"),
        "{rolling:#}"
    );
    assert_eq!(rolling["outputs"]["previousTaskDefinitionArn"], "none");
    let log = m.step_logs(&id, "deploy.rolling")?;
    for needle in [
        "ECS rolling deploy on cluster demo in us-east-1",
        "registered task definition web:1",
        "created service web on web:1 (desired 1)",
        "service running 1/1, 1 deployment(s): PRIMARY web:1",
        "service web is steady: 1 running",
    ] {
        assert!(log.contains(needle), "{needle:?} not in\n{log}");
    }
    // The secret reached ECS, and never the logs.
    let env = moto.py(
        "out = ecs.describe_task_definition(taskDefinition='web:1')['taskDefinition']['containerDefinitions'][0]['environment']",
    )?;
    assert!(
        env.as_array().unwrap().iter().any(|v| v["name"] == "DB_PASSWORD" && v["value"] == DB_PASSWORD),
        "{env}"
    );
    assert!(env.as_array().unwrap().iter().any(|v| v["name"] == "RELEASE" && v["value"] == "1"), "{env}");
    let image = moto.py("out = ecs.describe_task_definition(taskDefinition='web:1')['taskDefinition']['containerDefinitions'][0]['image']")?;
    assert_eq!(image, "public.ecr.aws/nginx/nginx:1.27", "<+artifact.image>");
    assert!(!log.contains(DB_PASSWORD));
    let stored = String::from_utf8_lossy(&store_dump(&m)?).to_string();
    assert!(
        !stored.contains(DB_PASSWORD) && !stored.contains("test-secret-key"),
        "a secret reached the manager"
    );
    // Deploy and rollback record the service on the service's tags.
    let tags = svc["tags"].as_array().cloned().unwrap_or_default();
    assert!(
        tags.iter().any(|t| t["key"] == "dray:deploy-execution" && t["value"] == id.as_str()),
        "{tags:?}"
    );
    // The service's deployment stands for its tasks (moto starts none).
    let instances: Value = serde_json::from_str(&m.cli_ok(&["get", "instances", "-o", "json"])?)?;
    let web = instances
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["service"] == "web_ecs")
        .expect("instances of web_ecs");
    assert_eq!(web["instances"][0]["name"], "web");
    assert_eq!(web["instances"][0]["version"], "web:1");

    // Revision 2 deploys, verification fails, the stage rolls back to web:1.
    let mut broken = inputs.clone();
    set(&mut broken, "breakIt", "yes");
    let id2 = run(&m, "ecs_rolling", &broken)?;
    let e2 = finished(&m, &id2)?;
    assert_eq!(e2["status"], "Failed", "{e2:#}");
    assert_eq!(node(&e2, "deploy.rolling")["status"], "Succeeded");
    assert_eq!(
        node(&e2, "deploy.rolling")["outputs"]["previousTaskDefinitionArn"]
            .as_str()
            .map(|a| a.ends_with("web:1")),
        Some(true)
    );
    assert_eq!(node(&e2, "deploy.rollback.rollback")["status"], "Succeeded", "{e2:#}");
    assert_eq!(node(&e2, "deploy.rollback.rollback")["outputs"]["rolledBack"], "true");
    let log = m.step_logs(&id2, "deploy.rollback.rollback")?;
    assert!(log.contains("rolling service web back from web:2 to web:1"), "{log}");
    assert_eq!(td_of(&moto.service("demo", "web")?), "web:1");
    Ok(())
}

#[test]
fn ecs_canary_and_blue_green_swap_and_swap_back() -> anyhow::Result<()> {
    let moto = Moto::start()?;
    let m = Manager::start(StoreKind::Sqlite)?;
    let _d = aws_delegate(&m)?;
    m.apply(&examples_dir().join("ecs.yaml"))?;
    let inputs = ecs_inputs(&moto)?;

    let id = run(&m, "ecs_canary", &inputs)?;
    let e = finished(&m, &id)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    assert_eq!(node(&e, "canary.canary_deploy")["outputs"]["serviceName"], "web-canary");
    let log = m.step_logs(&id, "canary.canary_deploy")?;
    assert!(log.contains("created service web-canary on web:1 (desired 1)"), "{log}");
    assert!(m.step_logs(&id, "canary.canary_delete")?.contains("deleted service web-canary"));
    let canary = moto.service("demo", "web-canary")?;
    assert!(canary.is_null() || canary["status"] != "ACTIVE", "{canary}");
    assert_eq!(moto.service("demo", "web")?["status"], "ACTIVE");
    // Each report covers the whole deployment; with the canary gone, the
    // main service is what runs.
    let instances: Value = serde_json::from_str(&m.cli_ok(&["get", "instances", "-o", "json"])?)?;
    let group =
        instances.as_array().unwrap().iter().find(|g| g["service"] == "web_ecs").cloned().unwrap_or_default();
    let recorded: Vec<&str> =
        group["instances"].as_array().into_iter().flatten().filter_map(|i| i["name"].as_str()).collect();
    assert_eq!(recorded, ["web"], "{instances:#}");

    let bg = moto.blue_green()?;
    let s = |k: &str| bg[k].as_str().unwrap_or_default().to_string();
    let mut a = inputs.clone();
    for (k, v) in [
        ("prodListener", "prodListener"),
        ("prodRule", "prodRule"),
        ("stageListener", "stageListener"),
        ("stageRule", "stageRule"),
    ] {
        set(&mut a, k, &s(v));
    }
    assert_eq!(moto.rule_target(&s("prodRule"))?, s("blue"));
    let id = run(&m, "ecs_blue_green", &a)?;
    let e = finished(&m, &id)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    // The first slot went up behind the stage group (green), then took production.
    let blue_svc = moto.service("demo", "checkout-blue")?;
    assert_eq!(blue_svc["loadBalancers"][0]["targetGroupArn"], s("green").as_str());
    assert_eq!(moto.rule_target(&s("prodRule"))?, s("green"));
    assert_eq!(moto.rule_target(&s("stageRule"))?, s("blue"));
    assert_eq!(node(&e, "bg.swap")["outputs"]["prodServiceName"], "checkout-blue");

    // Release 2 goes to the other slot behind the stage group (now blue), is
    // swapped in, fails verification, and the rollback swaps back.
    let mut broken = a.clone();
    set(&mut broken, "tag", "1.28");
    set(&mut broken, "breakIt", "yes");
    let id2 = run(&m, "ecs_blue_green", &broken)?;
    let e2 = finished(&m, &id2)?;
    assert_eq!(e2["status"], "Failed", "{e2:#}");
    let green_svc = moto.service("demo", "checkout-green")?;
    assert_eq!(green_svc["loadBalancers"][0]["targetGroupArn"], s("blue").as_str());
    assert_eq!(td_of(&green_svc), "checkout:2");
    let swap_log = m.step_logs(&id2, "bg.swap")?;
    assert!(
        swap_log.contains(&format!("swapped: production now forwards to {} (checkout-green)", s("blue"))),
        "{swap_log}"
    );
    assert_eq!(node(&e2, "bg.rollback.swap_back")["outputs"]["rolledBack"], "true", "{e2:#}");
    assert_eq!(moto.rule_target(&s("prodRule"))?, s("green"), "swapped back");
    assert_eq!(moto.rule_target(&s("stageRule"))?, s("blue"));
    Ok(())
}

#[test]
fn ecs_run_task_and_aws_errors() -> anyhow::Result<()> {
    let moto = Moto::start()?;
    let m = Manager::start(StoreKind::Sqlite)?;
    let _d = aws_delegate(&m)?;
    m.apply(&examples_dir().join("ecs.yaml"))?;
    let inputs = ecs_inputs(&moto)?;

    let id = run(&m, "ecs_run_task", &inputs)?;
    // moto's tasks never exit: stop it as its container would.
    let task = wait_for("the task to start", T, || {
        let e = m.execution(&id).ok()?;
        assert_eq!(e["status"], "Running", "{e:#}");
        let v = moto.py("out = ecs.list_tasks(cluster='demo')['taskArns']").ok()?;
        v.as_array()?.first()?.as_str().map(str::to_string)
    })?;
    m.wait_node(&id, "migrate.migrate", &["Running"], T)?;
    moto.py(&format!(
        "out = ecs.stop_task(cluster='demo', task='{task}', reason='done')['task']['lastStatus']"
    ))?;
    let e = finished(&m, &id)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    let log = m.step_logs(&id, "migrate.migrate")?;
    for needle in [
        "registered task definition web-migrate:1",
        "started task",
        ": STOPPED",
        "every container exited with code 0",
    ] {
        assert!(log.contains(needle), "{needle:?} not in\n{log}");
    }
    let started = moto.py(&format!(
        "t = ecs.describe_tasks(cluster='demo', tasks=['{task}'])['tasks'][0]\nout = [t['launchType'], t['overrides']]"
    ))?;
    assert_eq!(started[0], "FARGATE");

    // A cluster that does not exist: AWS's error, typed for failure strategies.
    let mut missing = inputs.clone();
    set(&mut missing, "cluster", "nope");
    let id = run(&m, "ecs_rolling", &missing)?;
    let e = finished(&m, &id)?;
    assert_eq!(e["status"], "Failed");
    let rolling = node(&e, "deploy.rolling");
    assert_eq!(rolling["failureType"], "Unknown", "{rolling:#}");
    let msg = rolling["failure"].as_str().unwrap_or_default();
    assert!(msg.contains("ClusterNotFoundException"), "{msg}");
    // The stage's AllErrors → StageRollback strategy matched: the rollback ran.
    assert_eq!(node(&e, "deploy.rollback.rollback")["status"], "Succeeded", "{e:#}");
    assert!(
        m.step_logs(&id, "deploy.rollback.rollback")?
            .contains("cluster nope does not exist: nothing to roll back")
    );
    Ok(())
}

#[test]
fn lambda_deploy_traffic_shift_and_rollback() -> anyhow::Result<()> {
    let moto = Moto::start()?;
    let role = moto.lambda_role()?;
    let dir = tempfile::tempdir()?;
    let zip = lambda_zip(dir.path(), "def handler(event, context):\n    return event\n")?;
    let sum = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(std::fs::read(&zip)?))
    };
    let m = Manager::start(StoreKind::Sqlite)?;
    let _d = aws_delegate(&m)?;
    m.apply(&examples_dir().join("ecs.yaml"))?;
    m.apply(&examples_dir().join("lambda.yaml"))?;
    let mut a = Vec::new();
    set(&mut a, "awsEndpoint", &moto.endpoint());
    set(&mut a, "codeZip", &zip.display().to_string());
    set(&mut a, "role", &role);
    let with = |pairs: &[(&str, &str)]| {
        let mut x = a.clone();
        for (k, v) in pairs {
            set(&mut x, k, v);
        }
        x
    };

    // A new function: version 1, the alias created on it.
    let id = run(&m, "lambda_release", &with(&[("stepWait", "1s"), ("codeSha256", &sum)]))?;
    let e = finished(&m, &id)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    assert_eq!(node(&e, "release.deploy")["outputs"]["version"], "1");
    assert_eq!(node(&e, "release.deploy")["outputs"]["previousVersion"], "none");
    assert_eq!(moto.alias("hello", "live")?["FunctionVersion"], "1");
    let log = m.step_logs(&id, "release.deploy")?;
    assert!(log.contains("created function hello") && log.contains("published version 1"), "{log}");

    // Version 2: traffic moves 10% → 50% → 100%, observed between steps.
    let id = run(&m, "lambda_release", &with(&[("stepWait", "4s"), ("codeSha256", &sum)]))?;
    let mut seen: Vec<String> = Vec::new();
    let e = wait_for("the shift to finish", T, || {
        if let Ok(alias) = moto.alias("hello", "live") {
            let w = alias["RoutingConfig"]["AdditionalVersionWeights"]["2"].as_f64();
            let state = format!(
                "{}:{}",
                alias["FunctionVersion"].as_str().unwrap_or_default(),
                w.map(|w| w.to_string()).unwrap_or_default()
            );
            if seen.last() != Some(&state) {
                seen.push(state);
            }
        }
        let e = m.execution(&id).ok()?;
        ["Succeeded", "Failed"].contains(&e["status"].as_str().unwrap_or_default()).then_some(e)
    })?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    for state in ["1:0.1", "1:0.5"] {
        assert!(seen.contains(&state.to_string()), "{state} not observed in {seen:?}");
    }
    let alias = moto.alias("hello", "live")?;
    assert_eq!(alias["FunctionVersion"], "2");
    assert!(
        alias["RoutingConfig"]["AdditionalVersionWeights"].as_object().is_none_or(|w| w.is_empty()),
        "{alias}"
    );
    let log = m.step_logs(&id, "release.shift")?;
    assert!(log.contains("alias live: 10% to version 2, 90% to version 1"), "{log}");
    assert!(log.contains("alias live: 100% to version 2"), "{log}");
    assert!(log.contains("check at 50%: invoke of hello:live succeeded"), "{log}");

    // Version 3 fails verification: the alias goes back to version 2.
    let broken = with(&[("stepWait", "1s"), ("codeSha256", &sum), ("breakIt", "yes")]);
    let id = run(&m, "lambda_release", &broken)?;
    let e = finished(&m, &id)?;
    assert_eq!(e["status"], "Failed", "{e:#}");
    assert_eq!(node(&e, "release.rollback.rollback")["outputs"]["rolledBack"], "true", "{e:#}");
    assert!(m.step_logs(&id, "release.rollback.rollback")?.contains("alias live back on version 2 (from 3)"));
    assert_eq!(moto.alias("hello", "live")?["FunctionVersion"], "2");

    // A zip that is not what the pipeline expects never reaches Lambda.
    let id = run(&m, "lambda_release", &with(&[("stepWait", "1s"), ("codeSha256", &"0".repeat(64))]))?;
    let e = finished(&m, &id)?;
    assert_eq!(node(&e, "release.deploy")["failureType"], "Verification", "{e:#}");
    assert!(
        node(&e, "release.deploy")["failure"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!(": sha256 is {sum}, expected {}", "0".repeat(64)))
    );
    Ok(())
}

#[test]
fn aws_calls_go_through_the_delegate_proxy() -> anyhow::Result<()> {
    let moto = Moto::start()?;
    let proxy = dray_tests::proxy_peer::Tinyproxy::start()?;
    let m = Manager::start(StoreKind::Sqlite)?;
    let env = vec![
        ("AWS_DEPLOY_KEY_ID".to_string(), "AKIDTESTING".to_string()),
        ("AWS_DEPLOY_SECRET".to_string(), "test-secret-key".to_string()),
        ("DB_PASSWORD".to_string(), DB_PASSWORD.to_string()),
        // The emulator's endpoint is plain http: HTTP_PROXY applies to it.
        ("HTTP_PROXY".to_string(), proxy.url()),
    ];
    let _d =
        Delegate::enrol(&m, "aws", DelegateOpts { tags: vec!["local".into()], env, ..Default::default() })?;
    m.apply(&examples_dir().join("ecs.yaml"))?;
    let inputs = ecs_inputs(&moto)?;
    let id = run(&m, "ecs_rolling", &inputs)?;
    let e = finished(&m, &id)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    let relayed = proxy.requests();
    let to_moto = format!("POST {}/ HTTP/1.1", moto.endpoint());
    assert!(relayed.iter().any(|r| r == &to_moto), "{to_moto:?} not in {relayed:?}");
    Ok(())
}

/// A connector without keys (the delegate's default chain) that assumes a role.
const CHAIN_YAML: &str = r#"
connector:
  name: AWS from the delegate
  identifier: aws_chain
  type: Aws
  spec:
    delegateSelectors: [local]
    region: us-east-1
    endpoint: <+pipeline.variables.awsEndpoint>
    credential:
      type: InheritFromDelegate
      crossAccountAccess:
        crossAccountRoleArn: arn:aws:iam::123456789012:role/deployer
        externalId: dray-e2e
---
infrastructureDefinition:
  name: ECS via the delegate's identity
  identifier: ecs_chain
  environmentRef: staging
  deploymentType: ECS
  type: Ecs
  spec:
    connectorRef: aws_chain
    cluster: demo
---
pipeline:
  name: ECS with the delegate's identity
  identifier: ecs_chain
  variables:
    - {name: awsEndpoint, type: String, value: <+input>}
    - {name: subnet, type: String, value: <+input>}
    - {name: securityGroup, type: String, value: <+input>}
  stages:
    - stage:
        name: Deploy
        identifier: deploy
        type: Deployment
        spec:
          deploymentType: ECS
          service: {serviceRef: web_ecs}
          environment:
            environmentRef: staging
            infrastructureDefinitions: [{identifier: ecs_chain}]
          execution:
            steps:
              - step: {name: Rolling deploy, identifier: rolling, type: EcsRollingDeploy, timeout: 5m, spec: {}}
"#;

#[test]
fn credentials_from_the_delegate_chain_with_an_assumed_role() -> anyhow::Result<()> {
    let moto = Moto::start()?;
    let m = Manager::start(StoreKind::Sqlite)?;
    m.apply(&examples_dir().join("ecs.yaml"))?;
    let dir = tempfile::tempdir()?;
    let extra = dir.path().join("chain.yaml");
    std::fs::write(&extra, CHAIN_YAML)?;
    m.apply(&extra)?;
    let inputs = ecs_inputs(&moto)?;

    // The delegate's environment is the default chain's first source.
    let env = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), "AKIDCHAIN".to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), "chain-secret".to_string()),
        ("DB_PASSWORD".to_string(), DB_PASSWORD.to_string()),
    ];
    let d =
        Delegate::enrol(&m, "aws", DelegateOpts { tags: vec!["local".into()], env, ..Default::default() })?;
    let id = run(&m, "ecs_chain", &inputs)?;
    let e = finished(&m, &id)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    let log = m.step_logs(&id, "deploy.rolling")?;
    // STS (moto's) answered the AssumeRole: its temporary keys start with ASIA.
    assert!(
        log.contains(
            "AWS credentials: the delegate's default credential chain, assumed role \
             arn:aws:iam::123456789012:role/deployer (access key ASIA…)"
        ),
        "{log}"
    );
    drop(d);

    // A delegate with no identity at all: an Authentication failure that says so.
    let env = vec![("DB_PASSWORD".to_string(), DB_PASSWORD.to_string())];
    let _d =
        Delegate::enrol(&m, "bare", DelegateOpts { tags: vec!["local".into()], env, ..Default::default() })?;
    let id = run(&m, "ecs_chain", &inputs)?;
    let e = finished(&m, &id)?;
    let rolling = node(&e, "deploy.rolling");
    assert_eq!(rolling["failureType"], "Authentication", "{rolling:#}");
    let msg = rolling["failure"].as_str().unwrap_or_default();
    assert!(msg.contains("no AWS credentials from the delegate's default credential chain"), "{msg}");
    Ok(())
}
