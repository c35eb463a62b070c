//! Step specs: the typed `spec` of each built-in step type, and the registry of
//! validators that checks a step's free-form `spec` by its `type`.
//!
//! Only validation lives here; how a step *runs* is the pipeline engine's
//! (`crate::pipeline::steps`). A platform adds a step type by registering a
//! [`StepSpecValidator`] here and a runner there.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use dray_shared::expr::Condition;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::validate::{check_duration, is_identifier};
use super::yaml::{Node, field_path, from_node, index_path};

pub mod ecs;
pub mod k8s;
pub mod lambda;
pub mod ssh;

/// Validates the `spec` of one step type.
pub trait StepSpecValidator: Send + Sync {
    /// The `type:` this validates.
    fn type_name(&self) -> &'static str;
    /// Validates a step's `spec` (free JSON); returns (json-path-within-spec, message)
    /// pairs, the path in the form `source.spec.script` / `headers[0].key`
    /// (empty for the spec itself). No pairs means valid.
    fn validate(&self, spec: &Json) -> Vec<(String, String)>;
}

/// The step types known to validation: name → validator.
#[derive(Clone, Default)]
pub struct StepTypes {
    by_name: BTreeMap<String, Arc<dyn StepSpecValidator>>,
}

impl fmt::Debug for StepTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_name.keys()).finish()
    }
}

impl StepTypes {
    /// ShellScript, Http, Wait, HarnessApproval (also as `Approval`) and Barrier.
    pub fn builtin() -> Self {
        let mut t = StepTypes::default();
        t.register(Arc::new(Typed::<ShellScriptSpec>::new("ShellScript")));
        t.register(Arc::new(Typed::<HttpSpec>::new("Http")));
        t.register(Arc::new(Typed::<WaitSpec>::new("Wait")));
        let approval: Arc<dyn StepSpecValidator> = Arc::new(Typed::<ApprovalSpec>::new("HarnessApproval"));
        t.by_name.insert("Approval".into(), approval.clone());
        t.register(approval);
        t.register(Arc::new(Typed::<BarrierSpec>::new("Barrier")));
        t.register(Arc::new(NoopSpecValidator));
        ssh::register(&mut t);
        k8s::register(&mut t);
        ecs::register(&mut t);
        lambda::register(&mut t);
        t
    }

    /// Adds (or replaces) the validator of `v.type_name()`.
    pub fn register(&mut self, v: Arc<dyn StepSpecValidator>) {
        self.by_name.insert(v.type_name().to_string(), v);
    }

    /// The validator of step type `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn StepSpecValidator>> {
        self.by_name.get(name).cloned()
    }

    /// Every known type name, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }
}

/// A step spec that can check itself beyond its schema.
pub trait SpecRules: DeserializeOwned {
    /// Problems the schema cannot express, as (path, message).
    fn rules(&self) -> Vec<(String, String)>;
}

/// The validator of a typed spec: schema first (unknown fields, types), then rules.
pub(crate) struct Typed<T> {
    name: &'static str,
    _spec: std::marker::PhantomData<fn() -> T>,
}

impl<T> Typed<T> {
    pub(crate) fn new(name: &'static str) -> Self {
        Typed { name, _spec: std::marker::PhantomData }
    }
}

impl<T: SpecRules> StepSpecValidator for Typed<T> {
    fn type_name(&self) -> &'static str {
        self.name
    }

    fn validate(&self, spec: &Json) -> Vec<(String, String)> {
        match from_node::<T>(&Node::from_json(spec), "") {
            Ok(typed) => typed.rules(),
            Err(e) => vec![(e.path, e.message)],
        }
    }
}

/// Reads a built-in step's spec (after validation, e.g. in the engine).
pub fn parse_spec<T: DeserializeOwned>(spec: &Json) -> Result<T, String> {
    from_node::<T>(&Node::from_json(spec), "spec").map_err(|e| e.to_string())
}

/// Output variables a step declares, for the types that declare them
/// (ShellScript, Http); `None` for other types.
pub fn declared_outputs(step_type: &str, spec: &Json) -> Option<Vec<String>> {
    if step_type != "ShellScript" && step_type != "Http" {
        return None;
    }
    Some(
        spec.get("outputVariables")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.get("name").and_then(Json::as_str).map(str::to_string))
            .collect(),
    )
}

/// `String` or `Secret`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TextOrSecret {
    /// Plain text.
    String,
    /// A secret reference.
    Secret,
}

/// `ShellScript` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ShellScriptSpec {
    /// Shell.
    pub shell: Shell,
    /// Where the script comes from.
    pub source: ShellSource,
    /// Variables exported to the script.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_variables: Vec<EnvVariable>,
    /// Shell variables whose final values become outputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_variables: Vec<OutputVariable>,
    /// Delegate tags the task needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegate_selectors: Vec<String>,
    /// Run on a delegate (the only place scripts run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_delegate: Option<bool>,
}

/// Shells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shell {
    /// bash.
    Bash,
}

/// Script source (`type` + `spec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "spec", deny_unknown_fields)]
pub enum ShellSource {
    /// The script is in the YAML.
    Inline(InlineScript),
}

/// `{ script: "…" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineScript {
    /// The script text (a template).
    pub script: String,
}

/// An environment variable of a script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVariable {
    /// Variable name.
    pub name: String,
    /// Text or secret.
    #[serde(rename = "type")]
    pub var_type: TextOrSecret,
    /// Value (a template).
    pub value: String,
}

/// An output variable of a ShellScript step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputVariable {
    /// Output name (`…output.outputVariables.NAME`).
    pub name: String,
    /// Text or secret (secret outputs are masked).
    #[serde(rename = "type")]
    pub var_type: TextOrSecret,
    /// The shell variable read when the script ends.
    pub value: String,
}

impl SpecRules for ShellScriptSpec {
    fn rules(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let ShellSource::Inline(inline) = &self.source;
        if inline.script.trim().is_empty() {
            out.push(("source.spec.script".into(), "the script is empty".into()));
        }
        let mut seen = HashSet::new();
        for (i, v) in self.environment_variables.iter().enumerate() {
            let path = index_path("environmentVariables", i);
            if !dray_shared::task::is_env_name(&v.name) {
                out.push((
                    field_path(&path, "name"),
                    format!("{:?} is not a valid environment variable name", v.name),
                ));
            } else if !seen.insert(v.name.as_str()) {
                out.push((field_path(&path, "name"), format!("duplicate environment variable {:?}", v.name)));
            }
        }
        let mut seen = HashSet::new();
        for (i, v) in self.output_variables.iter().enumerate() {
            let path = index_path("outputVariables", i);
            if !is_identifier(&v.name) {
                out.push((
                    field_path(&path, "name"),
                    format!("{:?} is not a valid output variable name", v.name),
                ));
            } else if !seen.insert(v.name.as_str()) {
                out.push((field_path(&path, "name"), format!("duplicate output variable {:?}", v.name)));
            }
            if !dray_shared::task::is_env_name(&v.value) {
                out.push((
                    field_path(&path, "value"),
                    format!(
                        "{:?} is not a shell variable name (the value names the variable to read)",
                        v.value
                    ),
                ));
            }
        }
        out.extend(selector_rules(&self.delegate_selectors));
        out
    }
}

fn selector_rules(selectors: &[String]) -> Vec<(String, String)> {
    selectors
        .iter()
        .enumerate()
        .filter(|(_, s)| s.trim().is_empty())
        .map(|(i, _)| (index_path("delegateSelectors", i), "empty delegate selector".into()))
        .collect()
}

/// `Http` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpSpec {
    /// URL (a template).
    pub url: String,
    /// Method.
    pub method: HttpMethod,
    /// Request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpHeader>,
    /// Request body (a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    /// Condition over `<+httpResponseCode>` and `<+httpResponseBody>`; false fails the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assertion: Option<String>,
    /// Outputs computed from the response.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_variables: Vec<HttpOutputVariable>,
    /// Delegate tags the task needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegate_selectors: Vec<String>,
}

/// HTTP methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum HttpMethod {
    /// GET.
    GET,
    /// POST.
    POST,
    /// PUT.
    PUT,
    /// DELETE.
    DELETE,
    /// PATCH.
    PATCH,
    /// HEAD.
    HEAD,
    /// OPTIONS.
    OPTIONS,
}

/// A request header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpHeader {
    /// Header name.
    pub key: String,
    /// Value (a template; may hold secret references).
    pub value: String,
}

/// Output types of an Http step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HttpOutputType {
    /// Text.
    String,
}

/// An output variable of an Http step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpOutputVariable {
    /// Output name.
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub var_type: HttpOutputType,
    /// Expression over the response.
    pub value: String,
}

impl SpecRules for HttpSpec {
    fn rules(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let url = self.url.trim();
        if url.is_empty() {
            out.push(("url".into(), "the URL is empty".into()));
        } else if !url.starts_with("<+") && !url.starts_with("http://") && !url.starts_with("https://") {
            out.push(("url".into(), format!("{url:?} must start with http:// or https://")));
        }
        for (i, h) in self.headers.iter().enumerate() {
            if h.key.trim().is_empty() || h.key.contains([':', '\n', '\r']) {
                out.push((
                    field_path(&index_path("headers", i), "key"),
                    format!("invalid header name {:?}", h.key),
                ));
            }
        }
        if let Some(a) = &self.assertion
            && let Err(e) = Condition::parse(a)
        {
            out.push(("assertion".into(), format!("{} (at offset {})", e.message, e.offset)));
        }
        let mut seen = HashSet::new();
        for (i, v) in self.output_variables.iter().enumerate() {
            let path = field_path(&index_path("outputVariables", i), "name");
            if !is_identifier(&v.name) {
                out.push((path, format!("{:?} is not a valid output variable name", v.name)));
            } else if !seen.insert(v.name.as_str()) {
                out.push((path, format!("duplicate output variable {:?}", v.name)));
            }
        }
        out.extend(selector_rules(&self.delegate_selectors));
        out
    }
}

/// `Wait` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitSpec {
    /// How long ("10s").
    pub duration: String,
}

impl SpecRules for WaitSpec {
    fn rules(&self) -> Vec<(String, String)> {
        check_duration(&self.duration).err().map(|m| ("duration".to_string(), m)).into_iter().collect()
    }
}

/// `HarnessApproval` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApprovalSpec {
    /// Shown to approvers (a template).
    pub approval_message: String,
    /// Show earlier executions to approvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_pipeline_execution_history: Option<bool>,
    /// Who may approve.
    pub approvers: Approvers,
    /// Values approvers supply (`…output.approverInputs.NAME`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approver_inputs: Vec<ApproverInput>,
}

/// `approvers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Approvers {
    /// User groups whose members may approve.
    pub user_groups: Vec<String>,
    /// Approvals needed (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_count: Option<u32>,
    /// Whoever started the execution may not approve it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disallow_pipeline_executor: Option<bool>,
}

/// An approver input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApproverInput {
    /// Name.
    pub name: String,
    /// Used when the approver gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
}

impl SpecRules for ApprovalSpec {
    fn rules(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.approvers.user_groups.is_empty() {
            out.push(("approvers.userGroups".into(), "name at least one user group".into()));
        }
        for (i, g) in self.approvers.user_groups.iter().enumerate() {
            if g.trim().is_empty() {
                out.push((index_path("approvers.userGroups", i), "empty user group".into()));
            }
        }
        if self.approvers.minimum_count == Some(0) {
            out.push(("approvers.minimumCount".into(), "must be at least 1".into()));
        }
        let mut seen = HashSet::new();
        for (i, input) in self.approver_inputs.iter().enumerate() {
            let path = field_path(&index_path("approverInputs", i), "name");
            if !is_identifier(&input.name) {
                out.push((path, format!("{:?} is not a valid input name", input.name)));
            } else if !seen.insert(input.name.as_str()) {
                out.push((path, format!("duplicate approver input {:?}", input.name)));
            }
        }
        out
    }
}

/// `Barrier` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BarrierSpec {
    /// A `flowControl.barriers[].identifier` of the pipeline.
    pub barrier_ref: String,
}

impl SpecRules for BarrierSpec {
    fn rules(&self) -> Vec<(String, String)> {
        if is_identifier(&self.barrier_ref) {
            vec![]
        } else {
            vec![("barrierRef".into(), format!("{:?} is not a valid identifier", self.barrier_ref))]
        }
    }
}

/// `Noop` (a delegate round trip; for checks and benchmarks) takes an empty spec.
struct NoopSpecValidator;

impl StepSpecValidator for NoopSpecValidator {
    fn type_name(&self) -> &'static str {
        "Noop"
    }

    fn validate(&self, spec: &Json) -> Vec<(String, String)> {
        match spec {
            Json::Null => vec![],
            Json::Object(m) if m.is_empty() => vec![],
            _ => vec![(String::new(), "a Noop step takes no spec fields".into())],
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(t: &str, spec: Json) -> Vec<(String, String)> {
        StepTypes::builtin().get(t).unwrap().validate(&spec)
    }

    #[test]
    fn builtin_names_include_the_approval_alias() {
        assert_eq!(
            StepTypes::builtin().names(),
            [
                "Approval",
                "AwsLambdaDeploy",
                "AwsLambdaRollback",
                "AwsLambdaTrafficShift",
                "Barrier",
                "EcsBlueGreenCreateService",
                "EcsBlueGreenRollback",
                "EcsBlueGreenSwapTargetGroups",
                "EcsCanaryDelete",
                "EcsCanaryDeploy",
                "EcsRollingDeploy",
                "EcsRollingRollback",
                "EcsRunTask",
                "HarnessApproval",
                "Http",
                "K8sApply",
                "K8sBGSwapServices",
                "K8sBlueGreenDeploy",
                "K8sCanaryDelete",
                "K8sCanaryDeploy",
                "K8sDelete",
                "K8sRollingDeploy",
                "K8sRollingRollback",
                "K8sScale",
                "Noop",
                "ShellScript",
                "SshCommand",
                "SshDeploy",
                "SshRollback",
                "Wait"
            ]
        );
    }

    #[test]
    fn good_specs_pass() {
        let shell = json!({"shell": "Bash", "source": {"type": "Inline", "spec": {"script": "echo hi"}},
            "environmentVariables": [{"name": "A", "type": "Secret", "value": "<+secrets.getValue(\"env:A\")>"}],
            "outputVariables": [{"name": "v", "type": "String", "value": "v"}], "onDelegate": true});
        assert_eq!(check("ShellScript", shell), vec![]);
        let http = json!({"url": "https://x", "method": "POST", "headers": [{"key": "A", "value": "b"}],
            "assertion": "<+httpResponseCode> == 200", "outputVariables": [{"name": "b", "type": "String", "value": "<+httpResponseBody>"}]});
        assert_eq!(check("Http", http), vec![]);
        assert_eq!(check("Wait", json!({"duration": "10s"})), vec![]);
        assert_eq!(
            check("Approval", json!({"approvalMessage": "ok?", "approvers": {"userGroups": ["g"]}})),
            vec![]
        );
        assert_eq!(check("Barrier", json!({"barrierRef": "b"})), vec![]);
    }

    #[test]
    fn schema_and_rule_errors_name_the_path_within_the_spec() {
        let e = check(
            "ShellScript",
            json!({"shell": "Bash", "source": {"type": "Inline", "spec": {"script": "x", "lang": 1}}}),
        );
        assert_eq!(e[0].0, "source.spec.lang");
        let e =
            check("Http", json!({"url": "ftp://x", "method": "GET", "headers": [{"key": "", "value": "v"}]}));
        assert_eq!(e.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), ["url", "headers[0].key"]);
        let e = check("Http", json!({"url": "https://x", "method": "FETCH"}));
        assert_eq!(e[0].0, "method");
        assert!(e[0].1.contains("unknown variant"), "{}", e[0].1);
        let e = check("Wait", json!({"duration": "0s"}));
        assert_eq!(e[0].0, "duration");
        let e = check(
            "ShellScript",
            json!({"shell": "Bash", "source": {"type": "Inline", "spec": {"script": "x"}},
            "outputVariables": [{"name": "v", "type": "String", "value": "not a var"}]}),
        );
        assert_eq!(e[0].0, "outputVariables[0].value");
    }

    #[test]
    fn declared_outputs_only_for_types_that_declare_them() {
        let spec = json!({"outputVariables": [{"name": "a"}, {"name": "b"}]});
        assert_eq!(declared_outputs("ShellScript", &spec), Some(vec!["a".into(), "b".into()]));
        assert_eq!(declared_outputs("Wait", &spec), None);
    }
}
