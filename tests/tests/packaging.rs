//! Packaging: the Helm charts (`helm lint`, `helm template` with default and
//! non-default values, offline schema validation of what they render, and the
//! refusals of broken combinations), the systemd units (`systemd-analyze verify`
//! with any output counted as a failure, `systemd-analyze security` under an
//! exposure threshold) and `dray-delegate install --systemd` against a real
//! manager, whose written unit is then run the way systemd would run it.
//!
//! Tools come from `scripts/peers.sh`; a missing one fails the test with the
//! command that installs it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use dray_tests::{Manager, StoreKind, bin, free_port, http_get, peers, wait_for};
use serde_json::Value;

/// Highest accepted `systemd-analyze security` exposure, ×10 as the tool takes
/// it: 2.0 is inside systemd's "OK" band. The units score 1.1 (manager) and
/// 1.4 (delegate) as shipped; the delegate cannot go lower without breaking
/// tasks (it needs the network, and scripts may run JITs or other users' tools).
const SECURITY_THRESHOLD: &str = "20";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn chart(name: &str) -> PathBuf {
    repo().join("deploy/helm").join(name)
}

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/helm").join(name)
}

fn unit_template(name: &str) -> PathBuf {
    repo().join("deploy/systemd").join(name)
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn helm(args: &[&str]) -> Output {
    run(Command::new(peers::helm())
        .args(args)
        .env("HELM_CACHE_HOME", std::env::temp_dir().join("dray-helm-cache")))
}

/// `helm lint` then `helm template`; the rendered manifests, validated.
fn render(chart_name: &str, values: &[&str]) -> anyhow::Result<Vec<Value>> {
    let dir = chart(chart_name);
    let dir = dir.to_str().unwrap();
    let mut lint = vec!["lint", "--strict", dir];
    lint.extend_from_slice(values);
    let out = helm(&lint);
    if !out.status.success() {
        bail!("helm {lint:?} failed:\n{}", text(&out));
    }
    let mut template = vec!["template", "rel", dir, "--namespace", "cd"];
    template.extend_from_slice(values);
    let out = helm(&template);
    if !out.status.success() {
        bail!("helm {template:?} failed:\n{}", text(&out));
    }
    let tmp = tempfile::tempdir()?;
    let file = tmp.path().join("rendered.yaml");
    std::fs::write(&file, &out.stdout)?;
    validate(&file)?;
    to_json(&file)
}

/// Schema validation of every document against Kubernetes 1.37, strictly
/// (unknown fields are errors).
fn validate(file: &Path) -> anyhow::Result<()> {
    let out = run(Command::new(peers::kubernetes_validate()).args(["--strict", "--no-warn"]).arg(file));
    let report = text(&out);
    if !out.status.success() || report.contains("ERROR") || !report.contains("passed") {
        bail!("kubernetes-validate rejected {}:\n{report}", file.display());
    }
    Ok(())
}

/// The YAML documents as JSON (PyYAML from the peers' virtualenv).
fn to_json(file: &Path) -> anyhow::Result<Vec<Value>> {
    let out = run(Command::new(peers::python()).arg("-c").arg(
        "import json,sys,yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
    )
    .arg(file));
    if !out.status.success() {
        bail!("cannot parse the rendered YAML:\n{}", text(&out));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = find(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, got {}: {docs:#?}", found.len());
    found[0]
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"].as_array()?.iter().find(|e| e["name"] == name)
}

fn env_value(container: &Value, name: &str) -> Option<String> {
    env(container, name).and_then(|e| e["value"].as_str()).map(str::to_string)
}

/// What every delegate pod must have, whatever the values.
fn check_delegate_pod(pod: &Value, drain_grace_s: u64) {
    let c = &pod["containers"][0];
    assert_eq!(c["command"], serde_json::json!(["dray-delegate"]));
    assert_eq!(c["args"], serde_json::json!(["run"]));
    assert_eq!(pod["terminationGracePeriodSeconds"], drain_grace_s + 15, "drain plus margin");
    assert_eq!(env_value(c, "DRAY_DRAIN_GRACE").unwrap(), format!("{drain_grace_s}s"));
    assert_eq!(env(c, "DRAY_NAME").unwrap()["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    assert_eq!(env_value(c, "DRAY_STATE_DIR").unwrap(), "/var/lib/dray-delegate");
    // Probes hit the delegate's own health endpoint on the port it listens on.
    let port = c["ports"][0]["containerPort"].as_u64().unwrap();
    assert_eq!(env_value(c, "DRAY_HTTP_ADDR").unwrap(), format!("0.0.0.0:{port}"));
    assert_eq!(c["ports"][0]["name"], "health");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "health");
    // Non-root, read-only root filesystem, writable /tmp.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let mounts = c["volumeMounts"].as_array().unwrap();
    let tmp = mounts.iter().find(|m| m["mountPath"] == "/tmp").expect("/tmp mounted");
    let vol = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == tmp["name"]).unwrap();
    assert!(vol["emptyDir"].is_object(), "/tmp is an emptyDir: {vol}");
    assert!(mounts.iter().any(|m| m["mountPath"] == "/var/lib/dray-delegate"), "state mounted");
    // The token is only needed on a pod's first start, so its Secret is optional.
    assert_eq!(env(c, "DRAY_TOKEN").unwrap()["valueFrom"]["secretKeyRef"]["optional"], true);
}

#[test]
fn delegate_chart_defaults_render_a_single_deployment_with_its_own_volume() -> anyhow::Result<()> {
    let docs = render("dray-delegate", &[])?;
    let d = one(&docs, "Deployment");
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate", "one identity volume: never two pods at once");
    let pod = &d["spec"]["template"]["spec"];
    check_delegate_pod(pod, 30);
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "dray/dray-delegate:0.1.0", "tag defaults to the appVersion");
    assert_eq!(env_value(c, "DRAY_MANAGER").unwrap(), "https://dray-manager:7443");
    assert_eq!(env(c, "DRAY_TOKEN").unwrap()["valueFrom"]["secretKeyRef"]["name"], "dray-delegate-token");
    assert!(env(c, "HTTPS_PROXY").is_none() && env(c, "DRAY_TAGS").is_none());
    let pvc = one(&docs, "PersistentVolumeClaim");
    let state = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "state").unwrap();
    assert_eq!(state["persistentVolumeClaim"]["claimName"], pvc["metadata"]["name"]);
    let ca = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "ca").unwrap();
    assert_eq!(ca["configMap"]["name"], "dray-manager-ca");
    // Namespaced RBAC in the release namespace, bound to the pod's account.
    assert!(find(&docs, "ClusterRole").is_empty());
    let role = one(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], "cd");
    let binding = one(&docs, "RoleBinding");
    assert_eq!(binding["subjects"][0]["name"], pod["serviceAccountName"]);
    assert_eq!(one(&docs, "ServiceAccount")["metadata"]["name"], pod["serviceAccountName"]);
    assert!(find(&docs, "Secret").is_empty(), "the token comes from an existing Secret by default");
    Ok(())
}

#[test]
fn delegate_chart_scales_out_as_a_statefulset_with_one_identity_per_pod() -> anyhow::Result<()> {
    let values = fixture("delegate-values.yaml");
    let docs = render("dray-delegate", &["-f", values.to_str().unwrap()])?;
    assert!(find(&docs, "Deployment").is_empty());
    assert!(find(&docs, "PersistentVolumeClaim").is_empty(), "claims come from the StatefulSet's template");
    let s = one(&docs, "StatefulSet");
    assert_eq!(s["spec"]["replicas"], 3);
    assert_eq!(s["spec"]["podManagementPolicy"], "Parallel");
    let claims = s["spec"]["volumeClaimTemplates"].as_array().unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0]["metadata"]["name"], "state");
    assert_eq!(claims[0]["spec"]["storageClassName"], "fast");
    let headless = one(&docs, "Service");
    assert_eq!(s["spec"]["serviceName"], headless["metadata"]["name"]);
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let pod = &s["spec"]["template"]["spec"];
    check_delegate_pod(pod, 120);
    assert!(!pod["volumes"].as_array().unwrap().iter().any(|v| v["name"] == "state"));
    let c = &pod["containers"][0];
    assert_eq!(env_value(c, "DRAY_MANAGER").unwrap(), "https://dray.example.internal:7443");
    assert_eq!(env_value(c, "DRAY_TAGS").unwrap(), "linux,k8s");
    assert_eq!(env_value(c, "DRAY_CAPACITY").unwrap(), "8");
    let token = &env(c, "DRAY_TOKEN").unwrap()["valueFrom"]["secretKeyRef"];
    assert_eq!(
        (token["name"].as_str(), token["key"].as_str()),
        (Some("delegate-enrolment"), Some("enrolment-token"))
    );
    for (name, value) in [
        ("HTTP_PROXY", "http://proxy.example.internal:3128"),
        ("https_proxy", "http://proxy.example.internal:3128"),
        ("NO_PROXY", ".svc,.cluster.local,dray.example.internal"),
    ] {
        assert_eq!(env_value(c, name).as_deref(), Some(value), "{name}");
    }
    assert_eq!(env(c, "REGISTRY_PASSWORD").unwrap()["valueFrom"]["secretKeyRef"]["name"], "registry");
    assert!(c["volumeMounts"].as_array().unwrap().iter().any(|m| m["mountPath"] == "/var/run/secrets/vault"));
    // The CA given inline becomes a ConfigMap the pod mounts.
    let cm = one(&docs, "ConfigMap");
    assert!(cm["data"]["ca.pem"].as_str().unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    let ca = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "ca").unwrap();
    assert_eq!(ca["configMap"]["name"], cm["metadata"]["name"]);
    // Cluster-wide RBAC.
    assert!(find(&docs, "Role").is_empty() && find(&docs, "RoleBinding").is_empty());
    let role = one(&docs, "ClusterRole");
    let binding = one(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["namespace"], "cd");
    let rules = role["rules"].as_array().unwrap();
    assert!(rules.iter().any(|r| r["resources"].as_array().unwrap().contains(&"deployments".into())));
    assert!(rules.iter().any(|r| r["resources"].as_array().unwrap().contains(&"namespaces".into())));
    Ok(())
}

#[test]
fn delegate_chart_creates_the_token_secret_and_ephemeral_pods() -> anyhow::Result<()> {
    let docs = render(
        "dray-delegate",
        &[
            "--set",
            "token.value=dray_dt_x,persistence.enabled=false,replicas=2",
            "--set",
            "rbac.namespaces={apps,web}",
        ],
    )?;
    let secret = one(&docs, "Secret");
    assert_eq!(secret["data"]["token"], "ZHJheV9kdF94", "base64 of the value");
    let d = one(&docs, "Deployment");
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        env(c, "DRAY_TOKEN").unwrap()["valueFrom"]["secretKeyRef"]["name"],
        secret["metadata"]["name"]
    );
    let state = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "state").unwrap();
    assert!(state["emptyDir"].is_object());
    assert!(find(&docs, "PersistentVolumeClaim").is_empty());
    let namespaces: Vec<&str> =
        find(&docs, "Role").iter().map(|r| r["metadata"]["namespace"].as_str().unwrap()).collect();
    assert_eq!(namespaces, ["apps", "web"]);
    assert_eq!(find(&docs, "RoleBinding").len(), 2);
    Ok(())
}

#[test]
fn manager_chart_defaults_render_one_sqlite_manager_on_a_volume() -> anyhow::Result<()> {
    let docs = render("dray-manager", &[])?;
    let d = one(&docs, "Deployment");
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["args"], serde_json::json!(["server"]));
    assert_eq!(c["image"], "dray/dray:0.1.0");
    assert!(env(c, "DRAY_DATABASE_URL").is_none(), "SQLite in the data dir");
    assert_eq!(env_value(c, "DRAY_DATA_DIR").unwrap(), "/var/lib/dray");
    let hosts = env_value(c, "DRAY_ADVERTISE_HOST").unwrap();
    assert!(hosts.split(',').any(|h| h == "rel-dray-manager.cd.svc"), "{hosts}");
    let pvc = one(&docs, "PersistentVolumeClaim");
    let data = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "data").unwrap();
    assert_eq!(data["persistentVolumeClaim"]["claimName"], pvc["metadata"]["name"]);
    check_manager_pod(pod);
    let svc = one(&docs, "Service");
    let ports: Vec<(String, u64)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["port"].as_u64().unwrap()))
        .collect();
    assert_eq!(ports, [("grpc".to_string(), 7443), ("http".to_string(), 7080)]);
    assert_eq!(env_value(c, "DRAY_GRPC_ADDR").unwrap(), "0.0.0.0:7443");
    assert_eq!(env_value(c, "DRAY_HTTP_ADDR").unwrap(), "0.0.0.0:7080");
    Ok(())
}

fn check_manager_pod(pod: &Value) {
    let c = &pod["containers"][0];
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "http");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
}

#[test]
fn manager_chart_runs_replicas_on_postgresql_with_a_shared_ca() -> anyhow::Result<()> {
    let values = fixture("manager-values.yaml");
    let docs = render("dray-manager", &["-f", values.to_str().unwrap()])?;
    let d = one(&docs, "Deployment");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert!(find(&docs, "PersistentVolumeClaim").is_empty());
    assert!(find(&docs, "Secret").is_empty(), "the URL comes from an existing Secret");
    let pod = &d["spec"]["template"]["spec"];
    check_manager_pod(pod);
    let c = &pod["containers"][0];
    let url = &env(c, "DRAY_DATABASE_URL").unwrap()["valueFrom"]["secretKeyRef"];
    assert_eq!((url["name"].as_str(), url["key"].as_str()), (Some("dray-database"), Some("url")));
    assert_eq!(env_value(c, "DRAY_DATABASE_SCHEMA").unwrap(), "dray");
    assert_eq!(env_value(c, "DRAY_LEASE_TTL").unwrap(), "20s");
    assert_eq!(env_value(c, "DRAY_DELEGATE_CERT_TTL").unwrap(), "12h");
    assert!(env(c, "DRAY_OFFER_TIMEOUT").is_none());
    assert!(env_value(c, "DRAY_ADVERTISE_HOST").unwrap().ends_with(",dray.example.internal"));
    // Every replica signs with the same CA and accepts the same admin token.
    let pki: Vec<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == "pki")
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert_eq!(pki, ["/var/lib/dray/ca.pem", "/var/lib/dray/ca.key", "/var/lib/dray/admin.token"]);
    let vol = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "pki").unwrap();
    assert_eq!(vol["secret"]["secretName"], "dray-manager-pki");
    assert_eq!(one(&docs, "Service")["spec"]["type"], "LoadBalancer");

    // Or a URL given as a value, stored in a Secret the chart creates.
    let docs = render(
        "dray-manager",
        &["--set", "database.type=postgres,database.postgres.url=postgres://dray@db/dray"],
    )?;
    let secret = one(&docs, "Secret");
    let c = &one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        env(c, "DRAY_DATABASE_URL").unwrap()["valueFrom"]["secretKeyRef"]["name"],
        secret["metadata"]["name"]
    );
    assert_eq!(
        one(&docs, "PersistentVolumeClaim")["kind"],
        "PersistentVolumeClaim",
        "one replica keeps its CA on a volume"
    );
    Ok(())
}

#[test]
fn charts_refuse_bad_values_and_broken_combinations_naming_the_value() {
    let cases: &[(&str, &str, &str)] = &[
        // values.schema.json: each value on its own, by its path.
        ("dray-delegate", "kind=DaemonSet", "at '/kind': value must be one of 'Deployment', 'StatefulSet'"),
        (
            "dray-delegate",
            "manager.url=http://m:7443",
            "at '/manager/url': 'http://m:7443' does not match pattern",
        ),
        (
            "dray-delegate",
            "rbac.scope=everything",
            "at '/rbac/scope': value must be one of 'namespace', 'cluster'",
        ),
        ("dray-delegate", "capacity=0", "at '/capacity': minimum: got 0, want 1"),
        ("dray-delegate", "replica=3", "additional properties 'replica' not allowed"),
        (
            "dray-manager",
            "database.type=mysql",
            "at '/database/type': value must be one of 'sqlite', 'postgres'",
        ),
        // The templates: combinations that would share an identity, lose the
        // store or split the CA.
        (
            "dray-delegate",
            "replicas=3",
            "replicas: 3 with kind=Deployment and persistence.enabled would share one identity",
        ),
        (
            "dray-delegate",
            "kind=StatefulSet,persistence.enabled=false",
            "persistence.enabled: a StatefulSet keeps each pod's identity",
        ),
        ("dray-delegate", "token.existingSecret=", "token: set token.value or token.existingSecret"),
        ("dray-manager", "replicas=2", "replicas: 2 needs database.type=postgres"),
        (
            "dray-manager",
            "persistence.enabled=false",
            "persistence.enabled: SQLite keeps everything in the data directory",
        ),
        ("dray-manager", "database.type=postgres", "database.postgres: set database.postgres.existingSecret"),
        (
            "dray-manager",
            "database.type=postgres,database.postgres.existingSecret=db,replicas=2",
            "pki.existingSecret: without a persistent data directory",
        ),
    ];
    for (chart_name, set, message) in cases {
        let dir = chart(chart_name);
        let out = helm(&["template", "rel", dir.to_str().unwrap(), "--set", set]);
        assert!(!out.status.success(), "{chart_name} --set {set} rendered");
        assert!(text(&out).contains(message), "{chart_name} --set {set}: {}", text(&out));
    }
}

/// `systemd-analyze verify`; any output at all is a failure (it only warns,
/// exit 0, about unknown keys and bad values).
fn verify_unit(unit: &Path) {
    let out = run(Command::new(peers::systemd_analyze()).arg("verify").arg(unit));
    let report = text(&out);
    assert!(
        out.status.success() && report.trim().is_empty(),
        "systemd-analyze verify {}:\n{report}",
        unit.display()
    );
    let out = run(Command::new(peers::systemd_analyze())
        .args(["security", "--offline=yes", &format!("--threshold={SECURITY_THRESHOLD}")])
        .arg(unit));
    assert!(
        out.status.success(),
        "{} is exposed above {SECURITY_THRESHOLD}/100:\n{}",
        unit.display(),
        text(&out)
    );
}

/// The shipped unit with its ExecStart binary pointed at the one built here
/// (verify checks that the binary exists); nothing else changes.
fn shipped_unit(dir: &Path, name: &str, default_bin: &str, built: &Path) -> PathBuf {
    let text = std::fs::read_to_string(unit_template(name)).unwrap();
    let from = format!("ExecStart={default_bin}");
    assert_eq!(text.matches(&from).count(), 1, "{name} runs {default_bin}");
    let path = dir.join(name);
    std::fs::write(&path, text.replace(&from, &format!("ExecStart={}", built.display()))).unwrap();
    path
}

#[test]
fn systemd_units_verify_clean_and_are_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let manager = shipped_unit(dir.path(), "dray-manager.service", "/usr/local/bin/dray", &bin("dray"));
    let delegate = shipped_unit(
        dir.path(),
        "dray-delegate.service",
        "/usr/local/bin/dray-delegate",
        &bin("dray-delegate"),
    );
    for unit in [&manager, &delegate] {
        let text = std::fs::read_to_string(unit).unwrap();
        for line in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "Restart=on-failure",
            "CapabilityBoundingSet=",
        ] {
            assert!(text.lines().any(|l| l == line), "{} lacks {line}", unit.display());
        }
        verify_unit(unit);
    }
    let manager = std::fs::read_to_string(&manager).unwrap();
    assert!(manager.lines().any(|l| l == "EnvironmentFile=/etc/dray/manager.env"));
    assert!(manager.lines().any(|l| l == "StateDirectory=dray"));
    let delegate = std::fs::read_to_string(&delegate).unwrap();
    assert!(delegate.lines().any(|l| l == "EnvironmentFile=/etc/dray/delegate.env"));
    assert!(delegate.lines().any(|l| l == "TimeoutStopSec=45s"), "default drain 30s + 15s");
}

/// `KEY=VALUE` settings of an example env file (unquoted values, comments skipped).
fn example_env(name: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(unit_template(name)).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{name}: not KEY=VALUE: {l}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn the_manager_unit_runs_with_the_example_env_file() -> anyhow::Result<()> {
    // ExecStart of the shipped unit with the example settings; only the binary,
    // the data directory and the ports (fixed in the example) are this test's.
    let unit = std::fs::read_to_string(unit_template("dray-manager.service"))?;
    let exec = unit_value(&unit, "ExecStart");
    let data = tempfile::tempdir()?;
    let mut argv: Vec<String> = exec.split_whitespace().map(String::from).collect();
    assert_eq!(argv[0], "/usr/local/bin/dray");
    argv[0] = bin("dray").display().to_string();
    let state = unit_value(&unit, "StateDirectory");
    let at = argv.iter().position(|a| a == "--data-dir").context("ExecStart passes --data-dir")?;
    assert_eq!(argv[at + 1], format!("/var/lib/{state}"), "the data dir is the StateDirectory");
    argv[at + 1] = data.path().display().to_string();
    let (grpc, http) = (free_port(), free_port());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    let settings = example_env("manager.env");
    assert!(settings.iter().any(|(k, _)| k == "DRAY_ADVERTISE_HOST"));
    for (k, v) in settings {
        cmd.env(k, v);
    }
    cmd.env("DRAY_GRPC_ADDR", format!("127.0.0.1:{grpc}")).env("DRAY_HTTP_ADDR", format!("127.0.0.1:{http}"));
    let log = data.path().join("manager.log");
    let file = std::fs::File::create(&log)?;
    let child = cmd.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).spawn()?;
    let svc = Service { child, log };
    wait_for("the manager from the unit to be ready", Duration::from_secs(30), || {
        http_get(http, "/readyz").filter(|(code, _)| *code == 200)
    })
    .with_context(|| svc.log())?;
    assert!(
        svc.log().contains("dray.example.internal"),
        "the advertised name is on the certificate:\n{}",
        svc.log()
    );
    assert!(data.path().join("ca.pem").exists() && data.path().join("admin.token").exists());
    Ok(())
}

/// A process started from a unit's ExecStart; killed on drop.
struct Service {
    child: Child,
    log: PathBuf,
}

impl Service {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `KEY="value"` lines of a systemd environment file (`\"` and `\\` escapes).
fn read_env_file(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut vars = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("not KEY=VALUE: {line}"));
        let inner = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("unquoted: {line}"));
        let mut value = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            value.push(if c == '\\' { chars.next().unwrap() } else { c });
        }
        vars.push((k.to_string(), value));
    }
    vars
}

fn unit_value(unit: &str, key: &str) -> String {
    let values: Vec<&str> =
        unit.lines().filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('='))).collect();
    assert_eq!(values.len(), 1, "one {key}= line in:\n{unit}");
    values[0].to_string()
}

fn current_user() -> String {
    let out = run(Command::new("id").arg("-un"));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn install(m: &Manager, root: &Path, token: &str, extra: &[&str]) -> Output {
    let mut cmd = Command::new(bin("dray-delegate"));
    for (k, _) in std::env::vars() {
        if k.starts_with("DRAY_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["install", "--systemd", "--no-start", "--manager", &m.url(), "--token", token])
        .arg("--ca-file")
        .arg(m.ca_file())
        .arg("--unit-dir")
        .arg(root.join("units"))
        .arg("--config-dir")
        .arg(root.join("etc"))
        .arg("--state-dir")
        .arg(root.join("state"))
        .args(["--user", &current_user()])
        .args(extra);
    run(&mut cmd)
}

#[test]
fn install_enrols_writes_a_unit_that_runs_and_connects() -> anyhow::Result<()> {
    let m = Manager::start(StoreKind::Sqlite)?;
    let root = tempfile::tempdir()?;
    let root = root.path();

    // A bad token fails the install before anything is written.
    let out = install(&m, root, "dray_dt_not_a_token", &["--name", "pkg-1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("error: enrolment failed, nothing was installed: manager refused enrolment"),
        "{}",
        text(&out)
    );
    for d in ["units", "etc", "state"] {
        assert!(!root.join(d).exists(), "{d} left behind by a failed install");
    }

    let token = m.token("pkg", &["--max-uses", "1"])?;
    let http_port = free_port();
    let out = install(
        &m,
        root,
        &token,
        &[
            "--name",
            "pkg-1",
            "--tags",
            "linux,pkg",
            "--capacity",
            "2",
            "--drain-grace",
            "20s",
            "--http-addr",
            &format!("127.0.0.1:{http_port}"),
        ],
    );
    let report = text(&out);
    assert!(out.status.success(), "install failed:\n{report}");
    let identity: Value = serde_json::from_str(&std::fs::read_to_string(root.join("state/identity.json"))?)?;
    let id = identity["delegate_id"].as_str().context("identity.json has an id")?.to_string();
    assert!(report.contains(&format!("enrolled with {} as \"pkg-1\" ({id}", m.url())), "{report}");
    assert!(
        report.contains("systemctl daemon-reload && systemctl enable --now dray-delegate.service"),
        "{report}"
    );
    assert!(!report.contains(&token), "the token is never printed");

    // The files: the unit from the shipped template, the env file without the token.
    let unit_path = root.join("units/dray-delegate.service");
    let unit = std::fs::read_to_string(&unit_path)?;
    let env_path = root.join("etc/delegate.env");
    assert_eq!(unit_value(&unit, "EnvironmentFile"), env_path.display().to_string());
    assert_eq!(unit_value(&unit, "ReadWritePaths"), root.join("state").display().to_string());
    assert_eq!(unit_value(&unit, "TimeoutStopSec"), "35s", "drain grace 20s + 15s");
    assert_eq!(unit_value(&unit, "User"), current_user());
    let template = std::fs::read_to_string(unit_template("dray-delegate.service"))?;
    assert_eq!(unit.lines().count(), template.lines().count(), "same unit, host values put in");
    assert_eq!(std::fs::metadata(&env_path)?.permissions().mode() & 0o777, 0o600);
    let env_text = std::fs::read_to_string(&env_path)?;
    assert!(!env_text.contains(&token) && !env_text.contains("DRAY_TOKEN"), "{env_text}");
    assert_eq!(std::fs::read_to_string(root.join("etc/ca.pem"))?, std::fs::read_to_string(m.ca_file())?);
    verify_unit(&unit_path);

    // Start it the way systemd would: ExecStart with the env file's variables.
    let exec = unit_value(&unit, "ExecStart");
    let mut argv = exec.split_whitespace();
    let program = argv.next().unwrap();
    assert_eq!(Path::new(program), bin("dray-delegate"));
    let log = root.join("delegate.log");
    let mut cmd = Command::new(program);
    cmd.args(argv).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in read_env_file(&env_path) {
        cmd.env(k, v);
    }
    // A proxy setting as the chart's `proxy` values (or an operator's env file) gives it.
    // The delegate itself dials through it, so the (local) manager is exempt.
    cmd.env("HTTPS_PROXY", "http://proxy.invalid:3128");
    cmd.env("NO_PROXY", "127.0.0.0/8");
    let file = std::fs::File::create(&log)?;
    let child = cmd.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).spawn()?;
    let svc = Service { child, log };
    wait_for("the installed delegate to connect", Duration::from_secs(20), || {
        svc.log().contains("Delegate connected").then_some(())
    })
    .with_context(|| svc.log())?;
    assert!(!svc.log().contains("Enrolling"), "it reused the install's enrolment:\n{}", svc.log());
    let delegates = m.delegates()?;
    let d = delegates
        .iter()
        .find(|d| d["id"] == id.as_str())
        .with_context(|| format!("{id} in {delegates:?}"))?;
    assert_eq!(d["name"], "pkg-1");
    assert_eq!(d["connected"], true, "{d}");
    assert_eq!(d["capacity"], 2);
    let tags: Vec<&str> = d["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(tags, ["linux", "pkg"]);
    let ready = wait_for("/readyz", Duration::from_secs(10), || {
        http_get(http_port, "/readyz").filter(|(code, _)| *code == 200)
    });
    assert!(ready.is_ok(), "the health endpoint from the env file answers ready");

    // It runs work, and scripts see the host's proxy setting.
    let task = m.run_task("echo \"proxy=$HTTPS_PROXY\"", &["--selector", "pkg"])?;
    let done = m.wait_state(&task, &["succeeded", "failed"], Duration::from_secs(20))?;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(m.logs(&task)?.contains("proxy=http://proxy.invalid:3128"), "{}", m.logs(&task)?);

    // Installing again keeps the identity (the used-up token is not needed) and
    // what the operator added to the env file.
    let mut edited = std::fs::read_to_string(&env_path)?;
    edited.push_str("REGISTRY_PASSWORD=\"s3cret\"\n");
    std::fs::write(&env_path, edited)?;
    let out = install(&m, root, "", &["--name", "pkg-1", "--capacity", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("kept the enrolment in {} ({id})", root.join("state").display())),
        "{}",
        text(&out)
    );
    let vars = read_env_file(&env_path);
    assert!(vars.contains(&("REGISTRY_PASSWORD".into(), "s3cret".into())), "{vars:?}");
    assert!(vars.contains(&("DRAY_CAPACITY".into(), "3".into())), "{vars:?}");
    assert_eq!(vars.iter().filter(|(k, _)| k == "DRAY_CAPACITY").count(), 1, "{vars:?}");
    Ok(())
}
