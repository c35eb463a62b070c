//! Authenticating webhook deliveries. Pure functions over (headers, raw body, secret).
//!
//! - GitHub signs the raw body: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`;
//!   the event is `X-GitHub-Event` (`push`, `pull_request`, `ping`).
//! - GitLab sends the secret itself: `X-Gitlab-Token: <secret>`; the event is
//!   `X-Gitlab-Event` (`Push Hook`, `Tag Push Hook`, `Merge Request Hook`).
//! - Custom senders either sign like GitHub (`X-Dray-Signature: sha256=<hex>`) or send
//!   `Authorization: Bearer <secret>`; the event is `X-Dray-Event` (default `custom`).
//!
//! Authentication is checked before anything else is looked at, so an unauthenticated
//! caller learns nothing about which events or payloads a trigger accepts. Every
//! comparison with the secret is constant-time, and no error echoes a header value that
//! could hold the secret.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::payload::TriggerPayload;

/// GitHub's HMAC signature header.
pub const GITHUB_SIGNATURE: &str = "X-Hub-Signature-256";
/// GitHub's event header.
pub const GITHUB_EVENT: &str = "X-GitHub-Event";
/// GitHub's per-delivery id header.
pub const GITHUB_DELIVERY: &str = "X-GitHub-Delivery";
/// GitLab's secret token header.
pub const GITLAB_TOKEN: &str = "X-Gitlab-Token";
/// GitLab's event header.
pub const GITLAB_EVENT: &str = "X-Gitlab-Event";
/// GitLab's per-delivery id header.
pub const GITLAB_DELIVERY: &str = "X-Gitlab-Event-UUID";
/// Custom webhooks' HMAC signature header (same format as GitHub's).
pub const CUSTOM_SIGNATURE: &str = "X-Dray-Signature";
/// Custom webhooks' event header.
pub const CUSTOM_EVENT: &str = "X-Dray-Event";
/// Custom webhooks' optional per-delivery id header.
pub const CUSTOM_DELIVERY: &str = "X-Dray-Delivery";
/// The event name of a custom delivery without `X-Dray-Event`.
pub const CUSTOM_DEFAULT_EVENT: &str = "custom";

/// What a custom delivery without any credential is missing.
const CUSTOM_AUTH_HEADERS: &str = "X-Dray-Signature or Authorization";

/// Longest event name or delivery id accepted; longer values are refused, not cut.
const MAX_HEADER_TOKEN: usize = 128;

/// Which kind of sender a webhook trigger expects; the trigger YAML's `spec.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WebhookSource {
    /// GitHub (signed with HMAC-SHA256).
    Github,
    /// GitLab (secret token header).
    Gitlab,
    /// Any sender of JSON (HMAC-SHA256 signature or bearer secret).
    Custom,
}

impl std::fmt::Display for WebhookSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WebhookSource::Github => "GitHub",
            WebhookSource::Gitlab => "GitLab",
            WebhookSource::Custom => "custom",
        })
    }
}

/// What a delivery is about, in the trigger YAML's vocabulary (`events: [Push, …]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WebhookEvent {
    /// Commits pushed to a branch.
    Push,
    /// A GitHub pull request was opened, updated, closed….
    PullRequest,
    /// A GitLab merge request was opened, updated, merged….
    MergeRequest,
    /// A tag was pushed.
    Tag,
    /// GitHub checking that the hook works; starts nothing by itself.
    Ping,
    /// A custom sender's own event name (`X-Dray-Event`).
    Custom(String),
}

impl WebhookEvent {
    /// The name used in trigger YAML and in `<+trigger.event>`.
    pub fn name(&self) -> &str {
        match self {
            WebhookEvent::Push => "Push",
            WebhookEvent::PullRequest => "PullRequest",
            WebhookEvent::MergeRequest => "MergeRequest",
            WebhookEvent::Tag => "Tag",
            WebhookEvent::Ping => "Ping",
            WebhookEvent::Custom(name) => name,
        }
    }

    /// Whether a trigger listening for `events` wants this event: an empty list means
    /// every event; names compare without regard to ASCII case (`push` = `Push`).
    pub fn matches_filter<S: AsRef<str>>(&self, events: &[S]) -> bool {
        events.is_empty() || events.iter().any(|e| e.as_ref().eq_ignore_ascii_case(self.name()))
    }
}

/// An authenticated delivery, before its body is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Who sent it.
    pub source: WebhookSource,
    /// The event named by the headers. A GitHub `push` of a tag is refined to
    /// [`WebhookEvent::Tag`] once the body is parsed.
    pub event: WebhookEvent,
    /// The sender's id for this delivery, when it sends one; the idempotency key of the
    /// execution it starts (a redelivery must not start a second one).
    pub delivery_id: Option<String>,
}

/// An authenticated, parsed delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The sender's id for this delivery, when it sends one.
    pub delivery_id: Option<String>,
    /// The normalised payload.
    pub payload: TriggerPayload,
}

/// Why a delivery was refused. Messages name the header or the problem, never a
/// header's value (it may be the secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The trigger has no secret, so nothing could prove who sent the delivery.
    #[error("the webhook trigger has no secret configured; refusing unauthenticated deliveries")]
    NoSecret,
    /// A required header is absent.
    #[error("missing header {header}")]
    MissingHeader {
        /// The header (or alternatives) expected.
        header: &'static str,
    },
    /// A header is present but not in the expected form.
    #[error("malformed header {header}: {reason}")]
    MalformedHeader {
        /// The header.
        header: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The HMAC of the body under the trigger's secret is not the one sent.
    #[error(
        "signature in {header} does not match the body and the trigger's secret (wrong secret or altered body)"
    )]
    SignatureMismatch {
        /// The signature header.
        header: &'static str,
    },
    /// The token sent is not the trigger's secret.
    #[error("token in {header} does not match the trigger's secret")]
    TokenMismatch {
        /// The token header.
        header: &'static str,
    },
    /// The body does not parse as JSON.
    #[error("body is not JSON: {reason}")]
    BodyNotJson {
        /// The parser's message (position, not content).
        reason: String,
    },
    /// The body is JSON, but not an object.
    #[error("body is JSON but not an object (found {found})")]
    BodyNotObject {
        /// The JSON type found.
        found: &'static str,
    },
    /// The event header names an event this source does not support.
    #[error("unsupported {provider} event `{event}` (supported: {supported})")]
    UnsupportedEvent {
        /// Who sent it.
        provider: WebhookSource,
        /// The event name sent (visible ASCII, at most 128 characters).
        event: String,
        /// The event names accepted.
        supported: &'static str,
    },
}

impl WebhookError {
    /// True when the delivery was not authenticated (no secret, or a missing, malformed or
    /// wrong signature or token), as opposed to authenticated but unreadable or about an
    /// event this source does not support.
    pub fn is_unauthenticated(&self) -> bool {
        const AUTH_HEADERS: [&str; 5] =
            [GITHUB_SIGNATURE, GITLAB_TOKEN, CUSTOM_SIGNATURE, "Authorization", CUSTOM_AUTH_HEADERS];
        match self {
            WebhookError::NoSecret
            | WebhookError::SignatureMismatch { .. }
            | WebhookError::TokenMismatch { .. } => true,
            WebhookError::MissingHeader { header } | WebhookError::MalformedHeader { header, .. } => {
                AUTH_HEADERS.contains(header)
            }
            WebhookError::BodyNotJson { .. }
            | WebhookError::BodyNotObject { .. }
            | WebhookError::UnsupportedEvent { .. } => false,
        }
    }
}

/// Authenticates a delivery and parses its body: [`verify`] then [`TriggerPayload::parse`].
pub fn receive(
    source: WebhookSource,
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
) -> Result<Delivery, WebhookError> {
    let verified = verify(source, headers, body, secret)?;
    let payload = TriggerPayload::parse(source, verified.event, body)?;
    Ok(Delivery { delivery_id: verified.delivery_id, payload })
}

/// Authenticates a delivery from `source` and reads its event and delivery id.
pub fn verify(
    source: WebhookSource,
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
) -> Result<Verified, WebhookError> {
    match source {
        WebhookSource::Github => verify_github(headers, body, secret),
        WebhookSource::Gitlab => verify_gitlab(headers, body, secret),
        WebhookSource::Custom => verify_custom(headers, body, secret),
    }
}

/// GitHub: `X-Hub-Signature-256` HMAC, event from `X-GitHub-Event`.
pub fn verify_github(headers: &HeaderMap, body: &[u8], secret: &[u8]) -> Result<Verified, WebhookError> {
    require_secret(secret)?;
    let signature =
        header(headers, GITHUB_SIGNATURE)?.ok_or(WebhookError::MissingHeader { header: GITHUB_SIGNATURE })?;
    check_hmac(GITHUB_SIGNATURE, signature, body, secret)?;
    let name = header(headers, GITHUB_EVENT)?.ok_or(WebhookError::MissingHeader { header: GITHUB_EVENT })?;
    let event = match name {
        "push" => WebhookEvent::Push,
        "pull_request" => WebhookEvent::PullRequest,
        "ping" => WebhookEvent::Ping,
        other => return Err(unsupported(WebhookSource::Github, other, "push, pull_request, ping")),
    };
    let delivery_id = token_header(headers, GITHUB_DELIVERY)?;
    Ok(Verified { source: WebhookSource::Github, event, delivery_id })
}

/// GitLab: `X-Gitlab-Token` equal to the secret, event from `X-Gitlab-Event`.
pub fn verify_gitlab(headers: &HeaderMap, _body: &[u8], secret: &[u8]) -> Result<Verified, WebhookError> {
    require_secret(secret)?;
    let token = header(headers, GITLAB_TOKEN)?.ok_or(WebhookError::MissingHeader { header: GITLAB_TOKEN })?;
    check_token(GITLAB_TOKEN, token, secret)?;
    let name = header(headers, GITLAB_EVENT)?.ok_or(WebhookError::MissingHeader { header: GITLAB_EVENT })?;
    let event = match name {
        "Push Hook" => WebhookEvent::Push,
        "Tag Push Hook" => WebhookEvent::Tag,
        "Merge Request Hook" => WebhookEvent::MergeRequest,
        other => {
            return Err(unsupported(
                WebhookSource::Gitlab,
                other,
                "Push Hook, Tag Push Hook, Merge Request Hook",
            ));
        }
    };
    let delivery_id = token_header(headers, GITLAB_DELIVERY)?;
    Ok(Verified { source: WebhookSource::Gitlab, event, delivery_id })
}

/// Custom: `X-Dray-Signature` HMAC if present, else `Authorization: Bearer <secret>`;
/// event from `X-Dray-Event` (default `custom`).
pub fn verify_custom(headers: &HeaderMap, body: &[u8], secret: &[u8]) -> Result<Verified, WebhookError> {
    require_secret(secret)?;
    // A signature is the stronger proof (it covers the body), so it wins when both are sent.
    if let Some(signature) = header(headers, CUSTOM_SIGNATURE)? {
        check_hmac(CUSTOM_SIGNATURE, signature, body, secret)?;
    } else if let Some(auth) = header(headers, "Authorization")? {
        let token = bearer_token(auth)?;
        check_token("Authorization", token, secret)?;
    } else {
        return Err(WebhookError::MissingHeader { header: CUSTOM_AUTH_HEADERS });
    }
    let event = match token_header(headers, CUSTOM_EVENT)? {
        Some(name) => WebhookEvent::Custom(name),
        None => WebhookEvent::Custom(CUSTOM_DEFAULT_EVENT.to_owned()),
    };
    let delivery_id = token_header(headers, CUSTOM_DELIVERY)?;
    Ok(Verified { source: WebhookSource::Custom, event, delivery_id })
}

fn require_secret(secret: &[u8]) -> Result<(), WebhookError> {
    if secret.is_empty() { Err(WebhookError::NoSecret) } else { Ok(()) }
}

/// The value of a header sent at most once, as trimmed visible ASCII. A header sent
/// twice is refused: which copy a proxy or framework picks is not something to guess.
fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, WebhookError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(WebhookError::MalformedHeader { header: name, reason: "sent more than once" });
    }
    let text = value
        .to_str()
        .map_err(|_| WebhookError::MalformedHeader { header: name, reason: "not visible ASCII" })?;
    Ok(Some(text.trim()))
}

/// An optional header holding a short identifier (event name, delivery id).
fn token_header(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, WebhookError> {
    let Some(value) = header(headers, name)? else { return Ok(None) };
    let ok = !value.is_empty()
        && value.len() <= MAX_HEADER_TOKEN
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
    if !ok {
        return Err(WebhookError::MalformedHeader {
            header: name,
            reason: "expected 1 to 128 characters of letters, digits and -_.:/",
        });
    }
    Ok(Some(value.to_owned()))
}

/// Checks `sha256=<64 hex digits>` against HMAC-SHA256(secret, body) in constant time.
fn check_hmac(header: &'static str, value: &str, body: &[u8], secret: &[u8]) -> Result<(), WebhookError> {
    const FORM: &str = "expected `sha256=` followed by 64 hex digits";
    let malformed = WebhookError::MalformedHeader { header, reason: FORM };
    let (scheme, hex_digits) = value.split_once('=').ok_or(malformed.clone())?;
    if !scheme.eq_ignore_ascii_case("sha256") || hex_digits.len() != 64 {
        return Err(malformed);
    }
    let sent = hex::decode(hex_digits).map_err(|_| malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    mac.verify_slice(&sent).map_err(|_| WebhookError::SignatureMismatch { header })
}

/// Compares a sent token with the secret in constant time. Both sides are hashed first so
/// the comparison takes the same time whatever the sent token's length.
fn check_token(header: &'static str, sent: &str, secret: &[u8]) -> Result<(), WebhookError> {
    if sent.is_empty() {
        return Err(WebhookError::MalformedHeader { header, reason: "empty token" });
    }
    let sent = Sha256::digest(sent.as_bytes());
    let expected = Sha256::digest(secret);
    if bool::from(sent.ct_eq(&expected)) { Ok(()) } else { Err(WebhookError::TokenMismatch { header }) }
}

/// The token of `Bearer <token>` (scheme case-insensitive, as HTTP says).
fn bearer_token(value: &str) -> Result<&str, WebhookError> {
    let malformed =
        WebhookError::MalformedHeader { header: "Authorization", reason: "expected `Bearer <secret>`" };
    let (scheme, token) = value.split_once(' ').ok_or(malformed.clone())?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed);
    }
    Ok(token)
}

fn unsupported(provider: WebhookSource, event: &str, supported: &'static str) -> WebhookError {
    // `header` guarantees visible ASCII; the cut keeps a hostile value from bloating logs.
    let event: String = event.chars().take(MAX_HEADER_TOKEN).collect();
    WebhookError::UnsupportedEvent { provider, event, supported }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderName, HeaderValue};
    use proptest::prelude::*;

    use super::*;

    const SECRET: &[u8] = b"It's a Secret to Everybody";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn authentication_failures_are_told_apart_from_bad_deliveries() {
        let body = br#"{"ref": "refs/heads/main"}"#;
        let unauthenticated = [
            verify(WebhookSource::Github, &headers(&[(GITHUB_EVENT, "push")]), body, SECRET),
            verify(WebhookSource::Github, &headers(&[(GITHUB_SIGNATURE, "sha256=zz")]), body, SECRET),
            verify(
                WebhookSource::Github,
                &headers(&[(GITHUB_SIGNATURE, &sign(b"other", body))]),
                body,
                SECRET,
            ),
            verify(WebhookSource::Gitlab, &headers(&[(GITLAB_EVENT, "Push Hook")]), body, SECRET),
            verify(WebhookSource::Gitlab, &headers(&[(GITLAB_TOKEN, "nope")]), body, SECRET),
            verify(WebhookSource::Custom, &headers(&[]), body, SECRET),
            verify(WebhookSource::Custom, &headers(&[("Authorization", "Basic x")]), body, SECRET),
            verify(
                WebhookSource::Custom,
                &headers(&[(CUSTOM_SIGNATURE, &sign(SECRET, b"{}"))]),
                body,
                SECRET,
            ),
            verify(WebhookSource::Custom, &headers(&[("Authorization", "Bearer x")]), body, b""),
        ];
        for r in unauthenticated {
            let e = r.unwrap_err();
            assert!(e.is_unauthenticated(), "{e}");
        }
        let signed = sign(SECRET, body);
        let authenticated_but_bad = [
            verify(WebhookSource::Github, &headers(&[(GITHUB_SIGNATURE, &signed)]), body, SECRET).map(|_| ()),
            verify(
                WebhookSource::Github,
                &headers(&[(GITHUB_SIGNATURE, &signed), (GITHUB_EVENT, "issues")]),
                body,
                SECRET,
            )
            .map(|_| ()),
            receive(
                WebhookSource::Custom,
                &headers(&[(CUSTOM_SIGNATURE, &sign(SECRET, b"[1]"))]),
                b"[1]",
                SECRET,
            )
            .map(|_| ()),
        ];
        for r in authenticated_but_bad {
            let e = r.unwrap_err();
            assert!(!e.is_unauthenticated(), "{e}");
        }
    }

    #[test]
    fn github_known_answer_from_its_documentation() {
        // The example GitHub publishes for validating webhook deliveries.
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let h = headers(&[(GITHUB_SIGNATURE, sig), (GITHUB_EVENT, "ping")]);
        let v = verify_github(&h, b"Hello, World!", SECRET).unwrap();
        assert_eq!(v.event, WebhookEvent::Ping);
        assert_eq!(v.source, WebhookSource::Github);
        assert_eq!(sign(SECRET, b"Hello, World!"), sig);
    }

    #[test]
    fn github_good_signature_reads_event_and_delivery() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let sig = sign(SECRET, body);
        for (name, event) in [
            ("push", WebhookEvent::Push),
            ("pull_request", WebhookEvent::PullRequest),
            ("ping", WebhookEvent::Ping),
        ] {
            // Header names are case-insensitive on the wire.
            let h = headers(&[
                ("x-hub-signature-256", &sig),
                ("X-GITHUB-EVENT", name),
                (GITHUB_DELIVERY, "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ]);
            let v = verify_github(&h, body, SECRET).unwrap();
            assert_eq!(v.event, event);
            assert_eq!(v.delivery_id.as_deref(), Some("72d3162e-cc78-11e3-81ab-4c9367dc0958"));
        }
    }

    #[test]
    fn github_uppercase_hex_is_accepted() {
        let body = b"{}";
        let sig = sign(SECRET, body).replace("sha256=", "").to_uppercase();
        let h = headers(&[(GITHUB_SIGNATURE, &format!("sha256={sig}")), (GITHUB_EVENT, "push")]);
        assert!(verify_github(&h, body, SECRET).is_ok());
    }

    #[test]
    fn github_wrong_secret_and_tampered_body_are_mismatches() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let wrong = headers(&[(GITHUB_SIGNATURE, &sign(b"another secret", body)), (GITHUB_EVENT, "push")]);
        assert_eq!(
            verify_github(&wrong, body, SECRET),
            Err(WebhookError::SignatureMismatch { header: GITHUB_SIGNATURE })
        );
        let good = headers(&[(GITHUB_SIGNATURE, &sign(SECRET, body)), (GITHUB_EVENT, "push")]);
        let tampered = br#"{"ref":"refs/heads/prod"}"#;
        assert_eq!(
            verify_github(&good, tampered, SECRET),
            Err(WebhookError::SignatureMismatch { header: GITHUB_SIGNATURE })
        );
    }

    #[test]
    fn github_missing_headers() {
        let body = b"{}";
        let none = headers(&[(GITHUB_EVENT, "push")]);
        assert_eq!(
            verify_github(&none, body, SECRET),
            Err(WebhookError::MissingHeader { header: GITHUB_SIGNATURE })
        );
        // Only the legacy SHA-1 header is not enough.
        let sha1 = headers(&[("X-Hub-Signature", "sha1=0000000000000000000000000000000000000000")]);
        assert_eq!(
            verify_github(&sha1, body, SECRET),
            Err(WebhookError::MissingHeader { header: GITHUB_SIGNATURE })
        );
        let no_event = headers(&[(GITHUB_SIGNATURE, &sign(SECRET, body))]);
        assert_eq!(
            verify_github(&no_event, body, SECRET),
            Err(WebhookError::MissingHeader { header: GITHUB_EVENT })
        );
    }

    #[test]
    fn github_malformed_signatures() {
        let body = b"{}";
        let good_hex = sign(SECRET, body).replace("sha256=", "");
        for bad in [
            good_hex.clone(),                        // no scheme
            format!("sha1={good_hex}"),              // wrong scheme
            format!("sha256={}", &good_hex[..63]),   // too short
            format!("sha256={good_hex}00"),          // too long
            format!("sha256={}zz", &good_hex[..62]), // not hex
            "sha256=".to_owned(),
        ] {
            let h = headers(&[(GITHUB_SIGNATURE, &bad), (GITHUB_EVENT, "push")]);
            match verify_github(&h, body, SECRET) {
                Err(WebhookError::MalformedHeader { header: GITHUB_SIGNATURE, .. }) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn duplicated_and_non_ascii_headers_are_malformed() {
        let body = b"{}";
        let sig = sign(SECRET, body);
        let twice = headers(&[(GITHUB_SIGNATURE, &sig), (GITHUB_SIGNATURE, &sig), (GITHUB_EVENT, "push")]);
        assert_eq!(
            verify_github(&twice, body, SECRET),
            Err(WebhookError::MalformedHeader { header: GITHUB_SIGNATURE, reason: "sent more than once" })
        );
        let mut binary = headers(&[(GITHUB_EVENT, "push")]);
        binary.insert(GITHUB_SIGNATURE, HeaderValue::from_bytes(b"sha256=\xff").unwrap());
        assert_eq!(
            verify_github(&binary, body, SECRET),
            Err(WebhookError::MalformedHeader { header: GITHUB_SIGNATURE, reason: "not visible ASCII" })
        );
    }

    #[test]
    fn event_is_checked_only_after_authentication() {
        let body = b"{}";
        let unauthenticated = headers(&[(GITHUB_SIGNATURE, &sign(b"guess", body)), (GITHUB_EVENT, "issues")]);
        assert!(matches!(
            verify_github(&unauthenticated, body, SECRET),
            Err(WebhookError::SignatureMismatch { .. })
        ));
        let authenticated = headers(&[(GITHUB_SIGNATURE, &sign(SECRET, body)), (GITHUB_EVENT, "issues")]);
        let err = verify_github(&authenticated, body, SECRET).unwrap_err();
        assert_eq!(
            err,
            WebhookError::UnsupportedEvent {
                provider: WebhookSource::Github,
                event: "issues".into(),
                supported: "push, pull_request, ping"
            }
        );
        assert_eq!(
            err.to_string(),
            "unsupported GitHub event `issues` (supported: push, pull_request, ping)"
        );
    }

    #[test]
    fn empty_secret_refuses_every_source() {
        let h = headers(&[(GITLAB_TOKEN, ""), ("Authorization", "Bearer x")]);
        for source in [WebhookSource::Github, WebhookSource::Gitlab, WebhookSource::Custom] {
            assert_eq!(verify(source, &h, b"{}", b""), Err(WebhookError::NoSecret));
        }
    }

    #[test]
    fn gitlab_token_paths() {
        let body = b"{}";
        for (name, event) in [
            ("Push Hook", WebhookEvent::Push),
            ("Tag Push Hook", WebhookEvent::Tag),
            ("Merge Request Hook", WebhookEvent::MergeRequest),
        ] {
            let h = headers(&[
                (GITLAB_TOKEN, "It's a Secret to Everybody"),
                (GITLAB_EVENT, name),
                (GITLAB_DELIVERY, "13792a34-cac6-4fda-95a8-c58e00a3954e"),
            ]);
            let v = verify_gitlab(&h, body, SECRET).unwrap();
            assert_eq!(v.event, event);
            assert_eq!(v.delivery_id.as_deref(), Some("13792a34-cac6-4fda-95a8-c58e00a3954e"));
        }
        for wrong in ["It's a Secret to Everybod", "It's a Secret to Everybody!", "x"] {
            let h = headers(&[(GITLAB_TOKEN, wrong), (GITLAB_EVENT, "Push Hook")]);
            assert_eq!(
                verify_gitlab(&h, body, SECRET),
                Err(WebhookError::TokenMismatch { header: GITLAB_TOKEN })
            );
        }
        let missing = headers(&[(GITLAB_EVENT, "Push Hook")]);
        assert_eq!(
            verify_gitlab(&missing, body, SECRET),
            Err(WebhookError::MissingHeader { header: GITLAB_TOKEN })
        );
        let empty = headers(&[(GITLAB_TOKEN, "  "), (GITLAB_EVENT, "Push Hook")]);
        assert_eq!(
            verify_gitlab(&empty, body, SECRET),
            Err(WebhookError::MalformedHeader { header: GITLAB_TOKEN, reason: "empty token" })
        );
        let other = headers(&[(GITLAB_TOKEN, "It's a Secret to Everybody"), (GITLAB_EVENT, "Issue Hook")]);
        assert!(matches!(
            verify_gitlab(&other, body, SECRET),
            Err(WebhookError::UnsupportedEvent { provider: WebhookSource::Gitlab, .. })
        ));
    }

    #[test]
    fn custom_signature_paths() {
        let body = br#"{"branch":"main"}"#;
        let h = headers(&[(CUSTOM_SIGNATURE, &sign(SECRET, body)), (CUSTOM_EVENT, "release.published")]);
        let v = verify_custom(&h, body, SECRET).unwrap();
        assert_eq!(v.event, WebhookEvent::Custom("release.published".into()));
        assert_eq!(v.delivery_id, None);

        let wrong = headers(&[(CUSTOM_SIGNATURE, &sign(b"nope", body))]);
        assert_eq!(
            verify_custom(&wrong, body, SECRET),
            Err(WebhookError::SignatureMismatch { header: CUSTOM_SIGNATURE })
        );
        assert_eq!(
            verify_custom(&h, br#"{"branch":"prod"}"#, SECRET),
            Err(WebhookError::SignatureMismatch { header: CUSTOM_SIGNATURE })
        );
        let malformed = headers(&[(CUSTOM_SIGNATURE, "sha256=abc")]);
        assert!(matches!(
            verify_custom(&malformed, body, SECRET),
            Err(WebhookError::MalformedHeader { header: CUSTOM_SIGNATURE, .. })
        ));
        // A bad signature is not rescued by a good bearer token.
        let both = headers(&[(CUSTOM_SIGNATURE, &sign(b"nope", body)), ("Authorization", "Bearer x")]);
        assert!(matches!(verify_custom(&both, body, SECRET), Err(WebhookError::SignatureMismatch { .. })));
    }

    #[test]
    fn custom_bearer_paths() {
        let body = b"{}";
        let h = headers(&[("Authorization", "bearer It's a Secret to Everybody"), (CUSTOM_DELIVERY, "d-1")]);
        let v = verify_custom(&h, body, SECRET).unwrap();
        assert_eq!(v.event, WebhookEvent::Custom(CUSTOM_DEFAULT_EVENT.into()));
        assert_eq!(v.delivery_id.as_deref(), Some("d-1"));

        let wrong = headers(&[("Authorization", "Bearer It's a secret to everybody")]);
        assert_eq!(
            verify_custom(&wrong, body, SECRET),
            Err(WebhookError::TokenMismatch { header: "Authorization" })
        );
        for bad in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "It's a Secret to Everybody"] {
            let h = headers(&[("Authorization", bad)]);
            assert!(
                matches!(
                    verify_custom(&h, body, SECRET),
                    Err(WebhookError::MalformedHeader { header: "Authorization", .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            verify_custom(&HeaderMap::new(), body, SECRET),
            Err(WebhookError::MissingHeader { header: "X-Dray-Signature or Authorization" })
        );
        let bad_event =
            headers(&[("Authorization", "Bearer It's a Secret to Everybody"), (CUSTOM_EVENT, "a b")]);
        assert!(matches!(
            verify_custom(&bad_event, body, SECRET),
            Err(WebhookError::MalformedHeader { header: CUSTOM_EVENT, .. })
        ));
    }

    #[test]
    fn errors_never_echo_the_secret() {
        let secret = b"s3cr3t-value";
        let body = b"{}";
        let cases = [
            headers(&[(GITLAB_TOKEN, "s3cr3t-valu"), (GITLAB_EVENT, "Push Hook")]),
            headers(&[("Authorization", "Bearer s3cr3t-valux")]),
            headers(&[("Authorization", "Token s3cr3t-value")]),
        ];
        for (i, h) in cases.iter().enumerate() {
            let source = if i == 0 { WebhookSource::Gitlab } else { WebhookSource::Custom };
            let err = verify(source, h, body, secret).unwrap_err();
            assert!(!format!("{err} {err:?}").contains("s3cr3t"), "{err}");
        }
    }

    #[test]
    fn event_filter() {
        assert!(WebhookEvent::Push.matches_filter::<&str>(&[]));
        assert!(WebhookEvent::Push.matches_filter(&["PullRequest", "push"]));
        assert!(!WebhookEvent::Tag.matches_filter(&["Push"]));
        assert!(WebhookEvent::Custom("deploy".into()).matches_filter(&["Deploy".to_owned()]));
    }

    fn header_name() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            GITHUB_SIGNATURE,
            GITHUB_EVENT,
            GITHUB_DELIVERY,
            GITLAB_TOKEN,
            GITLAB_EVENT,
            GITLAB_DELIVERY,
            CUSTOM_SIGNATURE,
            CUSTOM_EVENT,
            CUSTOM_DELIVERY,
            "Authorization",
            "Content-Type",
        ])
    }

    fn header_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..80),
            "(sha256=)?[0-9a-fA-F]{0,70}".prop_map(String::into_bytes),
            "(Bearer |bearer )?[ -~]{0,30}".prop_map(String::into_bytes),
            prop::sample::select(vec!["push", "pull_request", "ping", "Push Hook", "Merge Request Hook"])
                .prop_map(|s| s.as_bytes().to_vec()),
        ]
    }

    proptest! {
        #[test]
        fn verifiers_never_panic(
            pairs in prop::collection::vec((header_name(), header_value()), 0..8),
            body in prop::collection::vec(any::<u8>(), 0..200),
            secret in prop::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                if let Ok(value) = HeaderValue::from_bytes(&value) {
                    map.append(name, value);
                }
            }
            for source in [WebhookSource::Github, WebhookSource::Gitlab, WebhookSource::Custom] {
                let _ = receive(source, &map, &body, &secret);
            }
        }

        #[test]
        fn a_correct_signature_always_verifies(
            body in prop::collection::vec(any::<u8>(), 0..200),
            secret in prop::collection::vec(any::<u8>(), 1..40),
        ) {
            let h = headers(&[(GITHUB_SIGNATURE, &sign(&secret, &body)), (GITHUB_EVENT, "push")]);
            prop_assert!(verify_github(&h, &body, &secret).is_ok());
        }
    }
}
