//! Signed records against real Kafka (issue #29): a connector with `[signatures]` applies what
//! the producer units signed and dead-letters, each with its reason, a record with a flipped
//! byte, a record signed by another agency than its producer unit, an unsigned record and a
//! record signed after its certificate was revoked.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use lienthong_bus::state_log::StateLogConfig;
use lienthong_signing::{AgencySigner, CertificateLog, CityCa, SignedBatch, leaf};
use lienthong_tests::{kafka, unique_suffix};
use rdkafka::consumer::DefaultConsumerContext;
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
    let topic = kafka
        .create_topic(
            "signed-cases",
            2,
            1,
            &[("message.timestamp.type", "LogAppendTime")],
        )
        .await
        .unwrap();
    let dlq = kafka.create_topic("signed-dlq", 1, 1, &[]).await.unwrap();
    let certificates_topic = format!("signed-certs-{}", unique_suffix());
    let dir = tempfile::tempdir().unwrap();
    let ca = CityCa::generate("HCMC City CA (test)", 30).unwrap();
    let (_, ca_crt) = ca.save(dir.path()).unwrap();
    let shutdown = CancellationToken::new();
    let log = CertificateLog::open(
        &StateLogConfig {
            kafka: kafka.config(),
            topic: certificates_topic.clone(),
            replication: 1,
            topic_config: Vec::new(),
            group: format!("signed-test-{}", unique_suffix()),
        },
        vec![ca.certificate().clone()],
        DefaultConsumerContext,
        shutdown.child_token(),
    )
    .await
    .unwrap();
    let signer = |agency: &str| {
        let issued = ca.issue(agency, 7).unwrap();
        let signer = AgencySigner::from_pem(&issued.key_pem, issued.certificate.clone()).unwrap();
        (issued.certificate, signer)
    };
    let (ward_certificate, ward) = signer("26734");
    let (stp_certificate, stp) = signer("STP");
    log.publish(&ward_certificate, "admin").await.unwrap();
    log.publish(&stp_certificate, "admin").await.unwrap();

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
    log.revoke(ward_certificate.id(), "key lost", "admin")
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
        &format!(
            "[signatures]\ntrusted_cas = [\"{}\"]\ntopic = \"{certificates_topic}\"\n",
            ca_crt.display()
        ),
    );
    run_until_caught_up(config(&toml), &kafka, &store, &topic).await;

    // What the ward signed before the revocation is applied, exactly.
    check_cases(&store.rows().await, &expected_cases(&events));
    let dead = dlq_headers(&kafka, &dlq, 4).await;
    assert_eq!(dead.len(), 4, "exactly the four forgeries: {dead:?}");
    for (records, reason) in [
        (&flipped, "the signature does not verify"),
        (&posing, "signed by STP, but its producer unit is 26734"),
        (&unsigned, "the record is not signed"),
        (&late, "was revoked: key lost"),
    ] {
        let key = records[0].0.as_bytes();
        let (headers, _) = dead
            .iter()
            .find(|(_, k)| k.as_deref() == Some(key))
            .unwrap_or_else(|| panic!("{reason}: not dead-lettered"));
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(get("lienthong.error.class"), "signature", "{reason}");
        assert!(
            get("lienthong.error.message").contains(reason),
            "{reason}: {}",
            get("lienthong.error.message")
        );
    }

    // `lienthong verify` finds the same four in the topic, and the rest signed by the ward.
    let cli_config = dir.path().join("lienthong.toml");
    std::fs::write(
        &cli_config,
        format!(
            "[kafka]\nbootstrap = \"{}\"\n[signing]\ntrusted_cas = [\"{}\"]\ntopic = \"{certificates_topic}\"\n",
            kafka.bootstrap(),
            ca_crt.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("lienthong"))
        .current_dir(lienthong_contract::repo_root())
        .arg("--config")
        .arg(&cli_config)
        .args(["verify", topic.as_str()])
        .output()
        .unwrap();
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
    let stamped = [("message.timestamp.type", "LogAppendTime")];
    let good_topic = kafka
        .create_topic("signed-python", 1, 1, &stamped)
        .await
        .unwrap();
    let bad_topic = kafka
        .create_topic("signed-python-bad", 1, 1, &stamped)
        .await
        .unwrap();
    let certificates_topic = format!("signed-python-certs-{}", unique_suffix());
    let dir = tempfile::tempdir().unwrap();
    let ca = CityCa::generate("HCMC City CA (test)", 30).unwrap();
    let (_, ca_crt) = ca.save(dir.path()).unwrap();
    let shutdown = CancellationToken::new();
    let log = CertificateLog::open(
        &StateLogConfig {
            kafka: kafka.config(),
            topic: certificates_topic.clone(),
            replication: 1,
            topic_config: Vec::new(),
            group: format!("signed-test-{}", unique_suffix()),
        },
        vec![ca.certificate().clone()],
        DefaultConsumerContext,
        shutdown.child_token(),
    )
    .await
    .unwrap();
    let issued = ca.issue("26734", 7).unwrap();
    log.publish(&issued.certificate, "admin").await.unwrap();
    let ward = AgencySigner::from_pem(&issued.key_pem, issued.certificate.clone()).unwrap();
    let records = encode_cases(&case_stream(&format!("HS-{}", unique_suffix()), 5));
    let producer = producer(&kafka);
    produce_signed(&producer, &good_topic, &records, &ward, |_, _| {}).await;
    produce_signed(&producer, &bad_topic, &records[..1], &ward, |_, v| {
        v[8] ^= 0x01;
    })
    .await;
    let schema = dir.path().join("case.avsc");
    std::fs::write(&schema, case_schema()).unwrap();
    let verify = |topic: &str, count: usize| {
        std::process::Command::new(lienthong_tests::python())
            .arg(lienthong_contract::repo_root().join("tests/interop/verify_signed.py"))
            .env("BOOTSTRAP", kafka.bootstrap())
            .env("TOPIC", topic)
            .env("COUNT", count.to_string())
            .env("CERTIFICATES", &certificates_topic)
            .env("CA", &ca_crt)
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
