//! `lienthong cert`: the city CA, and the agencies' signing certificates on the certificate log
//! (`[signing]`, docs/signatures.md); the audit trail the admins' actions are written to
//! (`[audit]`) and `lienthong audit verify`.

use lienthong_bus::state_log::StateLogConfig;
use lienthong_signing::{
    AgencyCertificate, AgencySigner, AuditTrail, CertificateLog, CityCa, write_private,
};
use rdkafka::consumer::DefaultConsumerContext;
use tokio_util::sync::CancellationToken;

use crate::config::{AuditConfig, SigningConfig};
use lienthong_telemetry::say;

use crate::{CertCommand, CliError, Config};

type Log = CertificateLog<DefaultConsumerContext>;

fn signing(config: &Config) -> Result<&SigningConfig, CliError> {
    config.signing.as_ref().ok_or_else(|| {
        CliError::Usage("cert: this needs a [signing] section (see docs/signatures.md)".into())
    })
}

fn failed(e: lienthong_signing::SigningError) -> CliError {
    if e.is_transient() {
        CliError::Failed(e.to_string())
    } else {
        CliError::Usage(e.to_string())
    }
}

/// The trusted CAs' certificates of `[signing] trusted_cas`.
pub fn trusted_cas(signing: &SigningConfig) -> Result<Vec<AgencyCertificate>, CliError> {
    lienthong_signing::load_trusted_cas(&signing.trusted_cas)
        .map_err(|e| CliError::Usage(format!("[signing] {e}")))
}

pub(crate) async fn open(config: &Config, shutdown: &CancellationToken) -> Result<Log, CliError> {
    let signing = signing(config)?;
    let log = StateLogConfig {
        kafka: signing
            .kafka
            .clone()
            .unwrap_or_else(|| config.kafka.clone()),
        topic: signing.topic.clone(),
        replication: signing.replication,
        topic_config: Vec::new(),
        group: format!("lienthong-cert-{}", std::process::id()),
    };
    CertificateLog::open(
        &log,
        trusted_cas(signing)?,
        DefaultConsumerContext,
        shutdown.child_token(),
    )
    .await
    .map_err(failed)
}

fn trail_config(config: &Config, topic: &str) -> StateLogConfig {
    StateLogConfig {
        kafka: config
            .signing
            .as_ref()
            .and_then(|s| s.kafka.clone())
            .unwrap_or_else(|| config.kafka.clone()),
        topic: topic.to_string(),
        replication: config.signing.as_ref().map_or(1, |s| s.replication),
        topic_config: Vec::new(),
        group: format!("lienthong-audit-{}", std::process::id()),
    }
}

/// The audit trail, written as `[audit] writer`, or as `writer/component` for a component of
/// `lienthong up` (the registry), so that each writer has a chain of its own and two
/// processes never write the same chain.
pub async fn open_trail(
    config: &Config,
    audit: &AuditConfig,
    component: Option<&str>,
    shutdown: CancellationToken,
) -> Result<AuditTrail<DefaultConsumerContext>, CliError> {
    let signer = AgencySigner::load(&audit.key_file, &audit.certificate_file).map_err(failed)?;
    let writer = match component {
        Some(c) => format!("{}/{c}", audit.writer),
        None => audit.writer.clone(),
    };
    AuditTrail::open(
        &trail_config(config, &audit.topic),
        &writer,
        Some(signer),
        audit.sign_every,
        DefaultConsumerContext,
        shutdown,
    )
    .await
    .map_err(failed)
}

/// Write what `actor` did to the audit trail, if this process has one (`[audit]`). Called
/// after the action succeeded; a trail that cannot be written is an error the admin sees.
pub async fn audit(
    config: &Config,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> Result<(), CliError> {
    let Some(audit) = &config.audit else {
        return Ok(());
    };
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let trail = open_trail(config, audit, None, shutdown.child_token()).await?;
    let writer = &audit.writer;
    let seq = trail
        .append(actor, action, subject, detail)
        .await
        .map_err(|e| {
            CliError::Failed(format!("the audit trail: {e} (the action itself is done)"))
        })?;
    tracing::info!(writer, seq, action, "audit entry written");
    Ok(())
}

/// `lienthong audit verify`.
pub async fn audit_verify(config: &Config, topic: Option<String>) -> Result<(), CliError> {
    let topic = topic
        .or_else(|| config.audit.as_ref().map(|a| a.topic.clone()))
        .unwrap_or_else(|| lienthong_signing::AUDIT_TOPIC.to_string());
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let certificates = open(config, &shutdown).await?;
    let trail = AuditTrail::<DefaultConsumerContext>::open(
        &trail_config(config, &topic),
        "",
        None,
        1,
        DefaultConsumerContext,
        shutdown.child_token(),
    )
    .await
    .map_err(failed)?;
    let (chains, problems) = trail.read().report(&certificates.read());
    say!("writer\tentries\tlast\tsigned through");
    for c in &chains {
        let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        say!(
            "{}\t{}\t{}\t{}",
            c.writer,
            c.entries,
            show(c.last),
            show(c.signed_through)
        );
    }
    for p in &problems {
        say!(
            "PROBLEM at offset {}: {} entry {}: {}",
            p.offset,
            p.writer,
            p.seq.map_or("?".to_string(), |s| s.to_string()),
            p.what
        );
    }
    if problems.is_empty() {
        say!(
            "the audit trail {topic} verifies: {} writer(s)",
            chains.len()
        );
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "the audit trail {topic}: {} problem(s)",
            problems.len()
        )))
    }
}

/// `lienthong verify`.
pub async fn verify_topic(
    config: &Config,
    catalog: &lienthong_contract::Catalog,
    args: crate::VerifyArgs,
    shutdown: CancellationToken,
) -> Result<(), CliError> {
    use rdkafka::Message;
    let certificates = open(config, &shutdown).await?;
    let decoder = crate::tail::Decoder::new(catalog, args.registry.as_deref())?;
    let mut range = crate::tail::Range::open(
        config,
        &args.topic,
        args.from.as_deref().unwrap_or("beginning"),
        true,
    )
    .await?;
    let verifier = lienthong_signing::RecordVerifier::new();
    let mut signers: std::collections::BTreeMap<String, u64> = Default::default();
    let mut refused = 0u64;
    while let Some(m) = range.next(&shutdown).await? {
        let verified = verifier
            .verify_message(&certificates.read(), &m)
            .map(|c| c.agency().to_string());
        let checked = match (verified, m.payload()) {
            (Err(refusal), _) => Err(refusal.to_string()),
            (Ok(signer), None) => Ok(signer),
            (Ok(signer), Some(bytes)) => match decoder.decode(bytes).await? {
                Err(e) => Err(format!("signed by {signer}, but not decodable: {e}")),
                Ok((_, value)) => {
                    let unit = value["envelope"]["producer_unit"].as_str().unwrap_or("");
                    if unit == signer {
                        documents(&decoder, &certificates, bytes)
                            .await?
                            .map(|()| signer)
                    } else {
                        Err(lienthong_signing::Refusal::NotTheProducer {
                            signer,
                            producer: unit.to_string(),
                        }
                        .to_string())
                    }
                }
            },
        };
        match checked {
            Ok(signer) => *signers.entry(signer).or_default() += 1,
            Err(why) => {
                refused += 1;
                say!(
                    "REFUSED {}[{}]@{} key {}: {why}",
                    m.topic(),
                    m.partition(),
                    m.offset(),
                    m.key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_else(|| "(none)".into())
                );
            }
        }
    }
    let verified: u64 = signers.values().sum();
    say!(
        "{}: {verified} record(s) verified ({}), {refused} refused",
        args.topic,
        signers
            .iter()
            .map(|(agency, n)| format!("{agency} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if refused > 0 {
        return Err(CliError::Failed(format!(
            "{refused} record(s) of {} do not verify",
            args.topic
        )));
    }
    Ok(())
}

/// The signed documents of a case event verify (`Ok(Err)` names the first that does not);
/// records of other kinds have none.
async fn documents(
    decoder: &crate::tail::Decoder,
    certificates: &Log,
    bytes: &[u8],
) -> Result<Result<(), String>, CliError> {
    let Ok(codec) = decoder.codec_for(bytes).await? else {
        return Ok(Ok(()));
    };
    let is_case_event = lienthong_contract::codec::split_frame(bytes)
        .ok()
        .and_then(|(id, _)| codec.schema(id).ok())
        .is_some_and(
            |s| matches!(s.schema(), apache_avro::Schema::Record(r) if r.name.name == "CaseEvent"),
        );
    if !is_case_event {
        return Ok(Ok(()));
    }
    Ok(
        match codec.decode::<lienthong_contract::events::CaseEvent<&str>>(bytes) {
            Ok((_, event)) => {
                lienthong_signing::verify_case_documents(&certificates.read(), &event)
                    .map_err(|r| r.to_string())
            }
            Err(e) => Err(format!("not a case event: {e}")),
        },
    )
}

/// `cert sign-document`: print the signed `Document` as JSON. Offline: it needs neither
/// Kafka nor the catalog (an official's own machine).
pub fn sign_document(command: &CertCommand) -> Result<(), CliError> {
    let CertCommand::SignDocument {
        file,
        key,
        certificate,
        signer_name,
        media_type,
    } = command
    else {
        return Err(CliError::Usage("not a sign-document command".into()));
    };
    let document = sign_file(file, key, certificate, signer_name, media_type.as_deref())?;
    let json = serde_json::to_string_pretty(&document)
        .map_err(|e| CliError::Failed(format!("the document as JSON: {e}")))?;
    say!("{json}");
    Ok(())
}

/// The `Document` of `file`, signed now as `signer_name` with the agency's key. Every mistake
/// (a file that cannot be read, a key that is not the certificate's) is a usage error.
fn sign_file(
    file: &std::path::Path,
    key: &std::path::Path,
    certificate: &std::path::Path,
    signer_name: &str,
    media_type: Option<&str>,
) -> Result<lienthong_contract::events::Document, CliError> {
    use sha2::Digest as _;
    if signer_name.trim().is_empty() {
        return Err(CliError::Usage("--signer-name is empty".into()));
    }
    let content =
        std::fs::read(file).map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
    let signer = AgencySigner::load(key, certificate).map_err(|e| {
        CliError::Usage(format!(
            "{} with {}: {e}",
            key.display(),
            certificate.display()
        ))
    })?;
    let sha256 = hex::encode(sha2::Sha256::digest(&content));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let signature = lienthong_signing::sign_document(&signer, signer_name, &sha256, now_ms)
        .map_err(|e| CliError::Failed(format!("signing: {e}")))?;
    let media_type = media_type
        .unwrap_or_else(|| media_type_of(file))
        .to_string();
    Ok(lienthong_contract::events::Document {
        sha256,
        media_type,
        size_bytes: content.len() as i64,
        signature: Some(signature),
    })
}

/// The media type of the usual document files, by extension.
fn media_type_of(file: &std::path::Path) -> &'static str {
    let extension = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("pdf") => "application/pdf",
        Some("xml") => "application/xml",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("tif" | "tiff") => "image/tiff",
        Some("doc") => "application/msword",
        Some("docx") => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        Some("txt") => "text/plain",
        _ => "application/octet-stream",
    }
}

fn date(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .map(|t| t.date().to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// Run one `cert` command.
pub async fn run(config: &Config, command: CertCommand) -> Result<(), CliError> {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    match command {
        CertCommand::SignDocument { .. } => sign_document(&command),
        CertCommand::CaInit { dir, name, days } => {
            let ca = CityCa::generate(&name, days).map_err(failed)?;
            let (key, cert) = ca.save(&dir).map_err(failed)?;
            say!(
                "city CA {} created: key {} (keep it offline), certificate {} (list it in [signing] trusted_cas)",
                ca.certificate().id(),
                key.display(),
                cert.display()
            );
            Ok(())
        }
        CertCommand::Issue {
            agency,
            ca_dir,
            out,
            days,
            by,
        } => {
            let ca = CityCa::load(&ca_dir).map_err(failed)?;
            let log = open(config, &shutdown).await?;
            let issued = ca.issue(&agency, days).map_err(failed)?;
            std::fs::create_dir_all(&out)
                .map_err(|e| CliError::Usage(format!("--out {}: {e}", out.display())))?;
            let key_file = out.join(format!("{agency}.key"));
            let cert_file = out.join(format!("{agency}.crt"));
            write_private(&key_file, &issued.key_pem).map_err(failed)?;
            std::fs::write(&cert_file, issued.certificate.pem())
                .map_err(|e| CliError::Usage(format!("{}: {e}", cert_file.display())))?;
            log.publish(&issued.certificate, &by)
                .await
                .map_err(failed)?;
            audit(
                config,
                &by,
                "certificate.issue",
                issued.certificate.id(),
                &format!(
                    "agency {agency}, valid until {}",
                    date(issued.certificate.not_after_ms())
                ),
            )
            .await?;
            say!(
                "issued certificate {} to {agency}, valid until {}: key {}, certificate {}",
                issued.certificate.id(),
                date(issued.certificate.not_after_ms()),
                key_file.display(),
                cert_file.display()
            );
            say!("{}", issued.certificate.id());
            Ok(())
        }
        CertCommand::Add { file, by } => {
            let pem = std::fs::read_to_string(&file)
                .map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
            let certificate = AgencyCertificate::from_pem(&pem).map_err(failed)?;
            let log = open(config, &shutdown).await?;
            log.publish(&certificate, &by).await.map_err(failed)?;
            audit(
                config,
                &by,
                "certificate.add",
                certificate.id(),
                &format!(
                    "agency {}, issuer {}",
                    certificate.agency(),
                    certificate.issuer()
                ),
            )
            .await?;
            say!(
                "certificate {} of {} on the log",
                certificate.id(),
                certificate.agency()
            );
            Ok(())
        }
        CertCommand::Revoke { id, reason, by } => {
            let log = open(config, &shutdown).await?;
            let at = log.revoke(&id, &reason, &by).await.map_err(failed)?;
            audit(config, &by, "certificate.revoke", &id, &reason).await?;
            say!(
                "revoked certificate {id} at {at} ms: signatures made with it from now on are refused"
            );
            Ok(())
        }
        CertCommand::List => {
            let log = open(config, &shutdown).await?;
            let certificates = log.read();
            say!("id\tagency\tkey\tvalid until\tstatus\tissuer");
            for entry in certificates.entries() {
                let c = &entry.certificate;
                let status = match &entry.revoked {
                    Some((at, reason)) => format!("revoked {} ({reason})", date(*at)),
                    None => "valid".to_string(),
                };
                say!(
                    "{}\t{}\t{:?}\t{}\t{status}\t{}",
                    c.id(),
                    c.agency(),
                    c.key_kind(),
                    date(c.not_after_ms()),
                    c.issuer()
                );
            }
            if certificates.refused() > 0 {
                say!(
                    "{} record(s) of the log refused (not issued by a trusted CA, or malformed)",
                    certificates.refused()
                );
            }
            Ok(())
        }
    }
}
