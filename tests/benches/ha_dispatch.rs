//! Dispatch benchmark across manager replicas: 1, 2 and 3 `dray server`
//! replicas on one PostgreSQL schema, delegates spread evenly over them (each
//! connected to one replica only), `noop` tasks submitted round-robin through
//! every replica's public API.
//!
//! Run with `scripts/bench.sh` (builds release binaries first) or
//! `cargo bench -p dray-tests --bench ha_dispatch`. Environment:
//! `BENCH_REPLICAS` (default `1,2,3`), `BENCH_TASKS` (default 5000),
//! `BENCH_DELEGATES` (default 6), `BENCH_CAPACITY` (slots per delegate, default 64),
//! `BENCH_RATE` (paced tasks/s for 10 s, default 100), `BENCH_TIMEOUT_SECS`
//! (per phase, default 300).
//!
//! Completion and latencies are read from the store (the `tasks` table of the
//! run's schema), not from one replica's metrics, so a task finished through
//! any replica counts once. Latency is submit→start: `started_ms - created_ms`.
//! Prints, per replica count, a throughput line and a paced-latency line, then a
//! table of all runs.

use std::time::{Duration, Instant};

use dray_shared::pb;
use dray_tests::bench::{client, env_num, noop, percentile};
use dray_tests::*;

/// The run's `tasks` table, read directly.
struct Tasks {
    pool: sqlx::PgPool,
    table: String,
}

impl Tasks {
    async fn connect(m: &Manager) -> anyhow::Result<Tasks> {
        let schema = m.schema.clone().ok_or_else(|| anyhow::anyhow!("no schema"))?;
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&pg_url()).await?;
        Ok(Tasks { pool, table: format!("{schema}.tasks") })
    }

    /// Tasks created at or after `since_ms`: (all, in a final state, succeeded).
    /// Succeeded is the first final state in `dray.v1.TaskState`; the later ones are
    /// failed, cancelled, lost and expired.
    async fn counts(&self, since_ms: i64) -> anyhow::Result<(i64, i64, i64)> {
        let sql = format!(
            "SELECT count(*), count(*) FILTER (WHERE state >= $2), count(*) FILTER (WHERE state = $2) \
             FROM {} WHERE created_ms >= $1",
            self.table
        );
        let row: (i64, i64, i64) = sqlx::query_as(&sql)
            .bind(since_ms)
            .bind(pb::TaskState::Succeeded as i32)
            .fetch_one(&self.pool)
            .await?;
        Ok(row)
    }

    /// Submit→start latencies (ms) of tasks created in `[from_ms, to_ms)` that started, sorted.
    async fn latencies(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<i64>> {
        let sql = format!(
            "SELECT started_ms - created_ms FROM {} \
             WHERE created_ms >= $1 AND created_ms < $2 AND started_ms IS NOT NULL",
            self.table
        );
        let mut l: Vec<i64> =
            sqlx::query_scalar(&sql).bind(from_ms).bind(to_ms).fetch_all(&self.pool).await?;
        l.sort_unstable();
        Ok(l)
    }

    /// Waits until `want` tasks created since `since_ms` are final, or `timeout` passes;
    /// returns (final, succeeded).
    async fn wait_final(&self, since_ms: i64, want: i64, timeout: Duration) -> anyhow::Result<(i64, i64)> {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, done, ok) = self.counts(since_ms).await?;
            if done >= want || Instant::now() > deadline {
                return Ok((done, ok));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One row of the summary table.
struct Row {
    replicas: usize,
    delegates: usize,
    tasks: usize,
    done: i64,
    succeeded: i64,
    throughput: f64,
    p50: i64,
    p99: i64,
    paced: usize,
    paced_done: i64,
    paced_p50: i64,
    paced_p99: i64,
}

struct Setup {
    tasks: usize,
    delegates: usize,
    capacity: usize,
    rate: usize,
    timeout: Duration,
}

async fn bench(replicas: usize, s: &Setup) -> anyhow::Result<Row> {
    let opts = ManagerOpts { lease_ttl: "15s", offer_timeout: "5s", queue_timeout: "10m", cert_ttl: "1h" };
    // Replicas after the first; dropped before it (reverse declaration order), as it owns the schema.
    let first = Manager::start_with(StoreKind::Postgres, opts)?;
    let others: Vec<Manager> =
        (1..replicas).map(|_| Manager::start_replica_of(&first)).collect::<anyhow::Result<_>>()?;
    let ms: Vec<&Manager> = std::iter::once(&first).chain(others.iter()).collect();
    // Delegate i talks only to replica i mod n.
    let _ds: Vec<Delegate> = (0..s.delegates)
        .map(|i| {
            Delegate::enrol(
                ms[i % replicas],
                &format!("bench-{i}"),
                DelegateOpts { capacity: s.capacity as u32, ..Default::default() },
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let mut clients = Vec::new();
    for m in &ms {
        clients.push(client(m).await?);
    }
    let store = Tasks::connect(&first).await?;

    // Warm up every replica.
    let warm_from = dray_shared::clock::now_ms();
    for c in &mut clients {
        c.submit_tasks(pb::SubmitTasksRequest { tasks: vec![noop(); 200] }).await?;
    }
    let warm = (200 * replicas) as i64;
    let (done, _) = store.wait_final(warm_from, warm, s.timeout).await?;
    anyhow::ensure!(done >= warm, "warm-up: {done} of {warm} tasks finished in {:?}", s.timeout);

    // Burst: batches of 100, batch k through replica k mod n, four submitters.
    let batch = 100;
    let batches = s.tasks.div_ceil(batch);
    let submitters = 4;
    let from = dray_shared::clock::now_ms();
    let started = Instant::now();
    let mut joins = Vec::new();
    for j in 0..submitters {
        let clients = clients.clone();
        let total = s.tasks;
        joins.push(tokio::spawn(async move {
            for k in (j..batches).step_by(submitters) {
                let n = batch.min(total - k * batch);
                let mut c = clients[k % clients.len()].clone();
                c.submit_tasks(pb::SubmitTasksRequest { tasks: vec![noop(); n] }).await?;
            }
            anyhow::Ok(())
        }));
    }
    for j in joins {
        j.await??;
    }
    let (done, succeeded) = store.wait_final(from, s.tasks as i64, s.timeout).await?;
    let elapsed = started.elapsed();
    let to = dray_shared::clock::now_ms() + 1;
    let lat = store.latencies(from, to).await?;
    let (rows, _, _) = store.counts(from).await?;
    let throughput = done as f64 / elapsed.as_secs_f64();
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    println!(
        "ha_dispatch replicas={replicas} tasks={} rows={rows} done={done} succeeded={succeeded} delegates={} \
         throughput={throughput:.0}/s p50={p50}ms p99={p99}ms",
        s.tasks, s.delegates,
    );

    // Paced: BENCH_RATE tasks/s for 10 s, one task per submit, round-robin.
    let paced = s.rate * 10;
    let from = dray_shared::clock::now_ms();
    let start = Instant::now();
    let mut sends = Vec::new();
    for i in 0..paced {
        let due = start + Duration::from_secs_f64(i as f64 / s.rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let mut c = clients[i % replicas].clone();
        sends.push(tokio::spawn(async move {
            c.submit_tasks(pb::SubmitTasksRequest { tasks: vec![noop()] }).await
        }));
    }
    for send in sends {
        send.await??;
    }
    let (paced_done, _) = store.wait_final(from, paced as i64, s.timeout).await?;
    let lat = store.latencies(from, dray_shared::clock::now_ms() + 1).await?;
    println!(
        "ha_latency replicas={replicas} rate={}/s tasks={paced} done={paced_done} p50={}ms p99={}ms max={}ms",
        s.rate,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0)
    );
    Ok(Row {
        replicas,
        delegates: s.delegates,
        tasks: s.tasks,
        done,
        succeeded,
        throughput,
        p50,
        p99,
        paced,
        paced_done,
        paced_p50: percentile(&lat, 0.5),
        paced_p99: percentile(&lat, 0.99),
    })
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; ignore arguments.
    let replicas: Vec<usize> = std::env::var("BENCH_REPLICAS")
        .unwrap_or_else(|_| "1,2,3".into())
        .split(',')
        .map(|n| n.trim().parse())
        .collect::<Result<_, _>>()?;
    let setup = Setup {
        tasks: env_num("BENCH_TASKS", 5000),
        delegates: env_num("BENCH_DELEGATES", 6),
        capacity: env_num("BENCH_CAPACITY", 64),
        rate: env_num("BENCH_RATE", 100),
        timeout: Duration::from_secs(env_num("BENCH_TIMEOUT_SECS", 300) as u64),
    };
    let rt = tokio::runtime::Runtime::new()?;
    let mut rows = Vec::new();
    for n in replicas {
        match rt.block_on(bench(n, &setup)) {
            Ok(row) => rows.push(row),
            Err(e) => println!("ha_dispatch replicas={n} error={e:#}"),
        }
    }
    println!();
    println!(
        "{:>8} {:>9} {:>7} {:>7} {:>9} {:>12} {:>8} {:>8} {:>11} {:>13} {:>13}",
        "replicas",
        "delegates",
        "tasks",
        "done",
        "succeeded",
        "throughput/s",
        "p50 ms",
        "p99 ms",
        "paced done",
        "paced p50 ms",
        "paced p99 ms"
    );
    for r in &rows {
        println!(
            "{:>8} {:>9} {:>7} {:>7} {:>9} {:>12.0} {:>8} {:>8} {:>11} {:>13} {:>13}",
            r.replicas,
            r.delegates,
            r.tasks,
            r.done,
            r.succeeded,
            r.throughput,
            r.p50,
            r.p99,
            format!("{}/{}", r.paced_done, r.paced),
            r.paced_p50,
            r.paced_p99
        );
    }
    Ok(())
}
