//! The certificates every component trusts, and their revocations, on a compacted topic
//! ([`CERTIFICATES_TOPIC`]): one record per certificate, keyed by its id, holding the
//! certificate and, once revoked, when and why. A certificate that no trusted CA issued is
//! never taken from the log, whoever wrote it.

use std::collections::BTreeMap;
use std::time::Duration;

use lienthong_bus::state_log::{LogState, StateLog, StateLogConfig};
use rdkafka::consumer::ConsumerContext;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::cert::AgencyCertificate;
use crate::error::SigningError;

/// The compacted topic of certificates and revocations.
pub const CERTIFICATES_TOPIC: &str = "_lienthong_certificates";

const LOG: &str = "certificate log";
const TIMEOUT: Duration = Duration::from_secs(15);

/// One record's value.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// The certificate, PEM.
    certificate: String,
    /// Who put it on the log (an admin's name).
    by: String,
    /// When it was revoked, in milliseconds since the epoch; absent while it is valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_at_ms: Option<i64>,
    /// Why it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// A certificate on the log, and its revocation if any.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The certificate.
    pub certificate: AgencyCertificate,
    /// When and why it was revoked.
    pub revoked: Option<(i64, String)>,
}

/// The certificates read from the log, by id, under the trusted CAs.
#[derive(Debug)]
pub struct Certificates {
    anchors: Vec<AgencyCertificate>,
    by_id: BTreeMap<String, Entry>,
    /// Records refused (not a certificate, not issued by a trusted CA, not under its id).
    refused: u64,
}

impl Certificates {
    /// No certificates yet, trusting those `anchors` issue (the city CA, national CAs).
    pub fn new(anchors: Vec<AgencyCertificate>) -> Self {
        Certificates {
            anchors,
            by_id: BTreeMap::new(),
            refused: 0,
        }
    }

    /// The certificate `certificate` may be taken: a trusted CA issued it.
    fn check(&self, certificate: &AgencyCertificate) -> Result<(), SigningError> {
        let mut why = Vec::new();
        for anchor in &self.anchors {
            match certificate.check_issued_by(anchor) {
                Ok(()) => return Ok(()),
                Err(e) => why.push(e.to_string()),
            }
        }
        Err(SigningError::Certificate(format!(
            "{} ({}) was issued by no trusted CA: {}",
            certificate.id(),
            certificate.agency(),
            why.join("; ")
        )))
    }

    /// The entry of certificate `id`.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.by_id.get(id)
    }

    /// Every entry, by id.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.by_id.values()
    }

    /// How many records the log held that were refused.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Whether `signature` over `message` was made by certificate `id`'s key at
    /// `signed_at_ms` (a time the verifier trusts, e.g. the broker's record timestamp), the
    /// certificate known, issued by a trusted CA, valid then and not revoked by then. The
    /// signer's certificate, to check whose it is.
    pub fn verify(
        &self,
        id: &str,
        message: &[u8],
        signature: &[u8],
        signed_at_ms: i64,
    ) -> Result<&AgencyCertificate, SigningError> {
        let entry = self
            .by_id
            .get(id)
            .ok_or_else(|| SigningError::UnknownCertificate(id.to_string()))?;
        if let Some((at, reason)) = &entry.revoked
            && signed_at_ms >= *at
        {
            return Err(SigningError::Revoked {
                id: id.to_string(),
                reason: reason.clone(),
            });
        }
        entry.certificate.verify(message, signature, signed_at_ms)?;
        Ok(&entry.certificate)
    }
}

impl LogState for Certificates {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Ok(id) = std::str::from_utf8(key) else {
            self.refused += 1;
            return;
        };
        let Some(value) = value else {
            self.by_id.remove(id);
            return;
        };
        let taken = serde_json::from_slice::<Record>(value)
            .map_err(|e| SigningError::Certificate(e.to_string()))
            .and_then(|r| {
                let certificate = AgencyCertificate::from_pem(&r.certificate)?;
                if certificate.id() != id {
                    return Err(SigningError::Certificate(format!(
                        "under id {id}, certificate {}",
                        certificate.id()
                    )));
                }
                self.check(&certificate)?;
                Ok(Entry {
                    certificate,
                    revoked: r.revoked_at_ms.map(|at| (at, r.reason.unwrap_or_default())),
                })
            });
        match taken {
            Ok(entry) => {
                // A revocation stays: a later record cannot un-revoke a certificate.
                let revoked = self
                    .by_id
                    .get(id)
                    .and_then(|e| e.revoked.clone())
                    .or(entry.revoked.clone());
                self.by_id
                    .insert(id.to_string(), Entry { revoked, ..entry });
            }
            Err(e) => {
                self.refused += 1;
                tracing::warn!(certificate = id, error = %e, "a record of the certificate log refused");
            }
        }
    }
}

/// The certificate log: read by every verifier, written by the city's admins.
pub struct CertificateLog<C: ConsumerContext + 'static> {
    log: StateLog<Certificates, C>,
}

impl<C: ConsumerContext + Clone + 'static> CertificateLog<C> {
    /// In memory (tests, the embedded demo), trusting `anchors`.
    pub fn in_memory(anchors: Vec<AgencyCertificate>) -> Self {
        CertificateLog {
            log: StateLog::in_memory(LOG, Certificates::new(anchors)),
        }
    }

    /// On Kafka (`config.topic`, normally [`CERTIFICATES_TOPIC`]), read to its end, trusting
    /// `anchors`.
    pub async fn open(
        config: &StateLogConfig,
        anchors: Vec<AgencyCertificate>,
        context: C,
        shutdown: CancellationToken,
    ) -> Result<Self, SigningError> {
        let log = StateLog::open(LOG, config, Certificates::new(anchors), context, shutdown)
            .await
            .map_err(SigningError::Log)?;
        Ok(CertificateLog { log })
    }

    /// A verifier's view of the log: `topic` on `kafka`, read to its end, trusting the CAs
    /// whose certificates are the PEM files `trusted_cas`; `group` names the reader. A CA file
    /// that cannot be read or is not a certificate is a permanent error; Kafka's are transient.
    pub async fn open_trusting(
        kafka: &lienthong_bus::KafkaConfig,
        topic: &str,
        trusted_cas: &[std::path::PathBuf],
        group: String,
        context: C,
        shutdown: CancellationToken,
    ) -> Result<Self, SigningError> {
        let anchors = crate::cert::load_trusted_cas(trusted_cas)?;
        let config = StateLogConfig {
            kafka: kafka.clone(),
            topic: topic.to_string(),
            replication: 1,
            topic_config: Vec::new(),
            group,
        };
        Self::open(&config, anchors, context, shutdown).await
    }

    /// The certificates as read so far.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Certificates> {
        self.log.read()
    }

    /// Read the log to its end (what other instances wrote).
    pub async fn sync(&self) -> Result<(), SigningError> {
        self.log.sync(TIMEOUT).await.map_err(SigningError::Log)
    }

    /// Put `certificate` on the log, as `by`; refused unless a trusted CA issued it.
    pub async fn publish(
        &self,
        certificate: &AgencyCertificate,
        by: &str,
    ) -> Result<(), SigningError> {
        self.log.read().check(certificate)?;
        self.append(certificate, by, None).await
    }

    /// Revoke certificate `id` from now on, as `by`, for `reason`.
    pub async fn revoke(&self, id: &str, reason: &str, by: &str) -> Result<i64, SigningError> {
        let certificate = self
            .log
            .read()
            .get(id)
            .map(|e| e.certificate.clone())
            .ok_or_else(|| SigningError::UnknownCertificate(id.to_string()))?;
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.append(&certificate, by, Some((at, reason))).await?;
        Ok(at)
    }

    async fn append(
        &self,
        certificate: &AgencyCertificate,
        by: &str,
        revoked: Option<(i64, &str)>,
    ) -> Result<(), SigningError> {
        let record = Record {
            certificate: certificate.pem(),
            by: by.to_string(),
            revoked_at_ms: revoked.map(|(at, _)| at),
            reason: revoked.map(|(_, r)| r.to_string()),
        };
        let value =
            serde_json::to_vec(&record).map_err(|e| SigningError::Certificate(e.to_string()))?;
        self.log
            .append(certificate.id().as_bytes(), Some(&value), TIMEOUT)
            .await
            .map(|_| ())
            .map_err(SigningError::Log)
    }
}
