//! Is a service done rolling out? A pure reading of one DescribeServices answer
//! by AWS's own "services stable" rule: exactly one deployment left and
//! `runningCount == desiredCount`. A PRIMARY deployment whose `rolloutState` is
//! FAILED (the deployment circuit breaker tripped) ends the wait with a failure.
//!
//! The watcher polls, logs rollout-state changes and service events it has not
//! shown yet, and asks [`assess`] each time. The tests drive it with recorded
//! DescribeServices outputs for what an emulator does not model (several
//! deployments in flight, a tripped circuit breaker).

use std::collections::HashSet;

use serde::Deserialize;

/// What the watcher needs of a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceState {
    /// `ACTIVE`, `DRAINING`, `INACTIVE`.
    #[serde(default)]
    pub status: String,
    /// Desired tasks.
    #[serde(default)]
    pub desired_count: i32,
    /// Running tasks.
    #[serde(default)]
    pub running_count: i32,
    /// Deployments in flight (PRIMARY first, as AWS lists them).
    #[serde(default)]
    pub deployments: Vec<Deployment>,
    /// Service events, newest first.
    #[serde(default)]
    pub events: Vec<Event>,
}

/// One deployment of a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// Deployment id.
    #[serde(default)]
    pub id: String,
    /// `PRIMARY`, `ACTIVE`, `INACTIVE`.
    #[serde(default)]
    pub status: String,
    /// Task definition ARN.
    #[serde(default)]
    pub task_definition: String,
    /// Desired tasks.
    #[serde(default)]
    pub desired_count: i32,
    /// Running tasks.
    #[serde(default)]
    pub running_count: i32,
    /// Pending tasks.
    #[serde(default)]
    pub pending_count: i32,
    /// Tasks that failed to start.
    #[serde(default)]
    pub failed_tasks: i32,
    /// `IN_PROGRESS`, `COMPLETED`, `FAILED`.
    #[serde(default)]
    pub rollout_state: String,
    /// Why.
    #[serde(default)]
    pub rollout_state_reason: String,
}

/// A service event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Event id.
    #[serde(default)]
    pub id: String,
    /// Text.
    #[serde(default)]
    pub message: String,
}

impl From<&aws_sdk_ecs::types::Service> for ServiceState {
    fn from(s: &aws_sdk_ecs::types::Service) -> Self {
        ServiceState {
            status: s.status().unwrap_or_default().to_string(),
            desired_count: s.desired_count(),
            running_count: s.running_count(),
            deployments: s
                .deployments()
                .iter()
                .map(|d| Deployment {
                    id: d.id().unwrap_or_default().to_string(),
                    status: d.status().unwrap_or_default().to_string(),
                    task_definition: d.task_definition().unwrap_or_default().to_string(),
                    desired_count: d.desired_count(),
                    running_count: d.running_count(),
                    pending_count: d.pending_count(),
                    failed_tasks: d.failed_tasks(),
                    rollout_state: d.rollout_state().map(|r| r.as_str().to_string()).unwrap_or_default(),
                    rollout_state_reason: d.rollout_state_reason().unwrap_or_default().to_string(),
                })
                .collect(),
            events: s
                .events()
                .iter()
                .map(|e| Event {
                    id: e.id().unwrap_or_default().to_string(),
                    message: e.message().unwrap_or_default().to_string(),
                })
                .collect(),
        }
    }
}

/// The verdict on one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// One deployment, running == desired.
    Steady,
    /// Still rolling out.
    InProgress,
    /// The rollout failed (circuit breaker) or the service is going away.
    Failed(String),
}

/// Reads one DescribeServices answer.
pub fn assess(s: &ServiceState) -> Verdict {
    if s.status != "ACTIVE" {
        return Verdict::Failed(format!(
            "the service is {}",
            if s.status.is_empty() { "gone" } else { &s.status }
        ));
    }
    if let Some(p) = s.deployments.iter().find(|d| d.status == "PRIMARY")
        && p.rollout_state == "FAILED"
    {
        let reason =
            if p.rollout_state_reason.is_empty() { "no reason given" } else { &p.rollout_state_reason };
        return Verdict::Failed(format!("deployment {} failed: {reason}", p.id));
    }
    if s.deployments.len() == 1 && s.running_count == s.desired_count {
        Verdict::Steady
    } else {
        Verdict::InProgress
    }
}

/// Remembers what was already logged, so each poll shows only news.
#[derive(Debug, Default)]
pub struct Progress {
    seen_events: HashSet<String>,
    last_summary: String,
}

impl Progress {
    /// Starts after the events already on the service (older history is not news).
    pub fn after(s: &ServiceState) -> Self {
        Progress { seen_events: s.events.iter().map(|e| e.id.clone()).collect(), last_summary: String::new() }
    }

    /// Lines to log for this answer: new events (oldest first) and the
    /// deployments' state when it changed.
    pub fn news(&mut self, s: &ServiceState) -> Vec<String> {
        let mut out: Vec<String> = s
            .events
            .iter()
            .rev()
            .filter(|e| self.seen_events.insert(e.id.clone()))
            .map(|e| format!("event: {}", e.message))
            .collect();
        let summary = summary(s);
        if summary != self.last_summary {
            out.push(summary.clone());
            self.last_summary = summary;
        }
        out
    }
}

/// One line: counts and each deployment's state.
pub fn summary(s: &ServiceState) -> String {
    let deps: Vec<String> = s
        .deployments
        .iter()
        .map(|d| {
            let td = d.task_definition.rsplit('/').next().unwrap_or(&d.task_definition);
            let rollout =
                if d.rollout_state.is_empty() { String::new() } else { format!(" {}", d.rollout_state) };
            format!(
                "{} {td}{rollout} running {}/{} pending {}{}",
                d.status,
                d.running_count,
                d.desired_count,
                d.pending_count,
                if d.failed_tasks > 0 { format!(" failed {}", d.failed_tasks) } else { String::new() }
            )
        })
        .collect();
    format!(
        "service running {}/{}, {} deployment(s): {}",
        s.running_count,
        s.desired_count,
        s.deployments.len(),
        deps.join("; ")
    )
}

#[cfg(test)]
mod tests {
    //! Recorded DescribeServices outputs (trimmed to the fields read) from a
    //! rolling update of a FARGATE service with the circuit breaker on. The
    //! emulator keeps a single IN_PROGRESS deployment and cannot show these.

    use super::recorded::*;
    use super::*;

    fn service(json: &str) -> ServiceState {
        #[derive(Deserialize)]
        struct Answer {
            services: Vec<ServiceState>,
        }
        let a: Answer = serde_json::from_str(json).unwrap();
        a.services.into_iter().next().unwrap()
    }

    #[test]
    fn two_deployments_are_in_progress_until_the_old_one_drains() {
        let rolling = service(ROLLING);
        assert_eq!(assess(&rolling), Verdict::InProgress, "two deployments");
        // One deployment and running == desired is steady even while AWS still
        // says IN_PROGRESS (that is AWS's own services-stable rule).
        assert_eq!(assess(&service(DRAINED)), Verdict::Steady);
        let short = ServiceState { running_count: 1, ..service(DRAINED) };
        assert_eq!(assess(&short), Verdict::InProgress, "running below desired");
    }

    #[test]
    fn a_tripped_circuit_breaker_fails_the_wait() {
        let v = assess(&service(BREAKER));
        assert_eq!(
            v,
            Verdict::Failed(
                "deployment ecs-svc/3 failed: ECS deployment circuit breaker: tasks failed to start.".into()
            )
        );
        let gone = ServiceState { status: "INACTIVE".into(), ..service(DRAINED) };
        assert!(matches!(assess(&gone), Verdict::Failed(m) if m.contains("INACTIVE")));
    }

    #[test]
    fn progress_logs_only_news() {
        let before = ServiceState {
            events: vec![Event { id: "e1".into(), message: "old".into() }],
            ..Default::default()
        };
        let mut p = Progress::after(&before);
        let lines = p.news(&service(ROLLING));
        assert_eq!(lines[0], "event: (service web) has started 1 tasks: (task 9f).");
        assert!(
            lines[1].starts_with(
                "service running 3/2, 2 deployment(s): PRIMARY web:8 IN_PROGRESS running 1/2 pending 1"
            ),
            "{lines:?}"
        );
        assert_eq!(lines.len(), 2, "the old event is not repeated");
        assert!(p.news(&service(ROLLING)).is_empty(), "nothing new, nothing logged");
        let lines = p.news(&service(DRAINED));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("has stopped 2 running tasks"));
        let lines = p.news(&service(BREAKER));
        assert!(lines.iter().any(|l| l.contains("failed 4")), "{lines:?}");
    }
}

#[cfg(test)]
pub(crate) mod recorded {
    //! Recorded DescribeServices answers (trimmed to the fields read) from a
    //! rolling update of a FARGATE service with the circuit breaker on.

    pub const ROLLING: &str = r#"{"services":[{"status":"ACTIVE","desiredCount":2,"runningCount":3,
      "deployments":[
        {"id":"ecs-svc/2","status":"PRIMARY","taskDefinition":"arn:aws:ecs:us-east-1:1:task-definition/web:8","desiredCount":2,"pendingCount":1,"runningCount":1,"failedTasks":0,"rolloutState":"IN_PROGRESS","rolloutStateReason":"ECS deployment ecs-svc/2 in progress."},
        {"id":"ecs-svc/1","status":"ACTIVE","taskDefinition":"arn:aws:ecs:us-east-1:1:task-definition/web:7","desiredCount":2,"pendingCount":0,"runningCount":2,"failedTasks":0,"rolloutState":"COMPLETED"}],
      "events":[{"id":"e2","message":"(service web) has started 1 tasks: (task 9f)."},
                {"id":"e1","message":"(service web) has reached a steady state."}]}]}"#;

    pub const DRAINED: &str = r#"{"services":[{"status":"ACTIVE","desiredCount":2,"runningCount":2,
      "deployments":[
        {"id":"ecs-svc/2","status":"PRIMARY","taskDefinition":"arn:aws:ecs:us-east-1:1:task-definition/web:8","desiredCount":2,"pendingCount":0,"runningCount":2,"failedTasks":0,"rolloutState":"IN_PROGRESS"}],
      "events":[{"id":"e3","message":"(service web) has stopped 2 running tasks: (task 1a) (task 1b)."},
                {"id":"e2","message":"(service web) has started 1 tasks: (task 9f)."},
                {"id":"e1","message":"(service web) has reached a steady state."}]}]}"#;

    pub const BREAKER: &str = r#"{"services":[{"status":"ACTIVE","desiredCount":2,"runningCount":2,
      "deployments":[
        {"id":"ecs-svc/3","status":"PRIMARY","taskDefinition":"arn:aws:ecs:us-east-1:1:task-definition/web:9","desiredCount":0,"pendingCount":0,"runningCount":0,"failedTasks":4,"rolloutState":"FAILED","rolloutStateReason":"ECS deployment circuit breaker: tasks failed to start."},
        {"id":"ecs-svc/2","status":"ACTIVE","taskDefinition":"arn:aws:ecs:us-east-1:1:task-definition/web:8","desiredCount":2,"pendingCount":0,"runningCount":2,"failedTasks":0,"rolloutState":"COMPLETED"}],
      "events":[{"id":"e4","message":"(service web) deployment ecs-svc/3 deployment failed: tasks failed to start."}]}]}"#;
}
