//! SDK publishing against raw rdkafka producing the same records pre-encoded, on the same real
//! broker, in one run. Goal (issue 5): the SDK at >= 0.8x the raw rate.
//!
//! Run with the suite's broker: `eval "$(ops/services.sh up)"; cargo bench -p lienthong-sdk
//! --bench publish`. After a warm-up round of each, prints events/s per round (which variant goes first
//! alternates) and the median of 5 rounds for each.

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
    let sdk = Arc::new(
        Publisher::connect(config, catalog.clone(), SchemaIds::Local)
            .await
            .unwrap(),
    );

    // A warm-up round of each, not counted: the first burst after start meets a cold broker
    // (its JIT, its first segment files) and cold client buffers.
    bench::raw_rate(&raw, "hcm.case.events", &encoded, IN_FLIGHT)
        .await
        .unwrap();
    sdk_rate(&sdk, make_events()).await;
    let (mut raw_rates, mut sdk_rates) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Each round runs both; which goes first alternates, so that neither always meets the
        // broker just after the other's burst (its log flush, its segment roll).
        let sdk_first = round % 2 == 1;
        if sdk_first {
            sdk_rates.push(sdk_rate(&sdk, make_events()).await);
        }
        raw_rates.push(
            bench::raw_rate(&raw, "hcm.case.events", &encoded, IN_FLIGHT)
                .await
                .unwrap(),
        );
        if !sdk_first {
            sdk_rates.push(sdk_rate(&sdk, make_events()).await);
        }
        println!(
            "round {} ({} first): raw {:.0} events/s, sdk {:.0} events/s",
            round + 1,
            if sdk_first { "sdk" } else { "raw" },
            raw_rates[round],
            sdk_rates[round]
        );
    }
    let ratio = bench::median_ratio(&sdk_rates, &raw_rates);
    let (raw_m, sdk_m) = (bench::median(raw_rates), bench::median(sdk_rates));
    println!(
        "median of {ROUNDS} rounds of {N} typical case-submitted events (acks=all, idempotent, lz4):"
    );
    println!("  raw rdkafka, pre-encoded bytes: {raw_m:.0} events/s");
    println!("  lienthong SDK (check, NFC, encode, produce): {sdk_m:.0} events/s");
    println!("  ratio SDK / raw: {ratio:.2}x, the median of the per-round ratios (goal >= 0.8x)");
}
