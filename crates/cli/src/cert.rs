//! `lienthong cert`: the city CA, and the agencies' signing certificates on the certificate log
//! (`[signing]`, docs/signatures.md).

use lienthong_bus::state_log::StateLogConfig;
use lienthong_signing::{AgencyCertificate, CertificateLog, CityCa, write_private};
use rdkafka::consumer::DefaultConsumerContext;
use tokio_util::sync::CancellationToken;

use crate::config::SigningConfig;
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
    if signing.trusted_cas.is_empty() {
        return Err(CliError::Usage(
            "[signing] trusted_cas: name at least the city CA's ca.crt".into(),
        ));
    }
    signing
        .trusted_cas
        .iter()
        .map(|path| {
            let pem = std::fs::read_to_string(path).map_err(|e| {
                CliError::Usage(format!("[signing] trusted_cas: {}: {e}", path.display()))
            })?;
            AgencyCertificate::from_pem(&pem).map_err(|e| {
                CliError::Usage(format!("[signing] trusted_cas: {}: {e}", path.display()))
            })
        })
        .collect()
}

async fn open(config: &Config, shutdown: &CancellationToken) -> Result<Log, CliError> {
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
