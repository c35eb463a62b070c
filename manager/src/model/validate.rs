//! Checks of one document on its own: identifiers, names, durations, uniqueness
//! among siblings, step types and specs, expressions (syntax, `<+input>`
//! placement, static references inside a pipeline), variable cycles and literal
//! credentials in connectors. Cross-document references are [`super::refs`]'s.
//!
//! Every problem names the field path; the loader turns paths into line:col.
//! Expression problems carry their own location (scalar position + offset).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use dray_shared::expr::{Condition, Template};
use serde_json::{Map, Value as Json};

use super::common::{FailureAction, FailureStrategy, INFRASTRUCTURE_TYPES, Scalar, VarType, Variable};
use super::entities::{
    Connector, Entity, Environment, InfrastructureDefinition, InputSet, OverlayInputSet, Service, Trigger,
    TriggerSource, WebhookEventType, WebhookProvider,
};
use super::pipeline::{Pipeline, Stage, StageItem, StageType, Step, StepItem};
use super::steps::{StepTypes, declared_outputs};
use super::yaml::{Loc, Node, Value, field_path, index_path, offset_loc};
use crate::triggers::conditions::{ConditionError, Conditions, PayloadCondition as TriggerCondition};

/// The longest duration any field may hold.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// One thing wrong with a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path, e.g. `pipeline.stages[0].stage.timeout`.
    pub path: String,
    /// Exact location when known; otherwise the loader looks the path up.
    pub loc: Option<Loc>,
    /// What is wrong.
    pub message: String,
}

/// True for `[A-Za-z_][A-Za-z0-9_]{0,127}`.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 128
        && matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// True when a value is decided at run time (holds a `<+…>` block).
pub fn is_dynamic(s: &str) -> bool {
    s.contains("<+")
}

/// Checks a humantime duration ("10s", "1h", "1d"): positive and at most a year.
/// Expressions are accepted (checked when they are rendered).
pub fn check_duration(s: &str) -> Result<(), String> {
    if is_dynamic(s) {
        return Ok(());
    }
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?}: {e} (try 10s, 5m, 1h, 1d)"))?;
    if d.is_zero() {
        return Err(format!("duration {s:?} must be positive"));
    }
    if d > MAX_DURATION {
        return Err(format!("duration {s:?} is longer than a year"));
    }
    Ok(())
}

/// Checks one document. `root` is the document's tree (`{kind: {...}}`) and
/// `text` the whole file (for locations inside strings).
pub fn validate(entity: &Entity, root: &Node, text: &str, step_types: &StepTypes) -> Vec<Problem> {
    let kind = entity.kind().key();
    let mut c = Checker { out: Vec::new(), step_types };
    let meta = entity.meta();
    c.name(&field_path(kind, "name"), meta.name);
    c.identifier(&field_path(kind, "identifier"), meta.identifier);
    if let Some(org) = meta.org {
        c.identifier(&field_path(kind, "orgIdentifier"), org);
    }
    if let Some(project) = meta.project {
        c.identifier(&field_path(kind, "projectIdentifier"), project);
    }
    match entity {
        Entity::Service(s) => c.service(s),
        Entity::Environment(e) => c.environment(e),
        Entity::InfrastructureDefinition(i) => c.infrastructure(i),
        Entity::Connector(x) => c.connector(x),
        Entity::Pipeline(p) => c.pipeline(p),
        Entity::InputSet(i) => c.input_set(i),
        Entity::OverlayInputSet(o) => c.overlay(o),
        Entity::Trigger(t) => c.trigger(t),
    }
    let pipeline = match entity {
        Entity::Pipeline(p) => Some(PipelineIndex::new(p)),
        _ => None,
    };
    c.expressions(entity, root, text, pipeline.as_ref());
    if let Entity::Pipeline(p) = entity {
        c.variable_cycles(p, root, text);
    }
    c.out
}

struct Checker<'a> {
    out: Vec<Problem>,
    step_types: &'a StepTypes,
}

impl Checker<'_> {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.out.push(Problem { path: path.into(), loc: None, message: message.into() });
    }

    fn err_at(&mut self, path: &str, loc: Loc, message: impl Into<String>) {
        self.out.push(Problem { path: path.to_string(), loc: Some(loc), message: message.into() });
    }

    fn identifier(&mut self, path: &str, id: &str) {
        if !is_identifier(id) {
            self.err(
                path,
                format!(
                    "{id:?} is not a valid identifier (a letter or _, then letters, digits or _; at most 128)"
                ),
            );
        }
    }

    fn name(&mut self, path: &str, name: &str) {
        if name.trim().is_empty() {
            self.err(path, "the name is empty");
        }
    }

    /// An entity reference: an identifier, or an expression resolved later.
    fn reference(&mut self, path: &str, id: &str) {
        if !is_dynamic(id) {
            self.identifier(path, id);
        }
    }

    fn duration(&mut self, path: &str, d: Option<&str>) {
        if let Some(d) = d
            && let Err(m) = check_duration(d)
        {
            self.err(path, m);
        }
    }

    fn selectors(&mut self, path: &str, selectors: &[String]) {
        for (i, s) in selectors.iter().enumerate() {
            if s.trim().is_empty() {
                self.err(index_path(path, i), "empty delegate selector");
            }
        }
    }

    /// Reports the second and later occurrences of each key.
    fn unique<'k>(&mut self, what: &str, items: impl IntoIterator<Item = (String, &'k str)>) {
        let mut seen = HashSet::new();
        for (path, key) in items {
            if !seen.insert(key) {
                self.err(path, format!("duplicate {what} {key:?}"));
            }
        }
    }

    fn tags(&mut self, path: &str, tags: &BTreeMap<String, String>) {
        if tags.keys().any(|k| k.trim().is_empty()) {
            self.err(path, "tag names must not be empty");
        }
    }

    fn variables(&mut self, path: &str, vars: &[Variable]) {
        for (i, v) in vars.iter().enumerate() {
            let p = index_path(path, i);
            if !is_identifier(&v.name) {
                self.err(field_path(&p, "name"), format!("{:?} is not a valid variable name", v.name));
            }
            let value_path = field_path(&p, "value");
            match (&v.var_type, &v.value) {
                (VarType::Number, Scalar::Str(s)) if !is_dynamic(s) && s.trim().parse::<f64>().is_err() => {
                    self.err(value_path, format!("{s:?} is not a number"));
                }
                (VarType::Number, Scalar::Bool(_)) => {
                    self.err(value_path, "a Number variable needs a number")
                }
                (VarType::Secret, Scalar::Str(s)) if !s.is_empty() && !is_dynamic(s) => {
                    self.err(value_path, "a Secret variable holds a reference: use <+secrets.getValue(...)>");
                }
                (VarType::Secret, Scalar::Int(_) | Scalar::Float(_) | Scalar::Bool(_)) => {
                    self.err(value_path, "a Secret variable holds a reference: use <+secrets.getValue(...)>");
                }
                _ => {}
            }
        }
        self.unique(
            "variable",
            vars.iter().enumerate().map(|(i, v)| (field_path(&index_path(path, i), "name"), v.name.as_str())),
        );
    }

    fn failure_strategies(&mut self, path: &str, strategies: &[FailureStrategy]) {
        for (i, s) in strategies.iter().enumerate() {
            let p = field_path(&index_path(path, i), "onFailure");
            if s.on_failure.errors.is_empty() {
                self.err(field_path(&p, "errors"), "name at least one error type (or AllErrors)");
            }
            self.action(&field_path(&p, "action"), &s.on_failure.action);
        }
    }

    fn action(&mut self, path: &str, action: &FailureAction) {
        match action {
            FailureAction::Retry(r) => {
                let spec = field_path(path, "spec");
                if r.retry_count == 0 {
                    self.err(field_path(&spec, "retryCount"), "must be at least 1");
                }
                for (i, d) in r.retry_intervals.iter().enumerate() {
                    self.duration(&index_path(&field_path(&spec, "retryIntervals"), i), Some(d));
                }
                let next = field_path(&field_path(&spec, "onRetryFailure"), "action");
                if matches!(*r.on_retry_failure.action, FailureAction::Retry(_)) {
                    self.err(field_path(&next, "type"), "a Retry cannot be followed by another Retry");
                }
                self.action(&next, &r.on_retry_failure.action);
            }
            FailureAction::ManualIntervention(m) => {
                let spec = field_path(path, "spec");
                self.duration(&field_path(&spec, "timeout"), Some(&m.timeout));
                let next = field_path(&field_path(&spec, "onTimeout"), "action");
                if matches!(*m.on_timeout.action, FailureAction::ManualIntervention(_)) {
                    self.err(
                        field_path(&next, "type"),
                        "a ManualIntervention cannot time out into another one",
                    );
                }
                self.action(&next, &m.on_timeout.action);
            }
            _ => {}
        }
    }

    fn service(&mut self, s: &Service) {
        self.tags("service.tags", &s.tags);
        let spec = &s.service_definition.spec;
        let base = "service.serviceDefinition.spec";
        if let Some(primary) = spec.artifacts.as_ref().and_then(|a| a.primary.as_ref())
            && primary.artifact_type.trim().is_empty()
        {
            self.err(format!("{base}.artifacts.primary.type"), "the artifact type is empty");
        }
        for (i, m) in spec.manifests.iter().enumerate() {
            let p = field_path(&index_path(&field_path(base, "manifests"), i), "manifest");
            self.identifier(&field_path(&p, "identifier"), &m.manifest.identifier);
            if m.manifest.manifest_type.trim().is_empty() {
                self.err(field_path(&p, "type"), "the manifest type is empty");
            }
            for (path, message) in
                super::steps::k8s::manifest_rules(&m.manifest.manifest_type, &m.manifest.spec)
                    .unwrap_or_default()
            {
                let at = field_path(&p, "spec");
                self.err(if path.is_empty() { at } else { field_path(&at, &path) }, message);
            }
        }
        self.unique(
            "manifest",
            spec.manifests.iter().enumerate().map(|(i, m)| {
                (format!("{base}.manifests[{i}].manifest.identifier"), m.manifest.identifier.as_str())
            }),
        );
        for (i, f) in spec.config_files.iter().enumerate() {
            self.identifier(
                &format!("{base}.configFiles[{i}].configFile.identifier"),
                &f.config_file.identifier,
            );
        }
        self.unique(
            "config file",
            spec.config_files.iter().enumerate().map(|(i, f)| {
                (format!("{base}.configFiles[{i}].configFile.identifier"), f.config_file.identifier.as_str())
            }),
        );
        self.variables(&field_path(base, "variables"), &spec.variables);
    }

    fn environment(&mut self, e: &Environment) {
        self.tags("environment.tags", &e.tags);
        self.variables("environment.variables", &e.variables);
        if let Some(o) = &e.overrides {
            for (i, s) in o.services.iter().enumerate() {
                let p = format!("environment.overrides.services[{i}]");
                self.reference(&field_path(&p, "serviceRef"), &s.service_ref);
                self.variables(&field_path(&p, "variables"), &s.variables);
            }
            self.unique(
                "service override",
                o.services.iter().enumerate().map(|(i, s)| {
                    (format!("environment.overrides.services[{i}].serviceRef"), s.service_ref.as_str())
                }),
            );
        }
    }

    fn infrastructure(&mut self, i: &InfrastructureDefinition) {
        self.tags("infrastructureDefinition.tags", &i.tags);
        self.reference("infrastructureDefinition.environmentRef", &i.environment_ref);
        if !INFRASTRUCTURE_TYPES.contains(&i.infra_type.as_str()) {
            self.err(
                "infrastructureDefinition.type",
                format!(
                    "unknown infrastructure type {:?}; known: {}",
                    i.infra_type,
                    INFRASTRUCTURE_TYPES.join(", ")
                ),
            );
        } else if !i.deployment_type.infrastructure_types().contains(&i.infra_type.as_str()) {
            self.err(
                "infrastructureDefinition.type",
                format!(
                    "a {} infrastructure cannot host {} deployments (use {})",
                    i.infra_type,
                    i.deployment_type.name(),
                    i.deployment_type.infrastructure_types().join(" or ")
                ),
            );
        }
        let platform_rules = super::steps::ssh::infrastructure_rules(&i.infra_type, &i.spec)
            .or_else(|| super::steps::k8s::infrastructure_rules(&i.infra_type, &i.spec))
            .or_else(|| super::steps::ecs::infrastructure_rules(&i.infra_type, &i.spec))
            .or_else(|| super::steps::lambda::infrastructure_rules(&i.infra_type, &i.spec));
        for (path, message) in platform_rules.unwrap_or_default() {
            let at = if path.is_empty() {
                "infrastructureDefinition.spec".to_string()
            } else {
                format!("infrastructureDefinition.spec.{path}")
            };
            self.err(&at, message);
        }
        match i.spec.get("connectorRef") {
            None => {}
            Some(Json::String(c)) => self.reference("infrastructureDefinition.spec.connectorRef", c),
            Some(_) => {
                self.err("infrastructureDefinition.spec.connectorRef", "must be a connector identifier")
            }
        }
    }

    fn connector(&mut self, x: &Connector) {
        self.tags("connector.tags", &x.tags);
        for (path, message) in
            super::steps::k8s::connector_rules(&x.connector_type, &x.spec).unwrap_or_default()
        {
            self.err(field_path("connector.spec", &path), message);
        }
        if x.connector_type.trim().is_empty() {
            self.err("connector.type", "the connector type is empty");
        }
        if x.connector_type == "Ssh" {
            for (path, message) in super::steps::ssh::connector_rules(&x.spec) {
                self.err(format!("connector.spec.{path}"), message);
            }
        }
        match x.spec.get("delegateSelectors") {
            None => {}
            Some(Json::Array(items)) => {
                for (i, s) in items.iter().enumerate() {
                    if s.as_str().is_none_or(|s| s.trim().is_empty()) {
                        self.err(
                            index_path("connector.spec.delegateSelectors", i),
                            "must be a non-empty delegate tag",
                        );
                    }
                }
            }
            Some(_) => self.err("connector.spec.delegateSelectors", "must be a list of delegate tags"),
        }
        self.literal_credentials("connector.spec", &x.spec);
    }

    /// Refuses credentials written into the YAML: the manager stores references only.
    fn literal_credentials(&mut self, path: &str, map: &Map<String, Json>) {
        for (k, v) in map {
            let p = field_path(path, k);
            match v {
                Json::Object(m) => self.literal_credentials(&p, m),
                Json::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Json::Object(m) = item {
                            self.literal_credentials(&index_path(&p, i), m);
                        }
                    }
                }
                Json::String(s) if is_credential_key(k) && !s.is_empty() && !is_secret_reference(s) => {
                    self.err(p, "store credentials on the delegate: use <+secrets.getValue(...)>");
                }
                Json::Number(_) | Json::Bool(_) if is_credential_key(k) => {
                    self.err(p, "store credentials on the delegate: use <+secrets.getValue(...)>");
                }
                _ => {}
            }
        }
    }

    fn pipeline(&mut self, p: &Pipeline) {
        self.tags("pipeline.tags", &p.tags);
        self.duration("pipeline.timeout", p.timeout.as_deref());
        self.selectors("pipeline.delegateSelectors", &p.delegate_selectors);
        self.variables("pipeline.variables", &p.variables);
        if let Some(fc) = &p.flow_control {
            for (i, b) in fc.barriers.iter().enumerate() {
                let bp = format!("pipeline.flowControl.barriers[{i}]");
                self.name(&field_path(&bp, "name"), &b.name);
                self.identifier(&field_path(&bp, "identifier"), &b.identifier);
            }
            self.unique(
                "barrier name",
                fc.barriers
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (format!("pipeline.flowControl.barriers[{i}].name"), b.name.as_str())),
            );
            self.unique(
                "barrier",
                fc.barriers.iter().enumerate().map(|(i, b)| {
                    (format!("pipeline.flowControl.barriers[{i}].identifier"), b.identifier.as_str())
                }),
            );
        }
        if p.stages.is_empty() {
            self.err("pipeline.stages", "a pipeline needs at least one stage");
        }
        let barriers = p.barrier_ids();
        let mut stages: Vec<(String, &Stage)> = Vec::new();
        for (i, item) in p.stages.iter().enumerate() {
            let ip = index_path("pipeline.stages", i);
            match item {
                StageItem::Stage(s) => stages.push((field_path(&ip, "stage"), s)),
                StageItem::Parallel(ps) => {
                    if ps.is_empty() {
                        self.err(field_path(&ip, "parallel"), "a parallel group needs at least one stage");
                    }
                    for (j, s) in ps.iter().enumerate() {
                        stages.push((
                            field_path(&index_path(&field_path(&ip, "parallel"), j), "stage"),
                            &s.stage,
                        ));
                    }
                }
            }
        }
        for (path, s) in &stages {
            self.stage(path, s, &barriers);
        }
        self.unique(
            "stage identifier",
            stages.iter().map(|(p, s)| (field_path(p, "identifier"), s.identifier.as_str())),
        );
        self.unique("stage name", stages.iter().map(|(p, s)| (field_path(p, "name"), s.name.as_str())));
    }

    fn stage(&mut self, path: &str, s: &Stage, barriers: &[&str]) {
        self.name(&field_path(path, "name"), &s.name);
        self.identifier(&field_path(path, "identifier"), &s.identifier);
        self.duration(&field_path(path, "timeout"), s.timeout.as_deref());
        self.selectors(&field_path(path, "delegateSelectors"), &s.delegate_selectors);
        self.variables(&field_path(path, "variables"), &s.variables);
        self.failure_strategies(&field_path(path, "failureStrategies"), &s.failure_strategies);
        let spec = field_path(path, "spec");
        if s.stage_type == StageType::Deployment {
            match &s.spec.service {
                None => self.err(spec.clone(), "a Deployment stage needs `service: {serviceRef: …}`"),
                Some(svc) => self.reference(&format!("{spec}.service.serviceRef"), &svc.service_ref),
            }
            match &s.spec.environment {
                None => self.err(spec.clone(), "a Deployment stage needs `environment: {environmentRef: …}`"),
                Some(env) => {
                    self.reference(&format!("{spec}.environment.environmentRef"), &env.environment_ref);
                    for (i, infra) in env.infrastructure_definitions.iter().enumerate() {
                        self.reference(
                            &format!("{spec}.environment.infrastructureDefinitions[{i}].identifier"),
                            &infra.identifier,
                        );
                    }
                }
            }
        } else {
            let what = format!("only Deployment stages deploy; remove it from this {:?} stage", s.stage_type);
            if s.spec.deployment_type.is_some() {
                self.err(field_path(&spec, "deploymentType"), what.clone());
            }
            if s.spec.service.is_some() {
                self.err(field_path(&spec, "service"), what.clone());
            }
            if s.spec.environment.is_some() {
                self.err(field_path(&spec, "environment"), what);
            }
        }
        let exec = field_path(&spec, "execution");
        if s.spec.execution.steps.is_empty() {
            self.err(field_path(&exec, "steps"), "a stage needs at least one step");
        }
        // Step and group identifiers are unique across the whole stage, rollback included.
        let mut ids = Vec::new();
        self.step_items(&field_path(&exec, "steps"), &s.spec.execution.steps, barriers, &mut ids);
        self.step_items(
            &field_path(&exec, "rollbackSteps"),
            &s.spec.execution.rollback_steps,
            barriers,
            &mut ids,
        );
        self.unique("step identifier", ids.iter().map(|(p, id)| (p.clone(), id.as_str())));
    }

    fn step_items(
        &mut self,
        path: &str,
        items: &[StepItem],
        barriers: &[&str],
        ids: &mut Vec<(String, String)>,
    ) {
        let mut names: Vec<(String, &str)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ip = index_path(path, i);
            match item {
                StepItem::Step(s) => {
                    let sp = field_path(&ip, "step");
                    ids.push((field_path(&sp, "identifier"), s.identifier.clone()));
                    names.push((field_path(&sp, "name"), &s.name));
                    self.step(&sp, s, barriers);
                }
                StepItem::StepGroup(g) => {
                    let gp = field_path(&ip, "stepGroup");
                    ids.push((field_path(&gp, "identifier"), g.identifier.clone()));
                    names.push((field_path(&gp, "name"), &g.name));
                    self.name(&field_path(&gp, "name"), &g.name);
                    self.identifier(&field_path(&gp, "identifier"), &g.identifier);
                    self.duration(&field_path(&gp, "timeout"), g.timeout.as_deref());
                    self.selectors(&field_path(&gp, "delegateSelectors"), &g.delegate_selectors);
                    self.failure_strategies(&field_path(&gp, "failureStrategies"), &g.failure_strategies);
                    if g.steps.is_empty() {
                        self.err(field_path(&gp, "steps"), "a step group needs at least one step");
                    }
                    self.step_items(&field_path(&gp, "steps"), &g.steps, barriers, ids);
                    self.step_items(&field_path(&gp, "rollbackSteps"), &g.rollback_steps, barriers, ids);
                }
                StepItem::Parallel(inner) => {
                    let pp = field_path(&ip, "parallel");
                    if inner.is_empty() {
                        self.err(pp.clone(), "a parallel group needs at least one step");
                    }
                    self.step_items(&pp, inner, barriers, ids);
                }
            }
        }
        self.unique("step name", names);
    }

    fn step(&mut self, path: &str, s: &Step, barriers: &[&str]) {
        self.name(&field_path(path, "name"), &s.name);
        self.identifier(&field_path(path, "identifier"), &s.identifier);
        self.duration(&field_path(path, "timeout"), s.timeout.as_deref());
        self.failure_strategies(&field_path(path, "failureStrategies"), &s.failure_strategies);
        let Some(validator) = self.step_types.get(&s.step_type) else {
            self.err(
                field_path(path, "type"),
                format!(
                    "unknown step type {:?}; known types: {}",
                    s.step_type,
                    self.step_types.names().join(", ")
                ),
            );
            return;
        };
        let spec_path = field_path(path, "spec");
        let spec = Json::Object(s.spec.clone());
        for (p, m) in validator.validate(&spec) {
            let full = if p.is_empty() {
                spec_path.clone()
            } else if p.starts_with('[') {
                format!("{spec_path}{p}")
            } else {
                field_path(&spec_path, &p)
            };
            self.err(full, m);
        }
        if s.step_type == "Barrier"
            && let Some(b) = s.spec.get("barrierRef").and_then(Json::as_str)
            && is_identifier(b)
            && !barriers.contains(&b)
        {
            self.err(
                field_path(&spec_path, "barrierRef"),
                if barriers.is_empty() {
                    format!("barrier {b:?} is not declared: the pipeline has no flowControl.barriers")
                } else {
                    format!("barrier {b:?} is not declared in flowControl.barriers ({})", barriers.join(", "))
                },
            );
        }
    }

    fn input_set(&mut self, i: &InputSet) {
        self.tags("inputSet.tags", &i.tags);
        match i.pipeline.get("identifier") {
            Some(Json::String(id)) => self.identifier("inputSet.pipeline.identifier", id),
            Some(_) => self.err("inputSet.pipeline.identifier", "must be the pipeline's identifier"),
            None => self.err("inputSet.pipeline", "missing `identifier` naming the pipeline"),
        }
    }

    fn overlay(&mut self, o: &OverlayInputSet) {
        self.tags("overlayInputSet.tags", &o.tags);
        self.identifier("overlayInputSet.pipelineIdentifier", &o.pipeline_identifier);
        if o.input_set_references.is_empty() {
            self.err("overlayInputSet.inputSetReferences", "name at least one input set");
        }
        for (i, r) in o.input_set_references.iter().enumerate() {
            let p = index_path("overlayInputSet.inputSetReferences", i);
            self.identifier(&p, r);
            if *r == o.identifier {
                self.err(p, format!("overlay input sets form a cycle: {r} → {r}"));
            }
        }
        self.unique(
            "input set reference",
            o.input_set_references
                .iter()
                .enumerate()
                .map(|(i, r)| (index_path("overlayInputSet.inputSetReferences", i), r.as_str())),
        );
    }

    fn trigger(&mut self, t: &Trigger) {
        self.tags("trigger.tags", &t.tags);
        self.identifier("trigger.pipelineIdentifier", &t.pipeline_identifier);
        for (i, r) in t.input_set_refs.iter().enumerate() {
            self.identifier(&index_path("trigger.inputSetRefs", i), r);
        }
        for k in t.inputs.keys() {
            if k.trim().is_empty() {
                self.err("trigger.inputs", "input paths must not be empty");
            }
        }
        match &t.source {
            TriggerSource::Scheduled(super::entities::Schedule::Cron(c)) => {
                if let Err(e) = crate::triggers::cron::Schedule::parse(&c.expression) {
                    self.err("trigger.source.spec.spec.expression", e.to_string());
                }
            }
            TriggerSource::Webhook(w) => {
                let events = "trigger.source.spec.spec.events";
                for (i, e) in w.spec.events.iter().enumerate() {
                    let wrong = match (w.provider, e) {
                        (WebhookProvider::Github, WebhookEventType::MergeRequest) => Some("PullRequest"),
                        (WebhookProvider::Gitlab, WebhookEventType::PullRequest) => Some("MergeRequest"),
                        _ => None,
                    };
                    if let Some(instead) = wrong {
                        self.err(
                            index_path(events, i),
                            format!("{:?} does not send {e:?} events; use {instead}", w.provider),
                        );
                    }
                }
                let conditions: Vec<TriggerCondition> = w
                    .spec
                    .payload_conditions
                    .iter()
                    .map(|c| TriggerCondition {
                        key: c.key.clone(),
                        operator: c.operator,
                        value: c.value.clone(),
                    })
                    .collect();
                if let Err(e) = Conditions::compile(&conditions) {
                    let (index, field) = match &e {
                        ConditionError::BadKey { index, .. } => (*index, "key"),
                        ConditionError::BadRegex { index, .. } => (*index, "value"),
                    };
                    self.err(
                        format!("trigger.source.spec.spec.payloadConditions[{index}].{field}"),
                        e.to_string(),
                    );
                }
            }
        }
    }

    /// Parses every string of the document as a template (`when.condition` as a
    /// condition), places `<+input>`, and checks a pipeline's static references.
    fn expressions(&mut self, entity: &Entity, root: &Node, text: &str, pipeline: Option<&PipelineIndex>) {
        let kind = entity.kind();
        let mut found: Vec<(String, &Node)> = Vec::new();
        root.walk("", &mut |path, node| {
            if let Value::Str(_) = node.value {
                found.push((path.to_string(), node));
            }
        });
        for (path, node) in found {
            let s = node.as_str().unwrap_or_default();
            let refs = if path.ends_with("when.condition") {
                match Condition::parse(s) {
                    Ok(c) => c.references(),
                    Err(e) => {
                        self.err_at(
                            &path,
                            offset_loc(text, node, e.offset),
                            format!("invalid condition: {}", e.message),
                        );
                        continue;
                    }
                }
            } else {
                match Template::parse(s) {
                    Ok(t) => {
                        if t.runtime_input().is_some() {
                            match kind {
                                super::Kind::Pipeline => {}
                                super::Kind::InputSet | super::Kind::OverlayInputSet => self.err_at(
                                    &path,
                                    node.loc,
                                    "an input set supplies values; it cannot contain <+input>",
                                ),
                                _ => self.err_at(
                                    &path,
                                    node.loc,
                                    format!("<+input> is only allowed in pipelines, not in a {kind}"),
                                ),
                            }
                        }
                        t.references()
                    }
                    Err(e) => {
                        self.err_at(
                            &path,
                            offset_loc(text, node, e.offset),
                            format!("invalid expression: {}", e.message),
                        );
                        continue;
                    }
                }
            };
            if let Some(index) = pipeline {
                for (segments, offset) in refs {
                    if let Some(m) = index.check_reference(&segments) {
                        self.err_at(&path, offset_loc(text, node, offset), m);
                    }
                }
            }
        }
    }

    /// Pipeline variables whose values reference each other in a cycle.
    fn variable_cycles(&mut self, p: &Pipeline, root: &Node, text: &str) {
        let names: HashMap<&str, usize> =
            p.variables.iter().enumerate().map(|(i, v)| (v.name.as_str(), i)).collect();
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); p.variables.len()];
        for (i, v) in p.variables.iter().enumerate() {
            let Some(Ok(t)) = v.value.as_str().map(Template::parse) else { continue };
            for (segs, _) in t.references() {
                if segs.len() >= 3
                    && segs[0] == "pipeline"
                    && segs[1] == "variables"
                    && let Some(&j) = names.get(segs[2].as_str())
                {
                    edges[i].push(j);
                }
            }
        }
        let mut reported: HashSet<Vec<usize>> = HashSet::new();
        for start in 0..edges.len() {
            if let Some(cycle) = find_cycle(start, &edges) {
                let mut key = cycle.clone();
                key.sort_unstable();
                if !reported.insert(key) {
                    continue;
                }
                let mut names: Vec<&str> = cycle.iter().map(|&i| p.variables[i].name.as_str()).collect();
                names.push(names[0]);
                let path = format!("pipeline.variables[{}].value", cycle[0]);
                let loc = root
                    .get("pipeline")
                    .and_then(|n| n.get("variables"))
                    .and_then(|n| match &n.value {
                        Value::Seq(items) => items.get(cycle[0]),
                        _ => None,
                    })
                    .and_then(|n| n.get("value"))
                    .map(|n| offset_loc(text, n, 0));
                let message = format!("pipeline variables form a cycle: {}", names.join(" → "));
                match loc {
                    Some(loc) => self.err_at(&path, loc, message),
                    None => self.err(path, message),
                }
            }
        }
    }
}

/// A cycle through `start` (as the node list from `start`), if any.
fn find_cycle(start: usize, edges: &[Vec<usize>]) -> Option<Vec<usize>> {
    fn dfs(
        at: usize,
        start: usize,
        edges: &[Vec<usize>],
        stack: &mut Vec<usize>,
        seen: &mut HashSet<usize>,
    ) -> bool {
        for &next in &edges[at] {
            if next == start {
                return true;
            }
            if seen.insert(next) {
                stack.push(next);
                if dfs(next, start, edges, stack, seen) {
                    return true;
                }
                stack.pop();
            }
        }
        false
    }
    let mut stack = vec![start];
    let mut seen = HashSet::from([start]);
    dfs(start, start, edges, &mut stack, &mut seen).then_some(stack)
}

/// Keys that hold credentials when their value is written out.
fn is_credential_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    ["password", "secret", "token", "privatekey", "passphrase"].iter().any(|w| k.contains(w))
}

/// True when the whole value is secret references (and text around them), never a literal credential.
fn is_secret_reference(s: &str) -> bool {
    Template::parse(s).is_ok_and(|t| t.has_secrets())
}

/// What a pipeline declares, for checking `<+pipeline.…>` references.
struct PipelineIndex<'a> {
    variables: HashSet<&'a str>,
    stages: HashMap<&'a str, &'a Stage>,
}

impl<'a> PipelineIndex<'a> {
    fn new(p: &'a Pipeline) -> Self {
        PipelineIndex {
            variables: p.variables.iter().map(|v| v.name.as_str()).collect(),
            stages: p.all_stages().into_iter().map(|s| (s.identifier.as_str(), s)).collect(),
        }
    }

    /// A message when `segments` (a path an expression reads) cannot resolve.
    fn check_reference(&self, segments: &[String]) -> Option<String> {
        let seg = |i: usize| segments.get(i).map(String::as_str);
        if seg(0) != Some("pipeline") {
            return None;
        }
        match (seg(1), seg(2)) {
            (Some("variables"), Some(v)) if !self.variables.contains(v) => {
                let mut known: Vec<&str> = self.variables.iter().copied().collect();
                known.sort_unstable();
                Some(if known.is_empty() {
                    format!("pipeline.variables.{v} is not declared: the pipeline has no variables")
                } else {
                    format!("pipeline.variables.{v} is not declared (declared: {})", known.join(", "))
                })
            }
            (Some("stages"), Some(s)) => {
                let Some(stage) = self.stages.get(s) else {
                    let mut known: Vec<&str> = self.stages.keys().copied().collect();
                    known.sort_unstable();
                    return Some(format!(
                        "pipeline.stages.{s}: no stage {s:?} (stages: {})",
                        known.join(", ")
                    ));
                };
                if seg(3) == Some("spec") && seg(4) == Some("execution") && seg(5) == Some("steps") {
                    return check_step_path(
                        stage,
                        &segments[6..],
                        &format!("pipeline.stages.{s}.spec.execution.steps"),
                    );
                }
                None
            }
            _ => None,
        }
    }
}

/// Resolves `T[.steps.T2…][.output.outputVariables.V]` within a stage's steps.
fn check_step_path(stage: &Stage, rest: &[String], prefix: &str) -> Option<String> {
    let mut items: Vec<&StepItem> =
        stage.spec.execution.steps.iter().chain(&stage.spec.execution.rollback_steps).collect();
    let mut rest = rest;
    let mut prefix = prefix.to_string();
    loop {
        let id = rest.first()?;
        prefix = format!("{prefix}.{id}");
        match find_item(&items, id) {
            None => {
                return Some(format!(
                    "{prefix}: stage {:?} has no step or step group {id:?}",
                    stage.identifier
                ));
            }
            Some(Found::Group(g)) => {
                if rest.get(1).map(String::as_str) != Some("steps") {
                    return None;
                }
                items = g.steps.iter().chain(&g.rollback_steps).collect();
                prefix.push_str(".steps");
                rest = &rest[2..];
            }
            Some(Found::Step(step)) => {
                let tail: Vec<&str> = rest[1..].iter().map(String::as_str).collect();
                if let ["output", "outputVariables", v, ..] = tail.as_slice()
                    && let Some(declared) =
                        declared_outputs(&step.step_type, &Json::Object(step.spec.clone()))
                    && !declared.iter().any(|d| d == v)
                {
                    return Some(format!(
                        "{prefix}.output.outputVariables.{v}: step {id:?} declares no output variable {v:?}{}",
                        if declared.is_empty() {
                            String::new()
                        } else {
                            format!(" (declared: {})", declared.join(", "))
                        }
                    ));
                }
                return None;
            }
        }
    }
}

enum Found<'a> {
    Step(&'a Step),
    Group(&'a super::pipeline::StepGroup),
}

/// The step or group `id` among `items`, looking into parallel groups.
fn find_item<'a>(items: &[&'a StepItem], id: &str) -> Option<Found<'a>> {
    for item in items {
        match item {
            StepItem::Step(s) if s.identifier == id => return Some(Found::Step(s)),
            StepItem::StepGroup(g) if g.identifier == id => return Some(Found::Group(g)),
            StepItem::Parallel(inner) => {
                let inner: Vec<&StepItem> = inner.iter().collect();
                if let Some(f) = find_item(&inner, id) {
                    return Some(f);
                }
            }
            _ => {}
        }
    }
    None
}
