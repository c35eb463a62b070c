//! `Http`: a request made by a delegate (`http` task). The delegate reports the
//! status and body; the manager then evaluates `assertion` and the
//! `outputVariables` expressions over `<+httpResponseCode>`,
//! `<+httpResponseBody>` and (when the body is JSON) `<+httpResponseJson…>`,
//! together with the usual execution expressions.

use dray_shared::expr::{Condition, Context, Template, Value as ExprValue};
use dray_shared::task::kind;
use serde_json::{Map, Value, json};

use super::{
    StartContext, StepError, StepOutcome, StepStart, StepType, TaskOutcome, default_finish, str_field,
};

/// The `Http` step type.
pub struct Http;

/// Resolves the response names first, then the execution's expressions.
struct ResponseContext<'a> {
    response: Value,
    outer: &'a dyn Context,
}

impl Context for ResponseContext<'_> {
    fn lookup(&self, path: &[&str]) -> Option<ExprValue> {
        match path.first() {
            Some(&("httpResponseCode" | "httpResponseBody" | "httpResponseJson" | "httpResponseHeaders")) => {
                let mut v = &self.response;
                for seg in path {
                    v = v.get(*seg)?;
                }
                Some(ExprValue::from_json(v))
            }
            _ => self.outer.lookup(path),
        }
    }
}

impl StepType for Http {
    fn type_name(&self) -> &'static str {
        "Http"
    }

    fn deferred_fields(&self) -> &'static [&'static str] {
        &["assertion", "outputVariables"]
    }

    fn start(&self, spec: &Value, _cx: &StartContext<'_>) -> Result<StepStart, StepError> {
        let url = str_field(spec, "url")?;
        let method = spec.get("method").and_then(Value::as_str).unwrap_or("GET").to_ascii_uppercase();
        let mut headers = Map::new();
        for h in spec.get("headers").and_then(Value::as_array).into_iter().flatten() {
            let key = str_field(h, "key")?;
            let value = h.get("value").and_then(Value::as_str).unwrap_or("");
            headers.insert(key.to_string(), Value::String(value.to_string()));
        }
        let mut params = json!({ "method": method, "url": url, "headers": headers });
        if let Some(body) = spec.get("requestBody").and_then(Value::as_str) {
            params["body"] = Value::String(body.to_string());
        }
        Ok(StepStart::Task { kind: kind::HTTP.into(), params })
    }

    fn finish(&self, spec: &Value, task: &TaskOutcome<'_>, ctx: &dyn Context) -> StepOutcome {
        if !task.succeeded {
            return default_finish(task, |_| Map::new());
        }
        let code: f64 = task.outputs.get("httpResponseCode").and_then(|c| c.parse().ok()).unwrap_or(0.0);
        let body = task.outputs.get("httpResponseBody").cloned().unwrap_or_default();
        let headers: Value = task
            .outputs
            .get("httpResponseHeaders")
            .and_then(|h| serde_json::from_str(h).ok())
            .unwrap_or(Value::Object(Map::new()));
        let body_json = serde_json::from_str::<Value>(&body).unwrap_or(Value::Null);
        let response = json!({
            "httpResponseCode": code,
            "httpResponseBody": body,
            "httpResponseJson": body_json,
            "httpResponseHeaders": headers,
        });
        let mut out = Map::new();
        out.insert("httpResponseCode".into(), json!(code as i64));
        out.insert("httpResponseBody".into(), Value::String(body));
        let rctx = ResponseContext { response, outer: ctx };
        let mut vars = Map::new();
        for v in spec.get("outputVariables").and_then(Value::as_array).into_iter().flatten() {
            let (Some(name), Some(expr)) = (v.get("name").and_then(Value::as_str), v.get("value")) else {
                continue;
            };
            let expr = expr.as_str().map(str::to_string).unwrap_or_else(|| expr.to_string());
            let value = Template::parse(&expr)
                .map_err(|e| e.to_string())
                .and_then(|t| t.eval(&rctx).map_err(|e| e.to_string()));
            match value {
                Ok(v) => {
                    vars.insert(name.to_string(), Value::String(v.to_display_string()));
                }
                Err(e) => {
                    out.insert("outputVariables".into(), Value::Object(vars));
                    return StepOutcome::Failure {
                        error_type: "Unknown".into(),
                        message: format!("output variable {name}: {e}"),
                        outputs: out,
                    };
                }
            }
        }
        out.insert("outputVariables".into(), Value::Object(vars));
        if let Some(assertion) =
            spec.get("assertion").and_then(Value::as_str).filter(|a| !a.trim().is_empty())
        {
            let verdict = Condition::parse(assertion)
                .map_err(|e| e.to_string())
                .and_then(|c| c.eval(&rctx).map_err(|e| e.to_string()));
            match verdict {
                Ok(true) => {}
                Ok(false) => {
                    return StepOutcome::Failure {
                        error_type: "Verification".into(),
                        message: format!("assertion {assertion:?} is false (HTTP {code})"),
                        outputs: out,
                    };
                }
                Err(e) => {
                    return StepOutcome::Failure {
                        error_type: "Unknown".into(),
                        message: format!("assertion {assertion:?}: {e}"),
                        outputs: out,
                    };
                }
            }
        }
        StepOutcome::Success(out)
    }
}
