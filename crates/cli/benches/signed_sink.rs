//! What verifying signatures costs a sink (issue #29: the sink at >= 0.85x its unsigned rate),
//! release build, in one run against the real Kafka of `LIENTHONG_KAFKA_BOOTSTRAP`:
//!
//! ```text
//! eval "$(ops/services.sh up)"; cargo bench -p lienthong-cli --bench signed_sink
//! ```
//!
//! The same 40,000 case events (8,000 cases of ward 26734) are on two topics, one unsigned and
//! one signed by the ward as its SDK signs (batches of up to 64 records under one ECDSA P-256
//! signature, each record's Merkle path in its header). Each round runs the connector runtime
//! in this process over each topic into a fresh SQLite store, the signed one with
//! `[signatures]` (every record verified against the certificate log on Kafka before it is
//! applied), until the store holds the whole topic, timed from its first committed batch to
//! its last (the start, which opens the certificate log too, is left out); which goes first
//! alternates. Prints
//! events/s per round and the medians of 5 rounds with the median of the per-round ratios.

#![allow(clippy::unwrap_used)] // a benchmark: a failed unwrap is a failed run

/// The allocator of the `lienthong` binary, so that the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use lienthong_signing::{SignedBatch, leaf};
use lienthong_tests::bench::{median, median_ratio};
use lienthong_tests::{kafka, unique_suffix};
use rdkafka::producer::FutureRecord;
use support::{
    Pki, apply_rate, case_stream, config, config_toml, encode_cases, produce, producer,
    sqlite_store, stamped_topic,
};
use tokio_util::sync::CancellationToken;

const CASES: usize = 8_000;
const ROUNDS: usize = 5;
/// As the SDK signs under load.
const BATCH: usize = 64;

#[tokio::main]
async fn main() {
    if std::env::var("LIENTHONG_KAFKA_BOOTSTRAP").is_err() {
        eprintln!(
            "set LIENTHONG_KAFKA_BOOTSTRAP (eval \"$(ops/services.sh up)\") to run this benchmark"
        );
        std::process::exit(2);
    }
    let kafka = kafka();
    let shutdown = CancellationToken::new();
    let pki = Pki::new(&kafka, &shutdown).await;
    let (_, signer) = pki.signer("26734").await;

    let unsigned_topic = stamped_topic(&kafka, "bench-cases-unsigned", 6).await;
    let signed_topic = stamped_topic(&kafka, "bench-cases-signed", 6).await;
    let dlq = kafka
        .create_topic("bench-cases-dlq", 1, 1, &[])
        .await
        .unwrap();
    let records = encode_cases(&case_stream(&format!("HS-{}", unique_suffix()), CASES));
    let n = records.len();
    produce(&kafka, &unsigned_topic, &records).await;
    let p = producer(&kafka);
    for chunk in records.chunks(BATCH) {
        let leaves: Vec<_> = chunk
            .iter()
            .map(|(k, v)| leaf(&signed_topic, Some(k.as_bytes()), v.as_deref()))
            .collect();
        let batch = SignedBatch::sign(&signer, &leaves).unwrap();
        let sends: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, (k, v))| {
                p.send(
                    FutureRecord::to(&signed_topic)
                        .key(k)
                        .payload(v.as_deref().unwrap())
                        .headers(batch.headers(i)),
                    Duration::from_secs(30),
                )
            })
            .collect();
        for s in futures::future::join_all(sends).await {
            s.unwrap();
        }
    }

    let signatures = pki.signatures_toml();
    let rate = |topic: String, verify: bool| {
        let (kafka, dlq, signatures) = (&kafka, &dlq, &signatures);
        async move {
            let store = sqlite_store().await;
            let name = format!("bench-signed-{}", unique_suffix());
            let extra = if verify { signatures.as_str() } else { "" };
            let toml = config_toml(&name, kafka, &[(&topic, "cases")], &store, dlq, extra)
                .replace("max_records = 2000", "max_records = 5000");
            let rate = apply_rate(config(&toml), kafka, &store, &topic).await;
            let cases = store.rows().await;
            assert_eq!(cases.iter().filter(|r| r.table == "cases").count(), CASES);
            rate
        }
    };
    // Warm-up, not counted.
    rate(unsigned_topic.clone(), false).await;
    rate(signed_topic.clone(), true).await;
    let (mut unsigned_rates, mut signed_rates) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let signed_first = round % 2 == 1;
        if signed_first {
            signed_rates.push(rate(signed_topic.clone(), true).await);
        }
        unsigned_rates.push(rate(unsigned_topic.clone(), false).await);
        if !signed_first {
            signed_rates.push(rate(signed_topic.clone(), true).await);
        }
        println!(
            "round {} ({} first): unsigned {:.0} events/s, signed and verified {:.0} events/s",
            round + 1,
            if signed_first { "signed" } else { "unsigned" },
            unsigned_rates[round],
            signed_rates[round]
        );
    }
    let ratio = median_ratio(&signed_rates, &unsigned_rates);
    println!("median of {ROUNDS} rounds, {n} case events into a fresh SQLite store each:");
    println!(
        "  connector, unsigned:            {:.0} events/s",
        median(unsigned_rates)
    );
    println!(
        "  connector, signed and verified: {:.0} events/s",
        median(signed_rates)
    );
    println!("  ratio verified / unsigned: {ratio:.2}x (goal >= 0.85x)");
    shutdown.cancel();
}
