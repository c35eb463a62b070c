//! Dispatch benchmark: `noop` tasks submitted through the public API, leased to
//! real delegates over mTLS, run and completed, every transition durable.
//!
//! Run with `scripts/bench.sh` (builds release binaries first). Environment:
//! `BENCH_STORE=sqlite|postgres|both` (default both), `BENCH_TASKS` (default 50000),
//! `BENCH_DELEGATES` (default 4), `BENCH_CAPACITY` (slots per delegate, default 256).
//!
//! Prints, per store, a throughput line and a paced-latency line:
//! `dispatch store=sqlite tasks=N delegates=K throughput=X/s p50=Yms p99=Zms`
//! `latency store=sqlite rate=200/s tasks=N p50=Yms p99=Zms`
//! and the idle delegate footprint: `delegate idle_rss=N KiB`.

use std::time::{Duration, Instant};

use dray_shared::pb;
use dray_tests::bench::{Client, client, env_num, noop, percentile};
use dray_tests::*;

/// Tasks that reached a final state, from the manager's metrics on `http_port`.
fn finished(http_port: u16) -> u64 {
    let Some((_, body)) = http_get(http_port, "/metrics") else { return 0 };
    body.lines()
        .filter(|l| l.starts_with("dray_tasks_finished_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// enqueue-to-start latencies (ms) of the newest `n` tasks, sorted.
async fn latencies(c: &mut Client, n: usize) -> anyhow::Result<Vec<i64>> {
    let tasks = c
        .list_tasks(pb::ListTasksRequest { states: vec![pb::TaskState::Succeeded as i32], limit: n as u32 })
        .await?
        .into_inner()
        .tasks;
    let mut l: Vec<i64> = tasks.iter().map(|t| t.started_ms - t.created_ms).collect();
    l.sort_unstable();
    Ok(l)
}

async fn throughput(kind: StoreKind, tasks: usize, delegates: usize, capacity: usize) -> anyhow::Result<()> {
    let m = Manager::start_with(
        kind,
        ManagerOpts { lease_ttl: "15s", offer_timeout: "5s", queue_timeout: "10m", cert_ttl: "1h" },
    )?;
    let _ds: Vec<Delegate> = (0..delegates)
        .map(|i| {
            Delegate::enrol(
                &m,
                &format!("bench-{i}"),
                DelegateOpts { capacity: capacity as u32, ..Default::default() },
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let store = if kind == StoreKind::Sqlite { "sqlite" } else { "postgres" };
    let mut c = client(&m).await?;

    // Warm up.
    c.submit_tasks(pb::SubmitTasksRequest { tasks: vec![noop(); 500] }).await?;
    wait_for("warm-up", Duration::from_secs(60), || (finished(m.http_port) >= 500).then_some(()))?;
    let base = finished(m.http_port);

    let started = Instant::now();
    let batch = 500;
    let submitters = 4;
    let per = tasks / submitters;
    let mut joins = Vec::new();
    for _ in 0..submitters {
        let mut c = c.clone();
        joins.push(tokio::spawn(async move {
            let mut sent = 0;
            while sent < per {
                let n = batch.min(per - sent);
                c.submit_tasks(pb::SubmitTasksRequest { tasks: vec![noop(); n] }).await?;
                sent += n;
            }
            anyhow::Ok(())
        }));
    }
    for j in joins {
        j.await??;
    }
    let total = (per * submitters) as u64;
    let done = tokio::task::spawn_blocking({
        let url_port = m.http_port;
        move || {
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                let f = finished(url_port);
                if f >= base + total || Instant::now() > deadline {
                    return f - base;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    })
    .await?;
    let elapsed = started.elapsed();
    // How much each durable commit carried: with group commit one flush serves many transitions.
    let metric = |name: &str| -> f64 {
        m.http("/metrics")
            .and_then(|(_, b)| b.lines().find(|l| l.starts_with(name))?.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let (commits, rows) = (metric("dray_store_commit_rows_count"), metric("dray_store_commit_rows_sum"));
    let commit_secs = metric("dray_store_commit_seconds_sum");
    println!(
        "commits store={store} commits={commits} task_rows_per_commit={:.0} mean_commit={:.2}ms",
        rows / commits.max(1.0),
        commit_secs * 1000.0 / commits.max(1.0)
    );
    let lat = latencies(&mut c, total.min(10_000) as usize).await?;
    println!(
        "dispatch store={store} tasks={done} delegates={delegates} throughput={:.0}/s p50={}ms p99={}ms",
        done as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );

    // Paced: 200 tasks/s for 10 s, one task per submit.
    let rate = 200;
    let n = rate * 10;
    let base = finished(m.http_port);
    let start = Instant::now();
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let mut c = c.clone();
        tokio::spawn(async move { c.submit_tasks(pb::SubmitTasksRequest { tasks: vec![noop()] }).await });
    }
    wait_for("paced tasks", Duration::from_secs(60), || {
        (finished(m.http_port) >= base + n as u64).then_some(())
    })?;
    let lat = latencies(&mut c, n).await?;
    println!(
        "latency store={store} rate={rate}/s tasks={n} p50={}ms p99={}ms max={}ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0)
    );
    if let Some(pid) = _ds.first().and_then(|d| d.pid()) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: ?").to_string();
        println!("delegate busy {rss}");
    }
    Ok(())
}

fn idle_delegate_rss() -> anyhow::Result<()> {
    let m = Manager::start(StoreKind::Sqlite)?;
    let d = Delegate::enrol(&m, "idle", DelegateOpts::default())?;
    std::thread::sleep(Duration::from_secs(3));
    let pid = d.pid().expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    println!("delegate idle_rss={kib} KiB");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; ignore arguments.
    let tasks = env_num("BENCH_TASKS", 50_000);
    let delegates = env_num("BENCH_DELEGATES", 4);
    let capacity = env_num("BENCH_CAPACITY", 256);
    let which = std::env::var("BENCH_STORE").unwrap_or_else(|_| "both".into());
    let rt = tokio::runtime::Runtime::new()?;
    idle_delegate_rss()?;
    if which == "both" || which == "postgres" {
        rt.block_on(throughput(StoreKind::Postgres, tasks, delegates, capacity))?;
    }
    if which == "both" || which == "sqlite" {
        rt.block_on(throughput(StoreKind::Sqlite, tasks, delegates, capacity))?;
    }
    Ok(())
}
