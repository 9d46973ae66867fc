#![allow(clippy::unwrap_used)]
//! The KPI engine against real Kafka: every indicator of a known event stream, duplicates,
//! anomalies, events arriving while it runs, and a restart that rebuilds the same state
//! without counting anything twice.

mod common;

use common::*;
use lienthong_contract::events::Channel;
use std::time::Duration;

async fn topics(kafka: &lienthong_tests::Kafka) -> (String, String) {
    let case = kafka.create_topic("kpi-case", 3, 1, &[]).await.unwrap();
    let feedback = kafka.create_topic("kpi-feedback", 2, 1, &[]).await.unwrap();
    (case, feedback)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_indicator_of_a_known_stream_while_it_flows() {
    let kafka = lienthong_tests::kafka();
    let (case_topic, feedback_topic) = topics(&kafka).await;
    let run = lienthong_tests::unique_suffix();
    let (first, second) = scenario(&run);
    let sender = Sender::new(&kafka, &case_topic, &feedback_topic);
    sender.send(&first).await.unwrap();

    let engine = Running::start(config(kafka.bootstrap(), &case_topic, &feedback_topic))
        .await
        .unwrap();
    let after_first = engine
        .wait_for_records(SCENARIO_FIRST as f64)
        .await
        .unwrap();
    // Nothing of the second part yet: no feedback, no duplicates.
    assert_eq!(
        after_first.sum("lienthong_kpi_unit_feedback_received_total"),
        0.0
    );
    assert_eq!(
        after_first.get(
            "lienthong_kpi_events_total",
            &[("topic", &case_topic), ("outcome", "duplicate")]
        ),
        Some(0.0)
    );

    // The second part arrives while the engine runs.
    sender.send(&second).await.unwrap();
    let samples = engine
        .wait_for_records((SCENARIO_FIRST + SCENARIO_SECOND) as f64)
        .await
        .unwrap();
    let wrong = mismatches(&samples);
    assert!(wrong.is_empty(), "mismatches:\n{}", wrong.join("\n"));
    assert_eq!(
        samples.get(
            "lienthong_kpi_events_total",
            &[("topic", &case_topic), ("outcome", "duplicate")]
        ),
        Some(SCENARIO_DUPLICATES_EXPECTED)
    );
    assert_eq!(
        samples.get(
            "lienthong_kpi_events_total",
            &[("topic", &case_topic), ("outcome", "ignored")]
        ),
        Some(1.0)
    );
    // No unknown unit or procedure ever becomes a label.
    for (labels, _) in samples.series("lienthong_kpi_unit_cases_received_total") {
        assert_ne!(labels["unit"], "99999");
    }
    assert!(
        samples
            .series("lienthong_kpi_procedure_cases_received_total")
            .iter()
            .all(|(l, _)| l["procedure"] != "9.999999")
    );

    // The same values over HTTP, as Prometheus would scrape them.
    let body = reqwest::get(&engine.url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scraped = Samples::parse(&body);
    let wrong = mismatches(&scraped);
    assert!(wrong.is_empty(), "over HTTP:\n{}", wrong.join("\n"));
    engine.stop().await.unwrap();
}

const SCENARIO_DUPLICATES_EXPECTED: f64 = 5.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_rebuilds_the_same_state_and_replays_count_once() {
    let kafka = lienthong_tests::kafka();
    let (case_topic, feedback_topic) = topics(&kafka).await;
    let run = lienthong_tests::unique_suffix();
    let (first, second) = scenario(&run);
    let sender = Sender::new(&kafka, &case_topic, &feedback_topic);
    sender.send(&first).await.unwrap();
    sender.send(&second).await.unwrap();
    let total = (SCENARIO_FIRST + SCENARIO_SECOND) as f64;

    let engine = Running::start(config(kafka.bootstrap(), &case_topic, &feedback_topic))
        .await
        .unwrap();
    let before = engine.wait_for_records(total).await.unwrap();
    assert!(mismatches(&before).is_empty(), "{:?}", mismatches(&before));
    engine.stop().await.unwrap();

    // While it is down: the whole stream is replayed (a producer retrying everything), and
    // one new case arrives.
    sender.send(&first).await.unwrap();
    sender.send(&second).await.unwrap();
    let mut h = Aggregate::new(&run, "H");
    sender
        .send(&[Item::Case(h.case(
            "2026-11-02",
            submitted("SXD", PROC_OTHER, Channel::Counter, false, "2026-11-03"),
        ))])
        .await
        .unwrap();

    // A new process: new registry, state rebuilt from the beginning of both topics.
    let engine = Running::start(config(kafka.bootstrap(), &case_topic, &feedback_topic))
        .await
        .unwrap();
    let after = engine.wait_for_records(2.0 * total + 1.0).await.unwrap();
    engine.stop().await.unwrap();

    // Every indicator of the scenario is unchanged except what case H adds.
    let h_changes = [
        "lienthong_kpi_unit_cases_received_total",
        "lienthong_kpi_procedure_cases_received_total",
        "lienthong_kpi_unit_cases_open",
        "lienthong_kpi_unit_cases_open_overdue",
        "lienthong_kpi_unit_open_overdue_ratio",
        "lienthong_kpi_unit_end_to_end_online_ratio",
        "lienthong_kpi_procedure_cases_open",
        "lienthong_kpi_procedure_cases_open_overdue",
        "lienthong_kpi_procedure_end_to_end_online_ratio",
        "lienthong_kpi_cases_tracked",
        // Replayed garbage is an anomaly each time it is read: it has no event id.
        "lienthong_kpi_anomalies_total",
    ];
    let wrong: Vec<String> = mismatches(&after)
        .into_iter()
        .filter(|m| {
            !h_changes
                .iter()
                .any(|name| m.starts_with(&format!("{name}[")))
        })
        .collect();
    assert!(wrong.is_empty(), "after restart:\n{}", wrong.join("\n"));
    let received = |s: &Samples, u, c| {
        s.get(
            "lienthong_kpi_unit_cases_received_total",
            &[("unit", u), ("channel", c)],
        )
    };
    assert_eq!(received(&after, "26734", "online"), Some(2.0));
    assert_eq!(received(&after, "27004", "counter"), Some(2.0));
    assert_eq!(received(&after, "SXD", "counter"), Some(1.0));
    let open = |s: &Samples, u| s.get("lienthong_kpi_unit_cases_open", &[("unit", u)]);
    let overdue = |s: &Samples, u| s.get("lienthong_kpi_unit_cases_open_overdue", &[("unit", u)]);
    assert_eq!(open(&after, "SXD"), Some(2.0));
    assert_eq!(overdue(&after, "SXD"), Some(1.0));
    assert_eq!(open(&after, "27004"), open(&before, "27004"));
    assert_eq!(after.get("lienthong_kpi_cases_tracked", &[]), Some(12.0));
    // Every event of the replayed stream was recognised as a duplicate: the first copy of
    // each counts, the second does not (garbage has no id, so it is an anomaly twice).
    let case_dups = after
        .get(
            "lienthong_kpi_events_total",
            &[("topic", &case_topic), ("outcome", "duplicate")],
        )
        .unwrap();
    assert_eq!(case_dups, 5.0 + (SCENARIO_FIRST - 1 + 5) as f64);
    assert_eq!(
        after.get("lienthong_kpi_anomalies_total", &[("kind", "undecodable")]),
        Some(2.0)
    );
    // Anomalous events replayed with the same ids are not counted again either.
    for kind in [
        "unknown_unit",
        "unknown_procedure",
        "before_submission",
        "completed_before_submitted",
    ] {
        assert_eq!(
            after.get("lienthong_kpi_anomalies_total", &[("kind", kind)]),
            before.get("lienthong_kpi_anomalies_total", &[("kind", kind)]),
            "{kind}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_started_before_its_topics_exist_waits_then_counts() {
    let kafka = lienthong_tests::kafka();
    let suffix = lienthong_tests::unique_suffix();
    let case_topic = format!("kpi-late-case-{suffix}");
    let feedback_topic = format!("kpi-late-feedback-{suffix}");
    let mut cfg = config(kafka.bootstrap(), &case_topic, &feedback_topic);
    // Do not let the consumer auto-create them.
    cfg.kafka = Some(
        kafka
            .config()
            .with_option("allow.auto.create.topics", "false"),
    );
    let engine = Running::start(cfg).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(engine.values().get("lienthong_kpi_caught_up", &[]), None);
    // Now create them (the harness names topics itself, so create with the admin API here).
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        kafka.client_config().create().unwrap();
    admin
        .create_topics(
            &[
                NewTopic::new(&case_topic, 2, TopicReplication::Fixed(1)),
                NewTopic::new(&feedback_topic, 1, TopicReplication::Fixed(1)),
            ],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    kafka.wait_for_leaders(&case_topic, 2).await.unwrap();
    kafka.wait_for_leaders(&feedback_topic, 1).await.unwrap();
    let sender = Sender::new(&kafka, &case_topic, &feedback_topic);
    let mut a = Aggregate::new(&suffix, "A");
    sender
        .send(&[Item::Case(a.case(
            "2026-11-02",
            submitted("STP", PROC_TOP_ONLINE, Channel::Online, true, "2027-01-04"),
        ))])
        .await
        .unwrap();
    let s = engine.wait_for_records(1.0).await.unwrap();
    assert_eq!(
        s.get("lienthong_kpi_unit_cases_open", &[("unit", "STP")]),
        Some(1.0)
    );
    assert_eq!(
        s.get(
            "lienthong_kpi_unit_end_to_end_online_ratio",
            &[("unit", "STP")]
        ),
        Some(1.0)
    );
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_schemas_come_from_a_registry_by_id() {
    use lienthong_contract::{Catalog, Codec};
    use lienthong_registry::client::{Credentials, RegistryClient};
    use rdkafka::producer::FutureRecord;
    let kafka = lienthong_tests::kafka();
    let registry = lienthong_tests::apicurio();
    let (case_topic, feedback_topic) = topics(&kafka).await;
    let catalog = Catalog::load(lienthong_contract::repo_schemas_dir()).unwrap();
    let schema = &catalog.topic("hcm.case.events").unwrap().schema_json;
    let client = RegistryClient::new(&registry, Credentials::None, Codec::new()).unwrap();
    let id = client
        .id_for(&format!("{case_topic}-value"), schema, true)
        .await
        .unwrap();
    let mut a = Aggregate::new(&lienthong_tests::unique_suffix(), "A");
    let event = a.case(
        "2026-11-02",
        submitted(
            "SXD",
            PROC_TOP_PARTIAL,
            Channel::Postal,
            false,
            "2027-01-04",
        ),
    );
    let good = client.codec().encode_to_vec(id, &event).unwrap();
    // The same body under a schema id no registry has.
    let mut unknown = good.clone();
    unknown[1..5].copy_from_slice(&0x7fff_fff0u32.to_be_bytes());
    let producer = kafka.idempotent_producer().unwrap();
    for payload in [&good, &unknown] {
        producer
            .send(
                FutureRecord::to(&case_topic).key("k").payload(payload),
                std::time::Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
    let mut cfg = config(kafka.bootstrap(), &case_topic, &feedback_topic);
    cfg.registry_url = Some(registry);
    let engine = Running::start(cfg).await.unwrap();
    let s = engine.wait_for_records(2.0).await.unwrap();
    engine.stop().await.unwrap();
    assert_eq!(
        s.get(
            "lienthong_kpi_unit_cases_received_total",
            &[("unit", "SXD"), ("channel", "postal")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.get("lienthong_kpi_anomalies_total", &[("kind", "undecodable")]),
        Some(1.0)
    );
}

/// lienthong's own registry answers 401 to a reader without its token: the engine waits for
/// it (nothing counted, nothing skipped as undecodable) and, given the right credential,
/// counts the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_refuses_the_credential_is_waited_for_not_skipped() {
    use lienthong_contract::{AgencyKind, Catalog, Codec};
    use lienthong_registry::auth::hash_token;
    use lienthong_registry::{Agencies, AgencyCredential, Registry, api};
    use rdkafka::producer::FutureRecord;
    let kafka = lienthong_tests::kafka();
    let (case_topic, feedback_topic) = topics(&kafka).await;
    let catalog =
        std::sync::Arc::new(Catalog::load(lienthong_contract::repo_schemas_dir()).unwrap());
    let agencies = Agencies::new(&[AgencyCredential {
        code: "KPI".into(),
        kind: AgencyKind::Department,
        token_sha256: hash_token("kpi-token"),
        admin: false,
    }])
    .unwrap();
    let registry = std::sync::Arc::new(Registry::in_memory(catalog.clone(), agencies));
    let ids = registry.bootstrap().await.unwrap();
    let id = ids
        .iter()
        .find(|(s, _)| s == "hcm.case.events-value")
        .unwrap()
        .1;
    // The registry's calls are counted, to see that the engine asked it and was refused.
    let seen = lienthong_telemetry::Telemetry::new("registry").unwrap();
    let url = lienthong_tests::serve(lienthong_registry::metrics::count_operations(
        api::router(registry),
        &seen,
    ))
    .await
    .unwrap();
    let refused = || {
        Samples::parse(&seen.render())
            .get(
                "lienthong_registry_operations_total",
                &[("operation", "get_schema"), ("outcome", "client_error")],
            )
            .unwrap_or(0.0)
    };
    let codec = Codec::new();
    codec
        .insert(id, &catalog.topic("hcm.case.events").unwrap().schema_json)
        .unwrap();
    let mut a = Aggregate::new(&lienthong_tests::unique_suffix(), "A");
    let event = a.case(
        "2026-11-02",
        submitted(
            "SXD",
            PROC_TOP_PARTIAL,
            Channel::Postal,
            false,
            "2027-01-04",
        ),
    );
    kafka
        .idempotent_producer()
        .unwrap()
        .send(
            FutureRecord::to(&case_topic)
                .key("k")
                .payload(&codec.encode_to_vec(id, &event).unwrap()),
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap();
    let received = |s: &Samples| {
        s.get(
            "lienthong_kpi_unit_cases_received_total",
            &[("unit", "SXD"), ("channel", "postal")],
        )
        .unwrap_or(0.0)
    };
    let undecodable = |s: &Samples| {
        s.get("lienthong_kpi_anomalies_total", &[("kind", "undecodable")])
            .unwrap_or(0.0)
    };
    let mut cfg = config(kafka.bootstrap(), &case_topic, &feedback_topic);
    cfg.registry_url = Some(url);
    cfg.registry_agency = Some("KPI".into());
    cfg.registry_token = Some("not-the-token".into());
    let engine = Running::start(cfg.clone()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let s = engine.values();
    engine.stop().await.unwrap();
    assert!(
        refused() >= 2.0,
        "the engine asked again and again: {}",
        refused()
    );
    assert_eq!(received(&s), 0.0, "nothing counted while refused");
    assert_eq!(undecodable(&s), 0.0, "nothing skipped as undecodable");
    assert_ne!(s.get("lienthong_kpi_caught_up", &[]), Some(1.0));

    cfg.registry_token = Some("kpi-token".into());
    let engine = Running::start(cfg).await.unwrap();
    let s = engine.wait_for_records(1.0).await.unwrap();
    engine.stop().await.unwrap();
    assert_eq!(received(&s), 1.0);
    assert_eq!(undecodable(&s), 0.0);
}

/// The gateway writes in transactions, so a partition often ends in a commit marker, which no
/// consumer ever receives. An engine (re)started on such a log still catches up, and its
/// indicators show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_ending_in_a_transaction_marker_is_caught_up() {
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    let kafka = lienthong_tests::kafka();
    let (case_topic, feedback_topic) = topics(&kafka).await;
    let run = lienthong_tests::unique_suffix();
    let (first, _) = scenario(&run);
    Sender::new(&kafka, &case_topic, &feedback_topic)
        .send(&first)
        .await
        .unwrap();
    let producer: FutureProducer = kafka
        .config()
        .transactional_producer(&format!("kpi-marker-{run}"), &[])
        .create()
        .unwrap();
    let timeout = std::time::Duration::from_secs(30);
    producer.init_transactions(timeout).unwrap();
    producer.begin_transaction().unwrap();
    producer
        .send(
            FutureRecord::to(&case_topic)
                .key("marker")
                .payload(&b"not avro"[..]),
            timeout,
        )
        .await
        .unwrap();
    producer.commit_transaction(timeout).unwrap();

    let engine = Running::start(config(kafka.bootstrap(), &case_topic, &feedback_topic))
        .await
        .unwrap();
    let samples = engine
        .wait_for_records((SCENARIO_FIRST + 1) as f64)
        .await
        .unwrap();
    assert_eq!(samples.get("lienthong_kpi_caught_up", &[]), Some(1.0));
    assert!(
        samples.sum("lienthong_kpi_unit_cases_received_total") > 0.0,
        "the indicators show once caught up"
    );
    engine.stop().await.unwrap();
}

/// Units' names come from the units reference topic: a known unit gets
/// `lienthong_kpi_unit_info{unit,name,kind} 1`, a unit outside the reference list none, and a
/// renamed unit keeps one series, under its new name. Procedures' names likewise, for the top
/// procedures only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_names_come_from_the_reference_topic_and_a_rename_replaces_the_series() {
    use lienthong_contract::{Catalog, Codec, samples};
    let kafka = lienthong_tests::kafka();
    let (case_topic, feedback_topic) = topics(&kafka).await;
    let units_topic = kafka.create_topic("kpi-units", 1, 1, &[]).await.unwrap();
    let catalog = Catalog::load(lienthong_contract::repo_schemas_dir()).unwrap();
    let codec = Codec::from_catalog(&catalog).unwrap();
    let id = catalog.local_id("hcm.reference.units").unwrap();
    let producer = kafka.idempotent_producer().unwrap();
    let send = |code: &str, name: &str| {
        let mut record = samples::admin_unit();
        record.unit.code = code.into();
        record.unit.name = name.into();
        let payload = codec.encode_to_vec(id, &record).unwrap();
        let (producer, topic, key) = (producer.clone(), units_topic.clone(), code.to_string());
        async move {
            producer
                .send(
                    rdkafka::producer::FutureRecord::to(&topic)
                        .key(&key)
                        .payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    };
    send("26734", "Phường Sài Gòn").await;
    send("99999", "Không có trong danh mục").await;
    let procedures_topic = kafka
        .create_topic("kpi-procedures", 1, 1, &[])
        .await
        .unwrap();
    let mut cfg = config(kafka.bootstrap(), &case_topic, &feedback_topic);
    cfg.units_topic = units_topic.clone();
    cfg.procedures_topic = procedures_topic.clone();
    let engine = Running::start(cfg).await.unwrap();
    let names = |s: &Samples| -> Vec<(String, String, f64)> {
        let mut v: Vec<_> = s
            .series("lienthong_kpi_unit_info")
            .into_iter()
            .map(|(l, value)| (l["unit"].clone(), l["name"].clone(), value))
            .collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while names(&engine.values()).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no unit names");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        names(&engine.values()),
        [("26734".into(), "Phường Sài Gòn".into(), 1.0)]
    );
    // The unit's kind, for telling wards from departments.
    let kinds: Vec<String> = engine
        .values()
        .series("lienthong_kpi_unit_info")
        .into_iter()
        .map(|(l, _)| l["kind"].clone())
        .collect();
    assert_eq!(kinds, ["ward"]);
    send("26734", "Phường Sài Gòn (mới)").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = names(&engine.values());
        if now == [("26734".into(), "Phường Sài Gòn (mới)".into(), 1.0)] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Procedures' names from their topic, read while the engine runs: a top procedure gets a
    // series, a procedure folded into `other` none.
    let procedures_id = catalog.local_id("hcm.reference.procedures").unwrap();
    for (code, name) in [
        (PROC_TOP_ONLINE, "Đăng ký khai sinh"),
        (PROC_OTHER, "Thủ tục khác"),
    ] {
        let mut record = samples::procedure();
        record.procedure.code = code.into();
        record.procedure.name = name.into();
        let payload = codec.encode_to_vec(procedures_id, &record).unwrap();
        producer
            .send(
                rdkafka::producer::FutureRecord::to(&procedures_topic)
                    .key(code)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now: Vec<(String, String)> = engine
            .values()
            .series("lienthong_kpi_procedure_info")
            .into_iter()
            .map(|(l, _)| (l["procedure"].clone(), l["name"].clone()))
            .collect();
        if !now.is_empty() {
            assert_eq!(
                now,
                [(PROC_TOP_ONLINE.to_string(), "Đăng ký khai sinh".to_string())]
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no procedure names");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    engine.stop().await.unwrap();
}
