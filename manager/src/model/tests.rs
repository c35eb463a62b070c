//! Loader and apply tests over the files in `testdata/`: good documents of every
//! kind, and each class of error with its exact `line:col`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use proptest::prelude::*;

use super::apply::{ApplyError, Mode, apply};
use super::entities::{Entity, Kind};
use super::load::{SourceFile, load};
use super::steps::StepTypes;
use crate::store::entities::{
    Action, DeleteOutcome, EntityKey, EntityRecord, EntityStore, EntityWrite, ScopeFilter,
};

const ALL_KINDS: &str = include_str!("testdata/all_kinds.yaml");

fn file(name: &str, content: &str) -> SourceFile {
    SourceFile { name: name.into(), content: content.into() }
}

/// `line:col field: message` of every diagnostic loading `content` gives.
fn load_diags(content: &str) -> Vec<String> {
    let loaded = load(&[file("f.yaml", content)], &StepTypes::builtin());
    loaded.diagnostics.iter().map(|d| format!("{}:{} {}: {}", d.line, d.column, d.field, d.message)).collect()
}

/// Asserts some diagnostic starts with `prefix` (`line:col field`) and contains `text`.
#[track_caller]
fn assert_diag(diags: &[String], prefix: &str, text: &str) {
    assert!(
        diags.iter().any(|d| d.starts_with(prefix) && d.contains(text)),
        "no diagnostic `{prefix} … {text} …` in:\n{}",
        diags.join("\n")
    );
}

#[test]
fn every_kind_loads_cleanly() {
    let loaded = load(&[file("all.yaml", ALL_KINDS)], &StepTypes::builtin());
    assert_eq!(loaded.diagnostics, vec![], "{:#?}", loaded.diagnostics);
    let kinds: Vec<(Kind, &str)> = loaded.documents.iter().map(|d| (d.kind, d.identifier())).collect();
    assert_eq!(
        kinds,
        [
            (Kind::Pipeline, "release"),
            (Kind::Service, "web"),
            (Kind::Environment, "prod"),
            (Kind::InfrastructureDefinition, "k8s"),
            (Kind::Connector, "cluster"),
            (Kind::InputSet, "beta"),
            (Kind::OverlayInputSet, "beta_overlay"),
            (Kind::Trigger, "nightly"),
            (Kind::Trigger, "on_push"),
        ]
    );
    let service = &loaded.documents[1];
    assert_eq!(service.loc.line, 169, "documents keep file lines");
    assert!(service.yaml.starts_with("service:\n  name: Web\n"), "{}", service.yaml);
    assert_eq!(service.scope.to_string(), "default/default/default");
    let Entity::Pipeline(p) = &loaded.documents[0].entity else { panic!("not a pipeline") };
    assert_eq!(p.all_stages().len(), 3);
    let Entity::Trigger(t) = &loaded.documents[8].entity else { panic!("not a trigger") };
    assert!(!t.enabled);
    let Entity::Trigger(t) = &loaded.documents[7].entity else { panic!("not a trigger") };
    assert!(t.enabled, "enabled by default");
}

#[test]
fn the_example_pipelines_load() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let files: Vec<SourceFile> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        .map(|e| file(&e.path().display().to_string(), &std::fs::read_to_string(e.path()).unwrap()))
        .collect();
    let loaded = load(&files, &StepTypes::builtin());
    assert_eq!(loaded.diagnostics, vec![], "{:#?}", loaded.diagnostics);
}

#[test]
fn malformed_yaml_reports_the_parser_location() {
    let d = load_diags(include_str!("testdata/errors/malformed.yaml"));
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].starts_with("3:15 : "), "{d:?}");
}

#[test]
fn unknown_field_lines_are_relative_to_the_file() {
    let d = load_diags(include_str!("testdata/errors/unknown_field.yaml"));
    assert_eq!(
        d,
        [
            "9:3 service.colour: unknown field `colour`, expected one of `name`, `identifier`, `orgIdentifier`, `projectIdentifier`, `description`, `tags`, `serviceDefinition`"
        ]
    );
}

#[test]
fn wrong_type_names_the_field() {
    let d = load_diags(include_str!("testdata/errors/wrong_type.yaml"));
    assert_eq!(d.len(), 1, "{d:?}");
    assert_diag(
        &d,
        "15:31 pipeline.stages[0].stage.failureStrategies[0].onFailure.action.spec.retryCount",
        "invalid type: string \"many\"",
    );
}

#[test]
fn semantic_errors_are_located() {
    let d = load_diags(include_str!("testdata/errors/semantic.yaml"));
    // Durations.
    assert_diag(&d, "4:12 pipeline.timeout", "longer than a year");
    assert_diag(
        &d,
        "24:28 pipeline.stages[0].stage.spec.execution.steps[0].step.timeout",
        "invalid duration",
    );
    // Variable cycle, at the first variable's value.
    assert_diag(&d, "8:14 pipeline.variables[0].value", "pipeline variables form a cycle: a → b → a");
    // Bad expression: scalar position + offset (quoted, so +1 for the quote).
    assert_diag(
        &d,
        "27:86 pipeline.stages[0].stage.spec.execution.steps[0].step.spec.source.spec.script",
        "invalid expression",
    );
    // Duplicate identifier across a step group.
    assert_diag(
        &d,
        "34:37 pipeline.stages[0].stage.spec.execution.steps[1].stepGroup.steps[0].step.identifier",
        "duplicate step identifier \"one\"",
    );
    // Unknown step type lists the known ones.
    assert_diag(
        &d,
        "35:31 pipeline.stages[0].stage.spec.execution.steps[1].stepGroup.steps[0].step.type",
        "unknown step type \"Teleport\"; known types: Approval, AwsLambdaDeploy, AwsLambdaRollback, \
         AwsLambdaTrafficShift, Barrier, EcsBlueGreenCreateService, EcsBlueGreenRollback, \
         EcsBlueGreenSwapTargetGroups, EcsCanaryDelete, EcsCanaryDeploy, EcsRollingDeploy, EcsRollingRollback, \
         EcsRunTask, HarnessApproval, Http, Noop, ShellScript, Wait",
    );
    // Bad step spec, located inside the spec.
    assert_diag(
        &d,
        "43:29 pipeline.stages[0].stage.spec.execution.steps[2].step.spec.method",
        "unknown variant `FETCH`",
    );
    // Static references inside expressions.
    assert_diag(
        &d,
        "50:34 pipeline.stages[0].stage.spec.execution.steps[3].step.when.condition",
        "pipeline.variables.missing is not declared (declared: a, b)",
    );
    assert_diag(
        &d,
        "56:40 pipeline.stages[0].stage.spec.execution.steps[3].step.spec.source.spec.script",
        "step \"one\" declares no output variable \"nope\"",
    );
    assert_diag(
        &d,
        "56:114 pipeline.stages[0].stage.spec.execution.steps[3].step.spec.source.spec.script",
        "no stage \"nostage\"",
    );
    assert_eq!(d.len(), 10, "{}", d.join("\n"));
}

#[test]
fn input_placement_credentials_and_kinds() {
    let d = load_diags(include_str!("testdata/errors/placement.yaml"));
    assert_diag(
        &d,
        "10:18 service.serviceDefinition.spec.variables[0].value",
        "<+input> is only allowed in pipelines, not in a service",
    );
    assert_diag(
        &d,
        "19:14 connector.spec.auth.token",
        "store credentials on the delegate: use <+secrets.getValue(...)>",
    );
    assert_diag(
        &d,
        "29:16 inputSet.pipeline.variables[0].value",
        "an input set supplies values; it cannot contain <+input>",
    );
    assert_diag(&d, "31:1 widget", "unknown kind `widget`; known kinds: connector, service, environment");
    assert_diag(&d, "38:1 environment", "one entity per document: found `service` and `environment`");
    assert_eq!(d.len(), 5, "{}", d.join("\n"));
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let indented: String = (4..2_000).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
    let flow = |open: &str| format!("    {}", open.repeat(100_000));
    for nested in [flow("["), flow("{a: "), flow("- "), indented] {
        let d = load_diags(&format!("pipeline:\n  stages:\n{nested}"));
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("nested too deeply (at most 64 levels)"), "{d:?}");
    }
}

#[test]
fn a_document_defined_twice_is_refused() {
    let doc = "connector: {name: C, identifier: c, type: Git}\n";
    let loaded = load(&[file("a.yaml", doc), file("b.yaml", doc)], &StepTypes::builtin());
    assert_eq!(loaded.diagnostics.len(), 1);
    assert_eq!(
        loaded.diagnostics[0].to_string(),
        "b.yaml:1:34: connector.identifier: connector \"c\" is defined twice in this apply (first at a.yaml:1:1)"
    );
}

/// An in-memory [`EntityStore`] for apply tests (the real ones have their own suite).
#[derive(Default)]
struct MemStore {
    rows: Mutex<BTreeMap<EntityKey, EntityRecord>>,
}

#[async_trait]
impl EntityStore for MemStore {
    async fn apply_entities(
        &self,
        writes: &[EntityWrite],
        _actor: &str,
        now_ms: i64,
    ) -> crate::store::Result<Vec<Action>> {
        let mut rows = self.rows.lock().unwrap();
        Ok(writes
            .iter()
            .map(|w| match rows.get_mut(&w.key) {
                Some(r) if r.json == w.json => Action::Unchanged,
                Some(r) => {
                    r.json = w.json.clone();
                    r.version += 1;
                    Action::Updated
                }
                None => {
                    rows.insert(
                        w.key.clone(),
                        EntityRecord {
                            key: w.key.clone(),
                            name: w.name.clone(),
                            yaml: w.yaml.clone(),
                            json: w.json.clone(),
                            version: 1,
                            created_ms: now_ms,
                            updated_ms: now_ms,
                        },
                    );
                    Action::Created
                }
            })
            .collect())
    }
    async fn get_entity(&self, key: &EntityKey) -> crate::store::Result<Option<EntityRecord>> {
        Ok(self.rows.lock().unwrap().get(key).cloned())
    }
    async fn list_entities(
        &self,
        _: Option<&str>,
        _: &ScopeFilter,
    ) -> crate::store::Result<Vec<EntityRecord>> {
        Ok(self.rows.lock().unwrap().values().cloned().collect())
    }
    async fn delete_entity(&self, key: &EntityKey, _: &str, _: i64) -> crate::store::Result<DeleteOutcome> {
        Ok(match self.rows.lock().unwrap().remove(key) {
            Some(r) => DeleteOutcome::Deleted(Box::new(r)),
            None => DeleteOutcome::NotFound,
        })
    }
}

async fn run(store: &MemStore, files: &[SourceFile], mode: Mode) -> Result<Vec<String>, Vec<String>> {
    match apply(store, files, mode, &StepTypes::builtin(), "test", 1).await {
        Ok(out) => Ok(out.iter().map(|o| format!("{} {} {}", o.kind, o.identifier, o.action)).collect()),
        Err(ApplyError::Invalid(d)) => Err(d.iter().map(|d| d.to_string()).collect()),
        Err(ApplyError::Store(e)) => panic!("store: {e}"),
    }
}

#[tokio::test]
async fn apply_creates_then_reports_unchanged_and_dry_runs_write_nothing() {
    let store = MemStore::default();
    let files = [file("all.yaml", ALL_KINDS)];
    let dry = run(&store, &files, Mode::DryRun).await.unwrap();
    assert!(dry.iter().all(|a| a.ends_with("would-create")), "{dry:?}");
    assert!(store.rows.lock().unwrap().is_empty());
    let first = run(&store, &files, Mode::Apply).await.unwrap();
    assert_eq!(first.len(), 9);
    assert!(first.iter().all(|a| a.ends_with(" created")), "{first:?}");
    let again = run(&store, &files, Mode::Apply).await.unwrap();
    assert!(again.iter().all(|a| a.ends_with(" unchanged")), "{again:?}");

    // References to stored entities resolve: a second file using the stored service.
    let changed = ALL_KINDS.replace("value: eu-west-1", "value: eu-central-1");
    let out = run(&store, &[file("all.yaml", &changed)], Mode::ValidateOnly).await.unwrap();
    assert!(out.contains(&"environment prod would-update".to_string()), "{out:?}");
}

#[tokio::test]
async fn apply_checks_references_against_the_store() {
    let store = MemStore::default();
    let files = [file("refs.yaml", include_str!("testdata/errors/references.yaml"))];
    let d = run(&store, &files, Mode::Apply).await.unwrap_err();
    assert_eq!(
        d,
        [
            "refs.yaml:15:25: pipeline.stages[0].stage.spec.service.serviceRef: service \"missing_svc\" does not exist in default/default/default",
            "refs.yaml:26:23: overlayInputSet.inputSetReferences: overlay input sets form a cycle: a → b → a",
            "refs.yaml:32:23: overlayInputSet.inputSetReferences: overlay input sets form a cycle: b → a → b",
            "refs.yaml:39:13: trigger.inputs.colour: not a runtime input of pipeline p: colour",
            "refs.yaml:56:21: trigger.source.spec.spec.expression: cron expression `0 2 * *` has 4 fields; expected 5 (minute hour day-of-month month day-of-week) or 6 (a leading second field)",
        ]
    );
    assert!(store.rows.lock().unwrap().is_empty(), "a rejected apply writes nothing");
}

#[tokio::test]
async fn references_see_the_store_and_infrastructure_must_match_its_environment() {
    let store = MemStore::default();
    let base = "environment: {name: Prod, identifier: prod, type: Production}\n---\n\
                environment: {name: QA, identifier: qa, type: PreProduction}\n---\n\
                service: {name: Web, identifier: web, serviceDefinition: {type: Ssh, spec: {}}}\n---\n\
                infrastructureDefinition: {name: H, identifier: hosts, environmentRef: qa, deploymentType: Ssh, type: Pdc}\n";
    run(&store, &[file("base.yaml", base)], Mode::Apply).await.unwrap();
    let pipeline = "pipeline:
  name: P
  identifier: p
  stages:
    - stage:
        name: D
        identifier: d
        type: Deployment
        spec:
          service: {serviceRef: web}
          environment:
            environmentRef: prod
            infrastructureDefinitions: [{identifier: hosts}]
          execution:
            steps: [{step: {name: W, identifier: w, type: Wait, spec: {duration: 1s}}}]
";
    let d = run(&store, &[file("p.yaml", pipeline)], Mode::Apply).await.unwrap_err();
    assert_eq!(
        d,
        ["p.yaml:13:54: pipeline.stages[0].stage.spec.environment.infrastructureDefinitions[0].identifier: \
          infrastructure definition \"hosts\" belongs to environment \"qa\", not \"prod\""]
    );
    let ok = pipeline.replace("environmentRef: prod", "environmentRef: qa");
    assert_eq!(run(&store, &[file("p.yaml", &ok)], Mode::Apply).await.unwrap(), ["pipeline p created"]);
}

#[tokio::test]
async fn a_rejected_document_is_not_also_reported_missing() {
    let store = MemStore::default();
    let text = "service: {name: Web, identifier: web, colour: red, serviceDefinition: {type: Ssh, spec: {}}}\n---\n\
                environment:\n  name: E\n  identifier: e\n  type: Production\n  overrides:\n    services: [{serviceRef: web}]\n";
    let d = run(&store, &[file("x.yaml", text)], Mode::Apply).await.unwrap_err();
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].starts_with("x.yaml:1:39: service.colour: unknown field"), "{d:?}");
}

/// A valid pipeline to mutate.
const SMALL: &str = "pipeline:
  name: P
  identifier: p
  variables:
    - {name: v, type: String, value: <+input>.default(a)}
  stages:
    - stage:
        name: S
        identifier: s
        type: Custom
        spec:
          execution:
            steps:
              - step:
                  name: Say
                  identifier: say
                  type: ShellScript
                  timeout: 10s
                  spec:
                    shell: Bash
                    source: {type: Inline, spec: {script: \"echo <+pipeline.variables.v>\"}}
";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_loader_never_panics_on_arbitrary_text(text in "(?s).{0,400}") {
        let _ = load(&[file("x.yaml", &text)], &StepTypes::builtin());
    }

    #[test]
    fn the_loader_never_panics_on_mutated_yaml(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8)
    ) {
        let mut bytes = SMALL.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len().max(1));
            match op {
                0 if !bytes.is_empty() => { let last = bytes.len() - 1; bytes[i.min(last)] = byte; }
                1 => bytes.insert(i.min(bytes.len()), byte),
                _ if !bytes.is_empty() => { let last = bytes.len() - 1; bytes.remove(i.min(last)); }
                _ => {}
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let loaded = load(&[file("x.yaml", &text)], &StepTypes::builtin());
        for d in &loaded.diagnostics {
            prop_assert!(d.line >= 1 && d.line as usize <= text.lines().count() + 1, "{d} outside the file");
        }
    }
}

#[test]
fn the_small_pipeline_is_valid() {
    assert_eq!(load_diags(SMALL), Vec::<String>::new());
}
