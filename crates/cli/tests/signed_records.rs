//! Signed records against real Kafka (issue #29): a connector with `[signatures]` applies what
//! the producer units signed and dead-letters, each with its reason, a record with a flipped
//! byte, a record signed by another agency than its producer unit, an unsigned record and a
//! record signed after its certificate was revoked. A connector with `[receipts]` states each
//! batch it committed in a receipt signed by its agency.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use std::collections::BTreeMap;

use lienthong_connect::digest::{DEFAULT_BUCKETS, Digest};
use lienthong_signing::{AgencySigner, Receipt, RecordVerifier, Refusal, SignedBatch, leaf};
use lienthong_tests::{Kafka, kafka, unique_suffix};
use rdkafka::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::*;
use tokio_util::sync::CancellationToken;

/// Produce `records` to `topic` as one signed batch of `signer`, after `tamper` changed what
/// is sent (not what was signed); waits for every acknowledgement.
async fn produce_signed(
    producer: &FutureProducer,
    topic: &str,
    records: &[(String, Option<Vec<u8>>)],
    signer: &AgencySigner,
    tamper: impl Fn(usize, &mut Vec<u8>),
) {
    let leaves: Vec<_> = records
        .iter()
        .map(|(k, v)| leaf(topic, Some(k.as_bytes()), v.as_deref()))
        .collect();
    let batch = SignedBatch::sign(signer, &leaves).unwrap();
    for (i, (key, value)) in records.iter().enumerate() {
        let mut value = value.clone().unwrap();
        tamper(i, &mut value);
        producer
            .send(
                FutureRecord::to(topic)
                    .key(key)
                    .payload(&value)
                    .headers(batch.headers(i)),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connector_applies_signed_records_and_dead_letters_each_forgery_with_its_reason() {
    let kafka = kafka();
    let store = sqlite_store().await;
    // The broker's append time is what a revocation is checked against.
    let topic = stamped_topic(&kafka, "signed-cases", 2).await;
    let dlq = kafka.create_topic("signed-dlq", 1, 1, &[]).await.unwrap();
    let shutdown = CancellationToken::new();
    let pki = Pki::new(&kafka, &shutdown).await;
    let (ward_certificate, ward) = pki.signer("26734").await;
    let (_, stp) = pki.signer("STP").await;

    // Every event of the stream is produced by ward 26734 and signed by it.
    let prefix = format!("HS-{}", unique_suffix());
    let events = case_stream(&prefix, 40);
    let producer = producer(&kafka);
    produce_signed(&producer, &topic, &encode_cases(&events), &ward, |_, _| {}).await;
    let forged = |name: &str| {
        let mut e = case_stream(&format!("{prefix}-{name}"), 1).remove(0);
        e.envelope.aggregate_id = format!("{prefix}-{name}");
        encode_cases(&[e])
    };
    // A byte flipped after signing.
    let flipped = forged("flipped");
    produce_signed(&producer, &topic, &flipped, &ward, |_, v| {
        let last = v.len() - 1;
        v[last] ^= 0x01;
    })
    .await;
    // Signed by STP, claiming to be ward 26734's.
    let posing = forged("posing");
    produce_signed(&producer, &topic, &posing, &stp, |_, _| {}).await;
    // Not signed at all.
    let unsigned = forged("unsigned");
    produce(&kafka, &topic, &unsigned).await;
    // Signed by the ward after its certificate was revoked.
    tokio::time::sleep(Duration::from_millis(20)).await;
    pki.log
        .revoke(ward_certificate.id(), "key lost", "admin")
        .await
        .unwrap();
    let late = forged("late");
    produce_signed(&producer, &topic, &late, &ward, |_, _| {}).await;

    let name = format!("signed-{}", unique_suffix());
    let toml = config_toml(
        &name,
        &kafka,
        &[(&topic, "cases")],
        &store,
        &dlq,
        &pki.signatures_toml(),
    );
    run_until_caught_up(config(&toml), &kafka, &store, &topic).await;

    // What the ward signed before the revocation is applied, exactly.
    check_cases(&store.rows().await, &expected_cases(&events));
    let dead = dlq_headers(&kafka, &dlq, 4).await;
    assert_eq!(dead.len(), 4, "exactly the four forgeries: {dead:?}");
    assert_dead_lettered(
        &dead,
        "signature",
        &[
            (&flipped[0].0, "the signature does not verify"),
            (
                &posing[0].0,
                "signed by STP, but its producer unit is 26734",
            ),
            (&unsigned[0].0, "the record is not signed"),
            (&late[0].0, "was revoked: key lost"),
        ],
    );

    // `lienthong verify` finds the same four in the topic, and the rest signed by the ward.
    let out = verify(&pki, &kafka, &topic);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("REFUSED"))
        .collect();
    assert_eq!(refused.len(), 4, "{stdout}");
    for (records, reason) in [
        (&flipped, "the signature does not verify"),
        (&posing, "signed by STP, but its producer unit is 26734"),
        (&unsigned, "the record is not signed"),
        (&late, "was revoked: key lost"),
    ] {
        assert!(
            refused
                .iter()
                .any(|l| l.contains(&records[0].0) && l.contains(reason)),
            "{reason}: {stdout}"
        );
    }
    assert!(
        stdout.contains(&format!(
            "{} record(s) verified (26734 {}), 4 refused",
            events.len(),
            events.len()
        )),
        "{stdout}"
    );
    shutdown.cancel();
}

/// A verifier nobody here wrote (confluent-kafka, `cryptography`, fastavro) checks signed
/// records from the documented format alone, the certificate taken from the certificate log;
/// a record with one byte changed does not verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_verifier_checks_signed_records_from_the_documented_format() {
    let kafka = kafka();
    let good_topic = stamped_topic(&kafka, "signed-python", 1).await;
    let bad_topic = stamped_topic(&kafka, "signed-python-bad", 1).await;
    let shutdown = CancellationToken::new();
    let pki = Pki::new(&kafka, &shutdown).await;
    let (_, ward) = pki.signer("26734").await;
    let records = encode_cases(&case_stream(&format!("HS-{}", unique_suffix()), 5));
    let producer = producer(&kafka);
    produce_signed(&producer, &good_topic, &records, &ward, |_, _| {}).await;
    produce_signed(&producer, &bad_topic, &records[..1], &ward, |_, v| {
        v[8] ^= 0x01;
    })
    .await;
    let schema = pki.dir.path().join("case.avsc");
    std::fs::write(&schema, case_schema()).unwrap();
    let verify = |topic: &str, count: usize| {
        std::process::Command::new(lienthong_tests::python())
            .arg(lienthong_contract::repo_root().join("tests/interop/verify_signed.py"))
            .env("BOOTSTRAP", kafka.bootstrap())
            .env("TOPIC", topic)
            .env("COUNT", count.to_string())
            .env("CERTIFICATES", &pki.topic)
            .env("CA", &pki.ca_crt)
            .env("SCHEMA", &schema)
            .output()
            .unwrap()
    };
    let out = verify(&good_topic, records.len());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), records.len(), "{stdout}");
    for (line, (key, _)) in lines.iter().zip(&records) {
        assert_eq!(line["key"], key.as_str());
        assert_eq!(line["agency"], "26734");
        assert_eq!(line["batch"], records.len());
    }
    let out = verify(&bad_topic, 1);
    assert!(!out.status.success(), "a changed record verified");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("InvalidSignature"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    shutdown.cancel();
}

/// `lienthong verify TOPIC`, run as the CLI with `pki`'s trust, over `kafka`.
fn verify(pki: &Pki, kafka: &Kafka, topic: &str) -> std::process::Output {
    let cli_config = pki.cli_config(kafka);
    std::process::Command::new(assert_cmd::cargo::cargo_bin("lienthong"))
        .current_dir(lienthong_contract::repo_root())
        .arg("--config")
        .arg(&cli_config)
        .args(["verify", topic])
        .output()
        .unwrap()
}

/// Read every record of `topic` up to its end now, in offset order per partition.
async fn read_to_end(
    kafka: &lienthong_tests::Kafka,
    topic: &str,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::Consumer;
    let ends = end_offsets(kafka, topic).await;
    let total: i64 = ends.values().sum();
    let consumer = kafka
        .consumer(&format!("receipts-reader-{}", unique_suffix()))
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (out.len() as i64) < total {
        assert!(
            std::time::Instant::now() < deadline,
            "read {} of {total} receipts",
            out.len()
        );
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            out.push(m.detach());
        }
    }
    out
}

/// Every batch a connector with `[receipts]` commits is stated in a receipt signed by its
/// agency: the receipts' ranges cover every offset of every partition exactly once, their
/// counts add up, each carries the store's digest as the batch left it (the last one of each
/// run is the store's digest when the run stopped), and a changed byte or another agency's
/// signature is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_committed_batch_has_a_signed_receipt_with_the_stores_digest() {
    let kafka = kafka();
    let store = postgres_store().await;
    let topic = stamped_topic(&kafka, "receipted-cases", 3).await;
    let dlq = kafka
        .create_topic("receipted-dlq", 1, 1, &[])
        .await
        .unwrap();
    let receipts_topic = stamped_topic(&kafka, "receipts", 1).await;
    let shutdown = CancellationToken::new();
    let pki = Pki::new(&kafka, &shutdown).await;
    let ward = pki.issue("26734").await;
    let stp = pki.issue("STP").await;
    let dir = &pki.dir;
    let key_file = dir.path().join("26734.key");
    let certificate_file = dir.path().join("26734.crt");
    std::fs::write(&key_file, &ward.key_pem).unwrap();
    std::fs::write(&certificate_file, ward.certificate.pem()).unwrap();

    let name = format!("receipted-{}", unique_suffix());
    let toml = config_toml(
        &name,
        &kafka,
        &[(&topic, "cases")],
        &store,
        &dlq,
        &format!(
            "[receipts]\nkey_file = \"{}\"\ncertificate_file = \"{}\"\ntopic = \"{receipts_topic}\"\nstore_digest_every_secs = 0\n",
            key_file.display(),
            certificate_file.display()
        ),
    )
    // Small batches: many receipts.
    .replace("max_records = 2000", "max_records = 25");
    let prefix = format!("RC-{}", unique_suffix());
    let mut events = case_stream(&prefix, 60);
    produce(&kafka, &topic, &encode_cases(&events)).await;
    run_until_caught_up(config(&toml), &kafka, &store, &topic).await;
    let first_run = read_to_end(&kafka, &receipts_topic).await;
    let digest_after_first = Digest::of(store.rows().await, DEFAULT_BUCKETS);
    // A second run, over more events: it continues the chain where the first stopped.
    let more = case_stream(&format!("{prefix}-b"), 40);
    produce(&kafka, &topic, &encode_cases(&more)).await;
    events.extend(more);
    run_until_caught_up(config(&toml), &kafka, &store, &topic).await;
    let all = read_to_end(&kafka, &receipts_topic).await;
    let digest_after_second = Digest::of(store.rows().await, DEFAULT_BUCKETS);
    check_cases(&store.rows().await, &expected_cases(&events));

    let ends = end_offsets(&kafka, &topic).await;
    let verifier = RecordVerifier::new();
    let receipts: Vec<Receipt> = all
        .iter()
        .map(|m| Receipt::verify(&verifier, &pki.log.read(), m).unwrap())
        .collect();
    assert!(
        receipts.len() >= 8,
        "{} receipts for 100 cases in batches of at most 25",
        receipts.len()
    );
    // Each partition's ranges chain from its first offset to its end, with no gap or overlap.
    let mut reached: BTreeMap<i32, i64> = BTreeMap::new();
    let (mut records, mut applied) = (0u64, 0u64);
    for r in &receipts {
        assert_eq!(
            (r.connector.as_str(), r.agency.as_str(), r.store.as_str()),
            (name.as_str(), "26734", "postgres")
        );
        for range in &r.ranges {
            assert_eq!(range.topic, topic);
            let at = reached.entry(range.partition).or_insert(0);
            assert_eq!(
                range.from, *at,
                "partition {}: a gap or an overlap: {r:?}",
                range.partition
            );
            assert!(range.to > range.from && range.records > 0, "{r:?}");
            assert!(
                range.published_ms[0] <= range.published_ms[1]
                    && range.published_ms[1] <= r.committed_ms,
                "{r:?}"
            );
            *at = range.to;
            records += range.records;
        }
        applied += r.applied;
        assert!(
            r.store_digest.is_some(),
            "a digest after every batch: {r:?}"
        );
    }
    assert_eq!(
        reached, ends,
        "the receipts cover every offset of the topic"
    );
    assert_eq!(records, events.len() as u64);
    assert_eq!(applied, events.len() as u64, "every event moved a row");
    // The store's digest as each run left it is the last receipt's of that run.
    for (last, digest) in [
        (&receipts[first_run.len() - 1], &digest_after_first),
        (receipts.last().unwrap(), &digest_after_second),
    ] {
        let d = last.store_digest.as_ref().unwrap();
        assert_eq!(
            (d.rows, d.overall.as_str()),
            (digest.rows, digest.overall.as_str())
        );
    }
    assert_ne!(digest_after_first.overall, digest_after_second.overall);

    // A receipt changed after signing is refused; so is one signed by STP in the ward's name.
    let last = all.last().unwrap();
    let value = String::from_utf8(last.payload().unwrap().to_vec()).unwrap();
    let forged = value.replacen("\"applied\":", "\"applied\":1", 1);
    assert_ne!(forged, value);
    let changed = last.clone().set_payload(Some(forged.into_bytes()));
    assert!(matches!(
        Receipt::verify(&verifier, &pki.log.read(), &changed),
        Err(Refusal::Altered(_))
    ));
    let stp_signer = AgencySigner::from_pem(&stp.key_pem, stp.certificate.clone()).unwrap();
    let claim: Receipt = serde_json::from_str(&value).unwrap();
    assert!(
        claim.sign(&stp_signer, &receipts_topic).is_err(),
        "the signer must be the receipt's agency"
    );
    let key = last.key().unwrap();
    let batch = SignedBatch::sign(
        &stp_signer,
        &[leaf(&receipts_topic, Some(key), Some(value.as_bytes()))],
    )
    .unwrap();
    let posing = last.clone().replace_headers(Some(batch.headers(0)));
    assert!(matches!(
        Receipt::verify(&verifier, &pki.log.read(), &posing),
        Err(Refusal::NotTheProducer { .. })
    ));

    // The KPI engine reads the receipts: which agency applied each event of a case, and when
    // (`/trace/{id}`, `lienthong trace`), and the sync delay per agency.
    let feedback_topic = kafka
        .create_topic("receipted-feedback", 1, 1, &[])
        .await
        .unwrap();
    let engine_config = lienthong_kpi::KpiConfig {
        kafka: Some(kafka.config()),
        case_topic: topic.clone(),
        feedback_topic,
        schemas_dir: lienthong_contract::repo_schemas_dir(),
        units: UNITS.map(String::from).to_vec(),
        procedures: vec![lienthong_kpi::reference::ProcedureRef {
            code: "1.001193".into(),
            level: lienthong_kpi::reference::Level::FullOnline,
        }],
        export_interval_ms: 200,
        receipts: Some(lienthong_kpi::config::ReceiptsWatch {
            trusted_cas: vec![pki.ca_crt.clone()],
            topic: receipts_topic.clone(),
            certificates_topic: pki.topic.clone(),
        }),
        ..lienthong_kpi::KpiConfig::default()
    };
    let telemetry = lienthong_telemetry::Telemetry::new("kpi-test").unwrap();
    let listener = lienthong_telemetry::component::Listener::bind("kpi.listen", "127.0.0.1:0")
        .await
        .unwrap();
    let base = format!("http://{}", listener.addr());
    let engine = lienthong_kpi::start(engine_config, listener, &telemetry, &shutdown).unwrap();
    let case = case_id(&prefix, 7);
    let of_case: Vec<&lienthong_contract::events::CaseEvent> = events
        .iter()
        .filter(|e| e.envelope.aggregate_id == case)
        .collect();
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let trace: lienthong_kpi::trace::Trace = loop {
        let r = http
            .get(format!("{base}/trace/{case}"))
            .send()
            .await
            .unwrap();
        if r.status().is_success() {
            let t: lienthong_kpi::trace::Trace = r.json().await.unwrap();
            if t.events.len() == of_case.len() && t.events.iter().all(|e| !e.applied.is_empty()) {
                break t;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no full trace of {case}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (e, sent) in trace.events.iter().zip(&of_case) {
        assert_eq!(e.event_id, sent.envelope.event_id);
        assert_eq!(e.producer_unit, "26734");
        assert_eq!(e.applied.len(), 1, "{e:?}");
        assert_eq!(
            (
                e.applied[0].connector.as_str(),
                e.applied[0].agency.as_str()
            ),
            (name.as_str(), "26734")
        );
        assert!(e.applied[0].committed_ms >= e.published_ms, "{e:?}");
    }
    // The same trace by the case's correlation id; none for an id no event carries.
    let by_correlation: lienthong_kpi::trace::Trace = http
        .get(format!(
            "{base}/trace/{}",
            of_case[0].envelope.correlation_id
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_correlation.case_id, case);
    let unknown = http
        .get(format!("{base}/trace/no-such-case"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), reqwest::StatusCode::NOT_FOUND);
    // Every verified receipt counted, and one sync delay observed per receipt range.
    let ranges: usize = receipts.iter().map(|r| r.ranges.len()).sum();
    let metrics = telemetry.render();
    assert!(
        metrics.contains(&format!(
            "lienthong_receipts_total{{outcome=\"verified\"}} {}",
            receipts.len()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "lienthong_sync_delay_seconds_count{{agency=\"26734\"}} {ranges}"
        )),
        "{metrics}"
    );
    // The receipts chain: no offset left uncovered.
    assert!(
        !metrics.contains("lienthong_receipt_gaps_total{"),
        "{metrics}"
    );
    // `lienthong trace` prints the same.
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("lienthong"))
        .current_dir(lienthong_contract::repo_root())
        .args(["trace", case.as_str(), "--kpi", base.as_str()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("case {case}: {} event(s)", of_case.len())),
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches(&format!("applied by {name} (26734) +"))
            .count(),
        of_case.len(),
        "{stdout}"
    );
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("lienthong"))
        .current_dir(lienthong_contract::repo_root())
        .args(["trace", "no-such-case", "--kpi", base.as_str()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    engine.stop();
    engine.wait().await.unwrap();
    shutdown.cancel();
}

/// A document signed on the bus travels in its case event (`Signature.value`,
/// `signed_digest`, `certificate_id`) and a connector with `[signatures]` verifies it with the
/// record: a signature of another digest, a signature that does not verify, and one made after
/// its certificate was revoked are dead-lettered with the reason; a document signed before
/// that revocation, and one whose signature is metadata only, are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_document_signature_in_a_case_event_is_verified_with_the_record() {
    use lienthong_contract::events::{CaseEventKind, Document};
    let kafka = kafka();
    let store = sqlite_store().await;
    let topic = stamped_topic(&kafka, "signed-documents", 1).await;
    let dlq = kafka
        .create_topic("documents-dlq", 1, 1, &[])
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let pki = Pki::new(&kafka, &shutdown).await;
    let (_, ward) = pki.signer("26734").await;
    let (stp_certificate, stp) = pki.signer("STP").await;
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let before = now_ms() - 60_000;
    let prefix = format!("DS-{}", unique_suffix());
    // A one-event case whose second document (unsigned in the sample) `sign` changes.
    let case = |name: &str, sign: &dyn Fn(&mut Document)| {
        let mut e = case_stream(&format!("{prefix}-{name}"), 1).remove(0);
        e.envelope.aggregate_id = format!("{prefix}-{name}");
        let CaseEventKind::CaseSubmitted(s) = &mut e.event else {
            panic!("a case starts with CaseSubmitted")
        };
        sign(&mut s.documents[1]);
        e
    };
    let signed = |by: &AgencySigner, digest: &str, at: i64| {
        lienthong_signing::sign_document(by, "Nguyễn Văn An", digest, at).unwrap()
    };
    let good = case("good", &|d| {
        d.signature = Some(signed(&ward, &d.sha256, before))
    });
    let by_stp_before = case("stp-before", &|d| {
        d.signature = Some(signed(&stp, &d.sha256, before))
    });
    let other_document = case("other-document", &|d| {
        d.signature = Some(signed(&ward, &"ab".repeat(32), before))
    });
    let wrong_key = case("wrong-key", &|d| {
        let mut s = signed(&ward, &d.sha256, before);
        s.value = signed(&stp, &d.sha256, before).value;
        d.signature = Some(s);
    });
    // STP's key is reported lost: a document it signs from then on is refused.
    pki.log
        .revoke(stp_certificate.id(), "key lost", "admin")
        .await
        .unwrap();
    let after_revocation = case("stp-after", &|d| {
        d.signature = Some(signed(&stp, &d.sha256, now_ms() + 1))
    });
    let producer = producer(&kafka);
    let all = [
        &good,
        &by_stp_before,
        &other_document,
        &wrong_key,
        &after_revocation,
    ];
    for e in all {
        produce_signed(
            &producer,
            &topic,
            &encode_cases(std::slice::from_ref(e)),
            &ward,
            |_, _| {},
        )
        .await;
    }

    let name = format!("documents-{}", unique_suffix());
    let toml = config_toml(
        &name,
        &kafka,
        &[(&topic, "cases")],
        &store,
        &dlq,
        &pki.signatures_toml(),
    );
    run_until_caught_up(config(&toml), &kafka, &store, &topic).await;
    check_cases(
        &store.rows().await,
        &expected_cases(&[good.clone(), by_stp_before.clone()]),
    );
    let dead = dlq_headers(&kafka, &dlq, 3).await;
    assert_eq!(
        dead.len(),
        3,
        "exactly the three forged documents: {dead:?}"
    );
    // `lienthong verify` refuses the same three.
    let out = verify(&pki, &kafka, &topic);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let refused: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("REFUSED"))
        .collect();
    assert_eq!(refused.len(), 3, "{stdout}");
    assert!(
        refused.iter().all(|l| l.contains("document 1:")),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 record(s) verified (26734 2), 3 refused"),
        "{stdout}"
    );
    assert_dead_lettered(
        &dead,
        "signature",
        &[
            (
                &other_document.envelope.aggregate_id,
                "document 1: signed digest abab",
            ),
            (
                &wrong_key.envelope.aggregate_id,
                "document 1: signature: does not verify under certificate",
            ),
            (
                &after_revocation.envelope.aggregate_id,
                "document 1: certificate",
            ),
            (&after_revocation.envelope.aggregate_id, "revoked: key lost"),
        ],
    );
    shutdown.cancel();
}
