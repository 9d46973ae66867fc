//! The idempotency index's pauses: how long one request's ids hold the index's lock while the
//! index fills to its default bound of 2,000,000 ids and then forgets the oldest. Every request
//! of the gateway waits for that lock, so its longest hold is a pause of the whole gateway. Each
//! round reserves and completes batches of 500 new ids (what a request of 500 events does) on
//! one thread, 3,000,000 ids in all, and times each batch. Each round runs in a process of its
//! own, so that the index's memory is fresh from the kernel as in a gateway that just started
//! (in one process, the second round reuses the pages the allocator kept from the first, and
//! its pauses were a tenth as long). Prints every round and the medians of 5 rounds.
//!
//! `cargo bench -p lienthong-gateway --bench index`

#![allow(clippy::unwrap_used)] // a benchmark: a failed unwrap is a failed run

/// The allocator of the `lienthong` binary, so that the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use lienthong_gateway::GatewayConfig;
use lienthong_gateway::idem::{EventKey, Index, Reservation};
use lienthong_tests::bench::median;

const BATCH: usize = 500;
const IDS: usize = 3_000_000;
const ROUNDS: usize = 5;

struct Round {
    /// The longest batch while the index grew to its bound, and after (forgetting the oldest).
    longest_growing: Duration,
    longest_full: Duration,
    p99: Duration,
    ids_per_sec: f64,
}

fn round(keys: &[EventKey], max_entries: usize) -> Round {
    let index = Index::new(Duration::from_secs(24 * 3600), max_entries);
    let mut times = Vec::with_capacity(keys.len() / BATCH);
    let (mut longest_growing, mut longest_full) = (Duration::ZERO, Duration::ZERO);
    let started = Instant::now();
    for (b, batch) in keys.chunks(BATCH).enumerate() {
        let ids: Vec<(EventKey, [u8; 32])> = batch.iter().map(|k| (*k, [7; 32])).collect();
        let t = Instant::now();
        let Reservation::Held { fresh, .. } = index.reserve(&ids) else {
            panic!("new ids are held")
        };
        assert_eq!(fresh.len(), batch.len(), "every id is new");
        index.complete(
            "hcm.case.events",
            batch
                .iter()
                .enumerate()
                .map(|(i, k)| (*k, (i % 12) as i32, (b * BATCH + i) as i64)),
        );
        let took = t.elapsed();
        times.push(took);
        if (b + 1) * BATCH <= max_entries {
            longest_growing = longest_growing.max(took);
        } else {
            longest_full = longest_full.max(took);
        }
    }
    let total = started.elapsed();
    // Forgetting happens as a request reserves, before its own ids are held.
    let held = index.len();
    assert!(
        (max_entries..=max_entries + BATCH).contains(&held),
        "the index holds its bound: {held} ids"
    );
    times.sort_unstable();
    Round {
        longest_growing,
        longest_full,
        p99: times[times.len() * 99 / 100],
        ids_per_sec: keys.len() as f64 / total.as_secs_f64(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Set in a round's own process: which round it is.
const ROUND_ENV: &str = "LIENTHONG_INDEX_BENCH_ROUND";

fn main() {
    let max_entries = GatewayConfig::default().idempotency_max_entries;
    if std::env::var_os(ROUND_ENV).is_some() {
        let keys: Vec<EventKey> = (0..IDS)
            .map(|_| EventKey::parse(&uuid::Uuid::new_v4().to_string()).unwrap())
            .collect();
        let x = round(&keys, max_entries);
        // One line for the parent: growing ms, full ms, p99 ms, ids/s.
        println!(
            "{} {} {} {}",
            ms(x.longest_growing),
            ms(x.longest_full),
            ms(x.p99),
            x.ids_per_sec
        );
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut rounds: Vec<[f64; 4]> = Vec::new();
    for r in 1..=ROUNDS {
        let out = std::process::Command::new(&exe)
            .env(ROUND_ENV, r.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "round {r} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        let v: Vec<f64> = line
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        let x: [f64; 4] = v.try_into().unwrap();
        println!(
            "round {r}: longest batch {:.1} ms while growing to {max_entries} ids, {:.1} ms when full; p99 {:.3} ms; {:.0} ids/s",
            x[0], x[1], x[2], x[3]
        );
        rounds.push(x);
    }
    let med = |i: usize| median(rounds.iter().map(|x| x[i]).collect());
    println!(
        "median of {ROUNDS} rounds of {IDS} ids in batches of {BATCH} (index bound {max_entries}), each in a fresh process:"
    );
    println!(
        "  longest batch while growing: {:.1} ms; when full: {:.1} ms",
        med(0),
        med(1)
    );
    println!("  batch p99: {:.3} ms; {:.0} ids/s", med(2), med(3));
}
