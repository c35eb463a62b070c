//! Secret-reference syntax: `<+secrets.getValue("env:NAME")>`,
//! `<+secrets.getValue("file:/path")>`. The manager only ever finds and validates
//! references; delegates resolve them (DESIGN §4) through [`substitute`].

use std::path::PathBuf;

const OPEN: &str = "<+secrets.getValue(";

/// Where a secret value lives, as named by a reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// An environment variable of the delegate process.
    Env(String),
    /// A file on the delegate host; trailing newline is trimmed.
    File(PathBuf),
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// A malformed reference, with its byte offset in the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad secret reference at offset {offset}: {reason}")]
pub struct InvalidSecretRef {
    /// Byte offset of `<+secrets.getValue(` in the text.
    pub offset: usize,
    /// What is wrong.
    pub reason: String,
}

/// One reference found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Byte range of the whole `<+…>` expression.
    pub range: std::ops::Range<usize>,
    /// What it names.
    pub secret: SecretRef,
}

/// Parses the reference string inside the quotes.
pub fn parse(reference: &str) -> Result<SecretRef, String> {
    if let Some(name) = reference.strip_prefix("env:") {
        if crate::task::is_env_name(name) {
            return Ok(SecretRef::Env(name.to_string()));
        }
        return Err(format!("{name:?} is not a valid environment variable name"));
    }
    if let Some(path) = reference.strip_prefix("file:") {
        if path.starts_with('/') {
            return Ok(SecretRef::File(PathBuf::from(path)));
        }
        return Err(format!("file path {path:?} must be absolute"));
    }
    Err(format!("unknown secret store in {reference:?} (expected env:NAME or file:/path)"))
}

/// Finds every reference in `text`.
pub fn find(text: &str) -> Result<Vec<Found>, InvalidSecretRef> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find(OPEN) {
        let start = from + pos;
        let rest = &text[start + OPEN.len()..];
        let bad = |reason: String| InvalidSecretRef { offset: start, reason };
        let quote = rest
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '\'')
            .ok_or_else(|| bad("expected a quoted reference such as \"env:NAME\"".into()))?;
        let body = &rest[1..];
        let close = body.find(quote).ok_or_else(|| bad("unterminated quote".into()))?;
        let reference = &body[..close];
        let tail = &body[close + 1..];
        if !tail.starts_with(")>") {
            return Err(bad("expected `)>` after the reference".into()));
        }
        let secret = parse(reference).map_err(bad)?;
        let end = start + OPEN.len() + 1 + close + 1 + 2;
        out.push(Found { range: start..end, secret });
        from = end;
    }
    Ok(out)
}

/// Replaces every reference in `text` with the value `resolve` gives for it.
pub fn substitute<E>(
    text: &str,
    mut resolve: impl FnMut(&SecretRef) -> Result<String, E>,
) -> Result<Result<String, E>, InvalidSecretRef> {
    let found = find(text)?;
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for f in found {
        out.push_str(&text[last..f.range.start]);
        match resolve(&f.secret) {
            Ok(v) => out.push_str(&v),
            Err(e) => return Ok(Err(e)),
        }
        last = f.range.end;
    }
    out.push_str(&text[last..]);
    Ok(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_and_substitutes() {
        let t = r#"curl -u admin:<+secrets.getValue("env:PW")> <+secrets.getValue('file:/etc/k')>"#;
        let f = find(t).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].secret, SecretRef::Env("PW".into()));
        assert_eq!(f[1].secret, SecretRef::File("/etc/k".into()));
        let s = substitute(t, |r| Ok::<_, ()>(format!("[{r}]"))).unwrap().unwrap();
        assert_eq!(s, "curl -u admin:[env:PW] [file:/etc/k]");
    }

    #[test]
    fn malformed_references_are_refused_with_offset() {
        for bad in [
            "x <+secrets.getValue(env:A)>",
            "<+secrets.getValue(\"env:A\"",
            "<+secrets.getValue(\"env:A\")",
            "<+secrets.getValue(\"vault:x\")>",
            "<+secrets.getValue(\"file:rel\")>",
        ] {
            assert!(find(bad).is_err(), "{bad}");
        }
        assert_eq!(find("ab <+secrets.getValue(x").unwrap_err().offset, 3);
    }

    proptest! {
        #[test]
        fn never_panics(s in ".*") {
            let _ = find(&s);
        }

        #[test]
        fn text_without_references_is_unchanged(s in "[^<]*") {
            let out = substitute(&s, |_| Ok::<_, ()>(String::new())).unwrap().unwrap();
            prop_assert_eq!(out, s);
        }
    }
}
