//! The dynamically typed [`Value`] expressions compute, how it renders into text, and the
//! equality and ordering rules the comparison operators use.

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// A dynamically typed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// The absence of a value (JSON `null`, the literal `null`).
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// Every number is a double, as in JSON.
    Number(f64),
    /// A text string.
    String(String),
    /// An ordered list.
    List(Vec<Value>),
    /// A map with string keys.
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// Truthiness, for `!`, `&&`, `||` and conditions: `null`, `false`, `""` and `0` are false,
    /// everything else (including the string `"false"` and empty lists) is true.
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => *n != 0.0 && !n.is_nan(),
            Value::String(s) => !s.is_empty(),
            Value::List(_) | Value::Map(_) => true,
        }
    }

    /// How a value renders into text: strings as themselves, numbers without ".0" when
    /// integral, `null`/`true`/`false` as words, lists and maps as compact JSON.
    pub fn to_display_string(&self) -> String {
        match self {
            Value::Null => "null".to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => format_number(*n),
            Value::String(s) => s.clone(),
            Value::List(_) | Value::Map(_) => self.to_json().to_string(),
        }
    }

    /// Converts a JSON value; every number becomes a double.
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(a) => Value::List(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => {
                Value::Map(o.iter().map(|(k, v)| (k.clone(), Value::from_json(v))).collect())
            }
        }
    }

    /// Converts to JSON: integral numbers become JSON integers, non-finite numbers `null`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => match as_integer(*n) {
                Some(i) => serde_json::Value::from(i),
                None => serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, Into::into),
            },
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::List(l) => serde_json::Value::Array(l.iter().map(Value::to_json).collect()),
            Value::Map(m) => {
                serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// The type's name as error messages show it.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Value::Number(n)
    }
}

/// Integers beyond 2^53 are not exact in a double, so only smaller ones print as integers.
const MAX_EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// `n` as an integer when it is integral and exactly representable.
pub(crate) fn as_integer(n: f64) -> Option<i64> {
    (n.fract() == 0.0 && n.abs() <= MAX_EXACT_INT).then_some(n as i64)
}

fn format_number(n: f64) -> String {
    match as_integer(n) {
        Some(i) => i.to_string(),
        None => n.to_string(),
    }
}

/// Parses a string that holds a decimal number (`12`, `-3.5`, ` 1e3 `; surrounding
/// whitespace allowed). Words such as `inf` or `NaN` that `f64::from_str` accepts are not
/// numbers here.
pub(crate) fn parse_numeric(s: &str) -> Option<f64> {
    let t = s.trim();
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    let mantissa = digits.split(['e', 'E']).next().unwrap_or("");
    let ok_chars =
        digits.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if !ok_chars || !mantissa.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// `==` semantics: a number equals a string holding the same number (`"200" == 200`);
/// otherwise values of different types are unequal, and same-typed values compare
/// structurally.
pub(crate) fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::String(s)) | (Value::String(s), Value::Number(x)) => {
            parse_numeric(s).is_some_and(|y| y == *x)
        }
        _ => a == b,
    }
}

/// `<`, `<=`, `>`, `>=` semantics: numbers numerically, strings lexicographically (by
/// Unicode scalar value), a number and a numeric string numerically. Anything else is an
/// error message.
pub(crate) fn order(a: &Value, b: &Value) -> Result<Ordering, String> {
    let numbers = match (a, b) {
        (Value::String(x), Value::String(y)) => return Ok(x.cmp(y)),
        (Value::Number(x), Value::Number(y)) => Some((*x, *y)),
        (Value::Number(x), Value::String(s)) => parse_numeric(s).map(|y| (*x, y)),
        (Value::String(s), Value::Number(y)) => parse_numeric(s).map(|x| (x, *y)),
        _ => None,
    };
    let cannot = || format!("cannot order a {} and a {}", a.type_name(), b.type_name());
    let (x, y) = numbers.ok_or_else(|| match (a, b) {
        (Value::String(s), _) | (_, Value::String(s)) => format!("cannot compare a number with {s:?}"),
        _ => cannot(),
    })?;
    x.partial_cmp(&y).ok_or_else(cannot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn truthiness() {
        for falsy in
            [Value::Null, Value::Bool(false), Value::from(""), Value::Number(0.0), Value::Number(-0.0)]
        {
            assert!(!falsy.is_truthy(), "{falsy:?}");
        }
        for truthy in [
            Value::Bool(true),
            Value::from("false"),
            Value::from("0"),
            Value::Number(0.5),
            Value::List(vec![]),
            Value::Map(BTreeMap::new()),
        ] {
            assert!(truthy.is_truthy(), "{truthy:?}");
        }
    }

    #[test]
    fn display_strings() {
        assert_eq!(Value::Number(3.0).to_display_string(), "3");
        assert_eq!(Value::Number(-3.0).to_display_string(), "-3");
        assert_eq!(Value::Number(2.5).to_display_string(), "2.5");
        assert_eq!(Value::Number(1e300).to_display_string(), 1e300.to_string());
        assert_eq!(Value::Null.to_display_string(), "null");
        assert_eq!(Value::Bool(true).to_display_string(), "true");
        assert_eq!(Value::from("a b").to_display_string(), "a b");
        let v = Value::from_json(&json!({"b": [1, "x", null], "a": 1.5}));
        assert_eq!(v.to_display_string(), r#"{"a":1.5,"b":[1,"x",null]}"#);
    }

    #[test]
    fn json_round_trip() {
        let j = json!({"a": [1, 2.5, "s", true, null, {"b": {}}], "n": -7});
        assert_eq!(Value::from_json(&j).to_json(), j);
        assert_eq!(Value::Number(f64::NAN).to_json(), serde_json::Value::Null);
    }

    #[test]
    fn numeric_strings() {
        for (s, n) in [("12", 12.0), (" -3.5 ", -3.5), ("1e3", 1000.0), ("+2", 2.0), ("0.5", 0.5)] {
            assert_eq!(parse_numeric(s), Some(n), "{s}");
        }
        for s in ["", "inf", "NaN", "infinity", "1a", "e5", ".", "-", "1 2", "0x10"] {
            assert_eq!(parse_numeric(s), None, "{s}");
        }
    }

    #[test]
    fn equality_and_order() {
        assert!(loose_eq(&Value::from("200"), &Value::Number(200.0)));
        assert!(loose_eq(&Value::Number(200.0), &Value::from("200.0")));
        assert!(!loose_eq(&Value::from("abc"), &Value::Number(1.0)));
        assert!(!loose_eq(&Value::from("true"), &Value::Bool(true)));
        assert!(loose_eq(&Value::Null, &Value::Null));
        assert!(!loose_eq(&Value::Null, &Value::from("")));
        assert_eq!(order(&Value::from("10"), &Value::Number(9.0)), Ok(Ordering::Greater));
        assert_eq!(order(&Value::from("10"), &Value::from("9")), Ok(Ordering::Less));
        assert!(order(&Value::from("x"), &Value::Number(9.0)).is_err());
        assert!(order(&Value::Bool(true), &Value::Bool(false)).is_err());
        assert!(order(&Value::Number(f64::NAN), &Value::Number(1.0)).is_err());
    }
}
