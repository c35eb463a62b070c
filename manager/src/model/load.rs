//! Files → typed documents, or diagnostics (`file:line:col: field: message`).
//!
//! Every document of every file is read and checked on its own; one bad
//! document does not hide the problems of the others. Checks that need other
//! documents or the store are [`super::refs`]'s.

use std::collections::HashMap;
use std::fmt;

use serde_json::Value as Json;

use super::entities::{Entity, Kind};
use super::steps::StepTypes;
use super::validate::validate;
use super::yaml::{self, Loc, Node, Value, from_node, parse_document, split_documents};
use super::{Scope, validate::Problem};

/// One file handed to the loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Name used in diagnostics (the path the user gave).
    pub name: String,
    /// Its text.
    pub content: String,
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// File name.
    pub file: String,
    /// Line, from 1 (0 when unknown).
    pub line: u32,
    /// Column, from 1 (0 when unknown).
    pub column: u32,
    /// Field path, e.g. `pipeline.stages[1].stage.spec.service.serviceRef`; empty for syntax errors.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// A document that parsed and passed its own checks.
#[derive(Debug, Clone)]
pub struct Document {
    /// File it came from.
    pub file: String,
    /// Where it starts.
    pub loc: Loc,
    /// Kind.
    pub kind: Kind,
    /// Scope (defaults filled in).
    pub scope: Scope,
    /// The typed entity.
    pub entity: Entity,
    /// The document's own YAML text (without its `---` line).
    pub yaml: String,
    /// The document as JSON: `{"<kind>": {...}}`.
    pub json: Json,
    /// Its tree, with locations.
    pub root: Node,
    locations: HashMap<String, Loc>,
}

impl Document {
    /// Identifier.
    pub fn identifier(&self) -> &str {
        self.entity.meta().identifier
    }

    /// Display name.
    pub fn name(&self) -> &str {
        self.entity.meta().name
    }

    /// The inner object (`json[kind]`).
    pub fn inner_json(&self) -> &Json {
        self.json.get(self.kind.key()).unwrap_or(&self.json)
    }

    /// Where field `path` is; the nearest enclosing field when the path itself
    /// is absent (a missing optional field, say).
    pub fn locate(&self, path: &str) -> Loc {
        let mut p = path;
        loop {
            if let Some(loc) = self.locations.get(p) {
                return *loc;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.loc,
            }
        }
    }

    /// A diagnostic about `path` of this document.
    pub fn diagnostic(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        let loc = self.locate(path);
        Diagnostic {
            file: self.file.clone(),
            line: loc.line,
            column: loc.column,
            field: path.to_string(),
            message: message.into(),
        }
    }

    fn problem(&self, p: Problem) -> Diagnostic {
        let loc = p.loc.unwrap_or_else(|| self.locate(&p.path));
        Diagnostic {
            file: self.file.clone(),
            line: loc.line,
            column: loc.column,
            field: p.path,
            message: p.message,
        }
    }
}

/// What loading produced: the good documents and every problem found.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Documents that parsed and passed their own checks, in file order.
    pub documents: Vec<Document>,
    /// Problems, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// Documents with problems whose kind and identifier could still be read,
    /// with their JSON: references to them are not reported again as missing.
    pub rejected: Vec<(Scope, Kind, String, Json)>,
}

/// Stack for loading. Parsing and checking recurse once per nesting level and a
/// debug build spends tens of KiB of stack per level, so the caller's stack (2
/// MiB on a tokio worker) could overflow below the parser's depth limit (64).
/// Only the pages used are committed.
const LOAD_STACK: usize = 64 << 20;

/// Loads every document of every file (on a thread of its own with a large
/// stack, so the YAML depth limit is the limit, never the caller's stack).
pub fn load(files: &[SourceFile], step_types: &StepTypes) -> Loaded {
    with_large_stack(|| load_here(files, step_types))
}

/// Runs `f` on a thread with a [`LOAD_STACK`] stack and returns its result
/// (on this thread if no thread can be had: only pathological nesting needs the room).
pub(crate) fn with_large_stack<T: Send>(f: impl Fn() -> T + Sync) -> T {
    std::thread::scope(|s| {
        let spawned =
            std::thread::Builder::new().name("dray-load".into()).stack_size(LOAD_STACK).spawn_scoped(s, &f);
        match spawned {
            Ok(handle) => handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => f(),
        }
    })
}

fn load_here(files: &[SourceFile], step_types: &StepTypes) -> Loaded {
    let mut out = Loaded::default();
    for f in files {
        for raw in split_documents(&f.content) {
            match load_document(f, &raw, step_types) {
                Ok(Some(doc)) => out.documents.push(doc),
                Ok(None) => {}
                Err(Rejected { mut diagnostics, identity }) => {
                    out.diagnostics.append(&mut diagnostics);
                    out.rejected.extend(identity.map(|i| *i));
                }
            }
        }
    }
    let mut first: HashMap<(Scope, Kind, String), (String, Loc)> = HashMap::new();
    for doc in &out.documents {
        let key = (doc.scope.clone(), doc.kind, doc.identifier().to_string());
        if let Some((file, loc)) = first.get(&key) {
            let path = format!("{}.identifier", doc.kind);
            out.diagnostics.push(doc.diagnostic(
                &path,
                format!(
                    "{} {:?} is defined twice in this apply (first at {file}:{loc})",
                    doc.kind,
                    doc.identifier()
                ),
            ));
        } else {
            first.insert(key, (doc.file.clone(), doc.loc));
        }
    }
    out
}

fn diag(file: &str, loc: Loc, field: &str, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        line: loc.line,
        column: loc.column,
        field: field.to_string(),
        message: message.into(),
    }
}

/// A document that did not load: why, and who it was when that can be told.
struct Rejected {
    diagnostics: Vec<Diagnostic>,
    identity: Option<Box<(Scope, Kind, String, Json)>>,
}

impl From<Vec<Diagnostic>> for Rejected {
    fn from(diagnostics: Vec<Diagnostic>) -> Self {
        Rejected { diagnostics, identity: None }
    }
}

/// Kind, scope and identifier of a document read without its schema.
fn identity(kind: Kind, inner: &Node) -> Option<Box<(Scope, Kind, String, Json)>> {
    let id = inner.get("identifier")?.as_str()?;
    let part = |k: &str| inner.get(k).and_then(Node::as_str).unwrap_or_default();
    Some(Box::new((
        Scope::new(part("orgIdentifier"), part("projectIdentifier")),
        kind,
        id.to_string(),
        inner.to_json(),
    )))
}

fn load_document(
    f: &SourceFile,
    raw: &yaml::RawDoc<'_>,
    step_types: &StepTypes,
) -> Result<Option<Document>, Rejected> {
    let root = match parse_document(raw) {
        Ok(Some(root)) => root,
        Ok(None) => return Ok(None),
        Err(e) => return Err(vec![diag(&f.name, e.loc, "", e.message)].into()),
    };
    let Value::Map(entries) = &root.value else {
        return Err(vec![diag(
            &f.name,
            root.loc,
            "",
            format!(
                "a document is a mapping with one key naming its kind ({}); found {}",
                Kind::known(),
                root.value.kind()
            ),
        )]
        .into());
    };
    let Some((key, inner)) = entries.first() else {
        return Err(vec![diag(
            &f.name,
            root.loc,
            "",
            format!("empty document: expected one of {}", Kind::known()),
        )]
        .into());
    };
    let key_text = key.as_str().unwrap_or_default();
    let Some(kind) = Kind::from_key(key_text) else {
        return Err(vec![diag(
            &f.name,
            key.loc,
            key_text,
            format!("unknown kind `{key_text}`; known kinds: {}", Kind::known()),
        )]
        .into());
    };
    if let Some((second, _)) = entries.get(1) {
        let other = second.as_str().unwrap_or_default();
        return Err(vec![diag(
            &f.name,
            second.loc,
            other,
            format!(
                "one entity per document: found `{key_text}` and `{other}` (separate documents with ---)"
            ),
        )]
        .into());
    }
    let entity = parse_entity(kind, inner).map_err(|e| Rejected {
        diagnostics: vec![diag(&f.name, e.loc, &e.path, e.message)],
        identity: identity(kind, inner),
    })?;
    let meta = entity.meta();
    let scope = Scope::new(meta.org.unwrap_or_default(), meta.project.unwrap_or_default());
    let mut locations = HashMap::new();
    root.walk("", &mut |path, node| {
        locations.insert(path.to_string(), node.loc);
    });
    let yaml = match raw.text.strip_prefix("---") {
        Some(rest) => rest.split_once('\n').map(|(_, body)| body).unwrap_or_default(),
        None => raw.text,
    };
    let doc = Document {
        file: f.name.clone(),
        loc: root.loc,
        kind,
        scope,
        yaml: yaml.to_string(),
        json: root.to_json(),
        entity,
        root,
        locations,
    };
    let problems = validate(&doc.entity, &doc.root, &f.content, step_types);
    if problems.is_empty() {
        return Ok(Some(doc));
    }
    let identity =
        Some(Box::new((doc.scope.clone(), kind, doc.identifier().to_string(), doc.inner_json().clone())));
    Err(Rejected { diagnostics: problems.into_iter().map(|p| doc.problem(p)).collect(), identity })
}

/// Reads the typed entity of `kind` from its node.
fn parse_entity(kind: Kind, inner: &Node) -> Result<Entity, yaml::SchemaError> {
    let path = kind.key();
    Ok(match kind {
        Kind::Service => Entity::Service(from_node(inner, path)?),
        Kind::Environment => Entity::Environment(from_node(inner, path)?),
        Kind::InfrastructureDefinition => Entity::InfrastructureDefinition(from_node(inner, path)?),
        Kind::Connector => Entity::Connector(from_node(inner, path)?),
        Kind::Pipeline => Entity::Pipeline(Box::new(from_node(inner, path)?)),
        Kind::InputSet => Entity::InputSet(from_node(inner, path)?),
        Kind::OverlayInputSet => Entity::OverlayInputSet(from_node(inner, path)?),
        Kind::Trigger => Entity::Trigger(from_node(inner, path)?),
    })
}

/// Reads the typed entity of a stored document (`{"<kind>": {...}}`).
pub fn entity_from_json(kind: Kind, json: &Json) -> Result<Entity, yaml::SchemaError> {
    let inner = json.get(kind.key()).unwrap_or(json);
    parse_entity(kind, &Node::from_json(inner))
}
