//! The every-two-seconds cron trigger that `triggers.rs` (across a restart) and
//! `ha.rs` (across replicas) both run, and the checks on its fires.

use std::collections::HashSet;

use crate::Manager;

/// A pipeline a cron trigger runs every two seconds, echoing the fire time.
pub const CRON_FIXTURES: &str = r#"
pipeline:
  name: Tick
  identifier: tick
  variables:
    - name: when
      type: String
      value: <+input>
  stages:
    - stage:
        name: Tick
        identifier: tick
        type: Custom
        spec:
          execution:
            steps:
              - step:
                  name: Say
                  identifier: say
                  type: ShellScript
                  spec:
                    shell: Bash
                    source:
                      type: Inline
                      spec:
                        script: echo "fired at <+pipeline.variables.when>"
---
trigger:
  name: Every two seconds
  identifier: every2s
  pipelineIdentifier: tick
  inputs:
    when: <+trigger.firedAt>
  source:
    type: Scheduled
    spec:
      type: Cron
      spec:
        expression: "*/2 * * * * *"
"#;

/// Executions of `tick`, checked to be this trigger's fires; returns their fire
/// times (unix ms), newest first.
pub fn cron_fires(m: &Manager) -> anyhow::Result<Vec<i64>> {
    let mut fires = Vec::new();
    for e in m.executions("tick")? {
        assert_eq!(e["triggeredBy"], "trigger:every2s", "{e:#}");
        assert_eq!(e["trigger"]["type"], "Scheduled", "{e:#}");
        assert_eq!(e["trigger"]["cron"], "*/2 * * * * *", "{e:#}");
        let at = e["trigger"]["firedAt"].as_i64().unwrap_or_else(|| panic!("no firedAt: {e:#}"));
        assert_eq!(at % 2000, 0, "fires fall on even seconds: {at}");
        assert_eq!(
            e["inputs"]["pipeline.variables.when"].as_str().or(e["inputs"]["when"].as_str()),
            Some(at.to_string().as_str()),
            "{e:#}"
        );
        fires.push(at);
    }
    Ok(fires)
}

/// True when no fire time appears twice.
pub fn distinct(fires: &[i64]) -> bool {
    fires.iter().collect::<HashSet<_>>().len() == fires.len()
}
