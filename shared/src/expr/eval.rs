//! Evaluates a parsed expression against a [`Context`].

use std::cmp::Ordering;

use super::ast::{Chain, CmpOp, Expr, Kind, Op, Root};
use super::context::resolve;
use super::methods::{self, MAX_STRING_BYTES};
use super::value::{Value, as_integer, loose_eq, order};
use super::{Context, EvalError};

type Result<T> = std::result::Result<T, EvalError>;

/// One evaluation: the source the spans point into, and where paths resolve.
pub(crate) struct Eval<'a> {
    pub src: &'a str,
    pub ctx: &'a dyn Context,
}

impl Eval<'_> {
    fn text(&self, start: usize, end: usize) -> String {
        self.src.get(start..end).unwrap_or_default().trim().to_string()
    }

    fn type_err(&self, start: usize, end: usize, message: impl Into<String>) -> EvalError {
        EvalError::Type { expr: self.text(start, end), message: message.into() }
    }

    pub fn eval(&self, e: &Expr) -> Result<Value> {
        match &e.kind {
            Kind::Lit(v) => Ok(v.clone()),
            Kind::Not(inner) => Ok(Value::Bool(!self.eval(inner)?.is_truthy())),
            Kind::Neg(inner) => match self.eval(inner)? {
                Value::Number(n) => Ok(Value::Number(-n)),
                other => Err(self.type_err(e.start, e.end, format!("cannot negate a {}", other.type_name()))),
            },
            Kind::And(items) => {
                for item in items {
                    if !self.eval(item)?.is_truthy() {
                        return Ok(Value::Bool(false));
                    }
                }
                Ok(Value::Bool(true))
            }
            Kind::Or(items) => {
                for item in items {
                    if self.eval(item)?.is_truthy() {
                        return Ok(Value::Bool(true));
                    }
                }
                Ok(Value::Bool(false))
            }
            Kind::Cmp(a, op, b) => {
                let (a, b) = (self.eval(a)?, self.eval(b)?);
                let ord = |want: fn(Ordering) -> bool| {
                    order(&a, &b).map(want).map_err(|m| self.type_err(e.start, e.end, m))
                };
                let result = match op {
                    CmpOp::Eq => loose_eq(&a, &b),
                    CmpOp::Ne => !loose_eq(&a, &b),
                    CmpOp::Lt => ord(Ordering::is_lt)?,
                    CmpOp::Le => ord(Ordering::is_le)?,
                    CmpOp::Gt => ord(Ordering::is_gt)?,
                    CmpOp::Ge => ord(Ordering::is_ge)?,
                };
                Ok(Value::Bool(result))
            }
            Kind::Add(items) => self.add(items),
            Kind::Chain(chain) => self.chain(chain, e.start),
        }
    }

    /// `+` folds left to right: numbers add; if either side is a string, both render and
    /// concatenate; anything else is a type error.
    fn add(&self, items: &[Expr]) -> Result<Value> {
        let mut acc = self.eval(&items[0])?;
        for (i, item) in items.iter().enumerate().skip(1) {
            let rhs = self.eval(item)?;
            let fail = |m: String| self.type_err(items[0].start, items[i].end, m);
            acc = match (acc, rhs) {
                (Value::Number(x), Value::Number(y)) => Value::Number(x + y),
                (a @ Value::String(_), b) | (a, b @ Value::String(_)) => {
                    let (a, b) = (a.to_display_string(), b.to_display_string());
                    if a.len().saturating_add(b.len()) > MAX_STRING_BYTES {
                        return Err(fail(methods::too_long()));
                    }
                    Value::String(a + &b)
                }
                (a, b) => {
                    return Err(fail(format!("cannot add a {} and a {}", a.type_name(), b.type_name())));
                }
            };
        }
        Ok(acc)
    }

    fn chain(&self, chain: &Chain, start: usize) -> Result<Value> {
        let (mut v, used) = match &chain.root {
            Root::Expr(root) => (self.eval(root)?, 0),
            Root::Ident(_) => {
                let (segs, used) = chain.static_path().expect("an identifier root has a path");
                let path_end = match used {
                    0 => start + segs[0].len(),
                    n => chain.ops[n - 1].end(),
                };
                let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
                let v = resolve(self.ctx, &segs)
                    .ok_or_else(|| EvalError::Unresolved { expr: self.text(start, path_end) })?;
                (v, used)
            }
        };
        for op in &chain.ops[used..] {
            let end = op.end();
            v = match op {
                Op::Field { name, .. } => match v {
                    Value::Map(mut m) => {
                        m.remove(name).ok_or_else(|| EvalError::Unresolved { expr: self.text(start, end) })?
                    }
                    other => {
                        let m = format!("cannot read field `{name}` of a {}", other.type_name());
                        return Err(self.type_err(start, end, m));
                    }
                },
                Op::Index { index, .. } => {
                    let i = self.eval(index)?;
                    self.index(v, i, start, end)?
                }
                Op::Call { name, args, .. } => {
                    let args = args.iter().map(|a| self.eval(a)).collect::<Result<Vec<_>>>()?;
                    methods::call(v, name, args).map_err(|m| self.type_err(start, end, m))?
                }
            };
        }
        Ok(v)
    }

    /// `v[i]`: lists by integer position, maps by key (a number key is rendered as text).
    fn index(&self, v: Value, i: Value, start: usize, end: usize) -> Result<Value> {
        match (v, i) {
            (Value::List(mut l), Value::Number(n)) => {
                let len = l.len();
                match as_integer(n).and_then(|i| usize::try_from(i).ok()).filter(|i| *i < len) {
                    Some(i) => Ok(l.swap_remove(i)),
                    None => Err(self.type_err(
                        start,
                        end,
                        format!(
                            "index {} is out of range for a list of length {len}",
                            Value::Number(n).to_display_string()
                        ),
                    )),
                }
            }
            (Value::Map(mut m), key @ (Value::String(_) | Value::Number(_))) => m
                .remove(&key.to_display_string())
                .ok_or_else(|| EvalError::Unresolved { expr: self.text(start, end) }),
            (v, i) => Err(self.type_err(
                start,
                end,
                format!("cannot index a {} with a {}", v.type_name(), i.type_name()),
            )),
        }
    }
}
