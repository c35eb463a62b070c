//! Normalising webhook bodies into one [`TriggerPayload`], and the `trigger` object
//! expressions read (`<+trigger.branch>`, `<+trigger.payload.x.y>`).
//!
//! Fields are read leniently: a field that is absent or of an unexpected type becomes
//! `None` rather than an error, because senders add and drop fields over time and the
//! whole body stays available as `payload` anyway. Only a body that is not a JSON
//! object is refused.
//!
//! `branch` is the branch the delivery is about: the pushed branch for a push, the
//! source (head) branch for a pull or merge request (the code a pipeline would build),
//! and `None` for a tag (see `tag`).

use serde_json::{Value, json};

use super::webhook::{WebhookError, WebhookEvent, WebhookSource};

/// A webhook delivery in one shape, whatever sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerPayload {
    /// Who sent it.
    pub source: WebhookSource,
    /// What it is about.
    pub event: WebhookEvent,
    /// Pushed branch, or the source branch of a pull/merge request.
    pub branch: Option<String>,
    /// Pushed tag, for tag events.
    pub tag: Option<String>,
    /// Branch a pull/merge request would merge into.
    pub target_branch: Option<String>,
    /// Branch a pull/merge request comes from.
    pub source_branch: Option<String>,
    /// Commit the delivery points at (head of the push or of the request).
    pub commit_sha: Option<String>,
    /// Repository full name (`owner/name`, GitLab `path_with_namespace`).
    pub repo: Option<String>,
    /// Repository web address.
    pub repo_url: Option<String>,
    /// Login of the user (or bot) who caused the event.
    pub sender: Option<String>,
    /// Pull request number, or merge request `iid`.
    pub pr_number: Option<u64>,
    /// What happened to a pull/merge request (`opened`, `synchronize`, `merge`…).
    pub action: Option<String>,
    /// The whole body, unchanged.
    pub payload: Value,
}

impl TriggerPayload {
    /// Parses a raw body for an event already read from the headers. A GitHub `push`
    /// of `refs/tags/…` becomes [`WebhookEvent::Tag`], as GitLab reports it.
    pub fn parse(source: WebhookSource, event: WebhookEvent, body: &[u8]) -> Result<Self, WebhookError> {
        let payload: Value =
            serde_json::from_slice(body).map_err(|e| WebhookError::BodyNotJson { reason: e.to_string() })?;
        Self::from_json(source, event, payload)
    }

    /// Normalises an already parsed body, which must be a JSON object.
    pub fn from_json(
        source: WebhookSource,
        event: WebhookEvent,
        payload: Value,
    ) -> Result<Self, WebhookError> {
        if !payload.is_object() {
            return Err(WebhookError::BodyNotObject { found: json_type(&payload) });
        }
        let mut out = TriggerPayload {
            source,
            event,
            branch: None,
            tag: None,
            target_branch: None,
            source_branch: None,
            commit_sha: None,
            repo: None,
            repo_url: None,
            sender: None,
            pr_number: None,
            action: None,
            payload: Value::Null,
        };
        match source {
            WebhookSource::Github => out.read_github(&payload),
            WebhookSource::Gitlab => out.read_gitlab(&payload),
            WebhookSource::Custom => out.read_custom(&payload),
        }
        out.payload = payload;
        Ok(out)
    }

    fn read_github(&mut self, p: &Value) {
        self.repo = text(p, &["repository", "full_name"]);
        self.repo_url = text(p, &["repository", "html_url"]);
        self.sender = text(p, &["sender", "login"]);
        match self.event {
            WebhookEvent::Push => {
                self.set_ref(text(p, &["ref"]));
                self.commit_sha = text(p, &["after"]);
            }
            WebhookEvent::PullRequest => {
                self.action = text(p, &["action"]);
                self.pr_number = number(p, &["number"]).or_else(|| number(p, &["pull_request", "number"]));
                self.source_branch = text(p, &["pull_request", "head", "ref"]);
                self.target_branch = text(p, &["pull_request", "base", "ref"]);
                self.commit_sha = text(p, &["pull_request", "head", "sha"]);
                self.branch = self.source_branch.clone();
            }
            _ => {}
        }
    }

    fn read_gitlab(&mut self, p: &Value) {
        self.repo = text(p, &["project", "path_with_namespace"]);
        self.repo_url = text(p, &["project", "web_url"]);
        match self.event {
            WebhookEvent::Push | WebhookEvent::Tag => {
                self.set_ref(text(p, &["ref"]));
                // `checkout_sha` is null when a branch is deleted; `after` is then all zeros.
                self.commit_sha = text(p, &["checkout_sha"]).or_else(|| text(p, &["after"]));
                self.sender = text(p, &["user_username"]);
            }
            WebhookEvent::MergeRequest => {
                const MR: &str = "object_attributes";
                self.action = text(p, &[MR, "action"]);
                self.pr_number = number(p, &[MR, "iid"]);
                self.source_branch = text(p, &[MR, "source_branch"]);
                self.target_branch = text(p, &[MR, "target_branch"]);
                self.commit_sha = text(p, &[MR, "last_commit", "id"]);
                self.sender = text(p, &["user", "username"]);
                self.branch = self.source_branch.clone();
            }
            _ => {}
        }
    }

    /// Custom bodies are taken as they are: each field under its context name
    /// (`commitSha`) or its snake_case twin (`commit_sha`); the branch from `branch`,
    /// else from `ref`.
    fn read_custom(&mut self, p: &Value) {
        let field = |names: &[&str]| names.iter().find_map(|n| text(p, &[n]));
        match field(&["branch"]) {
            Some(branch) => self.branch = Some(branch),
            None => {
                let keep_event = self.event.clone();
                self.set_ref(field(&["ref"]));
                // A custom sender names its own event; a tag ref does not rename it.
                self.event = keep_event;
            }
        }
        if self.tag.is_none() {
            self.tag = field(&["tag"]);
        }
        self.target_branch = field(&["targetBranch", "target_branch"]);
        self.source_branch = field(&["sourceBranch", "source_branch"]);
        self.commit_sha = field(&["commitSha", "commit_sha", "sha"]);
        self.repo = field(&["repo"]);
        self.repo_url = field(&["repoUrl", "repo_url"]);
        self.sender = field(&["sender"]);
        self.action = field(&["action"]);
        self.pr_number = number(p, &["prNumber"]).or_else(|| number(p, &["pr_number"]));
    }

    /// Splits a git ref into branch or tag; a pushed tag makes the event [`WebhookEvent::Tag`].
    fn set_ref(&mut self, git_ref: Option<String>) {
        let Some(git_ref) = git_ref else { return };
        if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
            self.tag = Some(tag.to_owned());
            self.event = WebhookEvent::Tag;
        } else if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
            self.branch = Some(branch.to_owned());
        } else if !git_ref.starts_with("refs/") {
            // Custom senders often send a bare branch name as `ref`.
            self.branch = Some(git_ref);
        }
    }

    /// The `trigger` object for expressions; absent fields are `null`.
    pub fn context(&self) -> Value {
        json!({
            "type": "Webhook",
            "source": self.source,
            "event": self.event.name(),
            "branch": self.branch,
            "tag": self.tag,
            "targetBranch": self.target_branch,
            "sourceBranch": self.source_branch,
            "commitSha": self.commit_sha,
            "repo": self.repo,
            "repoUrl": self.repo_url,
            "sender": self.sender,
            "prNumber": self.pr_number,
            "action": self.action,
            "payload": self.payload,
        })
    }
}

/// A non-empty string at `path`.
fn text(v: &Value, path: &[&str]) -> Option<String> {
    at(v, path)?.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// A non-negative integer at `path`, given as a number or as decimal digits.
fn number(v: &Value, path: &[&str]) -> Option<u64> {
    match at(v, path)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.as_object().and_then(|o| o.get(*key)))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(source: WebhookSource, event: WebhookEvent, fixture: &str) -> TriggerPayload {
        TriggerPayload::parse(source, event, fixture.as_bytes()).unwrap()
    }

    #[test]
    fn github_push() {
        let p = parse(WebhookSource::Github, WebhookEvent::Push, include_str!("testdata/github_push.json"));
        assert_eq!(p.event, WebhookEvent::Push);
        assert_eq!(p.branch.as_deref(), Some("main"));
        assert_eq!(p.tag, None);
        assert_eq!(p.commit_sha.as_deref(), Some("9b2e7d41c0a5f3e8d6b4a2918273645546372819"));
        assert_eq!(p.repo.as_deref(), Some("acme-corp/payments-api"));
        assert_eq!(p.repo_url.as_deref(), Some("https://github.com/acme-corp/payments-api"));
        assert_eq!(p.sender.as_deref(), Some("iduarte"));
        assert_eq!((p.pr_number, p.action.as_deref(), p.target_branch.as_deref()), (None, None, None));
    }

    #[test]
    fn github_push_of_a_tag_is_a_tag_event() {
        let p =
            parse(WebhookSource::Github, WebhookEvent::Push, include_str!("testdata/github_push_tag.json"));
        assert_eq!(p.event, WebhookEvent::Tag);
        assert_eq!(p.tag.as_deref(), Some("v2.14.0"));
        assert_eq!(p.branch, None);
        assert_eq!(p.sender.as_deref(), Some("release-bot"));
    }

    #[test]
    fn github_pull_request() {
        let p = parse(
            WebhookSource::Github,
            WebhookEvent::PullRequest,
            include_str!("testdata/github_pull_request.json"),
        );
        assert_eq!(p.action.as_deref(), Some("synchronize"));
        assert_eq!(p.pr_number, Some(482));
        assert_eq!(p.source_branch.as_deref(), Some("feature/idempotent-refunds"));
        assert_eq!(p.branch, p.source_branch);
        assert_eq!(p.target_branch.as_deref(), Some("main"));
        assert_eq!(p.commit_sha.as_deref(), Some("e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4"));
        assert_eq!(p.repo.as_deref(), Some("acme-corp/payments-api"));
        assert_eq!(p.sender.as_deref(), Some("kwame-o"));
    }

    #[test]
    fn github_ping() {
        let p = parse(WebhookSource::Github, WebhookEvent::Ping, include_str!("testdata/github_ping.json"));
        assert_eq!(p.event, WebhookEvent::Ping);
        assert_eq!(p.repo.as_deref(), Some("acme-corp/payments-api"));
        assert_eq!((p.branch, p.commit_sha), (None, None));
        assert_eq!(p.payload["zen"], "Design for failure.");
    }

    #[test]
    fn gitlab_push() {
        let p = parse(WebhookSource::Gitlab, WebhookEvent::Push, include_str!("testdata/gitlab_push.json"));
        assert_eq!(p.branch.as_deref(), Some("release/2026.03"));
        assert_eq!(p.commit_sha.as_deref(), Some("b81a4f2c9d3e07165a2b8c4d6e0f1a3b5c7d9e0f"));
        assert_eq!(p.repo.as_deref(), Some("platform/warehouse/inventory-service"));
        assert_eq!(
            p.repo_url.as_deref(),
            Some("https://gitlab.acme.example/platform/warehouse/inventory-service")
        );
        assert_eq!(p.sender.as_deref(), Some("mtanaka"));
    }

    #[test]
    fn gitlab_tag_push() {
        let p =
            parse(WebhookSource::Gitlab, WebhookEvent::Tag, include_str!("testdata/gitlab_tag_push.json"));
        assert_eq!(p.event, WebhookEvent::Tag);
        assert_eq!(p.tag.as_deref(), Some("v5.2.1"));
        assert_eq!(p.branch, None);
        // The tagged commit, not the tag object's id in `after`.
        assert_eq!(p.commit_sha.as_deref(), Some("b81a4f2c9d3e07165a2b8c4d6e0f1a3b5c7d9e0f"));
    }

    #[test]
    fn gitlab_branch_deletion_falls_back_to_after() {
        let body = br#"{"ref":"refs/heads/old","checkout_sha":null,"after":"0000000000000000000000000000000000000000"}"#;
        let p = TriggerPayload::parse(WebhookSource::Gitlab, WebhookEvent::Push, body).unwrap();
        assert_eq!(p.commit_sha.as_deref(), Some("0000000000000000000000000000000000000000"));
    }

    #[test]
    fn gitlab_merge_request() {
        let p = parse(
            WebhookSource::Gitlab,
            WebhookEvent::MergeRequest,
            include_str!("testdata/gitlab_merge_request.json"),
        );
        assert_eq!(p.action.as_deref(), Some("update"));
        assert_eq!(p.pr_number, Some(317));
        assert_eq!(p.source_branch.as_deref(), Some("arao/batch-reservations"));
        assert_eq!(p.branch.as_deref(), Some("arao/batch-reservations"));
        assert_eq!(p.target_branch.as_deref(), Some("main"));
        assert_eq!(p.commit_sha.as_deref(), Some("f0e1d2c3b4a5968778695a4b3c2d1e0f9a8b7c6d"));
        assert_eq!(p.repo.as_deref(), Some("platform/warehouse/inventory-service"));
        assert_eq!(p.sender.as_deref(), Some("arao"));
    }

    #[test]
    fn custom_fields_as_they_are() {
        let event = WebhookEvent::Custom("artifact".into());
        let p = parse(WebhookSource::Custom, event.clone(), include_str!("testdata/custom.json"));
        assert_eq!(p.event, event);
        assert_eq!(p.branch.as_deref(), Some("hotfix/ledger-rounding"));
        assert_eq!(p.commit_sha.as_deref(), Some("5d4c3b2a1f0e9d8c7b6a59483726150493827161"));
        assert_eq!(p.repo.as_deref(), Some("finance/ledger"));
        assert_eq!(p.repo_url.as_deref(), Some("https://git.acme.example/finance/ledger"));
        assert_eq!(p.sender.as_deref(), Some("build-farm"));
        assert_eq!(p.action.as_deref(), Some("artifact-published"));
    }

    #[test]
    fn custom_branch_wins_over_ref_and_snake_case_is_accepted() {
        let body = br#"{"branch":"dev","ref":"refs/heads/main","commit_sha":"abc","pr_number":"12",
                        "target_branch":"main","source_branch":"dev"}"#;
        let p = TriggerPayload::parse(WebhookSource::Custom, WebhookEvent::Custom("custom".into()), body)
            .unwrap();
        assert_eq!(p.branch.as_deref(), Some("dev"));
        assert_eq!(p.commit_sha.as_deref(), Some("abc"));
        assert_eq!(p.pr_number, Some(12));
        assert_eq!((p.target_branch.as_deref(), p.source_branch.as_deref()), (Some("main"), Some("dev")));
        let bare = br#"{"ref":"main"}"#;
        let p = TriggerPayload::parse(WebhookSource::Custom, WebhookEvent::Custom("x".into()), bare).unwrap();
        assert_eq!(p.branch.as_deref(), Some("main"));
        let tag = br#"{"ref":"refs/tags/v1"}"#;
        let p = TriggerPayload::parse(WebhookSource::Custom, WebhookEvent::Custom("x".into()), tag).unwrap();
        assert_eq!((p.tag.as_deref(), p.branch.as_deref()), (Some("v1"), None));
        assert_eq!(p.event, WebhookEvent::Custom("x".into()));
    }

    #[test]
    fn wrong_types_become_none() {
        let body = br#"{"ref":42,"after":["x"],"repository":"acme/x","sender":{"login":null}}"#;
        let p = TriggerPayload::parse(WebhookSource::Github, WebhookEvent::Push, body).unwrap();
        assert_eq!((p.branch, p.commit_sha, p.repo, p.sender), (None, None, None, None));
    }

    #[test]
    fn bodies_that_are_not_json_objects_are_refused() {
        let err = TriggerPayload::parse(WebhookSource::Github, WebhookEvent::Push, b"ref=main").unwrap_err();
        assert!(matches!(err, WebhookError::BodyNotJson { .. }), "{err}");
        assert!(err.to_string().starts_with("body is not JSON: "), "{err}");
        let err = TriggerPayload::parse(WebhookSource::Github, WebhookEvent::Push, b"[1,2]").unwrap_err();
        assert_eq!(err, WebhookError::BodyNotObject { found: "an array" });
        assert_eq!(err.to_string(), "body is JSON but not an object (found an array)");
    }

    #[test]
    fn context_has_every_field_and_the_whole_payload() {
        let p = parse(
            WebhookSource::Github,
            WebhookEvent::PullRequest,
            include_str!("testdata/github_pull_request.json"),
        );
        let c = p.context();
        assert_eq!(c["type"], "Webhook");
        assert_eq!(c["source"], "Github");
        assert_eq!(c["event"], "PullRequest");
        assert_eq!(c["branch"], "feature/idempotent-refunds");
        assert_eq!(c["targetBranch"], "main");
        assert_eq!(c["sourceBranch"], "feature/idempotent-refunds");
        assert_eq!(c["commitSha"], "e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4");
        assert_eq!(c["repo"], "acme-corp/payments-api");
        assert_eq!(c["repoUrl"], "https://github.com/acme-corp/payments-api");
        assert_eq!(c["sender"], "kwame-o");
        assert_eq!(c["prNumber"], 482);
        assert_eq!(c["action"], "synchronize");
        assert_eq!(c["tag"], Value::Null);
        assert_eq!(c["payload"], p.payload);
        assert_eq!(c["payload"]["pull_request"]["labels"][1]["name"], "needs-review");
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec![
            "ref",
            "after",
            "checkout_sha",
            "repository",
            "full_name",
            "html_url",
            "sender",
            "login",
            "pull_request",
            "head",
            "base",
            "sha",
            "number",
            "action",
            "object_attributes",
            "iid",
            "last_commit",
            "id",
            "project",
            "path_with_namespace",
            "user",
            "username",
            "branch",
            "prNumber",
            "commitSha",
            "x",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "(refs/(heads|tags)/)?[ -~]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
            ]
        })
    }

    fn event() -> impl Strategy<Value = WebhookEvent> {
        prop_oneof![
            Just(WebhookEvent::Push),
            Just(WebhookEvent::PullRequest),
            Just(WebhookEvent::MergeRequest),
            Just(WebhookEvent::Tag),
            Just(WebhookEvent::Ping),
            "[a-z]{1,8}".prop_map(WebhookEvent::Custom),
        ]
    }

    proptest! {
        #[test]
        fn parser_never_panics_on_any_bytes(body in prop::collection::vec(any::<u8>(), 0..300), ev in event()) {
            for source in [WebhookSource::Github, WebhookSource::Gitlab, WebhookSource::Custom] {
                if let Ok(p) = TriggerPayload::parse(source, ev.clone(), &body) {
                    let _ = p.context();
                }
            }
        }

        #[test]
        fn parser_never_panics_on_any_json(value in json_value(), ev in event()) {
            let body = serde_json::to_vec(&value).unwrap();
            for source in [WebhookSource::Github, WebhookSource::Gitlab, WebhookSource::Custom] {
                match TriggerPayload::parse(source, ev.clone(), &body) {
                    Ok(p) => prop_assert_eq!(&p.context()["payload"], &value),
                    Err(e) => prop_assert!(!value.is_object(), "{}", e),
                }
            }
        }
    }
}
