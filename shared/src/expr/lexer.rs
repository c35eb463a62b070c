//! Splits expression source into tokens, one at a time, on demand.
//!
//! The lexer is stateless: the parser asks for the token at a byte offset. Whether a `>`
//! closes a `<+ … >` block or compares depends on the parser's bracket depth, so the lexer
//! only reports `>` and `>=` and leaves that decision to the parser.

use super::ParseError;

/// One token. Literals carry their decoded value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok<'s> {
    Ident(&'s str),
    Num(f64),
    Str(String),
    /// `<+`, opening a nested block.
    Open,
    LParen,
    RParen,
    LBrack,
    RBrack,
    Dot,
    Comma,
    Bang,
    Plus,
    Minus,
    AndAnd,
    OrOr,
    EqEq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// A character that starts no token; the parser reports it as "found `…`".
    Other(char),
    Eof,
}

/// A token and its byte range.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token<'s> {
    pub tok: Tok<'s>,
    pub start: usize,
    pub end: usize,
}

impl Token<'_> {
    /// How the token reads in an error message: its source text, or "the end of the text".
    pub fn describe(&self, src: &str) -> String {
        match self.tok {
            Tok::Eof => "the end of the text".to_string(),
            _ => format!("`{}`", &src[self.start..self.end]),
        }
    }
}

/// The first offset at or after `pos` that is not whitespace.
pub(crate) fn skip_ws(src: &str, pos: usize) -> usize {
    let rest = &src[pos..];
    pos + (rest.len() - rest.trim_start().len())
}

/// The token starting at the first non-whitespace byte at or after `pos`.
pub(crate) fn next(src: &str, pos: usize) -> Result<Token<'_>, ParseError> {
    let start = skip_ws(src, pos);
    let bytes = src.as_bytes();
    let Some(&b) = bytes.get(start) else {
        return Ok(Token { tok: Tok::Eof, start, end: start });
    };
    let at = |i: usize| bytes.get(start + i).copied();
    let sym = |tok, len: usize| Ok(Token { tok, start, end: start + len });
    match b {
        b'(' => sym(Tok::LParen, 1),
        b')' => sym(Tok::RParen, 1),
        b'[' => sym(Tok::LBrack, 1),
        b']' => sym(Tok::RBrack, 1),
        b'.' => sym(Tok::Dot, 1),
        b',' => sym(Tok::Comma, 1),
        b'+' => sym(Tok::Plus, 1),
        b'-' => sym(Tok::Minus, 1),
        b'!' if at(1) == Some(b'=') => sym(Tok::Ne, 2),
        b'!' => sym(Tok::Bang, 1),
        b'=' if at(1) == Some(b'=') => sym(Tok::EqEq, 2),
        b'&' if at(1) == Some(b'&') => sym(Tok::AndAnd, 2),
        b'|' if at(1) == Some(b'|') => sym(Tok::OrOr, 2),
        b'<' if at(1) == Some(b'+') => sym(Tok::Open, 2),
        b'<' if at(1) == Some(b'=') => sym(Tok::Le, 2),
        b'<' => sym(Tok::Lt, 1),
        // `>==` is a `>` followed by `==`, so `<+a>=="x"` closes the block before `==`.
        b'>' if at(1) == Some(b'=') && at(2) != Some(b'=') => sym(Tok::Ge, 2),
        b'>' => sym(Tok::Gt, 1),
        b'"' | b'\'' => string(src, start),
        b'0'..=b'9' => number(src, start),
        b'A'..=b'Z' | b'a'..=b'z' | b'_' => {
            let end = ident_end(src, start);
            Ok(Token { tok: Tok::Ident(&src[start..end]), start, end })
        }
        b'=' => Err(ParseError::new(start, "unexpected `=` (use `==` to compare)")),
        b'&' | b'|' => Err(ParseError::new(start, format!("unexpected `{}` (use `||` and `&&`)", b as char))),
        _ => {
            let c = src[start..].chars().next().unwrap_or('?');
            Ok(Token { tok: Tok::Other(c), start, end: start + c.len_utf8() })
        }
    }
}

/// True for bytes that may continue an identifier.
fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn ident_end(src: &str, start: usize) -> usize {
    let len = src.as_bytes()[start..].iter().take_while(|b| is_ident_byte(**b)).count();
    start + len
}

/// `digits ('.' digits)? ([eE] [+-]? digits)?`; a `.` not followed by a digit is left for
/// a method call (`1.toString()`).
fn number(src: &str, start: usize) -> Result<Token<'static>, ParseError> {
    let bytes = src.as_bytes();
    let digits_from = |i: usize| i + bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut end = digits_from(start);
    if bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
        end = digits_from(end + 1);
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(end + 1), Some(b'+' | b'-')));
        if bytes.get(end + 1 + sign).is_some_and(u8::is_ascii_digit) {
            end = digits_from(end + 1 + sign);
        }
    }
    if bytes.get(end).copied().is_some_and(is_ident_byte) {
        return Err(ParseError::new(start, "invalid number"));
    }
    let n: f64 = src[start..end].parse().map_err(|_| ParseError::new(start, "invalid number"))?;
    if !n.is_finite() {
        return Err(ParseError::new(start, "number out of range"));
    }
    Ok(Token { tok: Tok::Num(n), start, end })
}

/// A quoted string starting at `start` (which holds the quote); see [`unquote`].
fn string(src: &str, start: usize) -> Result<Token<'static>, ParseError> {
    let (value, end) = unquote(src, start)?;
    Ok(Token { tok: Tok::Str(value), start, end })
}

/// Decodes the string literal whose opening quote is at `start`: `"…"` or `'…'` with the
/// escapes `\"`, `\'`, `\\`, `\n`, `\t`. Returns the value and the offset past the closing
/// quote.
pub(crate) fn unquote(src: &str, start: usize) -> Result<(String, usize), ParseError> {
    let quote = src.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices().map(|(i, c)| (start + 1 + i, c));
    while let Some((i, c)) = chars.next() {
        match c {
            c if c == quote => return Ok((out, i + 1)),
            '\\' => match chars.next() {
                Some((_, '"')) => out.push('"'),
                Some((_, '\'')) => out.push('\''),
                Some((_, '\\')) => out.push('\\'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, other)) => {
                    return Err(ParseError::new(i, format!("unknown escape `\\{other}` in a string")));
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(ParseError::new(start, "unterminated string"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok<'_>> {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let t = next(src, pos).unwrap();
            if t.tok == Tok::Eof {
                return out;
            }
            pos = t.end;
            out.push(t.tok);
        }
    }

    #[test]
    fn symbols() {
        use Tok::*;
        assert_eq!(
            toks("( ) [ ] . , ! + - && || == != < <= > >= <+"),
            vec![
                LParen, RParen, LBrack, RBrack, Dot, Comma, Bang, Plus, Minus, AndAnd, OrOr, EqEq, Ne, Lt,
                Le, Gt, Ge, Open
            ]
        );
        assert_eq!(toks("a>==b"), vec![Ident("a"), Gt, EqEq, Ident("b")]);
        assert_eq!(toks("a>=b"), vec![Ident("a"), Ge, Ident("b")]);
        assert_eq!(toks("!!a"), vec![Bang, Bang, Ident("a")]);
    }

    #[test]
    fn numbers() {
        assert_eq!(
            toks("12 3.5 1e3 2E-2 7.x"),
            vec![
                Tok::Num(12.0),
                Tok::Num(3.5),
                Tok::Num(1000.0),
                Tok::Num(0.02),
                Tok::Num(7.0),
                Tok::Dot,
                Tok::Ident("x")
            ]
        );
        assert_eq!(next("  12abc", 0).unwrap_err().offset, 2);
        assert_eq!(next("1e999", 0).unwrap_err().message, "number out of range");
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(
            toks(r#""a\"b" 'c\'d' "\\\n\t" 'x"y'"#),
            vec![
                Tok::Str("a\"b".into()),
                Tok::Str("c'd".into()),
                Tok::Str("\\\n\t".into()),
                Tok::Str("x\"y".into())
            ]
        );
        let t = next(r#" "é>" "#, 0).unwrap();
        assert_eq!((t.start, t.end), (1, 6));
        let e = next(r#"  "ab"#, 0).unwrap_err();
        assert_eq!((e.offset, e.message.as_str()), (2, "unterminated string"));
        let e = next(r#""a\qb""#, 0).unwrap_err();
        assert_eq!(e.offset, 2);
        assert!(e.message.contains("unknown escape"), "{e}");
        assert_eq!(next(r#""a\"#, 0).unwrap_err().offset, 0);
    }

    #[test]
    fn identifiers_and_bad_characters() {
        assert_eq!(toks("a_1 _b"), vec![Tok::Ident("a_1"), Tok::Ident("_b")]);
        assert_eq!(toks("a-b"), vec![Tok::Ident("a"), Tok::Minus, Tok::Ident("b")]);
        for (src, pos, offset) in [("  =", 0, 2), ("a & b", 1, 2), ("a | b", 1, 2)] {
            assert_eq!(next(src, pos).unwrap_err().offset, offset, "{src}");
        }
        let t = next("x é", 1).unwrap();
        assert_eq!((t.tok.clone(), t.start, t.end), (Tok::Other('é'), 2, 4));
        assert_eq!(t.describe("x é"), "`é`");
        assert_eq!(next("x ", 1).unwrap().describe("x "), "the end of the text");
    }
}
