//! Execution benchmark: a 3-stage, 10-step pipeline of `Noop` steps (each a real
//! task leased to a real delegate over mTLS), many executions at once, every
//! node transition durable.
//!
//! Run with `scripts/bench.sh` (release binaries). Environment:
//! `BENCH_STORE=sqlite|postgres|both` (default both), `BENCH_EXECUTIONS`
//! (default 300), `BENCH_CONCURRENCY` (executions started at once, default 100).
//!
//! Prints per store:
//! `executions store=sqlite executions=N steps=M throughput=X/s steps_per_s=Y manager_cpu_per_step=Zms`
//! where manager CPU per step is the manager process's user+system CPU time over
//! the run divided by the steps executed (the engine's whole cost per step,
//! including the lease engine, gRPC and TLS).

use std::time::{Duration, Instant};

use dray_shared::pb;
use dray_tests::bench::{Pipelines as Client, env_num, pipelines as client};
use dray_tests::*;

const STEPS: usize = 10;

/// 3 stages (4 + 3 + 3 steps, the first with a parallel pair), all `Noop`.
fn pipeline_yaml() -> String {
    let step = |id: &str| {
        format!(
            "              - step: {{ name: {id}, identifier: {id}, type: Noop, timeout: 1h, spec: {{}} }}\n"
        )
    };
    let mut y = String::from("pipeline:\n  name: Bench\n  identifier: bench\n  stages:\n");
    let layout: [&[&str]; 3] = [&["a1", "a2", "a3", "a4"], &["b1", "b2", "b3"], &["c1", "c2", "c3"]];
    for (i, steps) in layout.iter().enumerate() {
        y.push_str(&format!(
            "    - stage:\n        name: s{i}\n        identifier: s{i}\n        type: Custom\n        spec:\n          execution:\n            steps:\n"
        ));
        for s in steps.iter() {
            y.push_str(&step(s));
        }
    }
    assert_eq!(layout.iter().map(|l| l.len()).sum::<usize>(), STEPS);
    y
}

/// User + system CPU time of a process, in ms.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // USER_HZ, the unit of these fields, is 100 on Linux x86_64.
    ticks * 10.0
}

async fn bench(kind: StoreKind, executions: usize, concurrency: usize) -> anyhow::Result<()> {
    let m = Manager::start_with(
        kind,
        ManagerOpts { lease_ttl: "15s", offer_timeout: "5s", queue_timeout: "10m", cert_ttl: "1h" },
    )?;
    let _ds: Vec<Delegate> = (0..2)
        .map(|i| {
            Delegate::enrol(&m, &format!("bench-{i}"), DelegateOpts { capacity: 512, ..Default::default() })
        })
        .collect::<anyhow::Result<_>>()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bench.yaml");
    std::fs::write(&file, pipeline_yaml())?;
    m.apply(&file)?;
    let mut c = client(&m).await?;
    let pid = m.pid().expect("manager pid");

    // Warm up (connections, caches) with a few executions.
    run_batch(&mut c, 10, 10).await?;

    let cpu0 = cpu_ms(pid);
    let started = Instant::now();
    run_batch(&mut c, executions, concurrency).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_ms(pid) - cpu0;
    let steps = executions * STEPS;
    println!(
        "executions store={} executions={executions} steps={steps} throughput={:.1}/s steps_per_s={:.0} manager_cpu_per_step={:.3}ms",
        if kind == StoreKind::Sqlite { "sqlite" } else { "postgres" },
        executions as f64 / elapsed,
        steps as f64 / elapsed,
        cpu / steps as f64,
    );
    Ok(())
}

/// Starts `n` executions keeping `concurrency` in flight; waits for all.
async fn run_batch(c: &mut Client, n: usize, concurrency: usize) -> anyhow::Result<()> {
    let mut pending: Vec<String> = vec![];
    let mut started = 0;
    let mut done = 0;
    while done < n {
        while started < n && pending.len() < concurrency {
            let r = c
                .run_pipeline(pb::RunPipelineRequest { pipeline: "bench".into(), ..Default::default() })
                .await?
                .into_inner();
            pending.push(r.execution_id);
            started += 1;
        }
        let list = c
            .list_executions(pb::ListExecutionsRequest {
                pipeline: "bench".into(),
                statuses: vec!["Succeeded".into(), "Failed".into(), "Aborted".into()],
                limit: 1000,
            })
            .await?
            .into_inner()
            .executions;
        let finished: std::collections::HashSet<&str> = list.iter().map(|e| e.id.as_str()).collect();
        if let Some(bad) = list.iter().find(|e| e.status != "Succeeded" && pending.contains(&e.id)) {
            anyhow::bail!("execution {} ended {}: {}", bad.id, bad.status, bad.reason);
        }
        let before = pending.len();
        pending.retain(|id| !finished.contains(id.as_str()));
        done += before - pending.len();
        if before == pending.len() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let which = std::env::var("BENCH_STORE").unwrap_or_else(|_| "both".into());
    let executions = env_num("BENCH_EXECUTIONS", 300);
    let concurrency = env_num("BENCH_CONCURRENCY", 100);
    for kind in [StoreKind::Sqlite, StoreKind::Postgres] {
        let name = if kind == StoreKind::Sqlite { "sqlite" } else { "postgres" };
        if which != "both" && which != name {
            continue;
        }
        rt.block_on(bench(kind, executions, concurrency))?;
    }
    Ok(())
}
