//! A real Prometheus server (the Debian package) scrapes a running HTTP gateway and a running
//! sink connector while case events flow through real Kafka: agency → gateway → Kafka →
//! connector → SQLite. The test queries Prometheus' HTTP API and checks the gateway's request
//! and produced counters and the connector's applied-events counter and end-to-end latency
//! count against what was sent. (The KPI engine's gauges are checked the same way in
//! `crates/kpi/tests/prometheus.rs`.)

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lienthong_connect::Sink;
use lienthong_contract::{AgencyKind, Catalog, repo_schemas_dir, samples};
use lienthong_gateway::{Gateway, GatewayConfig};
use lienthong_registry::auth::{AgencyCredential, hash_token};
use lienthong_store::AnyStore;
use lienthong_telemetry::component::Listener;
use lienthong_tests::prometheus::{Prometheus, Samples, Target};
use lienthong_tests::{kafka, unique_suffix};
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "hcm.case.events";

/// The sum over the series of `name` whose labels include `labels`.
fn total(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .series(name)
        .into_iter()
        .filter(|(l, _)| {
            labels
                .iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// `count` new cases filed at `ward`, in the gateway's JSON.
fn cases(ward: &str, run: &str, first: usize, count: usize) -> Vec<serde_json::Value> {
    (first..first + count)
        .map(|i| {
            let mut v = serde_json::to_value(samples::typical_case_submitted()).unwrap();
            v["envelope"]["event_id"] = uuid::Uuid::new_v4().to_string().into();
            v["envelope"]["aggregate_id"] = format!("HS-PROM-{run}-{i}").into();
            v["envelope"]["producer_unit"] = ward.into();
            v["event"]["CaseSubmitted"]["receiving_unit"] = ward.into();
            v["event"]["CaseSubmitted"]["home_unit"] = ward.into();
            v
        })
        .collect()
}

/// Wait until the connector has applied everything the topic held when this was called, and
/// return its applied-events counter and end-to-end latency count then.
async fn caught_up(
    kafka: &lienthong_tests::Kafka,
    store: &std::path::Path,
    connector: &str,
    metrics_addr: &str,
) -> (f64, f64) {
    let partitions: Vec<lienthong_bus::Partition> = kafka
        .end_offsets(TOPIC)
        .unwrap()
        .into_iter()
        .map(|(p, _)| (TOPIC.to_string(), p))
        .collect();
    let client = kafka.config();
    let ends = tokio::task::spawn_blocking(move || {
        lienthong_bus::record_ends(&client, &partitions, Duration::from_secs(60))
    })
    .await
    .unwrap()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let held = match AnyStore::sqlite(store).await {
            Ok(mut sink) => sink.offsets(connector).await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let behind: Vec<_> = ends
            .iter()
            .filter_map(|((topic, partition), end)| {
                let end = (*end)?;
                let next = held
                    .iter()
                    .find(|o| &o.topic == topic && o.partition == *partition)
                    .map_or(0, |o| o.next);
                (next < end).then_some((*partition, next, end))
            })
            .collect();
        if behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the connector did not catch up with {TOPIC}: (partition, at, end) {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Caught up over an open store: the connector says it is ready, on the same listener.
    let ready = reqwest::get(format!("http://{metrics_addr}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"status": "ready"})
    );
    let text = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = Samples::parse(&text);
    (
        total(
            &samples,
            "lienthong_connector_events_applied_total",
            &[("connector", connector), ("topic", TOPIC)],
        ),
        total(
            &samples,
            "lienthong_connector_end_to_end_latency_seconds_count",
            &[("connector", connector)],
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_the_gateway_and_a_connector_while_events_flow() {
    let kafka = kafka();
    kafka.ensure_catalog_topics().await.unwrap();
    let run = unique_suffix();
    // A ward code of this run only: on a shared broker, only this test's cases reach the store.
    let ward = format!("{:05}", 10_000 + fastrand::u32(0..89_999));
    let token = format!("prom-{run}");
    let catalog = Arc::new(Catalog::load(repo_schemas_dir()).unwrap());
    let stop = CancellationToken::new();

    // The gateway, with the catalog's local schema ids (the connector decodes with the same).
    let ids: HashMap<String, u32> = catalog
        .topics()
        .iter()
        .map(|t| (t.name.clone(), catalog.local_id(&t.name).unwrap()))
        .collect();
    let gateway = Gateway::start(
        GatewayConfig {
            agencies: vec![AgencyCredential {
                code: ward.clone(),
                kind: AgencyKind::Ward,
                token_sha256: hash_token(&token),
                admin: false,
            }],
            transactional_id: format!("prom-gw-{run}"),
            ..GatewayConfig::default()
        },
        kafka.config(),
        Arc::clone(&catalog),
        &ids,
        None,
        lienthong_telemetry::Telemetry::new("gateway").unwrap(),
        stop.clone(),
    )
    .unwrap();
    let listener = Listener::bind("gateway.listen", "127.0.0.1:0")
        .await
        .unwrap();
    let gateway_addr = listener.addr().to_string();
    let server = gateway.serve(listener, None, &stop);

    // The ward's connector, serving its own /metrics.
    let dir = tempfile::tempdir().unwrap();
    let dlq = kafka.create_topic("prom-dlq", 1, 1, &[]).await.unwrap();
    let connector = format!("prom-{run}");
    let metrics_addr = format!("127.0.0.1:{}", lienthong_tests::free_port());
    let config = lienthong_connect::ConnectorConfig::from_toml(&format!(
        "name = \"{connector}\"\ndead_letter_topic = \"{dlq}\"\nmetrics_listen = \"{metrics_addr}\"\n\
         [kafka]\nbootstrap = \"{}\"\n[schemas]\ndir = \"{}\"\n[[topics]]\nname = \"{TOPIC}\"\n\
         [filter]\nunits = [\"{ward}\"]\n[batch]\nmax_wait_ms = 50\n\
         [store]\nkind = \"sqlite\"\npath = \"{}\"\n",
        kafka.bootstrap(),
        repo_schemas_dir().display(),
        dir.path().join("ward.sqlite").display()
    ))
    .unwrap();
    let connector_task = tokio::spawn(lienthong_cli::connect::run(config, stop.clone()));

    // The shared topic already holds other tests' cases, some of which may name this ward by
    // chance: let the connector read all of it first, and count from there.
    let (applied_before, latency_before) = caught_up(
        &kafka,
        &dir.path().join("ward.sqlite"),
        &connector,
        &metrics_addr,
    )
    .await;

    let prometheus = Prometheus::start(&[
        Target {
            job: "lienthong-gateway",
            addr: gateway_addr.clone(),
        },
        Target {
            job: "lienthong-connectors",
            addr: metrics_addr.clone(),
        },
    ])
    .await
    .unwrap();
    prometheus
        .until("up", |s| {
            if s.sum("up") == 2.0 {
                vec![]
            } else {
                vec![format!("targets up: {}", s.sum("up"))]
            }
        })
        .await;

    let client = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        client
            .post(format!("http://{gateway_addr}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let expect = |sent: f64, ok: f64, bad: f64| {
        let connector = connector.clone();
        move |s: &Samples| {
            let mut wrong = Vec::new();
            for (what, got, want) in [
                (
                    "applied",
                    total(
                        s,
                        "lienthong_connector_events_applied_total",
                        &[("connector", &connector), ("topic", TOPIC)],
                    ),
                    applied_before + sent,
                ),
                (
                    "end-to-end latency count",
                    total(
                        s,
                        "lienthong_connector_end_to_end_latency_seconds_count",
                        &[("connector", &connector)],
                    ),
                    latency_before + sent,
                ),
                (
                    "produced by the gateway",
                    total(
                        s,
                        "lienthong_bus_events_produced_total",
                        &[("topic", TOPIC), ("producer", "gateway")],
                    ),
                    sent,
                ),
                (
                    "201 answers",
                    total(s, "lienthong_gateway_requests_total", &[("status", "201")]),
                    ok,
                ),
                (
                    "400 answers",
                    total(s, "lienthong_gateway_requests_total", &[("status", "400")]),
                    bad,
                ),
                (
                    "rejected as invalid",
                    total(
                        s,
                        "lienthong_gateway_events_rejected_total",
                        &[("topic", TOPIC), ("reason", "invalid")],
                    ),
                    bad,
                ),
            ] {
                if got != want {
                    wrong.push(format!("{what}: want {want}, got {got}"));
                }
            }
            wrong
        }
    };

    // Before anything is sent, Prometheus sees what the connector's /metrics said when it
    // had caught up (so a later difference is in what the events did, not in the baseline).
    prometheus
        .until("{__name__=~\"lienthong_.*\"}", expect(0.0, 0.0, 0.0))
        .await;

    // Forty cases in one batch.
    let answer = post(
        &format!("/topics/{TOPIC}/events:batch"),
        cases(&ward, &run, 0, 40).into(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), 201, "{:?}", answer.text().await);
    prometheus
        .until("{__name__=~\"lienthong_.*\"}", expect(40.0, 1.0, 0.0))
        .await;

    // Twenty-five more, and one invalid event that produces nothing.
    let answer = post(
        &format!("/topics/{TOPIC}/events:batch"),
        cases(&ward, &run, 40, 25).into(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), 201, "{:?}", answer.text().await);
    let mut invalid = cases(&ward, &run, 65, 1).remove(0);
    invalid["event"]["CaseSubmitted"]["home_unit"] = "not a unit".into();
    let answer = post(&format!("/topics/{TOPIC}/events"), invalid)
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    prometheus
        .until("{__name__=~\"lienthong_.*\"}", expect(65.0, 2.0, 1.0))
        .await;

    stop.cancel();
    connector_task.await.unwrap().unwrap();
    server.wait().await.unwrap();
}
