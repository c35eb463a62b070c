//! The methods values answer to (`"a".toUpperCase()`, `list.length()`, …). Errors are plain
//! messages; the evaluator adds which expression failed.

use super::value::{Value, as_integer, loose_eq, parse_numeric};

/// Strings produced by methods and `+` may not exceed this many bytes, so a short
/// expression (`x.replace("", x).replace("", …)`) cannot exhaust memory.
pub(crate) const MAX_STRING_BYTES: usize = 8 << 20;

type Result<T> = std::result::Result<T, String>;

const STRING_METHODS: &str = "contains, startsWith, endsWith, toUpperCase, toLowerCase, trim, replace, \
     split, substring, length, equals, matches, toString, toNumber";
const LIST_METHODS: &str = "length, contains, equals, toString";
const MAP_METHODS: &str = "length, contains, equals, toString";
const OTHER_METHODS: &str = "equals, toString, toNumber";

/// A string result, refused when it is larger than [`MAX_STRING_BYTES`].
pub(crate) fn checked(s: String) -> Result<Value> {
    if s.len() > MAX_STRING_BYTES {
        return Err(too_long());
    }
    Ok(Value::String(s))
}

pub(crate) fn too_long() -> String {
    format!("result would be longer than {MAX_STRING_BYTES} bytes")
}

fn arity(name: &str, args: &[Value], n: usize) -> Result<()> {
    if args.len() == n {
        return Ok(());
    }
    let s = if n == 1 { "" } else { "s" };
    Err(format!("{name}() takes {n} argument{s}, got {}", args.len()))
}

fn string_arg<'v>(name: &str, v: &'v Value) -> Result<&'v str> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(format!("{name}() expects a string argument, got a {}", other.type_name())),
    }
}

fn index_arg(name: &str, v: &Value) -> Result<usize> {
    match v {
        Value::Number(n) if *n >= 0.0 => as_integer(*n)
            .and_then(|i| usize::try_from(i).ok())
            .ok_or_else(|| format!("{name}() expects a non-negative integer, got {n}")),
        other => Err(format!("{name}() expects a non-negative integer, got {}", other.to_display_string())),
    }
}

/// Calls method `name` on `recv`.
pub(crate) fn call(recv: Value, name: &str, args: Vec<Value>) -> Result<Value> {
    match name {
        "toString" => {
            arity(name, &args, 0)?;
            return checked(recv.to_display_string());
        }
        "equals" => {
            arity(name, &args, 1)?;
            return Ok(Value::Bool(loose_eq(&recv, &args[0])));
        }
        _ => {}
    }
    match recv {
        Value::String(s) => string_method(s, name, &args),
        Value::List(l) => match name {
            "length" => {
                arity(name, &args, 0)?;
                Ok(Value::Number(l.len() as f64))
            }
            "contains" => {
                arity(name, &args, 1)?;
                Ok(Value::Bool(l.iter().any(|v| loose_eq(v, &args[0]))))
            }
            _ => Err(unknown(name, "list", LIST_METHODS)),
        },
        Value::Map(m) => match name {
            "length" => {
                arity(name, &args, 0)?;
                Ok(Value::Number(m.len() as f64))
            }
            "contains" => {
                arity(name, &args, 1)?;
                Ok(Value::Bool(m.contains_key(string_arg(name, &args[0])?)))
            }
            _ => Err(unknown(name, "map", MAP_METHODS)),
        },
        Value::Number(n) if name == "toNumber" => {
            arity(name, &args, 0)?;
            Ok(Value::Number(n))
        }
        other => Err(unknown(name, other.type_name(), OTHER_METHODS)),
    }
}

fn unknown(name: &str, type_name: &str, methods: &str) -> String {
    format!("unknown method {name}() on a {type_name} (its methods are: {methods})")
}

fn string_method(s: String, name: &str, args: &[Value]) -> Result<Value> {
    let one = |args: &[Value]| -> Result<String> {
        arity(name, args, 1)?;
        string_arg(name, &args[0]).map(str::to_string)
    };
    Ok(match name {
        "contains" => Value::Bool(s.contains(one(args)?.as_str())),
        "startsWith" => Value::Bool(s.starts_with(one(args)?.as_str())),
        "endsWith" => Value::Bool(s.ends_with(one(args)?.as_str())),
        "toUpperCase" => {
            arity(name, args, 0)?;
            checked(s.to_uppercase())?
        }
        "toLowerCase" => {
            arity(name, args, 0)?;
            checked(s.to_lowercase())?
        }
        "trim" => {
            arity(name, args, 0)?;
            Value::String(s.trim().to_string())
        }
        "length" => {
            arity(name, args, 0)?;
            Value::Number(s.chars().count() as f64)
        }
        "replace" => {
            arity(name, args, 2)?;
            let (from, to) = (string_arg(name, &args[0])?, string_arg(name, &args[1])?);
            replace(&s, from, to)?
        }
        "split" => {
            let sep = one(args)?;
            let parts: Vec<Value> = if sep.is_empty() {
                s.chars().map(|c| Value::String(c.to_string())).collect()
            } else {
                s.split(sep.as_str()).map(Value::from).collect()
            };
            Value::List(parts)
        }
        "substring" => substring(&s, args)?,
        "matches" => Value::Bool(matches(&s, &one(args)?)?),
        "toNumber" => {
            arity(name, args, 0)?;
            Value::Number(parse_numeric(&s).ok_or_else(|| format!("{s:?} is not a number"))?)
        }
        _ => return Err(unknown(name, "string", STRING_METHODS)),
    })
}

/// Replaces every occurrence, checking the size before building the result.
fn replace(s: &str, from: &str, to: &str) -> Result<Value> {
    let count = if from.is_empty() { s.chars().count() + 1 } else { s.matches(from).count() };
    let len = count.saturating_mul(to.len()).saturating_add(s.len());
    if len.saturating_sub(count.saturating_mul(from.len())) > MAX_STRING_BYTES {
        return Err(too_long());
    }
    Ok(Value::String(s.replace(from, to)))
}

/// `substring(start[, end])` in characters, as in Java: `start <= end <= length`.
fn substring(s: &str, args: &[Value]) -> Result<Value> {
    if args.is_empty() || args.len() > 2 {
        return Err(format!("substring() takes 1 or 2 arguments, got {}", args.len()));
    }
    let len = s.chars().count();
    let start = index_arg("substring", &args[0])?;
    let end = match args.get(1) {
        Some(v) => index_arg("substring", v)?,
        None => len,
    };
    if start > end || end > len {
        return Err(format!("substring({start}, {end}) is out of range for a string of length {len}"));
    }
    Ok(Value::String(s.chars().skip(start).take(end - start).collect()))
}

/// Whether the whole of `s` matches the regular expression `pattern` (Java's
/// `String.matches`). The `regex` crate runs in linear time, so a pattern cannot hang us.
fn matches(s: &str, pattern: &str) -> Result<bool> {
    let build = |p: &str| {
        regex::RegexBuilder::new(p)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
    };
    // Validate the pattern on its own first: a valid pattern has balanced groups, so
    // wrapping it in `^(?:…)$` anchors it without changing what it means.
    build(pattern)?;
    Ok(build(&format!("^(?:{pattern})$"))?.is_match(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::from(v)
    }
    fn n(v: f64) -> Value {
        Value::Number(v)
    }
    fn call_ok(recv: Value, name: &str, args: Vec<Value>) -> Value {
        call(recv, name, args).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn string_methods() {
        assert_eq!(call_ok(s("hello"), "contains", vec![s("ell")]), Value::Bool(true));
        assert_eq!(call_ok(s("hello"), "contains", vec![s("x")]), Value::Bool(false));
        assert_eq!(call_ok(s("hello"), "startsWith", vec![s("he")]), Value::Bool(true));
        assert_eq!(call_ok(s("hello"), "startsWith", vec![s("lo")]), Value::Bool(false));
        assert_eq!(call_ok(s("hello"), "endsWith", vec![s("lo")]), Value::Bool(true));
        assert_eq!(call_ok(s("hello"), "endsWith", vec![s("he")]), Value::Bool(false));
        assert_eq!(call_ok(s("Héllo"), "toUpperCase", vec![]), s("HÉLLO"));
        assert_eq!(call_ok(s("HÉllo"), "toLowerCase", vec![]), s("héllo"));
        assert_eq!(call_ok(s("  a b \n"), "trim", vec![]), s("a b"));
        assert_eq!(call_ok(s("a-b-c"), "replace", vec![s("-"), s("+")]), s("a+b+c"));
        assert_eq!(call_ok(s("ab"), "replace", vec![s(""), s("-")]), s("-a-b-"));
        assert_eq!(
            call_ok(s("a,b,,c"), "split", vec![s(",")]),
            Value::List(vec![s("a"), s("b"), s(""), s("c")])
        );
        assert_eq!(call_ok(s("ñb"), "split", vec![s("")]), Value::List(vec![s("ñ"), s("b")]));
        assert_eq!(call_ok(s("héllo"), "substring", vec![n(1.0)]), s("éllo"));
        assert_eq!(call_ok(s("héllo"), "substring", vec![n(1.0), n(3.0)]), s("él"));
        assert_eq!(call_ok(s("abc"), "substring", vec![n(3.0)]), s(""));
        assert_eq!(call_ok(s("héllo"), "length", vec![]), n(5.0));
        assert_eq!(call_ok(s("abc"), "equals", vec![s("abc")]), Value::Bool(true));
        assert_eq!(call_ok(s("abc"), "equals", vec![s("abd")]), Value::Bool(false));
        assert_eq!(call_ok(s("7"), "equals", vec![n(7.0)]), Value::Bool(true));
        assert_eq!(call_ok(s("v1.2.3"), "matches", vec![s(r"v\d+\.\d+\.\d+")]), Value::Bool(true));
        assert_eq!(call_ok(s("xv1.2.3"), "matches", vec![s(r"v\d+\.\d+\.\d+")]), Value::Bool(false));
        // Anchoring applies to every alternative, not only the first and last.
        assert_eq!(call_ok(s("ab"), "matches", vec![s("a|b")]), Value::Bool(false));
        assert_eq!(call_ok(s("b"), "matches", vec![s("a|b")]), Value::Bool(true));
        assert_eq!(call_ok(s(" 42 "), "toNumber", vec![]), n(42.0));
        assert_eq!(call_ok(s("abc"), "toString", vec![]), s("abc"));
    }

    #[test]
    fn string_method_errors() {
        for (recv, name, args) in [
            (s("abc"), "substring", vec![n(2.0), n(1.0)]),
            (s("abc"), "substring", vec![n(4.0)]),
            (s("abc"), "substring", vec![n(-1.0)]),
            (s("abc"), "substring", vec![n(0.5)]),
            (s("abc"), "substring", vec![]),
            (s("abc"), "substring", vec![n(0.0), n(1.0), n(2.0)]),
            (s("abc"), "contains", vec![n(1.0)]),
            (s("abc"), "contains", vec![]),
            (s("abc"), "trim", vec![s("x")]),
            (s("abc"), "replace", vec![s("a")]),
            (s("abc"), "matches", vec![s("(")]),
            (s("abc"), "toNumber", vec![]),
            (s("abc"), "nope", vec![]),
        ] {
            assert!(call(recv.clone(), name, args.clone()).is_err(), "{recv:?}.{name}({args:?})");
        }
        let e = call(s("abc"), "nope", vec![]).unwrap_err();
        assert!(e.contains("unknown method nope() on a string"), "{e}");
    }

    #[test]
    fn list_map_and_other_methods() {
        let list = Value::List(vec![s("a"), n(2.0)]);
        assert_eq!(call_ok(list.clone(), "length", vec![]), n(2.0));
        assert_eq!(call_ok(list.clone(), "contains", vec![s("a")]), Value::Bool(true));
        assert_eq!(call_ok(list.clone(), "contains", vec![s("2")]), Value::Bool(true));
        assert_eq!(call_ok(list.clone(), "contains", vec![s("b")]), Value::Bool(false));
        assert_eq!(call_ok(list.clone(), "toString", vec![]), s(r#"["a",2]"#));
        assert!(call(list, "toUpperCase", vec![]).is_err());
        let map = Value::from_json(&serde_json::json!({"k": 1}));
        assert_eq!(call_ok(map.clone(), "length", vec![]), n(1.0));
        assert_eq!(call_ok(map.clone(), "contains", vec![s("k")]), Value::Bool(true));
        assert_eq!(call_ok(map.clone(), "contains", vec![s("x")]), Value::Bool(false));
        assert!(call(map, "contains", vec![n(1.0)]).is_err());
        assert_eq!(call_ok(n(3.0), "toString", vec![]), s("3"));
        assert_eq!(call_ok(n(3.5), "toNumber", vec![]), n(3.5));
        assert_eq!(call_ok(Value::Bool(true), "toString", vec![]), s("true"));
        assert_eq!(call_ok(Value::Null, "equals", vec![Value::Null]), Value::Bool(true));
        assert!(call(Value::Null, "length", vec![]).is_err());
        assert!(call(Value::Bool(true), "toNumber", vec![]).is_err());
    }

    #[test]
    fn results_are_bounded() {
        let big = "x".repeat(4096);
        let e = call(s(&big), "replace", vec![s(""), s(&big)]).unwrap_err();
        assert!(e.contains("longer than"), "{e}");
    }
}
