//! SDK publishing against raw rdkafka producing the same records pre-encoded, on the same real
//! broker, in one run; and the SDK signing every record (issue #29: a batch signature over a
//! Merkle root, the proof in headers). Goals: the SDK at >= 0.8x the raw rate (issue 5), the
//! signing SDK at >= 0.7x (issue #29).
//!
//! Run with the suite's broker: `eval "$(ops/services.sh up)"; cargo bench -p lienthong-sdk
//! --bench publish`. After a warm-up round of each, prints events/s per round (which variant
//! goes first rotates) and the median of 5 rounds for each.

#![allow(clippy::unwrap_used)] // a benchmark: a failed unwrap is a failed run

/// The allocator of the `lienthong` binary, so that the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lienthong_contract::events::CaseEvent;
use lienthong_contract::{AgencyKind, Catalog, Codec, repo_schemas_dir, samples};
use lienthong_sdk::{KafkaConfig, Publisher, PublisherConfig, SchemaIds};
use lienthong_tests::bench;

const N: usize = 200_000;
const ROUNDS: usize = 5;
const IN_FLIGHT: usize = 10_000;

/// Publish `events` through the SDK, at most `IN_FLIGHT` awaiting acknowledgement; events/s.
async fn sdk_rate(sdk: &Publisher, events: Vec<CaseEvent>) -> f64 {
    let t = Instant::now();
    let mut in_flight: FuturesUnordered<_> = FuturesUnordered::new();
    for e in events {
        // As an application calls it: the check, encode and hand-over happen here.
        in_flight.push(sdk.publish(e));
        if in_flight.len() >= IN_FLIGHT {
            in_flight.next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = in_flight.next().await {
        r.unwrap();
    }
    N as f64 / t.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let Ok(bootstrap) = std::env::var("LIENTHONG_KAFKA_BOOTSTRAP") else {
        eprintln!(
            "set LIENTHONG_KAFKA_BOOTSTRAP (eval \"$(ops/services.sh up)\") to run this benchmark"
        );
        std::process::exit(2);
    };
    let kafka = lienthong_tests::kafka();
    kafka.ensure_catalog_topics().await.unwrap();
    let catalog = Arc::new(Catalog::load(repo_schemas_dir()).unwrap());
    let codec = Codec::from_catalog(&catalog).unwrap();
    let id = catalog.local_id("hcm.case.events").unwrap();
    // Events as a producer holds them: built before timing, moved into `publish`.
    let make_events = || -> Vec<_> {
        (0..N)
            .map(|i| {
                let mut e = samples::typical_case_submitted();
                e.envelope.aggregate_id = format!("HS-BENCH-{}", i % 5_000);
                e
            })
            .collect()
    };
    let events = make_events();
    let encoded: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| {
            (
                e.envelope.aggregate_id.clone(),
                codec.encode_to_vec(id, e).unwrap(),
            )
        })
        .collect();

    let raw = bench::raw_producer(&bootstrap).unwrap();
    let mut config = PublisherConfig::new("26734", AgencyKind::Ward, KafkaConfig::new(&bootstrap));
    config.max_in_flight = IN_FLIGHT;
    let sdk = Publisher::connect(config.clone(), catalog.clone(), SchemaIds::Local)
        .await
        .unwrap();
    let ca = lienthong_signing::CityCa::generate("bench CA", 1).unwrap();
    let issued = ca.issue("26734", 1).unwrap();
    let signer =
        lienthong_signing::AgencySigner::from_pem(&issued.key_pem, issued.certificate).unwrap();
    let signed = Publisher::connect(config, catalog.clone(), SchemaIds::Local)
        .await
        .unwrap()
        .with_signer(signer)
        .unwrap();

    // A warm-up round of each, not counted: the first burst after start meets a cold broker
    // (its JIT, its first segment files) and cold client buffers.
    bench::raw_rate(&raw, "hcm.case.events", &encoded, IN_FLIGHT)
        .await
        .unwrap();
    sdk_rate(&sdk, make_events()).await;
    sdk_rate(&signed, make_events()).await;
    let mut rates: [Vec<f64>; 3] = Default::default();
    // CPU µs per event, this process and the broker (java), summed over the rounds.
    let mut cpu = [(0.0f64, 0.0f64); 3];
    const NAMES: [&str; 3] = ["raw", "sdk", "signed"];
    for round in 0..ROUNDS {
        // Each round runs all three; which goes first rotates, so that none always meets the
        // broker just after another's burst (its log flush, its segment roll).
        for k in 0..3 {
            let v = (round + k) % 3;
            let (own, broker) = (bench::process_cpu_secs(), bench::processes_cpu_secs("java"));
            let rate = match v {
                0 => bench::raw_rate(&raw, "hcm.case.events", &encoded, IN_FLIGHT)
                    .await
                    .unwrap(),
                1 => sdk_rate(&sdk, make_events()).await,
                _ => sdk_rate(&signed, make_events()).await,
            };
            rates[v].push(rate);
            cpu[v].0 += (bench::process_cpu_secs() - own) * 1e6 / (N * ROUNDS) as f64;
            cpu[v].1 += (bench::processes_cpu_secs("java") - broker) * 1e6 / (N * ROUNDS) as f64;
        }
        println!(
            "round {} ({} first): raw {:.0} events/s, sdk {:.0} events/s, signed {:.0} events/s",
            round + 1,
            NAMES[round % 3],
            rates[0][round],
            rates[1][round],
            rates[2][round]
        );
    }
    let ratio = bench::median_ratio(&rates[1], &rates[0]);
    let signed_ratio = bench::median_ratio(&rates[2], &rates[0]);
    let signed_sdk_ratio = bench::median_ratio(&rates[2], &rates[1]);
    let [raw_m, sdk_m, signed_m] = rates.map(bench::median);
    println!(
        "median of {ROUNDS} rounds of {N} typical case-submitted events (acks=all, idempotent, lz4):"
    );
    println!("  raw rdkafka, pre-encoded bytes: {raw_m:.0} events/s");
    println!("  lienthong SDK (check, NFC, encode, produce): {sdk_m:.0} events/s");
    println!(
        "  lienthong SDK signing (ECDSA P-256 per batch, Merkle proof per record): {signed_m:.0} events/s"
    );
    println!("  ratio SDK / raw: {ratio:.2}x, the median of the per-round ratios (goal >= 0.8x)");
    for (name, (own, broker)) in NAMES.iter().zip(cpu) {
        println!("  CPU per event, {name}: {own:.2} µs this process, {broker:.2} µs the broker");
    }
    println!(
        "  ratio signing SDK / raw: {signed_ratio:.2}x (goal >= 0.7x); signing SDK / SDK: {signed_sdk_ratio:.2}x"
    );
}
