//! Apply receipts: after each batch a connector commits to its store, it says what it applied
//! (which offsets of which partitions, how many rows moved, when, and the store's digest when
//! one was taken), signed by its agency, on the receipts topic. A publisher reads there whether
//! and when each agency applied its events; an auditor checks that every offset a connector
//! read is covered by exactly one receipt.
//!
//! A receipt is a JSON record keyed by the connector's name, signed like any record
//! ([`crate::SignedBatch`] of one: the `lienthong.signature` header over the topic, key and
//! value), and it is the receipt's `agency` that must have signed it.

use serde::{Deserialize, Serialize};

use crate::error::SigningError;
use crate::records::{RecordVerifier, Refusal, SignedBatch, check_producer, leaf};
use crate::signer::AgencySigner;
use crate::store::Certificates;

/// The topic receipts go to unless a connector's `[receipts] topic` says otherwise.
pub const RECEIPTS_TOPIC: &str = "_lienthong_receipts";

/// The receipt format's version.
const RECEIPT_VERSION: u32 = 1;

/// What one committed batch did with one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRange {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The store held this partition at offset `from` before the batch (the first record's
    /// offset when it held none)...
    pub from: i64,
    /// ... and holds `to` after it: every record in `from..to` was read by this batch (applied,
    /// filtered, stale or dead-lettered). A connector's receipts for a partition chain: each
    /// one's `from` is the previous one's `to`.
    pub to: i64,
    /// Records of the range the batch read.
    pub records: u64,
    /// The broker's timestamps (ms since the epoch) of the range's oldest and newest record.
    pub published_ms: [i64; 2],
}

/// The store's digest (docs/connectors.md, "Digests") right after the batch committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreDigest {
    /// Rows in the store.
    pub rows: u64,
    /// The overall digest, lower-case hex.
    pub overall: String,
}

/// One committed batch, as the connector that applied it states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The format's version: 1.
    pub version: u32,
    /// The connector (its name: its consumer group and offsets key).
    pub connector: String,
    /// The agency whose certificate signs the receipt.
    pub agency: String,
    /// The store's kind: `postgres` or `sqlite`.
    pub store: String,
    /// Per partition the batch read, what it read.
    pub ranges: Vec<ReceiptRange>,
    /// Changes that moved a row.
    pub applied: u64,
    /// Changes the store's filter left out.
    pub filtered: u64,
    /// Older or equal versions: no-ops.
    pub stale: u64,
    /// When the store transaction committed (ms since the epoch, the connector's clock).
    pub committed_ms: i64,
    /// The store's digest after the batch, when the connector took one (`[receipts]
    /// store_digest_every_secs`).
    pub store_digest: Option<StoreDigest>,
}

impl Receipt {
    /// An empty receipt of this format's version.
    pub fn new(connector: &str, agency: &str, store: &str) -> Receipt {
        Receipt {
            version: RECEIPT_VERSION,
            connector: connector.to_string(),
            agency: agency.to_string(),
            store: store.to_string(),
            ranges: Vec::new(),
            applied: 0,
            filtered: 0,
            stale: 0,
            committed_ms: 0,
            store_digest: None,
        }
    }

    /// The record to produce to `topic`: its key (the connector), its value (the JSON) and the
    /// signature header, signed with `signer` (which must be the receipt's agency's).
    pub fn sign(
        &self,
        signer: &AgencySigner,
        topic: &str,
    ) -> Result<(String, Vec<u8>, rdkafka::message::OwnedHeaders), SigningError> {
        if signer.certificate().agency() != self.agency {
            return Err(SigningError::Certificate(format!(
                "a receipt of {} cannot be signed with {}'s certificate",
                self.agency,
                signer.certificate().agency()
            )));
        }
        let value = serde_json::to_vec(self)
            .map_err(|e| SigningError::Certificate(format!("encoding a receipt: {e}")))?;
        let key = self.connector.clone();
        let batch = SignedBatch::sign(signer, &[leaf(topic, Some(key.as_bytes()), Some(&value))])?;
        Ok((key, value, batch.headers(0)))
    }

    /// The receipt a record of the receipts topic holds, if its signature verifies against
    /// `certificates` and the signer is the receipt's agency.
    pub fn verify<M: rdkafka::Message>(
        verifier: &RecordVerifier,
        certificates: &Certificates,
        message: &M,
    ) -> Result<Receipt, Refusal> {
        let certificate = verifier.verify_message(certificates, message)?;
        let receipt: Receipt = serde_json::from_slice(message.payload().unwrap_or_default())
            .map_err(|e| Refusal::Malformed(format!("not a receipt: {e}")))?;
        if receipt.version != RECEIPT_VERSION {
            return Err(Refusal::Malformed(format!(
                "receipt version {} (this reader knows {RECEIPT_VERSION})",
                receipt.version
            )));
        }
        check_producer(certificate, &receipt.agency)?;
        Ok(receipt)
    }
}
