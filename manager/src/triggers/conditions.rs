//! A trigger's `payloadConditions`: every condition must hold for a delivery to start
//! the pipeline, and the first one that does not is reported for the trigger's event
//! record.
//!
//! A condition's `key` is either an expression over the `trigger` object
//! (`<+trigger.branch>`, `<+trigger.payload.pull_request.draft>`, or Harness's alias
//! `<+eventPayload.x>` for `<+trigger.payload.x>`), or a bare dotted path into the
//! payload (`pull_request.base.ref`). Path steps may index arrays: `commits.0.id` or
//! `commits[0].id`.
//!
//! Decisions:
//! - Comparison is on text: strings as they are, numbers and booleans as JSON writes
//!   them (`42`, `true`), arrays and objects as compact JSON.
//! - A key with no value (absent or `null`) fails every operator, `NotEquals` and
//!   `NotIn` included: a trigger should not start a pipeline from a delivery that
//!   lacks what it filters on.
//! - Comparisons are case-sensitive. `In`/`NotIn` values are comma-separated, items
//!   trimmed. `Regex` matches anywhere in the value (anchor with `^…$` for the whole).

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most memory one compiled pattern may use; patterns are user-written.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Longest actual value quoted in a failure, in characters.
const MAX_QUOTED: usize = 200;

/// How a condition compares the key's value with its `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operator {
    /// The value is exactly `value`.
    Equals,
    /// The value is anything but `value`.
    NotEquals,
    /// The value is one of the comma-separated items of `value`.
    In,
    /// The value is none of the comma-separated items of `value`.
    NotIn,
    /// The value starts with `value`.
    StartsWith,
    /// The value ends with `value`.
    EndsWith,
    /// The value contains `value`.
    Contains,
    /// The regular expression `value` matches somewhere in the value.
    Regex,
}

impl std::fmt::Display for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// One entry of a trigger's `payloadConditions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadCondition {
    /// `<+trigger.…>` expression or dotted payload path.
    pub key: String,
    /// How to compare.
    pub operator: Operator,
    /// What to compare with.
    pub value: String,
}

/// A condition that cannot be evaluated at all (found when the trigger is saved).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    /// The key is neither a trigger expression nor a payload path.
    #[error("payload condition {}: key `{key}` {reason}", .index + 1)]
    BadKey {
        /// Position in `payloadConditions`, from 0.
        index: usize,
        /// The key as written.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The `Regex` value does not compile.
    #[error("payload condition {}: invalid regex `{pattern}`: {reason}", .index + 1)]
    BadRegex {
        /// Position in `payloadConditions`, from 0.
        index: usize,
        /// The pattern as written.
        pattern: String,
        /// The regex compiler's message.
        reason: String,
    },
}

/// Why a condition did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// The key has a value, and it does not satisfy the operator.
    Mismatch {
        /// The value found (cut to 200 characters).
        actual: String,
    },
    /// The key has no value (absent or `null`) in this delivery.
    Missing,
    /// The condition itself is invalid.
    Invalid(ConditionError),
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Mismatch { actual } => write!(f, "value is `{actual}`"),
            Why::Missing => write!(f, "the key has no value in this delivery"),
            Why::Invalid(e) => write!(f, "invalid condition: {e}"),
        }
    }
}

/// The first condition that did not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "payload condition {} (`{}` {} `{}`) not met: {why}",
    .index + 1, .condition.key, .condition.operator, .condition.value
)]
pub struct ConditionFailure {
    /// Position in `payloadConditions`, from 0.
    pub index: usize,
    /// The condition as written.
    pub condition: PayloadCondition,
    /// Why it did not hold.
    pub why: Why,
}

/// One step of a path into the trigger object.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone)]
struct Compiled {
    condition: PayloadCondition,
    /// Path from the root of the `trigger` object.
    path: Vec<Step>,
    regex: Option<Regex>,
}

/// Conditions checked once (keys parsed, patterns compiled) for evaluating many deliveries.
#[derive(Debug, Clone)]
pub struct Conditions {
    compiled: Vec<Compiled>,
}

impl Conditions {
    /// Parses every key and compiles every pattern; the first invalid condition is the error.
    pub fn compile(conditions: &[PayloadCondition]) -> Result<Self, ConditionError> {
        let compiled = conditions
            .iter()
            .enumerate()
            .map(|(index, c)| {
                let path = parse_key(&c.key).map_err(|reason| ConditionError::BadKey {
                    index,
                    key: c.key.clone(),
                    reason,
                })?;
                let regex = match c.operator {
                    Operator::Regex => {
                        Some(RegexBuilder::new(&c.value).size_limit(REGEX_SIZE_LIMIT).build().map_err(
                            |e| ConditionError::BadRegex {
                                index,
                                pattern: c.value.clone(),
                                reason: e.to_string(),
                            },
                        )?)
                    }
                    _ => None,
                };
                Ok(Compiled { condition: c.clone(), path, regex })
            })
            .collect::<Result<_, _>>()?;
        Ok(Conditions { compiled })
    }

    /// Checks every condition against a `trigger` object (see
    /// [`TriggerPayload::context`](super::payload::TriggerPayload::context)), in order.
    pub fn evaluate(&self, context: &Value) -> Result<(), ConditionFailure> {
        for (index, c) in self.compiled.iter().enumerate() {
            let fail = |why| ConditionFailure { index, condition: c.condition.clone(), why };
            let actual = resolve(context, &c.path).ok_or_else(|| fail(Why::Missing))?;
            if !holds(c, &actual) {
                return Err(fail(Why::Mismatch { actual: quote(&actual) }));
            }
        }
        Ok(())
    }
}

/// Compiles and evaluates in one go; an invalid condition is reported as the failure.
pub fn evaluate(conditions: &[PayloadCondition], context: &Value) -> Result<(), ConditionFailure> {
    let compiled = Conditions::compile(conditions).map_err(|e| {
        let index = match &e {
            ConditionError::BadKey { index, .. } | ConditionError::BadRegex { index, .. } => *index,
        };
        ConditionFailure { index, condition: conditions[index].clone(), why: Why::Invalid(e) }
    })?;
    compiled.evaluate(context)
}

fn holds(c: &Compiled, actual: &str) -> bool {
    let expected = c.condition.value.as_str();
    let in_list = || expected.split(',').map(str::trim).any(|item| item == actual);
    match c.condition.operator {
        Operator::Equals => actual == expected,
        Operator::NotEquals => actual != expected,
        Operator::In => in_list(),
        Operator::NotIn => !in_list(),
        Operator::StartsWith => actual.starts_with(expected),
        Operator::EndsWith => actual.ends_with(expected),
        Operator::Contains => actual.contains(expected),
        Operator::Regex => c.regex.as_ref().is_some_and(|r| r.is_match(actual)),
    }
}

/// Turns a key into a path from the root of the `trigger` object.
fn parse_key(key: &str) -> Result<Vec<Step>, &'static str> {
    let key = key.trim();
    if key.is_empty() {
        return Err("is empty");
    }
    let (root, rest) = if let Some(inner) = key.strip_prefix("<+") {
        let inner = inner.strip_suffix('>').ok_or("opens `<+` but does not end with `>`")?.trim();
        if let Some(rest) = inner.strip_prefix("trigger.") {
            (None, rest)
        } else if let Some(rest) = inner.strip_prefix("eventPayload.") {
            (Some("payload"), rest)
        } else {
            return Err("is not a `<+trigger.…>` or `<+eventPayload.…>` expression");
        }
    } else if key.contains("<+") {
        return Err("mixes an expression with text; use a single `<+trigger.…>` or a plain path");
    } else {
        (Some("payload"), key)
    };
    let mut path: Vec<Step> = root.map(|r| Step::Key(r.to_owned())).into_iter().collect();
    for segment in rest.split('.') {
        let (name, mut indexes) = match segment.find('[') {
            Some(at) => segment.split_at(at),
            None => (segment, ""),
        };
        if name.is_empty() && indexes.is_empty() {
            return Err("has an empty path step");
        }
        if !name.is_empty() {
            path.push(Step::Key(name.to_owned()));
        }
        while !indexes.is_empty() {
            let close = indexes.find(']').ok_or("has a `[` without `]`")?;
            let n = indexes[1..close].trim().parse().map_err(|_| "has a non-numeric `[index]`")?;
            path.push(Step::Index(n));
            indexes = &indexes[close + 1..];
            if !indexes.is_empty() && !indexes.starts_with('[') {
                return Err("has text after `]`");
            }
        }
    }
    Ok(path)
}

/// The text of the value at `path`, or `None` when it is absent or null.
fn resolve(root: &Value, path: &[Step]) -> Option<String> {
    let mut v = root;
    for step in path {
        v = match (step, v) {
            (Step::Key(k), Value::Object(o)) => o.get(k)?,
            // `commits.0.id` indexes an array like `commits[0].id`.
            (Step::Key(k), Value::Array(a)) => a.get(k.parse::<usize>().ok()?)?,
            (Step::Index(i), Value::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn quote(actual: &str) -> String {
    if actual.chars().count() <= MAX_QUOTED {
        actual.to_owned()
    } else {
        let cut: String = actual.chars().take(MAX_QUOTED).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::triggers::payload::TriggerPayload;
    use crate::triggers::webhook::{WebhookEvent, WebhookSource};

    fn cond(key: &str, operator: Operator, value: &str) -> PayloadCondition {
        PayloadCondition { key: key.into(), operator, value: value.into() }
    }

    fn github_pr() -> Value {
        TriggerPayload::parse(
            WebhookSource::Github,
            WebhookEvent::PullRequest,
            include_bytes!("testdata/github_pull_request.json"),
        )
        .unwrap()
        .context()
    }

    fn check(key: &str, operator: Operator, value: &str) -> Result<(), ConditionFailure> {
        evaluate(&[cond(key, operator, value)], &github_pr())
    }

    #[test]
    fn every_operator_holds_and_fails() {
        use Operator::*;
        let branch = "<+trigger.branch>"; // feature/idempotent-refunds
        let cases = [
            (Equals, "feature/idempotent-refunds", "feature/idempotent"),
            (NotEquals, "main", "feature/idempotent-refunds"),
            (In, "main, feature/idempotent-refunds", "main,develop"),
            (NotIn, "main,develop", "develop , feature/idempotent-refunds"),
            (StartsWith, "feature/", "refunds"),
            (EndsWith, "-refunds", "feature/"),
            (Contains, "idempotent", "Idempotent"),
            (Regex, "^feature/[a-z-]+$", "^release/"),
        ];
        for (op, holds, fails) in cases {
            assert_eq!(check(branch, op, holds), Ok(()), "{op} {holds}");
            let err = check(branch, op, fails).unwrap_err();
            assert_eq!(
                err.why,
                Why::Mismatch { actual: "feature/idempotent-refunds".into() },
                "{op} {fails}"
            );
        }
    }

    #[test]
    fn regex_searches_unless_anchored() {
        assert_eq!(check("<+trigger.branch>", Operator::Regex, "idem"), Ok(()));
        assert!(check("<+trigger.branch>", Operator::Regex, "^idem").is_err());
    }

    #[test]
    fn keys_reach_context_fields_and_payload_paths() {
        assert_eq!(check("<+trigger.event>", Operator::Equals, "PullRequest"), Ok(()));
        assert_eq!(check("<+trigger.prNumber>", Operator::Equals, "482"), Ok(()));
        assert_eq!(check("<+ trigger.targetBranch >", Operator::Equals, "main"), Ok(()));
        assert_eq!(check("<+trigger.payload.pull_request.draft>", Operator::Equals, "false"), Ok(()));
        assert_eq!(check("<+eventPayload.pull_request.user.login>", Operator::Equals, "kwame-o"), Ok(()));
        assert_eq!(check("pull_request.base.ref", Operator::Equals, "main"), Ok(()));
        assert_eq!(check("pull_request.labels[1].name", Operator::Equals, "needs-review"), Ok(()));
        assert_eq!(check("pull_request.labels.0.name", Operator::Equals, "payments"), Ok(()));
        assert_eq!(
            check("<+trigger.payload.pull_request.labels[0]>", Operator::Contains, "\"payments\""),
            Ok(())
        );
    }

    #[test]
    fn missing_values_fail_every_operator() {
        for op in [Operator::Equals, Operator::NotEquals, Operator::In, Operator::NotIn, Operator::Regex] {
            for key in ["<+trigger.tag>", "pull_request.nope", "pull_request.labels[9].name", "action.x"] {
                let err = check(key, op, "x").unwrap_err();
                assert_eq!(err.why, Why::Missing, "{key} {op}");
            }
        }
    }

    #[test]
    fn the_first_failing_condition_is_reported() {
        let conditions = [
            cond("<+trigger.targetBranch>", Operator::Equals, "main"),
            cond("<+trigger.action>", Operator::In, "opened,reopened"),
            cond("<+trigger.sender>", Operator::Equals, "nobody"),
        ];
        let err = evaluate(&conditions, &github_pr()).unwrap_err();
        assert_eq!(err.index, 1);
        assert_eq!(err.condition, conditions[1]);
        assert_eq!(
            err.to_string(),
            "payload condition 2 (`<+trigger.action>` In `opened,reopened`) not met: value is `synchronize`"
        );
        assert_eq!(evaluate(&conditions[..1], &github_pr()), Ok(()));
        assert_eq!(evaluate(&[], &github_pr()), Ok(()));
    }

    #[test]
    fn long_values_are_cut_in_failures() {
        let context = json!({ "payload": { "big": "x".repeat(1000) } });
        let err = evaluate(&[cond("big", Operator::Equals, "y")], &context).unwrap_err();
        let Why::Mismatch { actual } = err.why else { panic!() };
        assert_eq!(actual.chars().count(), MAX_QUOTED + 1);
    }

    #[test]
    fn invalid_conditions_are_refused_with_their_position() {
        let bad_keys = [
            ("", "is empty"),
            ("<+pipeline.name>", "is not a `<+trigger.…>` or `<+eventPayload.…>` expression"),
            ("<+trigger.branch", "opens `<+` but does not end with `>`"),
            (
                "refs/<+trigger.branch>",
                "mixes an expression with text; use a single `<+trigger.…>` or a plain path",
            ),
            ("a..b", "has an empty path step"),
            ("commits[x].id", "has a non-numeric `[index]`"),
            ("commits[0.id", "has a `[` without `]`"),
            ("commits[0]x", "has text after `]`"),
        ];
        for (key, reason) in bad_keys {
            let conditions =
                [cond("<+trigger.branch>", Operator::Contains, "f"), cond(key, Operator::Equals, "x")];
            let err = Conditions::compile(&conditions).unwrap_err();
            assert_eq!(err, ConditionError::BadKey { index: 1, key: key.into(), reason }, "{key}");
        }
        let err =
            Conditions::compile(&[cond("<+trigger.branch>", Operator::Regex, "feature/(")]).unwrap_err();
        assert!(matches!(&err, ConditionError::BadRegex { index: 0, pattern, .. } if pattern == "feature/("));
        assert!(err.to_string().starts_with("payload condition 1: invalid regex `feature/(`: "), "{err}");
        // Through `evaluate`, the invalid condition is the failure.
        let failure = check("<+trigger.branch>", Operator::Regex, "(").unwrap_err();
        assert!(matches!(failure.why, Why::Invalid(ConditionError::BadRegex { .. })));
    }

    #[test]
    fn compiled_conditions_are_reusable() {
        let compiled = Conditions::compile(&[cond("<+trigger.branch>", Operator::Equals, "main")]).unwrap();
        assert_eq!(compiled.evaluate(&json!({ "branch": "main" })), Ok(()));
        assert!(compiled.evaluate(&json!({ "branch": "dev" })).is_err());
        assert!(compiled.evaluate(&json!({ "branch": null })).is_err());
    }

    #[test]
    fn operators_read_from_yaml_names() {
        let c: PayloadCondition = serde_json::from_value(
            json!({ "key": "<+trigger.branch>", "operator": "NotIn", "value": "a,b" }),
        )
        .unwrap();
        assert_eq!(c.operator, Operator::NotIn);
        assert!(serde_json::from_value::<Operator>(json!("Matches")).is_err());
    }
}
