//! A YAML tree that remembers where every node came from.
//!
//! Files are split into documents at `---` lines (YAML forbids a document marker
//! inside content at column 0, so this split is exact) and each document is parsed
//! on its own: a broken document does not hide the diagnostics of the others, the
//! document's own text can be stored for `describe`, and every location is made
//! relative to the file, not the document.
//!
//! Typed schemas are then read from a [`Node`] through [`from_node`], a serde
//! deserializer that knows the path and location of the node it is reading, so a
//! schema error (unknown field, wrong type, missing field) names both. The same
//! deserializer reads stored JSON (via [`Node::from_json`], locations unknown).

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde_json::Value as Json;
use serde_saphyr::Spanned;

/// A 1-based line and column in a file; `0:0` when unknown (data not read from YAML).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub struct Loc {
    /// Line, from 1.
    pub line: u32,
    /// Column in characters, from 1.
    pub column: u32,
}

impl Loc {
    /// A location.
    pub const fn new(line: u32, column: u32) -> Self {
        Loc { line, column }
    }

    /// True for the location of data that did not come from YAML text.
    pub fn is_unknown(&self) -> bool {
        self.line == 0
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One node of a parsed document.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts (for a block scalar, where its content starts).
    pub loc: Loc,
    /// Byte offset of the node's source text in the file, when known.
    pub byte: Option<usize>,
    /// The value.
    pub value: Value,
}

/// The value of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits i64.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping in source order; keys are string nodes.
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// What kind of value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// A node without a known location.
    pub fn unlocated(value: Value) -> Node {
        Node { loc: Loc::default(), byte: None, value }
    }

    /// The string, when this is a string node.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value of key `k`, when this is a mapping that has it.
    pub fn get(&self, k: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(key, _)| key.as_str() == Some(k)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The tree of a JSON value (locations unknown).
    pub fn from_json(v: &Json) -> Node {
        Node::unlocated(match v {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => Value::Str(s.clone()),
            Json::Array(a) => Value::Seq(a.iter().map(Node::from_json).collect()),
            Json::Object(m) => {
                // `type` first: serde reads an adjacently tagged enum (`type` + `spec`)
                // without buffering only when the tag comes first, and buffering
                // loses the path of errors inside `spec`. JSON maps are sorted.
                let (tags, rest): (Vec<_>, Vec<_>) = m.iter().partition(|(k, _)| *k == "type");
                Value::Map(
                    tags.into_iter()
                        .chain(rest)
                        .map(|(k, v)| (Node::unlocated(Value::Str(k.clone())), Node::from_json(v)))
                        .collect(),
                )
            }
        })
    }

    /// The JSON of this tree. Non-finite floats (`.nan`, `.inf`) become their YAML text.
    pub fn to_json(&self) -> Json {
        match &self.value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => Json::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(Json::Number)
                .unwrap_or_else(|| Json::String(f.to_string())),
            Value::Str(s) => Json::String(s.clone()),
            Value::Seq(items) => Json::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => Json::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// Calls `f(path, node)` for this node and every node below it, parents first.
    /// Paths look like `pipeline.stages[0].stage.name`.
    pub fn walk<'a>(&'a self, path: &str, f: &mut dyn FnMut(&str, &'a Node)) {
        f(path, self);
        match &self.value {
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    item.walk(&index_path(path, i), f);
                }
            }
            Value::Map(entries) => {
                for (k, v) in entries {
                    v.walk(&field_path(path, k.as_str().unwrap_or_default()), f);
                }
            }
            _ => {}
        }
    }
}

/// `parent.field` (or `field` at the root).
pub fn field_path(parent: &str, field: &str) -> String {
    if parent.is_empty() { field.to_string() } else { format!("{parent}.{field}") }
}

/// `parent[i]`.
pub fn index_path(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// One `---`-separated document of a file, not yet parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawDoc<'a> {
    /// The document's text (including its leading `---` line, if any).
    pub text: &'a str,
    /// Lines of the file before this document.
    pub line_offset: u32,
    /// Bytes of the file before this document.
    pub byte_offset: usize,
}

/// Splits a file into documents at lines starting with `---` (followed by nothing,
/// a space or a tab). The first document may lack the marker.
pub fn split_documents(text: &str) -> Vec<RawDoc<'_>> {
    let mut docs = Vec::new();
    let (mut start_byte, mut start_line) = (0usize, 0u32);
    let (mut byte, mut line) = (0usize, 0u32);
    for l in text.split_inclusive('\n') {
        let is_marker = l
            .strip_prefix("---")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\n', '\r']));
        if is_marker && byte > start_byte {
            docs.push(RawDoc {
                text: &text[start_byte..byte],
                line_offset: start_line,
                byte_offset: start_byte,
            });
            (start_byte, start_line) = (byte, line);
        }
        byte += l.len();
        line += 1;
    }
    if byte > start_byte || docs.is_empty() {
        docs.push(RawDoc { text: &text[start_byte..], line_offset: start_line, byte_offset: start_byte });
    }
    docs
}

/// Malformed YAML: the parser's message and location (file-relative).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{loc}: {message}")]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub loc: Loc,
    /// What it said.
    pub message: String,
}

/// Deepest nesting accepted; real documents stay far below it.
pub const MAX_DEPTH: usize = 64;

/// Parses one document; `Ok(None)` for an empty one (only comments or nothing).
pub fn parse_document(doc: &RawDoc<'_>) -> Result<Option<Node>, SyntaxError> {
    let options = serde_saphyr::options! {
        // YAML 1.2 spellings only: `yes`, `on`, `0755`, `1_000` stay strings.
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        with_snippet: false,
        budget: serde_saphyr::budget! { max_depth: MAX_DEPTH },
    };
    match serde_saphyr::from_str_with_options::<Option<Spanned<Raw>>>(doc.text, options) {
        Ok(None) => Ok(None),
        Ok(Some(raw)) => {
            let node = convert(raw, doc);
            Ok(match node.value {
                Value::Null => None,
                _ => Some(node),
            })
        }
        Err(e) => {
            let loc = e
                .location()
                .map(|l| file_loc(l.line(), l.column(), doc.line_offset))
                .unwrap_or(Loc::new(doc.line_offset + 1, 1));
            let mut message = e.without_snippet().to_string();
            // The parser appends its own (document-relative) position; ours replaces it.
            if let Some(at) = message.rfind(" at line ") {
                message.truncate(at);
            }
            if message.contains("Depth {") || message.contains("recursion limit") {
                message = format!("nested too deeply (at most {MAX_DEPTH} levels)");
            }
            Err(SyntaxError { loc, message })
        }
    }
}

/// A parser position (document-relative, u64) as a file location.
fn file_loc(line: u64, column: u64, line_offset: u32) -> Loc {
    let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    Loc::new(clamp(line).saturating_add(line_offset), clamp(column))
}

fn convert(raw: Spanned<Raw>, doc: &RawDoc<'_>) -> Node {
    let l = raw.referenced;
    let loc = file_loc(l.line(), l.column(), doc.line_offset);
    let byte = l.span().byte_offset().and_then(|b| usize::try_from(b).ok()).map(|b| b + doc.byte_offset);
    let value = match raw.value {
        Raw::Null => Value::Null,
        Raw::Bool(b) => Value::Bool(b),
        Raw::Int(i) => Value::Int(i),
        Raw::UInt(u) => i64::try_from(u).map(Value::Int).unwrap_or(Value::Float(u as f64)),
        Raw::Float(f) => Value::Float(f),
        Raw::Str(s) => Value::Str(s),
        Raw::Seq(items) => Value::Seq(items.into_iter().map(|i| convert(i, doc)).collect()),
        Raw::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let mut key = convert(k, doc);
                    key.value = Value::Str(scalar_text(&key.value));
                    (key, convert(v, doc))
                })
                .collect(),
        ),
    };
    Node { loc, byte, value }
}

/// The text of a scalar key (`1:`, `true:`); complex keys become their JSON.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        other => Node::unlocated(other.clone()).to_json().to_string(),
    }
}

/// What the YAML parser hands us, before locations are made file-relative.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

impl<'de> serde::Deserialize<'de> for Raw {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl<'de> Visitor<'de> for RawVisitor {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
                <Raw as serde::Deserialize>::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
                Ok(Raw::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
                Ok(Raw::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
                Ok(Raw::UInt(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
                Ok(Raw::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Raw, E> {
                Ok(Raw::Str(v))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Raw::Seq(items))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = a.next_entry()? {
                    entries.push(entry);
                }
                Ok(Raw::Map(entries))
            }
        }
        d.deserialize_any(RawVisitor)
    }
}

/// A schema error while reading a typed value from a [`Node`]: the path and
/// location of the offending node, and serde's message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SchemaError {
    /// Field path (e.g. `pipeline.stages[0].stage.type`).
    pub path: String,
    /// Where that node is.
    pub loc: Loc,
    /// What is wrong.
    pub message: String,
    /// Set once the innermost node has claimed the error.
    located: bool,
}

impl de::Error for SchemaError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        SchemaError { path: String::new(), loc: Loc::default(), message: msg.to_string(), located: false }
    }
}

impl SchemaError {
    /// Claims the error for a node unless a deeper node already did.
    fn at(mut self, path: &str, loc: Loc) -> Self {
        if !self.located {
            self.path = path.to_string();
            self.loc = loc;
            self.located = true;
        }
        self
    }
}

/// Reads a `T` from `node`, whose path is `path`.
pub fn from_node<T: serde::de::DeserializeOwned>(node: &Node, path: &str) -> Result<T, SchemaError> {
    T::deserialize(NodeDe { node, path: path.to_string() })
}

/// The serde deserializer over a [`Node`].
struct NodeDe<'a> {
    node: &'a Node,
    path: String,
}

impl<'a> NodeDe<'a> {
    fn claim<T>(&self, r: Result<T, SchemaError>) -> Result<T, SchemaError> {
        r.map_err(|e| e.at(&self.path, self.node.loc))
    }
}

macro_rules! forward_to_any {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SchemaError> {
                self.deserialize_any(visitor)
            }
        )*
    };
}

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = SchemaError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SchemaError> {
        let r = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => visitor.visit_seq(SeqDe { items: items.iter(), path: &self.path, i: 0 }),
            Value::Map(entries) => {
                visitor.visit_map(MapDe { entries: entries.iter(), path: &self.path, value: None })
            }
        };
        self.claim(r)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SchemaError> {
        match self.node.value {
            Value::Null => {
                let r = visitor.visit_none();
                self.claim(r)
            }
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, SchemaError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SchemaError> {
        let r = match &self.node.value {
            Value::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            Value::Map(entries) if entries.len() == 1 => {
                let (k, v) = &entries[0];
                let tag = k.as_str().unwrap_or_default();
                visitor.visit_enum(EnumDe { tag, key: k, value: v, path: &self.path })
            }
            other => Err(de::Error::custom(format!(
                "expected exactly one of {}, found {}",
                variants.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", "),
                match other {
                    Value::Map(e) if e.is_empty() => "an empty mapping".to_string(),
                    Value::Map(e) => format!(
                        "{} keys ({})",
                        e.len(),
                        e.iter().map(|(k, _)| k.as_str().unwrap_or_default()).collect::<Vec<_>>().join(", ")
                    ),
                    v => v.kind().to_string(),
                }
            ))),
        };
        self.claim(r)
    }

    forward_to_any! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_f32 deserialize_f64
        deserialize_char deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
        deserialize_unit deserialize_seq deserialize_map deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, SchemaError> {
        self.deserialize_any(v)
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, SchemaError> {
        self.deserialize_any(v)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        v: V,
    ) -> Result<V::Value, SchemaError> {
        self.deserialize_any(v)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, SchemaError> {
        self.deserialize_any(v)
    }
}

struct SeqDe<'a> {
    items: std::slice::Iter<'a, Node>,
    path: &'a str,
    i: usize,
}

impl<'de, 'a> de::SeqAccess<'de> for SeqDe<'a> {
    type Error = SchemaError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, SchemaError> {
        let Some(node) = self.items.next() else { return Ok(None) };
        let path = index_path(self.path, self.i);
        self.i += 1;
        seed.deserialize(NodeDe { node, path }).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    path: &'a str,
    value: Option<(&'a Node, String)>,
}

impl<'de, 'a> de::MapAccess<'de> for MapDe<'a> {
    type Error = SchemaError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, SchemaError> {
        let Some((k, v)) = self.entries.next() else { return Ok(None) };
        let path = field_path(self.path, k.as_str().unwrap_or_default());
        self.value = Some((v, path.clone()));
        seed.deserialize(NodeDe { node: k, path }).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, SchemaError> {
        let (node, path) = self.value.take().ok_or_else(|| de::Error::custom("value before key"))?;
        seed.deserialize(NodeDe { node, path })
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct EnumDe<'a> {
    tag: &'a str,
    key: &'a Node,
    value: &'a Node,
    path: &'a str,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumDe<'a> {
    type Error = SchemaError;
    type Variant = NodeDe<'a>;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, NodeDe<'a>), SchemaError> {
        let path = field_path(self.path, self.tag);
        let tag = seed
            .deserialize(self.tag.into_deserializer())
            .map_err(|e: SchemaError| e.at(&path, self.key.loc))?;
        Ok((tag, NodeDe { node: self.value, path }))
    }
}

impl<'de, 'a> de::VariantAccess<'de> for NodeDe<'a> {
    type Error = SchemaError;
    fn unit_variant(self) -> Result<(), SchemaError> {
        match self.node.value {
            Value::Null => Ok(()),
            _ => Err(de::Error::custom("this variant takes no value"))
                .map_err(|e: SchemaError| e.at(&self.path, self.node.loc)),
        }
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, SchemaError> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, SchemaError> {
        de::Deserializer::deserialize_any(self, visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SchemaError> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}

/// Where the error of parsing a template at byte `offset` within string `node`
/// is: the scalar's position plus the offset when the scalar sits on one line
/// and its source text holds the value verbatim (plain or simply quoted);
/// otherwise the scalar's position.
pub fn offset_loc(file_text: &str, node: &Node, offset: usize) -> Loc {
    let (Some(byte), Some(value)) = (node.byte, node.as_str()) else { return node.loc };
    let Some(rest) = file_text.get(byte..) else { return node.loc };
    let line = rest.split(['\n', '\r']).next().unwrap_or_default();
    let shift = if line.starts_with(value) {
        0
    } else if (line.starts_with('"') || line.starts_with('\'')) && line[1..].starts_with(value) {
        1
    } else {
        return node.loc;
    };
    let Some(prefix) = value.get(..offset.min(value.len())) else { return node.loc };
    let chars = u32::try_from(prefix.chars().count()).unwrap_or(u32::MAX);
    Loc::new(node.loc.line, node.loc.column.saturating_add(shift + chars))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Result<Option<Node>, SyntaxError>> {
        split_documents(text).iter().map(parse_document).collect()
    }

    #[test]
    fn documents_split_at_markers_and_keep_file_lines() {
        let text = "a: 1\n---\nb: 2\n--- # c\n\n  # only a comment\n---\nc:\n  d: x\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 4);
        assert_eq!(docs[1].text, "---\nb: 2\n");
        assert_eq!(docs[3].line_offset, 6);
        let parsed = parse(text);
        assert!(parsed[2].as_ref().unwrap().is_none(), "comment-only document is empty");
        let c = parsed[3].as_ref().unwrap().as_ref().unwrap();
        let d = c.get("c").unwrap().get("d").unwrap();
        assert_eq!(d.loc, Loc::new(9, 6));
        assert_eq!(d.byte, Some(text.find("x\n").unwrap()));
    }

    #[test]
    fn a_marker_needs_a_separator_after_it() {
        assert_eq!(split_documents("a: |\n  x\n----\n").len(), 1);
        assert_eq!(split_documents("").len(), 1);
    }

    #[test]
    fn syntax_errors_are_file_relative() {
        let parsed = parse("a: 1\n---\nb: [1\n");
        let e = parsed[1].as_ref().unwrap_err();
        assert_eq!(e.loc, Loc::new(3, 4));
        assert!(e.message.contains("unclosed"), "{}", e.message);
        assert!(!e.message.contains("at line"), "{}", e.message);
    }

    #[test]
    fn yaml_1_1_spellings_stay_strings() {
        let n = parse("a: yes\nb: 0755\nc: 1_000\nd: true\n").remove(0).unwrap().unwrap();
        assert_eq!(n.to_json(), serde_json::json!({"a": "yes", "b": "0755", "c": "1_000", "d": true}));
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Inner {
        name: String,
        retry_count: Option<u32>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        items: Vec<Inner>,
    }

    fn schema_error(text: &str) -> SchemaError {
        let n = parse(text).remove(0).unwrap().unwrap();
        from_node::<Outer>(&n, "doc").unwrap_err()
    }

    #[test]
    fn schema_errors_name_the_innermost_node() {
        let e = schema_error("items:\n  - name: a\n  - name: b\n    colour: red\n");
        assert_eq!((e.path.as_str(), e.loc), ("doc.items[1].colour", Loc::new(4, 5)));
        assert!(e.message.contains("unknown field `colour`"), "{}", e.message);

        let e = schema_error("items:\n  - name: [x]\n");
        assert_eq!((e.path.as_str(), e.loc), ("doc.items[0].name", Loc::new(2, 11)));

        let e = schema_error("items:\n  - retryCount: 2\n");
        assert_eq!((e.path.as_str(), e.loc), ("doc.items[0]", Loc::new(2, 5)));
        assert!(e.message.contains("missing field `name`"), "{}", e.message);
    }

    #[test]
    fn template_offsets_shift_columns_only_for_verbatim_scalars() {
        let text = "a: x<+y\nb: \"x<+y\"\nc: \"\\tx<+y\"\nd: |\n  x<+y\n";
        let n = parse(text).remove(0).unwrap().unwrap();
        assert_eq!(offset_loc(text, n.get("a").unwrap(), 1), Loc::new(1, 5));
        assert_eq!(offset_loc(text, n.get("b").unwrap(), 1), Loc::new(2, 6));
        assert_eq!(offset_loc(text, n.get("c").unwrap(), 1), Loc::new(3, 4));
        assert_eq!(offset_loc(text, n.get("d").unwrap(), 1), Loc::new(5, 3));
    }
}
