//! The exact requests the actions send, pinned against a `tower` service that
//! stands in for the API server behind `kube::Client::new` (it records each
//! request and answers like the API server would for these cases).

use std::sync::{Arc, Mutex};

use dray_shared::task::k8s::{Action, Cluster as ClusterParams, DeleteTarget, Instances, K8sParams};
use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::{Value as Json, json};
use tokio::time::Instant;

use super::cluster::Cluster;
use super::errors::K8sError;
use super::job::{COLOR_LABEL, Job, Report, TRACK_LABEL};
use super::manifests::{self, RELEASE_LABEL, Text};
use super::run_action;
use crate::targets::testing::context;

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    /// Path and query.
    uri: String,
    content_type: String,
    body: Json,
}

type Answer = Box<dyn Fn(&Seen) -> Option<(u16, Json)> + Send + Sync>;

/// A client whose requests are recorded and answered by `answer` (or echoed:
/// a PATCH answers with its body, anything else with 404 NotFound).
fn fake(answer: Answer) -> (kube::Client, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let answer = Arc::new(answer);
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let log = Arc::clone(&log);
        let answer = Arc::clone(&answer);
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.map_err(|e| e.to_string())?;
            let s = Seen {
                method: parts.method.to_string(),
                uri: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string(),
                body: serde_json::from_slice(&bytes).unwrap_or(Json::Null),
            };
            let (code, reply) = answer(&s).unwrap_or_else(|| match s.method.as_str() {
                "PATCH" => (200, s.body.clone()),
                _ => (404, status(404, "NotFound", "not found")),
            });
            log.lock().unwrap().push(s);
            let resp = http::Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(serde_json::to_vec(&reply).unwrap())))
                .unwrap();
            Ok::<_, String>(resp)
        }
    });
    (kube::Client::new(svc, "default"), seen)
}

fn status(code: u16, reason: &str, message: &str) -> Json {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": message})
}

fn params(action: Action) -> K8sParams {
    K8sParams {
        action,
        cluster: ClusterParams::default(),
        namespace: "web".into(),
        release_name: "web-prod".into(),
        manifests: vec![],
        values: vec![],
        skip_steady_state: true,
        prune: false,
        deployment: String::new(),
    }
}

const MANIFESTS: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: app, image: 'nginx:{{ .Values.tag }}'}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
";

async fn run(action: Action, answer: Answer) -> (Result<Report, K8sError>, Vec<Seen>) {
    let (client, seen) = fake(answer);
    let cluster = Cluster::new(client, "web");
    let p = params(action);
    let objects = manifests::objects(
        &[Text { origin: "m".into(), text: MANIFESTS.into() }],
        &json!({"tag": "1.27"}),
        &p.release_name,
    )
    .unwrap();
    let (mut cx, _outbox, _stop) = context(&[]);
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let mut job = Job { cluster: &cluster, params: &p, objects, deadline, logs: &mut cx.logs };
    let r = run_action(&mut job).await;
    let seen = seen.lock().unwrap().clone();
    (r, seen)
}

const APPLY_QUERY: &str = "?&force=true&fieldManager=dray";

fn deployment_with_pods() -> Answer {
    Box::new(|s| match (s.method.as_str(), s.uri.as_str()) {
        ("GET", u) if u.starts_with("/apis/apps/v1/namespaces/web/deployments/") => Some((
            200,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": u.rsplit('/').next().unwrap(), "namespace": "web"},
                   "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}}}}),
        )),
        ("GET", u) if u.starts_with("/api/v1/namespaces/web/pods") => Some((
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
                {"metadata": {"name": "app-1", "namespace": "web"},
                 "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "nginx:1.27"}]},
                 "status": {"phase": "Running"}}]}),
        )),
        _ => None,
    })
}

#[tokio::test]
async fn apply_is_a_forced_server_side_apply_of_each_object_in_order() {
    let (r, seen) = run(Action::Apply, deployment_with_pods()).await;
    let r = r.unwrap();
    assert_eq!(
        seen.iter().map(|s| format!("{} {}", s.method, s.uri)).collect::<Vec<_>>(),
        [
            format!("PATCH /apis/apps/v1/namespaces/web/deployments/app{APPLY_QUERY}"),
            format!("PATCH /api/v1/namespaces/web/services/web{APPLY_QUERY}"),
            "GET /apis/apps/v1/namespaces/web/deployments/app".to_string(),
            "GET /api/v1/namespaces/web/pods?&labelSelector=app%3Dweb".to_string(),
        ]
    );
    assert_eq!(seen[0].content_type, "application/apply-patch+yaml");
    assert_eq!(
        seen[0].body,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "app", "namespace": "web", "labels": {RELEASE_LABEL: "web-prod"}},
               "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web", RELEASE_LABEL: "web-prod"}},
                                     "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}}})
    );
    let instances = r.instances.unwrap();
    assert_eq!(instances.len(), 1);
    assert_eq!((instances[0].host.as_str(), instances[0].version.as_str()), ("n1", "nginx:1.27"));
}

#[tokio::test]
async fn canary_applies_a_labelled_copy_at_the_asked_size() {
    let (r, seen) =
        run(Action::CanaryDeploy { instances: Instances::Percentage(25) }, deployment_with_pods()).await;
    assert_eq!(r.unwrap().outputs["canaryReplicas"], "1");
    let canary = seen
        .iter()
        .find(|s| s.uri == format!("/apis/apps/v1/namespaces/web/deployments/app-canary{APPLY_QUERY}"))
        .expect("canary applied");
    assert_eq!(
        (canary.method.as_str(), canary.content_type.as_str()),
        ("PATCH", "application/apply-patch+yaml")
    );
    assert_eq!(canary.body["spec"]["replicas"], 1);
    assert_eq!(canary.body["spec"]["selector"]["matchLabels"], json!({"app": "web", TRACK_LABEL: "canary"}));
    assert_eq!(canary.body["spec"]["template"]["metadata"]["labels"][TRACK_LABEL], "canary");
    assert!(
        !seen.iter().any(|s| s.uri.starts_with("/apis/apps/v1/namespaces/web/deployments/app?")),
        "the stable Deployment is left alone"
    );

    let (r, seen) = run(Action::CanaryDelete, Box::new(|_| None)).await;
    r.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].uri.as_str()),
        ("DELETE", "/apis/apps/v1/namespaces/web/deployments/app-canary?")
    );
    assert_eq!(seen[0].body["propagationPolicy"], "Background");
}

#[tokio::test]
async fn swap_switches_the_primary_selector_in_one_merge_patch() {
    let services: Answer = Box::new(|s| {
        let svc = |name: &str, color: &str| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "web"},
                   "spec": {"selector": {"app": "web", COLOR_LABEL: color}}})
        };
        match (s.method.as_str(), s.uri.as_str()) {
            ("GET", "/api/v1/namespaces/web/services/web") => Some((200, svc("web", "blue"))),
            ("GET", "/api/v1/namespaces/web/services/web-stage") => Some((200, svc("web-stage", "green"))),
            _ => deployment_with_pods()(s),
        }
    });
    let (r, seen) = run(Action::BlueGreenSwap, services).await;
    assert_eq!(r.unwrap().outputs["primaryColor"], "green");
    let patches: Vec<&Seen> = seen.iter().filter(|s| s.method == "PATCH").collect();
    assert_eq!(patches.len(), 2);
    assert_eq!(patches[0].uri, "/api/v1/namespaces/web/services/web?");
    assert_eq!(patches[0].content_type, "application/merge-patch+json");
    assert_eq!(
        patches[0].body,
        json!({"metadata": {"labels": {COLOR_LABEL: "green"}}, "spec": {"selector": {COLOR_LABEL: "green"}}})
    );
    assert_eq!(patches[1].uri, "/api/v1/namespaces/web/services/web-stage?");
    assert_eq!(patches[1].body["spec"]["selector"][COLOR_LABEL], "blue");
}

#[tokio::test]
async fn blue_green_deploys_the_colour_the_primary_does_not_select() {
    let primary_blue: Answer = Box::new(|s| match (s.method.as_str(), s.uri.as_str()) {
        ("GET", "/api/v1/namespaces/web/services/web") => Some((
            200,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                   "spec": {"selector": {"app": "web", COLOR_LABEL: "blue"}}}),
        )),
        _ => deployment_with_pods()(s),
    });
    let (r, seen) = run(Action::BlueGreenDeploy, primary_blue).await;
    assert_eq!(r.unwrap().outputs["stageColor"], "green");
    let applied: Vec<(&str, &Json)> =
        seen.iter().filter(|s| s.method == "PATCH").map(|s| (s.uri.as_str(), &s.body)).collect();
    assert_eq!(applied[0].0, format!("/apis/apps/v1/namespaces/web/deployments/app-green{APPLY_QUERY}"));
    assert_eq!(applied[0].1["spec"]["selector"]["matchLabels"][COLOR_LABEL], "green");
    assert_eq!(applied[1].0, format!("/api/v1/namespaces/web/services/web-stage{APPLY_QUERY}"));
    assert_eq!(applied[1].1["spec"]["selector"], json!({"app": "web", COLOR_LABEL: "green"}));
    assert_eq!(applied[2].0, format!("/api/v1/namespaces/web/services/web{APPLY_QUERY}"));
    assert_eq!(
        applied[2].1["spec"]["selector"],
        json!({"app": "web", COLOR_LABEL: "blue"}),
        "primary unchanged"
    );
}

#[tokio::test]
async fn scale_patches_replicas_from_the_live_count() {
    let (r, seen) = run(
        Action::Scale { workload: "Deployment/app".into(), instances: Instances::Percentage(50) },
        deployment_with_pods(),
    )
    .await;
    assert_eq!(r.unwrap().outputs["replicas"], "2");
    assert_eq!(seen[0].uri, "/apis/apps/v1/namespaces/web/deployments/app");
    assert_eq!(
        (seen[1].method.as_str(), seen[1].uri.as_str(), seen[1].content_type.as_str()),
        ("PATCH", "/apis/apps/v1/namespaces/web/deployments/app?", "application/merge-patch+json")
    );
    assert_eq!(seen[1].body, json!({"spec": {"replicas": 2}}));

    let (r, _) = run(
        Action::Scale { workload: "Deployment/nope".into(), instances: Instances::Count(1) },
        Box::new(|s| {
            (s.method == "GET").then(|| (404, status(404, "NotFound", "deployments.apps \"nope\" not found")))
        }),
    )
    .await;
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        "get Deployment web/nope: deployments.apps \"nope\" not found (NotFound, HTTP 404)"
    );
}

#[tokio::test]
async fn delete_by_name_sends_deletes_and_reports_what_was_missing() {
    let (r, seen) = run(
        Action::Delete {
            target: DeleteTarget::ResourceNames {
                names: vec!["Deployment/app".into(), "other/ConfigMap/cfg".into()],
            },
        },
        Box::new(|s| {
            (s.uri == "/apis/apps/v1/namespaces/web/deployments/app?").then(|| {
                (200, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"}}))
            })
        }),
    )
    .await;
    assert_eq!(r.unwrap().outputs["deleted"], "1");
    assert_eq!(
        seen.iter().map(|s| format!("{} {}", s.method, s.uri)).collect::<Vec<_>>(),
        [
            "DELETE /apis/apps/v1/namespaces/web/deployments/app?",
            "DELETE /api/v1/namespaces/other/configmaps/cfg?"
        ]
    );
}

#[tokio::test]
async fn forbidden_applies_fail_as_authorization_with_the_server_message() {
    let (r, seen) = run(
        Action::RollingDeploy,
        Box::new(|s| {
            (s.uri.contains("/deployments/app"))
                .then(|| (403, status(403, "Forbidden", "deployments.apps \"app\" is forbidden: marked")))
        }),
    )
    .await;
    let e = r.unwrap_err();
    assert_eq!(e.error_type(), dray_shared::error_type::ErrorType::Authorization);
    assert_eq!(
        e.to_string(),
        "apply Deployment web/app: deployments.apps \"app\" is forbidden: marked (Forbidden, HTTP 403)"
    );
    // The history was read, the revision recorded, then marked Failed.
    let history: Vec<&Seen> = seen.iter().filter(|s| s.uri.contains("/secrets/release-web-prod")).collect();
    assert_eq!(history.len(), 3, "{seen:#?}");
    let last = &history[2].body;
    assert_eq!(last["type"], "dray.io/release.v1");
    use base64::Engine as _;
    let h: Json = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD.decode(last["data"]["history"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(h["revisions"][0]["status"], "Failed");
}

/// A `k8s` task spec for `params`.
fn task_spec(params: &K8sParams, timeout_ms: u64) -> dray_shared::pb::TaskSpec {
    dray_shared::pb::TaskSpec {
        kind: dray_shared::task::kind::K8S.into(),
        params_json: serde_json::to_string(params).unwrap(),
        timeout_ms,
        ..Default::default()
    }
}

/// A kubeconfig for a server at `port` that nobody answers.
fn dead_kubeconfig(dir: &std::path::Path) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let path = dir.join("config");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}'}}}}]\nusers: [{{name: u, user: {{}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn an_unreachable_api_server_is_a_connectivity_failure_and_the_token_stays_masked() {
    use crate::targets::Target as _;
    let dir = tempfile::tempdir().unwrap();
    let mut p = params(Action::Apply);
    p.cluster = ClusterParams {
        kubeconfig: Some(dead_kubeconfig(dir.path())),
        context: None,
        token: Some("<+secrets.getValue(\"env:TOK\")>".into()),
    };
    p.manifests = vec![dray_shared::task::k8s::ManifestSource {
        identifier: "m".into(),
        content: Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n".into()),
        paths: vec![],
    }];
    let (cx, outbox, _stop) = context(&[("TOK", "tok-s3cret")]);
    let masker = cx.masker();
    let mut o = super::K8s::default().run(task_spec(&p, 20_000), cx).await;
    o.mask(&masker);
    assert_eq!(o.error_type, Some(dray_shared::error_type::ErrorType::Connectivity), "{o:?}");
    assert!(o.message.starts_with("apply ConfigMap web/c: cannot reach the API server: "), "{o:?}");
    let lines = crate::targets::testing::lines(&outbox);
    assert!(lines.iter().all(|(_, l)| !l.contains("tok-s3cret")), "{lines:?}");
}

#[tokio::test]
async fn cancel_and_timeout_stop_a_task_whose_server_never_answers() {
    use crate::targets::{Outcome, StopReason, Target as _};
    // Accepts connections and never answers (not even the TLS handshake).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}'}}}}]\nusers: [{{name: u, user: {{}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let mut p = params(Action::Scale { workload: "Deployment/app".into(), instances: Instances::Count(1) });
    p.cluster.kubeconfig = Some(path.display().to_string());

    let (cx, _outbox, stop) = context(&[]);
    let spec = task_spec(&p, 600_000);
    let run = tokio::spawn(async move { super::K8s::default().run(spec, cx).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.stop(StopReason::Cancelled);
    let o = tokio::time::timeout(std::time::Duration::from_secs(5), run).await.unwrap().unwrap();
    assert_eq!(o, Outcome::stopped(StopReason::Cancelled));

    let (cx, _outbox, _stop) = context(&[]);
    let o = super::K8s::default().run(task_spec(&p, 500), cx).await;
    assert_eq!(o.error_type, Some(dray_shared::error_type::ErrorType::Timeout), "{o:?}");
    assert_eq!(o.message, "scale timed out after 500ms");
}

#[tokio::test]
async fn pruning_deletes_what_the_previous_revision_had_and_this_one_has_not() {
    use base64::Engine as _;
    let previous = json!({"revisions": [{"number": 1, "status": "Succeeded", "objects": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "old-config"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}
    ]}]});
    let encoded = base64::engine::general_purpose::STANDARD.encode(previous.to_string());
    let answer: Answer = Box::new(move |s| match (s.method.as_str(), s.uri.as_str()) {
        ("GET", "/api/v1/namespaces/web/secrets/release-web-prod") => Some((
            200,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "release-web-prod"},
                   "data": {"history": encoded}}),
        )),
        ("DELETE", _) => Some((200, json!({"apiVersion": "v1", "kind": "Status", "status": "Success"}))),
        _ => deployment_with_pods()(s),
    });
    let (client, seen) = fake(answer);
    let cluster = Cluster::new(client, "web");
    let mut p = params(Action::RollingDeploy);
    p.prune = true;
    let objects = manifests::objects(
        &[Text { origin: "m".into(), text: MANIFESTS.into() }],
        &json!({"tag": "2"}),
        "web-prod",
    )
    .unwrap();
    let (mut cx, _outbox, _stop) = context(&[]);
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let mut job = Job { cluster: &cluster, params: &p, objects, deadline, logs: &mut cx.logs };
    let r = run_action(&mut job).await.unwrap();
    assert_eq!(r.outputs["releaseNumber"], "2");
    let deletes: Vec<String> =
        seen.lock().unwrap().iter().filter(|s| s.method == "DELETE").map(|s| s.uri.clone()).collect();
    assert_eq!(deletes, ["/api/v1/namespaces/web/configmaps/old-config?"], "the Service is still described");
}
