//! Templates: strings with zero or more `<+ … >` blocks, secret blocks and runtime inputs.

use super::ast::Expr;
use super::eval::Eval;
use super::parser::{Parser, SECRET_MISUSE};
use super::{Context, EvalError, ParseError, Value, input};

/// How every secret reference starts; delegates resolve whatever follows it.
const SECRET_OPEN: &str = "<+secrets.getValue(";

/// A parsed template (string with zero or more blocks).
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    src: String,
    kind: Body,
}

#[derive(Debug, Clone, PartialEq)]
enum Body {
    Parts(Vec<Part>),
    Input(RuntimeInput),
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Block(Expr),
    /// A `<+secrets.getValue("…")>` block, kept verbatim for the delegate to resolve.
    Secret(String),
}

/// A runtime input: `<+input>` with optional `.default(v)` and `.allowedValues(v1, …)`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuntimeInput {
    /// The value used when none is supplied.
    pub default: Option<String>,
    /// The values a supplied input must be one of; empty when anything goes.
    pub allowed: Vec<String>,
}

impl Template {
    /// Parses a template: literal text with `<+ … >` blocks, or a whole-value runtime input.
    pub fn parse(s: &str) -> Result<Template, ParseError> {
        let src = s.to_string();
        if s.starts_with(input::INPUT) {
            return Ok(Template { kind: Body::Input(input::parse(s)?), src });
        }
        let mut parts = Vec::new();
        let mut p = Parser::new(s);
        while let Some(found) = p.rest().find("<+") {
            let open = p.pos + found;
            if found > 0 {
                parts.push(Part::Text(p.rest()[..found].to_string()));
            }
            p.pos = open;
            let before = p.secret_uses.len();
            let expr = p.block()?;
            let raw = &s[open..p.pos];
            parts.push(match p.secret_uses.get(before) {
                None => Part::Block(expr),
                Some(_) if p.secret_uses.len() == before + 1 && expr.is_secret_call() => {
                    check_secret(raw, open)?;
                    Part::Secret(raw.to_string())
                }
                Some(&at) => return Err(ParseError::new(at, SECRET_MISUSE)),
            });
        }
        if !p.at_end() {
            parts.push(Part::Text(p.rest().to_string()));
        }
        Ok(Template { src, kind: Body::Parts(parts) })
    }

    /// True when the string has no `<+` blocks at all (nothing to render).
    pub fn is_literal(&self) -> bool {
        matches!(&self.kind, Body::Parts(parts) if parts.iter().all(|p| matches!(p, Part::Text(_))))
    }

    /// Some when the whole string is a runtime input `<+input>…`.
    pub fn runtime_input(&self) -> Option<&RuntimeInput> {
        match &self.kind {
            Body::Input(i) => Some(i),
            Body::Parts(_) => None,
        }
    }

    /// True when the template contains at least one secret reference block.
    pub fn has_secrets(&self) -> bool {
        self.parts().iter().any(|p| matches!(p, Part::Secret(_)))
    }

    /// Every path the template reads (secret blocks and inputs excluded), as segment lists,
    /// in source order, with the byte offset where each path starts. Index segments `[expr]`
    /// with a literal become segments; a dynamic index ends the path there.
    pub fn references(&self) -> Vec<(Vec<String>, usize)> {
        let mut out = Vec::new();
        for part in self.parts() {
            if let Part::Block(e) = part {
                e.collect_references(&mut out);
            }
        }
        out
    }

    /// Renders to text. Secret blocks are copied verbatim. A runtime-input template is an
    /// [`EvalError::Type`] ("runtime input was not supplied").
    ///
    /// Delegates resolve every `<+secrets.getValue(…)>` in the text they receive, so the
    /// only ones the output may contain are the template's own secret blocks: a value
    /// (say a webhook payload) that would smuggle one in is an [`EvalError::Type`].
    pub fn render(&self, ctx: &dyn Context) -> Result<String, EvalError> {
        let parts = self.checked_parts()?;
        let eval = Eval { src: &self.src, ctx };
        let mut out = String::with_capacity(self.src.len());
        // Where each block's value landed in `out`, to vet the output afterwards.
        let mut rendered: Vec<(usize, usize, &Expr)> = Vec::new();
        for part in parts {
            match part {
                Part::Text(t) | Part::Secret(t) => out.push_str(t),
                Part::Block(e) => {
                    let start = out.len();
                    out.push_str(&eval.eval(e)?.to_display_string());
                    rendered.push((start, out.len(), e));
                }
            }
        }
        // A reference can also form across a block's edge (`<` + `+secrets…`), so look at
        // the whole output and blame the block that overlaps it.
        for (at, _) in out.match_indices(SECRET_OPEN) {
            let end = at + SECRET_OPEN.len();
            if let Some((_, _, e)) = rendered.iter().find(|(s, t, _)| *s < end && at < *t) {
                return Err(self.injected(e));
            }
        }
        Ok(out)
    }

    /// Typed evaluation: if the template is exactly one block (no surrounding text), the
    /// block's value; otherwise the rendered string as [`Value::String`]. Either way a
    /// value that carries a secret reference is refused, as in [`Template::render`].
    pub fn eval(&self, ctx: &dyn Context) -> Result<Value, EvalError> {
        match self.checked_parts()? {
            [Part::Block(e)] => {
                let v = Eval { src: &self.src, ctx }.eval(e)?;
                if v.to_display_string().contains(SECRET_OPEN) {
                    return Err(self.injected(e));
                }
                Ok(v)
            }
            _ => self.render(ctx).map(Value::String),
        }
    }

    fn injected(&self, e: &Expr) -> EvalError {
        EvalError::Type {
            expr: self.src.get(e.start..e.end).unwrap_or_default().trim().to_string(),
            message: "the value contains a secret reference; secret references must be written \
                      in the pipeline, not come from data"
                .to_string(),
        }
    }

    fn parts(&self) -> &[Part] {
        match &self.kind {
            Body::Parts(parts) => parts,
            Body::Input(_) => &[],
        }
    }

    fn checked_parts(&self) -> Result<&[Part], EvalError> {
        match &self.kind {
            Body::Parts(parts) => Ok(parts),
            Body::Input(_) => Err(EvalError::Type {
                expr: "input".to_string(),
                message: "runtime input was not supplied".to_string(),
            }),
        }
    }
}

/// Vets a whole `<+secrets.getValue(…)>` block with the rules delegates resolve by, so a
/// reference the manager accepts is one the delegate will find verbatim.
fn check_secret(raw: &str, open: usize) -> Result<(), ParseError> {
    match crate::secret_ref::find(raw) {
        Ok(found) if found.len() == 1 && found[0].range == (0..raw.len()) => Ok(()),
        Ok(_) => Err(ParseError::new(
            open,
            "a secret reference must be written exactly as <+secrets.getValue(\"store:name\")>, without spaces",
        )),
        Err(e) => Err(ParseError::new(open + e.offset, format!("bad secret reference: {}", e.reason))),
    }
}
