//! `dray apply`, `dray validate`, `dray get KIND [ID]`, `dray describe KIND ID`
//! and `dray delete KIND ID`: entities written as YAML.
//!
//! Problems with the YAML print as `file:line:col: field: message`, one per
//! line on stderr, and exit with code 2; nothing is applied then.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use dray_shared::pb;
use serde::Serialize;
use serde_json::Value as Json;

use super::client::Client;
use super::output::{Format, ago, print, table};
use super::{scope_of, status};
use crate::model::Kind;

/// Exit code when the YAML has problems.
const INVALID: i32 = 2;

/// `dray apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// YAML file or directory (every *.yaml / *.yml below it, sorted); `-` reads stdin. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Check everything and say what would change; write nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `dray validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// YAML file or directory; `-` reads stdin. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
}

/// `dray delete KIND ID`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// service(s), environment(s)|env, infrastructure(s)|infra, connector(s), pipeline(s), inputset(s), overlayinputset(s), trigger(s).
    kind: String,
    /// Identifier.
    id: String,
    /// Scope ORG/PROJECT (default default/default).
    #[arg(long)]
    project: Option<String>,
}

/// Which entity (or entities) of a kind.
#[derive(Debug, Args)]
pub struct Which {
    /// Identifier; all of the kind when omitted.
    id: Option<String>,
    /// Scope ORG/PROJECT (or ORG); `get` without it lists every scope, one ID looks in default/default.
    #[arg(long)]
    project: Option<String>,
}

/// Entity kinds as `dray get` / `dray describe` subcommands.
#[derive(Debug, Subcommand)]
pub enum EntityCmd {
    /// Services.
    #[command(visible_alias = "service", alias = "svc")]
    Services(Which),
    /// Environments.
    #[command(visible_alias = "environment", aliases = ["env", "envs"])]
    Environments(Which),
    /// Infrastructure definitions.
    #[command(visible_alias = "infrastructure", aliases = ["infra", "infras", "infrastructuredefinition", "infrastructuredefinitions"])]
    Infrastructures(Which),
    /// Connectors.
    #[command(visible_alias = "connector")]
    Connectors(Which),
    /// Pipelines.
    #[command(visible_alias = "pipeline")]
    Pipelines(Which),
    /// Input sets.
    #[command(visible_alias = "inputset", alias = "input-sets")]
    Inputsets(Which),
    /// Overlay input sets.
    #[command(visible_alias = "overlayinputset", aliases = ["overlay", "overlays"])]
    Overlayinputsets(Which),
    /// Triggers.
    #[command(visible_alias = "trigger")]
    Triggers(Which),
}

impl EntityCmd {
    fn split(self) -> (Kind, Which) {
        match self {
            EntityCmd::Services(w) => (Kind::Service, w),
            EntityCmd::Environments(w) => (Kind::Environment, w),
            EntityCmd::Infrastructures(w) => (Kind::InfrastructureDefinition, w),
            EntityCmd::Connectors(w) => (Kind::Connector, w),
            EntityCmd::Pipelines(w) => (Kind::Pipeline, w),
            EntityCmd::Inputsets(w) => (Kind::InputSet, w),
            EntityCmd::Overlayinputsets(w) => (Kind::OverlayInputSet, w),
            EntityCmd::Triggers(w) => (Kind::Trigger, w),
        }
    }
}

/// Reads every file the user named: files as given, directories recursively
/// (`*.yaml`, `*.yml`, sorted), `-` from stdin.
pub fn read_sources(paths: &[PathBuf]) -> anyhow::Result<Vec<pb::SourceFile>> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut content = String::new();
            std::io::stdin().read_to_string(&mut content).context("reading stdin")?;
            out.push(pb::SourceFile { name: "<stdin>".into(), content });
        } else if p.is_dir() {
            let mut found = Vec::new();
            collect_yaml(p, &mut found)?;
            if found.is_empty() {
                bail!("{}: no *.yaml or *.yml files", p.display());
            }
            found.sort();
            for f in found {
                out.push(read_file(&f)?);
            }
        } else {
            out.push(read_file(p)?);
        }
    }
    Ok(out)
}

fn read_file(p: &Path) -> anyhow::Result<pb::SourceFile> {
    let content = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(pb::SourceFile { name: p.display().to_string(), content })
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry.with_context(|| format!("reading {}", dir.display()))?.path();
        if path.is_dir() {
            collect_yaml(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// One applied (or checked) document, as shown.
#[derive(Debug, Serialize)]
struct ResultView {
    kind: String,
    scope: String,
    identifier: String,
    name: String,
    file: String,
    action: String,
}

fn scope_text(s: Option<&pb::Scope>) -> String {
    s.map(|s| format!("{}/{}/{}", s.account, s.org, s.project)).unwrap_or_default()
}

/// Prints diagnostics one per line on stderr; true when there were any.
fn report(diagnostics: &[pb::Diagnostic]) -> bool {
    for d in diagnostics {
        let field = if d.field.is_empty() { String::new() } else { format!("{}: ", d.field) };
        eprintln!("{}:{}:{}: {field}{}", d.file, d.line, d.column, d.message);
    }
    !diagnostics.is_empty()
}

/// `dray apply` / `dray validate`.
async fn send(
    c: &mut Client,
    paths: &[PathBuf],
    dry_run: bool,
    validate_only: bool,
    fmt: Format,
) -> anyhow::Result<i32> {
    let files = read_sources(paths)?;
    let r = c
        .apply_entities(pb::ApplyEntitiesRequest { files, dry_run, validate_only })
        .await
        .map_err(status)?
        .into_inner();
    if report(&r.diagnostics) {
        eprintln!("error: {} problem(s); nothing was applied", r.diagnostics.len());
        return Ok(INVALID);
    }
    let views: Vec<ResultView> = r
        .results
        .iter()
        .map(|x| ResultView {
            kind: x.kind.clone(),
            scope: scope_text(x.scope.as_ref()),
            identifier: x.identifier.clone(),
            name: x.name.clone(),
            file: x.file.clone(),
            action: x.action.clone(),
        })
        .collect();
    print(fmt, &views, || {
        if views.is_empty() {
            return "No documents found.\n".into();
        }
        let mut out: String = views
            .iter()
            .map(|v| format!("{}/{} {} ({})\n", v.kind, v.identifier, v.action, v.scope))
            .collect();
        if validate_only {
            out.push_str(&format!("{} document(s) valid.\n", views.len()));
        }
        out
    })?;
    Ok(0)
}

/// `dray apply`.
pub async fn apply(c: &mut Client, args: ApplyArgs, fmt: Format) -> anyhow::Result<i32> {
    send(c, &args.files, args.dry_run, false, fmt).await
}

/// `dray validate`.
pub async fn validate(c: &mut Client, args: ValidateArgs, fmt: Format) -> anyhow::Result<i32> {
    send(c, &args.files, false, true, fmt).await
}

/// An entity as shown by `get` and `describe`.
#[derive(Debug, Serialize)]
struct EntityView {
    kind: String,
    scope: String,
    identifier: String,
    name: String,
    version: u64,
    created_ms: i64,
    updated_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    yaml: Option<String>,
}

fn view(e: &pb::Entity, document: bool, yaml: bool) -> EntityView {
    EntityView {
        kind: e.kind.clone(),
        scope: scope_text(e.scope.as_ref()),
        identifier: e.identifier.clone(),
        name: e.name.clone(),
        version: e.version,
        created_ms: e.created_ms,
        updated_ms: e.updated_ms,
        document: document.then(|| serde_json::from_str(&e.json).unwrap_or(Json::Null)),
        yaml: yaml.then(|| e.yaml.clone()),
    }
}

fn scope_arg(project: Option<&str>) -> anyhow::Result<Option<pb::Scope>> {
    scope_of(project)
}

async fn fetch(c: &mut Client, kind: Kind, id: &str, project: Option<&str>) -> anyhow::Result<pb::Entity> {
    Ok(c.get_entity(pb::GetEntityRequest {
        kind: kind.key().into(),
        scope: scope_arg(project)?,
        identifier: id.into(),
    })
    .await
    .map_err(status)?
    .into_inner())
}

/// `dray get KIND [ID]`.
pub async fn get(c: &mut Client, cmd: EntityCmd, fmt: Format) -> anyhow::Result<i32> {
    let (kind, which) = cmd.split();
    let (entities, single) = match &which.id {
        Some(id) => (vec![fetch(c, kind, id, which.project.as_deref()).await?], true),
        None => {
            let r = c
                .list_entities(pb::ListEntitiesRequest {
                    kind: kind.key().into(),
                    scope: scope_arg(which.project.as_deref())?,
                })
                .await
                .map_err(status)?
                .into_inner();
            (r.entities, false)
        }
    };
    let views: Vec<EntityView> = entities.iter().map(|e| view(e, single, false)).collect();
    let rows = || {
        table(
            &["IDENTIFIER", "NAME", "SCOPE", "VERSION", "UPDATED"],
            views
                .iter()
                .map(|v| {
                    vec![
                        v.identifier.clone(),
                        v.name.clone(),
                        v.scope.clone(),
                        v.version.to_string(),
                        ago(v.updated_ms),
                    ]
                })
                .collect(),
        )
    };
    if single {
        print(fmt, &views[0], rows)?;
    } else if views.is_empty() && fmt == Format::Table {
        eprintln!("No {kind} entities.");
    } else {
        print(fmt, &views, rows)?;
    }
    Ok(0)
}

/// `dray describe KIND ID`: metadata, then the YAML as last applied.
pub async fn describe(c: &mut Client, cmd: EntityCmd, fmt: Format) -> anyhow::Result<i32> {
    let (kind, which) = cmd.split();
    let Some(id) = which.id.as_deref() else {
        bail!("describe {kind} needs an identifier: dray describe {kind} ID")
    };
    let e = fetch(c, kind, id, which.project.as_deref()).await?;
    let v = view(&e, true, true);
    print(fmt, &v, || {
        let mut out = format!(
            "Kind:       {}\nIdentifier: {}\nName:       {}\nScope:      {}\nVersion:    {}\nCreated:    {}\nUpdated:    {}\n---\n",
            v.kind,
            v.identifier,
            v.name,
            v.scope,
            v.version,
            ago(v.created_ms),
            ago(v.updated_ms)
        );
        out.push_str(&e.yaml);
        if !e.yaml.ends_with('\n') {
            out.push('\n');
        }
        out
    })?;
    Ok(0)
}

/// `dray delete KIND ID`.
pub async fn delete(c: &mut Client, args: DeleteArgs) -> anyhow::Result<i32> {
    let Some(kind) = Kind::parse(&args.kind) else {
        bail!(
            "unknown kind {:?}: use service, environment (env), infrastructure (infra), connector, pipeline, \
             inputset, overlayinputset or trigger",
            args.kind
        );
    };
    let e = c
        .delete_entity(pb::DeleteEntityRequest {
            kind: kind.key().into(),
            scope: scope_arg(args.project.as_deref())?,
            identifier: args.id.clone(),
        })
        .await
        .map_err(status)?
        .into_inner();
    eprintln!("Deleted {} {} ({}).", e.kind, e.identifier, scope_text(e.scope.as_ref()));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct T {
        #[command(subcommand)]
        cmd: EntityCmd,
    }

    #[test]
    fn kind_words_parse_as_in_the_docs() {
        for (words, kind) in [
            (&["service", "services", "svc"][..], Kind::Service),
            (&["environment", "environments", "env"], Kind::Environment),
            (&["infrastructure", "infrastructures", "infra"], Kind::InfrastructureDefinition),
            (&["connector", "connectors"], Kind::Connector),
            (&["pipeline", "pipelines"], Kind::Pipeline),
            (&["inputset", "inputsets"], Kind::InputSet),
            (&["overlayinputset", "overlays"], Kind::OverlayInputSet),
            (&["trigger", "triggers"], Kind::Trigger),
        ] {
            for w in words {
                let t = T::try_parse_from(["t", w, "x"]).unwrap_or_else(|e| panic!("{w}: {e}"));
                let (k, which) = t.cmd.split();
                assert_eq!((k, which.id.as_deref()), (kind, Some("x")), "{w}");
                assert_eq!(Kind::parse(w), Some(kind), "{w}");
            }
        }
    }

    #[test]
    fn directories_are_read_recursively_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("b.yaml"), "b").unwrap();
        std::fs::write(dir.path().join("sub/a.yml"), "a").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let files = read_sources(&[dir.path().to_path_buf()]).unwrap();
        let contents: Vec<&str> = files.iter().map(|f| f.content.as_str()).collect();
        assert_eq!(contents, ["b", "a"]);
        assert!(read_sources(&[dir.path().join("missing.yaml")]).is_err());
    }
}
