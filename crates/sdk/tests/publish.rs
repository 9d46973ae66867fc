//! The SDK against real Kafka: every event type arrives decodable, permissions are enforced
//! before Kafka, text arrives NFC, many publishes are in flight, tombstones erase.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use lienthong_contract::events::*;
use lienthong_contract::{AgencyKind, Catalog, Codec, repo_schemas_dir, samples};
use lienthong_sdk::{KafkaConfig, Publisher, PublisherConfig, SchemaIds, SdkError};
use lienthong_tests::{Kafka, kafka, unique_suffix};

async fn publisher(kafka: &Kafka, agency: &str, kind: AgencyKind) -> Publisher {
    kafka.ensure_catalog_topics().await.unwrap();
    let catalog = Arc::new(Catalog::load(repo_schemas_dir()).unwrap());
    let mut config = PublisherConfig::new(agency, kind, kafka.config());
    config.max_in_flight = 500;
    Publisher::connect(config, catalog, SchemaIds::Local)
        .await
        .unwrap()
}

/// Every record of `topic` whose key is `key`, decoded with the local catalog ids.
async fn read_key<T: serde::de::DeserializeOwned>(
    kafka: &Kafka,
    topic: &str,
    key: &str,
    expected: usize,
) -> Vec<Option<T>> {
    let codec = Codec::from_catalog(&Catalog::load(repo_schemas_dir()).unwrap()).unwrap();
    // Only the last two minutes: the suite's topics are shared and long.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 120_000;
    let from = kafka.offsets_at_time(topic, since).unwrap();
    let records = kafka.read_since(topic, &from, false).await.unwrap();
    let mine: Vec<Option<T>> = records
        .iter()
        .filter(|r| r.key.as_deref() == Some(key.as_bytes()))
        .map(|r| {
            r.payload
                .as_deref()
                .map(|p| codec.decode::<T>(p).unwrap().1)
        })
        .collect();
    assert_eq!(mine.len(), expected, "records with key {key}");
    mine
}

fn case_id() -> String {
    format!("HS-TEST-{}", unique_suffix())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_step_arrives_in_order_and_decodes() {
    let kafka = kafka();
    let telemetry = lienthong_telemetry::Telemetry::new("test").unwrap();
    let ward = publisher(&kafka, "26734", AgencyKind::Ward)
        .await
        .with_metrics(&telemetry);
    let id = case_id();
    let mut sent = Vec::new();
    for (i, mut e) in samples::case_lifecycle().into_iter().enumerate() {
        e.envelope.aggregate_id = id.clone();
        e.envelope.producer_unit = "26734".into();
        e.envelope.aggregate_version = i as i64 + 1;
        let receipt = ward.publish(e.clone()).await.unwrap();
        assert_eq!(
            (receipt.topic, receipt.event_id.as_str()),
            ("hcm.case.events", e.envelope.event_id.as_str())
        );
        sent.push(e);
    }
    let got: Vec<CaseEvent> = read_key(&kafka, "hcm.case.events", &id, sent.len())
        .await
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(
        got, sent,
        "same events, same order (one key, one partition)"
    );
    let produced = telemetry
        .bus
        .events_produced
        .with_label_values(&["hcm.case.events", "sdk"])
        .get();
    assert_eq!(
        produced,
        sent.len() as u64,
        "each acknowledged event counted once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_department_publishes_citizen_and_reference_data_and_erases() {
    let kafka = kafka();
    let police = publisher(&kafka, "CATP", AgencyKind::Department).await;
    let mut citizen = samples::citizen_record();
    let pid = format!("0{:011}", rand_digits());
    citizen.envelope.aggregate_id = pid.clone();
    citizen.profile.personal_id = pid.clone();
    police.publish(citizen.clone()).await.unwrap();
    police.erase_citizen(&pid).await.unwrap();
    let got = read_key::<CitizenRecord>(&kafka, "hcm.citizen.records", &pid, 2).await;
    assert_eq!(got[0].as_ref(), Some(&citizen));
    assert!(got[1].is_none(), "the erasure is a tombstone");
    assert!(matches!(
        police.erase_citizen("12345").await,
        Err(SdkError::Invalid(_))
    ));

    let mut unit = samples::admin_unit();
    unit.envelope.producer_unit = "CATP".into();
    unit.envelope.aggregate_id = format!("U{}", unique_suffix());
    police.publish(unit.clone()).await.unwrap();
    let mut feedback = samples::feedback_lifecycle().remove(2);
    feedback.envelope.producer_unit = "CATP".into();
    feedback.envelope.aggregate_id = format!("PA-{}", unique_suffix());
    police.publish(feedback.clone()).await.unwrap();
    assert_eq!(
        read_key::<FeedbackEvent>(
            &kafka,
            "hcm.feedback.events",
            &feedback.envelope.aggregate_id,
            1
        )
        .await[0]
            .as_ref(),
        Some(&feedback)
    );
}

fn rand_digits() -> u64 {
    u64::from_str_radix(&unique_suffix()[..10], 16).unwrap() % 100_000_000_000
}

/// Schemas newer than this build: an optional field added to `CaseAccepted`, which the SDK's
/// `CaseEvent` does not know. The SDK writes events field by field, so it must refuse to
/// connect rather than publish bytes that the schema would read wrongly.
#[tokio::test]
async fn a_schema_the_event_types_do_not_write_is_refused_at_connect() {
    let dir = tempfile::tempdir().unwrap();
    let schemas = dir.path().join("schemas");
    std::fs::create_dir_all(schemas.join("common")).unwrap();
    for entry in walk(&repo_schemas_dir()) {
        let to = schemas.join(entry.strip_prefix(repo_schemas_dir()).unwrap());
        std::fs::copy(&entry, to).unwrap();
    }
    let case = schemas.join("case_event.avsc");
    let text = std::fs::read_to_string(&case).unwrap();
    let field = r#"{"name": "processing_unit", "type": "string","#;
    assert!(text.contains(field));
    let newer = text.replacen(
        field,
        &format!(r#"{{"name": "queue", "type": ["null", "string"], "default": null, "lienthong.personal_data": "none"}}, {field}"#),
        1,
    );
    std::fs::write(&case, newer).unwrap();
    let catalog = Arc::new(Catalog::load(&schemas).unwrap());
    let config = PublisherConfig::new("26734", AgencyKind::Ward, KafkaConfig::new("127.0.0.1:1"));
    let Err(err) = Publisher::connect(config, catalog, SchemaIds::Local).await else {
        panic!("a publisher connected with a schema its types do not write");
    };
    let message = err.to_string();
    assert!(
        matches!(err, SdkError::TypeMismatch(_)) && !err.is_transient(),
        "{message}"
    );
    assert!(
        message.contains("hcm.case.events")
            && message.contains("CaseEvent")
            && message.contains("at event.CaseAccepted")
            && message.contains("\"queue\""),
        "{message}"
    );
}

/// The files under `dir`, recursively.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_happen_before_kafka() {
    // A publisher whose broker does not exist: had a refused event gone to Kafka, it would
    // fail with a Kafka error after the delivery timeout, not with NotAllowed at once.
    let catalog = Arc::new(Catalog::load(repo_schemas_dir()).unwrap());
    let mut config =
        PublisherConfig::new("26734", AgencyKind::Ward, KafkaConfig::new("127.0.0.1:1"));
    config.delivery_timeout = Duration::from_secs(3);
    let ward = Publisher::connect(config, catalog, SchemaIds::Local)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    // A ward may not publish citizen records, nor erase them.
    let err = ward.publish(samples::citizen_record()).await.unwrap_err();
    assert!(
        matches!(err, SdkError::NotAllowed(_)) && !err.is_transient(),
        "{err}"
    );
    assert!(err.to_string().contains("hcm.citizen.records"), "{err}");
    assert!(matches!(
        ward.erase_citizen("079203001234").await,
        Err(SdkError::NotAllowed(_))
    ));
    // A ward publishes only as itself.
    let mut e = samples::typical_case_submitted();
    e.envelope.producer_unit = "27004".into();
    let err = ward.publish(e).await.unwrap_err();
    assert!(
        matches!(err, SdkError::NotAllowed(_)) && err.to_string().contains("27004"),
        "{err}"
    );
    // An envelope the schema's logical types would refuse: not a UUID, version 0.
    let mut e = samples::typical_case_submitted();
    e.envelope.correlation_id = "PA-2026-000001".into();
    let err = ward.publish(e).await.unwrap_err();
    assert!(
        matches!(err, SdkError::Invalid(_)) && err.to_string().contains("correlation_id"),
        "{err}"
    );
    for not_hyphenated in ["not-a-uuid", "67e5504410b1426f9247bb680e5fe0c8"] {
        let mut e = samples::typical_case_submitted();
        e.envelope.event_id = not_hyphenated.into();
        let err = ward.publish(e).await.unwrap_err();
        assert!(err.to_string().contains("event_id"), "{err}");
    }
    let mut e = samples::typical_case_submitted();
    e.envelope.aggregate_version = 0;
    let err = ward.publish(e).await.unwrap_err();
    assert!(err.to_string().contains("aggregate_version"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refusals do not wait for Kafka"
    );
    // The control: an allowed event does go for Kafka, and fails there.
    let err = ward
        .publish(samples::typical_case_submitted())
        .await
        .unwrap_err();
    assert!(
        matches!(err, SdkError::Kafka(_)) && err.is_transient(),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vietnamese_text_arrives_nfc() {
    let kafka = kafka();
    let ward = publisher(&kafka, "26734", AgencyKind::Ward).await;
    let mut e = samples::case_lifecycle().remove(3); // SupplementRequested
    e.envelope.producer_unit = "26734".into();
    e.envelope.aggregate_id = case_id();
    let CaseEventKind::SupplementRequested(ref mut s) = e.event else {
        panic!()
    };
    s.reason = "Thie\u{302}\u{301}u gia\u{302}\u{301}y chu\u{31b}\u{301}ng sinh".into(); // NFD
    ward.publish(e.clone()).await.unwrap();
    let got: CaseEvent = read_key(&kafka, "hcm.case.events", &e.envelope.aggregate_id, 1)
        .await
        .remove(0)
        .unwrap();
    let CaseEventKind::SupplementRequested(s) = got.event else {
        panic!()
    };
    assert_eq!(s.reason, "Thiếu giấy chứng sinh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_in_flight_get_one_receipt_each() {
    let kafka = kafka();
    let ward = Arc::new(publisher(&kafka, "26734", AgencyKind::Ward).await);
    let n = 5_000;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let ward = ward.clone();
        tasks.spawn(async move {
            let mut e = samples::typical_case_submitted();
            e.envelope.aggregate_id = format!("HS-LOAD-{}", i % 97);
            e.envelope.event_id = samples::uuid_like(1_000_000 + i as u64);
            ward.publish(e).await
        });
    }
    let mut receipts = HashSet::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap().unwrap();
        assert!(
            receipts.insert((r.partition, r.offset)),
            "two events at one offset"
        );
    }
    assert_eq!(receipts.len(), n);
    ward.flush(Duration::from_secs(10)).await.unwrap();
    assert!(
        matches!(
            ward.publish(samples::typical_case_submitted()).await,
            Err(SdkError::NotAllowed(_))
        ),
        "closed after flush"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_in_flight_publishes_wait_on_kafka() {
    // A broker that never answers holds every handed-over publish until its timeout, so the
    // bound is visible: 4 slots, 10 publishes, 4 in flight, 6 waiting for a slot.
    let catalog = Arc::new(Catalog::load(repo_schemas_dir()).unwrap());
    let mut config =
        PublisherConfig::new("26734", AgencyKind::Ward, KafkaConfig::new("127.0.0.1:1"));
    config.max_in_flight = 4;
    config.delivery_timeout = Duration::from_secs(3);
    let ward = Arc::new(
        Publisher::connect(config, catalog, SchemaIds::Local)
            .await
            .unwrap(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let ward = ward.clone();
        tasks.spawn(async move { ward.publish(samples::typical_case_submitted()).await });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ward.in_flight(),
        4,
        "the bound holds while Kafka does not answer"
    );
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        assert!(matches!(r.unwrap(), Err(SdkError::Kafka(_))));
        failed += 1;
    }
    assert_eq!((failed, ward.in_flight()), (10, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_ids_come_from_a_registry_served_over_http() {
    use lienthong_registry::auth::hash_token;
    use lienthong_registry::client::{Credentials, RegistryClient};
    use lienthong_registry::{Agencies, AgencyCredential, Registry, api};

    let kafka = kafka();
    kafka.ensure_catalog_topics().await.unwrap();
    let catalog = Arc::new(Catalog::load(repo_schemas_dir()).unwrap());
    let agencies = Agencies::new(&[AgencyCredential {
        code: "STP".into(),
        kind: AgencyKind::Department,
        token_sha256: hash_token("stp-token"),
        admin: false,
    }])
    .unwrap();
    let registry = Arc::new(Registry::in_memory(catalog.clone(), agencies));
    let url = lienthong_tests::serve(api::router(registry.clone()))
        .await
        .unwrap();
    let client =
        RegistryClient::new(&url, Credentials::Bearer("stp-token".into()), Codec::new()).unwrap();
    // Another subject first, so the catalog's registry ids are not the local ids 1, 2, …
    let scratch = r#"{"type":"record","name":"Scratch","namespace":"stp","fields":[{"name":"x","type":"int"}]}"#;
    let scratch_id = client
        .id_for("stp.scratch-value", scratch, true)
        .await
        .unwrap();
    let ids: std::collections::HashMap<String, u32> =
        registry.bootstrap().await.unwrap().into_iter().collect();
    let case_id_in_registry = ids["hcm.case.events-value"];
    assert_ne!(case_id_in_registry, scratch_id);
    assert_ne!(
        case_id_in_registry,
        catalog.local_id("hcm.case.events").unwrap(),
        "the test must tell registry ids from local ids"
    );

    let config = PublisherConfig::new("26734", AgencyKind::Ward, kafka.config());
    let before = client.requests();
    let ward = Publisher::connect(config, catalog.clone(), SchemaIds::Registry(&client))
        .await
        .unwrap();
    let looked_up = client.requests() - before;
    assert!(looked_up >= 1, "connect asks the registry");
    let mut event = samples::typical_case_submitted();
    event.envelope.aggregate_id = case_id();
    ward.publish(event.clone()).await.unwrap();
    ward.publish(event.clone()).await.unwrap();
    assert_eq!(
        client.requests() - before,
        looked_up,
        "no registry call per publish"
    );
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 120_000;
    let from = kafka.offsets_at_time("hcm.case.events", since).unwrap();
    let records = kafka
        .read_since("hcm.case.events", &from, false)
        .await
        .unwrap();
    let mine: Vec<_> = records
        .iter()
        .filter(|r| r.key.as_deref() == Some(event.envelope.aggregate_id.as_bytes()))
        .collect();
    assert_eq!(mine.len(), 2);
    for r in mine {
        let payload = r.payload.as_deref().unwrap();
        let (id, _) = lienthong_contract::codec::split_frame(payload).unwrap();
        assert_eq!(
            id, case_id_in_registry,
            "the header carries the registry's id"
        );
        let (_, back): (u32, CaseEvent) = client.codec().decode(payload).unwrap();
        assert_eq!(back, event);
    }
}

/// A publisher that records metrics counts its Kafka client's errors too: pointed at a port
/// where no broker listens, it reports transport failures as
/// `lienthong_kafka_client_errors_total{component="sdk"}`.
#[tokio::test]
async fn a_publisher_with_metrics_counts_its_kafka_client_errors() {
    let catalog = Arc::new(Catalog::load(repo_schemas_dir()).unwrap());
    let config = PublisherConfig::new("26734", AgencyKind::Ward, KafkaConfig::new("127.0.0.1:1"));
    let telemetry = lienthong_telemetry::Telemetry::new("test").unwrap();
    let _publisher = Publisher::connect(config, catalog, SchemaIds::Local)
        .await
        .unwrap()
        .with_metrics(&telemetry);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let counted = loop {
        let text = telemetry.render();
        let counted: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("lienthong_kafka_client_errors_total{"))
            .filter(|l| l.contains("component=\"sdk\""))
            .map(str::to_string)
            .collect();
        if !counted.is_empty() || std::time::Instant::now() > deadline {
            break counted;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !counted.is_empty(),
        "no client error counted for the SDK in 20 s"
    );
}

/// With the key service, a citizen record reaches Kafka sealed and keyed by the pseudonym; the
/// unsealed path is refused; erasing destroys the key before the tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealing_publisher_seals_citizen_records_and_erases_their_key() {
    use lienthong_privacy::{KeyService, MasterKey};
    let kafka = kafka();
    let master = MasterKey::parse(&MasterKey::generate().unwrap()).unwrap();
    let service: Arc<KeyService<rdkafka::consumer::DefaultConsumerContext>> =
        Arc::new(KeyService::in_memory(&master));
    let police = publisher(&kafka, "CATP", AgencyKind::Department)
        .await
        .with_keys(service.clone());
    let mut citizen = samples::citizen_record();
    let pid = format!("0{:011}", rand_digits());
    citizen.envelope.aggregate_id = pid.clone();
    citizen.profile.personal_id = pid.clone();
    assert!(matches!(
        police.publish(citizen.clone()).await,
        Err(SdkError::Invalid(m)) if m.contains("publish_citizen")
    ));
    police.publish_citizen(citizen.clone()).await.unwrap();
    let pseudonym = master.pseudonyms().of(&pid);
    police.erase_citizen(&pid).await.unwrap();
    assert!(
        service.vault().key(&pseudonym).unwrap().is_none(),
        "the key is destroyed"
    );
    assert_eq!(
        service.access_records(),
        2,
        "the sealing and the erasure are recorded"
    );
    let got = read_key::<CitizenRecord>(&kafka, "hcm.citizen.records", &pseudonym, 2).await;
    let sealed = got[0].as_ref().unwrap();
    assert_eq!(sealed.profile.personal_id, pseudonym);
    assert_eq!(sealed.profile.full_name, "");
    assert!(sealed.sealed.as_deref().unwrap().starts_with("lt1."));
    assert!(
        got[1].is_none(),
        "the erasure is a tombstone keyed by the pseudonym"
    );
    // The refused publish handed nothing to Kafka: no record is keyed by the clear id.
    read_key::<CitizenRecord>(&kafka, "hcm.citizen.records", &pid, 0).await;

    // A case filed for the citizen names the applicant by pseudonym only.
    let ward = publisher(&kafka, "26734", AgencyKind::Ward)
        .await
        .with_keys(service.clone());
    let mut case = samples::typical_case_submitted();
    case.envelope.aggregate_id = case_id();
    if let CaseEventKind::CaseSubmitted(s) = &mut case.event {
        s.applicant_id = pid.clone();
    }
    ward.publish(case.clone()).await.unwrap();
    let got =
        read_key::<CaseEvent>(&kafka, "hcm.case.events", &case.envelope.aggregate_id, 1).await;
    let CaseEventKind::CaseSubmitted(s) = &got[0].as_ref().unwrap().event else {
        panic!("{got:?}")
    };
    assert_eq!(s.applicant_id, pseudonym);
}

/// A publisher given its agency's key signs every record, many under one signature when they
/// are published together, and each record read back from Kafka verifies on its own against
/// the certificate; a key of another agency is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_publisher_signs_every_record_and_each_verifies_alone() {
    use futures::StreamExt;
    use lienthong_signing::{
        AgencySigner, CertificateLog, CityCa, RecordVerifier, signature_header,
    };
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Message;
    let kafka = kafka();
    let ca = CityCa::generate("HCMC City CA (test)", 30).unwrap();
    let issued = ca.issue("26734", 7).unwrap();
    let log = CertificateLog::<rdkafka::consumer::DefaultConsumerContext>::in_memory(vec![
        ca.certificate().clone(),
    ]);
    log.publish(&issued.certificate, "admin").await.unwrap();
    let signer = || AgencySigner::from_pem(&issued.key_pem, issued.certificate.clone()).unwrap();
    // Another agency's key is not this publisher's.
    let stp = ca.issue("STP", 7).unwrap();
    let stp_signer = AgencySigner::from_pem(&stp.key_pem, stp.certificate.clone()).unwrap();
    assert!(matches!(
        publisher(&kafka, "26734", AgencyKind::Ward)
            .await
            .with_signer(stp_signer),
        Err(SdkError::Signing(_))
    ));
    let ward = publisher(&kafka, "26734", AgencyKind::Ward)
        .await
        .with_signer(signer())
        .unwrap();
    let id = case_id();
    let n = 300;
    let publishes: Vec<_> = (0..n)
        .map(|i| {
            let mut e = samples::typical_case_submitted();
            e.envelope.aggregate_id = format!("{id}-{i}");
            e.envelope.producer_unit = "26734".into();
            e.envelope.event_id = samples::uuid_like(rand_digits() + i as u64);
            ward.publish(e)
        })
        .collect();
    let receipts: Vec<_> = futures::future::join_all(publishes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    ward.flush(Duration::from_secs(10)).await.unwrap();
    // Read each record back where its receipt says it is, headers and all.
    let consumer = kafka
        .consumer(&format!("signed-reader-{}", unique_suffix()))
        .unwrap();
    let mut positions = rdkafka::TopicPartitionList::new();
    for r in &receipts {
        let p = r.partition;
        let lowest = receipts
            .iter()
            .filter(|o| o.partition == p)
            .map(|o| o.offset)
            .min()
            .unwrap();
        if positions.find_partition("hcm.case.events", p).is_none() {
            positions
                .add_partition_offset("hcm.case.events", p, rdkafka::Offset::Offset(lowest))
                .unwrap();
        }
    }
    consumer.assign(&positions).unwrap();
    let wanted: HashSet<(i32, i64)> = receipts.iter().map(|r| (r.partition, r.offset)).collect();
    let verifier = RecordVerifier::new();
    let (mut verified, mut largest_batch) = (0, 0u32);
    let mut stream = consumer.stream();
    while verified < n {
        let m = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("every signed record read back")
            .unwrap()
            .unwrap();
        if !wanted.contains(&(m.partition(), m.offset())) {
            continue;
        }
        let header = signature_header(m.headers());
        let signer = verifier
            .verify(
                &log.read(),
                m.topic(),
                m.key(),
                m.payload(),
                header,
                m.timestamp().to_millis().unwrap(),
            )
            .unwrap()
            .agency()
            .to_string();
        assert_eq!(signer, "26734");
        // The batch size, at bytes 21..25 of the header (docs/signatures.md).
        let size = &header.unwrap()[21..25];
        largest_batch = largest_batch.max(u32::from_be_bytes(size.try_into().unwrap()));
        // The same record with one byte changed does not verify.
        let mut changed = m.payload().unwrap().to_vec();
        changed[10] ^= 0x20;
        assert!(
            verifier
                .verify(
                    &log.read(),
                    m.topic(),
                    m.key(),
                    Some(&changed),
                    header,
                    m.timestamp().to_millis().unwrap(),
                )
                .is_err()
        );
        verified += 1;
    }
    assert!(
        largest_batch > 1,
        "300 publishes at once were signed one by one"
    );
}
