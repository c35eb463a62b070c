//! Compiles a stored pipeline (JSON of the validated YAML, runtime inputs
//! already filled in) into a [`Plan`]: nodes in an arena with their sequencing,
//! `when`, failure strategies, timeouts, selectors, variables, and — for
//! Deployment stages — the service, environment and infrastructure captured
//! with the expression objects built from them.
//!
//! The document was validated when it was applied, so this reads it leniently;
//! it still refuses what it cannot run (a missing referenced entity, a bad
//! duration) with an error naming the field.

use serde_json::{Map, Value as Json, json};

use super::plan::{
    Action, Barrier, Item, Node, NodeIdx, NodeKind, Plan, ROOT, StageTarget, StatusGate, Strategy, When,
};

/// Why a pipeline could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct CompileError {
    /// Where (e.g. `pipeline.stages.deploy.spec.service.serviceRef`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn err(path: &str, message: impl Into<String>) -> CompileError {
    CompileError { path: path.to_string(), message: message.into() }
}

/// Looks up entities a Deployment stage names (already fetched by the caller).
pub trait Entities {
    /// The document (its inner object) of `kind` (`service`, `environment`,
    /// `infrastructureDefinition`, `connector`) called `id`.
    fn get(&self, kind: &str, id: &str) -> Option<Json>;
}

/// The references a pipeline's Deployment stages make: (kind, id).
pub fn references(pipeline: &Json) -> Vec<(&'static str, String)> {
    let mut out = vec![];
    for stage in stages_flat(pipeline) {
        let spec = &stage["spec"];
        if let Some(s) = spec.pointer("/service/serviceRef").and_then(Json::as_str) {
            out.push(("service", s.to_string()));
        }
        if let Some(e) = spec.pointer("/environment/environmentRef").and_then(Json::as_str) {
            out.push(("environment", e.to_string()));
        }
        for i in spec
            .pointer("/environment/infrastructureDefinitions")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(id) = i.get("identifier").and_then(Json::as_str) {
                out.push(("infrastructureDefinition", id.to_string()));
            }
        }
    }
    out
}

fn stages_flat(pipeline: &Json) -> Vec<&Json> {
    let mut v = vec![];
    for item in pipeline.get("stages").and_then(Json::as_array).into_iter().flatten() {
        if let Some(s) = item.get("stage") {
            v.push(s);
        }
        for p in item.get("parallel").and_then(Json::as_array).into_iter().flatten() {
            if let Some(s) = p.get("stage") {
                v.push(s);
            }
        }
    }
    v
}

/// The inner object of a stored document (`{"pipeline": {...}}` or the object itself).
pub fn inner<'a>(doc: &'a Json, kind: &str) -> &'a Json {
    doc.get(kind).filter(|v| v.is_object()).unwrap_or(doc)
}

struct Compiler<'a> {
    nodes: Vec<Node>,
    entities: &'a dyn Entities,
}

/// Compiles `pipeline` (the inner object of a pipeline document).
pub fn compile(pipeline: &Json, entities: &dyn Entities) -> Result<Plan, CompileError> {
    let mut c = Compiler { nodes: vec![], entities };
    let root = c.node(None, "pipeline", pipeline, NodeKind::Pipeline, false)?;
    debug_assert_eq!(root, ROOT);
    let mut stages = vec![];
    for (i, item) in pipeline.get("stages").and_then(Json::as_array).into_iter().flatten().enumerate() {
        let path = format!("pipeline.stages[{i}]");
        if let Some(s) = item.get("stage") {
            stages.push(Item::One(c.stage(s, &path)?));
        } else if let Some(par) = item.get("parallel").and_then(Json::as_array) {
            let mut members = vec![];
            for (j, p) in par.iter().enumerate() {
                let s = p
                    .get("stage")
                    .ok_or_else(|| err(&format!("{path}.parallel[{j}]"), "expected a stage"))?;
                members.push(c.stage(s, &format!("{path}.parallel[{j}]"))?);
            }
            stages.push(Item::Parallel(members));
        } else {
            return Err(err(&path, "expected `stage` or `parallel`"));
        }
    }
    if stages.is_empty() {
        return Err(err("pipeline.stages", "a pipeline needs at least one stage"));
    }
    c.nodes[ROOT].children = stages;
    let barriers = pipeline
        .pointer("/flowControl/barriers")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|b| {
            let id = b.get("identifier")?.as_str()?.to_string();
            let name = b.get("name").and_then(Json::as_str).unwrap_or(&id).to_string();
            Some(Barrier { identifier: id, name })
        })
        .collect();
    Ok(Plan {
        pipeline: str_of(pipeline, "identifier").to_string(),
        name: str_of(pipeline, "name").to_string(),
        nodes: c.nodes,
        barriers,
    })
}

fn str_of<'a>(v: &'a Json, key: &str) -> &'a str {
    v.get(key).and_then(Json::as_str).unwrap_or("")
}

/// Parses a humantime duration in ms.
pub fn duration_ms(v: &Json, path: &str) -> Result<u64, CompileError> {
    let s = v.as_str().ok_or_else(|| err(path, "expected a duration such as \"10m\""))?;
    humantime::parse_duration(s.trim())
        .map(|d| d.as_millis() as u64)
        .map_err(|e| err(path, format!("{s:?} is not a duration: {e}")))
}

fn value_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

fn variables(v: &Json) -> Vec<(String, String)> {
    v.get("variables")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|var| Some((var.get("name")?.as_str()?.to_string(), value_text(var.get("value")?))))
        .collect()
}

fn variables_map(v: &Json) -> Map<String, Json> {
    variables(v).into_iter().map(|(k, v)| (k, Json::String(v))).collect()
}

fn action(v: &Json, path: &str) -> Result<Action, CompileError> {
    let ty = v.get("type").and_then(Json::as_str).ok_or_else(|| err(path, "action.type is required"))?;
    let spec = v.get("spec").cloned().unwrap_or(Json::Null);
    Ok(match ty {
        "Ignore" => Action::Ignore,
        "MarkAsSuccess" => Action::MarkAsSuccess,
        "MarkAsFailure" => Action::MarkAsFailure,
        "Abort" => Action::Abort,
        "StageRollback" => Action::StageRollback,
        "PipelineRollback" => Action::PipelineRollback,
        "Retry" => {
            let count = spec.get("retryCount").and_then(Json::as_u64).unwrap_or(1) as u32;
            let mut intervals_ms = vec![];
            for (i, iv) in
                spec.get("retryIntervals").and_then(Json::as_array).into_iter().flatten().enumerate()
            {
                intervals_ms.push(duration_ms(iv, &format!("{path}.spec.retryIntervals[{i}]"))?);
            }
            let on = spec
                .pointer("/onRetryFailure/action")
                .map(|a| action(a, &format!("{path}.spec.onRetryFailure.action")))
                .transpose()?
                .unwrap_or(Action::MarkAsFailure);
            Action::Retry { count, intervals_ms, on_retry_failure: Box::new(on) }
        }
        "ManualIntervention" => {
            let timeout_ms = spec
                .get("timeout")
                .map(|t| duration_ms(t, &format!("{path}.spec.timeout")))
                .transpose()?
                .unwrap_or(24 * 3600 * 1000);
            let on = spec
                .pointer("/onTimeout/action")
                .map(|a| action(a, &format!("{path}.spec.onTimeout.action")))
                .transpose()?
                .unwrap_or(Action::MarkAsFailure);
            Action::ManualIntervention { timeout_ms, on_timeout: Box::new(on) }
        }
        other => return Err(err(path, format!("unknown failure strategy action {other:?}"))),
    })
}

fn strategies(v: &Json, path: &str) -> Result<Vec<Strategy>, CompileError> {
    let mut out = vec![];
    for (i, fs) in v.get("failureStrategies").and_then(Json::as_array).into_iter().flatten().enumerate() {
        let p = format!("{path}.failureStrategies[{i}].onFailure");
        let on = fs.get("onFailure").ok_or_else(|| err(&p, "onFailure is required"))?;
        let errors = on
            .get("errors")
            .and_then(Json::as_array)
            .map(|e| e.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .unwrap_or_else(|| vec!["AllErrors".to_string()]);
        let a = on.get("action").ok_or_else(|| err(&p, "action is required"))?;
        out.push(Strategy { errors, action: action(a, &format!("{p}.action"))? });
    }
    Ok(out)
}

fn when(v: &Json, gate_key: &str) -> Option<When> {
    let w = v.get("when")?;
    let status = match w.get(gate_key).and_then(Json::as_str) {
        Some("Failure") => StatusGate::Failure,
        Some("All") => StatusGate::All,
        _ => StatusGate::Success,
    };
    let condition = w.get("condition").and_then(|c| match c {
        Json::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    });
    Some(When { status, condition })
}

fn selectors(v: &Json) -> Vec<String> {
    v.get("delegateSelectors")
        .and_then(Json::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

impl Compiler<'_> {
    fn node(
        &mut self,
        parent: Option<NodeIdx>,
        path: &str,
        v: &Json,
        kind: NodeKind,
        in_rollback: bool,
    ) -> Result<NodeIdx, CompileError> {
        let identifier = str_of(v, "identifier").to_string();
        let dotted = match parent.map(|p| self.nodes[p].path.as_str()) {
            None | Some("") => {
                if matches!(kind, NodeKind::Pipeline) {
                    String::new()
                } else {
                    identifier.clone()
                }
            }
            Some(pp) => {
                let rb = in_rollback && parent.is_some_and(|p| !self.nodes[p].in_rollback);
                if rb { format!("{pp}.rollback.{identifier}") } else { format!("{pp}.{identifier}") }
            }
        };
        let gate_key = match kind {
            NodeKind::Stage { .. } => "pipelineStatus",
            _ => "stageStatus",
        };
        let step_spec = matches!(kind, NodeKind::Step { .. });
        let sel_src = if step_spec { v.get("spec").unwrap_or(&Json::Null) } else { v };
        let node = Node {
            name: v.get("name").and_then(Json::as_str).unwrap_or(&identifier).to_string(),
            identifier,
            path: dotted,
            kind,
            parent,
            children: vec![],
            rollback: vec![],
            in_rollback,
            when: when(v, gate_key),
            failure_strategies: strategies(v, path)?,
            timeout_ms: v.get("timeout").map(|t| duration_ms(t, &format!("{path}.timeout"))).transpose()?,
            delegate_selectors: {
                let mut s = selectors(sel_src);
                if s.is_empty() && step_spec {
                    s = selectors(v);
                }
                s
            },
            variables: variables(v),
        };
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    fn stage(&mut self, s: &Json, path: &str) -> Result<NodeIdx, CompileError> {
        let stage_type = str_of(s, "type").to_string();
        let target = if stage_type == "Deployment" { self.target(s, path)? } else { None };
        let idx = self.node(Some(ROOT), path, s, NodeKind::Stage { stage_type, target }, false)?;
        let exec = s.pointer("/spec/execution").ok_or_else(|| err(path, "spec.execution is required"))?;
        let steps = self.items(idx, exec.get("steps"), &format!("{path}.spec.execution.steps"), false)?;
        let rollback = self.items(
            idx,
            exec.get("rollbackSteps"),
            &format!("{path}.spec.execution.rollbackSteps"),
            true,
        )?;
        self.nodes[idx].children = steps;
        self.nodes[idx].rollback = rollback;
        Ok(idx)
    }

    fn items(
        &mut self,
        parent: NodeIdx,
        list: Option<&Json>,
        path: &str,
        in_rollback: bool,
    ) -> Result<Vec<Item>, CompileError> {
        let mut out = vec![];
        for (i, item) in list.and_then(Json::as_array).into_iter().flatten().enumerate() {
            let p = format!("{path}[{i}]");
            if let Some(par) = item.get("parallel").and_then(Json::as_array) {
                let mut members = vec![];
                for (j, m) in par.iter().enumerate() {
                    members.push(self.one(parent, m, &format!("{p}.parallel[{j}]"), in_rollback)?);
                }
                out.push(Item::Parallel(members));
            } else {
                out.push(Item::One(self.one(parent, item, &p, in_rollback)?));
            }
        }
        Ok(out)
    }

    fn one(
        &mut self,
        parent: NodeIdx,
        item: &Json,
        path: &str,
        in_rollback: bool,
    ) -> Result<NodeIdx, CompileError> {
        if let Some(step) = item.get("step") {
            let step_type = str_of(step, "type").to_string();
            let spec = step.get("spec").cloned().unwrap_or(json!({}));
            self.node(
                Some(parent),
                &format!("{path}.step"),
                step,
                NodeKind::Step { step_type, spec },
                in_rollback,
            )
        } else if let Some(g) = item.get("stepGroup") {
            let p = format!("{path}.stepGroup");
            let idx = self.node(Some(parent), &p, g, NodeKind::StepGroup, in_rollback)?;
            let steps = self.items(idx, g.get("steps"), &format!("{p}.steps"), in_rollback)?;
            let rollback = self.items(idx, g.get("rollbackSteps"), &format!("{p}.rollbackSteps"), true)?;
            self.nodes[idx].children = steps;
            self.nodes[idx].rollback = rollback;
            Ok(idx)
        } else {
            Err(err(path, "expected `step`, `stepGroup` or `parallel`"))
        }
    }

    fn target(&self, s: &Json, path: &str) -> Result<Option<StageTarget>, CompileError> {
        let spec = &s["spec"];
        let Some(service_id) = spec.pointer("/service/serviceRef").and_then(Json::as_str) else {
            return Ok(None);
        };
        let sp = format!("{path}.spec.service.serviceRef");
        let service = self
            .entities
            .get("service", service_id)
            .ok_or_else(|| err(&sp, format!("service {service_id:?} does not exist")))?;
        let ep = format!("{path}.spec.environment.environmentRef");
        let env_id = spec
            .pointer("/environment/environmentRef")
            .and_then(Json::as_str)
            .ok_or_else(|| err(&ep, "a Deployment stage with a service needs an environment"))?;
        let env = self
            .entities
            .get("environment", env_id)
            .ok_or_else(|| err(&ep, format!("environment {env_id:?} does not exist")))?;
        let infra_id = spec
            .pointer("/environment/infrastructureDefinitions/0/identifier")
            .and_then(Json::as_str)
            .unwrap_or("");
        let infra = if infra_id.is_empty() {
            Json::Null
        } else {
            self.entities.get("infrastructureDefinition", infra_id).ok_or_else(|| {
                err(
                    &format!("{path}.spec.environment.infrastructureDefinitions[0].identifier"),
                    format!("infrastructure {infra_id:?} does not exist"),
                )
            })?
        };
        let connector_ref = infra.pointer("/spec/connectorRef").and_then(Json::as_str).unwrap_or("");
        let connector =
            if connector_ref.is_empty() { None } else { self.entities.get("connector", connector_ref) };
        let connector_selectors =
            connector.as_ref().and_then(|c| c.get("spec")).map(selectors).unwrap_or_default();

        // serviceVariables: the service's own, overridden by same-named environment
        // variables, overridden by the environment's overrides for this service.
        let mut service_vars =
            variables_map(service.pointer("/serviceDefinition/spec").unwrap_or(&Json::Null));
        for (k, v) in variables_map(&env) {
            if service_vars.contains_key(&k) {
                service_vars.insert(k, v);
            }
        }
        for o in env.pointer("/overrides/services").and_then(Json::as_array).into_iter().flatten() {
            if o.get("serviceRef").and_then(Json::as_str) == Some(service_id) {
                service_vars.extend(variables_map(o));
            }
        }
        let svc_spec = service.pointer("/serviceDefinition/spec").cloned().unwrap_or(json!({}));
        let mut infra_obj = match infra.get("spec") {
            Some(Json::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        for k in ["name", "identifier", "deploymentType", "type", "environmentRef"] {
            if let Some(v) = infra.get(k) {
                infra_obj.insert(k.to_string(), v.clone());
            }
        }
        let context = json!({
            "service": {
                "name": str_of(&service, "name"),
                "identifier": service_id,
                "description": str_of(&service, "description"),
                "type": service.pointer("/serviceDefinition/type").cloned().unwrap_or(Json::Null),
                "tags": service.get("tags").cloned().unwrap_or(json!({})),
                "variables": Json::Object(service_vars.clone()),
                "manifests": svc_spec.get("manifests").cloned().unwrap_or(json!([])),
                "configFiles": svc_spec.get("configFiles").cloned().unwrap_or(json!([])),
            },
            "artifact": svc_spec.pointer("/artifacts/primary").cloned().map(|a| {
                let mut o = a.get("spec").cloned().unwrap_or(json!({}));
                if let Json::Object(m) = &mut o {
                    m.insert("type".into(), a.get("type").cloned().unwrap_or(Json::Null));
                    // `<+artifact.image>`: the full image reference of a registry artifact.
                    if !m.contains_key("image")
                        && let (Some(Json::String(path)), Some(Json::String(tag))) = (m.get("imagePath"), m.get("tag"))
                    {
                        let image = format!("{path}:{tag}");
                        m.insert("image".into(), Json::String(image));
                    }
                }
                o
            }).unwrap_or(json!({})),
            "env": {
                "name": str_of(&env, "name"),
                "identifier": env_id,
                "type": env.get("type").cloned().unwrap_or(Json::Null),
                "description": str_of(&env, "description"),
                "tags": env.get("tags").cloned().unwrap_or(json!({})),
                "variables": Json::Object(variables_map(&env)),
            },
            "infra": Json::Object(infra_obj),
            // Connection details only: credentials in a connector are secret
            // references, resolved by the delegate.
            "connector": connector.as_ref().map(|c| {
                let mut o = c.get("spec").cloned().unwrap_or(json!({}));
                if let Json::Object(m) = &mut o {
                    m.insert("identifier".into(), json!(connector_ref));
                    m.insert("type".into(), c.get("type").cloned().unwrap_or(Json::Null));
                }
                o
            }).unwrap_or(json!({})),
            "serviceVariables": Json::Object(service_vars),
        });
        Ok(Some(StageTarget {
            service: service_id.to_string(),
            environment: env_id.to_string(),
            infrastructure: infra_id.to_string(),
            context,
            connector_selectors,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Map(HashMap<(String, String), Json>);

    impl Entities for Map {
        fn get(&self, kind: &str, id: &str) -> Option<Json> {
            self.0.get(&(kind.to_string(), id.to_string())).cloned()
        }
    }

    fn entities() -> Map {
        let mut m = HashMap::new();
        m.insert(
            ("service".into(), "web".into()),
            json!({"name": "Web", "identifier": "web", "serviceDefinition": {"type": "Kubernetes", "spec": {
                "variables": [{"name": "port", "type": "String", "value": "80"}, {"name": "replicas", "type": "String", "value": "1"}]}}}),
        );
        m.insert(
            ("environment".into(), "prod".into()),
            json!({"name": "Prod", "identifier": "prod", "type": "Production",
                   "variables": [{"name": "replicas", "type": "String", "value": "3"}],
                   "overrides": {"services": [{"serviceRef": "web", "variables": [{"name": "port", "type": "String", "value": "8080"}]}]}}),
        );
        m.insert(
            ("infrastructureDefinition".into(), "k8s".into()),
            json!({"name": "K8s", "identifier": "k8s", "environmentRef": "prod", "deploymentType": "Kubernetes",
                   "type": "KubernetesDirect", "spec": {"connectorRef": "cluster", "namespace": "web"}}),
        );
        m.insert(
            ("connector".into(), "cluster".into()),
            json!({"name": "Cluster", "identifier": "cluster", "type": "K8sCluster", "spec": {"delegateSelectors": ["k8s"]}}),
        );
        Map(m)
    }

    fn pipeline() -> Json {
        json!({
            "name": "P", "identifier": "p", "timeout": "1h",
            "variables": [{"name": "greeting", "type": "String", "value": "hi"}],
            "flowControl": {"barriers": [{"name": "Sync", "identifier": "sync"}]},
            "stages": [
                {"stage": {"name": "Build", "identifier": "build", "type": "Custom",
                    "failureStrategies": [{"onFailure": {"errors": ["AllErrors"], "action": {"type": "Retry",
                        "spec": {"retryCount": 2, "retryIntervals": ["1s", "2s"], "onRetryFailure": {"action": {"type": "StageRollback"}}}}}}],
                    "spec": {"execution": {
                        "steps": [
                            {"step": {"name": "Say", "identifier": "say", "type": "ShellScript", "timeout": "10m",
                                      "spec": {"shell": "Bash", "source": {"type": "Inline", "spec": {"script": "echo hi"}}, "delegateSelectors": ["linux"]}}},
                            {"parallel": [
                                {"step": {"name": "A", "identifier": "a", "type": "Wait", "spec": {"duration": "1s"}}},
                                {"stepGroup": {"name": "G", "identifier": "g", "steps": [
                                    {"step": {"name": "B", "identifier": "b", "type": "Wait", "spec": {"duration": "1s"}}}],
                                    "rollbackSteps": [{"step": {"name": "UB", "identifier": "ub", "type": "Wait", "spec": {"duration": "1s"}}}]}}
                            ]}
                        ],
                        "rollbackSteps": [{"step": {"name": "Undo", "identifier": "undo", "type": "Wait", "spec": {"duration": "1s"}}}]
                    }}}},
                {"parallel": [
                    {"stage": {"name": "Deploy", "identifier": "deploy", "type": "Deployment",
                        "when": {"pipelineStatus": "All", "condition": "<+pipeline.variables.greeting> == \"hi\""},
                        "spec": {"service": {"serviceRef": "web"},
                                 "environment": {"environmentRef": "prod", "infrastructureDefinitions": [{"identifier": "k8s"}]},
                                 "execution": {"steps": [{"step": {"name": "S", "identifier": "s", "type": "Barrier", "spec": {"barrierRef": "sync"}}}]}}}},
                    {"stage": {"name": "Other", "identifier": "other", "type": "Custom",
                        "spec": {"execution": {"steps": [{"step": {"name": "S", "identifier": "s", "type": "Barrier", "spec": {"barrierRef": "sync"}}}]}}}}
                ]}
            ]
        })
    }

    #[test]
    fn compiles_structure_strategies_and_targets() {
        let plan = compile(&pipeline(), &entities()).unwrap();
        let paths: Vec<&str> = plan.nodes.iter().map(|n| n.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "",
                "build",
                "build.say",
                "build.a",
                "build.g",
                "build.g.b",
                "build.g.rollback.ub",
                "build.rollback.undo",
                "deploy",
                "deploy.s",
                "other",
                "other.s"
            ]
        );
        let say = plan.find("build.say").unwrap();
        assert_eq!(plan.node(say).timeout_ms, Some(600_000));
        assert_eq!(plan.selectors_for(say), vec!["linux".to_string()]);
        let build = plan.find("build").unwrap();
        assert_eq!(
            plan.node(build).failure_strategies[0].action,
            Action::Retry {
                count: 2,
                intervals_ms: vec![1000, 2000],
                on_retry_failure: Box::new(Action::StageRollback)
            }
        );
        assert!(plan.node(plan.find("build.g.rollback.ub").unwrap()).in_rollback);
        assert_eq!(plan.node(ROOT).children.len(), 2);
        assert_eq!(plan.barriers[0].identifier, "sync");
        let deploy = plan.find("deploy").unwrap();
        let NodeKind::Stage { target: Some(t), .. } = &plan.node(deploy).kind else { panic!("no target") };
        assert_eq!(t.connector_selectors, vec!["k8s".to_string()]);
        assert_eq!(t.context["serviceVariables"], json!({"port": "8080", "replicas": "3"}));
        assert_eq!(t.context["infra"]["namespace"], json!("web"));
        assert_eq!(plan.selectors_for(plan.find("deploy.s").unwrap()), vec!["k8s".to_string()]);
        assert_eq!(plan.node(deploy).when.as_ref().unwrap().status, StatusGate::All);
        // Round trip: plans are stored as JSON.
        let back: Plan = serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
        assert_eq!(back, plan);
    }

    #[test]
    fn missing_entities_and_bad_durations_name_the_field() {
        let mut p = pipeline();
        p["stages"][1]["parallel"][0]["stage"]["spec"]["service"]["serviceRef"] = json!("nope");
        let e = compile(&p, &entities()).unwrap_err();
        assert_eq!(e.path, "pipeline.stages[1].parallel[0].spec.service.serviceRef");
        assert!(e.message.contains("\"nope\" does not exist"), "{e}");
        let mut p = pipeline();
        p["stages"][0]["stage"]["spec"]["execution"]["steps"][0]["step"]["timeout"] = json!("soon");
        let e = compile(&p, &entities()).unwrap_err();
        assert_eq!(e.path, "pipeline.stages[0].spec.execution.steps[0].step.timeout");
    }
}
