//! Kubernetes deployments end to end: real `dray` + `dray-delegate` against the
//! Kubernetes API emulator (TLS, bearer token), with the test playing the
//! Deployment controller (`K8sPeer::controller`): images tagged `:broken` fail
//! their rollout (`ProgressDeadlineExceeded`), `:stuck` never become ready.

use std::time::Duration;

use dray_tests::k8s_peer::{K8sOpts, K8sPeer};
use dray_tests::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(90);
const FINAL: &[&str] = &["Succeeded", "Failed", "Aborted"];

fn k8s_delegate(m: &Manager, peer: &K8sPeer) -> anyhow::Result<Delegate> {
    Delegate::enrol(
        m,
        "k8s",
        DelegateOpts {
            tags: vec!["k8s".into()],
            env: vec![("K8S_TOKEN".into(), peer.token.clone()), ("K8S_BAD_TOKEN".into(), "wrong".into())],
            ..Default::default()
        },
    )
}

fn status<'a>(e: &'a Value, path: &str) -> &'a str {
    node(e, path)["status"].as_str().unwrap_or_default()
}

fn image(d: &Value) -> &str {
    d.pointer("/spec/template/spec/containers/0/image").and_then(Value::as_str).unwrap_or_default()
}

/// The `dray.instances` output of a step, parsed.
fn instances(e: &Value, path: &str) -> Vec<Value> {
    let raw = node(e, path)["outputs"]["dray.instances"].as_str().unwrap_or("[]");
    serde_json::from_str(raw).unwrap_or_default()
}

/// The release history kept in the cluster.
fn history(peer: &K8sPeer, ns: &str, release: &str) -> anyhow::Result<Value> {
    use base64::Engine as _;
    let s = peer
        .get(&format!("/api/v1/namespaces/{ns}/secrets/release-{release}"))?
        .ok_or_else(|| anyhow::anyhow!("no release history"))?;
    let raw =
        base64::engine::general_purpose::STANDARD.decode(s["data"]["history"].as_str().unwrap_or(""))?;
    Ok(serde_json::from_slice(&raw)?)
}

fn revisions(peer: &K8sPeer, ns: &str, release: &str) -> anyhow::Result<Vec<(u64, String)>> {
    let h = history(peer, ns, release)?;
    Ok(h["revisions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| (r["number"].as_u64().unwrap_or(0), r["status"].as_str().unwrap_or("").to_string()))
        .collect())
}

/// Entities for one namespace and a pipeline whose Deployment stage runs `steps`
/// and, on failure (StageRollback), `rollback`.
fn pipeline_yaml(
    id: &str,
    ns: &str,
    kubeconfig: &str,
    steps: &str,
    rollback: &str,
    token_env: &str,
) -> String {
    let indent = |s: &str, n: usize| s.lines().map(|l| format!("{}{l}\n", " ".repeat(n))).collect::<String>();
    format!(
        r#"connector:
  name: Cluster {id}
  identifier: cluster_{id}
  type: K8sCluster
  spec:
    credential:
      type: KubeconfigFile
      spec:
        path: {kubeconfig}
        token: <+secrets.getValue("env:{token_env}")>
    delegateSelectors: [k8s]
---
service:
  name: App {id}
  identifier: app_{id}
  serviceDefinition:
    type: Kubernetes
    spec:
      artifacts:
        primary:
          type: DockerRegistry
          spec:
            imagePath: registry.local/app
            tag: <+pipeline.variables.tag>
      manifests:
        - manifest:
            identifier: values
            type: Values
            spec:
              content: |
                image: <+artifact.image>
        - manifest:
            identifier: app
            type: K8sManifest
            spec:
              content: |
                apiVersion: apps/v1
                kind: Deployment
                metadata:
                  name: app
                spec:
                  replicas: 2
                  selector:
                    matchLabels: {{app: app}}
                  template:
                    metadata:
                      labels: {{app: app}}
                    spec:
                      containers:
                        - name: app
                          image: {{{{ .Values.image }}}}
                ---
                apiVersion: v1
                kind: Service
                metadata:
                  name: app
                spec:
                  selector: {{app: app}}
                  ports: [{{port: 80}}]
---
environment:
  name: Env {id}
  identifier: env_{id}
  type: PreProduction
---
infrastructureDefinition:
  name: Infra {id}
  identifier: infra_{id}
  environmentRef: env_{id}
  deploymentType: Kubernetes
  type: KubernetesDirect
  spec:
    connectorRef: cluster_{id}
    namespace: {ns}
    releaseName: app-{ns}
---
pipeline:
  name: P {id}
  identifier: {id}
  variables:
    - name: tag
      type: String
      value: <+input>
  stages:
    - stage:
        name: Deploy
        identifier: deploy
        type: Deployment
        failureStrategies:
          - onFailure:
              errors: [Authorization]
              action:
                type: MarkAsFailure
          - onFailure:
              errors: [AllErrors]
              action:
                type: StageRollback
        spec:
          deploymentType: Kubernetes
          service:
            serviceRef: app_{id}
          environment:
            environmentRef: env_{id}
            infrastructureDefinitions:
              - identifier: infra_{id}
          execution:
            steps:
{steps}            rollbackSteps:
{rollback}"#,
        steps = indent(steps, 14),
        rollback = indent(rollback, 14),
    )
}

fn setup(opts: K8sOpts) -> anyhow::Result<(K8sPeer, Manager, Delegate, tempfile::TempDir)> {
    let peer = K8sPeer::start(opts)?;
    let m = Manager::start(StoreKind::Sqlite)?;
    let d = k8s_delegate(&m, &peer)?;
    Ok((peer, m, d, tempfile::tempdir()?))
}

fn apply_yaml(m: &Manager, dir: &tempfile::TempDir, name: &str, yaml: &str) -> anyhow::Result<()> {
    let path = dir.path().join(name);
    std::fs::write(&path, yaml)?;
    m.apply(&path)?;
    Ok(())
}

#[test]
fn example_canary_then_rolling_and_rollback() -> anyhow::Result<()> {
    let peer = K8sPeer::start(K8sOpts { kubeconfig_without_token: true, ..Default::default() })?;
    let _controller = peer.controller();
    let m = Manager::start(StoreKind::Sqlite)?;
    let _d = k8s_delegate(&m, &peer)?;
    m.apply(&examples_dir().join("k8s.yaml"))?;
    let kubeconfig = format!("kubeconfig={}", peer.kubeconfig().display());

    let id = m.run_pipeline("k8s", &["--set", &kubeconfig, "--set", "tag=1.27"])?;
    let e = m.wait_execution(&id, FINAL, T)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}\n{}", m.step_logs(&id, "deploy.canary").unwrap_or_default());
    // The canary ran at 25 % of 4 replicas and reported its own pod.
    assert_eq!(node(&e, "deploy.canary")["outputs"]["canaryReplicas"], "1");
    let canary = instances(&e, "deploy.canary");
    assert_eq!(canary.len(), 1, "{canary:?}");
    assert_eq!(canary[0]["version"], "nginx:1.27");
    assert_eq!(canary[0]["details"]["track"], "canary");
    assert!(peer.deployment("web", "web-canary")?.is_none(), "the canary was deleted");
    let web = peer.deployment("web", "web")?.expect("the release's Deployment");
    assert_eq!(image(&web), "nginx:1.27");
    assert_eq!(web["spec"]["replicas"], 4);
    assert_eq!(web["metadata"]["labels"]["dray.io/release"], "web-staging");
    let cm = peer.get("/api/v1/namespaces/web/configmaps/web-config")?.expect("configmap");
    assert_eq!(cm["data"]["GREETING"], "hello from Staging");
    let pods = instances(&e, "deploy.rolling");
    assert_eq!(pods.len(), 4, "{pods:?}");
    // `dray get instances` shows what the latest deploy to the target left running.
    let listed: Value =
        serde_json::from_str(&m.cli_ok(&["get", "instances", "--service", "k8s_web", "-o", "json"])?)?;
    let groups = listed.as_array().expect("a list of groups");
    assert_eq!(groups.len(), 1, "{listed:#}");
    assert_eq!(
        (groups[0]["environment"].as_str(), groups[0]["infrastructure"].as_str(), groups[0]["step"].as_str()),
        (Some("k8s_staging"), Some("staging_cluster"), Some("deploy.rolling"))
    );
    assert_eq!(groups[0]["instances"].as_array().map(Vec::len), Some(4), "{listed:#}");
    let table = m.cli_ok(&["get", "instances"])?;
    assert!(table.contains("web/") && table.contains("nginx:1.27"), "{table}");
    for p in &pods {
        assert_eq!(
            (p["host"].as_str(), p["namespace"].as_str(), p["version"].as_str()),
            (Some("node-1"), Some("web"), Some("nginx:1.27"))
        );
        assert_eq!(p["status"], "Running");
    }
    assert_eq!(revisions(&peer, "web", "web-staging")?, vec![(1, "Succeeded".to_string())]);
    let log = m.step_logs(&id, "deploy.rolling")?;
    assert!(log.contains("applied Deployment web/web"), "{log}");
    assert!(log.contains("Deployment web rolled out"), "{log}");
    assert!(!log.contains(&peer.token), "the token never shows");

    let id = m.run_pipeline("k8s", &["--set", &kubeconfig, "--set", "tag=1.28"])?;
    let e = m.wait_execution(&id, FINAL, T)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    assert_eq!(image(&peer.deployment("web", "web")?.unwrap()), "nginx:1.28");

    // A broken image: the canary's rollout fails (Verification), the stage rolls
    // back: the canary is deleted and the rolling rollback leaves the release
    // alone, since this stage never deployed a revision.
    let id = m.run_pipeline("k8s", &["--set", &kubeconfig, "--set", "tag=broken"])?;
    let e = m.wait_execution(&id, FINAL, T)?;
    assert_eq!(e["status"], "Failed");
    let canary = node(&e, "deploy.canary");
    assert_eq!(canary["failureType"], "Verification", "{canary:#}");
    assert_eq!(
        canary["failure"],
        "Deployment web/web-canary failed to roll out: ProgressDeadlineExceeded: ReplicaSet \"web-canary-7d4b9c\" has timed out progressing."
    );
    assert_eq!(status(&e, "deploy.rollback.rollback_canary"), "Succeeded");
    assert_eq!(status(&e, "deploy.rollback.rollback"), "Succeeded");
    assert!(m.step_logs(&id, "deploy.rollback.rollback")?.contains("not deployed by this stage"));
    assert!(peer.deployment("web", "web-canary")?.is_none());
    assert_eq!(image(&peer.deployment("web", "web")?.unwrap()), "nginx:1.28");
    Ok(())
}

#[test]
fn failed_rollouts_roll_back_to_the_previous_revision() -> anyhow::Result<()> {
    let (peer, m, _d, dir) = setup(K8sOpts::default())?;
    let _controller = peer.controller();
    let steps = "- step:\n    name: Rolling\n    identifier: rolling\n    type: K8sRollingDeploy\n    timeout: 8s\n    spec: {}\n";
    let rollback = "- step:\n    name: Rollback\n    identifier: rollback\n    type: K8sRollingRollback\n    timeout: 30s\n    spec: {}\n";
    let kc = peer.kubeconfig().display().to_string();
    apply_yaml(&m, &dir, "p.yaml", &pipeline_yaml("rolling", "roll", &kc, steps, rollback, "K8S_TOKEN"))?;

    let id = m.run_pipeline("rolling", &["--set", "tag=v1"])?;
    let e = m.wait_execution(&id, FINAL, T)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    assert_eq!(node(&e, "deploy.rolling")["outputs"]["releaseNumber"], "1");

    // The cluster reports the rollout failed: Verification, with its reason.
    let id = m.run_pipeline("rolling", &["--set", "tag=broken"])?;
    let e = m.wait_execution(&id, FINAL, T)?;
    assert_eq!(e["status"], "Failed");
    let step = node(&e, "deploy.rolling");
    assert_eq!(step["failureType"], "Verification", "{step:#}");
    assert!(
        step.to_string()
            .contains("ProgressDeadlineExceeded: ReplicaSet \\\"app-7d4b9c\\\" has timed out progressing."),
        "{step}"
    );
    assert_eq!(
        status(&e, "deploy.rollback.rollback"),
        "Succeeded",
        "{:#}",
        node(&e, "deploy.rollback.rollback")
    );
    assert_eq!(image(&peer.deployment("roll", "app")?.unwrap()), "registry.local/app:v1", "v1 restored");
    let log = m.step_logs(&id, "deploy.rollback.rollback")?;
    assert!(log.contains("rolling back from revision 2 to revision 1"), "{log}");
    assert_eq!(
        revisions(&peer, "roll", "app-roll")?,
        vec![(1, "Succeeded".into()), (2, "RolledBack".into())]
    );

    // A rollout that never becomes ready runs out the step timeout: Timeout.
    let id = m.run_pipeline("rolling", &["--set", "tag=stuck"])?;
    let e = m.wait_execution(&id, FINAL, T)?;
    assert_eq!(e["status"], "Failed");
    let step = node(&e, "deploy.rolling");
    assert_eq!(step["failureType"], "Timeout", "{step:#}");
    assert!(step.to_string().contains("timed out waiting for Deployment roll/app to roll out"), "{step}");
    assert_eq!(image(&peer.deployment("roll", "app")?.unwrap()), "registry.local/app:v1");
    assert_eq!(revisions(&peer, "roll", "app-roll")?.last().unwrap(), &(3, "RolledBack".to_string()));
    Ok(())
}

#[test]
fn blue_green_deploy_swap_and_swap_back() -> anyhow::Result<()> {
    let (peer, m, _d, dir) = setup(K8sOpts::default())?;
    let _controller = peer.controller();
    // The last step fails when the tag says so, after the swap: the rollback swaps back.
    let steps = "\
- step:
    name: Deploy stage colour
    identifier: bg
    type: K8sBlueGreenDeploy
    timeout: 30s
    spec: {}
- step:
    name: Swap
    identifier: swap
    type: K8sBGSwapServices
    timeout: 30s
    spec: {}
- step:
    name: Verify
    identifier: verify
    type: ShellScript
    spec:
      shell: Bash
      source:
        type: Inline
        spec:
          script: '[ \"<+pipeline.variables.tag>\" != v3 ]'
";
    let rollback = "- step:\n    name: Swap back\n    identifier: swap_back\n    type: K8sBGSwapServices\n    timeout: 30s\n    spec: {}\n";
    let kc = peer.kubeconfig().display().to_string();
    apply_yaml(&m, &dir, "p.yaml", &pipeline_yaml("bluegreen", "bg", &kc, steps, rollback, "K8S_TOKEN"))?;
    let selects = |svc: &str| -> anyhow::Result<String> {
        let s = peer.service("bg", svc)?.ok_or_else(|| anyhow::anyhow!("no Service {svc}"))?;
        Ok(s["spec"]["selector"]["dray.io/color"].as_str().unwrap_or("").to_string())
    };

    let id = m.run_pipeline("bluegreen", &["--set", "tag=v1"])?;
    let e = m.wait_execution(&id, FINAL, T)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    assert_eq!(node(&e, "deploy.bg")["outputs"]["stageColor"], "blue");
    assert_eq!(
        (selects("app")?, selects("app-stage")?),
        ("blue".into(), "blue".into()),
        "first deploy: both blue"
    );
    assert_eq!(instances(&e, "deploy.bg").len(), 2);

    let id = m.run_pipeline("bluegreen", &["--set", "tag=v2"])?;
    let e = m.wait_execution(&id, FINAL, T)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    assert_eq!(node(&e, "deploy.bg")["outputs"]["stageColor"], "green");
    assert_eq!(image(&peer.deployment("bg", "app-green")?.unwrap()), "registry.local/app:v2");
    assert_eq!(image(&peer.deployment("bg", "app-blue")?.unwrap()), "registry.local/app:v1");
    assert_eq!((selects("app")?, selects("app-stage")?), ("green".into(), "blue".into()), "swapped");
    let swapped = instances(&e, "deploy.swap");
    assert!(
        swapped.iter().all(|p| p["version"] == "registry.local/app:v2" && p["details"]["color"] == "green"),
        "{swapped:?}"
    );

    // v3 goes to blue and is swapped in, then verification fails: swapped back.
    let id = m.run_pipeline("bluegreen", &["--set", "tag=v3"])?;
    let e = m.wait_execution(&id, FINAL, T)?;
    assert_eq!(e["status"], "Failed");
    assert_eq!(status(&e, "deploy.swap"), "Succeeded");
    assert_eq!(status(&e, "deploy.rollback.swap_back"), "Succeeded");
    assert_eq!(image(&peer.deployment("bg", "app-blue")?.unwrap()), "registry.local/app:v3");
    assert_eq!((selects("app")?, selects("app-stage")?), ("green".into(), "blue".into()), "back on green");
    assert!(
        m.step_logs(&id, "deploy.rollback.swap_back")?
            .contains("primary Service app now selects green (was blue)")
    );
    Ok(())
}

#[test]
fn apply_scale_and_delete() -> anyhow::Result<()> {
    let (peer, m, _d, dir) = setup(K8sOpts::default())?;
    let _controller = peer.controller();
    let extra = dir.path().join("extra.yaml");
    std::fs::write(
        &extra,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\ndata: {k: from-file}\n",
    )?;
    let steps = format!(
        "\
- step:
    name: Rolling
    identifier: rolling
    type: K8sRollingDeploy
    timeout: 30s
    spec: {{}}
- step:
    name: Apply file
    identifier: apply_file
    type: K8sApply
    timeout: 30s
    spec:
      filePaths: [{}]
- step:
    name: Apply inline
    identifier: apply_inline
    type: K8sApply
    timeout: 30s
    spec:
      skipSteadyStateCheck: true
      manifestContent: |
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: worker}}
        spec:
          replicas: 1
          selector: {{matchLabels: {{app: worker}}}}
          template:
            metadata: {{labels: {{app: worker}}}}
            spec: {{containers: [{{name: w, image: 'registry.local/worker:<+pipeline.variables.tag>'}}]}}
- step:
    name: Scale up
    identifier: scale_up
    type: K8sScale
    timeout: 30s
    spec:
      workload: Deployment/app
      instanceSelection: {{type: Count, spec: {{count: 5}}}}
- step:
    name: Scale down
    identifier: scale_down
    type: K8sScale
    timeout: 30s
    spec:
      workload: Deployment/app
      instanceSelection: {{type: Percentage, spec: {{percentage: 40}}}}
- step:
    name: Delete worker
    identifier: delete_worker
    type: K8sDelete
    timeout: 30s
    spec:
      deleteResources: {{type: ResourceName, spec: {{resourceNames: [Deployment/worker, ConfigMap/nothing]}}}}
- step:
    name: Delete file
    identifier: delete_file
    type: K8sDelete
    timeout: 30s
    spec:
      deleteResources: {{type: ManifestPath, spec: {{manifestPaths: [{}]}}}}
- step:
    name: Delete release
    identifier: delete_release
    type: K8sDelete
    timeout: 30s
    spec:
      deleteResources: {{type: ReleaseName, spec: {{}}}}
",
        extra.display(),
        extra.display()
    );
    let kc = peer.kubeconfig().display().to_string();
    apply_yaml(
        &m,
        &dir,
        "p.yaml",
        &pipeline_yaml("ops", "ops", &kc, &steps, "[]", "K8S_TOKEN")
            .replace("rollbackSteps:\n              []\n", "rollbackSteps: []\n"),
    )?;
    let id = m.run_pipeline("ops", &["--set", "tag=v1"])?;
    let e = m.wait_execution(&id, FINAL, T)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}");
    assert_eq!(node(&e, "deploy.scale_up")["outputs"]["replicas"], "5");
    assert_eq!(instances(&e, "deploy.scale_up").len(), 5);
    assert_eq!(node(&e, "deploy.scale_down")["outputs"]["replicas"], "2");
    assert_eq!(instances(&e, "deploy.scale_down").len(), 2);
    assert_eq!(node(&e, "deploy.delete_worker")["outputs"]["deleted"], "1");
    let log = m.step_logs(&id, "deploy.delete_worker")?;
    assert!(
        log.contains("deleted Deployment ops/worker") && log.contains("ConfigMap ops/nothing does not exist"),
        "{log}"
    );
    assert!(m.step_logs(&id, "deploy.apply_file")?.contains("applied ConfigMap ops/extra"));
    assert!(peer.get("/api/v1/namespaces/ops/configmaps/extra")?.is_none(), "deleted by manifest");
    // The release: its Deployment, Service and history are gone.
    assert!(peer.deployment("ops", "app")?.is_none());
    assert!(peer.service("ops", "app")?.is_none());
    assert!(peer.get("/api/v1/namespaces/ops/secrets/release-app-ops")?.is_none());
    Ok(())
}

#[test]
fn api_errors_carry_the_server_message_and_a_matchable_type() -> anyhow::Result<()> {
    let (peer, m, _d, dir) =
        setup(K8sOpts { forbid_namespaces: vec!["locked".into()], ..Default::default() })?;
    let _controller = peer.controller();
    let kc = peer.kubeconfig().display().to_string();
    let rolling = "- step:\n    name: Rolling\n    identifier: rolling\n    type: K8sRollingDeploy\n    timeout: 30s\n    spec: {}\n";
    let marker = "- step:\n    name: Rolled back\n    identifier: rolled_back\n    type: ShellScript\n    spec:\n      shell: Bash\n      source:\n        type: Inline\n        spec:\n          script: echo rolled back\n";

    // 403 in a forbidden namespace: Authorization, matched by its own strategy
    // (MarkAsFailure: no rollback), with the server's message.
    apply_yaml(
        &m,
        &dir,
        "locked.yaml",
        &pipeline_yaml("locked", "locked", &kc, rolling, marker, "K8S_TOKEN"),
    )?;
    let id = m.run_pipeline("locked", &["--set", "tag=v1"])?;
    let e = m.wait_execution(&id, FINAL, T)?;
    assert_eq!(e["status"], "Failed");
    let step = node(&e, "deploy.rolling");
    assert_eq!(step["failureType"], "Authorization", "{step:#}");
    assert!(
        step.to_string().contains(
            "secrets \\\"release-app-locked\\\" is forbidden: User \\\"dray\\\" cannot patch resource \\\"secrets\\\" in API group \\\"\\\" in the namespace \\\"locked\\\" (Forbidden, HTTP 403)"
        ),
        "{step}"
    );
    assert_eq!(
        status(&e, "deploy.rollback.rolled_back"),
        "NotStarted",
        "MarkAsFailure matched, not StageRollback: {e:#}"
    );

    // 401 with a wrong token: Authentication (AllErrors → StageRollback here).
    apply_yaml(
        &m,
        &dir,
        "badtoken.yaml",
        &pipeline_yaml("badtoken", "other", &kc, rolling, marker, "K8S_BAD_TOKEN"),
    )?;
    let id = m.run_pipeline("badtoken", &["--set", "tag=v1"])?;
    let e = m.wait_execution(&id, FINAL, T)?;
    let step = node(&e, "deploy.rolling");
    assert_eq!(step["failureType"], "Authentication", "{step:#}");
    assert!(step.to_string().contains("Unauthorized (Unauthorized, HTTP 401)"), "{step}");
    assert_eq!(status(&e, "deploy.rollback.rolled_back"), "Succeeded");

    // 404: scaling a workload that does not exist, with the server's words.
    let scale = "- step:\n    name: Scale\n    identifier: scale\n    type: K8sScale\n    timeout: 30s\n    spec:\n      workload: Deployment/nope\n      instanceSelection: {type: Count, spec: {count: 1}}\n";
    apply_yaml(&m, &dir, "missing.yaml", &pipeline_yaml("missing", "free", &kc, scale, marker, "K8S_TOKEN"))?;
    let id = m.run_pipeline("missing", &["--set", "tag=v1"])?;
    let e = m.wait_execution(&id, FINAL, T)?;
    let step = node(&e, "deploy.scale");
    assert_eq!(step["failureType"], "Unknown", "{step:#}");
    assert!(step.to_string().contains("get Deployment free/nope:"), "{step}");
    assert!(step.to_string().contains("(NotFound, HTTP 404)"), "{step}");

    // 409: a manifest pinned to a resourceVersion the object no longer has.
    let pinned = "- step:\n    name: Apply\n    identifier: first\n    type: K8sApply\n    timeout: 30s\n    spec:\n      manifestContent: |\n        apiVersion: v1\n        kind: ConfigMap\n        metadata: {name: pinned, resourceVersion: '1'}\n        data: {a: b}\n";
    let steps = format!(
        "{pinned}{}",
        pinned
            .replace("identifier: first", "identifier: second")
            .replace("name: Apply\n", "name: Apply again\n")
    );
    apply_yaml(
        &m,
        &dir,
        "conflict.yaml",
        &pipeline_yaml("conflict", "free", &kc, &steps, marker, "K8S_TOKEN"),
    )?;
    let id = m.run_pipeline("conflict", &["--set", "tag=v1"])?;
    let e = m.wait_execution(&id, FINAL, T)?;
    assert_eq!(status(&e, "deploy.first"), "Succeeded", "created: {e:#}");
    let step = node(&e, "deploy.second");
    assert_eq!(step["failureType"], "Unknown", "{step:#}");
    assert_eq!(
        step["failure"],
        "apply ConfigMap free/pinned: the object has been modified; please apply your changes to the latest version and try again (Conflict, HTTP 409)"
    );
    Ok(())
}

#[test]
fn the_cluster_connection_goes_through_the_delegates_proxy() -> anyhow::Result<()> {
    let proxy = dray_tests::proxy_peer::Tinyproxy::start()?;
    let peer = K8sPeer::start(K8sOpts::default())?;
    let m = Manager::start(StoreKind::Sqlite)?;
    // The manager is local and exempt; the cluster is reached through the proxy.
    let _d = Delegate::enrol(
        &m,
        "k8s",
        DelegateOpts {
            tags: vec!["k8s".into()],
            env: vec![
                ("K8S_TOKEN".into(), peer.token.clone()),
                ("HTTPS_PROXY".into(), proxy.url()),
                ("NO_PROXY".into(), format!("127.0.0.1:{}", m.url().rsplit(':').next().unwrap_or_default())),
            ],
            ..Default::default()
        },
    )?;
    let dir = tempfile::tempdir()?;
    let steps = "\
- step:
    name: Apply config
    identifier: apply
    type: K8sApply
    timeout: 30s
    spec:
      skipSteadyStateCheck: true
      manifestContent: |
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: via-proxy}
        data: {k: v}
";
    let kc = peer.kubeconfig().display().to_string();
    apply_yaml(
        &m,
        &dir,
        "p.yaml",
        &pipeline_yaml("px", "px", &kc, steps, "[]", "K8S_TOKEN")
            .replace("rollbackSteps:\n              []\n", "rollbackSteps: []\n"),
    )?;
    let id = m.run_pipeline("px", &["--set", "tag=v1"])?;
    let e = m.wait_execution(&id, FINAL, T)?;
    assert_eq!(e["status"], "Succeeded", "{e:#}\n{}", m.step_logs(&id, "deploy.apply").unwrap_or_default());
    assert!(peer.api().get("/api/v1/namespaces/px/configmaps/via-proxy")?.is_some());
    let tunnels = proxy.requests();
    assert!(
        tunnels.iter().any(|r| r == &format!("CONNECT 127.0.0.1:{} HTTP/1.1", peer.port)),
        "the cluster is reached through the proxy: {tunnels:?}"
    );
    assert!(!tunnels.iter().any(|r| r.contains(&m.url()[8..])), "the manager is exempt: {tunnels:?}");
    Ok(())
}
