//! JSON or YAML definitions as users write them (camelCase fields, as AWS
//! writes them): parsed to a value, secret references in string values resolved
//! through the run context (so each value is masked from then on), then read
//! into a typed definition. Errors name the document and the field path
//! (`taskDefinition.containerDefinitions[0].portMappings[0].containerPort`).

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::AwsError;
use crate::targets::RunContext;

/// Parses `text` (JSON, or YAML when it does not parse as JSON) into a value.
pub fn parse_value(name: &str, text: &str) -> Result<Value, AwsError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return serde_json::from_str(text).map_err(|e| AwsError::other(format!("{name}: invalid JSON: {e}")));
    }
    serde_saphyr::from_str::<Value>(text).map_err(|e| AwsError::other(format!("{name}: invalid YAML: {e}")))
}

/// Reads a typed definition from `value`, naming the field on error.
pub fn typed<T: DeserializeOwned>(name: &str, value: Value) -> Result<T, AwsError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { name.to_string() } else { format!("{name}.{path}") };
        AwsError::other(format!("{at}: {}", e.into_inner()))
    })
}

/// Resolves secret references in every string of `value`; `path` names it.
pub async fn substitute(cx: &mut RunContext, path: String, value: &mut Value) -> Result<(), AwsError> {
    // An explicit stack instead of recursion: async recursion needs boxing.
    let mut stack: Vec<(String, &mut Value)> = vec![(path, value)];
    while let Some((p, v)) = stack.pop() {
        match v {
            Value::String(s) if s.contains("<+") => {
                *s = cx.substitute(&p, s).await.map_err(|e| AwsError::other(e.to_string()))?;
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    stack.push((format!("{p}[{i}]"), item));
                }
            }
            Value::Object(m) => {
                for (k, item) in m.iter_mut() {
                    stack.push((format!("{p}.{k}"), item));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Parses, resolves secrets in and reads the document `name`.
pub async fn read<T: DeserializeOwned>(cx: &mut RunContext, name: &str, text: &str) -> Result<T, AwsError> {
    let mut value = parse_value(name, text)?;
    substitute(cx, name.to_string(), &mut value).await?;
    typed(name, value)
}

/// Reads the document `name` without resolving secrets (for names and ids
/// taken from it, where a reference has no place).
pub fn read_plain<T: DeserializeOwned>(name: &str, text: &str) -> Result<T, AwsError> {
    typed(name, parse_value(name, text)?)
}

/// A number that users write as `256` or `"256"` (AWS takes task cpu and
/// memory as strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberText(pub String);

impl<'de> serde::Deserialize<'de> for NumberText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(NumberText(s)),
            Value::Number(n) => Ok(NumberText(n.to_string())),
            other => Err(serde::de::Error::custom(format!("expected a number or a string, found {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::testing::context;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Doc {
        family: String,
        #[serde(default)]
        items: Vec<Item>,
        #[serde(default)]
        cpu: Option<NumberText>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Item {
        port: i32,
        #[serde(default)]
        value: String,
    }

    #[tokio::test]
    async fn json_and_yaml_read_with_secrets_resolved() {
        let (mut cx, _o, _s) = context(&[("PW", "hunter2")]);
        let d: Doc = read(&mut cx, "doc", "{\"family\": \"web\", \"cpu\": 256}").await.unwrap();
        assert_eq!((d.family.as_str(), d.cpu), ("web", Some(NumberText("256".into()))));
        let y = "family: web\ncpu: \"512\"\nitems:\n  - port: 80\n    value: pw=<+secrets.getValue(\"env:PW\")>\n";
        let d: Doc = read(&mut cx, "doc", y).await.unwrap();
        assert_eq!((d.items[0].port, d.items[0].value.as_str()), (80, "pw=hunter2"));
        assert_eq!(cx.masker().mask("hunter2"), crate::secrets::mask::MASK, "resolved values are masked");
    }

    #[tokio::test]
    async fn errors_name_the_document_and_field() {
        let (mut cx, _o, _s) = context(&[]);
        for (text, needle) in [
            ("family: web\nitems:\n  - port: eighty\n", "doc.items[0].port: invalid type"),
            ("family: web\nitemz: []\n", "doc.itemz: unknown field `itemz`"),
            ("{\"family\": ", "doc: invalid JSON"),
            ("family: [unclosed", "doc: invalid YAML"),
            ("items: []", "missing field `family`"),
            ("family: web\ncpu: [1]\n", "doc.cpu: expected a number or a string"),
            ("family: <+secrets.getValue(\"env:NOPE\")>", "NOPE"),
        ] {
            let e = read::<Doc>(&mut cx, "doc", text).await.unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
