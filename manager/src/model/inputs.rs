//! Runtime inputs: the `<+input>` fields of a pipeline, the values input sets
//! supply, and resolving them into a runnable pipeline.
//!
//! Fields are addressed by their *input path*: the dotted path inside the
//! pipeline where list elements are named by their `identifier` (by `name` for
//! variables, whose path is the variable itself, not its `value`) and the
//! wrapper keys `stage`, `step`, `stepGroup` and `parallel` are left out:
//!
//! ```text
//! pipeline.variables.greeting
//! pipeline.stages.deploy.spec.service.serviceRef
//! pipeline.stages.build.spec.execution.steps.say.spec.source.spec.script
//! pipeline.stages.build.spec.execution.steps.grp.steps.inner.timeout
//! ```
//!
//! A list element with neither is addressed by position (`delegateSelectors[0]`).
//! Input-set YAML has the pipeline's shape; its `identifier`s, variable `name`s
//! and `type`s only address or describe, so they are not values.

use std::collections::{BTreeMap, BTreeSet};

use dray_shared::expr::Template;
use serde_json::Value as Json;

use super::pipeline::Pipeline;
use super::validate::is_identifier;
use super::yaml::{Node, SchemaError, from_node};

/// Keys that only wrap a list element.
const WRAPPERS: [&str; 4] = ["stage", "step", "stepGroup", "parallel"];

/// One `<+input>` field of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputField {
    /// Input path, e.g. `pipeline.variables.greeting`.
    pub path: String,
    /// `.default(v)`.
    pub default: Option<String>,
    /// `.allowedValues(…)`; empty when anything goes.
    pub allowed: Vec<String>,
}

/// Why inputs could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// A field starts like `<+input>` but does not parse.
    #[error("{path}: invalid runtime input: {message}")]
    Malformed {
        /// Input path.
        path: String,
        /// Parser message.
        message: String,
    },
    /// Supplied keys that name no `<+input>` field.
    #[error("not a runtime input of pipeline {pipeline}: {}", keys.join(", "))]
    Unknown {
        /// Pipeline identifier.
        pipeline: String,
        /// The keys as supplied.
        keys: Vec<String>,
    },
    /// A value outside the field's allowed values.
    #[error("{path}: {value:?} is not allowed (allowed: {})", allowed.join(", "))]
    NotAllowed {
        /// Input path.
        path: String,
        /// The value supplied.
        value: String,
        /// What it may be.
        allowed: Vec<String>,
    },
    /// Fields with neither a supplied value nor a default.
    #[error("pipeline {pipeline} needs values for its runtime inputs: {}", paths.join(", "))]
    Missing {
        /// Pipeline identifier.
        pipeline: String,
        /// Every input path still without a value.
        paths: Vec<String>,
    },
}

/// A scalar found while walking a pipeline-shaped value.
struct Leaf<'a> {
    /// Input path.
    input: String,
    /// Field path relative to the walked value (`.variables[0].value`).
    field: String,
    /// JSON pointer relative to the walked value.
    pointer: String,
    value: &'a Json,
    /// Addresses or describes rather than supplies (`identifier`, variable `name`, `type`).
    structural: bool,
}

/// The inner pipeline object of `{"pipeline": {...}}`, or `v` itself; and the
/// pointer prefix to it.
fn unwrap(v: &Json) -> (&Json, &'static str) {
    match v.get("pipeline") {
        Some(inner) if inner.is_object() && v.get("stages").is_none() && v.get("identifier").is_none() => {
            (inner, "/pipeline")
        }
        _ => (v, ""),
    }
}

fn pointer_escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

/// How a list element is addressed: by identifier, by name (variables), or not at all.
enum Address {
    Identifier(String),
    Name(String),
    None,
}

fn address(el: &Json) -> Address {
    let Json::Object(m) = el else { return Address::None };
    if let Some(id) = m.get("identifier").and_then(Json::as_str).filter(|id| is_identifier(id)) {
        return Address::Identifier(id.to_string());
    }
    if let Some(name) = m.get("name").and_then(Json::as_str).filter(|n| is_identifier(n))
        && (m.contains_key("value") || m.contains_key("type"))
    {
        return Address::Name(name.to_string());
    }
    if m.len() == 1
        && let Some((k, inner)) = m.iter().next()
        && WRAPPERS.contains(&k.as_str())
        && inner.is_object()
    {
        return address(inner);
    }
    Address::None
}

fn walk<'a>(v: &'a Json, input: &str, field: &str, pointer: &str, by_name: bool, out: &mut Vec<Leaf<'a>>) {
    match v {
        Json::Object(m) => {
            for (k, child) in m {
                let f = format!("{field}.{k}");
                let p = format!("{pointer}/{}", pointer_escape(k));
                if WRAPPERS.contains(&k.as_str()) {
                    walk(child, input, &f, &p, false, out);
                } else if by_name && k == "value" {
                    // A variable's value is addressed as the variable itself.
                    walk(child, input, &f, &p, false, out);
                } else {
                    let structural = k == "type"
                        || (k == "identifier" && child.as_str().is_some_and(is_identifier))
                        || (by_name && k == "name");
                    if structural && !child.is_object() && !child.is_array() {
                        out.push(Leaf {
                            input: format!("{input}.{k}"),
                            field: f,
                            pointer: p,
                            value: child,
                            structural,
                        });
                    } else {
                        walk(child, &format!("{input}.{k}"), &f, &p, false, out);
                    }
                }
            }
        }
        Json::Array(items) => {
            for (i, el) in items.iter().enumerate() {
                let f = format!("{field}[{i}]");
                let p = format!("{pointer}/{i}");
                match address(el) {
                    Address::Identifier(id) => walk(el, &format!("{input}.{id}"), &f, &p, false, out),
                    Address::Name(name) => walk(el, &format!("{input}.{name}"), &f, &p, true, out),
                    Address::None => match el {
                        // `- parallel: [...]`: its members carry their own identifiers.
                        Json::Object(m) if m.len() == 1 && m.contains_key("parallel") => {
                            walk(el, input, &f, &p, false, out)
                        }
                        _ => walk(el, &format!("{input}[{i}]"), &f, &p, false, out),
                    },
                }
            }
        }
        Json::Null => {}
        scalar => out.push(Leaf {
            input: input.to_string(),
            field: field.to_string(),
            pointer: pointer.to_string(),
            value: scalar,
            structural: false,
        }),
    }
}

fn leaves(pipeline: &Json) -> (Vec<Leaf<'_>>, &'static str) {
    let (inner, prefix) = unwrap(pipeline);
    let mut out = Vec::new();
    walk(inner, "pipeline", "", "", false, &mut out);
    (out, prefix)
}

/// Every `<+input>` field of a pipeline (`{"pipeline": {...}}` or the inner object):
/// list elements in order, the keys of each object in JSON (sorted) order.
pub fn runtime_inputs(pipeline: &Json) -> Result<Vec<InputField>, InputError> {
    let (leaves, _) = leaves(pipeline);
    let mut out = Vec::new();
    for leaf in leaves {
        let Some(s) = leaf.value.as_str() else { continue };
        if !s.starts_with("<+input") {
            continue;
        }
        match Template::parse(s) {
            Ok(t) => {
                if let Some(ri) = t.runtime_input() {
                    out.push(InputField {
                        path: leaf.input,
                        default: ri.default.clone(),
                        allowed: ri.allowed.clone(),
                    });
                }
            }
            Err(e) if s.starts_with("<+input>") => {
                return Err(InputError::Malformed { path: leaf.input, message: e.message });
            }
            Err(_) => {}
        }
    }
    Ok(out)
}

/// The values an input set supplies (its `pipeline` object): input path → value.
pub fn flatten_input_set(input_set_pipeline: &Json) -> BTreeMap<String, String> {
    flatten_located(input_set_pipeline).into_iter().map(|(k, _, v)| (k, v)).collect()
}

/// Like [`flatten_input_set`], with each value's field path relative to the
/// walked object (`.variables[0].value`).
pub(crate) fn flatten_located(input_set_pipeline: &Json) -> Vec<(String, String, String)> {
    let (leaves, _) = leaves(input_set_pipeline);
    leaves
        .into_iter()
        .filter(|l| !l.structural)
        .map(|l| {
            let value = match l.value {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            (l.input, l.field, value)
        })
        .collect()
}

/// The input path a supplied key means: the canonical path, the path without
/// `pipeline.`, or a bare NAME for `pipeline.variables.NAME`.
pub fn canonical_key(key: &str) -> String {
    let k = key.trim();
    if k.starts_with("pipeline.") {
        k.to_string()
    } else if k.contains('.') {
        format!("pipeline.{k}")
    } else {
        format!("pipeline.variables.{k}")
    }
}

/// Fills every `<+input>` of `pipeline` from `layers` (applied in order, later
/// wins), else from its default. Returns the pipeline in the same shape it was
/// given, with values as strings.
pub fn resolve_inputs(pipeline: &Json, layers: &[BTreeMap<String, String>]) -> Result<Json, InputError> {
    let (inner, _) = unwrap(pipeline);
    let pipeline_id = inner.get("identifier").and_then(Json::as_str).unwrap_or("?").to_string();
    let fields = runtime_inputs(pipeline)?;
    let by_path: BTreeMap<&str, &InputField> = fields.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut supplied: BTreeMap<String, String> = BTreeMap::new();
    let mut unknown: BTreeSet<String> = BTreeSet::new();
    for layer in layers {
        for (k, v) in layer {
            let c = canonical_key(k);
            if by_path.contains_key(c.as_str()) {
                supplied.insert(c, v.clone());
            } else {
                unknown.insert(k.clone());
            }
        }
    }
    if !unknown.is_empty() {
        return Err(InputError::Unknown { pipeline: pipeline_id, keys: unknown.into_iter().collect() });
    }
    let mut chosen: BTreeMap<&str, String> = BTreeMap::new();
    let mut missing = Vec::new();
    for f in &fields {
        match supplied.get(&f.path).or(f.default.as_ref()) {
            None => missing.push(f.path.clone()),
            Some(v) if !f.allowed.is_empty() && !f.allowed.contains(v) => {
                return Err(InputError::NotAllowed {
                    path: f.path.clone(),
                    value: v.clone(),
                    allowed: f.allowed.clone(),
                });
            }
            Some(v) => {
                chosen.insert(&f.path, v.clone());
            }
        }
    }
    if !missing.is_empty() {
        return Err(InputError::Missing { pipeline: pipeline_id, paths: missing });
    }
    let (leaves, prefix) = leaves(pipeline);
    let replacements: Vec<(String, String)> = leaves
        .into_iter()
        .filter(|l| l.value.as_str().is_some_and(|s| s.starts_with("<+input")))
        .filter_map(|l| chosen.get(l.input.as_str()).map(|v| (format!("{prefix}{}", l.pointer), v.clone())))
        .collect();
    let mut out = pipeline.clone();
    for (pointer, value) in replacements {
        if let Some(slot) = out.pointer_mut(&pointer) {
            *slot = Json::String(value);
        }
    }
    Ok(out)
}

/// The typed pipeline of stored JSON (`{"pipeline": {...}}` or the inner object),
/// e.g. after [`resolve_inputs`]. Errors name the field.
pub fn parse_pipeline(json: &Json) -> Result<Pipeline, SchemaError> {
    let (inner, _) = unwrap(json);
    // Deserializing recurses per nesting level; see `load::with_large_stack`.
    super::load::with_large_stack(|| from_node(&Node::from_json(inner), "pipeline"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pipeline() -> Json {
        json!({"pipeline": {
            "name": "P", "identifier": "p",
            "variables": [
                {"name": "greeting", "type": "String", "value": "<+input>"},
                {"name": "target", "type": "String", "value": "<+input>.default(dev).allowedValues(dev,qa,prod)"},
                {"name": "fixed", "type": "String", "value": "x"}
            ],
            "stages": [
                {"stage": {"name": "B", "identifier": "build", "type": "Custom", "spec": {"execution": {"steps": [
                    {"step": {"name": "S", "identifier": "say", "type": "ShellScript", "timeout": "<+input>.default(1m)",
                        "spec": {"shell": "Bash", "source": {"type": "Inline", "spec": {"script": "<+input>"}}}}},
                    {"stepGroup": {"name": "G", "identifier": "grp", "steps": [
                        {"parallel": [{"step": {"name": "I", "identifier": "inner", "type": "Wait", "timeout": "<+input>",
                            "spec": {"duration": "1s"}}}]}
                    ]}}
                ]}}}},
                {"parallel": [{"stage": {"name": "D", "identifier": "deploy", "type": "Deployment", "spec": {
                    "service": {"serviceRef": "<+input>"},
                    "environment": {"environmentRef": "prod", "infrastructureDefinitions": [{"identifier": "<+input>"}]},
                    "execution": {"steps": []}}}}]}
            ]
        }})
    }

    #[test]
    fn runtime_inputs_use_canonical_paths() {
        // Lists keep their order; keys of a JSON object come sorted.
        let mut paths: Vec<String> =
            runtime_inputs(&pipeline()).unwrap().into_iter().map(|f| f.path).collect();
        paths.sort();
        let mut expected = [
            "pipeline.variables.greeting",
            "pipeline.variables.target",
            "pipeline.stages.build.spec.execution.steps.say.timeout",
            "pipeline.stages.build.spec.execution.steps.say.spec.source.spec.script",
            "pipeline.stages.build.spec.execution.steps.grp.steps.inner.timeout",
            "pipeline.stages.deploy.spec.service.serviceRef",
            "pipeline.stages.deploy.spec.environment.infrastructureDefinitions[0].identifier",
        ];
        expected.sort();
        assert_eq!(paths, expected);
        let target =
            runtime_inputs(&pipeline()).unwrap().into_iter().find(|f| f.path.ends_with("target")).unwrap();
        assert_eq!(target.default.as_deref(), Some("dev"));
        assert_eq!(target.allowed, ["dev", "qa", "prod"]);
        // The inner object works the same.
        assert_eq!(runtime_inputs(&pipeline()["pipeline"]).unwrap().len(), 7);
    }

    #[test]
    fn input_sets_flatten_to_input_paths() {
        let set = json!({"identifier": "p",
        "variables": [{"name": "target", "type": "String", "value": "qa"}, {"name": "n", "type": "Number", "value": 3}],
        "stages": [{"stage": {"identifier": "build", "type": "Custom", "spec": {"execution": {"steps": [
            {"step": {"identifier": "say", "type": "ShellScript", "spec": {"source": {"type": "Inline", "spec": {"script": "echo"}}}}}
        ]}}}}]});
        let flat = flatten_input_set(&set);
        let expected: BTreeMap<String, String> = [
            ("pipeline.variables.target", "qa"),
            ("pipeline.variables.n", "3"),
            ("pipeline.stages.build.spec.execution.steps.say.spec.source.spec.script", "echo"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(flat, expected);
        let located = flatten_located(&set);
        let target = located.iter().find(|l| l.0 == "pipeline.variables.target").unwrap();
        assert_eq!(target.1, ".variables[0].value");
    }

    fn layer(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn resolve_fills_inputs_later_layers_win() {
        let l1 = layer(&[("greeting", "hi"), ("pipeline.stages.deploy.spec.service.serviceRef", "web")]);
        let l2 = layer(&[
            ("variables.greeting", "hello"),
            ("stages.build.spec.execution.steps.say.spec.source.spec.script", "echo"),
            ("pipeline.stages.build.spec.execution.steps.grp.steps.inner.timeout", "5s"),
            ("pipeline.stages.deploy.spec.environment.infrastructureDefinitions[0].identifier", "k8s"),
        ]);
        let out = resolve_inputs(&pipeline(), &[l1, l2]).unwrap();
        let p = &out["pipeline"];
        assert_eq!(p["variables"][0]["value"], "hello");
        assert_eq!(p["variables"][1]["value"], "dev", "default used");
        assert_eq!(p["variables"][2]["value"], "x", "not an input: untouched");
        let say = &p["stages"][0]["stage"]["spec"]["execution"]["steps"][0]["step"];
        assert_eq!(say["timeout"], "1m");
        assert_eq!(say["spec"]["source"]["spec"]["script"], "echo");
        let deploy = &p["stages"][1]["parallel"][0]["stage"]["spec"];
        assert_eq!(deploy["service"]["serviceRef"], "web");
        assert_eq!(deploy["environment"]["infrastructureDefinitions"][0]["identifier"], "k8s");
        assert!(runtime_inputs(&out).unwrap().is_empty());
    }

    #[test]
    fn resolve_errors() {
        let e = resolve_inputs(&pipeline(), &[layer(&[("nope", "1"), ("stages.x.y", "2")])]).unwrap_err();
        assert_eq!(e.to_string(), "not a runtime input of pipeline p: nope, stages.x.y");
        let e = resolve_inputs(&pipeline(), &[layer(&[("target", "staging")])]).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"pipeline.variables.target: "staging" is not allowed (allowed: dev, qa, prod)"#
        );
        let e = resolve_inputs(&pipeline(), &[layer(&[("greeting", "hi")])]).unwrap_err();
        assert_eq!(
            e,
            InputError::Missing {
                pipeline: "p".into(),
                paths: vec![
                    "pipeline.stages.build.spec.execution.steps.say.spec.source.spec.script".into(),
                    "pipeline.stages.build.spec.execution.steps.grp.steps.inner.timeout".into(),
                    "pipeline.stages.deploy.spec.environment.infrastructureDefinitions[0].identifier".into(),
                    "pipeline.stages.deploy.spec.service.serviceRef".into(),
                ]
            }
        );
    }

    #[test]
    fn parse_pipeline_reads_stored_json() {
        let p = parse_pipeline(&pipeline()).unwrap();
        assert_eq!(p.identifier, "p");
        assert_eq!(p.all_stages().len(), 2);
        let mut bad = pipeline();
        bad["pipeline"]["stages"][0]["stage"]["colour"] = json!("red");
        let e = parse_pipeline(&bad).unwrap_err();
        assert_eq!(e.path, "pipeline.stages[0].stage.colour");
    }
}
