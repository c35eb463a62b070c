//! Where paths get their values: the [`Context`] trait, a JSON-backed implementation, and
//! the prefix walk the evaluator uses when a context only knows part of a path.

use super::Value;

/// Resolves paths. `path` is the list of segments, e.g. `["pipeline","variables","greeting"]`.
///
/// Return `None` when the path does not exist. An implementation may return a `Map` (or
/// `List`) for a prefix and `None` for the full path: the evaluator then walks the remaining
/// segments itself, starting from the longest prefix that resolves.
pub trait Context {
    /// The value at `path`, or `None` when there is none.
    fn lookup(&self, path: &[&str]) -> Option<Value>;
}

/// A [`Context`] over a `serde_json` object: root keys are the path roots, object keys and
/// array indices (as decimal segments) walk down.
#[derive(Debug, Clone, Copy)]
pub struct JsonContext<'a>(pub &'a serde_json::Value);

impl Context for JsonContext<'_> {
    fn lookup(&self, path: &[&str]) -> Option<Value> {
        let mut node = self.0;
        for seg in path {
            node = match node {
                serde_json::Value::Object(m) => m.get(*seg)?,
                serde_json::Value::Array(a) => a.get(list_index(seg)?)?,
                _ => return None,
            };
        }
        Some(Value::from_json(node))
    }
}

/// A list index written as a path segment: plain decimal digits only, so "01" or "+1" are
/// not indices (they could only ever be map keys).
fn list_index(seg: &str) -> Option<usize> {
    if seg.is_empty() || !seg.bytes().all(|b| b.is_ascii_digit()) || (seg.len() > 1 && seg.starts_with('0')) {
        return None;
    }
    seg.parse().ok()
}

/// Resolves `path` through `ctx`: the full path first, else the longest prefix that resolves,
/// walked down by hand. `None` when no prefix resolves or the walk falls off the value.
pub(crate) fn resolve(ctx: &dyn Context, path: &[&str]) -> Option<Value> {
    if let Some(v) = ctx.lookup(path) {
        return Some(v);
    }
    for k in (1..path.len()).rev() {
        if let Some(v) = ctx.lookup(&path[..k]) {
            return walk(v, &path[k..]);
        }
    }
    None
}

/// Walks `rest` down a value: map keys, and decimal indices into lists.
fn walk(mut v: Value, rest: &[&str]) -> Option<Value> {
    for seg in rest {
        v = match v {
            Value::Map(mut m) => m.remove(*seg)?,
            Value::List(mut l) => {
                let i = list_index(seg)?;
                if i >= l.len() {
                    return None;
                }
                l.swap_remove(i)
            }
            _ => return None,
        };
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A context that only knows whole prefixes, to prove the evaluator walks the rest.
    struct PrefixOnly(serde_json::Value);
    impl Context for PrefixOnly {
        fn lookup(&self, path: &[&str]) -> Option<Value> {
            (path == ["pipeline"]).then(|| Value::from_json(&self.0))
        }
    }

    #[test]
    fn json_context_walks_objects_and_arrays() {
        let doc = json!({"a": {"b": [10, {"c": "x"}]}});
        let ctx = JsonContext(&doc);
        assert_eq!(ctx.lookup(&["a", "b", "0"]), Some(Value::Number(10.0)));
        assert_eq!(ctx.lookup(&["a", "b", "1", "c"]), Some(Value::from("x")));
        assert_eq!(ctx.lookup(&["a", "b", "2"]), None);
        assert_eq!(ctx.lookup(&["a", "b", "01"]), None);
        assert_eq!(ctx.lookup(&["a", "nope"]), None);
        assert_eq!(ctx.lookup(&["a", "b", "1", "c", "d"]), None);
    }

    #[test]
    fn resolve_walks_down_from_the_longest_prefix() {
        let ctx = PrefixOnly(json!({"variables": {"x": "1", "l": ["p", "q"]}}));
        assert_eq!(resolve(&ctx, &["pipeline", "variables", "x"]), Some(Value::from("1")));
        assert_eq!(resolve(&ctx, &["pipeline", "variables", "l", "1"]), Some(Value::from("q")));
        assert_eq!(resolve(&ctx, &["pipeline", "variables", "l", "2"]), None);
        assert_eq!(resolve(&ctx, &["pipeline", "variables", "nope"]), None);
        assert_eq!(resolve(&ctx, &["stage", "x"]), None);
    }
}
