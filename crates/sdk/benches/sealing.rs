//! What sealing citizen records costs the SDK (issue #28: at most 15 % of its events/s on the
//! citizen topic), in one run on the suite's real broker: the same publisher code publishing
//! the same citizen records with `publish_citizen`, once in clear and once sealed under the
//! key service (wrapped keys, grants and access records on real Kafka topics: every sealing
//! queues its access record). The citizens' keys exist before timing, as for a department
//! that updates the records it holds.
//!
//! Run: `eval "$(ops/services.sh up)"; cargo bench -p lienthong-sdk --bench sealing`. After a
//! warm-up round of each, prints events/s per round (which goes first alternates) and the
//! medians of 5 rounds with the median of the per-round ratios.

#![allow(clippy::unwrap_used)] // a benchmark: a failed unwrap is a failed run

/// The allocator of the `lienthong` binary, so that the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lienthong_contract::events::CitizenRecord;
use lienthong_contract::{AgencyKind, Catalog, repo_schemas_dir, samples};
use lienthong_privacy::{KeyService, KeyServiceConfig, MasterKey};
use lienthong_sdk::{KafkaConfig, Publisher, PublisherConfig, SchemaIds};
use lienthong_tests::{bench, unique_suffix};
use rdkafka::consumer::DefaultConsumerContext;
use tokio_util::sync::CancellationToken;

const N: usize = 50_000;
const CITIZENS: usize = 5_000;
const ROUNDS: usize = 5;
const IN_FLIGHT: usize = 10_000;

fn records() -> Vec<CitizenRecord> {
    (0..N)
        .map(|i| {
            // Citizens that differ in every field, as in a real register (copies of one
            // sample would compress far better than real records, and flatter the clear run).
            let mut c = samples::citizen_record_of((i % CITIZENS) as u64);
            c.envelope.event_id = samples::uuid_like(i as u64);
            c.envelope.aggregate_version = (i / CITIZENS + 1) as i64;
            c
        })
        .collect()
}

async fn rate(publisher: &Publisher, records: Vec<CitizenRecord>) -> f64 {
    let t = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    for r in records {
        in_flight.push(publisher.publish_citizen(r));
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
    let publisher = |_: ()| {
        let mut config =
            PublisherConfig::new("CATP", AgencyKind::Department, KafkaConfig::new(&bootstrap));
        config.max_in_flight = IN_FLIGHT;
        Publisher::connect(config, catalog.clone(), SchemaIds::Local)
    };
    let clear = publisher(()).await.unwrap();
    let suffix = unique_suffix();
    let mut keys_config = KeyServiceConfig::new(KafkaConfig::new(&bootstrap));
    keys_config.keys_topic = format!("bench-keys-{suffix}");
    keys_config.grants_topic = format!("bench-grants-{suffix}");
    keys_config.access_topic = format!("bench-access-{suffix}");
    let shutdown = CancellationToken::new();
    let master = MasterKey::parse(&MasterKey::generate().unwrap()).unwrap();
    let service = Arc::new(
        KeyService::<DefaultConsumerContext>::open(
            &keys_config,
            &master,
            DefaultConsumerContext,
            shutdown.clone(),
        )
        .await
        .unwrap(),
    );
    let sealed = publisher(()).await.unwrap().with_keys(service.clone());

    // Warm-up, not counted: creates the citizens' keys, warms the broker and the clients.
    rate(&clear, records()).await;
    rate(&sealed, records()).await;
    let (mut clear_rates, mut sealed_rates) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let sealed_first = round % 2 == 1;
        if sealed_first {
            sealed_rates.push(rate(&sealed, records()).await);
        }
        clear_rates.push(rate(&clear, records()).await);
        if !sealed_first {
            sealed_rates.push(rate(&sealed, records()).await);
        }
        service.flush().await.unwrap();
        println!(
            "round {} ({} first): clear {:.0} events/s, sealed {:.0} events/s",
            round + 1,
            if sealed_first { "sealed" } else { "clear" },
            clear_rates[round],
            sealed_rates[round]
        );
    }
    // The sealing alone, without Kafka: the key service's answer, the seal, the encoding.
    let catalog_codec = lienthong_contract::Codec::from_catalog(&catalog).unwrap();
    let id = catalog.local_id("hcm.citizen.records").unwrap();
    let to_seal = records();
    let t = Instant::now();
    let mut bytes = 0;
    for mut r in to_seal {
        let key = service
            .seal_key("CATP", "hcm.citizen.records", &r.profile.personal_id)
            .await
            .unwrap();
        lienthong_privacy::seal_citizen(&mut r, &key).unwrap();
        bytes += catalog_codec.encode_to_vec(id, &r).unwrap().len();
    }
    let sealing_us = t.elapsed().as_secs_f64() * 1e6 / N as f64;
    let clear_bytes: usize = records()
        .iter()
        .map(|r| catalog_codec.encode_to_vec(id, r).unwrap().len())
        .sum();
    let ratio = bench::median_ratio(&sealed_rates, &clear_rates);
    println!(
        "median of {ROUNDS} rounds of {N} citizen records ({CITIZENS} citizens), SDK publish_citizen:"
    );
    println!("  clear:  {:.0} events/s", bench::median(clear_rates));
    println!(
        "  sealed: {:.0} events/s (AES-256-GCM, pseudonym; each citizen's sealing recorded once per 15 minutes)",
        bench::median(sealed_rates)
    );
    println!(
        "  ratio sealed / clear: {ratio:.2}x, the median of the per-round ratios (goal >= 0.85x)"
    );
    println!(
        "  sealing alone (key, seal, encode; no Kafka): {sealing_us:.2} µs/event; record size {} bytes sealed, {} clear",
        bytes / N,
        clear_bytes / N
    );
    shutdown.cancel();
}
