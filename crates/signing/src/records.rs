//! Signed records: what a publisher puts in a record's headers so that anyone holding the
//! certificate log can tell which agency wrote the record and that not a byte of it changed.
//!
//! One ECDSA signature costs more than a whole unsigned publish, so a publisher signs a batch:
//! each record's digest is a leaf of a Merkle tree (RFC 9162's shape: the left subtree holds
//! the largest power of two of leaves), the publisher signs the root once, and every record
//! carries the signature, the certificate's id and its own path to the root. A verifier
//! recomputes the leaf from the record, the root from the path, and checks the signature once
//! per root (cached). The format, byte for byte, is in docs/signatures.md; the Python test
//! `tests/interop/verify_signed.py` checks a record from it with the `cryptography` package.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::cert::AgencyCertificate;
use crate::error::SigningError;
use crate::signer::AgencySigner;
use crate::store::Certificates;

/// The header that carries a record's signature. Its value, byte for byte:
///
/// ```text
/// offset  size  what
/// 0       1     format version: 1
/// 1       16    the signing certificate's id (its hex is the id `lienthong cert` prints)
/// 17      4     the record's leaf index in its batch, big-endian
/// 21      4     the batch size, big-endian
/// 25      1     L, the signature's length
/// 26      L     the signature (ASN.1 DER) of the batch's root message
/// 26+L    32·k  the record's path to the root: sibling hashes, the leaf's first
/// ```
pub const H_SIGNATURE: &str = "lienthong.signature";

/// The header format's version.
const FORMAT: u8 = 1;

/// What a leaf hashes after its 0x00 prefix, before the record's fields.
const LEAF_TAG: &[u8] = b"lienthong.record.v1";
/// What the signed message holds before the root.
const ROOT_TAG: &[u8] = b"lienthong.batch.v1";
/// A batch is at most this many records: a proof is at most 16 hashes.
pub const MAX_BATCH: usize = 1 << 16;

/// A 32-byte SHA-256 digest.
pub type Hash = [u8; 32];

/// The leaf of one record: SHA-256 of 0x00, `lienthong.record.v1`, then the topic, the key and
/// the value (the Confluent-framed Avro, schema id included; the envelope inside names the
/// producer unit and the event id), each as a 4-byte big-endian length and its bytes, a
/// missing key or value (a tombstone) as the length 0xFFFFFFFF alone.
pub fn leaf(topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(LEAF_TAG);
    for field in [Some(topic.as_bytes()), key, value] {
        match field {
            // Kafka caps a record far below 4 GiB; a longer field cannot be a record's.
            Some(bytes) => {
                h.update(
                    u32::try_from(bytes.len())
                        .unwrap_or(u32::MAX - 1)
                        .to_be_bytes(),
                );
                h.update(bytes);
            }
            None => h.update(u32::MAX.to_be_bytes()),
        }
    }
    h.finalize().into()
}

fn node(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The message a batch signature signs: `lienthong.batch.v1` then the root.
pub fn root_message(root: &Hash) -> Vec<u8> {
    let mut m = Vec::with_capacity(ROOT_TAG.len() + 32);
    m.extend_from_slice(ROOT_TAG);
    m.extend_from_slice(root);
    m
}

/// The root of `leaves` and each leaf's path to it (siblings, leaf first).
fn tree(leaves: &[Hash]) -> (Hash, Vec<Vec<Hash>>) {
    // The longest path: the tree's height.
    let height = leaves.len().next_power_of_two().trailing_zeros() as usize;
    subtree(leaves, height)
}

fn subtree(leaves: &[Hash], height: usize) -> (Hash, Vec<Vec<Hash>>) {
    match leaves {
        [] => (Sha256::digest([]).into(), Vec::new()),
        [one] => (*one, vec![Vec::with_capacity(height)]),
        _ => {
            let k = (leaves.len() - 1)
                .checked_ilog2()
                .map_or(1, |b| 1usize << b);
            let (left, mut left_paths) = subtree(&leaves[..k], height);
            let (right, right_paths) = subtree(&leaves[k..], height);
            for p in &mut left_paths {
                p.push(right);
            }
            left_paths.extend(right_paths.into_iter().map(|mut p| {
                p.push(left);
                p
            }));
            (node(&left, &right), left_paths)
        }
    }
}

/// The root a leaf's path leads to (RFC 9162, 2.1.3.2), or `None` if the path cannot be one
/// for that index and size.
fn root_from_path(index: u32, size: u32, leaf: Hash, path: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let (mut f, mut s, mut r) = (index, size - 1, leaf);
    for p in path {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            r = node(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(r)
}

/// A signed batch: the signature of its root and, per record, the header to produce it with.
#[derive(Debug)]
pub struct SignedBatch {
    /// Version, certificate id; then per record index and size; then the signature.
    certificate: [u8; 16],
    signature: Vec<u8>,
    size: u32,
    paths: Vec<Vec<Hash>>,
}

impl SignedBatch {
    /// Sign the records whose leaves ([`leaf`]) are `leaves`, in order, with `signer`.
    pub fn sign(signer: &AgencySigner, leaves: &[Hash]) -> Result<Self, SigningError> {
        if leaves.is_empty() || leaves.len() > MAX_BATCH {
            return Err(SigningError::BadSignature(format!(
                "a signed batch holds 1 to {MAX_BATCH} records, not {}",
                leaves.len()
            )));
        }
        let mut certificate = [0u8; 16];
        hex::decode_to_slice(signer.certificate().id(), &mut certificate)
            .map_err(|_| SigningError::Certificate("a certificate id is 32 hex digits".into()))?;
        let (root, paths) = tree(leaves);
        let signature = signer.sign(&root_message(&root))?;
        if signature.len() > usize::from(u8::MAX) {
            return Err(SigningError::BadSignature(
                "a signature longer than 255 bytes".into(),
            ));
        }
        Ok(SignedBatch {
            certificate,
            signature,
            size: leaves.len() as u32,
            paths,
        })
    }

    /// How many records the batch holds.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether it holds none (never, once signed).
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Record `i`'s [`H_SIGNATURE`] value.
    pub fn header_value(&self, i: usize) -> Vec<u8> {
        let path = self.paths.get(i).map_or(&[][..], Vec::as_slice);
        let mut v = Vec::with_capacity(26 + self.signature.len() + 32 * path.len());
        v.push(FORMAT);
        v.extend_from_slice(&self.certificate);
        v.extend_from_slice(&(i as u32).to_be_bytes());
        v.extend_from_slice(&self.size.to_be_bytes());
        v.push(self.signature.len() as u8);
        v.extend_from_slice(&self.signature);
        for h in path {
            v.extend_from_slice(h);
        }
        v
    }

    /// Record `i`'s headers: [`H_SIGNATURE`].
    pub fn headers(&self, i: usize) -> rdkafka::message::OwnedHeaders {
        rdkafka::message::OwnedHeaders::new_with_capacity(1).insert(rdkafka::message::Header {
            key: H_SIGNATURE,
            value: Some(self.header_value(i).as_slice()),
        })
    }
}

/// Why a record's signature is refused: the reason a dead-letter record carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The record carries no signature headers.
    #[error("the record is not signed")]
    Unsigned,
    /// The headers are there but malformed.
    #[error("malformed signature headers: {0}")]
    Malformed(String),
    /// The signature does not verify over the record as it is: it was altered, or signed by
    /// another key.
    #[error("the signature does not verify: the record was altered or not signed by {0}")]
    Altered(String),
    /// The certificate is not on the log.
    #[error("unknown certificate {0}")]
    UnknownCertificate(String),
    /// The certificate was revoked before the record was written.
    #[error("certificate {id} was revoked: {reason}")]
    Revoked {
        /// The certificate.
        id: String,
        /// Why.
        reason: String,
    },
    /// The record was written outside the certificate's validity.
    #[error("{0}")]
    Expired(String),
    /// A document the event carries has a signature that does not verify.
    #[error("document {index}: {reason}")]
    Document {
        /// The document's place among the event's documents.
        index: usize,
        /// Why its signature is refused.
        reason: String,
    },
    /// The signer is not the agency the record says produced it.
    #[error("signed by {signer}, but its producer unit is {producer}")]
    NotTheProducer {
        /// The certificate's agency.
        signer: String,
        /// The envelope's producer unit.
        producer: String,
    },
}

/// A record's [`H_SIGNATURE`] header value, if it has one (the last, if several).
pub fn signature_header<H: rdkafka::message::Headers>(headers: Option<&H>) -> Option<&[u8]> {
    headers?
        .iter()
        .filter(|h| h.key == H_SIGNATURE)
        .last()
        .and_then(|h| h.value)
}

/// A parsed [`H_SIGNATURE`] value.
struct Parsed<'a> {
    certificate: [u8; 32],
    index: u32,
    size: u32,
    signature: &'a [u8],
    path: &'a [u8],
}

fn parse(header: &[u8]) -> Result<Parsed<'_>, Refusal> {
    let malformed = |why: &str| Refusal::Malformed(why.to_string());
    let (&version, rest) = header.split_first().ok_or_else(|| malformed("empty"))?;
    if version != FORMAT {
        return Err(malformed(&format!(
            "format version {version}, not {FORMAT}"
        )));
    }
    if rest.len() < 25 {
        return Err(malformed("too short"));
    }
    let (id, rest) = rest.split_at(16);
    let mut certificate = [0u8; 32];
    hex::encode_to_slice(id, &mut certificate).map_err(|_| malformed("certificate id"))?;
    let index = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let size = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
    let length = usize::from(rest[8]);
    let rest = &rest[9..];
    if rest.len() < length {
        return Err(malformed("the signature is cut short"));
    }
    let (signature, path) = rest.split_at(length);
    if path.len() % 32 != 0 || path.len() > 32 * 32 {
        return Err(malformed(&format!(
            "a path of {} bytes (32 per hash, at most 32 hashes)",
            path.len()
        )));
    }
    Ok(Parsed {
        certificate,
        index,
        size,
        signature,
        path,
    })
}

/// Roots whose signatures verified, per certificate: a batch's signature is checked once,
/// not once per record. Bounded: cleared when full.
const VERIFIED_CAPACITY: usize = 4096;

/// Checks signed records against the certificates, caching the roots it verified.
#[derive(Debug, Default)]
pub struct RecordVerifier {
    verified: Mutex<HashMap<(Hash, [u8; 32]), ()>>,
}

impl RecordVerifier {
    /// A verifier with nothing cached.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the record (`topic`, `key`, `value`, its [`H_SIGNATURE`] `header`) was signed
    /// by a certificate of `certificates`, valid and not revoked at `at_ms` (a time the
    /// verifier trusts: the broker's append time); the signer's certificate if so.
    pub fn verify<'c>(
        &self,
        certificates: &'c Certificates,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        header: Option<&[u8]>,
        at_ms: i64,
    ) -> Result<&'c AgencyCertificate, Refusal> {
        let parsed = parse(header.ok_or(Refusal::Unsigned)?)?;
        // Hex digits are ASCII.
        let id = std::str::from_utf8(&parsed.certificate).unwrap_or_default();
        let path: Vec<Hash> = parsed
            .path
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                h
            })
            .collect();
        let entry = certificates
            .get(id)
            .ok_or_else(|| Refusal::UnknownCertificate(id.to_string()))?;
        if let Some((revoked_at, reason)) = &entry.revoked
            && at_ms >= *revoked_at
        {
            return Err(Refusal::Revoked {
                id: id.to_string(),
                reason: reason.clone(),
            });
        }
        let certificate = &entry.certificate;
        if at_ms < certificate.not_before_ms() || at_ms > certificate.not_after_ms() {
            return Err(Refusal::Expired(format!(
                "written at {at_ms} ms, outside certificate {id}'s validity"
            )));
        }
        let root = root_from_path(parsed.index, parsed.size, leaf(topic, key, value), &path)
            .ok_or_else(|| Refusal::Altered(certificate.agency().to_string()))?;
        let cache_key = (root, parsed.certificate);
        if self.seen(&cache_key) {
            return Ok(certificate);
        }
        certificate
            .verify(&root_message(&root), parsed.signature, at_ms)
            .map_err(|_| Refusal::Altered(certificate.agency().to_string()))?;
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(cache_key, ());
        Ok(certificate)
    }

    /// [`RecordVerifier::verify`] for a Kafka record as it was read. The time a revocation
    /// and the validity are checked against is the broker's append time when the topic keeps
    /// it (`LogAppendTime`, as `lienthong topics create` makes the catalog's topics);
    /// otherwise now, since a producer's own timestamp could be backdated to before a
    /// revocation.
    pub fn verify_message<'c, M: rdkafka::Message>(
        &self,
        certificates: &'c Certificates,
        message: &M,
    ) -> Result<&'c AgencyCertificate, Refusal> {
        let at_ms = match message.timestamp() {
            rdkafka::Timestamp::LogAppendTime(t) => t,
            _ => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        };
        self.verify(
            certificates,
            message.topic(),
            message.key(),
            message.payload(),
            signature_header(message.headers()),
            at_ms,
        )
    }

    fn seen(&self, key: &(Hash, [u8; 32])) -> bool {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(key)
    }
}

/// Whether `certificate`'s agency is `producer_unit`, the unit the record says produced it.
pub fn check_producer(certificate: &AgencyCertificate, producer_unit: &str) -> Result<(), Refusal> {
    if certificate.agency() == producer_unit {
        Ok(())
    } else {
        Err(Refusal::NotTheProducer {
            signer: certificate.agency().to_string(),
            producer: producer_unit.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf("t", Some(&i.to_be_bytes()), Some(b"v")))
            .collect()
    }

    #[test]
    fn every_leaf_of_every_size_leads_to_the_root_and_no_other_does() {
        for n in 1..=70 {
            let ls = leaves(n);
            let (root, paths) = tree(&ls);
            assert_eq!(paths.len(), n);
            for (i, path) in paths.iter().enumerate() {
                assert_eq!(
                    root_from_path(i as u32, n as u32, ls[i], path),
                    Some(root),
                    "leaf {i} of {n}"
                );
                // Another leaf, another index or another size does not.
                let other = leaf("t", Some(b"other"), Some(b"v"));
                assert_ne!(root_from_path(i as u32, n as u32, other, path), Some(root));
                if n > 1 {
                    let j = ((i + 1) % n) as u32;
                    assert_ne!(root_from_path(j, n as u32, ls[i], path), Some(root));
                }
                // Past the batch's end; a path too long or too short for the size.
                assert_eq!(root_from_path(n as u32, n as u32, ls[i], path), None);
                let mut longer = path.clone();
                longer.push(root);
                assert_eq!(root_from_path(i as u32, n as u32, ls[i], &longer), None);
                if !path.is_empty() {
                    let shorter = &path[..path.len() - 1];
                    assert_eq!(root_from_path(i as u32, n as u32, ls[i], shorter), None);
                }
            }
        }
    }

    #[test]
    fn the_root_is_rfc_9162s_for_a_known_shape() {
        // Five leaves: MTH = H(1, H(1, H(1,a,b), H(1,c,d)), e).
        let ls = leaves(5);
        let (root, _) = tree(&ls);
        let expected = node(&node(&node(&ls[0], &ls[1]), &node(&ls[2], &ls[3])), &ls[4]);
        assert_eq!(root, expected);
    }

    #[test]
    fn a_leaf_tells_a_tombstone_from_an_empty_value_and_fields_apart() {
        assert_ne!(
            leaf("t", Some(b"k"), None),
            leaf("t", Some(b"k"), Some(b""))
        );
        assert_ne!(
            leaf("t", Some(b"ab"), Some(b"c")),
            leaf("t", Some(b"a"), Some(b"bc"))
        );
        assert_ne!(
            leaf("t1", Some(b"k"), Some(b"v")),
            leaf("t", Some(b"1k"), Some(b"v"))
        );
    }
}
