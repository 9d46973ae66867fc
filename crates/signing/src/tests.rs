#![allow(clippy::unwrap_used)]

use std::process::Command;

use super::*;

type Log = CertificateLog<rdkafka::consumer::DefaultConsumerContext>;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn an_agency_signs_and_a_changed_byte_or_another_key_does_not_verify() {
    let ca = CityCa::generate("HCMC City CA (test)", 30).unwrap();
    let issued = ca.issue("CATP", 7).unwrap();
    assert_eq!(issued.certificate.agency(), "CATP");
    assert_eq!(issued.certificate.key_kind(), KeyKind::EcdsaP256);
    issued
        .certificate
        .check_issued_by(ca.certificate())
        .unwrap();
    let signer = AgencySigner::from_pem(&issued.key_pem, issued.certificate.clone()).unwrap();
    let message = b"hcm.case.events|HS-26734-2025-000123|...";
    let signature = signer.sign(message).unwrap();
    let now = now_ms();
    issued.certificate.verify(message, &signature, now).unwrap();
    let mut changed = message.to_vec();
    changed[3] ^= 1;
    assert!(matches!(
        issued.certificate.verify(&changed, &signature, now),
        Err(SigningError::BadSignature(_))
    ));
    let mut bad = signature.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(issued.certificate.verify(message, &bad, now).is_err());
    assert!(issued.certificate.verify(message, b"", now).is_err());
    // Outside the certificate's validity.
    assert!(
        issued
            .certificate
            .verify(message, &signature, now + 8 * 86_400_000)
            .is_err()
    );
    // Another agency's key is not this certificate's.
    let other = ca.issue("STP", 7).unwrap();
    assert!(AgencySigner::from_pem(&other.key_pem, issued.certificate.clone()).is_err());
    assert!(other.certificate.verify(message, &signature, now).is_err());
    // Not an agency code; not a certificate.
    assert!(ca.issue("../etc", 7).is_err());
    assert!(
        AgencyCertificate::from_pem(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
        .is_err()
    );
    assert!(AgencyCertificate::from_pem("").is_err());
}

#[tokio::test]
async fn the_log_takes_only_what_a_trusted_ca_issued_and_a_revocation_refuses_later_signatures() {
    let ca = CityCa::generate("HCMC City CA (test)", 30).unwrap();
    let rogue = CityCa::generate("HCMC City CA (test)", 30).unwrap();
    let log = Log::in_memory(vec![ca.certificate().clone()]);
    let issued = ca.issue("CATP", 7).unwrap();
    let forged = rogue.issue("CATP", 7).unwrap();
    log.publish(&issued.certificate, "admin").await.unwrap();
    assert!(matches!(
        log.publish(&forged.certificate, "admin").await,
        Err(SigningError::Certificate(_))
    ));
    let signer = AgencySigner::from_pem(&issued.key_pem, issued.certificate.clone()).unwrap();
    let forger = AgencySigner::from_pem(&forged.key_pem, forged.certificate.clone()).unwrap();
    let message = b"an event";
    let before = now_ms();
    let signature = signer.sign(message).unwrap();
    assert_eq!(
        log.read()
            .verify(issued.certificate.id(), message, &signature, before)
            .unwrap()
            .agency(),
        "CATP"
    );
    // The rogue CA's certificate is unknown, whatever it signs.
    assert!(matches!(
        log.read().verify(
            forged.certificate.id(),
            message,
            &forger.sign(message).unwrap(),
            before
        ),
        Err(SigningError::UnknownCertificate(_))
    ));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let at = log
        .revoke(issued.certificate.id(), "key lost", "admin")
        .await
        .unwrap();
    // Made before the revocation: still verifies; at or after it: refused.
    log.read()
        .verify(issued.certificate.id(), message, &signature, before)
        .unwrap();
    assert!(matches!(
        log.read()
            .verify(issued.certificate.id(), message, &signature, at),
        Err(SigningError::Revoked { .. })
    ));
    // Publishing the certificate again does not take the revocation back.
    log.publish(&issued.certificate, "admin").await.unwrap();
    assert!(
        log.read()
            .get(issued.certificate.id())
            .unwrap()
            .revoked
            .is_some()
    );
}

/// A national CA issues RSA certificates: an agency's RSA certificate under an RSA CA that the
/// log trusts verifies an RSA signature made by `openssl`, and a changed byte does not.
#[tokio::test]
async fn rsa_certificates_from_a_national_ca_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(d)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "30",
        "-subj",
        "/CN=National CA (test)/O=test",
        "-sha256",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "agency.key",
        "-out",
        "agency.csr",
        "-subj",
        "/CN=SGTVT/O=test",
        "-sha256",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "agency.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "agency.crt",
        "-days",
        "7",
        "-sha256",
    ]);
    std::fs::write(d.join("message"), b"a document digest").unwrap();
    openssl(&[
        "dgst",
        "-sha256",
        "-sign",
        "agency.key",
        "-out",
        "message.sig",
        "message",
    ]);
    let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap();
    let national = AgencyCertificate::from_pem(&read("ca.crt")).unwrap();
    let agency = AgencyCertificate::from_pem(&read("agency.crt")).unwrap();
    assert_eq!(agency.key_kind(), KeyKind::Rsa);
    assert_eq!(agency.agency(), "SGTVT");
    let log = Log::in_memory(vec![national]);
    log.publish(&agency, "admin").await.unwrap();
    let signature = std::fs::read(d.join("message.sig")).unwrap();
    let now = now_ms();
    log.read()
        .verify(agency.id(), b"a document digest", &signature, now)
        .unwrap();
    assert!(matches!(
        log.read()
            .verify(agency.id(), b"a document digesT", &signature, now),
        Err(SigningError::BadSignature(_))
    ));
    // Not trusted without its CA.
    let city = CityCa::generate("HCMC City CA (test)", 30).unwrap();
    let strict = Log::in_memory(vec![city.certificate().clone()]);
    assert!(strict.publish(&agency, "admin").await.is_err());
}

#[test]
fn a_ca_is_saved_with_a_private_key_and_loaded_back_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CityCa::generate("HCMC City CA (test)", 30).unwrap();
    let (key, _) = ca.save(dir.path()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let loaded = CityCa::load(dir.path()).unwrap();
    assert_eq!(loaded.certificate().id(), ca.certificate().id());
    let issued = loaded.issue("26734", 7).unwrap();
    issued
        .certificate
        .check_issued_by(ca.certificate())
        .unwrap();
    assert!(ca.save(dir.path()).is_err(), "a CA is never overwritten");
    // Another CA's key beside this certificate is refused.
    let other = tempfile::tempdir().unwrap();
    CityCa::generate("other", 30)
        .unwrap()
        .save(other.path())
        .unwrap();
    std::fs::copy(other.path().join(CA_KEY_FILE), dir.path().join("other.key")).unwrap();
    std::fs::rename(dir.path().join("other.key"), dir.path().join(CA_KEY_FILE)).unwrap();
    assert!(CityCa::load(dir.path()).is_err());
}

/// A batch signed by CATP: every record verifies (the signature checked once), and a flipped
/// byte, another record's proof, a revoked or unknown certificate, or another producer unit is
/// refused with its reason.
#[tokio::test]
async fn a_signed_batch_verifies_record_by_record_and_refuses_each_kind_of_forgery() {
    let ca = CityCa::generate("HCMC City CA (test)", 30).unwrap();
    let log = Log::in_memory(vec![ca.certificate().clone()]);
    let issued = ca.issue("CATP", 7).unwrap();
    log.publish(&issued.certificate, "admin").await.unwrap();
    let signer = AgencySigner::from_pem(&issued.key_pem, issued.certificate.clone()).unwrap();
    let records: Vec<(String, Option<Vec<u8>>)> = (0..13)
        .map(|i| {
            let value = (i != 7).then(|| format!("value {i}").into_bytes());
            (format!("key-{i}"), value)
        })
        .collect();
    let leaves: Vec<Hash> = records
        .iter()
        .map(|(k, v)| leaf("hcm.case.events", Some(k.as_bytes()), v.as_deref()))
        .collect();
    let batch = SignedBatch::sign(&signer, &leaves).unwrap();
    assert_eq!(batch.len(), 13);
    let now = now_ms();
    let verifier = RecordVerifier::new();
    let headers: Vec<rdkafka::message::OwnedHeaders> = (0..13).map(|i| batch.headers(i)).collect();
    let check = |i: usize, topic: &str, value: Option<&[u8]>, h: usize, at: i64| {
        verifier
            .verify(
                &log.read(),
                topic,
                Some(records[i].0.as_bytes()),
                value,
                signature_header(Some(&headers[h])),
                at,
            )
            .map(|c| c.agency().to_string())
    };
    for (i, (_, v)) in records.iter().enumerate() {
        assert_eq!(
            check(i, "hcm.case.events", v.as_deref(), i, now).unwrap(),
            "CATP"
        );
    }
    // A flipped byte, another topic, another record's proof.
    let mut flipped = records[2].1.clone().unwrap();
    flipped[0] ^= 1;
    assert!(matches!(
        check(2, "hcm.case.events", Some(&flipped), 2, now),
        Err(Refusal::Altered(_))
    ));
    assert!(matches!(
        check(2, "hcm.feedback.events", records[2].1.as_deref(), 2, now),
        Err(Refusal::Altered(_))
    ));
    assert!(matches!(
        check(2, "hcm.case.events", records[2].1.as_deref(), 3, now),
        Err(Refusal::Altered(_))
    ));
    // A tombstone is not an empty value.
    assert!(check(7, "hcm.case.events", Some(b""), 7, now).is_err());
    // Unsigned; a header cut short or of another version; a signature of another root under
    // the same certificate.
    assert!(matches!(
        verifier.verify(&log.read(), "t", None, None, None, now),
        Err(Refusal::Unsigned)
    ));
    let good = batch.header_value(0);
    for bad in [&good[..20], &good[..good.len() - 5], &[2u8][..], &[][..]] {
        assert!(matches!(
            verifier.verify(
                &log.read(),
                "hcm.case.events",
                Some(records[0].0.as_bytes()),
                records[0].1.as_deref(),
                Some(bad),
                now
            ),
            Err(Refusal::Malformed(_))
        ));
    }
    let lone = leaf("hcm.case.events", Some(b"x"), Some(b"y"));
    let other = SignedBatch::sign(&signer, &[lone]).unwrap().header_value(0);
    // The other batch's signature (bytes 26..26+L) in record 0's header.
    let length = usize::from(other[25]);
    let mut mixed = good[..26].to_vec();
    mixed[25] = other[25];
    mixed.extend_from_slice(&other[26..26 + length]);
    mixed.extend_from_slice(&good[26 + usize::from(good[25])..]);
    let fresh = RecordVerifier::new();
    assert!(matches!(
        fresh.verify(
            &log.read(),
            "hcm.case.events",
            Some(records[0].0.as_bytes()),
            records[0].1.as_deref(),
            Some(&mixed),
            now
        ),
        Err(Refusal::Altered(_))
    ));
    // The producer unit must be the signer's.
    let catp = &issued.certificate;
    check_producer(catp, "CATP").unwrap();
    assert_eq!(
        check_producer(catp, "STP"),
        Err(Refusal::NotTheProducer {
            signer: "CATP".into(),
            producer: "STP".into()
        })
    );
    // Unknown certificate: a rogue CA's, never on the log.
    let rogue = CityCa::generate("HCMC City CA (test)", 30).unwrap();
    let forged = rogue.issue("CATP", 7).unwrap();
    let forger = AgencySigner::from_pem(&forged.key_pem, forged.certificate.clone()).unwrap();
    let forged_batch = SignedBatch::sign(&forger, &leaves).unwrap();
    let forged_header = forged_batch.header_value(0);
    assert!(matches!(
        verifier.verify(
            &log.read(),
            "hcm.case.events",
            Some(records[0].0.as_bytes()),
            records[0].1.as_deref(),
            Some(&forged_header),
            now
        ),
        Err(Refusal::UnknownCertificate(_))
    ));
    // Revoked: refused from the revocation on, even with the root cached; before, still good.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let at = log
        .revoke(issued.certificate.id(), "key lost", "admin")
        .await
        .unwrap();
    assert!(matches!(
        check(0, "hcm.case.events", records[0].1.as_deref(), 0, at),
        Err(Refusal::Revoked { .. })
    ));
    assert_eq!(
        check(0, "hcm.case.events", records[0].1.as_deref(), 0, now).unwrap(),
        "CATP"
    );
}

/// A directory of agencies' keys loads by agency; a certificate that is not its file's
/// agency's, or a key without its certificate, is refused naming the file.
#[test]
fn a_keys_directory_loads_by_agency_and_refuses_a_mismatch() {
    let ca = CityCa::generate("HCMC City CA (test)", 30).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, issued: &Issued| {
        std::fs::write(dir.path().join(format!("{name}.key")), &issued.key_pem).unwrap();
        std::fs::write(
            dir.path().join(format!("{name}.crt")),
            issued.certificate.pem(),
        )
        .unwrap();
    };
    write("26734", &ca.issue("26734", 7).unwrap());
    write("STP", &ca.issue("STP", 7).unwrap());
    let signers = load_signers(dir.path()).unwrap();
    assert_eq!(signers.len(), 2);
    assert_eq!(signers["STP"].certificate().agency(), "STP");
    write("CATP", &ca.issue("SNV", 7).unwrap());
    let e = load_signers(dir.path()).unwrap_err().to_string();
    assert!(e.contains("not CATP's"), "{e}");
    std::fs::remove_file(dir.path().join("CATP.crt")).unwrap();
    assert!(load_signers(dir.path()).is_err());
}
