//! What opening sealed citizen records costs a sink (issue #28: at most 15 % of its events/s),
//! release build, in one run against the real Kafka of `LIENTHONG_KAFKA_BOOTSTRAP`:
//!
//! ```text
//! eval "$(ops/services.sh up)"; cargo bench -p lienthong-cli --bench sealed_sink
//! ```
//!
//! The same 20,000 citizen records (20,000 citizens) are on two topics, one in clear and one
//! sealed under the key service (its keys, grants and access records on real Kafka topics).
//! Each round runs the connector runtime in this process over each topic into a fresh SQLite
//! store, the sealed one granted (every record's key released under the grant, recorded on
//! the access log before its batch is applied), until the store holds the whole topic (timed
//! from its first committed batch to its last); which goes first alternates. Prints events/s per round and the medians of 5 rounds with the
//! median of the per-round ratios.

#![allow(clippy::unwrap_used)] // a benchmark: a failed unwrap is a failed run

/// The allocator of the `lienthong` binary, so that the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;

use lienthong_bus::KafkaConfig;
use lienthong_privacy::{Grant, GrantedKeys, KeyService, KeyServiceConfig, KeySource, MasterKey};
use lienthong_tests::bench::{median, median_ratio};
use lienthong_tests::{kafka, unique_suffix};
use rdkafka::consumer::DefaultConsumerContext;
use support::{Store, apply_rate, catalog, config, config_toml, produce, sqlite_store};
use tokio_util::sync::CancellationToken;

const N: usize = 20_000;
const ROUNDS: usize = 5;

/// Run a connector over `topic` into a fresh SQLite store until it holds the whole topic;
/// events/s.
async fn rate(
    kafka: &lienthong_tests::Kafka,
    topic: &str,
    dlq: &str,
    keys: Option<(Arc<KeyService<DefaultConsumerContext>>, &str)>,
) -> f64 {
    let store = sqlite_store().await;
    let name = format!("bench-sink-{}", unique_suffix());
    let mut toml = config_toml(&name, kafka, &[(topic, "citizens")], &store, dlq, "")
        .replace("[batch]", "[filter]\ncitizen_records = true\n[batch]")
        .replace("max_records = 2000", "max_records = 5000");
    if let Some((_, purpose)) = &keys {
        toml.push_str(&format!(
            "[privacy]\nagency = \"26734\"\npurpose = \"{purpose}\"\n"
        ));
    }
    let mut config = config(&toml);
    if let Some((service, purpose)) = keys {
        config.keys = KeySource(Some(Arc::new(GrantedKeys::new(
            service,
            "26734".into(),
            purpose.into(),
        ))));
    }
    let rate = apply_rate(config, kafka, &store, topic).await;
    let rows = store.rows().await;
    assert_eq!(rows.iter().filter(|r| r.table == "citizens").count(), N);
    drop::<Store>(store);
    rate
}

#[tokio::main]
async fn main() {
    if std::env::var("LIENTHONG_KAFKA_BOOTSTRAP").is_err() {
        eprintln!(
            "set LIENTHONG_KAFKA_BOOTSTRAP (eval \"$(ops/services.sh up)\") to run this benchmark"
        );
        std::process::exit(2);
    }
    let kafka = kafka();
    let catalog = catalog();
    let codec = lienthong_contract::Codec::from_catalog(&catalog).unwrap();
    let id = catalog.local_id("hcm.citizen.records").unwrap();
    let suffix = unique_suffix();
    let mut keys_config = KeyServiceConfig::new(KafkaConfig::new(kafka.bootstrap()));
    keys_config.keys_topic = format!("bench-keys-{suffix}");
    keys_config.grants_topic = format!("bench-grants-{suffix}");
    keys_config.access_topic = format!("bench-access-{suffix}");
    let shutdown = CancellationToken::new();
    let master = MasterKey::parse(&MasterKey::generate().unwrap()).unwrap();
    let service = Arc::new(
        KeyService::open(
            &keys_config,
            &master,
            DefaultConsumerContext,
            shutdown.clone(),
        )
        .await
        .unwrap(),
    );
    let purpose = "benchmark";
    service
        .grant(&Grant {
            agency: "26734".into(),
            topic: "hcm.citizen.records".into(),
            classes: lienthong_privacy::profile_classes(),
            purpose: purpose.into(),
            legal_basis: "benchmark".into(),
            expires_at_ms: lienthong_privacy::now_ms() + 86_400_000,
            granted_by: "bench".into(),
            granted_at_ms: lienthong_privacy::now_ms(),
        })
        .await
        .unwrap();
    let clear_topic = kafka
        .create_topic("bench-citizens-clear", 6, 1, &[])
        .await
        .unwrap();
    let sealed_topic = kafka
        .create_topic("bench-citizens-sealed", 6, 1, &[])
        .await
        .unwrap();
    let dlq = kafka
        .create_topic("bench-citizens-dlq", 1, 1, &[])
        .await
        .unwrap();
    let (mut clear, mut sealed) = (Vec::new(), Vec::new());
    for i in 0..N {
        // Citizens that differ in every field, as in a real register.
        let mut c = lienthong_contract::samples::citizen_record_of(i as u64);
        let pid = c.profile.personal_id.clone();
        clear.push((pid.clone(), Some(codec.encode_to_vec(id, &c).unwrap())));
        let key = service
            .seal_key("CATP", "hcm.citizen.records", &pid)
            .await
            .unwrap();
        lienthong_privacy::seal_citizen(&mut c, &key).unwrap();
        sealed.push((key.pseudonym, Some(codec.encode_to_vec(id, &c).unwrap())));
    }
    produce(&kafka, &clear_topic, &clear).await;
    produce(&kafka, &sealed_topic, &sealed).await;

    // Warm-up, not counted.
    rate(&kafka, &clear_topic, &dlq, None).await;
    rate(
        &kafka,
        &sealed_topic,
        &dlq,
        Some((service.clone(), purpose)),
    )
    .await;
    let sealed = || {
        rate(
            &kafka,
            &sealed_topic,
            &dlq,
            Some((service.clone(), purpose)),
        )
    };
    let (mut clear_rates, mut sealed_rates) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let sealed_first = round % 2 == 1;
        if sealed_first {
            sealed_rates.push(sealed().await);
        }
        clear_rates.push(rate(&kafka, &clear_topic, &dlq, None).await);
        if !sealed_first {
            sealed_rates.push(sealed().await);
        }
        println!(
            "round {} ({} first): clear {:.0} events/s, sealed and opened {:.0} events/s",
            round + 1,
            if sealed_first { "sealed" } else { "clear" },
            clear_rates[round],
            sealed_rates[round]
        );
    }
    let ratio = median_ratio(&sealed_rates, &clear_rates);
    println!("median of {ROUNDS} rounds, {N} citizen records into a fresh SQLite store each:");
    println!(
        "  connector, clear records:  {:.0} events/s",
        median(clear_rates)
    );
    println!(
        "  connector, sealed, opened: {:.0} events/s",
        median(sealed_rates)
    );
    println!(
        "  ratio opened / clear: {ratio:.2}x, the median of the per-round ratios (goal >= 0.85x)"
    );
    shutdown.cancel();
}
