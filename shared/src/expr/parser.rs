//! Recursive-descent parser from source text to [`Expr`] trees.
//!
//! Precedence, low to high: `||`, `&&`, `!`, comparisons (non-associative), `+`, unary `-`,
//! postfix (`.field`, `[index]`, `.method(args)`), primaries. Blocks, brackets, call
//! arguments and unary operators count towards [`MAX_DEPTH`], so hostile input gets a
//! [`ParseError`] instead of a stack overflow; flat chains (`a + b + …`, `a.b.c…`) do not.
//!
//! Besides the grammar, the parser offers character-level helpers ([`Parser::eat`],
//! [`Parser::ident`], …) for the small runtime-input syntax that follows `<+input>`.

use super::ParseError;
use super::ast::{Chain, CmpOp, Expr, Kind, Op, Root};
use super::lexer::{self, Tok, Token};
use super::value::Value;

/// How deeply blocks, parentheses, brackets, call arguments and unary operators may nest.
pub(crate) const MAX_DEPTH: usize = 64;

/// The message for any use of `secrets` other than a whole `<+secrets.getValue("…")>` block.
pub(crate) const SECRET_MISUSE: &str =
    "secret references can only be used as a whole <+secrets.getValue(...)> block";

/// The message for `<+input>` anywhere but as a field's whole value.
pub(crate) const INPUT_MISUSE: &str = "<+input> can only be a field's whole value, optionally followed by \
     .default(…) and/or .allowedValues(…)";

/// Something that must be closed, innermost last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opener {
    Block,
    Paren,
    Bracket,
}

/// A cursor over one source string.
pub(crate) struct Parser<'s> {
    src: &'s str,
    /// Byte offset of the cursor.
    pub pos: usize,
    /// Offsets of the `secrets` path roots accepted so far (only ever the first token of a
    /// template block; every other use is an immediate error).
    pub secret_uses: Vec<usize>,
    /// Open blocks, parentheses and brackets with their offsets. A `>` closes a block only
    /// when the innermost opener is that block.
    openers: Vec<(usize, Opener)>,
    /// Unary operators currently being parsed (they nest without an opener).
    unary: usize,
    /// Where a `secrets` root is allowed: the first token of the current template block.
    secret_ok_at: Option<usize>,
    /// The first `>=` read as a comparison at the top level of the current template block.
    first_ge: Option<usize>,
    /// A `>=` starting here is read as the closing `>` instead.
    close_at: Option<usize>,
}

/// A primary: an identifier (a path root) or a complete expression.
enum Primary {
    Ident(String),
    Expr(Expr),
}

impl<'s> Parser<'s> {
    /// A parser at the start of `src`.
    pub fn new(src: &'s str) -> Self {
        Parser {
            src,
            pos: 0,
            secret_uses: Vec::new(),
            openers: Vec::new(),
            unary: 0,
            secret_ok_at: None,
            first_ge: None,
            close_at: None,
        }
    }

    // ---- character-level helpers ----

    /// The text after the cursor.
    pub fn rest(&self) -> &'s str {
        &self.src[self.pos..]
    }

    /// True when the cursor is at the end of the text.
    pub fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    /// Moves the cursor past whitespace.
    pub fn skip_ws(&mut self) {
        self.pos = lexer::skip_ws(self.src, self.pos);
    }

    /// The character at the cursor.
    pub fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    /// Consumes `c` if it is at the cursor.
    pub fn eat(&mut self, c: char) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.pos += c.len_utf8();
        }
        hit
    }

    /// Consumes an identifier `[A-Za-z_][A-Za-z0-9_]*` at the cursor.
    pub fn ident(&mut self) -> Option<&'s str> {
        let rest = self.rest();
        if !rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            return None;
        }
        let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        self.pos += len;
        Some(&rest[..len])
    }

    /// Consumes the quoted string whose opening quote is at the cursor.
    pub fn string_literal(&mut self) -> Result<String, ParseError> {
        let (value, end) = lexer::unquote(self.src, self.pos)?;
        self.pos = end;
        Ok(value)
    }

    /// An "expected …, found …" error at the cursor.
    pub fn unexpected<T>(&self, expected: &str) -> Result<T, ParseError> {
        let found = match self.peek() {
            Some(c) => format!("`{c}`"),
            None => "the end of the text".to_string(),
        };
        Err(ParseError::new(self.pos, format!("expected {expected}, found {found}")))
    }

    // ---- grammar ----

    /// The token after any whitespace at the cursor (a `>=` at `close_at` reads as `>`).
    fn tok(&self) -> Result<Token<'s>, ParseError> {
        let mut t = lexer::next(self.src, self.pos)?;
        if t.tok == Tok::Ge && self.close_at == Some(t.start) {
            t = Token { tok: Tok::Gt, start: t.start, end: t.start + 1 };
        }
        Ok(t)
    }

    fn describe(&self, t: &Token<'_>) -> String {
        t.describe(self.src)
    }

    /// Starts a nesting level at `at`.
    fn open(&mut self, at: usize, what: Opener) -> Result<(), ParseError> {
        self.openers.push((at, what));
        self.check_depth(at)
    }

    fn check_depth(&self, at: usize) -> Result<(), ParseError> {
        if self.openers.len() + self.unary > MAX_DEPTH {
            return Err(ParseError::new(at, format!("expression nested too deeply (limit {MAX_DEPTH})")));
        }
        Ok(())
    }

    /// The error for running out of text inside the innermost opener.
    fn unclosed(&self) -> ParseError {
        match self.openers.last() {
            Some((at, Opener::Block)) => ParseError::new(*at, "unclosed `<+` block: no closing `>`"),
            Some((at, Opener::Paren)) => ParseError::new(*at, "unclosed `(`"),
            Some((at, Opener::Bracket)) => ParseError::new(*at, "unclosed `[`"),
            None => ParseError::new(self.src.len(), "expected an expression, found the end of the text"),
        }
    }

    /// True when a `>` here closes a block rather than compares.
    fn gt_closes(&self) -> bool {
        matches!(self.openers.last(), Some((_, Opener::Block)))
    }

    /// Parses the template block whose `<+` is at the cursor and moves past its `>`.
    ///
    /// A `>=` at the block's top level is a comparison, so `KEY_<+name>=value` would read
    /// as `name >= value` and then miss its closing `>`. When a block fails to parse after
    /// reading such a `>=` written without a space before it, it is parsed once more with
    /// that `>` closing the block. Only template blocks retry (not nested ones), so the
    /// work stays linear.
    pub fn block(&mut self) -> Result<Expr, ParseError> {
        let open = self.pos;
        let secrets_before = self.secret_uses.len();
        self.first_ge = None;
        let err = match self.template_block(open) {
            Ok(e) => return Ok(e),
            Err(e) => e,
        };
        let Some(ge) = self.first_ge.take() else { return Err(err) };
        self.secret_uses.truncate(secrets_before);
        self.close_at = Some(ge);
        let retry = self.template_block(open);
        self.close_at = None;
        retry.map_err(|_| err)
    }

    fn template_block(&mut self, open: usize) -> Result<Expr, ParseError> {
        self.openers.clear();
        self.unary = 0;
        self.pos = open + 2;
        self.secret_ok_at = Some(lexer::skip_ws(self.src, self.pos));
        let result = self.block_body(open);
        self.secret_ok_at = None;
        result
    }

    /// The rest of a block whose `<+` is at `open`; the cursor is just past the `<+`.
    fn block_body(&mut self, open: usize) -> Result<Expr, ParseError> {
        self.open(open, Opener::Block)?;
        let first = self.tok()?;
        if first.tok == Tok::Gt {
            return Err(ParseError::new(open, "empty `<+>` block"));
        }
        let expr = self.expr()?;
        let t = self.tok()?;
        match t.tok {
            Tok::Gt => self.pos = t.end,
            Tok::Eof => return Err(self.unclosed()),
            _ => {
                let found = self.describe(&t);
                return Err(ParseError::new(
                    t.start,
                    format!("expected `>` to close the `<+` block, found {found}"),
                ));
            }
        }
        self.openers.pop();
        Ok(expr)
    }

    /// A whole expression: `a || b || …`.
    pub fn expr(&mut self) -> Result<Expr, ParseError> {
        self.flat(Self::and, &Tok::OrOr, Kind::Or)
    }

    /// `a && b && …`
    fn and(&mut self) -> Result<Expr, ParseError> {
        self.flat(Self::not, &Tok::AndAnd, Kind::And)
    }

    /// `sub (op sub)*`, kept flat so long chains do not deepen the tree.
    fn flat(
        &mut self,
        sub: fn(&mut Self) -> Result<Expr, ParseError>,
        op: &Tok<'static>,
        make: fn(Vec<Expr>) -> Kind,
    ) -> Result<Expr, ParseError> {
        let first = sub(self)?;
        let start = first.start;
        let mut items = vec![first];
        loop {
            let t = self.tok()?;
            if t.tok != *op {
                break;
            }
            self.pos = t.end;
            items.push(sub(self)?);
        }
        if items.len() == 1 {
            return Ok(items.remove(0));
        }
        let end = items.last().map_or(start, |e| e.end);
        Ok(Expr { kind: make(items), start, end })
    }

    /// `!a`; binds looser than comparisons, so `!a == b` is `!(a == b)`.
    fn not(&mut self) -> Result<Expr, ParseError> {
        let t = self.tok()?;
        if t.tok != Tok::Bang {
            return self.cmp();
        }
        self.pos = t.end;
        self.unary += 1;
        self.check_depth(t.start)?;
        let inner = self.not()?;
        self.unary -= 1;
        Ok(Expr { start: t.start, end: inner.end, kind: Kind::Not(Box::new(inner)) })
    }

    /// The comparison operator at the cursor, if any.
    fn cmp_op(&self) -> Result<Option<(CmpOp, Token<'s>)>, ParseError> {
        let t = self.tok()?;
        let op = match t.tok {
            Tok::EqEq => CmpOp::Eq,
            Tok::Ne => CmpOp::Ne,
            Tok::Lt => CmpOp::Lt,
            Tok::Le => CmpOp::Le,
            Tok::Gt if !self.gt_closes() => CmpOp::Gt,
            Tok::Ge => CmpOp::Ge,
            _ => return Ok(None),
        };
        Ok(Some((op, t)))
    }

    /// `a op b` with at most one comparison operator.
    fn cmp(&mut self) -> Result<Expr, ParseError> {
        let left = self.add()?;
        let Some((op, t)) = self.cmp_op()? else { return Ok(left) };
        // Only a `>=` right after its left operand (`<+name>=`) may later be re-read as the
        // block's end: with a space (`a >= b`) it was surely meant as a comparison.
        let adjacent = !self.src[..t.start].ends_with(char::is_whitespace);
        if t.tok == Tok::Ge
            && adjacent
            && self.first_ge.is_none()
            && self.openers.len() == 1
            && self.gt_closes()
        {
            self.first_ge = Some(t.start);
        }
        self.pos = t.end;
        let right = self.add()?;
        if let Some((_, again)) = self.cmp_op()? {
            return Err(ParseError::new(
                again.start,
                "comparisons cannot be chained; use parentheses or `&&`",
            ));
        }
        Ok(Expr { start: left.start, end: right.end, kind: Kind::Cmp(Box::new(left), op, Box::new(right)) })
    }

    /// `a + b + …`
    fn add(&mut self) -> Result<Expr, ParseError> {
        let e = self.flat(Self::neg, &Tok::Plus, Kind::Add)?;
        let t = self.tok()?;
        if t.tok == Tok::Minus {
            return Err(ParseError::new(t.start, "subtraction is not supported (only `+` and unary `-`)"));
        }
        Ok(e)
    }

    /// `-a`
    fn neg(&mut self) -> Result<Expr, ParseError> {
        let t = self.tok()?;
        if t.tok != Tok::Minus {
            return self.postfix();
        }
        self.pos = t.end;
        self.unary += 1;
        self.check_depth(t.start)?;
        let inner = self.neg()?;
        self.unary -= 1;
        Ok(Expr { start: t.start, end: inner.end, kind: Kind::Neg(Box::new(inner)) })
    }

    /// A primary followed by any number of `.field`, `[index]` and `.method(args)`.
    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let (primary, start, primary_end) = self.primary()?;
        let mut ops = Vec::new();
        loop {
            let t = self.tok()?;
            match t.tok {
                Tok::Dot => {
                    self.pos = t.end;
                    let n = self.tok()?;
                    let Tok::Ident(name) = n.tok else {
                        let found = self.describe(&n);
                        return Err(ParseError::new(
                            n.start,
                            format!("expected a name after `.`, found {found}"),
                        ));
                    };
                    self.pos = n.end;
                    let paren = self.tok()?;
                    if paren.tok == Tok::LParen {
                        self.pos = paren.end;
                        let (args, end) = self.args(paren.start)?;
                        ops.push(Op::Call { name: name.to_string(), args, end });
                    } else {
                        ops.push(Op::Field { name: name.to_string(), end: n.end });
                    }
                }
                Tok::LBrack => {
                    self.pos = t.end;
                    self.open(t.start, Opener::Bracket)?;
                    let index = self.expr()?;
                    let end = self.close(&Tok::RBrack, "`]`")?;
                    ops.push(Op::Index { index: Box::new(index), end });
                }
                Tok::LParen if matches!(primary, Primary::Ident(_)) && ops.is_empty() => {
                    return Err(ParseError::new(
                        start,
                        "there are no functions; call a method on a value instead, e.g. `x.trim()`",
                    ));
                }
                _ => break,
            }
        }
        let root = match primary {
            Primary::Expr(e) if ops.is_empty() => return Ok(e),
            Primary::Expr(e) => Root::Expr(Box::new(e)),
            Primary::Ident(name) => Root::Ident(name),
        };
        let end = ops.last().map_or(primary_end, Op::end);
        Ok(Expr { kind: Kind::Chain(Chain { root, ops }), start, end })
    }

    /// Call arguments after the `(` at `open`; returns them and the offset past the `)`.
    fn args(&mut self, open: usize) -> Result<(Vec<Expr>, usize), ParseError> {
        self.open(open, Opener::Paren)?;
        let mut args = Vec::new();
        let t = self.tok()?;
        if t.tok != Tok::RParen {
            loop {
                args.push(self.expr()?);
                let t = self.tok()?;
                if t.tok != Tok::Comma {
                    break;
                }
                self.pos = t.end;
            }
        }
        let end = self.close(&Tok::RParen, "`,` or `)`")?;
        Ok((args, end))
    }

    /// Consumes `close`, ending the innermost opener; returns the offset past it.
    fn close(&mut self, close: &Tok<'static>, expected: &str) -> Result<usize, ParseError> {
        let t = self.tok()?;
        if t.tok == *close {
            self.pos = t.end;
            self.openers.pop();
            return Ok(t.end);
        }
        if t.tok == Tok::Eof {
            return Err(self.unclosed());
        }
        let found = self.describe(&t);
        Err(ParseError::new(t.start, format!("expected {expected}, found {found}")))
    }

    /// A literal, identifier, parenthesised expression or nested block, with its range.
    fn primary(&mut self) -> Result<(Primary, usize, usize), ParseError> {
        let t = self.tok()?;
        let lit = |v: Value| Primary::Expr(Expr { kind: Kind::Lit(v), start: t.start, end: t.end });
        let primary = match t.tok {
            Tok::Str(ref s) => lit(Value::String(s.clone())),
            Tok::Num(n) => lit(Value::Number(n)),
            Tok::Ident("true") => lit(Value::Bool(true)),
            Tok::Ident("false") => lit(Value::Bool(false)),
            Tok::Ident("null") => lit(Value::Null),
            Tok::Ident("secrets") if self.secret_ok_at == Some(t.start) => {
                self.secret_uses.push(t.start);
                Primary::Ident("secrets".to_string())
            }
            Tok::Ident("secrets") => return Err(ParseError::new(t.start, SECRET_MISUSE)),
            Tok::Ident("input") => return Err(ParseError::new(t.start, INPUT_MISUSE)),
            Tok::Ident(name) => Primary::Ident(name.to_string()),
            Tok::LParen => {
                self.pos = t.end;
                self.open(t.start, Opener::Paren)?;
                let e = self.expr()?;
                let end = self.close(&Tok::RParen, "`)`")?;
                return Ok((Primary::Expr(e), t.start, end));
            }
            Tok::Open => {
                self.pos = t.end;
                let e = self.block_body(t.start)?;
                return Ok((Primary::Expr(e), t.start, self.pos));
            }
            Tok::Eof => return Err(self.unclosed()),
            _ => {
                let found = self.describe(&t);
                return Err(ParseError::new(t.start, format!("expected an expression, found {found}")));
            }
        };
        self.pos = t.end;
        Ok((primary, t.start, t.end))
    }
}
