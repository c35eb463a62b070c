//! The expression language of pipeline YAML: `<+ … >` blocks inside string values.
//!
//! Pure parsing and evaluation, no I/O. Values come from a [`Context`]; secrets are never
//! evaluated here (delegates resolve them).
//!
//! # Templates
//!
//! Any string is a [`Template`]. Text outside `<+ … >` is literal; each block is replaced by
//! its value's text (`Value::to_display_string`: numbers without `.0` when integral,
//! `null`/`true`/`false` as words, lists and maps as compact JSON).
//!
//! ```text
//! image: "registry/app:<+pipeline.variables.tag>"
//! url:   "<+pipeline.variables.base>/<+stage.name.toLowerCase()>"
//! ```
//!
//! **Where a block ends.** A block ends at the first `>` that is outside every string
//! literal, parenthesis and bracket of that block and is not part of `>=`. So
//! `<+a > b>` is the block `<+a >` followed by the text ` b>`; write `<+(a > b)>` to
//! compare. `>=` needs no parentheses, with two conveniences for text that follows a
//! block: `>==` is `>` then `==` (so the condition `<+a>=="x"` works), and a `>=` written
//! right after its left operand that leaves the block unparseable is read as the block's
//! end instead (so `KEY_<+name>=value` renders `KEY_…=value`). There is no escape for a
//! literal `<+` in text.
//!
//! # Expressions
//!
//! From lowest to highest precedence:
//!
//! | syntax | meaning |
//! |---|---|
//! | `a \|\| b` | true if either is truthy (short-circuit; yields a boolean) |
//! | `a && b` | true if both are truthy (short-circuit; yields a boolean) |
//! | `!a` | not; note it binds looser than comparisons: `!a == b` is `!(a == b)` |
//! | `a == b`, `!=`, `<`, `<=`, `>`, `>=` | comparisons; they do not chain (`a < b < c` is an error) |
//! | `a + b` | numbers add; if either side is a string both render and concatenate |
//! | `-a` | negation of a number |
//! | `a.name`, `a[i]`, `a.method(args)` | field, index (list position or map key), method call |
//!
//! Primaries: string literals `"…"` or `'…'` (escapes `\"`, `\'`, `\\`, `\n`, `\t`),
//! numbers (`42`, `2.5`, `1e3`), `true`, `false`, `null`, paths, `( … )`, and nested
//! blocks `<+ … >` (so `<+<+pipeline.variables.x>.toUpperCase()>` works). There is no
//! binary `-`, `*` or `/`. Dynamic paths (`<+a.<+b>>`) are not supported.
//!
//! **Paths** are `ident(.ident | [expr])*` with identifiers `[A-Za-z_][A-Za-z0-9_]*`, e.g.
//! `pipeline.stages.build.spec.execution.steps.say.output.outputVariables.version` or
//! `pipeline.variables["my-var"]`. A path that resolves to nothing is an
//! [`EvalError::Unresolved`] error naming it.
//!
//! **Comparisons**: numbers numerically, strings lexicographically, and a number against a
//! numeric string numerically (`"200" == 200` is true, `"10" > 9` is true). Other mixed
//! types are unequal for `==`/`!=` and an error for ordering. `null == null` is true.
//!
//! **Truthiness** (`!`, `&&`, `||`, conditions): `null`, `false`, `""` and `0` are false;
//! everything else is true, including the string `"false"`.
//!
//! **Methods** (strings count characters, not bytes):
//!
//! | on | methods |
//! |---|---|
//! | string | `contains(s)` `startsWith(s)` `endsWith(s)` `toUpperCase()` `toLowerCase()` `trim()` `replace(from, to)` (literal, every occurrence) `split(sep)` (literal separator; `""` splits into characters; gives a list) `substring(start[, end])` `length()` `matches(regex)` (the whole string must match) `toNumber()` |
//! | list | `length()` `contains(x)` |
//! | map | `length()` `contains(key)` |
//! | number | `toNumber()` |
//! | any | `toString()` `equals(x)` (same as `==`) |
//!
//! # Secrets
//!
//! `<+secrets.getValue("env:NAME")>` and `<+secrets.getValue("file:/path")>` are never
//! evaluated: rendering copies them verbatim for the delegate to resolve. They must be a
//! whole block written exactly like that (see [`crate::secret_ref`]); using `secrets`
//! anywhere else (inside a larger expression, in a condition, nested) is a parse error.
//! Because delegates resolve every reference in the text they receive, a value that would
//! put one into the output (a webhook payload containing `<+secrets.getValue(…)>`, say) is
//! an evaluation error: references come from the pipeline, never from data.
//!
//! # Runtime inputs
//!
//! A field whose whole value is `<+input>` is supplied when the pipeline runs, optionally
//! followed by `.default(v)` and/or `.allowedValues(v1, v2, …)` in either order
//! (`.executionInput()` is accepted and ignored). Values are bare words or quoted strings:
//! `<+input>.default(dev).allowedValues(dev,qa,prod)`. A default must be one of the
//! allowed values. `<+input>` anywhere else is a parse error. See [`RuntimeInput`].
//!
//! # Conditions
//!
//! A [`Condition`] (`when.condition`) is one expression at top level, where blocks are
//! primaries and bare paths are allowed: `<+pipeline.variables.env> == "prod"`. Its result
//! is the value's truthiness.
//!
//! # Limits
//!
//! Parentheses, brackets, call arguments, blocks and unary operators nest at most 64 deep
//! (deeper is a [`ParseError`]); strings built by `+` and methods are at most 8 MiB.

mod ast;
mod condition;
mod context;
mod error;
mod eval;
mod input;
mod json;
mod lexer;
mod methods;
mod parser;
mod template;
mod value;

#[cfg(test)]
mod tests;

pub use condition::Condition;
pub use context::{Context, JsonContext};
pub use error::{EvalError, ParseError};
pub use json::render_json;
pub use template::{RuntimeInput, Template};
pub use value::Value;
