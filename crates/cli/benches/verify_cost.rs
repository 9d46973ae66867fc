//! What `lienthong verify` costs on a department-sized store, release build, against the real
//! Kafka of `LIENTHONG_KAFKA_BOOTSTRAP` and the PostgreSQL of `LIENTHONG_PG_URL`
//! (`eval "$(ops/services.sh up)"`):
//!
//! ```text
//! cargo bench -p lienthong-cli --bench verify_cost
//! ```
//!
//! It publishes `LIENTHONG_BENCH_CASES` cases (default 50,000: about 225,000 case events) on a
//! fresh 4-partition topic, lets a connector apply them into a fresh PostgreSQL store, and then
//! runs, three rounds each, alternating:
//!
//! - **verify**: `lienthong_connect::verify` over the store, as the CLI and the scheduled check
//!   run it (store snapshot with its digest, the log folded to the store's offsets, compared);
//! - **baseline, fold**: the log folded into memory up to the same offsets and nothing else:
//!   what any check against the log must at least do.
//!
//! It prints the medians, their ratio, and the process's peak RSS (`VmHWM`) after the first
//! verify (before any fold alone), which the fold's rows dominate.

#![allow(clippy::unwrap_used)] // a benchmark: a failed unwrap is a failed run

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use lienthong_connect::verify::Progress;
use lienthong_connect::{MemoryStore, Sink};
use lienthong_tests::bench::median;
use lienthong_tests::{kafka, unique_suffix};
use support::*;
use tokio_util::sync::CancellationToken;

/// Peak resident memory of this process, in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cases: usize = std::env::var("LIENTHONG_BENCH_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let kafka = kafka();
    let topic = kafka.create_topic("verify-cost", 4, 1, &[]).await.unwrap();
    let dlq = kafka
        .create_topic("verify-cost-dlq", 1, 1, &[])
        .await
        .unwrap();
    let events = case_stream(&format!("VC-{}", unique_suffix()), cases);
    let total = events.len();
    produce(&kafka, &topic, &encode_cases(&events)).await;
    drop(events);
    let store = postgres_store().await;
    let name = format!("verify-cost-{}", unique_suffix());
    let toml = config_toml(&name, &kafka, &[(&topic, "cases")], &store, &dlq, "");
    let config = config(&toml);
    let started = Instant::now();
    let (token, task) = spawn(config.clone());
    wait_caught_up(
        &store,
        &name,
        &topic,
        &end_offsets(&kafka, &topic).await,
        Duration::from_secs(1_800),
    )
    .await;
    token.cancel();
    task.await.unwrap().unwrap();
    println!(
        "{cases} cases, {total} events applied into PostgreSQL in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let catalog = catalog();
    let mut opened = store.open().await;
    let offsets = opened.offsets(&name).await.unwrap();
    let stop = CancellationToken::new();
    let (mut verify, mut fold) = (Vec::new(), Vec::new());
    let mut rows = 0;
    let mut verify_peak = 0.0;
    for round in 1..=3 {
        let t = Instant::now();
        let v = lienthong_connect::verify(
            &config,
            &catalog,
            &mut opened,
            64,
            &Progress::default(),
            &stop,
        )
        .await
        .unwrap();
        assert!(v.in_sync(), "{:?}", v.divergences.first());
        verify.push(t.elapsed().as_secs_f64());
        rows = v.store_rows;
        drop(v);
        if round == 1 {
            verify_peak = peak_rss_mib();
        }
        let t = Instant::now();
        let memory = MemoryStore::new();
        lienthong_connect::fold(
            &config,
            catalog.clone(),
            memory.clone(),
            &offsets,
            &Progress::default(),
            &stop,
        )
        .await
        .unwrap();
        assert_eq!(memory.row_count(), rows);
        fold.push(t.elapsed().as_secs_f64());
        println!(
            "round {round}: verify {:.2} s, fold alone {:.2} s",
            verify[round - 1],
            fold[round - 1]
        );
    }
    let (v, f) = (median(verify), median(fold));
    println!("store: {rows} rows from {total} events");
    println!(
        "verify: median {v:.2} s ({:.0} events/s); fold alone (baseline): median {f:.2} s; verify/fold {:.2}x",
        total as f64 / v,
        v / f
    );
    println!(
        "peak RSS of this process: {verify_peak:.0} MiB after the first verify, {:.0} MiB in all",
        peak_rss_mib()
    );
}
