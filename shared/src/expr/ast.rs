//! The syntax tree of one expression, with byte spans into the parsed source.
//!
//! Left-associative chains (`a + b + c`, `a && b && c`, `a.b.c[0].d()`) are stored flat in
//! vectors rather than as nested binary nodes, so the tree's depth is bounded by the
//! parser's nesting limit however long the input is: evaluation, traversal and drop can
//! recurse without risking the stack.

use super::Value;

/// One expression and the byte range of its source text (no surrounding whitespace).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expr {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    /// A string, number, `true`, `false` or `null` literal.
    Lit(Value),
    /// A path or postfix chain: `root(.field | [index] | .method(args))*`.
    Chain(Chain),
    /// `!e`
    Not(Box<Expr>),
    /// `-e`
    Neg(Box<Expr>),
    /// `a op b`; comparisons do not chain.
    Cmp(Box<Expr>, CmpOp, Box<Expr>),
    /// `a + b + …`, folded left to right.
    Add(Vec<Expr>),
    /// `a && b && …`, short-circuiting.
    And(Vec<Expr>),
    /// `a || b || …`, short-circuiting.
    Or(Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chain {
    pub root: Root,
    /// Postfix operations in source order; never empty when `root` is an expression.
    pub ops: Vec<Op>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Root {
    /// A path root such as `pipeline`.
    Ident(String),
    /// A literal, parenthesised expression or nested `<+ … >` block followed by postfix ops.
    Expr(Box<Expr>),
}

/// A postfix operation; `end` is the byte offset just past it, so `src[chain.start..end]`
/// is the source of the chain up to and including this operation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    Field { name: String, end: usize },
    Index { index: Box<Expr>, end: usize },
    Call { name: String, args: Vec<Expr>, end: usize },
}

impl Op {
    pub fn end(&self) -> usize {
        match self {
            Op::Field { end, .. } | Op::Index { end, .. } | Op::Call { end, .. } => *end,
        }
    }
}

impl Chain {
    /// The static path a chain rooted at an identifier reads: the root, then every
    /// `.field` and literal `[index]` up to the first method call or dynamic index.
    /// Returns the segments and how many ops they used.
    pub fn static_path(&self) -> Option<(Vec<String>, usize)> {
        let Root::Ident(root) = &self.root else { return None };
        let mut segs = vec![root.clone()];
        for op in &self.ops {
            match op {
                Op::Field { name, .. } => segs.push(name.clone()),
                Op::Index { index, .. } => match &index.kind {
                    Kind::Lit(v @ (Value::String(_) | Value::Number(_))) => segs.push(v.to_display_string()),
                    _ => break,
                },
                Op::Call { .. } => break,
            }
        }
        let used = segs.len() - 1;
        Some((segs, used))
    }
}

impl Expr {
    /// Appends every path this expression reads, in source order, with its start offset.
    pub fn collect_references(&self, out: &mut Vec<(Vec<String>, usize)>) {
        match &self.kind {
            Kind::Lit(_) => {}
            Kind::Not(e) | Kind::Neg(e) => e.collect_references(out),
            Kind::Cmp(a, _, b) => {
                a.collect_references(out);
                b.collect_references(out);
            }
            Kind::Add(es) | Kind::And(es) | Kind::Or(es) => {
                es.iter().for_each(|e| e.collect_references(out));
            }
            Kind::Chain(chain) => {
                let used = match (&chain.root, chain.static_path()) {
                    (Root::Ident(_), Some((segs, used))) => {
                        out.push((segs, self.start));
                        used
                    }
                    (Root::Expr(e), _) => {
                        e.collect_references(out);
                        0
                    }
                    (Root::Ident(_), None) => 0,
                };
                for op in &chain.ops[used..] {
                    match op {
                        Op::Field { .. } => {}
                        Op::Index { index, .. } => index.collect_references(out),
                        Op::Call { args, .. } => args.iter().for_each(|a| a.collect_references(out)),
                    }
                }
            }
        }
    }

    /// True when this is exactly `secrets.getValue(…)`.
    pub fn is_secret_call(&self) -> bool {
        matches!(&self.kind, Kind::Chain(Chain { root: Root::Ident(r), ops })
            if r == "secrets" && matches!(ops.as_slice(), [Op::Call { name, .. }] if name == "getValue"))
    }
}
