//! Client commands for executions: `dray run`, `get executions`, `describe
//! execution`, execution logs, `approve`, `intervene`, `abort|pause|resume`.

use std::collections::BTreeMap;

use anyhow::bail;
use dray_shared::pb;
use serde_json::json;

use super::client::{Client, PipelinesClient};
use super::output::{Format, ago, human_ms, print, table};
use super::{logs, scope_of, status};

/// `dray run` flags.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Pipeline identifier.
    pub pipeline: String,
    /// Runtime input: NAME=VALUE (a pipeline variable) or an input path such as
    /// stages.deploy.spec.service.serviceRef=web (repeatable; applied last).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Input set or overlay input set identifier (repeatable; applied in order).
    #[arg(long = "input-set", value_name = "ID")]
    pub input_sets: Vec<String>,
    /// Scope ORG/PROJECT [default: default/default].
    #[arg(long)]
    pub project: Option<String>,
    /// Follow the execution, printing stage and step transitions; exit 0 only on success.
    #[arg(long, short)]
    pub wait: bool,
}

/// `dray approve` flags.
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// Execution id.
    pub execution: String,
    /// Step path (needed when several approvals wait), e.g. approve.gate.
    #[arg(long)]
    pub step: Option<String>,
    /// Reject instead of approve.
    #[arg(long)]
    pub reject: bool,
    /// Comment recorded with the decision.
    #[arg(long, default_value = "")]
    pub comment: String,
    /// Approver input NAME=VALUE (repeatable).
    #[arg(long = "input", value_name = "NAME=VALUE")]
    pub inputs: Vec<String>,
}

/// `dray intervene` flags.
#[derive(Debug, clap::Args)]
pub struct InterveneArgs {
    /// Execution id.
    pub execution: String,
    /// What to do: retry, ignore, mark-as-success, mark-as-failure, abort,
    /// stage-rollback, pipeline-rollback.
    #[arg(long)]
    pub action: String,
    /// Step path (needed when several steps wait).
    #[arg(long)]
    pub step: Option<String>,
}

/// Parses repeated KEY=VALUE flags.
pub fn key_values(flag: &str, items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        let Some((k, v)) = item.split_once('=') else {
            bail!("{flag} {item:?}: expected KEY=VALUE");
        };
        if k.trim().is_empty() {
            bail!("{flag} {item:?}: the key is empty");
        }
        out.insert(k.trim().to_string(), v.to_string());
    }
    Ok(out)
}

/// Exit code of a finished execution: 0 only for success.
pub fn exit_code(status: &str) -> i32 {
    match status {
        "Succeeded" => 0,
        "Aborted" => 3,
        _ => 1,
    }
}

/// `dray run`.
pub async fn run(p: &mut PipelinesClient, args: RunArgs) -> anyhow::Result<i32> {
    let r = p
        .run_pipeline(pb::RunPipelineRequest {
            scope: scope_of(args.project.as_deref())?,
            pipeline: args.pipeline.clone(),
            set: key_values("--set", &args.set)?.into_iter().collect(),
            input_sets: args.input_sets,
        })
        .await
        .map_err(status)?
        .into_inner();
    println!("{}", r.execution_id);
    if !args.wait {
        eprintln!("Started {} #{} ({}).", args.pipeline, r.sequence_id, r.execution_id);
        return Ok(0);
    }
    follow(p, &r.execution_id).await
}

/// Prints transitions until the execution ends; returns its exit code.
pub async fn follow(p: &mut PipelinesClient, id: &str) -> anyhow::Result<i32> {
    let mut stream = p
        .watch_execution(pb::ExecutionRequest { id: id.into(), reason: String::new() })
        .await
        .map_err(status)?
        .into_inner();
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let mut final_status = None;
    while let Some(ev) = stream.message().await.map_err(status)? {
        if ev.kind == "execution" {
            if matches!(ev.status.as_str(), "Succeeded" | "Failed" | "Aborted") {
                final_status = Some((ev.status.clone(), ev.message.clone()));
                break;
            }
            if ev.message == "paused" {
                eprintln!("execution paused");
            }
            continue;
        }
        if ev.path.is_empty() || last.get(&ev.path) == Some(&ev.status) || ev.status == "NotStarted" {
            continue;
        }
        last.insert(ev.path.clone(), ev.status.clone());
        let detail = if ev.message.is_empty() { String::new() } else { format!(" — {}", ev.message) };
        eprintln!("{:<9} {:<40} {}{}", ev.kind, ev.path, ev.status, detail);
    }
    let Some((st, reason)) = final_status else {
        bail!("the event stream ended before the execution did; see `dray describe execution {id}`")
    };
    if reason.is_empty() {
        eprintln!("execution {st}");
    } else {
        eprintln!("execution {st}: {reason}");
    }
    Ok(exit_code(&st))
}

fn view_json(e: &pb::Execution) -> serde_json::Value {
    json!({
        "id": e.id, "pipeline": e.pipeline, "sequenceId": e.sequence_id, "status": e.status,
        "reason": e.reason, "createdMs": e.created_ms, "endedMs": e.ended_ms,
        "triggeredBy": e.triggered_by,
        "trigger": serde_json::from_str::<serde_json::Value>(&e.trigger_json).unwrap_or_default(),
        "inputs": e.inputs,
        "nodes": e.nodes.iter().map(|n| json!({
            "path": n.path, "kind": n.kind, "name": n.name, "type": n.step_type, "status": n.status,
            "attempt": n.attempt, "tasks": n.task_ids, "delegate": n.delegate,
            "startedMs": n.started_ms, "endedMs": n.ended_ms,
            "outputs": serde_json::from_str::<serde_json::Value>(&n.outputs_json).unwrap_or_default(),
            "failureType": n.failure_type, "failure": n.failure_message, "notes": n.notes,
            "waitingFor": n.waiting_for, "rollback": n.rollback,
        })).collect::<Vec<_>>(),
    })
}

/// `dray get executions`.
pub async fn list(
    p: &mut PipelinesClient,
    pipeline: Option<String>,
    statuses: Vec<String>,
    limit: u32,
    fmt: Format,
) -> anyhow::Result<i32> {
    let list = p
        .list_executions(pb::ListExecutionsRequest {
            pipeline: pipeline.unwrap_or_default(),
            statuses,
            limit,
        })
        .await
        .map_err(status)?
        .into_inner()
        .executions;
    let views: Vec<_> = list.iter().map(view_json).collect();
    print(fmt, &views, || {
        table(
            &["ID", "PIPELINE", "#", "STATUS", "TRIGGER", "STARTED", "DURATION", "REASON"],
            list.iter()
                .map(|e| {
                    let dur = if e.ended_ms > 0 {
                        human_ms((e.ended_ms - e.created_ms).max(0) as u64)
                    } else {
                        "-".into()
                    };
                    vec![
                        e.id.clone(),
                        e.pipeline.clone(),
                        e.sequence_id.to_string(),
                        e.status.clone(),
                        e.triggered_by.clone(),
                        ago(e.created_ms),
                        dur,
                        e.reason.clone(),
                    ]
                })
                .collect(),
        )
    })?;
    Ok(0)
}

/// `dray get instances`: one row per instance, grouped by service,
/// environment and infrastructure.
pub async fn instances(
    p: &mut PipelinesClient,
    service: Option<String>,
    environment: Option<String>,
    fmt: Format,
) -> anyhow::Result<i32> {
    let groups = p
        .list_instances(pb::ListInstancesRequest {
            service: service.unwrap_or_default(),
            environment: environment.unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner()
        .groups;
    let views: Vec<_> = groups
        .iter()
        .map(|g| {
            json!({
                "service": g.service, "environment": g.environment, "infrastructure": g.infrastructure,
                "executionId": g.execution_id, "step": g.step, "updatedMs": g.updated_ms,
                "instances": g.instances.iter().map(|i| json!({
                    "name": i.name, "host": i.host, "namespace": i.namespace,
                    "version": i.version, "status": i.status, "details": i.details,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    print(fmt, &views, || {
        table(
            &[
                "SERVICE",
                "ENVIRONMENT",
                "INFRASTRUCTURE",
                "INSTANCE",
                "HOST",
                "VERSION",
                "STATUS",
                "DEPLOYED",
            ],
            groups
                .iter()
                .flat_map(|g| {
                    g.instances.iter().map(move |i| {
                        vec![
                            g.service.clone(),
                            g.environment.clone(),
                            g.infrastructure.clone(),
                            if i.namespace.is_empty() {
                                i.name.clone()
                            } else {
                                format!("{}/{}", i.namespace, i.name)
                            },
                            i.host.clone(),
                            i.version.clone(),
                            i.status.clone(),
                            ago(g.updated_ms),
                        ]
                    })
                })
                .collect(),
        )
    })?;
    Ok(0)
}

/// `dray describe execution ID`: the tree with status, delegate, duration,
/// outputs and failure reasons.
pub async fn describe(p: &mut PipelinesClient, id: &str, fmt: Format) -> anyhow::Result<i32> {
    let e = p.get_execution(pb::GetExecutionRequest { id: id.into() }).await.map_err(status)?.into_inner();
    print(fmt, &view_json(&e), || {
        let mut out = format!(
            "Execution {} — {} #{} — {}{}\nStarted {} by {}\n",
            e.id,
            e.pipeline,
            e.sequence_id,
            e.status,
            if e.reason.is_empty() { String::new() } else { format!(": {}", e.reason) },
            ago(e.created_ms),
            e.triggered_by
        );
        if !e.inputs.is_empty() {
            let mut inputs: Vec<_> = e.inputs.iter().collect();
            inputs.sort();
            out.push_str("Inputs:\n");
            for (k, v) in inputs {
                out.push_str(&format!("  {k} = {v}\n"));
            }
        }
        out.push('\n');
        for n in e.nodes.iter().filter(|n| n.kind != "pipeline") {
            let indent = "  ".repeat(n.depth.saturating_sub(1) as usize);
            let dur = match (n.started_ms, n.ended_ms) {
                (s, e) if s > 0 && e >= s => human_ms((e - s) as u64),
                (s, _) if s > 0 => "running".into(),
                _ => String::new(),
            };
            let label = if n.step_type.is_empty() { n.kind.clone() } else { n.step_type.clone() };
            let rb = if n.rollback { " [rollback]" } else { "" };
            let waiting =
                if n.waiting_for.is_empty() { String::new() } else { format!(" ({})", n.waiting_for) };
            out.push_str(&format!(
                "{indent}{} {}{rb} [{label}] {}{waiting} {dur}",
                symbol(&n.status),
                n.identifier,
                n.status
            ));
            if n.attempt > 1 {
                out.push_str(&format!(" attempt {}", n.attempt));
            }
            if !n.delegate.is_empty() {
                out.push_str(&format!(" on {}", n.delegate));
            }
            out.push('\n');
            if !n.failure_message.is_empty() {
                out.push_str(&format!("{indent}    failure ({}): {}\n", n.failure_type, n.failure_message));
            }
            if !n.outputs_json.is_empty() {
                out.push_str(&format!("{indent}    outputs: {}\n", n.outputs_json));
            }
            for note in &n.notes {
                out.push_str(&format!("{indent}    · {note}\n"));
            }
        }
        out
    })?;
    Ok(0)
}

fn symbol(status: &str) -> &'static str {
    match status {
        "Succeeded" => "✓",
        "Failed" => "✗",
        "Running" | "Queued" => "▶",
        "Waiting" => "…",
        "Skipped" => "-",
        "Aborted" => "■",
        "IgnoreFailed" => "~",
        _ => " ",
    }
}

/// `dray logs EXECUTION [--step PATH] [-f]`: every step's task output in
/// order, each under a header; with `-f`, follows until the execution ends.
pub async fn execution_logs(
    p: &mut PipelinesClient,
    c: &mut Client,
    id: &str,
    step: Option<&str>,
    follow_on: bool,
) -> anyhow::Result<i32> {
    let mut printed: Vec<String> = vec![];
    loop {
        let e =
            p.get_execution(pb::GetExecutionRequest { id: id.into() }).await.map_err(status)?.into_inner();
        if let Some(s) = step
            && !e.nodes.iter().any(|n| n.path == s)
        {
            bail!("execution {id} has no step {s:?}");
        }
        let mut progressed = false;
        for n in e
            .nodes
            .iter()
            .filter(|n| step.is_none_or(|s| n.path == s || n.path.starts_with(&format!("{s}."))))
        {
            for t in &n.task_ids {
                if printed.contains(t) {
                    continue;
                }
                let running = n.status == "Running" && n.task_ids.last() == Some(t);
                if running && !follow_on {
                    continue;
                }
                eprintln!("==> {} ({}, task {t})", n.path, n.step_type);
                logs(c, t, running).await?;
                printed.push(t.clone());
                progressed = true;
            }
        }
        let over = matches!(e.status.as_str(), "Succeeded" | "Failed" | "Aborted");
        if !follow_on || (over && !progressed) {
            return Ok(if follow_on { exit_code(&e.status) } else { 0 });
        }
        if !progressed {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }
}

/// `dray approve`.
pub async fn approve(p: &mut PipelinesClient, a: ApproveArgs) -> anyhow::Result<i32> {
    let e = p
        .approve(pb::ApproveRequest {
            id: a.execution.clone(),
            step: a.step.unwrap_or_default(),
            reject: a.reject,
            comment: a.comment,
            inputs: key_values("--input", &a.inputs)?.into_iter().collect(),
        })
        .await
        .map_err(status)?
        .into_inner();
    eprintln!("{} execution {} (now {}).", if a.reject { "Rejected" } else { "Approved" }, e.id, e.status);
    Ok(0)
}

/// `dray intervene`.
pub async fn intervene(p: &mut PipelinesClient, a: InterveneArgs) -> anyhow::Result<i32> {
    let e = p
        .intervene(pb::InterveneRequest {
            id: a.execution,
            step: a.step.unwrap_or_default(),
            action: a.action.clone(),
        })
        .await
        .map_err(status)?
        .into_inner();
    eprintln!("Applied {} to execution {} (now {}).", a.action, e.id, e.status);
    Ok(0)
}

/// Which control command.
#[derive(Debug, Clone, Copy)]
pub enum Control {
    /// Abort.
    Abort,
    /// Pause.
    Pause,
    /// Resume.
    Resume,
}

/// `dray abort|pause|resume`.
pub async fn control(
    p: &mut PipelinesClient,
    what: Control,
    id: String,
    reason: Option<String>,
) -> anyhow::Result<i32> {
    let req = pb::ExecutionRequest { id, reason: reason.unwrap_or_default() };
    let e = match what {
        Control::Abort => p.abort_execution(req).await,
        Control::Pause => p.pause_execution(req).await,
        Control::Resume => p.resume_execution(req).await,
    }
    .map_err(status)?
    .into_inner();
    eprintln!("Execution {} is {}.", e.id, e.status);
    Ok(0)
}
