//! The gateway on the suite's real broker, in one run:
//! (a) batched ingest (concurrent JSON batches over HTTP, validated, encoded, produced in
//!     transactions, answered after commit) against raw rdkafka producing the same events
//!     pre-encoded (`lienthong_tests::bench`, the SDK benchmark's baseline) into a topic of its
//!     own with the same partitions, which the gateway does not read back. Both offer the broker
//!     the same number of events in flight: the baseline keeps `RAW_IN_FLIGHT` sends pending, the
//!     load generator `RAW_IN_FLIGHT / BATCH` clients each with one batch outstanding. Goal
//!     (issue 5): the gateway at >= 0.3x the raw rate. Each round also runs the gateway with
//!     fewer clients (`FEW_CLIENTS`), printed beside it: the gateway's rate depends on how many
//!     requests it can gather into a transaction, the baseline's hardly on its window;
//! (b) p50 and p99 latency of single-event POSTs sent at a steady 1,000 events/s.
//!
//! Run with the suite's broker: `eval "$(ops/services.sh up)"; cargo bench -p
//! lienthong-gateway --bench ingest`. After a warm-up round, prints every round (which variant goes
//! first alternates) and the median of 5 rounds.

#![allow(clippy::unwrap_used)] // a benchmark: a failed unwrap is a failed run

/// The allocator of the `lienthong` binary, so that the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lienthong_contract::{Catalog, Codec, repo_schemas_dir, samples};
use lienthong_gateway::{Gateway, GatewayConfig, local_ids};
use lienthong_registry::AgencyCredential;
use lienthong_registry::auth::hash_token;
use lienthong_telemetry::component::Listener;
use lienthong_tests::bench;
use tokio_util::sync::CancellationToken;

const N: usize = 100_000;
const BATCH: usize = 500;
const ROUNDS: usize = 5;
/// Sends the baseline keeps pending (it runs at about the same rate with 4,000).
const RAW_IN_FLIGHT: usize = 10_000;
/// Load-generator clients, one batch outstanding each: the baseline's events in flight.
const CLIENTS: usize = RAW_IN_FLIGHT / BATCH;
/// The smaller load printed beside it (4,000 events in flight).
const FEW_CLIENTS: usize = 8;
const TOPIC: &str = "hcm.case.events";
const STEADY_RATE: u64 = 1_000;
const STEADY_SECS: u64 = 5;

fn event_json(i: usize, round: usize) -> serde_json::Value {
    let mut e = samples::typical_case_submitted();
    e.envelope.event_id = uuid::Uuid::new_v4().to_string();
    e.envelope.aggregate_id = format!("HS-GWBENCH-{round}-{}", i % 5_000);
    serde_json::to_value(e).unwrap()
}

/// POST one JSON body as the bench agency and read the whole answer, which must be 201.
async fn post_created(http: &reqwest::Client, url: &str, body: String) {
    let r = http
        .post(url)
        .bearer_auth("bench-token")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    r.bytes().await.unwrap();
}

#[tokio::main]
async fn main() {
    if std::env::var("LIENTHONG_KAFKA_BOOTSTRAP").is_err() {
        eprintln!(
            "set LIENTHONG_KAFKA_BOOTSTRAP (eval \"$(ops/services.sh up)\") to run this benchmark"
        );
        std::process::exit(2);
    }
    let kafka = lienthong_tests::kafka();
    kafka.ensure_catalog_topics().await.unwrap();
    let catalog = Arc::new(Catalog::load(repo_schemas_dir()).unwrap());
    let codec = Codec::from_catalog(&catalog).unwrap();
    let id = catalog.local_id(TOPIC).unwrap();

    let config = GatewayConfig {
        agencies: vec![AgencyCredential {
            code: "26734".into(),
            kind: lienthong_contract::AgencyKind::Ward,
            token_sha256: hash_token("bench-token"),
            admin: false,
        }],
        transactional_id: format!("gw-bench-{}", lienthong_tests::unique_suffix()),
        idempotency_window_secs: 60,
        max_batch_events: BATCH,
        ..GatewayConfig::default()
    };
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(
        config,
        kafka.config(),
        catalog.clone(),
        &local_ids(&catalog),
        None,
        lienthong_telemetry::Telemetry::new("gateway").unwrap(),
        shutdown.clone(),
    )
    .unwrap();
    let listener = Listener::bind("gateway.listen", "127.0.0.1:0")
        .await
        .unwrap();
    let base = format!("http://{}", listener.addr());
    let server = gateway.serve(listener, None, &shutdown);
    let http = reqwest::Client::new();
    while http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status() != reqwest::StatusCode::OK)
        .unwrap_or(true)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let raw = bench::raw_producer(kafka.bootstrap()).unwrap();
    // The baseline writes to a topic of its own with the same partitions, not to TOPIC: the
    // gateway tails TOPIC to fill its idempotency index (`replay`), and reading the baseline's
    // records back took CPU from the baseline while it ran (it measured 55–60 % of its rate on a
    // topic of its own, which made the ratio look nearly twice what it is).
    let raw_topic = kafka
        .create_topic(
            "bench-raw-case-events",
            catalog.topic(TOPIC).unwrap().partitions,
            1,
            &[],
        )
        .await
        .unwrap();
    let raw_topic = raw_topic.as_str();
    let batch_url = format!("{base}/topics/{TOPIC}/events:batch");
    let one_url = format!("{base}/topics/{TOPIC}/events");

    // (a) batched ingest vs raw. A warm-up round of each first, not counted (a cold broker,
    // cold connections); then which goes first alternates, so that neither always meets the
    // broker just after the other's burst.
    let raw_round = |round: usize| {
        let encoded: Vec<(String, Vec<u8>)> = (0..N)
            .map(|i| {
                let typed: lienthong_contract::events::CaseEvent =
                    serde_json::from_value(event_json(i, round)).unwrap();
                (
                    typed.envelope.aggregate_id.clone(),
                    codec.encode_to_vec(id, &typed).unwrap(),
                )
            })
            .collect();
        let raw = &raw;
        async move {
            bench::raw_rate(raw, raw_topic, &encoded, RAW_IN_FLIGHT)
                .await
                .unwrap()
        }
    };
    let gateway_round = |round: usize, clients: usize| {
        // Event ids of their own: the gateway reads the log back, and would (rightly) answer
        // the raw round's events as duplicates.
        let events: Vec<serde_json::Value> = (0..N).map(|i| event_json(i, round)).collect();
        let bodies: Vec<String> = events
            .chunks(BATCH)
            .map(|c| serde_json::Value::Array(c.to_vec()).to_string())
            .collect();
        let (http, url) = (http.clone(), batch_url.clone());
        async move { bench::post_batches(&http, &url, "bench-token", bodies, N, clients).await }
    };
    raw_round(1_000).await;
    gateway_round(1_001, CLIENTS).await;
    let (mut raw_rates, mut gw_rates, mut gw_cpu) = (Vec::new(), Vec::new(), Vec::new());
    let mut few_rates = Vec::new();
    for round in 0..ROUNDS {
        // raw, gateway, gateway with fewer clients; then the other way round.
        let gateway_first = round % 2 == 1;
        if gateway_first {
            few_rates.push(gateway_round(10_000 + round, FEW_CLIENTS).await.0);
        } else {
            raw_rates.push(raw_round(round).await);
        }
        let (rate, cpu) = gateway_round(round, CLIENTS).await;
        gw_rates.push(rate);
        gw_cpu.push(cpu);
        if gateway_first {
            raw_rates.push(raw_round(round).await);
        } else {
            few_rates.push(gateway_round(10_000 + round, FEW_CLIENTS).await.0);
        }
        println!(
            "round {} ({} first): raw {:.0} events/s, gateway {:.0} events/s using {:.1} µs of CPU an event; gateway with {FEW_CLIENTS} clients {:.0} events/s",
            round + 1,
            if gateway_first { "gateway" } else { "raw" },
            raw_rates[round],
            gw_rates[round],
            gw_cpu[round],
            few_rates[round],
        );
    }
    let ratio = bench::median_ratio(&gw_rates, &raw_rates);
    let few_ratio = bench::median_ratio(&few_rates, &raw_rates);
    let (raw_m, gw_m) = (bench::median(raw_rates), bench::median(gw_rates));
    let few_m = bench::median(few_rates);

    // (b) latency at a steady rate, single events.
    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let total = (STEADY_RATE * STEADY_SECS) as usize;
        let bodies: Vec<String> = (0..total)
            .map(|i| event_json(i, 100 + round).to_string())
            .collect();
        let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / STEADY_RATE));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = Vec::with_capacity(total);
        for body in bodies {
            ticker.tick().await;
            let (http, url) = (http.clone(), one_url.clone());
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                post_created(&http, &url, body).await;
                t.elapsed().as_secs_f64() * 1000.0
            }));
        }
        let mut latencies = Vec::with_capacity(total);
        for t in tasks {
            latencies.push(t.await.unwrap());
        }
        let (p50, p99) = (
            bench::quantile(latencies.clone(), 0.50),
            bench::quantile(latencies, 0.99),
        );
        println!(
            "steady round {}: {} events at {STEADY_RATE}/s: p50 {p50:.1} ms, p99 {p99:.1} ms",
            round + 1,
            total
        );
        p50s.push(p50);
        p99s.push(p99);
    }

    println!(
        "median of {ROUNDS} rounds of {N} typical case-submitted events, {RAW_IN_FLIGHT} events in flight ({CLIENTS} clients, batches of {BATCH}):"
    );
    println!(
        "  raw rdkafka, pre-encoded bytes (idempotent, acks=all, lz4, {RAW_IN_FLIGHT} sends pending): {raw_m:.0} events/s"
    );
    println!(
        "  gateway (HTTP JSON, auth, validate, NFC, encode, transactional produce, answer after commit): {gw_m:.0} events/s"
    );
    println!(
        "  ratio gateway / raw: {ratio:.2}x, the median of the per-round ratios (goal >= 0.3x)"
    );
    println!(
        "  gateway with {FEW_CLIENTS} clients ({} events in flight): {few_m:.0} events/s, ratio {few_ratio:.2}x",
        FEW_CLIENTS * BATCH
    );
    println!(
        "  gateway process CPU (gateway, its Kafka clients, the load generator): {:.1} µs an event",
        bench::median(gw_cpu)
    );
    println!(
        "gateway latency, single-event POSTs at a steady {STEADY_RATE} events/s, median of {ROUNDS} rounds of {STEADY_SECS} s: p50 {:.1} ms, p99 {:.1} ms",
        bench::median(p50s),
        bench::median(p99s)
    );
    shutdown.cancel();
    let _ = server.wait().await;
    kafka.delete_topic(raw_topic).await.unwrap();
}
