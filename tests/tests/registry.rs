//! The schema registry on real Kafka: state survives a restart, two instances registering at
//! once never give one id to two schemas, and Python's confluent-kafka client and serializers
//! (nobody here wrote them) interoperate with it and with lienthong's codec.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use lienthong_contract::{AgencyKind, Catalog, Codec, repo_schemas_dir};
use lienthong_registry::auth::hash_token;
use lienthong_registry::{Agencies, Agency, AgencyCredential, KafkaLogConfig, Registry, api};
use lienthong_tests::{Kafka, kafka, python, repo_root, serve, unique_suffix};
use rdkafka::producer::FutureRecord;
use tokio_util::sync::CancellationToken;

fn agencies() -> Agencies {
    let cred = |code: &str, kind, token: &str| AgencyCredential {
        code: code.into(),
        kind,
        token_sha256: hash_token(token),
        admin: false,
    };
    Agencies::new(&[
        cred("PYTEST", AgencyKind::Department, "py-token"),
        cred("26734", AgencyKind::Ward, "ward-token"),
    ])
    .unwrap()
}

fn pytest_agency() -> Agency {
    Agency {
        code: "PYTEST".into(),
        kind: AgencyKind::Department,
        admin: false,
    }
}

async fn open(kafka: &Kafka, topic: &str, shutdown: &CancellationToken) -> Result<Registry> {
    let catalog = Arc::new(Catalog::load(repo_schemas_dir())?);
    let config = KafkaLogConfig {
        kafka: kafka.config(),
        topic: topic.into(),
        replication: 1,
    };
    let errors = lienthong_telemetry::KafkaClientContext::logging_only("registry");
    Ok(Registry::with_kafka(&config, catalog, agencies(), errors, shutdown.child_token()).await?)
}

fn note_schema(i: usize) -> String {
    format!(
        r#"{{"type":"record","name":"N{i}","namespace":"pytest","fields":[{{"name":"f","type":"int"}}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_registry_rebuilds_the_same_ids_from_kafka() -> Result<()> {
    let kafka = kafka();
    let topic = format!("_lienthong_schemas-{}", unique_suffix());
    let shutdown = CancellationToken::new();
    let first = open(&kafka, &topic, &shutdown).await?;
    let catalog_ids = first.bootstrap().await?;
    let extra = first
        .register(
            &pytest_agency(),
            "pytest.extra-value",
            &note_schema(1),
            vec![],
        )
        .await?;
    first
        .delete_version(
            &pytest_agency(),
            "pytest.extra-value",
            lienthong_registry::VersionSpec::Latest,
            false,
        )
        .await?;
    drop(first);

    let second = open(&kafka, &topic, &shutdown).await?;
    assert_eq!(
        second.bootstrap().await?,
        catalog_ids,
        "bootstrap again: same ids, nothing new"
    );
    assert_eq!(
        second.schema_by_id(extra).await?.0,
        note_schema(1),
        "a soft-deleted id still resolves"
    );
    assert!(
        second.versions("pytest.extra-value", false).await.is_err(),
        "and stays deleted"
    );
    assert_eq!(second.subjects(false).len(), 5);
    shutdown.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_registering_at_once_never_share_an_id() -> Result<()> {
    let kafka = kafka();
    let topic = format!("_lienthong_schemas-{}", unique_suffix());
    let shutdown = CancellationToken::new();
    let a = Arc::new(open(&kafka, &topic, &shutdown).await?);
    let b = Arc::new(open(&kafka, &topic, &shutdown).await?);
    let n = 40;
    // Each instance registers its own schemas, and both register a shared set, all at once.
    let mut tasks = tokio::task::JoinSet::new();
    for (name, reg, offset) in [("a", a.clone(), 0), ("b", b.clone(), 1000)] {
        for i in 0..n {
            let reg = reg.clone();
            tasks.spawn(async move {
                let own = reg
                    .register(
                        &pytest_agency(),
                        &format!("pytest.{name}{i}-value"),
                        &note_schema(offset + i),
                        vec![],
                    )
                    .await?;
                let shared = reg
                    .register(
                        &pytest_agency(),
                        &format!("pytest.{name}-shared{i}-value"),
                        &note_schema(5000 + i),
                        vec![],
                    )
                    .await?;
                anyhow::Ok(vec![
                    (note_schema(offset + i), own),
                    (note_schema(5000 + i), shared),
                ])
            });
        }
    }
    let mut id_of: HashMap<String, u32> = HashMap::new();
    while let Some(r) = tasks.join_next().await {
        for (schema, id) in r?? {
            let previous = id_of.insert(schema.clone(), id);
            assert!(
                previous.is_none() || previous == Some(id),
                "{schema} got two ids"
            );
        }
    }
    assert_eq!(id_of.len(), 2 * n + n, "distinct schemas");
    let ids: HashSet<u32> = id_of.values().copied().collect();
    assert_eq!(
        ids.len(),
        id_of.len(),
        "one id was given to two different schemas"
    );
    // Both instances agree on every id.
    a.sync().await?;
    b.sync().await?;
    for (schema, id) in &id_of {
        assert_eq!(&a.schema_by_id(*id).await?.0, schema);
        assert_eq!(&b.schema_by_id(*id).await?.0, schema);
    }
    shutdown.cancel();
    Ok(())
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct PyNote {
    text: String,
    n: i32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_confluent_kafka_and_lienthong_read_each_others_records() -> Result<()> {
    let kafka = kafka();
    let shutdown = CancellationToken::new();
    let registry = Arc::new(
        open(
            &kafka,
            &format!("_lienthong_schemas-{}", unique_suffix()),
            &shutdown,
        )
        .await?,
    );
    let url = serve(api::router(registry.clone())).await?;
    let py_topic = kafka.create_topic("pytest.py", 1, 1, &[]).await?;
    let rust_topic = kafka.create_topic("pytest.rust", 1, 1, &[]).await?;

    // lienthong encodes with a registered id; Python's AvroDeserializer must read it.
    let schema = r#"{"type":"record","name":"PyNote","namespace":"pytest","fields":[{"name":"text","type":"string"},{"name":"n","type":"int"}]}"#;
    let id = registry
        .register(
            &pytest_agency(),
            &format!("{rust_topic}-value"),
            schema,
            vec![],
        )
        .await?;
    let codec = Codec::new();
    codec.insert(id, schema)?;
    let producer = kafka.idempotent_producer()?;
    let sent: Vec<PyNote> = (0..20)
        .map(|n| PyNote {
            text: format!("Phường Bến Thành {n}"),
            n,
        })
        .collect();
    for note in &sent {
        let bytes = codec.encode_to_vec(id, note)?;
        producer
            .send(
                FutureRecord::to(&rust_topic).key("k").payload(&bytes),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
    }

    let out = Command::new(python())
        .arg(repo_root().join("tests/interop/registry_interop.py"))
        .args([
            &url,
            kafka.bootstrap(),
            &py_topic,
            &rust_topic,
            "PYTEST",
            "py-token",
            "20",
            "26734",
            "ward-token",
        ])
        .output()
        .context("running the Python interop script")?;
    ensure!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("python's report")?;
    eprintln!("python report: {report}");

    let python_read: Vec<PyNote> = serde_json::from_value(report["rust_values"].clone())?;
    assert_eq!(
        python_read, sent,
        "Python's AvroDeserializer reads lienthong's records"
    );
    assert_eq!(
        report["incompatible"],
        serde_json::json!([409, 409]),
        "incompatible schema: Confluent's 409"
    );
    assert_eq!(
        report["foreign"],
        serde_json::json!([403, 40301]),
        "another agency: 403"
    );

    // Python's AvroSerializer registered its schema with us and produced; lienthong decodes.
    let registered = u32::try_from(report["registered_id"].as_u64().context("registered_id")?)?;
    let records = kafka
        .read_all(
            &py_topic,
            50,
            Duration::from_secs(30),
            Duration::from_secs(1),
        )
        .await?;
    assert_eq!(records.len(), 50);
    let reader = Codec::new();
    for (i, r) in records.iter().enumerate() {
        let bytes = r.payload.as_deref().context("no value")?;
        let (writer_id, _) = lienthong_contract::codec::split_frame(bytes)?;
        assert_eq!(writer_id, registered);
        if reader.schema(writer_id).is_err() {
            reader.insert(writer_id, &registry.schema_by_id(writer_id).await?.0)?;
        }
        let (_, note): (u32, PyNote) = reader.decode(bytes)?;
        assert_eq!(
            note,
            PyNote {
                text: format!("xin chào {i}"),
                n: i as i32
            }
        );
    }
    shutdown.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_log_topic_that_is_not_compacted_is_refused() {
    let kafka = kafka();
    let topic = kafka
        .create_topic(
            "_lienthong_schemas-delete",
            1,
            1,
            &[("cleanup.policy", "delete")],
        )
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let err = match open(&kafka, &topic, &shutdown).await {
        Ok(_) => panic!("a delete-policy log was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("cleanup.policy") && err.contains("compact"),
        "{err}"
    );
    shutdown.cancel();
}

/// The registry's own Kafka clients report their errors in the process's metrics: when the
/// broker of its schema log goes away, they count the failures as
/// `lienthong_kafka_client_errors_total{component="registry"}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_logs_kafka_client_errors_are_counted() {
    let own = lienthong_tests::OwnKafka::start("registry-errors").unwrap();
    let telemetry = lienthong_telemetry::Telemetry::new("test").unwrap();
    let config = KafkaLogConfig {
        kafka: own.kafka().config(),
        topic: format!("_lienthong_schemas-errors-{}", unique_suffix()),
        replication: 1,
    };
    let catalog = Arc::new(Catalog::load(repo_schemas_dir()).unwrap());
    let errors = lienthong_telemetry::KafkaClientContext::new(&telemetry, "registry");
    let shutdown = CancellationToken::new();
    let _registry = Registry::with_kafka(&config, catalog, agencies(), errors, shutdown.clone())
        .await
        .unwrap();
    let counted = || -> Vec<String> {
        telemetry
            .render()
            .lines()
            .filter(|l| l.starts_with("lienthong_kafka_client_errors_total{"))
            .filter(|l| l.contains("component=\"registry\""))
            .map(str::to_string)
            .collect()
    };
    assert!(
        counted().is_empty(),
        "errors before the broker went away: {:?}",
        counted()
    );
    own.kill().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while counted().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.cancel();
    assert!(
        !counted().is_empty(),
        "no client error counted for the registry in 30 s"
    );
}

/// With an audit trail, every change the registry makes is written to it, as the agency that
/// made it, hash-chained and signed by the registry's writer: the catalog's modes and schemas
/// at bootstrap, a new version, a deletion. A registration that changes nothing, one refused
/// as incompatible and one refused as not the subject's owner's leave nothing there. The trail
/// verifies against the certificate log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_the_registry_makes_is_on_the_signed_audit_trail() -> Result<()> {
    use lienthong_signing::{AgencySigner, AuditTrail, CertificateLog, CityCa};
    let kafka = kafka();
    let suffix = unique_suffix();
    let shutdown = CancellationToken::new();
    let ca = CityCa::generate("HCMC City CA (test)", 30)?;
    let issued = ca.issue("SKHCN", 7)?;
    let certificates =
        CertificateLog::<rdkafka::consumer::DefaultConsumerContext>::in_memory(vec![
            ca.certificate().clone(),
        ]);
    certificates.publish(&issued.certificate, "admin").await?;
    let audit_topic = format!("audit-{suffix}");
    let trail_log = |group: &str| lienthong_bus::state_log::StateLogConfig {
        kafka: kafka.config(),
        topic: audit_topic.clone(),
        replication: 1,
        topic_config: Vec::new(),
        group: format!("{group}-{suffix}"),
    };
    let trail = AuditTrail::open(
        &trail_log("audit-writer"),
        "SKHCN/registry",
        Some(AgencySigner::from_pem(
            &issued.key_pem,
            issued.certificate.clone(),
        )?),
        1,
        rdkafka::consumer::DefaultConsumerContext,
        shutdown.child_token(),
    )
    .await?;
    let registry = open(&kafka, &format!("_lienthong_schemas-{suffix}"), &shutdown)
        .await?
        .with_audit(Arc::new(trail));
    let catalog = registry.catalog().clone();
    registry.bootstrap().await?;
    registry.bootstrap().await?; // changes nothing: no entry
    registry
        .register(
            &pytest_agency(),
            "pytest.audited-value",
            &note_schema(1),
            vec![],
        )
        .await?;
    registry
        .register(
            &pytest_agency(),
            "pytest.audited-value",
            &note_schema(1),
            vec![],
        )
        .await?; // the same schema again: no entry
    let incompatible = r#"{"type":"record","name":"N1","namespace":"pytest","fields":[{"name":"f","type":"string"}]}"#;
    ensure!(
        registry
            .register(
                &pytest_agency(),
                "pytest.audited-value",
                incompatible,
                vec![]
            )
            .await
            .is_err(),
        "an incompatible schema is refused"
    );
    let ward = Agency {
        code: "26734".into(),
        kind: AgencyKind::Ward,
        admin: false,
    };
    ensure!(
        registry
            .register(&ward, "pytest.audited-value", &note_schema(1), vec![])
            .await
            .is_err(),
        "a subject of another agency is refused"
    );
    registry
        .delete_version(
            &pytest_agency(),
            "pytest.audited-value",
            lienthong_registry::VersionSpec::Latest,
            false,
        )
        .await?;

    let records = kafka.read_since(&audit_topic, &[(0, 0)], false).await?;
    let entries: Vec<serde_json::Value> = records
        .iter()
        .map(|r| serde_json::from_slice(r.payload.as_deref().unwrap_or_default()))
        .collect::<Result<_, _>>()?;
    let topics = catalog.topics().len();
    ensure!(
        entries.len() == 2 * topics + 2,
        "a mode and a schema per catalog topic, a registration, a deletion: {entries:#?}"
    );
    for (i, t) in catalog.topics().iter().enumerate() {
        let (mode, schema) = (&entries[2 * i], &entries[2 * i + 1]);
        ensure!(mode["action"] == "schema.config" && mode["subject"] == t.value_subject.as_str());
        ensure!(
            schema["action"] == "schema.register" && schema["subject"] == t.value_subject.as_str()
        );
        ensure!(schema["actor"] == t.owner.as_str(), "{schema}");
    }
    let registered = &entries[2 * topics];
    ensure!(registered["action"] == "schema.register" && registered["actor"] == "PYTEST");
    let detail: serde_json::Value =
        serde_json::from_str(registered["detail"].as_str().unwrap_or_default())?;
    ensure!(detail["version"] == 1 && detail["id"].is_u64(), "{detail}");
    let deleted = &entries[2 * topics + 1];
    ensure!(deleted["action"] == "schema.delete" && deleted["subject"] == "pytest.audited-value");

    // The trail as `lienthong audit verify` reads it: one chain, every entry signed, no problem.
    let reader = AuditTrail::open(
        &trail_log("audit-reader"),
        "reader",
        None,
        1,
        rdkafka::consumer::DefaultConsumerContext,
        shutdown.child_token(),
    )
    .await?;
    let (chains, problems) = reader.read().report(&certificates.read());
    ensure!(problems.is_empty(), "{problems:?}");
    let n = entries.len() as u64;
    ensure!(
        chains.len() == 1
            && chains[0].writer == "SKHCN/registry"
            && chains[0].entries == n
            && chains[0].signed_through == Some(n - 1),
        "{chains:?}"
    );
    shutdown.cancel();
    Ok(())
}
