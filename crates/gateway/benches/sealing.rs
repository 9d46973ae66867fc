//! What sealing citizen records costs the gateway (issue #28: at most 15 % of its events/s on
//! the citizen topic), in one run on the suite's real broker: two gateways in this process,
//! the same configuration, one sealing citizen records with the key service (its keys, grants
//! and access records on real Kafka topics), fed the same citizen records as JSON batches by
//! the same load generator. The citizens' keys exist before timing.
//!
//! Run: `eval "$(ops/services.sh up)"; cargo bench -p lienthong-gateway --bench sealing`.
//! After a warm-up round of each, prints events/s per round (which goes first alternates) and
//! the medians of 5 rounds with the median of the per-round ratios.

#![allow(clippy::unwrap_used)] // a benchmark: a failed unwrap is a failed run

/// The allocator of the `lienthong` binary, so that the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Duration;

use lienthong_contract::{Catalog, repo_schemas_dir, samples};
use lienthong_gateway::{Gateway, GatewayConfig, local_ids};
use lienthong_privacy::{KeyService, KeyServiceConfig, MasterKey};
use lienthong_registry::AgencyCredential;
use lienthong_registry::auth::hash_token;
use lienthong_telemetry::component::Listener;
use lienthong_tests::{bench, unique_suffix};
use rdkafka::consumer::DefaultConsumerContext;
use tokio_util::sync::CancellationToken;

const N: usize = 50_000;
const CITIZENS: usize = 5_000;
const BATCH: usize = 500;
const CLIENTS: usize = 20;
const ROUNDS: usize = 5;
const TOPIC: &str = "hcm.citizen.records";

/// `N` citizen records as JSON batches, with event ids of their own (`round`).
fn bodies(round: usize) -> Vec<String> {
    let events: Vec<serde_json::Value> = (0..N)
        .map(|i| {
            // Citizens that differ in every field, as in a real register.
            let mut c = samples::citizen_record_of((i % CITIZENS) as u64);
            c.envelope.event_id = uuid::Uuid::new_v4().to_string();
            c.envelope.aggregate_version = (round * N + i) as i64 + 1;
            serde_json::to_value(c).unwrap()
        })
        .collect();
    events
        .chunks(BATCH)
        .map(|c| serde_json::Value::Array(c.to_vec()).to_string())
        .collect()
}

#[tokio::main]
async fn main() {
    let Ok(_) = std::env::var("LIENTHONG_KAFKA_BOOTSTRAP") else {
        eprintln!(
            "set LIENTHONG_KAFKA_BOOTSTRAP (eval \"$(ops/services.sh up)\") to run this benchmark"
        );
        std::process::exit(2);
    };
    let kafka = lienthong_tests::kafka();
    kafka.ensure_catalog_topics().await.unwrap();
    let catalog = Arc::new(Catalog::load(repo_schemas_dir()).unwrap());
    let shutdown = CancellationToken::new();
    let suffix = unique_suffix();
    let mut keys_config = KeyServiceConfig::new(kafka.config());
    keys_config.keys_topic = format!("bench-keys-{suffix}");
    keys_config.grants_topic = format!("bench-grants-{suffix}");
    keys_config.access_topic = format!("bench-access-{suffix}");
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
    let http = reqwest::Client::new();
    let start = |name: &str| {
        let config = GatewayConfig {
            agencies: vec![AgencyCredential {
                code: "CATP".into(),
                kind: lienthong_contract::AgencyKind::Department,
                token_sha256: hash_token("bench-token"),
                admin: false,
            }],
            transactional_id: format!("gw-{name}-{suffix}"),
            idempotency_window_secs: 60,
            max_batch_events: BATCH,
            ..GatewayConfig::default()
        };
        Gateway::start(
            config,
            kafka.config(),
            catalog.clone(),
            &local_ids(&catalog),
            None,
            lienthong_telemetry::Telemetry::new("gateway").unwrap(),
            shutdown.clone(),
        )
        .unwrap()
    };
    let (clear, sealed) = (start("clear"), start("sealed"));
    sealed.seal_citizen_records(service.clone()).unwrap();
    let (mut urls, mut servers) = (Vec::new(), Vec::new());
    for gateway in [&clear, &sealed] {
        let listener = Listener::bind("listen", "127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.addr());
        servers.push(gateway.serve(listener, None, &shutdown));
        while http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map(|r| r.status() != reqwest::StatusCode::OK)
            .unwrap_or(true)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        urls.push(format!("{base}/topics/{TOPIC}/events:batch"));
    }
    let rate = |url: &str, round: usize| {
        let (http, url) = (http.clone(), url.to_string());
        async move { bench::post_batches(&http, &url, "bench-token", bodies(round), N, CLIENTS).await }
    };
    // Warm-up, not counted: creates the citizens' keys, warms the broker and the connections.
    rate(&urls[0], 0).await;
    rate(&urls[1], 1).await;
    let (mut clear_rates, mut sealed_rates) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let sealed_first = round % 2 == 1;
        let mut pair = [(0.0, 0.0); 2];
        for which in if sealed_first { [1, 0] } else { [0, 1] } {
            pair[which] = rate(&urls[which], 2 + round * 2 + which).await;
        }
        clear_rates.push(pair[0].0);
        sealed_rates.push(pair[1].0);
        println!(
            "round {} ({} first): clear {:.0} events/s ({:.1} µs CPU/event), sealed {:.0} events/s ({:.1} µs CPU/event)",
            round + 1,
            if sealed_first { "sealed" } else { "clear" },
            pair[0].0,
            pair[0].1,
            pair[1].0,
            pair[1].1
        );
    }
    let ratio = bench::median_ratio(&sealed_rates, &clear_rates);
    println!(
        "median of {ROUNDS} rounds of {N} citizen records ({CITIZENS} citizens) in batches of {BATCH}, {CLIENTS} clients:"
    );
    println!(
        "  gateway, clear:  {:.0} events/s",
        bench::median(clear_rates)
    );
    println!(
        "  gateway, sealed: {:.0} events/s",
        bench::median(sealed_rates)
    );
    println!(
        "  ratio sealed / clear: {ratio:.2}x, the median of the per-round ratios (goal >= 0.85x)"
    );
    shutdown.cancel();
}
