//! Conditions as written in `when.condition`.

use super::ast::Expr;
use super::eval::Eval;
use super::parser::{Parser, SECRET_MISUSE};
use super::{Context, EvalError, ParseError};

/// A boolean condition as written in `when.condition`, e.g.
/// `<+pipeline.variables.env> == "prod" && <+stage.variables.x>.startsWith("a")`.
///
/// The grammar is the block grammar at top level: `<+…>` blocks are primaries and bare
/// paths are allowed too. Secrets and runtime inputs are parse errors here.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    src: String,
    expr: Expr,
}

impl Condition {
    /// Parses a condition.
    pub fn parse(s: &str) -> Result<Condition, ParseError> {
        let mut p = Parser::new(s);
        p.skip_ws();
        if p.at_end() {
            return Err(ParseError::new(p.pos, "empty condition"));
        }
        let expr = p.expr()?;
        p.skip_ws();
        if !p.at_end() {
            return p.unexpected("an operator or the end of the condition");
        }
        if let Some(&at) = p.secret_uses.first() {
            return Err(ParseError::new(at, SECRET_MISUSE));
        }
        Ok(Condition { src: s.to_string(), expr })
    }

    /// Every path the condition reads, in source order, with the byte offset where it starts.
    pub fn references(&self) -> Vec<(Vec<String>, usize)> {
        let mut out = Vec::new();
        self.expr.collect_references(&mut out);
        out
    }

    /// Evaluates the condition to the truthiness of its value.
    pub fn eval(&self, ctx: &dyn Context) -> Result<bool, EvalError> {
        Ok(Eval { src: &self.src, ctx }.eval(&self.expr)?.is_truthy())
    }
}
