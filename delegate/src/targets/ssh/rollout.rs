//! Phases: hosts are split into consecutive phases of `phase_size`; a phase's
//! hosts run concurrently (at most `max_parallel` at once); the first phase
//! with a failed host stops the rollout and later phases are skipped.
//! [`plan`] is pure; [`run`] drives any per-host work.

use std::future::Future;
use std::ops::Range;

use dray_shared::task::ssh::PhaseSize;
use futures::StreamExt as _;

use super::conn::Failure;

/// Consecutive index ranges, one per phase, covering `0..hosts`.
pub fn plan(hosts: usize, size: PhaseSize) -> Vec<Range<usize>> {
    let per = size.per_phase(hosts);
    (0..hosts).step_by(per.max(1)).map(|start| start..(start + per).min(hosts)).collect()
}

/// How one host ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEnd {
    /// Done; the release now current there (if known).
    Succeeded(String),
    /// Nothing to do there (a rollback of a release it never activated).
    Unchanged(String),
    /// Failed.
    Failed(Failure),
    /// Not attempted: an earlier phase failed, or the task was stopped first.
    Skipped,
}

/// Runs `work(index)` for every host, phase by phase. Returns each host's
/// phase (1-based) and end, in host order.
pub async fn run<F, Fut>(hosts: usize, size: PhaseSize, max_parallel: usize, work: F) -> Vec<(usize, HostEnd)>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = HostEnd>,
{
    let phases = plan(hosts, size);
    let mut ends: Vec<(usize, HostEnd)> = Vec::with_capacity(hosts);
    let mut failed = false;
    for (p, range) in phases.into_iter().enumerate() {
        if failed {
            ends.extend(range.map(|_| (p + 1, HostEnd::Skipped)));
            continue;
        }
        let mut done: Vec<(usize, HostEnd)> = futures::stream::iter(range.map(|i| {
            let fut = work(i);
            async move { (i, fut.await) }
        }))
        .buffer_unordered(max_parallel.max(1))
        .collect()
        .await;
        done.sort_by_key(|(i, _)| *i);
        failed = done.iter().any(|(_, e)| matches!(e, HostEnd::Failed(_)));
        ends.extend(done.into_iter().map(|(_, e)| (p + 1, e)));
    }
    ends
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use dray_shared::error_type::ErrorType;

    use super::*;

    #[test]
    fn phases_by_count_and_percentage() {
        assert_eq!(plan(5, PhaseSize::Count(2)), [0..2, 2..4, 4..5]);
        assert_eq!(plan(5, PhaseSize::Percent(40)), [0..2, 2..4, 4..5]);
        assert_eq!(plan(5, PhaseSize::Percent(50)), [0..3, 3..5], "rounded up");
        assert_eq!(plan(3, PhaseSize::Percent(100)), vec![std::ops::Range { start: 0, end: 3 }]);
        assert_eq!(plan(3, PhaseSize::Count(9)), vec![std::ops::Range { start: 0, end: 3 }]);
        assert_eq!(plan(20, PhaseSize::Percent(1)).len(), 20);
        assert!(plan(0, PhaseSize::Count(2)).is_empty());
    }

    #[tokio::test]
    async fn the_first_failing_phase_stops_the_rollout_and_parallelism_is_bounded() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let ends = run(7, PhaseSize::Count(3), 2, |i| {
            let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                if i == 4 {
                    HostEnd::Failed(Failure::new(ErrorType::Unknown, "boom"))
                } else {
                    HostEnd::Succeeded(format!("r{i}"))
                }
            }
        })
        .await;
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        let phases: Vec<usize> = ends.iter().map(|(p, _)| *p).collect();
        assert_eq!(phases, [1, 1, 1, 2, 2, 2, 3]);
        assert_eq!(ends[3].1, HostEnd::Succeeded("r3".into()));
        assert!(matches!(ends[4].1, HostEnd::Failed(_)));
        assert_eq!(ends[5].1, HostEnd::Succeeded("r5".into()), "the failing phase finishes");
        assert_eq!(ends[6].1, HostEnd::Skipped);
    }
}
