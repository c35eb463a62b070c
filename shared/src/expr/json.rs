//! Rendering every string inside a JSON document.

use super::{Context, EvalError, Template};

/// Renders every string inside a JSON value (object keys untouched) with `ctx`. A string
/// that fails to parse is an [`EvalError::Type`] whose `expr` is its JSON path
/// (`spec.url`, `spec.headers[0]`; `$` for the root).
pub fn render_json(v: &serde_json::Value, ctx: &dyn Context) -> Result<serde_json::Value, EvalError> {
    let mut path = String::new();
    render(v, ctx, &mut path)
}

fn render(
    v: &serde_json::Value,
    ctx: &dyn Context,
    path: &mut String,
) -> Result<serde_json::Value, EvalError> {
    use serde_json::Value as J;
    Ok(match v {
        J::String(s) => {
            let t = Template::parse(s).map_err(|e| {
                let at = if path.is_empty() { "$" } else { path.as_str() };
                EvalError::Type {
                    expr: at.to_string(),
                    message: format!("cannot parse the value of {at}: {e}"),
                }
            })?;
            if t.is_literal() { v.clone() } else { J::String(t.render(ctx)?) }
        }
        J::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                out.push(render(item, ctx, path)?);
                path.truncate(len);
            }
            J::Array(out)
        }
        J::Object(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, item) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                out.insert(k.clone(), render(item, ctx, path)?);
                path.truncate(len);
            }
            J::Object(out)
        }
        other => other.clone(),
    })
}
