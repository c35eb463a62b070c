//! Manifests: read (inline or files on the delegate), values merged, the
//! `{{ .Values.a.b }}` placeholders filled, and the YAML documents parsed into
//! objects ready to apply.
//!
//! Rendering is deliberately small: `<+…>` expressions are the manager's and
//! are rendered before the task is made; here only `{{ .Values.PATH }}` (a
//! dotted path into the merged values, a scalar) is replaced. Any other
//! `{{ … }}` (pipelines, functions, `range`…) is refused with the manifest and
//! the placeholder named, rather than applied half-rendered.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};

use super::errors::K8sError;

/// Label on everything a release applies, and on its pods.
pub const RELEASE_LABEL: &str = "dray.io/release";

/// A manifest document's text with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    /// `identifier` or `identifier:path`.
    pub origin: String,
    /// YAML, one or more documents.
    pub text: String,
}

/// The files `path` names: itself, or a directory's `.yaml`/`.yml` files sorted.
pub fn files_of(path: &str) -> Result<Vec<PathBuf>, K8sError> {
    let p = Path::new(path);
    let meta = std::fs::metadata(p).map_err(|e| K8sError::Manifest(format!("{path}: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![p.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(p)
        .map_err(|e| K8sError::Manifest(format!("{path}: {e}")))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Merges `top` into `base`: maps key by key, anything else replaced.
pub fn merge(base: &mut Json, top: Json) {
    match (base, top) {
        (Json::Object(b), Json::Object(t)) => {
            for (k, v) in t {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, top) => *slot = top,
    }
}

/// The values documents merged in order (later ones win).
pub fn values(texts: &[Text]) -> Result<Json, K8sError> {
    let mut out = Json::Object(Map::new());
    for t in texts {
        for doc in parse_yaml(t)? {
            match doc {
                Json::Null => {}
                Json::Object(_) => merge(&mut out, doc),
                _ => return Err(K8sError::Manifest(format!("values {}: not a map of values", t.origin))),
            }
        }
    }
    Ok(out)
}

fn parse_yaml(t: &Text) -> Result<Vec<Json>, K8sError> {
    serde_saphyr::from_multiple::<Json>(&t.text)
        .map_err(|e| K8sError::Manifest(format!("{}: invalid YAML: {e}", t.origin)))
}

/// `text` with every `{{ .Values.PATH }}` replaced from `values`.
pub fn render(t: &Text, values: &Json) -> Result<String, K8sError> {
    let text = &t.text;
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| K8sError::Manifest(format!("{}: unclosed {{{{ placeholder", t.origin)))?;
        let inner = after[..end].trim();
        let path = inner.strip_prefix(".Values.").filter(|p| {
            !p.is_empty()
                && p.split('.')
                    .all(|s| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-'))
        });
        let Some(path) = path else {
            return Err(K8sError::Manifest(format!(
                "{}: unsupported placeholder {{{{ {inner} }}}} (only {{{{ .Values.name }}}} is rendered)",
                t.origin
            )));
        };
        let mut v = values;
        for seg in path.split('.') {
            v = v.get(seg).ok_or_else(|| {
                K8sError::Manifest(format!("{}: {{{{ .Values.{path} }}}} has no value", t.origin))
            })?;
        }
        match v {
            Json::String(s) => out.push_str(s),
            Json::Number(n) => out.push_str(&n.to_string()),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            _ => {
                return Err(K8sError::Manifest(format!(
                    "{}: {{{{ .Values.{path} }}}} is not a single value (string, number or boolean)",
                    t.origin
                )));
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One object to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// The whole object.
    pub body: Json,
}

impl Object {
    /// Wraps a JSON object; refuses one without apiVersion, kind or metadata.name.
    pub fn new(body: Json, origin: &str) -> Result<Self, K8sError> {
        let o = Object { body };
        for (what, v) in [("apiVersion", o.api_version()), ("kind", o.kind()), ("metadata.name", o.name())] {
            if v.is_empty() {
                return Err(K8sError::Manifest(format!("{origin}: a document has no {what}")));
            }
        }
        Ok(o)
    }

    fn str_at(&self, pointer: &str) -> &str {
        self.body.pointer(pointer).and_then(Json::as_str).unwrap_or("")
    }

    /// `apps/v1`.
    pub fn api_version(&self) -> &str {
        self.str_at("/apiVersion")
    }

    /// `Deployment`.
    pub fn kind(&self) -> &str {
        self.str_at("/kind")
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.str_at("/metadata/name")
    }

    /// `metadata.namespace`, if set.
    pub fn namespace(&self) -> Option<&str> {
        Some(self.str_at("/metadata/namespace")).filter(|s| !s.is_empty())
    }

    /// `Kind/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind(), self.name())
    }

    /// Is this a Deployment?
    pub fn is_deployment(&self) -> bool {
        self.kind() == "Deployment" && self.api_version() == "apps/v1"
    }

    /// Sets `metadata.name`.
    pub fn set_name(&mut self, name: &str) {
        self.body["metadata"]["name"] = Json::String(name.to_string());
    }

    /// Adds a label to `metadata.labels`.
    pub fn add_label(&mut self, key: &str, value: &str) {
        set_in(&mut self.body, &["metadata", "labels"], key, value);
    }

    /// Adds a label to the pod template, and to the selector when `select` is set
    /// (workloads only).
    pub fn add_pod_label(&mut self, key: &str, value: &str, select: bool) {
        if self.body.pointer("/spec/template").is_some() {
            set_in(&mut self.body, &["spec", "template", "metadata", "labels"], key, value);
            if select {
                set_in(&mut self.body, &["spec", "selector", "matchLabels"], key, value);
            }
        }
    }

    /// `spec.replicas` (1 when unset, as the API server defaults it).
    pub fn replicas(&self) -> u32 {
        self.body.pointer("/spec/replicas").and_then(Json::as_u64).map_or(1, |n| n as u32)
    }
}

/// Sets `obj[path...][key] = value`, creating maps on the way.
fn set_in(obj: &mut Json, path: &[&str], key: &str, value: &str) {
    let mut cur = obj;
    for seg in path {
        if !cur.get(*seg).is_some_and(Json::is_object) {
            cur[*seg] = Json::Object(Map::new());
        }
        cur = &mut cur[*seg];
    }
    cur[key] = Json::String(value.to_string());
}

/// Every object of the rendered `text`, in document order (a `List` gives its items).
pub fn parse(origin: &str, text: &str) -> Result<Vec<Object>, K8sError> {
    let docs = parse_yaml(&Text { origin: origin.to_string(), text: text.to_string() })?;
    let mut out = Vec::new();
    for doc in docs {
        match doc {
            Json::Null => {}
            Json::Object(ref m)
                if m.get("kind").and_then(Json::as_str).is_some_and(|k| k.ends_with("List")) =>
            {
                for item in m.get("items").and_then(Json::as_array).into_iter().flatten() {
                    out.push(Object::new(item.clone(), origin)?);
                }
            }
            Json::Object(_) => out.push(Object::new(doc, origin)?),
            _ => return Err(K8sError::Manifest(format!("{origin}: a document is not a map"))),
        }
    }
    Ok(out)
}

/// Renders and parses every manifest, labelling each object with the release.
pub fn objects(manifests: &[Text], values: &Json, release: &str) -> Result<Vec<Object>, K8sError> {
    let mut out = Vec::new();
    for t in manifests {
        let rendered = render(t, values)?;
        for mut o in parse(&t.origin, &rendered)? {
            o.add_label(RELEASE_LABEL, release);
            o.add_pod_label(RELEASE_LABEL, release, false);
            out.push(o);
        }
    }
    let mut seen = std::collections::HashSet::new();
    for o in &out {
        if !seen.insert((o.api_version().to_string(), o.key(), o.namespace().map(str::to_string))) {
            return Err(K8sError::Manifest(format!("{} is described twice in the manifests", o.key())));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(t: &str) -> Text {
        Text { origin: "m".into(), text: t.into() }
    }

    #[test]
    fn values_merge_and_placeholders_render() {
        let v =
            values(&[text("image: a\nreplicas: 2\nnested: {x: 1, y: 2}"), text("nested: {y: 3}\nimage: b")])
                .unwrap();
        assert_eq!(v, json!({"image": "b", "replicas": 2, "nested": {"x": 1, "y": 3}}));
        let r = render(
            &text("image: {{ .Values.image }}\nn: {{.Values.nested.y}}\nr: {{ .Values.replicas }}"),
            &v,
        )
        .unwrap();
        assert_eq!(r, "image: b\nn: 3\nr: 2");
        let e = render(&text("x: {{ .Values.missing }}"), &v).unwrap_err();
        assert_eq!(e.to_string(), "m: {{ .Values.missing }} has no value");
        let e = render(&text("x: {{ .Values.nested }}"), &v).unwrap_err();
        assert!(e.to_string().contains("not a single value"), "{e}");
        let e = render(&text("x: {{ include \"a\" . }}"), &v).unwrap_err();
        assert!(e.to_string().contains("unsupported placeholder {{ include \"a\" . }}"), "{e}");
        assert!(render(&text("x: {{ .Values.a"), &v).unwrap_err().to_string().contains("unclosed"));
    }

    #[test]
    fn documents_parse_into_labelled_objects() {
        let m = text(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n---\n# only a comment\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Service, metadata: {name: web}}\n",
        );
        let objs = objects(&[m], &json!({}), "rel").unwrap();
        assert_eq!(objs.iter().map(Object::key).collect::<Vec<_>>(), ["Deployment/web", "Service/web"]);
        assert_eq!(objs[0].replicas(), 3);
        assert_eq!(objs[0].body["metadata"]["labels"], json!({RELEASE_LABEL: "rel"}));
        assert_eq!(
            objs[0].body["spec"]["template"]["metadata"]["labels"],
            json!({"app": "web", RELEASE_LABEL: "rel"})
        );
        assert_eq!(
            objs[0].body["spec"]["selector"],
            json!({"matchLabels": {"app": "web"}}),
            "selector untouched"
        );
        assert!(objs[1].body.pointer("/spec/template").is_none());

        let e = objects(&[text("kind: ConfigMap\nmetadata: {name: a}")], &json!({}), "r").unwrap_err();
        assert_eq!(e.to_string(), "m: a document has no apiVersion");
        let twice = text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}",
        );
        assert!(objects(&[twice], &json!({}), "r").unwrap_err().to_string().contains("twice"));
        assert!(
            objects(&[text("a: [")], &json!({}), "r").unwrap_err().to_string().starts_with("m: invalid YAML")
        );
    }
}
