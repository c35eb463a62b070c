//! Which connected delegate may take which queued task. Pure: no I/O, no clock.
//!
//! A delegate is eligible for a task when its scope covers the task's scope, it
//! carries every tag the task selects, the task is not pinned to another
//! delegate, it has not declined the task already, it is not draining, and it has
//! a free slot. Among eligible delegates the one with the most free slots wins,
//! which spreads load without any shared counter.

use std::collections::HashSet;

use dray_shared::DelegateId;
use dray_shared::pb::{Scope, TaskSpec};

/// What matching needs to know about a connected delegate.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Identity.
    pub id: DelegateId,
    /// Display name, for explanations.
    pub name: String,
    /// Scope from its enrolment token.
    pub scope: Scope,
    /// Tags it announced.
    pub tags: HashSet<String>,
    /// Free offer slots.
    pub credits: u32,
    /// Shutting down: offer nothing.
    pub draining: bool,
}

/// Why a delegate cannot take a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ineligible {
    /// The task is pinned to another delegate.
    Pinned,
    /// Scope does not cover the task.
    Scope {
        /// Delegate scope.
        delegate: String,
        /// Task scope.
        task: String,
    },
    /// Tags the task selects that the delegate lacks.
    MissingTags(Vec<String>),
    /// It declined this task already.
    Declined(String),
    /// It is draining.
    Draining,
    /// No free slot right now.
    NoCapacity,
}

impl std::fmt::Display for Ineligible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ineligible::Pinned => write!(f, "task is pinned to another delegate"),
            Ineligible::Scope { delegate, task } => {
                write!(f, "wrong scope (delegate serves {delegate}, task is in {task})")
            }
            Ineligible::MissingTags(t) => write!(f, "missing tag(s) {}", t.join(", ")),
            Ineligible::Declined(why) => write!(f, "rejected the offer: {why}"),
            Ineligible::Draining => write!(f, "draining"),
            Ineligible::NoCapacity => write!(f, "no capacity"),
        }
    }
}

/// Checks one delegate against one task, in the order an operator would fix things.
pub fn eligibility(
    spec: &TaskSpec,
    declined: &[(DelegateId, String)],
    d: &Candidate,
) -> Result<(), Ineligible> {
    if !spec.delegate_id.is_empty() && spec.delegate_id != d.id.to_string() {
        return Err(Ineligible::Pinned);
    }
    let task_scope = spec.scope.clone().unwrap_or_default();
    if !d.scope.covers(&task_scope) {
        return Err(Ineligible::Scope { delegate: d.scope.display(), task: task_scope.display() });
    }
    let missing: Vec<String> = spec.selectors.iter().filter(|s| !d.tags.contains(*s)).cloned().collect();
    if !missing.is_empty() {
        return Err(Ineligible::MissingTags(missing));
    }
    if let Some((_, why)) = declined.iter().find(|(id, _)| *id == d.id) {
        return Err(Ineligible::Declined(why.clone()));
    }
    if d.draining {
        return Err(Ineligible::Draining);
    }
    if d.credits == 0 {
        return Err(Ineligible::NoCapacity);
    }
    Ok(())
}

/// The best eligible delegate for a task, by index into `candidates`.
pub fn choose(spec: &TaskSpec, declined: &[(DelegateId, String)], candidates: &[Candidate]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, d)| eligibility(spec, declined, d).is_ok())
        .max_by_key(|(_, d)| d.credits)
        .map(|(i, _)| i)
}

/// A one-line explanation of why no delegate took the task, one clause per
/// connected delegate.
pub fn explain(spec: &TaskSpec, declined: &[(DelegateId, String)], candidates: &[Candidate]) -> String {
    if candidates.is_empty() {
        return "no eligible delegate: no delegate is connected".into();
    }
    let parts: Vec<String> = candidates
        .iter()
        .map(|d| match eligibility(spec, declined, d) {
            Ok(()) => format!("{} ({}): eligible but busy", d.name, d.id),
            Err(why) => format!("{} ({}): {why}", d.name, d.id),
        })
        .collect();
    format!("no eligible delegate: {}", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(org: &str, project: &str) -> Scope {
        Scope { account: "default".into(), org: org.into(), project: project.into() }
    }

    fn cand(name: &str, s: Scope, tags: &[&str], credits: u32) -> Candidate {
        Candidate {
            id: DelegateId::new(),
            name: name.into(),
            scope: s,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            credits,
            draining: false,
        }
    }

    #[test]
    fn selectors_scope_and_credits() {
        let spec = TaskSpec {
            selectors: vec!["linux".into()],
            scope: Some(scope("acme", "web")),
            ..Default::default()
        };
        let cs = vec![
            cand("a", scope("acme", "api"), &["linux"], 5),
            cand("b", scope("acme", "web"), &["mac"], 5),
            cand("c", scope("acme", "web"), &["linux"], 0),
            cand("d", scope("acme", ""), &["linux", "x"], 1),
            cand("e", scope("acme", "web"), &["linux"], 3),
        ];
        assert_eq!(choose(&spec, &[], &cs), Some(4), "most free slots among eligible");
        let why = explain(&spec, &[], &cs[..3]);
        assert!(why.contains("a ("), "{why}");
        assert!(
            why.contains("wrong scope (delegate serves default/acme/api, task is in default/acme/web)"),
            "{why}"
        );
        assert!(why.contains("missing tag(s) linux"), "{why}");
        assert!(why.contains("no capacity"), "{why}");
    }

    #[test]
    fn declined_delegates_are_skipped() {
        let spec = TaskSpec { scope: Some(scope("", "")), ..Default::default() };
        let cs = vec![cand("a", scope("", ""), &[], 9), cand("b", scope("", ""), &[], 1)];
        let declined = vec![(cs[0].id, "bash missing".to_string())];
        assert_eq!(choose(&spec, &declined, &cs), Some(1));
        assert!(explain(&spec, &declined, &cs[..1]).contains("rejected the offer: bash missing"));
    }

    #[test]
    fn project_delegate_does_not_serve_account_tasks() {
        let spec = TaskSpec { scope: Some(scope("", "")), ..Default::default() };
        let cs = vec![cand("p", scope("acme", "web"), &[], 1)];
        assert_eq!(choose(&spec, &[], &cs), None);
    }

    #[test]
    fn pinned_tasks_go_only_to_their_delegate() {
        let cs = vec![cand("a", scope("", ""), &[], 9), cand("b", scope("", ""), &[], 1)];
        let spec =
            TaskSpec { scope: Some(scope("", "")), delegate_id: cs[1].id.to_string(), ..Default::default() };
        assert_eq!(choose(&spec, &[], &cs), Some(1));
    }
}
