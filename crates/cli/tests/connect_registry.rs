//! A connector that reads writer schemas from lienthong's own registry (real Kafka, the real
//! registry over HTTP, a real PostgreSQL store). A registry that refuses the connector's
//! credential, or is stopped for 20 seconds mid-run, is the connector's condition and never a
//! record's fault: nothing is dead-lettered, no offset moves, and once the registry answers
//! again every record is applied exactly once. Only an id the registry says it does not know
//! sends a record to the dead-letter topic.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lienthong_contract::{AgencyKind, Catalog, Codec};
use lienthong_registry::auth::hash_token;
use lienthong_registry::{Agencies, Agency, AgencyCredential, KafkaLogConfig, Registry, api};
use lienthong_tests::{Kafka, kafka, unique_suffix};
use support::*;

const WARD: &str = "26734";
const WARD_TOKEN: &str = "ward-registry-token";
const CASE_SUBJECT: &str = "hcm.case.events-value";

/// lienthong's registry on a Kafka log, served over HTTP at `addr` until the task is aborted.
async fn serve_registry(
    kafka: &Kafka,
    log_topic: &str,
    addr: SocketAddr,
) -> (Arc<Registry>, tokio::task::JoinHandle<()>) {
    let catalog = Arc::new(Catalog::load(lienthong_contract::repo_schemas_dir()).unwrap());
    let agencies = Agencies::new(&[
        AgencyCredential {
            code: WARD.into(),
            kind: AgencyKind::Ward,
            token_sha256: hash_token(WARD_TOKEN),
            admin: false,
        },
        AgencyCredential {
            code: "ADMIN".into(),
            kind: AgencyKind::Department,
            token_sha256: hash_token("admin-token"),
            admin: true,
        },
    ])
    .unwrap();
    let config = KafkaLogConfig {
        kafka: kafka.config(),
        topic: log_topic.into(),
        replication: 1,
    };
    let errors = lienthong_telemetry::KafkaClientContext::logging_only("registry");
    let registry = Arc::new(
        Registry::with_kafka(
            &config,
            catalog,
            agencies,
            errors,
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap(),
    );
    // The port may still be held by the previous server's last connections for a moment.
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let router = api::router(registry.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (registry, task)
}

/// The connector's counter of registry retries and its `retrying` gauge, from `/metrics`.
async fn registry_retries(metrics_port: u16, name: &str) -> (f64, f64) {
    let text = metrics_text(metrics_port).await;
    let value = |metric: &str, labels: &[String]| {
        text.lines()
            .find(|l| l.starts_with(&format!("{metric}{{")) && labels.iter().all(|x| l.contains(x)))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0.0, |v| v.parse().unwrap())
    };
    let connector = format!("connector=\"{name}\"");
    (
        value(
            "lienthong_connector_retries_total",
            &[connector.clone(), "class=\"registry\"".into()],
        ),
        value("lienthong_connector_retrying", &[connector]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_or_stopped_registry_loses_nothing_and_dead_letters_nothing() {
    let kafka = kafka();
    let store = postgres_store().await;
    let addr: SocketAddr = format!("127.0.0.1:{}", lienthong_tests::free_port())
        .parse()
        .unwrap();
    let url = format!("http://{addr}");
    let log_topic = format!("_lienthong_schemas-{}", unique_suffix());
    let (registry, server) = serve_registry(&kafka, &log_topic, addr).await;
    let ids = registry.bootstrap().await.unwrap();
    let v1 = ids.iter().find(|(s, _)| s == CASE_SUBJECT).unwrap().1;
    let admin = Agency {
        code: "ADMIN".into(),
        kind: AgencyKind::Department,
        admin: true,
    };
    let v2 = registry
        .register(&admin, CASE_SUBJECT, &case_schema_with_note(), vec![])
        .await
        .unwrap();
    assert_ne!(v1, v2);

    let topic = kafka
        .create_topic("sink-registry", 4, 1, &[])
        .await
        .unwrap();
    let dlq = kafka
        .create_topic("sink-registry-dlq", 1, 1, &[])
        .await
        .unwrap();
    let events = case_stream(&format!("RG-{}", unique_suffix()), 200);
    produce(&kafka, &topic, &encode_cases_as(&events, v1)).await;
    let ends = end_offsets(&kafka, &topic).await;
    let name = format!("registry-{}", unique_suffix());
    let toml = |credential: &str, metrics_port: u16| {
        with_registry(
            &config_toml(
                &name,
                &kafka,
                &[(&topic, "cases")],
                &store,
                &dlq,
                &format!("metrics_listen = \"127.0.0.1:{metrics_port}\""),
            ),
            &url,
            credential,
        )
    };

    // No credential, then a wrong one: the registry answers 401 to every fetch. The connector
    // waits, says so in its metrics, and neither applies nor dead-letters anything.
    for credential in [
        String::new(),
        format!("registry_agency = \"{WARD}\"\nregistry_token = \"not-the-token\""),
    ] {
        let metrics_port = lienthong_tests::free_port();
        let (token, task) = spawn(config(&toml(&credential, metrics_port)));
        tokio::time::sleep(Duration::from_secs(6)).await;
        let (retries, retrying) = registry_retries(metrics_port, &name).await;
        assert!(retries >= 2.0, "{credential:?}: {retries} registry retries");
        assert_eq!(
            retrying, 1.0,
            "{credential:?}: the connector shows it waits"
        );
        token.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the connector stops when told")
            .unwrap();
        // Stopped while it waited: a clean stop, the records left for the next start.
        stopped.unwrap();
        assert_eq!(
            end_offsets(&kafka, &dlq).await[&0],
            0,
            "{credential:?}: nothing dead-lettered"
        );
        assert!(store.offsets(&name).await.is_empty(), "no offset moved");
        assert!(store.rows().await.is_empty(), "nothing applied");
    }

    // The right credential: every record applied exactly once.
    let good = format!("registry_agency = \"{WARD}\"\nregistry_token = \"{WARD_TOKEN}\"");
    let metrics_port = lienthong_tests::free_port();
    let (token, task) = spawn(config(&toml(&good, metrics_port)));
    wait_caught_up(&store, &name, &topic, &ends, Duration::from_secs(120)).await;
    check_cases(&store.rows().await, &expected_cases(&events));

    // The registry stops; meanwhile records of a schema version the connector has not seen
    // yet arrive. For 20 s the connector waits on them; then the registry comes back.
    server.abort();
    let _ = server.await;
    drop(registry);
    let codec = Codec::new();
    codec.insert(v2, &case_schema_with_note()).unwrap();
    let later: Vec<_> = events
        .iter()
        .filter(|e| e.envelope.aggregate_version == 1)
        .take(40)
        .map(|e| {
            let id = e.envelope.aggregate_id.clone();
            let note = Some(format!("ghi chú {id}"));
            (
                id.clone(),
                Some(accepted_with_note(&codec, v2, &id, 100, note)),
            )
        })
        .collect();
    produce(&kafka, &topic, &later).await;
    let ends_after = end_offsets(&kafka, &topic).await;
    let retries_before = registry_retries(metrics_port, &name).await.0;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (retries, retrying) = registry_retries(metrics_port, &name).await;
    assert!(retries > retries_before, "{retries} > {retries_before}");
    assert_eq!(retrying, 1.0);
    assert_eq!(
        end_offsets(&kafka, &dlq).await[&0],
        0,
        "nothing dead-lettered"
    );
    let held: i64 = store.offsets(&name).await.iter().map(|o| o.next).sum();
    assert!(
        held < ends_after.values().sum::<i64>(),
        "the records of the unseen schema are not applied while the registry is away"
    );

    let (_registry, server) = serve_registry(&kafka, &log_topic, addr).await;
    wait_caught_up(&store, &name, &topic, &ends_after, Duration::from_secs(120)).await;
    assert_eq!(registry_retries(metrics_port, &name).await.1, 0.0);
    assert_eq!(
        end_offsets(&kafka, &dlq).await[&0],
        0,
        "nothing dead-lettered"
    );
    // An id the registry positively does not know (40403) is the record's fault: that record,
    // and only it, goes to the dead-letter topic, and the connector carries on.
    let mut unknown = later[0].1.clone().unwrap();
    unknown[1..5].copy_from_slice(&0x7fff_fff0u32.to_be_bytes());
    produce(&kafka, &topic, &[(later[0].0.clone(), Some(unknown))]).await;
    let ends_last = end_offsets(&kafka, &topic).await;
    wait_caught_up(&store, &name, &topic, &ends_last, Duration::from_secs(60)).await;
    token.cancel();
    task.await.unwrap().unwrap();
    server.abort();
    assert_eq!(
        end_offsets(&kafka, &dlq).await[&0],
        1,
        "the record of the unknown id, alone"
    );
    let rows = store.rows().await;
    for (key, _) in &later {
        let row = rows
            .iter()
            .find(|r| r.table == "cases" && &r.key == key)
            .unwrap();
        assert_eq!(
            row.cells.get("case_accepted__note"),
            Some(&lienthong_connect::model::Cell::Text(format!(
                "ghi chú {key}"
            ))),
            "{row:?}"
        );
        assert_eq!(
            row.cells["version"],
            lienthong_connect::model::Cell::Int(100)
        );
    }
    let history = rows.iter().filter(|r| r.table == "case_events").count();
    let expected_history = events
        .iter()
        .map(|e| &e.envelope.event_id)
        .collect::<std::collections::HashSet<_>>()
        .len()
        + later.len();
    assert_eq!(
        history, expected_history,
        "every event applied exactly once"
    );
}
