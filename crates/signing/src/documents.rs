//! Document signatures in case events: an official signs a document's digest with the
//! agency's key, and the case event that carries the document's fingerprint carries the
//! signature too (`Signature.value`, `Signature.signed_digest`, `Signature.certificate_id` in
//! `case_event.avsc`), so that every agency can check who signed which document without the
//! document itself. The signed message is `lienthong.document.v1` followed by the 32 bytes of
//! the document's SHA-256; the value is the signature's DER in standard base64.

use base64::Engine as _;
use lienthong_contract::events::{CaseEvent, CaseEventKind, Document, Signature};

use crate::error::SigningError;
use crate::records::Refusal;
use crate::signer::AgencySigner;
use crate::store::Certificates;

/// What a document signature signs before the digest.
const DOCUMENT_TAG: &[u8] = b"lienthong.document.v1";

/// The message a document signature signs: the tag, then the digest's 32 bytes; `None` if
/// `sha256_hex` is not 64 hex digits.
pub fn document_message(sha256_hex: &str) -> Option<Vec<u8>> {
    let digest = hex::decode(sha256_hex).ok().filter(|d| d.len() == 32)?;
    let mut m = Vec::with_capacity(DOCUMENT_TAG.len() + 32);
    m.extend_from_slice(DOCUMENT_TAG);
    m.extend_from_slice(&digest);
    Some(m)
}

/// Sign the document whose content has the SHA-256 `sha256_hex`, as `signer_name` of the
/// signer's agency, at `signed_at` (ms): the `Signature` to put in its `Document`.
pub fn sign_document(
    signer: &AgencySigner,
    signer_name: &str,
    sha256_hex: &str,
    signed_at: i64,
) -> Result<Signature, SigningError> {
    let message = document_message(sha256_hex).ok_or_else(|| {
        SigningError::BadSignature(format!("{sha256_hex:?} is not a SHA-256 in hex"))
    })?;
    let certificate = signer.certificate();
    let value = signer.sign(&message)?;
    Ok(Signature {
        signer_name: signer_name.to_string(),
        signer_unit: Some(certificate.agency().to_string()),
        certificate_serial: certificate.serial().to_string(),
        issuer: certificate.issuer().to_string(),
        algorithm: match certificate.key_kind() {
            crate::KeyKind::EcdsaP256 => "ECDSA-P256-SHA256".into(),
            crate::KeyKind::Rsa => "RSA-SHA256".into(),
        },
        signed_at,
        value: Some(base64::engine::general_purpose::STANDARD.encode(value)),
        signed_digest: Some(sha256_hex.to_string()),
        certificate_id: Some(certificate.id().to_string()),
    })
}

/// Check one document's signature against `certificates`: `Ok(None)` for an unsigned document
/// or a signature that carries only metadata (no value: made outside the bus, e.g. inside a
/// PDF, and not checkable here); the signer's agency if it verifies; why not otherwise. The
/// certificate must be valid and not revoked at `signed_at`, the signer's own claim (see
/// docs/signatures.md on what that leaves open).
pub fn verify_document<S: AsRef<str>>(
    certificates: &Certificates,
    document: &Document<S>,
) -> Result<Option<String>, String> {
    let Some(signature) = &document.signature else {
        return Ok(None);
    };
    let Some(value) = &signature.value else {
        return Ok(None);
    };
    let digest = signature
        .signed_digest
        .as_ref()
        .ok_or("a signature value without signed_digest")?;
    let id = signature
        .certificate_id
        .as_ref()
        .ok_or("a signature value without certificate_id")?;
    if digest.as_ref() != document.sha256.as_ref() {
        return Err(format!(
            "signed digest {} is not the document's {}: the signature is of another document",
            digest.as_ref(),
            document.sha256.as_ref()
        ));
    }
    let message = document_message(digest.as_ref()).ok_or("signed_digest is not a SHA-256")?;
    let value = base64::engine::general_purpose::STANDARD
        .decode(value.as_ref())
        .map_err(|e| format!("the signature value is not base64: {e}"))?;
    let certificate = certificates
        .verify(id.as_ref(), &message, &value, signature.signed_at)
        .map_err(|e| e.to_string())?;
    Ok(Some(certificate.agency().to_string()))
}

/// Check every signed document of a case event; the first refusal, naming its document.
pub fn verify_case_documents<S: AsRef<str>>(
    certificates: &Certificates,
    event: &CaseEvent<S>,
) -> Result<(), Refusal> {
    let documents: Vec<&Document<S>> = match &event.event {
        CaseEventKind::CaseSubmitted(s) => s.documents.iter().collect(),
        CaseEventKind::SupplementReceived(s) => s.documents.iter().collect(),
        CaseEventKind::CaseCompleted(c) => c.result_document.iter().collect(),
        _ => Vec::new(),
    };
    for (index, d) in documents.into_iter().enumerate() {
        verify_document(certificates, d).map_err(|reason| Refusal::Document { index, reason })?;
    }
    Ok(())
}
