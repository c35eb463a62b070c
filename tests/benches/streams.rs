//! Connected-delegate footprint: enrols N delegates (real CSRs, real client
//! certificates), opens N mutually-authenticated session streams to one manager
//! (one TLS connection each, as real delegates do), and measures the manager's
//! resident memory per connected stream.
//!
//! Run with `scripts/bench.sh` (or `BENCH_STREAMS=5000 cargo bench -p dray-tests --bench streams`
//! after `cargo build --release --bins`). Prints
//! `streams delegates=N manager_rss_before=X KiB after=Y KiB per_stream=Z KiB`.

use std::time::Duration;

use dray_shared::pb::delegate_service_client::DelegateServiceClient;
use dray_shared::pb::{self, delegate_message::Msg};
use dray_shared::{pki, tls};
use dray_tests::*;
use futures::StreamExt;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("BENCH_STREAMS").ok().and_then(|v| v.parse().ok()).unwrap_or(5000);
    let m = Manager::start_with(StoreKind::Sqlite, ManagerOpts { lease_ttl: "60s", ..Default::default() })?;
    let pid = m.pid().expect("manager pid");
    let token = m.token("fleet", &[])?;
    let ca = std::fs::read_to_string(m.ca_file())?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let enrol_ch = tls::endpoint(&m.url(), &ca, None)?.connect().await?;
        // Enrol everyone first (bounded concurrency).
        let identities: Vec<(String, String)> = futures::stream::iter(0..n)
            .map(|i| {
                let mut c = DelegateServiceClient::new(enrol_ch.clone());
                let token = token.clone();
                async move {
                    let (key, csr) = pki::delegate_key_and_csr(&format!("d{i}"))?;
                    let r = c
                        .enrol(pb::EnrolRequest { token, name: format!("d{i}"), csr_pem: csr, tags: vec![], protocol: dray_shared::protocol::PROTOCOL })
                        .await?
                        .into_inner();
                    anyhow::Ok((r.certificate_pem, key))
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        drop(enrol_ch);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = rss_kib(pid);

        let sessions: Vec<_> = futures::stream::iter(identities)
            .map(|(cert, key)| {
                let ep = tls::endpoint(&m.url(), &ca, Some((&cert, &key)));
                async move {
                    let ch = ep?.connect().await?;
                    let mut c = DelegateServiceClient::new(ch);
                    let (tx, rx) = tokio::sync::mpsc::channel(4);
                    let hello = pb::Hello { version: "bench".into(), tags: vec![], capacity: 1, ..Default::default() };
                    tx.send(pb::DelegateMessage { msg: Some(Msg::Hello(hello)) }).await?;
                    let mut inbound =
                        c.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
                    inbound.message().await?;
                    anyhow::Ok((tx, inbound, c))
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let after = rss_kib(pid);
        let connected = m
            .http("/metrics")
            .and_then(|(_, b)| {
                b.lines().find(|l| l.starts_with("dray_delegates_connected "))?.rsplit(' ').next()?.parse::<u64>().ok()
            })
            .unwrap_or(0);
        println!(
            "streams delegates={} connected={connected} manager_rss_before={before} KiB after={after} KiB per_stream={:.1} KiB",
            sessions.len(),
            (after.saturating_sub(before)) as f64 / sessions.len().max(1) as f64
        );
        drop(sessions);
        anyhow::Ok(())
    })
}
