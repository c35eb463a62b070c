//! Output formats for read commands: aligned tables for people, JSON and YAML
//! for scripts. Views are plain serde structs so all three show the same fields.

use std::collections::BTreeMap;

use dray_shared::pb;
use serde::Serialize;

/// `-o` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    /// Aligned columns.
    #[default]
    Table,
    /// JSON (an array for lists; one object per line for streams).
    Json,
    /// YAML.
    Yaml,
}

/// A task as shown to users.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    /// Task id.
    pub id: String,
    /// queued, offered, running, succeeded, failed, cancelled, lost, expired.
    pub state: String,
    /// Task kind.
    pub kind: String,
    /// Delegate name holding (or last holding) it.
    pub delegate: Option<String>,
    /// Delegate id.
    pub delegate_id: Option<String>,
    /// Lease epoch.
    pub epoch: u64,
    /// Exit code, when it ran to an exit.
    pub exit_code: Option<i32>,
    /// Why it ended that way.
    pub reason: Option<String>,
    /// Classified failure (`Timeout`, `DelegateRestart`...), when it failed,
    /// was lost or expired.
    pub error_type: Option<String>,
    /// Values the task produced (shell output variables, HTTP response...).
    pub outputs: BTreeMap<String, String>,
    /// Delegate tags required.
    pub selectors: Vec<String>,
    /// account/org/project.
    pub scope: String,
    /// Unix ms.
    pub created_ms: i64,
    /// Unix ms.
    pub started_ms: Option<i64>,
    /// Unix ms.
    pub finished_ms: Option<i64>,
}

fn opt<T: PartialEq + Default>(v: T) -> Option<T> {
    (v != T::default()).then_some(v)
}

impl From<pb::Task> for TaskView {
    fn from(t: pb::Task) -> Self {
        let state = t.state().short_name().to_string();
        let spec = t.spec.unwrap_or_default();
        TaskView {
            id: t.id,
            state,
            kind: spec.kind,
            delegate: opt(t.delegate),
            delegate_id: opt(t.delegate_id),
            epoch: t.epoch,
            exit_code: t.has_exit_code.then_some(t.exit_code),
            reason: opt(t.reason),
            error_type: opt(t.error_type),
            outputs: t.outputs.into_iter().collect(),
            selectors: spec.selectors,
            scope: spec.scope.map(|s| s.display()).unwrap_or_default(),
            created_ms: t.created_ms,
            started_ms: opt(t.started_ms),
            finished_ms: opt(t.finished_ms),
        }
    }
}

/// A delegate as shown to users.
#[derive(Debug, Clone, Serialize)]
pub struct DelegateView {
    /// Delegate id.
    pub id: String,
    /// Name.
    pub name: String,
    /// account/org/project it serves.
    pub scope: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Connected now.
    pub connected: bool,
    /// Revoked for good.
    pub revoked: bool,
    /// Slots.
    pub capacity: u32,
    /// Free slots.
    pub free: u32,
    /// Offered or running tasks.
    pub running: u32,
    /// Unix ms.
    pub last_seen_ms: i64,
    /// The manager replica its session is on, when connected.
    pub replica: String,
}

impl From<pb::Delegate> for DelegateView {
    fn from(d: pb::Delegate) -> Self {
        DelegateView {
            id: d.id,
            name: d.name,
            scope: d.scope.map(|s| s.display()).unwrap_or_default(),
            tags: d.tags,
            connected: d.connected,
            revoked: d.revoked,
            capacity: d.capacity,
            free: d.free,
            running: d.running,
            last_seen_ms: d.last_seen_ms,
            replica: d.replica,
        }
    }
}

/// A lease as shown to users.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseView {
    /// Task id.
    pub task_id: String,
    /// Delegate name.
    pub delegate: String,
    /// Delegate id.
    pub delegate_id: String,
    /// Epoch.
    pub epoch: u64,
    /// offered or running.
    pub state: String,
    /// Unix ms the offer/lease began.
    pub since_ms: i64,
    /// Unix ms of the ack deadline / lease expiry.
    pub expires_ms: i64,
    /// The manager replica the lease is held through.
    pub replica: String,
}

impl From<pb::Lease> for LeaseView {
    fn from(l: pb::Lease) -> Self {
        LeaseView {
            state: l.state().short_name().to_string(),
            task_id: l.task_id,
            delegate: l.delegate,
            delegate_id: l.delegate_id,
            epoch: l.epoch,
            since_ms: l.since_ms,
            expires_ms: l.expires_ms,
            replica: l.replica,
        }
    }
}

/// A lease event as shown to users.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseEventView {
    /// offered, acknowledged, rejected, renewed, lost, finished...
    pub event: String,
    /// Task id.
    pub task_id: String,
    /// Delegate name.
    pub delegate: String,
    /// Delegate id.
    pub delegate_id: String,
    /// Epoch.
    pub epoch: u64,
    /// Milliseconds since the offer or lease began.
    pub age_ms: u64,
    /// Reason or outcome.
    pub detail: String,
    /// Unix ms.
    pub at_ms: i64,
}

impl From<pb::LeaseEvent> for LeaseEventView {
    fn from(e: pb::LeaseEvent) -> Self {
        LeaseEventView {
            event: e.kind().short_name().to_string(),
            task_id: e.task_id,
            delegate: e.delegate,
            delegate_id: e.delegate_id,
            epoch: e.epoch,
            age_ms: e.age_ms,
            detail: e.detail,
            at_ms: e.at_ms,
        }
    }
}

/// Renders a list of rows as a table with a header.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

/// Prints `value` as JSON or YAML; `table` renders the table form.
pub fn print<T: Serialize>(format: Format, value: &T, table: impl FnOnce() -> String) -> anyhow::Result<()> {
    match format {
        Format::Table => print!("{}", table()),
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_saphyr::to_string(value)?),
    }
    Ok(())
}

/// "3s ago" style age of a Unix-ms timestamp.
pub fn ago(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let d = (dray_shared::clock::now_ms() - ms).max(0) as u64;
    format!("{} ago", human_ms(d))
}

/// Compact duration: 350ms, 12s, 4m, 3h.
pub fn human_ms(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{}s", ms / 1000),
        60_000..3_600_000 => format!("{}m", ms / 60_000),
        _ => format!("{}h", ms / 3_600_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["ID", "STATE"],
            vec![vec!["a".into(), "running".into()], vec!["bbbb".into(), "x".into()]],
        );
        assert_eq!(t, "ID    STATE\na     running\nbbbb  x\n");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_ms(5), "5ms");
        assert_eq!(human_ms(5_000), "5s");
        assert_eq!(human_ms(120_000), "2m");
    }
}
