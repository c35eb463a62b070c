//! `ShellScript`: a bash script run by a delegate as a `shell` task; declared
//! `outputVariables` name shell variables whose final values become step outputs.

use dray_shared::expr::Context;
use dray_shared::task::kind;
use serde_json::{Map, Value, json};

use super::{
    StartContext, StepError, StepOutcome, StepStart, StepType, TaskOutcome, default_finish, str_field,
};

/// The `ShellScript` step type.
pub struct ShellScript;

/// `(output name, shell variable)` pairs of a spec.
fn output_variables(spec: &Value) -> Vec<(String, String)> {
    spec.get("outputVariables")
        .and_then(Value::as_array)
        .map(|vars| {
            vars.iter()
                .filter_map(|v| {
                    let name = v.get("name")?.as_str()?;
                    let var = v.get("value").and_then(Value::as_str).unwrap_or(name);
                    Some((name.to_string(), var.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl StepType for ShellScript {
    fn type_name(&self) -> &'static str {
        "ShellScript"
    }

    fn start(&self, spec: &Value, _cx: &StartContext<'_>) -> Result<StepStart, StepError> {
        let source = spec.get("source").ok_or_else(|| StepError("spec.source is required".into()))?;
        let script = source
            .get("spec")
            .map(|s| str_field(s, "script"))
            .transpose()?
            .ok_or_else(|| StepError("spec.source.spec.script is required".into()))?;
        let mut env = Map::new();
        for v in spec.get("environmentVariables").and_then(Value::as_array).into_iter().flatten() {
            let name = str_field(v, "name")?;
            let value = match v.get("value") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            env.insert(name.to_string(), Value::String(value));
        }
        let vars: Vec<String> = output_variables(spec).into_iter().map(|(_, var)| var).collect();
        let mut params = json!({ "script": script, "env": env });
        if !vars.is_empty() {
            params["output_vars"] = json!(vars);
        }
        Ok(StepStart::Task { kind: kind::SHELL.into(), params })
    }

    fn finish(&self, spec: &Value, task: &TaskOutcome<'_>, _ctx: &dyn Context) -> StepOutcome {
        default_finish(task, |outputs| {
            let vars: Map<String, Value> = output_variables(spec)
                .into_iter()
                .filter_map(|(name, var)| outputs.get(&var).map(|v| (name, Value::String(v.clone()))))
                .collect();
            let mut out = Map::new();
            out.insert("outputVariables".into(), Value::Object(vars));
            out
        })
    }
}
