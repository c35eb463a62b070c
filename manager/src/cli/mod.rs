//! The `dray` command line: `dray server` runs the manager; every other command is
//! a client of the manager's gRPC API.

pub mod client;
pub mod entities;
pub mod output;
pub mod pipelines;
pub mod triggers;

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use dray_shared::pb::{self, TaskState};
use dray_shared::task;
use tonic::Code;

use self::client::{Client, ClientArgs};
use self::output::{DelegateView, Format, LeaseEventView, LeaseView, TaskView, ago, human_ms, print, table};
use crate::config::ServerArgs;

/// Dray: continuous delivery with a thin manager and delegates in your network.
#[derive(Debug, Parser)]
#[command(name = "dray", version, about)]
pub struct Cli {
    #[command(flatten)]
    client: ClientArgs,
    /// Output format for read commands.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the manager (control plane).
    Server(ServerArgs),
    /// Create, list and revoke delegate enrolment tokens.
    #[command(subcommand, name = "delegate-token")]
    DelegateToken(TokenCmd),
    /// List, revoke and ping delegates.
    #[command(subcommand)]
    Delegate(DelegateCmd),
    /// Run, inspect and cancel tasks.
    #[command(subcommand)]
    Task(TaskCmd),
    /// List tasks, delegates, leases, executions or entities (services, pipelines…).
    #[command(subcommand)]
    Get(GetCmd),
    /// Print the log of a task, or of an execution's steps; -f follows it until it ends.
    Logs {
        /// Task id or execution id.
        task: String,
        /// Only this step of an execution (a path such as build.say), with its children.
        #[arg(long)]
        step: Option<String>,
        /// Keep streaming until the task or execution ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Run a pipeline; prints the execution id.
    Run(pipelines::RunArgs),
    /// Approve (or --reject) a step waiting for approval.
    Approve(pipelines::ApproveArgs),
    /// Choose the action for a step waiting on manual intervention.
    Intervene(pipelines::InterveneArgs),
    /// Abort an execution.
    Abort {
        /// Execution id.
        execution: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Pause an execution: running steps finish, nothing new starts.
    Pause {
        /// Execution id.
        execution: String,
    },
    /// Resume a paused execution.
    Resume {
        /// Execution id.
        execution: String,
    },
    /// Show one execution (the tree of stages, groups and steps), or an entity with its YAML.
    #[command(subcommand)]
    Describe(DescribeCmd),
    /// Watch lease events live.
    #[command(subcommand)]
    Leases(LeasesCmd),
    /// Webhook URLs and secrets of triggers, and what became of their deliveries and fires.
    #[command(subcommand)]
    Trigger(triggers::TriggerCmd),
    /// Create or update entities (services, environments, pipelines…) from YAML.
    Apply(entities::ApplyArgs),
    /// Check entity YAML (references against the manager's store) without applying it.
    Validate(entities::ValidateArgs),
    /// Delete an entity (refused while another references it).
    Delete(entities::DeleteArgs),
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Create a token; prints it on stdout.
    Create {
        /// Unique name.
        #[arg(long)]
        name: String,
        /// Scope: ORG/PROJECT (or ORG); default the whole account.
        #[arg(long)]
        project: Option<String>,
        /// Lifetime, e.g. 1h, 7d.
        #[arg(long, default_value = "24h")]
        expires_in: String,
        /// Maximum number of enrolments (default unlimited).
        #[arg(long)]
        max_uses: Option<u32>,
    },
    /// Revoke a token by name.
    Revoke {
        /// Token name.
        name: String,
    },
    /// List tokens.
    List,
}

#[derive(Debug, Subcommand)]
enum DelegateCmd {
    /// List delegates.
    List,
    /// Cut a delegate off at once and for good.
    Revoke {
        /// Delegate id.
        id: String,
    },
    /// Run a no-op task on one delegate and report the round trip.
    Ping {
        /// Delegate id.
        id: String,
        /// How long to wait.
        #[arg(long, default_value = "10s")]
        timeout: String,
    },
}

#[derive(Debug, Subcommand)]
enum TaskCmd {
    /// Run a shell script on a delegate; prints the task id.
    Run {
        /// Delegate tag the task needs (repeatable).
        #[arg(long = "selector", short = 's')]
        selectors: Vec<String>,
        /// Scope ORG/PROJECT.
        #[arg(long)]
        project: Option<String>,
        /// Run timeout, e.g. 30s, 10m.
        #[arg(long)]
        timeout: Option<String>,
        /// How long to wait for an eligible delegate.
        #[arg(long)]
        queue_timeout: Option<String>,
        /// Environment variable KEY=VALUE for the script (repeatable; values may hold secret references).
        #[arg(long = "env", short = 'e')]
        env: Vec<String>,
        /// Shell variable whose final value becomes a task output (repeatable); see `dray task get`.
        #[arg(long = "output-var")]
        output_vars: Vec<String>,
        /// Stream the logs and exit 0 only if the task succeeded.
        #[arg(long, short)]
        wait: bool,
        /// The script (bash).
        #[arg(last = true, required = true)]
        script: Vec<String>,
    },
    /// Run a no-op task (for checks and benchmarks).
    Noop {
        /// Delegate tag the task needs (repeatable).
        #[arg(long = "selector", short = 's')]
        selectors: Vec<String>,
        /// Wait for the result.
        #[arg(long, short)]
        wait: bool,
    },
    /// Show one task.
    Get {
        /// Task id.
        id: String,
    },
    /// Cancel a task.
    Cancel {
        /// Task id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum GetCmd {
    /// Tasks, newest first.
    Tasks {
        /// Only these states (repeatable): queued, offered, running, succeeded, failed, cancelled, lost, expired.
        #[arg(long)]
        state: Vec<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Delegates.
    Delegates,
    /// Manager replicas sharing this store, with their heartbeats.
    #[command(alias = "replica")]
    Replicas,
    /// Offered and running leases.
    Leases,
    /// Pipeline executions, newest first.
    #[command(alias = "execution")]
    Executions {
        /// Only this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only these statuses (repeatable): Running, Paused, Succeeded, Failed, Aborted.
        #[arg(long)]
        status: Vec<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Service instances (pods, hosts) the latest deploys left running, per
    /// service, environment and infrastructure.
    #[command(alias = "instance")]
    Instances {
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// Only this environment.
        #[arg(long)]
        environment: Option<String>,
    },
    #[command(flatten)]
    Entity(entities::EntityCmd),
}

#[derive(Debug, Subcommand)]
enum DescribeCmd {
    /// An execution: status, delegate, duration, outputs and failure of every node.
    #[command(alias = "executions")]
    Execution {
        /// Execution id.
        id: String,
    },
    #[command(flatten)]
    Entity(entities::EntityCmd),
}

#[derive(Debug, Subcommand)]
enum LeasesCmd {
    /// Live feed of lease events (offered, acknowledged, rejected, renewed, lost, finished).
    Watch {
        /// Hide renewals.
        #[arg(long)]
        no_renewals: bool,
    },
}

pub(crate) fn scope_of(project: Option<&str>) -> anyhow::Result<Option<pb::Scope>> {
    let Some(p) = project else { return Ok(None) };
    let mut parts = p.splitn(2, '/');
    let org = parts.next().unwrap_or_default().to_string();
    let project = parts.next().unwrap_or_default().to_string();
    if org.is_empty() {
        bail!("--project {p:?}: expected ORG/PROJECT or ORG");
    }
    Ok(Some(pb::Scope { account: String::new(), org, project }))
}

fn duration_ms(flag: &str, v: &str) -> anyhow::Result<u64> {
    humantime::parse_duration(v)
        .map(|d| d.as_millis() as u64)
        .map_err(|e| anyhow::anyhow!("{flag} {v:?}: {e} (try 30s, 5m, 1h)"))
}

/// Makes gRPC errors read like CLI errors.
pub(crate) fn status(e: tonic::Status) -> anyhow::Error {
    match e.code() {
        Code::Unavailable => anyhow::anyhow!("manager unavailable: {}", e.message()),
        Code::Unauthenticated => anyhow::anyhow!("not authenticated: {}", e.message()),
        _ => anyhow::anyhow!("{}", e.message()),
    }
}

/// Exit code for a task's final state: 0 only for success.
pub fn exit_code_for(state: TaskState) -> i32 {
    match state {
        TaskState::Succeeded => 0,
        TaskState::Failed => 1,
        TaskState::Cancelled => 3,
        TaskState::Lost => 4,
        TaskState::Expired => 5,
        _ => 6,
    }
}

impl Cli {
    /// Runs the command; returns the process exit code.
    pub async fn run(self) -> anyhow::Result<i32> {
        let fmt = self.output;
        match self.command {
            Command::Server(args) => {
                let config = args.resolve()?;
                crate::server::run(config).await?;
                Ok(0)
            }
            Command::DelegateToken(cmd) => tokens(&mut self.client.connect().await?, cmd, fmt).await,
            Command::Delegate(cmd) => delegates(&mut self.client.connect().await?, cmd, fmt).await,
            Command::Task(cmd) => tasks(&mut self.client.connect().await?, cmd, fmt).await,
            Command::Get(GetCmd::Executions { pipeline, status, limit }) => {
                pipelines::list(&mut self.client.pipelines().await?, pipeline, status, limit, fmt).await
            }
            Command::Get(GetCmd::Instances { service, environment }) => {
                pipelines::instances(&mut self.client.pipelines().await?, service, environment, fmt).await
            }
            Command::Get(GetCmd::Entity(cmd)) => {
                entities::get(&mut self.client.connect().await?, cmd, fmt).await
            }
            Command::Get(cmd) => get(&mut self.client.connect().await?, cmd, fmt).await,
            Command::Logs { task, step, follow } => {
                let mut c = self.client.connect().await?;
                let mut p = self.client.pipelines().await?;
                let is_execution =
                    p.get_execution(pb::GetExecutionRequest { id: task.clone() }).await.is_ok();
                if is_execution {
                    return pipelines::execution_logs(&mut p, &mut c, &task, step.as_deref(), follow).await;
                }
                if step.is_some() {
                    bail!("--step needs an execution id; {task} is not one");
                }
                let state = logs(&mut c, &task, follow).await?;
                Ok(state.map(exit_code_for).unwrap_or(0))
            }
            Command::Run(args) => pipelines::run(&mut self.client.pipelines().await?, args).await,
            Command::Approve(args) => pipelines::approve(&mut self.client.pipelines().await?, args).await,
            Command::Intervene(args) => pipelines::intervene(&mut self.client.pipelines().await?, args).await,
            Command::Abort { execution, reason } => {
                let p = &mut self.client.pipelines().await?;
                pipelines::control(p, pipelines::Control::Abort, execution, reason).await
            }
            Command::Pause { execution } => {
                let p = &mut self.client.pipelines().await?;
                pipelines::control(p, pipelines::Control::Pause, execution, None).await
            }
            Command::Resume { execution } => {
                let p = &mut self.client.pipelines().await?;
                pipelines::control(p, pipelines::Control::Resume, execution, None).await
            }
            Command::Describe(DescribeCmd::Execution { id }) => {
                pipelines::describe(&mut self.client.pipelines().await?, &id, fmt).await
            }
            Command::Describe(DescribeCmd::Entity(cmd)) => {
                entities::describe(&mut self.client.connect().await?, cmd, fmt).await
            }
            Command::Apply(args) => entities::apply(&mut self.client.connect().await?, args, fmt).await,
            Command::Validate(args) => entities::validate(&mut self.client.connect().await?, args, fmt).await,
            Command::Delete(args) => entities::delete(&mut self.client.connect().await?, args).await,
            Command::Trigger(cmd) => triggers::run(&self.client, cmd, fmt).await,
            Command::Leases(LeasesCmd::Watch { no_renewals }) => {
                watch(&mut self.client.connect().await?, fmt, no_renewals).await?;
                Ok(0)
            }
        }
    }
}

async fn tokens(c: &mut Client, cmd: TokenCmd, fmt: Format) -> anyhow::Result<i32> {
    match cmd {
        TokenCmd::Create { name, project, expires_in, max_uses } => {
            let r = c
                .create_delegate_token(pb::CreateDelegateTokenRequest {
                    name,
                    scope: scope_of(project.as_deref())?,
                    expires_in_ms: duration_ms("--expires-in", &expires_in)?,
                    max_uses: max_uses.unwrap_or(0),
                })
                .await
                .map_err(status)?
                .into_inner();
            println!("{}", r.token);
        }
        TokenCmd::Revoke { name } => {
            c.revoke_delegate_token(pb::RevokeDelegateTokenRequest { name: name.clone() })
                .await
                .map_err(status)?;
            eprintln!("Revoked delegate token {name:?}.");
        }
        TokenCmd::List => {
            let tokens = c
                .list_delegate_tokens(pb::ListDelegateTokensRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .tokens;
            let views: Vec<serde_json::Value> = tokens
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "name": t.name, "scope": t.scope.as_ref().map(|s| s.display()),
                        "expires_ms": t.expires_ms, "uses": t.uses,
                        "max_uses": (t.max_uses > 0).then_some(t.max_uses), "revoked": t.revoked,
                    })
                })
                .collect();
            print(fmt, &views, || {
                table(
                    &["NAME", "SCOPE", "USES", "EXPIRES", "REVOKED"],
                    tokens
                        .iter()
                        .map(|t| {
                            let max = if t.max_uses > 0 { t.max_uses.to_string() } else { "∞".into() };
                            let left = t.expires_ms - dray_shared::clock::now_ms();
                            let expires = if left > 0 {
                                format!("in {}", human_ms(left as u64))
                            } else {
                                "expired".into()
                            };
                            vec![
                                t.name.clone(),
                                t.scope.as_ref().map(|s| s.display()).unwrap_or_default(),
                                format!("{}/{max}", t.uses),
                                expires,
                                t.revoked.to_string(),
                            ]
                        })
                        .collect(),
                )
            })?;
        }
    }
    Ok(0)
}

async fn delegates(c: &mut Client, cmd: DelegateCmd, fmt: Format) -> anyhow::Result<i32> {
    match cmd {
        DelegateCmd::List => get(c, GetCmd::Delegates, fmt).await,
        DelegateCmd::Revoke { id } => {
            let d = c.revoke_delegate(pb::RevokeDelegateRequest { id }).await.map_err(status)?.into_inner();
            eprintln!("Revoked delegate {} ({}).", d.name, d.id);
            Ok(0)
        }
        DelegateCmd::Ping { id, timeout } => {
            let timeout_ms = duration_ms("--timeout", &timeout)?;
            let started = std::time::Instant::now();
            let spec = pb::TaskSpec {
                kind: task::kind::NOOP.into(),
                delegate_id: id.clone(),
                queue_timeout_ms: timeout_ms,
                ..Default::default()
            };
            let task_id = submit(c, spec).await?;
            let t = c.wait_task(pb::GetTaskRequest { id: task_id }).await.map_err(status)?.into_inner();
            let elapsed = started.elapsed();
            if t.state() == TaskState::Succeeded {
                println!("pong from {} ({id}) in {:.1} ms", t.delegate, elapsed.as_secs_f64() * 1000.0);
                Ok(0)
            } else {
                eprintln!("no pong from {id}: task {} {}: {}", t.id, t.state().short_name(), t.reason);
                Ok(exit_code_for(t.state()))
            }
        }
    }
}

async fn submit(c: &mut Client, spec: pb::TaskSpec) -> anyhow::Result<String> {
    let r = c.submit_tasks(pb::SubmitTasksRequest { tasks: vec![spec] }).await.map_err(status)?.into_inner();
    r.task_ids.into_iter().next().context("the manager returned no task id")
}

async fn tasks(c: &mut Client, cmd: TaskCmd, fmt: Format) -> anyhow::Result<i32> {
    match cmd {
        TaskCmd::Run { selectors, project, timeout, queue_timeout, env, output_vars, wait, script } => {
            let mut vars = BTreeMap::new();
            for kv in env {
                let (k, v) =
                    kv.split_once('=').with_context(|| format!("--env {kv:?}: expected KEY=VALUE"))?;
                vars.insert(k.to_string(), v.to_string());
            }
            let vars_out: Vec<&str> = output_vars.iter().map(String::as_str).collect();
            let mut spec = task::shell_spec_with_outputs(&script.join(" "), vars, &vars_out);
            spec.selectors = selectors;
            spec.scope = scope_of(project.as_deref())?;
            if let Some(t) = timeout {
                spec.timeout_ms = duration_ms("--timeout", &t)?;
            }
            if let Some(t) = queue_timeout {
                spec.queue_timeout_ms = duration_ms("--queue-timeout", &t)?;
            }
            run_task(c, spec, wait).await
        }
        TaskCmd::Noop { selectors, wait } => {
            let spec = pb::TaskSpec { kind: task::kind::NOOP.into(), selectors, ..Default::default() };
            run_task(c, spec, wait).await
        }
        TaskCmd::Get { id } => {
            let t: TaskView =
                c.get_task(pb::GetTaskRequest { id }).await.map_err(status)?.into_inner().into();
            print(fmt, &t, || format!("{}{}", task_table(std::slice::from_ref(&t)), task_details(&t)))?;
            Ok(0)
        }
        TaskCmd::Cancel { id } => {
            let t = c.cancel_task(pb::CancelTaskRequest { id }).await.map_err(status)?.into_inner();
            let state = t.state();
            if state == TaskState::Running {
                eprintln!("Cancel requested; task {} stops when its delegate confirms.", t.id);
            } else {
                eprintln!("Task {} is {}.", t.id, state.short_name());
            }
            Ok(0)
        }
    }
}

async fn run_task(c: &mut Client, spec: pb::TaskSpec, wait: bool) -> anyhow::Result<i32> {
    let id = submit(c, spec).await?;
    println!("{id}");
    if !wait {
        return Ok(0);
    }
    std::io::stdout().flush()?;
    logs(c, &id, true).await?;
    let t = c.get_task(pb::GetTaskRequest { id: id.clone() }).await.map_err(status)?.into_inner();
    let state = t.state();
    if state != TaskState::Succeeded {
        let reason = if t.reason.is_empty() { String::new() } else { format!(": {}", t.reason) };
        eprintln!("task {id} {}{reason}", state.short_name());
    }
    Ok(exit_code_for(state))
}

/// Prints a task's log; returns its final state when following.
pub(crate) async fn logs(c: &mut Client, id: &str, follow: bool) -> anyhow::Result<Option<TaskState>> {
    let mut stream =
        c.task_logs(pb::TaskLogsRequest { id: id.to_string(), follow }).await.map_err(status)?.into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(entry) = stream.message().await.map_err(status)? {
        if entry.final_state != 0 {
            return Ok(Some(entry.final_state()));
        }
        if let Some(line) = entry.line {
            if line.stream == pb::LogStream::Stderr as i32 {
                out.flush()?;
                eprintln!("{}", line.text);
            } else if line.stream == pb::LogStream::System as i32 {
                out.flush()?;
                eprintln!("[dray] {}", line.text);
            } else {
                writeln!(out, "{}", line.text)?;
            }
        }
    }
    Ok(None)
}

/// What `task get` shows below the table: the error type and the outputs, one
/// per line, each value on one line (escaped) and cut at 200 characters.
fn task_details(t: &TaskView) -> String {
    let mut out = String::new();
    if let Some(e) = &t.error_type {
        out.push_str(&format!("\nError type: {e}\n"));
    }
    if !t.outputs.is_empty() {
        out.push_str("\nOutputs:\n");
        let width = t.outputs.keys().map(|k| k.chars().count()).max().unwrap_or(0);
        for (k, v) in &t.outputs {
            let mut shown: String = v.escape_debug().take(200).collect();
            if v.escape_debug().nth(200).is_some() {
                shown.push('…');
            }
            out.push_str(&format!("  {k:<width$}  {shown}\n"));
        }
    }
    out
}

fn task_table(tasks: &[TaskView]) -> String {
    table(
        &["ID", "STATE", "KIND", "DELEGATE", "EPOCH", "EXIT", "CREATED", "REASON"],
        tasks
            .iter()
            .map(|t| {
                vec![
                    t.id.clone(),
                    t.state.clone(),
                    t.kind.clone(),
                    t.delegate.clone().unwrap_or_else(|| "-".into()),
                    t.epoch.to_string(),
                    t.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                    ago(t.created_ms),
                    t.reason.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    )
}

async fn get(c: &mut Client, cmd: GetCmd, fmt: Format) -> anyhow::Result<i32> {
    match cmd {
        GetCmd::Tasks { state, limit } => {
            let states = state
                .iter()
                .map(|s| {
                    TaskState::from_short_name(s)
                        .map(|s| s as i32)
                        .with_context(|| format!("--state {s:?}: not a task state"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let tasks: Vec<TaskView> = c
                .list_tasks(pb::ListTasksRequest { states, limit })
                .await
                .map_err(status)?
                .into_inner()
                .tasks
                .into_iter()
                .map(Into::into)
                .collect();
            print(fmt, &tasks, || task_table(&tasks))?;
        }
        GetCmd::Delegates => {
            let ds: Vec<DelegateView> = c
                .list_delegates(pb::ListDelegatesRequest { local: false })
                .await
                .map_err(status)?
                .into_inner()
                .delegates
                .into_iter()
                .map(Into::into)
                .collect();
            print(fmt, &ds, || {
                table(
                    &["ID", "NAME", "SCOPE", "TAGS", "STATUS", "SLOTS", "LAST SEEN"],
                    ds.iter()
                        .map(|d| {
                            let status = if d.revoked {
                                "revoked"
                            } else if d.connected {
                                "connected"
                            } else {
                                "disconnected"
                            };
                            vec![
                                d.id.clone(),
                                d.name.clone(),
                                d.scope.clone(),
                                d.tags.join(","),
                                status.into(),
                                format!("{}/{}", d.capacity - d.free.min(d.capacity), d.capacity),
                                ago(d.last_seen_ms),
                            ]
                        })
                        .collect(),
                )
            })?;
        }
        GetCmd::Replicas => {
            let r = c.list_replicas(pb::ListReplicasRequest {}).await.map_err(status)?.into_inner();
            let views: Vec<_> = r
                .replicas
                .iter()
                .map(|x| {
                    serde_json::json!({
                        "id": x.id, "grpcUrl": x.grpc_url, "startedMs": x.started_ms,
                        "heartbeatMs": x.heartbeat_ms, "live": x.live, "this": x.this,
                        "leader": x.leader,
                    })
                })
                .collect();
            print(fmt, &views, || {
                table(
                    &["ID", "URL", "STATUS", "STARTED", "HEARTBEAT"],
                    r.replicas
                        .iter()
                        .map(|x| {
                            let status = match (x.live, x.this) {
                                (true, true) => "live (this)",
                                (true, false) => "live",
                                (false, _) => "dead",
                            };
                            let status = if x.leader { format!("{status}, leader") } else { status.into() };
                            vec![
                                x.id.clone(),
                                x.grpc_url.clone(),
                                status,
                                ago(x.started_ms),
                                ago(x.heartbeat_ms),
                            ]
                        })
                        .collect(),
                )
            })?;
        }
        GetCmd::Executions { .. } | GetCmd::Instances { .. } => {
            bail!("`get executions` and `get instances` are served by the pipelines client")
        }
        GetCmd::Entity(_) => bail!("entities are served by `entities::get`"),
        GetCmd::Leases => {
            let ls: Vec<LeaseView> = c
                .list_leases(pb::ListLeasesRequest { local: false })
                .await
                .map_err(status)?
                .into_inner()
                .leases
                .into_iter()
                .map(Into::into)
                .collect();
            print(fmt, &ls, || {
                table(
                    &["TASK", "STATE", "DELEGATE", "EPOCH", "AGE", "EXPIRES IN"],
                    ls.iter()
                        .map(|l| {
                            let left = (l.expires_ms - dray_shared::clock::now_ms()).max(0) as u64;
                            vec![
                                l.task_id.clone(),
                                l.state.clone(),
                                l.delegate.clone(),
                                l.epoch.to_string(),
                                ago(l.since_ms).trim_end_matches(" ago").to_string(),
                                human_ms(left),
                            ]
                        })
                        .collect(),
                )
            })?;
        }
    }
    Ok(0)
}

async fn watch(c: &mut Client, fmt: Format, no_renewals: bool) -> anyhow::Result<()> {
    let mut stream = c.watch_leases(pb::WatchLeasesRequest {}).await.map_err(status)?.into_inner();
    if fmt == Format::Table {
        println!(
            "{:<12}  {:<14}  {:<32}  {:<16}  {:>5}  {:>6}  DETAIL",
            "TIME", "EVENT", "TASK", "DELEGATE", "EPOCH", "AGE"
        );
    }
    while let Some(e) = stream.message().await.map_err(status)? {
        let v = LeaseEventView::from(e);
        if no_renewals && v.event == "renewed" {
            continue;
        }
        let mut out = std::io::stdout().lock();
        match fmt {
            Format::Json => writeln!(out, "{}", serde_json::to_string(&v)?)?,
            Format::Yaml => write!(out, "---\n{}", serde_saphyr::to_string(&v)?)?,
            Format::Table => {
                let secs = v.at_ms / 1000;
                let time = format!(
                    "{:02}:{:02}:{:02}.{:03}",
                    (secs / 3600) % 24,
                    (secs / 60) % 60,
                    secs % 60,
                    v.at_ms % 1000
                );
                let who = if v.delegate.is_empty() { v.delegate_id.clone() } else { v.delegate.clone() };
                writeln!(
                    out,
                    "{time:<12}  {:<14}  {:<32}  {who:<16}  {:>5}  {:>6}  {}",
                    v.event,
                    v.task_id,
                    v.epoch,
                    human_ms(v.age_ms),
                    v.detail
                )?;
            }
        }
        out.flush()?;
    }
    Ok(())
}

/// Parses arguments, runs, and converts errors into a message and exit code 2.
pub async fn main_with(cli: Cli) -> i32 {
    match cli.run().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    }
}
