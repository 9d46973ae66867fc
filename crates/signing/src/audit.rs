//! The audit trail: what was done on the bus (a grant, a revocation, an erasure, a
//! certificate issued or revoked), one entry after another on a topic
//! ([`AUDIT_TOPIC`]), each entry under a key of its own and carrying the hash of its writer's previous one, and every
//! `sign_every`-th entry signed by the writer's certificate. Changing, removing or reordering
//! an entry breaks the chain; forging a new chain needs the writer's key.
//!
//! ```text
//! hash      = hex(SHA-256(JSON of {writer, seq, at_ms, actor, action, subject, detail, prev}))
//! prev      = the hash of the writer's entry seq - 1 ("" for seq 0)
//! signature = ECDSA P-256 (or RSA) over the UTF-8 bytes of `hash`, by `certificate`
//! ```
//!
//! A signature covers its entry and, through `prev`, every earlier entry of its writer.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lienthong_bus::state_log::{LogState, StateLog, StateLogConfig};
use rdkafka::consumer::ConsumerContext;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::error::SigningError;
use crate::signer::AgencySigner;
use crate::store::Certificates;

/// The audit topic: one partition, compacted, each entry under a key of its own
/// (`writer/seq`), so compaction never drops one; only a tombstone could, and that shows as a
/// gap in the chain.
pub const AUDIT_TOPIC: &str = "_lienthong_audit";

const LOG: &str = "audit trail";
const TIMEOUT: Duration = Duration::from_secs(15);

/// The key of entry `seq` of `writer`.
fn entry_key(writer: &str, seq: u64) -> String {
    format!("{writer}/{seq:020}")
}

/// What is hashed of an entry, in this order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Hashed {
    writer: String,
    seq: u64,
    at_ms: i64,
    actor: String,
    action: String,
    subject: String,
    detail: String,
    prev: String,
}

/// One entry as the topic holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEntry {
    #[serde(flatten)]
    hashed: Hashed,
    /// The hash of the fields above.
    pub hash: String,
    /// The certificate id and the signature (base64) over `hash`, on every `sign_every`-th
    /// entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<(String, String)>,
}

impl AuditEntry {
    /// The writer (a component or agency: one chain each).
    pub fn writer(&self) -> &str {
        &self.hashed.writer
    }
    /// Its place in its writer's chain, from 0.
    pub fn seq(&self) -> u64 {
        self.hashed.seq
    }
    /// When, in milliseconds since the epoch.
    pub fn at_ms(&self) -> i64 {
        self.hashed.at_ms
    }
    /// Who did it.
    pub fn actor(&self) -> &str {
        &self.hashed.actor
    }
    /// What was done (`grant`, `revoke`, `erase`, `certificate.issue`, …).
    pub fn action(&self) -> &str {
        &self.hashed.action
    }
    /// To what (a grant id, a citizen's pseudonym, a certificate id).
    pub fn subject(&self) -> &str {
        &self.hashed.subject
    }
    /// Anything else worth keeping, as text.
    pub fn detail(&self) -> &str {
        &self.hashed.detail
    }
}

fn hash_of(hashed: &Hashed) -> String {
    let bytes = serde_json::to_vec(hashed).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

/// What is wrong with an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Its position on the topic: its offset, as long as no tombstone had an entry compacted
    /// away before it.
    pub offset: i64,
    /// Its writer, if it could be read.
    pub writer: String,
    /// Its sequence number, if it could be read.
    pub seq: Option<u64>,
    /// What is wrong.
    pub what: String,
}

#[derive(Debug, Default, Clone)]
struct Chain {
    /// The last good entry's seq and hash.
    last: Option<(u64, String)>,
    entries: u64,
    /// The signed entries, to verify against the certificates: (offset, seq, hash,
    /// certificate, signature, at).
    signed: Vec<(i64, u64, String, String, Vec<u8>, i64)>,
}

/// The trail as read: every writer's chain, and every problem found on the way.
#[derive(Debug, Default)]
pub struct AuditState {
    chains: BTreeMap<String, Chain>,
    problems: Vec<Problem>,
    offset: i64,
}

impl LogState for AuditState {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let offset = self.offset;
        self.offset += 1;
        let problem = |what: String, writer: &str, seq: Option<u64>| Problem {
            offset,
            writer: writer.to_string(),
            seq,
            what,
        };
        let key = String::from_utf8_lossy(key).to_string();
        let Some(value) = value else {
            self.problems.push(problem(
                "a tombstone: an audit entry is never deleted".into(),
                &key,
                None,
            ));
            return;
        };
        let entry: AuditEntry = match serde_json::from_slice(value) {
            Ok(e) => e,
            Err(e) => {
                self.problems
                    .push(problem(format!("not an audit entry: {e}"), &key, None));
                return;
            }
        };
        let (writer, seq) = (entry.hashed.writer.clone(), entry.hashed.seq);
        let chain = self.chains.entry(writer.clone()).or_default();
        let expected = chain.last.as_ref().map_or(0, |(s, _)| s + 1);
        let prev = chain.last.as_ref().map_or("", |(_, h)| h.as_str());
        let what = if key != entry_key(&writer, seq) {
            Some(format!("under key {key:?}, not its own"))
        } else if seq != expected {
            Some(format!(
                "entry {seq} where {expected} was due: an entry removed, repeated or reordered"
            ))
        } else if entry.hashed.prev != prev {
            Some("its prev is not the hash of the entry before it: reordered or replaced".into())
        } else if hash_of(&entry.hashed) != entry.hash {
            Some("its hash does not match its content: changed".into())
        } else {
            None
        };
        if let Some(what) = what {
            self.problems.push(problem(what, &writer, Some(seq)));
            return;
        }
        if let Some((certificate, signature)) = &entry.signature {
            match STANDARD.decode(signature) {
                Ok(bytes) => chain.signed.push((
                    offset,
                    seq,
                    entry.hash.clone(),
                    certificate.clone(),
                    bytes,
                    entry.hashed.at_ms,
                )),
                Err(_) => self.problems.push(problem(
                    "a signature that is not base64".into(),
                    &writer,
                    Some(seq),
                )),
            }
        }
        chain.last = Some((seq, entry.hash));
        chain.entries += 1;
    }
}

/// What [`AuditState::report`] found for one writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// The writer.
    pub writer: String,
    /// Entries that chain correctly.
    pub entries: u64,
    /// The last entry a valid signature covers, if any.
    pub signed_through: Option<u64>,
    /// The last entry of the chain.
    pub last: Option<u64>,
}

impl AuditState {
    /// Every writer's chain, and every problem: the chain's, and each signature that does not
    /// verify under `certificates` or is not its writer's (`writer` is the signer's agency, or
    /// starts with it and a `/`).
    pub fn report(&self, certificates: &Certificates) -> (Vec<ChainReport>, Vec<Problem>) {
        let mut problems = self.problems.clone();
        let mut reports = Vec::new();
        for (writer, chain) in &self.chains {
            let mut signed_through = None;
            for (offset, seq, hash, certificate, signature, at) in &chain.signed {
                let verdict = certificates
                    .verify(certificate, hash.as_bytes(), signature, *at)
                    .and_then(|c| {
                        let agency = c.agency();
                        if writer == agency || writer.starts_with(&format!("{agency}/")) {
                            Ok(())
                        } else {
                            Err(SigningError::BadSignature(format!(
                                "signed by {agency}, not by the writer"
                            )))
                        }
                    });
                match verdict {
                    Ok(()) => signed_through = Some(*seq),
                    Err(e) => problems.push(Problem {
                        offset: *offset,
                        writer: writer.clone(),
                        seq: Some(*seq),
                        what: format!("signature: {e}"),
                    }),
                }
            }
            reports.push(ChainReport {
                writer: writer.clone(),
                entries: chain.entries,
                signed_through,
                last: chain.last.as_ref().map(|(s, _)| *s),
            });
        }
        problems.sort_by_key(|p| p.offset);
        (reports, problems)
    }
}

/// The audit trail: read to its end, and written by one writer.
pub struct AuditTrail<C: ConsumerContext + 'static> {
    log: StateLog<AuditState, C>,
    writer: String,
    signer: Option<AgencySigner>,
    sign_every: u64,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl<C: ConsumerContext + Clone + 'static> AuditTrail<C> {
    /// In memory (tests).
    pub fn in_memory(writer: &str, signer: Option<AgencySigner>, sign_every: u64) -> Self {
        Self::with(
            StateLog::in_memory(LOG, AuditState::default()),
            writer,
            signer,
            sign_every,
        )
    }

    /// On Kafka (`config.topic`, normally [`AUDIT_TOPIC`]), read to its end; entries appended as `writer`, every
    /// `sign_every`-th signed by `signer` (every one with 1).
    pub async fn open(
        config: &StateLogConfig,
        writer: &str,
        signer: Option<AgencySigner>,
        sign_every: u64,
        context: C,
        shutdown: CancellationToken,
    ) -> Result<Self, SigningError> {
        let log = StateLog::open(LOG, config, AuditState::default(), context, shutdown)
            .await
            .map_err(SigningError::Log)?;
        Ok(Self::with(log, writer, signer, sign_every))
    }

    fn with(
        log: StateLog<AuditState, C>,
        writer: &str,
        signer: Option<AgencySigner>,
        sign_every: u64,
    ) -> Self {
        AuditTrail {
            log,
            writer: writer.to_string(),
            signer,
            sign_every: sign_every.max(1),
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// The trail as read so far.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, AuditState> {
        self.log.read()
    }

    /// Append what `actor` did, chained to this writer's last entry; returns its seq.
    pub async fn append(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &str,
    ) -> Result<u64, SigningError> {
        let _one = self.one_at_a_time.lock().await;
        let (seq, prev) = match self
            .log
            .read()
            .chains
            .get(&self.writer)
            .and_then(|c| c.last.clone())
        {
            Some((seq, hash)) => (seq + 1, hash),
            None => (0, String::new()),
        };
        let hashed = Hashed {
            writer: self.writer.clone(),
            seq,
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            actor: actor.into(),
            action: action.into(),
            subject: subject.into(),
            detail: detail.into(),
            prev,
        };
        let hash = hash_of(&hashed);
        let signature = match &self.signer {
            Some(signer) if (seq + 1) % self.sign_every == 0 => Some((
                signer.certificate().id().to_string(),
                STANDARD.encode(signer.sign(hash.as_bytes())?),
            )),
            _ => None,
        };
        let entry = AuditEntry {
            hashed,
            hash,
            signature,
        };
        let value =
            serde_json::to_vec(&entry).map_err(|e| SigningError::Certificate(e.to_string()))?;
        self.log
            .append(
                entry_key(&self.writer, seq).as_bytes(),
                Some(&value),
                TIMEOUT,
            )
            .await
            .map_err(SigningError::Log)?;
        Ok(seq)
    }
}
