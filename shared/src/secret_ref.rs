//! Secret-reference syntax: `<+secrets.getValue("env:NAME")>`,
//! `<+secrets.getValue("file:/path")>` and
//! `<+secrets.getValue("vault://BACKEND/MOUNT/PATH#KEY")>`. The manager only ever
//! finds and validates references; delegates resolve them (DESIGN §4) through
//! [`substitute`].
//!
//! A Vault (or OpenBao) reference names a backend configured on the delegate,
//! then the secrets-engine mount (one path segment), the secret's path below it
//! and, after `#`, the field of the secret to use:
//! `vault://prod/kv/apps/web#db_password` reads field `db_password` of secret
//! `apps/web` on mount `kv` of backend `prod`.

use std::path::PathBuf;

const OPEN: &str = "<+secrets.getValue(";

/// Where a secret value lives, as named by a reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// An environment variable of the delegate process.
    Env(String),
    /// A file on the delegate host; trailing newline is trimmed.
    File(PathBuf),
    /// A field of a secret in a Vault / OpenBao key-value engine.
    Vault(VaultRef),
}

/// Where a `vault://` reference points.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VaultRef {
    /// Name of a backend in the delegate's configuration.
    pub backend: String,
    /// The secrets-engine mount (`secret`, `kv`...).
    pub mount: String,
    /// The secret's path below the mount (`apps/web`), without leading or trailing `/`.
    pub path: String,
    /// The field of the secret to use.
    pub key: String,
}

impl std::fmt::Display for VaultRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "vault://{}/{}/{}#{}", self.backend, self.mount, self.path, self.key)
    }
}

/// Longest accepted `vault://` reference: a reference is a name, not data.
pub const MAX_VAULT_REF_LEN: usize = 1024;

impl VaultRef {
    /// Parses the part after `vault://`: `BACKEND/MOUNT/PATH#KEY`.
    pub fn parse(rest: &str) -> Result<VaultRef, String> {
        let whole = format!("vault://{rest}");
        if whole.len() > MAX_VAULT_REF_LEN {
            return Err(format!("vault reference is longer than {MAX_VAULT_REF_LEN} characters"));
        }
        let (location, key) = rest.split_once('#').ok_or_else(|| {
            format!(
                "{whole:?} has no #key: write vault://BACKEND/MOUNT/PATH#KEY to pick a field of the secret"
            )
        })?;
        if key.is_empty() {
            return Err(format!("{whole:?}: the key after # is empty"));
        }
        if key.contains('#') || key.chars().any(char::is_control) {
            return Err(format!("{whole:?}: the key after # must not contain # or control characters"));
        }
        let mut segments = location.split('/');
        let backend = segments.next().unwrap_or_default();
        if !is_backend_name(backend) {
            return Err(format!(
                "{whole:?}: backend name {backend:?} must be letters, digits, '-' or '_' \
                 (the name of a vault backend in the delegate's configuration)"
            ));
        }
        let mount = segments.next().unwrap_or_default();
        let path: Vec<&str> = segments.collect();
        if mount.is_empty() || path.is_empty() {
            return Err(format!("{whole:?}: expected vault://BACKEND/MOUNT/PATH#KEY (a mount and a path)"));
        }
        for seg in std::iter::once(mount).chain(path.iter().copied()) {
            if seg.is_empty() {
                return Err(format!("{whole:?}: empty path segment (doubled or trailing '/')"));
            }
            if seg == "." || seg == ".." {
                return Err(format!("{whole:?}: path segments `.` and `..` are not allowed"));
            }
            if seg.chars().any(|c| c.is_control() || c.is_whitespace() || matches!(c, '?' | '%' | '\\')) {
                return Err(format!(
                    "{whole:?}: path segment {seg:?} has a space, control character, '?', '%' or '\\'"
                ));
            }
        }
        Ok(VaultRef {
            backend: backend.to_string(),
            mount: mount.to_string(),
            path: path.join("/"),
            key: key.to_string(),
        })
    }
}

/// A vault backend name: `[A-Za-z0-9_-]{1,64}`. The delegate's configuration
/// uses the same rule.
pub fn is_backend_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
            SecretRef::Vault(v) => v.fmt(f),
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
    if let Some(rest) = reference.strip_prefix("vault://") {
        return VaultRef::parse(rest).map(SecretRef::Vault);
    }
    Err(format!(
        "unknown secret store in {reference:?} (expected env:NAME, file:/path or vault://BACKEND/MOUNT/PATH#KEY)"
    ))
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

    #[test]
    fn vault_references_parse() {
        let t = r#"pw=<+secrets.getValue("vault://prod/kv/apps/web#db_password")>"#;
        let f = find(t).unwrap();
        let want = VaultRef {
            backend: "prod".into(),
            mount: "kv".into(),
            path: "apps/web".into(),
            key: "db_password".into(),
        };
        assert_eq!(f[0].secret, SecretRef::Vault(want.clone()));
        assert_eq!(f[0].secret.to_string(), "vault://prod/kv/apps/web#db_password");
        // Keys may hold dots and dashes (`tls.crt`, `api-key`).
        let v = VaultRef::parse("b_1/secret/x#tls.crt").unwrap();
        assert_eq!((v.path.as_str(), v.key.as_str()), ("x", "tls.crt"));
    }

    #[test]
    fn malformed_vault_references_say_what_is_wrong() {
        let cases = [
            ("vault://prod/kv/app", "has no #key"),
            ("vault://prod/kv/app#", "key after # is empty"),
            ("vault://prod/kv#pw", "a mount and a path"),
            ("vault://prod#pw", "a mount and a path"),
            ("vault:///kv/app#pw", "backend name \"\""),
            ("vault://pr od/kv/app#pw", "backend name"),
            ("vault://prod/kv//app#pw", "empty path segment"),
            ("vault://prod/kv/app/#pw", "empty path segment"),
            ("vault://prod/kv/../app#pw", "`..`"),
            ("vault://prod/kv/a?b#pw", "'?'"),
            ("vault://prod/kv/app#a#b", "must not contain #"),
            ("vault:prod/kv/app#pw", "unknown secret store"),
        ];
        for (reference, want) in cases {
            let e = parse(reference).unwrap_err();
            assert!(e.contains(want), "{reference}: {e}");
        }
        let long = format!("vault://p/kv/{}#k", "a".repeat(MAX_VAULT_REF_LEN));
        assert!(parse(&long).unwrap_err().contains("longer than"));
        let text = r#"x <+secrets.getValue("vault://prod/kv/app")>"#;
        let e = find(text).unwrap_err();
        assert_eq!(e.offset, 2);
        assert!(e.to_string().contains("has no #key"), "{e}");
    }

    proptest! {
        #[test]
        fn vault_references_round_trip(
            backend in "[a-z0-9_-]{1,10}",
            mount in "[a-z0-9]{1,8}",
            path in "[a-z0-9._-]{0,5}[a-z0-9]/[a-z0-9]{1,6}",
            key in "[a-zA-Z0-9._-]{1,12}",
        ) {
            let text = format!("vault://{backend}/{mount}/{path}#{key}");
            let parsed = parse(&text).unwrap();
            prop_assert_eq!(parsed.to_string(), text);
        }

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
