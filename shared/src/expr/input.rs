//! Runtime inputs: `<+input>` as a field's whole value, with optional modifiers
//! `.default(v)`, `.allowedValues(v1, v2, …)` and `.executionInput()` (accepted, ignored).

use super::ParseError;
use super::parser::Parser;
use super::template::RuntimeInput;

/// The marker that starts a runtime input.
pub(crate) const INPUT: &str = "<+input>";

/// Parses `s`, which starts with [`INPUT`].
pub(crate) fn parse(s: &str) -> Result<RuntimeInput, ParseError> {
    let mut p = Parser::new(s);
    p.pos = INPUT.len();
    let mut out = RuntimeInput::default();
    let mut seen: Vec<&str> = Vec::new();
    let mut default_at = 0;
    loop {
        if p.rest().trim().is_empty() {
            break;
        }
        if !p.eat('.') {
            return Err(ParseError::new(
                p.pos,
                format!("unexpected text after {INPUT}: {}", super::parser::INPUT_MISUSE),
            ));
        }
        let name_at = p.pos;
        let Some(name) = p.ident() else {
            return p.unexpected("default, allowedValues or executionInput after `.`");
        };
        let at = |message: String| Err(ParseError::new(name_at, message));
        if seen.contains(&name) {
            return at(format!(".{name}(…) is given twice"));
        }
        seen.push(name);
        p.skip_ws();
        if p.peek() != Some('(') {
            return p.unexpected(&format!("`(` after .{name}"));
        }
        let mut values = values(&mut p)?;
        match name {
            "default" if values.len() == 1 => {
                default_at = name_at;
                out.default = values.pop();
            }
            "default" => return at(format!(".default takes exactly one value, got {}", values.len())),
            "allowedValues" if !values.is_empty() => out.allowed = values,
            "allowedValues" => return at(".allowedValues needs at least one value".into()),
            "executionInput" if values.is_empty() => {}
            "executionInput" => return at(".executionInput takes no values".into()),
            other => {
                return at(format!(
                    "unknown runtime input modifier .{other}(…) (expected default, allowedValues or executionInput)"
                ));
            }
        }
    }
    if let Some(d) = &out.default
        && !out.allowed.is_empty()
        && !out.allowed.contains(d)
    {
        let message = format!("default value {d:?} is not one of the allowed values");
        return Err(ParseError::new(default_at, message));
    }
    Ok(out)
}

/// `( v1, v2, … )`: each a quoted string or a bare word (anything but `,()'"`, trimmed);
/// the cursor is on `(`.
fn values(p: &mut Parser<'_>) -> Result<Vec<String>, ParseError> {
    let open = p.pos;
    p.pos += 1;
    let mut out = Vec::new();
    p.skip_ws();
    if p.eat(')') {
        return Ok(out);
    }
    loop {
        p.skip_ws();
        let at = p.pos;
        let value = match p.peek() {
            Some('"' | '\'') => p.string_literal()?,
            _ => {
                let rest = p.rest();
                let len = rest.find([',', '(', ')', '"', '\'']).unwrap_or(rest.len());
                let word = rest[..len].trim_end();
                if word.is_empty() {
                    return p.unexpected("a value");
                }
                if word.contains("<+") {
                    return Err(ParseError::new(at, "expressions are not allowed in runtime input values"));
                }
                p.pos += len;
                word.to_string()
            }
        };
        out.push(value);
        p.skip_ws();
        if p.eat(',') {
            continue;
        }
        if p.eat(')') {
            return Ok(out);
        }
        if p.at_end() {
            return Err(ParseError::new(open, "unclosed `(`"));
        }
        return p.unexpected("`,` or `)`");
    }
}
