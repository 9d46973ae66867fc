//! Agencies' signing certificates on real Kafka (issue #29): the city CA made and an agency's
//! certificate issued with `lienthong cert`, put on the certificate log; another process reads
//! the log and verifies the agency's signature; after `lienthong cert revoke` it refuses
//! signatures made from then on. A certificate of another CA is refused by the command, and
//! ignored by every reader when written to the topic directly.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use lienthong_bus::KafkaConfig;
use lienthong_bus::state_log::StateLogConfig;
use lienthong_signing::{AgencyCertificate, AgencySigner, CertificateLog, CityCa, SigningError};
use lienthong_tests::{kafka, now_ms, unique_suffix};
use rdkafka::consumer::DefaultConsumerContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn an_issued_certificate_verifies_everywhere_until_it_is_revoked() {
    let kafka = kafka();
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("certificates-{}", unique_suffix());
    let config = dir.path().join("lienthong.toml");
    let ca_dir = dir.path().join("ca");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbootstrap = \"{}\"\n[signing]\ntrusted_cas = [\"{}\"]\ntopic = \"{topic}\"\n",
            kafka.bootstrap(),
            ca_dir.join("ca.crt").display()
        ),
    )
    .unwrap();
    let lienthong = |args: &[&str]| {
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("lienthong"))
            .current_dir(lienthong_contract::repo_root())
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let ca_arg = ca_dir.to_str().unwrap();
    let (code, out, err) = lienthong(&["cert", "ca-init", "--dir", ca_arg]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = lienthong(&["cert", "ca-init", "--dir", ca_arg]);
    assert_ne!(code, Some(0), "a CA is never overwritten: {out}{err}");
    let keys = dir.path().join("keys");
    let (code, out, err) = lienthong(&[
        "cert",
        "issue",
        "--agency",
        "CATP",
        "--ca-dir",
        ca_arg,
        "--out",
        keys.to_str().unwrap(),
        "--by",
        "admin",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let id = out.lines().last().unwrap().trim().to_string();

    // Another process reads the log and verifies the agency's signature.
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let city =
        AgencyCertificate::from_pem(&std::fs::read_to_string(ca_dir.join("ca.crt")).unwrap())
            .unwrap();
    let reader = CertificateLog::open(
        &StateLogConfig {
            kafka: KafkaConfig::new(kafka.bootstrap()),
            topic: topic.clone(),
            replication: 1,
            topic_config: Vec::new(),
            group: format!("cert-reader-{}", unique_suffix()),
        },
        vec![city],
        DefaultConsumerContext,
        shutdown.child_token(),
    )
    .await
    .unwrap();
    let signer = AgencySigner::load(&keys.join("CATP.key"), &keys.join("CATP.crt")).unwrap();
    assert_eq!(signer.certificate().id(), id);
    let message = b"hcm.case.events|HS-CERT-1|signed bytes";
    let signature = signer.sign(message).unwrap();
    let signed_at = now_ms();
    assert_eq!(
        reader
            .read()
            .verify(&id, message, &signature, signed_at)
            .unwrap()
            .agency(),
        "CATP"
    );

    // A certificate from another CA: the command refuses it; written to the topic directly,
    // every reader ignores it.
    let rogue = CityCa::generate("Ho Chi Minh City lienthong CA", 30).unwrap();
    let forged = rogue.issue("CATP", 7).unwrap();
    let forged_file = dir.path().join("forged.crt");
    std::fs::write(&forged_file, forged.certificate.pem()).unwrap();
    let (code, out, err) = lienthong(&[
        "cert",
        "add",
        forged_file.to_str().unwrap(),
        "--by",
        "mallory",
    ]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("issued by no trusted CA"), "{err}");
    let producer: FutureProducer = KafkaConfig::new(kafka.bootstrap())
        .producer()
        .create()
        .unwrap();
    let raw = serde_json::json!({"certificate": forged.certificate.pem(), "by": "mallory"});
    producer
        .send(
            FutureRecord::to(&topic)
                .key(forged.certificate.id())
                .payload(&raw.to_string()),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    reader.sync().await.unwrap();
    assert_eq!(reader.read().refused(), 1);
    let forger = AgencySigner::from_pem(&forged.key_pem, forged.certificate.clone()).unwrap();
    assert!(matches!(
        reader.read().verify(
            forged.certificate.id(),
            message,
            &forger.sign(message).unwrap(),
            now_ms()
        ),
        Err(SigningError::UnknownCertificate(_))
    ));

    // Revoked: a signature made from then on is refused; one made before still verifies.
    let (code, out, err) = lienthong(&[
        "cert", "revoke", &id, "--reason", "key lost", "--by", "admin",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    reader.sync().await.unwrap();
    let later = signer.sign(message).unwrap();
    assert!(matches!(
        reader.read().verify(&id, message, &later, now_ms()),
        Err(SigningError::Revoked { .. })
    ));
    reader
        .read()
        .verify(&id, message, &signature, signed_at)
        .unwrap();
    let (code, out, err) = lienthong(&["cert", "list"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&id) && l.contains("CATP") && l.contains("revoked")),
        "{out}"
    );
}

/// The audit trail on real Kafka: admin actions written by `lienthong cert` under `[audit]`,
/// hash-chained and signed by the writer's certificate; `lienthong audit verify` passes on the
/// trail, and finds a changed, a removed and a reordered entry in altered copies of it, and an
/// entry appended in the writer's name but signed by another agency.
#[tokio::test]
async fn the_audit_trail_verifies_and_finds_what_was_altered() {
    use sha2::Digest;
    let kafka = kafka();
    let dir = tempfile::tempdir().unwrap();
    let suffix = unique_suffix();
    let (certs_topic, audit_topic) = (format!("certificates-{suffix}"), format!("audit-{suffix}"));
    let ca_dir = dir.path().join("ca");
    let keys = dir.path().join("keys");
    let base = format!(
        "[kafka]\nbootstrap = \"{}\"\n[signing]\ntrusted_cas = [\"{}\"]\ntopic = \"{certs_topic}\"\n",
        kafka.bootstrap(),
        ca_dir.join("ca.crt").display()
    );
    std::fs::write(
        dir.path().join("master.key"),
        lienthong_privacy::MasterKey::generate().unwrap(),
    )
    .unwrap();
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, &base).unwrap();
    let audited = dir.path().join("audited.toml");
    std::fs::write(
        &audited,
        format!(
            "{base}[audit]\nwriter = \"SKHCN\"\nkey_file = \"{}\"\ncertificate_file = \"{}\"\ntopic = \"{audit_topic}\"\n[privacy]\nmaster_key_file = \"{}\"\nkeys_topic = \"audit-keys-{suffix}\"\ngrants_topic = \"audit-grants-{suffix}\"\naccess_topic = \"audit-access-{suffix}\"\n",
            keys.join("SKHCN.key").display(),
            keys.join("SKHCN.crt").display(),
            dir.path().join("master.key").display()
        ),
    )
    .unwrap();
    let lienthong = |config: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("lienthong"))
            .current_dir(lienthong_contract::repo_root())
            .arg("--config")
            .arg(config)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let ca_arg = ca_dir.to_str().unwrap();
    let keys_arg = keys.to_str().unwrap();
    let (code, out) = lienthong(&plain, &["cert", "ca-init", "--dir", ca_arg]);
    assert_eq!(code, Some(0), "{out}");
    let issue = |config: &std::path::Path, agency: &str| {
        let (code, out) = lienthong(
            config,
            &[
                "cert",
                "issue",
                "--agency",
                agency,
                "--ca-dir",
                ca_arg,
                "--out",
                keys_arg,
                "--by",
                "Nguyễn Admin",
            ],
        );
        assert_eq!(code, Some(0), "{out}");
        // The id: the line that is 32 hex digits (the logs follow stdout here).
        out.lines()
            .map(str::trim)
            .find(|l| l.len() == 32 && l.bytes().all(|b| b.is_ascii_hexdigit()))
            .unwrap_or_else(|| panic!("no certificate id in: {out}"))
            .to_string()
    };
    issue(&plain, "SKHCN");
    // Four audited actions: two certificates issued, one revoked, a grant.
    let catp = issue(&audited, "CATP");
    issue(&audited, "STP");
    let (code, out) = lienthong(
        &audited,
        &[
            "cert",
            "revoke",
            &catp,
            "--reason",
            "key lost",
            "--by",
            "Nguyễn Admin",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = lienthong(
        &audited,
        &[
            "pii",
            "grant",
            "--agency",
            "26734",
            "--classes",
            "name",
            "--purpose",
            "hồ sơ",
            "--legal-basis",
            "Luật 91/2025/QH15",
            "--until",
            "2099-12-31",
            "--by",
            "Trần Admin",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = lienthong(&plain, &["audit", "verify", "--topic", &audit_topic]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("SKHCN\t4\t3\t3"),
        "four entries, all signed: {out}"
    );

    // Altered copies of the trail, each on a topic of its own.
    let records = kafka
        .read_since(&audit_topic, &[(0, 0)], false)
        .await
        .unwrap();
    let entries: Vec<serde_json::Value> = records
        .iter()
        .map(|r| serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap())
        .collect();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[0]["action"], "certificate.issue");
    assert_eq!(entries[2]["action"], "certificate.revoke");
    assert_eq!(entries[3]["action"], "pii.grant");
    assert_eq!(entries[3]["actor"], "Trần Admin");
    let producer: FutureProducer = KafkaConfig::new(kafka.bootstrap())
        .producer()
        .create()
        .unwrap();
    let copy = |name: &str, entries: Vec<serde_json::Value>| {
        let name = format!("audit-{name}");
        let producer = producer.clone();
        let kafka = &kafka;
        async move {
            let topic = kafka
                .create_topic(&name, 1, 1, &[("cleanup.policy", "compact")])
                .await
                .unwrap();
            for e in entries {
                producer
                    .send(
                        FutureRecord::to(&topic)
                            .key(&format!(
                                "{}/{:020}",
                                e["writer"].as_str().unwrap(),
                                e["seq"].as_u64().unwrap()
                            ))
                            .payload(&e.to_string()),
                        Duration::from_secs(10),
                    )
                    .await
                    .unwrap();
            }
            topic
        }
    };
    let mut changed = entries.clone();
    changed[1]["detail"] = "agency STP, valid until 2099-01-01".into();
    let removed = vec![entries[0].clone(), entries[2].clone()];
    let reordered = vec![entries[0].clone(), entries[2].clone(), entries[1].clone()];
    // Appended in SKHCN's name with a correct chain, signed by another agency's key.
    let signer = AgencySigner::load(&keys.join("STP.key"), &keys.join("STP.crt")).unwrap();
    let mut forged = serde_json::json!({
        "writer": "SKHCN", "seq": 4, "at_ms": now_ms(), "actor": "mallory",
        "action": "pii.grant", "subject": "g-forged", "detail": "", "prev": entries[3]["hash"],
    });
    let hash = hex::encode(sha2::Sha256::digest(serde_json::to_vec(&forged).unwrap()));
    forged["hash"] = hash.clone().into();
    forged["signature"] = serde_json::json!([
        signer.certificate().id(),
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            signer.sign(hash.as_bytes()).unwrap()
        )
    ]);
    let mut appended = entries.clone();
    appended.push(forged);
    for (name, altered, expected) in [
        ("changed", changed, "changed"),
        ("removed", removed, "entry 2 where 1 was due"),
        ("reordered", reordered, "entry 2 where 1 was due"),
        ("appended", appended, "signed by STP, not by the writer"),
    ] {
        let topic = copy(name, altered).await;
        let (code, out) = lienthong(&plain, &["audit", "verify", "--topic", &topic]);
        assert_eq!(code, Some(1), "{name}: {out}");
        assert!(out.contains(expected), "{name}: {out}");
    }
}

/// `lienthong cert sign-document`: an official signs a file offline with the agency's key; the
/// printed `Document` carries the file's SHA-256, size and media type, and a signature that
/// verifies against the certificate log (as a connector with [signatures] checks it), names
/// the agency, and fails for another document. A key that is not the certificate's, or a file
/// that is not there, is a usage error (exit 2).
#[tokio::test]
async fn a_document_signed_with_the_cli_verifies_against_the_log() {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().unwrap();
    let ca = CityCa::generate("test CA", 30).unwrap();
    let stp = ca.issue("STP", 30).unwrap();
    let other = ca.issue("SXD", 30).unwrap();
    for (name, text) in [
        ("STP.key", &stp.key_pem),
        ("STP.crt", &stp.certificate.pem().to_string()),
        ("SXD.key", &other.key_pem),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let document = dir.path().join("giay-khai-sinh.pdf");
    let content = b"%PDF-1.7 a birth certificate".to_vec();
    std::fs::write(&document, &content).unwrap();
    let run = |args: &[&std::path::Path], extra: &[&str]| {
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("lienthong"))
            .env_remove("RUST_LOG")
            .args(["cert", "sign-document"])
            .arg(args[0])
            .arg("--key")
            .arg(args[1])
            .arg("--certificate")
            .arg(args[2])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (key, crt) = (dir.path().join("STP.key"), dir.path().join("STP.crt"));
    let (code, stdout, stderr) = run(
        &[&document, &key, &crt],
        &["--signer-name", "Nguyễn Văn An"],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let signed: lienthong_contract::events::Document = serde_json::from_str(&stdout).unwrap();
    assert_eq!(signed.sha256, hex::encode(sha2::Sha256::digest(&content)));
    assert_eq!(signed.size_bytes, content.len() as i64);
    assert_eq!(signed.media_type, "application/pdf");
    let signature = signed.signature.as_ref().unwrap();
    assert_eq!(signature.signer_name, "Nguyễn Văn An");
    assert_eq!(signature.signer_unit.as_deref(), Some("STP"));
    assert!((signature.signed_at - now_ms()).abs() < 60_000);

    let log = CertificateLog::<DefaultConsumerContext>::in_memory(vec![ca.certificate().clone()]);
    log.publish(&stp.certificate, "test").await.unwrap();
    assert_eq!(
        lienthong_signing::verify_document(&log.read(), &signed),
        Ok(Some("STP".to_string()))
    );
    // The same signature on another document's fingerprint does not verify.
    let mut moved = signed.clone();
    moved.sha256 = hex::encode(sha2::Sha256::digest(b"another document"));
    assert!(lienthong_signing::verify_document(&log.read(), &moved).is_err());
    let mut forged = signed.clone();
    forged.sha256 = moved.sha256.clone();
    forged.signature.as_mut().unwrap().signed_digest = Some(moved.sha256.clone());
    assert!(lienthong_signing::verify_document(&log.read(), &forged).is_err());

    // Another agency's key with STP's certificate, and a missing file: usage errors.
    let (code, _, stderr) = run(
        &[&document, &dir.path().join("SXD.key"), &crt],
        &["--signer-name", "X"],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("SXD.key"), "{stderr}");
    let (code, _, stderr) = run(
        &[&dir.path().join("no-such.pdf"), &key, &crt],
        &["--signer-name", "X"],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no-such.pdf"), "{stderr}");
}
