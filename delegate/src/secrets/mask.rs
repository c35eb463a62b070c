//! Masking of secret values in task output. A [`Masker`] is built from the
//! values resolved for one task and replaces, in every log line and in the
//! result message, each value and its common encodings with [`MASK`]:
//!
//! - the value itself;
//! - standard and URL-safe base64, with and without padding (also of the value
//!   followed by a newline, which is what `echo "$S" | base64` produces), and
//!   for long values each 76- and 64-column line of the wrapped encoding;
//! - percent-encoding with every non-alphanumeric byte encoded, with the RFC 3986
//!   unreserved characters left alone (what most URL libraries emit), and
//!   form-style (`application/x-www-form-urlencoded`, space as `+`);
//! - the JSON string-escaped form (a value with a quote, backslash or control
//!   character inside a JSON body or a JSON output), both with non-ASCII kept
//!   and with it escaped as `\uXXXX` (Python's `json.dumps` default);
//! - for a value spanning several lines (a PEM key, a kubeconfig), each of its
//!   lines on its own, since logs arrive line by line: every line at least
//!   [`MIN_LINE_CHARS`] characters long once surrounding whitespace is trimmed.
//!   Shorter lines (`}`, `-----`, an empty line) would mask ordinary text all
//!   over the log and reveal little on their own, so they are left alone.
//!
//! All occurrences of all needles are located in the original line first and the
//! covered ranges merged, then replaced in one pass. Replacing needle by needle
//! could let a shorter needle match across the mask of a longer one or leave a
//! fragment of an overlapping secret; the range pass makes the guarantee simple:
//! no needle that contains no `*` survives masking.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::SecretValue;

/// What a secret is replaced with.
pub const MASK: &str = "**************";

/// Shortest line of a multi-line value that is masked on its own.
pub const MIN_LINE_CHARS: usize = 8;

/// RFC 3986 unreserved characters stay literal (`encodeURIComponent`, Python's `quote`).
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// Form encoding leaves these literal and turns spaces into `+` (handled separately).
const FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'*').remove(b'-').remove(b'.').remove(b'_');

/// Replaces known secret values (and their encodings) in text.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Longest first, so that when two needles start at the same place the
    /// longer one decides the range.
    needles: Vec<String>,
}

impl Masker {
    /// A masker for `values`. Empty values are ignored.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a SecretValue>) -> Self {
        let mut m = Masker::default();
        for v in values {
            m.add(v);
        }
        m
    }

    /// Adds a value (and its encodings).
    pub fn add(&mut self, value: &SecretValue) {
        let v = value.expose();
        if v.is_empty() {
            return;
        }
        let mut with_newline = v.to_string();
        with_newline.push('\n');
        let mut candidates = vec![v.to_string()];
        for raw in [v, with_newline.as_str()] {
            for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
                let encoded = engine.encode(raw);
                // `base64` (coreutils) and PEM wrap at 76 and 64 columns: a long
                // value's encoding arrives split over lines, so mask each wrapped line.
                for width in [76, 64] {
                    if encoded.len() > width {
                        // A very short tail would mask unrelated text all over the log.
                        for chunk in encoded.as_bytes().chunks(width).filter(|c| c.len() >= 8) {
                            candidates.push(String::from_utf8_lossy(chunk).into_owned());
                        }
                    }
                }
                candidates.push(encoded);
            }
        }
        candidates.push(utf8_percent_encode(v, NON_ALPHANUMERIC).to_string());
        candidates.push(utf8_percent_encode(v, URI_COMPONENT).to_string());
        candidates.push(
            v.split(' ')
                .map(|part| utf8_percent_encode(part, FORM).to_string())
                .collect::<Vec<_>>()
                .join("+"),
        );
        candidates.push(json_escaped(v, false));
        candidates.push(json_escaped(v, true));
        if v.contains(['\n', '\r']) {
            for line in v.lines().map(str::trim) {
                if line.chars().count() >= MIN_LINE_CHARS {
                    candidates.push(line.to_string());
                }
            }
        }
        for c in candidates {
            if !c.is_empty() && !self.needles.contains(&c) {
                self.needles.push(c);
            }
        }
        self.needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    }

    /// True when there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every occurrence of every value or encoding replaced by [`MASK`].
    pub fn mask<'t>(&self, text: &'t str) -> Cow<'t, str> {
        if self.needles.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for needle in &self.needles {
            for (start, m) in text.match_indices(needle.as_str()) {
                ranges.push((start, start + m.len()));
            }
        }
        if ranges.is_empty() {
            return Cow::Borrowed(text);
        }
        ranges.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut pos = 0;
        let mut i = 0;
        while i < ranges.len() {
            let (start, mut end) = ranges[i];
            i += 1;
            // Merge every range that overlaps or touches this one.
            while i < ranges.len() && ranges[i].0 <= end {
                end = end.max(ranges[i].1);
                i += 1;
            }
            out.push_str(&text[pos..start]);
            out.push_str(MASK);
            pos = end;
        }
        out.push_str(&text[pos..]);
        Cow::Owned(out)
    }
}

/// `v` as it appears between the quotes of a JSON string: `"`, `\\` and control
/// characters escaped (`\n`, `\u0001`...), and with `ascii_only` every non-ASCII
/// character as `\uXXXX` (UTF-16, so astral characters become surrogate pairs).
fn json_escaped(v: &str, ascii_only: bool) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ascii_only && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn masker(values: &[&str]) -> Masker {
        let vs: Vec<SecretValue> = values.iter().map(|v| SecretValue::new(v.to_string())).collect();
        Masker::new(&vs)
    }

    #[test]
    fn masks_plain_values() {
        let m = masker(&["hunter2"]);
        assert_eq!(m.mask("pw=hunter2 again hunter2"), format!("pw={MASK} again {MASK}"));
        assert_eq!(m.mask("nothing here"), "nothing here");
        assert!(matches!(m.mask("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn masks_common_encodings() {
        let secret = "p@ss w/rd+?";
        let m = masker(&[secret]);
        let encodings = [
            STANDARD.encode(secret),
            STANDARD_NO_PAD.encode(secret),
            URL_SAFE.encode(secret),
            URL_SAFE_NO_PAD.encode(secret),
            STANDARD.encode(format!("{secret}\n")),
            utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string(),
            "p%40ss%20w%2Frd%2B%3F".to_string(),
            "p%40ss+w%2Frd%2B%3F".to_string(),
        ];
        for e in encodings {
            let line = format!("x {e} y");
            assert_eq!(m.mask(&line), format!("x {MASK} y"), "{e}");
        }
    }

    #[test]
    fn masks_json_escaped_forms() {
        let secret = "p\"w\\d\nclé😀";
        let m = masker(&[secret]);
        let serde_form = serde_json::to_string(secret).unwrap();
        let body = format!("{{\"password\":{serde_form}}}");
        assert_eq!(m.mask(&body), format!("{{\"password\":\"{MASK}\"}}"), "{body}");
        // What Python's json.dumps writes by default (ensure_ascii).
        let ascii = r#"{"password": "p\"w\\d\ncl\u00e9\ud83d\ude00"}"#;
        assert_eq!(m.mask(ascii), format!("{{\"password\": \"{MASK}\"}}"));
        // A value needing no escapes adds no extra needle.
        assert_eq!(masker(&["plain"]).needles.iter().filter(|n| n.as_str() == "plain").count(), 1);
    }

    #[test]
    fn longest_value_wins_and_overlaps_merge() {
        let m = masker(&["abc", "abcdef"]);
        assert_eq!(m.mask("1abcdef2"), format!("1{MASK}2"));
        let m = masker(&["abc", "cde"]);
        assert_eq!(m.mask("xabcdex"), format!("x{MASK}x"));
        let m = masker(&["aa"]);
        assert_eq!(m.mask("aaa"), format!("{MASK}a"), "what is left cannot be the secret");
    }

    #[test]
    fn empty_values_are_ignored() {
        let m = masker(&["", ""]);
        assert!(m.is_empty());
        assert_eq!(m.mask("abc"), "abc");
    }

    #[test]
    fn unicode_values_are_masked_on_char_boundaries() {
        let m = masker(&["clé"]);
        assert_eq!(m.mask("la clé: clé"), format!("la {MASK}: {MASK}"));
    }

    proptest! {
        #[test]
        fn a_line_containing_the_secret_never_comes_out_containing_it(
            secret in "[^*]{1,24}",
            other in "[^*]{0,12}",
            before in ".{0,40}",
            after in ".{0,40}",
        ) {
            let m = masker(&[&secret, &other]);
            let line = format!("{before}{secret}{after}");
            let out = m.mask(&line);
            prop_assert!(!out.contains(&secret), "{line:?} -> {out:?}");
            let b64 = format!("{before}{}{after}", STANDARD.encode(&secret));
            prop_assert!(!m.mask(&b64).contains(&STANDARD.encode(&secret)));
            let pct = format!("{before}{}{after}", utf8_percent_encode(&secret, NON_ALPHANUMERIC));
            prop_assert!(!m.mask(&pct).contains(&utf8_percent_encode(&secret, NON_ALPHANUMERIC).to_string()));
            let escaped = serde_json::to_string(&secret).unwrap();
            let escaped = &escaped[1..escaped.len() - 1];
            let json = format!("{before}{escaped}{after}");
            prop_assert!(!m.mask(&json).contains(escaped), "{json:?}");
        }

        #[test]
        fn lines_without_secrets_are_unchanged(line in "[a-z ]{0,60}") {
            let m = masker(&["S3CRET-VALUE"]);
            prop_assert_eq!(m.mask(&line), line.clone());
        }
    }
}

#[cfg(test)]
mod form_tests {
    //! One test per form the module promises to mask.
    use super::*;

    fn masker(v: &str) -> Masker {
        Masker::new([&SecretValue::new(v.to_string())])
    }

    fn assert_masked(m: &Masker, form: &str) {
        let line = format!("before {form} after");
        assert_eq!(m.mask(&line), format!("before {MASK} after"), "form {form:?}");
    }

    // `?>` and `~~` make standard and URL-safe base64 differ (`/`, `+` vs `_`, `-`),
    // and a length of 11 needs padding.
    const S: &str = "db?>pw~~x1!";

    #[test]
    fn standard_base64_with_and_without_padding() {
        let m = masker(S);
        let padded = STANDARD.encode(S);
        assert!(padded.ends_with('='), "{padded}");
        assert_masked(&m, &padded);
        assert_masked(&m, &STANDARD_NO_PAD.encode(S));
        assert_masked(&m, &STANDARD.encode(format!("{S}\n")));
    }

    #[test]
    fn url_safe_base64_with_and_without_padding() {
        let m = masker(S);
        let url = URL_SAFE.encode(S);
        assert_ne!(url, STANDARD.encode(S), "the sample must exercise the URL-safe alphabet");
        assert_masked(&m, &url);
        assert_masked(&m, &URL_SAFE_NO_PAD.encode(S));
        assert_masked(&m, &URL_SAFE_NO_PAD.encode(format!("{S}\n")));
    }

    #[test]
    fn url_encoded_forms() {
        let m = masker("p@ss w/rd");
        assert_masked(&m, "p%40ss%20w%2Frd");
        assert_masked(&m, "p%40ss+w%2Frd");
    }

    #[test]
    fn json_escaped_form() {
        let m = masker("a\"b\\c");
        assert_masked(&m, r#"a\"b\\c"#);
    }

    #[test]
    fn each_long_enough_line_of_a_multi_line_value() {
        let pem = "-----BEGIN KEY-----\nMIIBVwIBADANBgkqhkiG9w0BAQEFAAS\n  abc\n\nQ2xvc2luZ0xpbmVPZktleQ==\r\n-----END KEY-----";
        let m = masker(pem);
        for line in [
            "-----BEGIN KEY-----",
            "MIIBVwIBADANBgkqhkiG9w0BAQEFAAS",
            "Q2xvc2luZ0xpbmVPZktleQ==",
            "-----END KEY-----",
        ] {
            assert_masked(&m, line);
        }
        // Indented when printed: the trimmed line is still found.
        assert_eq!(m.mask("    MIIBVwIBADANBgkqhkiG9w0BAQEFAAS"), format!("    {MASK}"));
        // Lines under MIN_LINE_CHARS are not needles on their own.
        assert_eq!(m.mask("abc and an empty line"), "abc and an empty line");
        // The whole value on one line (JSON-escaped) is still masked.
        assert_masked(&m, serde_json::to_string(pem).unwrap().trim_matches('"'));
        // Its base64 as one line too.
        assert_masked(&m, &STANDARD.encode(pem));
    }

    #[test]
    fn a_single_line_value_adds_no_line_needles() {
        let m = masker("short");
        assert!(!m.needles.is_empty());
        assert_eq!(m.mask("shor"), "shor");
    }
}

#[cfg(test)]
mod wrapped_tests {
    use super::*;

    #[test]
    fn wrapped_base64_of_a_long_secret_is_masked() {
        let secret = "a-very-long-secret-value-that-needs-more-than-seventy-six-base64-chars!!";
        let m = Masker::new([&SecretValue::new(secret.to_string())]);
        let encoded = STANDARD.encode(format!("{secret}\n"));
        for line in encoded.as_bytes().chunks(76) {
            let line = String::from_utf8_lossy(line);
            let out = m.mask(&line);
            assert!(!out.contains(line.as_ref()), "{line} survived as {out}");
        }
    }
}
