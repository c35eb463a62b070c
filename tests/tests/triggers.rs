//! Triggers end to end, on SQLite and PostgreSQL: webhook deliveries from GitHub,
//! GitLab and a custom sender, signed with the secret the manager derives, start
//! pipelines with inputs mapped from the payload (once per delivery id); bad
//! credentials are refused and recorded; cron triggers fire on schedule, once per
//! fire time even across a manager restart.

use std::collections::HashSet;
use std::time::Duration;

use dray_tests::cron::{CRON_FIXTURES, cron_fires, distinct};
use dray_tests::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const T: Duration = Duration::from_secs(60);

/// A pipeline echoing two runtime inputs, and the triggers the tests post to.
const FIXTURES: &str = r#"
pipeline:
  name: Echo
  identifier: echo
  variables:
    - name: branch
      type: String
      value: <+input>
    - name: sha
      type: String
      value: <+input>.default(none)
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
                  spec:
                    shell: Bash
                    source:
                      type: Inline
                      spec:
                        script: echo "branch=<+pipeline.variables.branch> sha=<+pipeline.variables.sha>"
---
trigger:
  name: On push to main
  identifier: on_push
  pipelineIdentifier: echo
  inputs:
    branch: <+trigger.branch>
    sha: <+trigger.commitSha>
  source:
    type: Webhook
    spec:
      type: Github
      spec:
        events: [Push]
        payloadConditions:
          - key: <+trigger.branch>
            operator: Equals
            value: main
---
trigger:
  name: GitLab push
  identifier: gl_push
  pipelineIdentifier: echo
  inputs:
    branch: <+trigger.branch>
    sha: <+trigger.commitSha>
  source:
    type: Webhook
    spec:
      type: Gitlab
      spec:
        events: [Push]
---
trigger:
  name: Custom release
  identifier: custom_release
  pipelineIdentifier: echo
  inputs:
    branch: release-<+trigger.payload.version>
  source:
    type: Webhook
    spec:
      type: Custom
      spec:
        payloadConditions:
          - key: env
            operator: Equals
            value: prod
---
trigger:
  name: Custom without inputs
  identifier: custom_incomplete
  pipelineIdentifier: echo
  source:
    type: Webhook
    spec:
      type: Custom
      spec: {}
"#;

fn delegate(m: &Manager) -> anyhow::Result<Delegate> {
    Delegate::enrol(m, "local", DelegateOpts { tags: vec!["local".into()], ..Default::default() })
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// `dray trigger webhook-url ID -o json`: (path, secret).
fn webhook(m: &Manager, trigger: &str) -> anyhow::Result<(String, String)> {
    let v: Value = serde_json::from_str(&m.cli_ok(&["trigger", "webhook-url", trigger, "-o", "json"])?)?;
    Ok((v["path"].as_str().unwrap_or_default().into(), v["secret"].as_str().unwrap_or_default().into()))
}

/// Posts a delivery; returns the status and the JSON reply.
fn post(m: &Manager, path: &str, headers: &[(&str, &str)], body: &[u8]) -> anyhow::Result<(u16, Value)> {
    let (code, text) = http_post(m.http_port, path, headers, body)
        .ok_or_else(|| anyhow::anyhow!("POST {path}: no HTTP reply"))?;
    let reply = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((code, reply))
}

fn events(m: &Manager, trigger: &str) -> anyhow::Result<Vec<Value>> {
    Ok(serde_json::from_str(&m.cli_ok(&["trigger", "events", trigger, "-o", "json"])?)?)
}

fn outcomes(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["outcome"].as_str().unwrap_or_default()).collect()
}

fn github_push(branch: &str, sha: &str) -> Vec<u8> {
    json!({
        "ref": format!("refs/heads/{branch}"),
        "after": sha,
        "repository": {"full_name": "acme/web", "html_url": "https://github.com/acme/web"},
        "sender": {"login": "octocat"},
    })
    .to_string()
    .into_bytes()
}

/// Waits for the execution to end; requires success and returns it.
fn succeeded(m: &Manager, id: &str) -> anyhow::Result<Value> {
    let e = m.wait_execution(id, &["Succeeded", "Failed", "Aborted"], T)?;
    anyhow::ensure!(e["status"] == "Succeeded", "execution {id} did not succeed: {e:#}");
    Ok(e)
}

fn execution_id(reply: &Value) -> String {
    reply["executionId"].as_str().unwrap_or_default().to_string()
}

both_stores!(github_push_starts_once_per_delivery, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?;
    let _d = delegate(&m)?;
    // The examples, trigger file included, apply as they are.
    m.apply(&examples_dir())?;
    let (example_path, _) = webhook(&m, "release_on_push")?;
    assert_eq!(example_path, "/webhooks/default/default/release_on_push");
    let _fixtures = m.apply_yaml(FIXTURES)?;

    let (path, secret) = webhook(&m, "on_push")?;
    assert_eq!(path, "/webhooks/default/default/on_push");
    assert_eq!(secret.len(), 64, "{secret}");
    let body = github_push("main", "0a1b2c3d");
    let headers = |signature: &str, delivery: &'static str| {
        vec![
            ("X-Hub-Signature-256", signature.to_string()),
            ("X-GitHub-Event", "push".into()),
            ("X-GitHub-Delivery", delivery.into()),
        ]
    };
    let send = |h: Vec<(&str, String)>, body: &[u8]| {
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        post(&m, &path, &h, body)
    };

    // Wrong secret, then no signature at all: 401, recorded, nothing started.
    let (code, reply) = send(headers(&sign("not the secret", &body), "d-0"), &body)?;
    assert_eq!(code, 401, "{reply}");
    assert!(reply["error"].as_str().unwrap_or_default().contains("X-Hub-Signature-256"), "{reply}");
    let (code, reply) = post(&m, &path, &[("X-GitHub-Event", "push")], &body)?;
    assert_eq!(code, 401, "{reply}");

    // Signed: started, with the payload mapped into the pipeline's inputs.
    let good = headers(&sign(&secret, &body), "d-1");
    let (code, reply) = send(good.clone(), &body)?;
    assert_eq!(code, 202, "{reply}");
    assert_eq!(reply["status"], "started");
    let id = execution_id(&reply);

    // GitHub redelivers with the same delivery id: the first execution stands.
    let (code, again) = send(good, &body)?;
    assert_eq!(code, 202, "{again}");
    assert_eq!(execution_id(&again), id);
    assert_eq!(again["status"], "duplicate");

    // A push to another branch fails the payload condition: skipped, with the reason.
    let dev = github_push("dev", "ffff");
    let (code, skipped) = send(headers(&sign(&secret, &dev), "d-2"), &dev)?;
    assert_eq!(code, 200, "{skipped}");
    assert_eq!(skipped["status"], "skipped");
    assert!(skipped["reason"].as_str().unwrap_or_default().contains("payload condition 1"), "{skipped}");

    // Unknown trigger and a trigger that is not a webhook look alike: 404.
    for p in ["/webhooks/default/default/nope", "/webhooks/other/proj/on_push"] {
        let (code, reply) = post(&m, p, &[], b"{}")?;
        assert_eq!(code, 404, "{p}: {reply}");
    }

    let e = succeeded(&m, &id)?;
    assert_eq!(e["triggeredBy"], "trigger:on_push");
    assert_eq!(e["trigger"]["type"], "Webhook");
    assert_eq!(e["trigger"]["branch"], "main");
    let log = m.step_logs(&id, "say.echo")?;
    assert!(log.contains("branch=main sha=0a1b2c3d"), "{log}");
    assert_eq!(m.executions("echo")?.len(), 1, "one execution for three signed deliveries");

    let ev = events(&m, "on_push")?;
    assert_eq!(outcomes(&ev), ["skipped", "duplicate", "started", "refused", "refused"], "{ev:#?}");
    assert_eq!(ev[2]["execution_id"], id.as_str());
    assert_eq!(ev[2]["delivery_id"], "d-1");
    assert_eq!(ev[2]["event"], "Push");
    assert!(ev[3]["reason"].as_str().unwrap_or_default().contains("missing header X-Hub-Signature-256"));
    assert!(ev[4]["reason"].as_str().unwrap_or_default().contains("does not match"), "{:#}", ev[4]);

    // The secret is derived, never stored.
    let dump = store_dump(&m)?;
    assert!(!dump.windows(secret.len()).any(|w| w == secret.as_bytes()), "the store holds a webhook secret");
    Ok(())
});

both_stores!(gitlab_and_custom_webhooks, |kind| -> anyhow::Result<()> {
    let m = Manager::start(kind)?;
    let _d = delegate(&m)?;
    let _fixtures = m.apply_yaml(FIXTURES)?;

    // GitLab sends the secret itself as a token.
    let (path, secret) = webhook(&m, "gl_push")?;
    let body = json!({
        "object_kind": "push",
        "ref": "refs/heads/feature-x",
        "checkout_sha": "9f8e7d",
        "user_username": "tanuki",
        "project": {"path_with_namespace": "acme/api"},
    })
    .to_string();
    let gitlab = |token: &str, uuid: &str| -> anyhow::Result<(u16, Value)> {
        post(
            &m,
            &path,
            &[("X-Gitlab-Token", token), ("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Event-UUID", uuid)],
            body.as_bytes(),
        )
    };
    let (code, reply) = gitlab("wrong-token", "u-0")?;
    assert_eq!(code, 401, "{reply}");
    let (code, reply) = gitlab(&secret, "u-1")?;
    assert_eq!(code, 202, "{reply}");
    let gl_id = execution_id(&reply);
    succeeded(&m, &gl_id)?;
    assert!(m.step_logs(&gl_id, "say.echo")?.contains("branch=feature-x sha=9f8e7d"));
    let ev = events(&m, "gl_push")?;
    assert_eq!(outcomes(&ev), ["started", "refused"], "{ev:#?}");
    assert!(ev[1]["reason"].as_str().unwrap_or_default().contains("X-Gitlab-Token"), "{:#}", ev[1]);

    // A custom sender: bearer secret, or an HMAC signature with its own delivery id.
    let (path, secret) = webhook(&m, "custom_release")?;
    let prod = br#"{"env": "prod", "version": "2.1"}"#;
    let bearer = format!("Bearer {secret}");
    let (code, reply) = post(&m, &path, &[("Authorization", &bearer), ("X-Dray-Event", "release")], prod)?;
    assert_eq!(code, 202, "{reply}");
    let bearer_id = execution_id(&reply);
    let signed = br#"{"env": "prod", "version": "2.2"}"#;
    let signature = sign(&secret, signed);
    let (code, reply) =
        post(&m, &path, &[("X-Dray-Signature", &signature), ("X-Dray-Delivery", "rel-2.2")], signed)?;
    assert_eq!(code, 202, "{reply}");
    let signed_id = execution_id(&reply);
    // The signature covers the body: the same signature on another body is refused.
    let tampered = br#"{"env": "prod", "version": "6.6"}"#;
    let (code, reply) = post(&m, &path, &[("X-Dray-Signature", &signature)], tampered)?;
    assert_eq!(code, 401, "{reply}");
    let staging = br#"{"env": "staging", "version": "2.3"}"#;
    let (code, reply) = post(&m, &path, &[("Authorization", &bearer)], staging)?;
    assert_eq!((code, reply["status"].as_str()), (200, Some("skipped")), "{reply}");
    for (id, version) in [(&bearer_id, "2.1"), (&signed_id, "2.2")] {
        let e = succeeded(&m, id)?;
        assert_eq!(e["triggeredBy"], "trigger:custom_release");
        assert_eq!(e["trigger"]["payload"]["version"], version);
        let log = m.step_logs(id, "say.echo")?;
        assert!(log.contains(&format!("branch=release-{version} sha=none")), "{log}");
    }
    let ev = events(&m, "custom_release")?;
    assert_eq!(outcomes(&ev), ["skipped", "refused", "started", "started"], "{ev:#?}");
    assert_eq!(ev[1]["event"], "", "a refused delivery names no event");
    assert_eq!(ev[2]["delivery_id"], "rel-2.2");
    assert_eq!(ev[3]["event"], "release");

    // A trigger that leaves a required input unset: the run is refused, 422, recorded.
    let (path, secret) = webhook(&m, "custom_incomplete")?;
    let (code, reply) = post(&m, &path, &[("Authorization", &format!("Bearer {secret}"))], b"{}")?;
    assert_eq!(code, 422, "{reply}");
    assert!(reply["error"].as_str().unwrap_or_default().contains("branch"), "{reply}");
    let ev = events(&m, "custom_incomplete")?;
    assert_eq!(outcomes(&ev), ["failed"], "{ev:#?}");
    assert_eq!(ev[0]["reason"], reply["error"]);
    assert_eq!(m.executions("echo")?.len(), 3, "GitLab once, custom twice");
    Ok(())
});

fn wait_fires(m: &Manager, at_least: usize) -> anyhow::Result<Vec<i64>> {
    wait_for(&format!("{at_least} cron executions"), T, || cron_fires(m).ok().filter(|f| f.len() >= at_least))
}

both_stores!(cron_fires_once_per_time_across_restarts, |kind| -> anyhow::Result<()> {
    let mut m = Manager::start(kind)?;
    let _d = delegate(&m)?;
    let _fixtures = m.apply_yaml(CRON_FIXTURES)?;

    let fires = wait_fires(&m, 2)?;
    assert!(distinct(&fires), "{fires:?}");
    let first = m.executions("tick")?;
    let id = first.last().and_then(|e| e["id"].as_str()).unwrap_or_default().to_string();
    let e = succeeded(&m, &id)?;
    let at = e["trigger"]["firedAt"].as_i64().unwrap_or_default();
    assert!(m.step_logs(&id, "tick.say")?.contains(&format!("fired at {at}")));

    // A restart resumes from the stored last fire: new fire times only.
    m.restart()?;
    let before = cron_fires(&m)?.len();
    let fires = wait_fires(&m, before + 2)?;
    assert!(distinct(&fires), "a fire time started twice: {fires:?}");

    let ev = events(&m, "every2s")?;
    assert!(ev.iter().all(|e| e["event"] == "cron"), "{ev:#?}");
    let ids: HashSet<String> =
        m.executions("tick")?.iter().filter_map(|e| e["id"].as_str().map(String::from)).collect();
    let recorded: HashSet<String> = ev
        .iter()
        .filter(|e| e["outcome"] == "started" || e["outcome"] == "duplicate")
        .filter_map(|e| e["execution_id"].as_str().map(String::from))
        .collect();
    assert!(recorded.is_subset(&ids), "events name this trigger's executions: {ev:#?}");
    assert!(recorded.contains(&id), "{ev:#?}");
    // The kill may land between starting a fire and recording it; every other fire is recorded.
    assert!(recorded.len() + 1 >= ids.len(), "{} of {} fires recorded: {ev:#?}", recorded.len(), ids.len());
    Ok(())
});
