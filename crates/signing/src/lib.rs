//! Who signed what (issue #29): the city CA ([`CityCa`]) issues each agency an ECDSA P-256
//! signing certificate; the certificates every component trusts, and their revocations, live on
//! a compacted topic ([`CertificateLog`]); an agency signs with its key ([`AgencySigner`]) and
//! anyone verifies against the log ([`Certificates::verify`]), which also takes RSA
//! certificates from the national CAs it is told to trust.
//!
//! In the data path this sits beside the producers and the sinks: a publisher signs what it
//! puts on the bus, a batch at a time ([`SignedBatch`]: one signature over a Merkle root, each
//! record carrying its path in headers), and a connector verifies each record before it
//! applies it ([`RecordVerifier`]); after each batch it commits, a connector states what it
//! applied in a signed [`Receipt`]. Documents a case event carries are signed by digest
//! ([`sign_document`], [`verify_case_documents`]). The keys, the certificates and the log are run with
//! `lienthong cert`; the audit trail ([`AuditTrail`]) is built on the same keys (see
//! docs/signatures.md).

mod audit;
mod ca;
mod cert;
mod documents;
mod error;
mod receipts;
mod records;
mod signer;
mod store;

pub use audit::{AUDIT_TOPIC, AuditEntry, AuditState, AuditTrail, ChainReport, Problem};
pub use ca::{CA_CERT_FILE, CA_KEY_FILE, CityCa, Issued, write_private};
pub use cert::{AgencyCertificate, KeyKind, certificate_id, load_trusted_cas};
pub use documents::{document_message, sign_document, verify_case_documents, verify_document};
pub use error::SigningError;
pub use receipts::{RECEIPTS_TOPIC, Receipt, ReceiptRange, StoreDigest};
pub use records::{
    H_SIGNATURE, Hash, MAX_BATCH, RecordVerifier, Refusal, SignedBatch, check_producer, leaf,
    root_message, signature_header,
};
pub use signer::{AgencySigner, load_signers};
pub use store::{CERTIFICATES_TOPIC, CertificateLog, Certificates, Entry};

#[cfg(test)]
mod tests;
