//! A certificate as lienthong uses it: whose key it is (the agency code in its subject's common
//! name), when it is valid, and the public key that verifies the agency's signatures: ECDSA
//! P-256 (the city CA issues these) or RSA (the national CAs issue these).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ECDSA_P256_SHA256_ASN1, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

use crate::error::SigningError;

/// The certificates (PEM files) of the CAs a process trusts (`trusted_cas` in its config: the
/// city CA's `ca.crt`, and any national CA's); refused if the list is empty or a file is not a
/// certificate, naming the file.
pub fn load_trusted_cas(
    paths: &[std::path::PathBuf],
) -> Result<Vec<AgencyCertificate>, SigningError> {
    if paths.is_empty() {
        return Err(SigningError::Certificate(
            "trusted_cas: name at least the city CA's ca.crt".into(),
        ));
    }
    paths
        .iter()
        .map(|path| {
            let pem = std::fs::read_to_string(path).map_err(|source| SigningError::Io {
                path: path.display().to_string(),
                source,
            })?;
            AgencyCertificate::from_pem(&pem).map_err(|e| {
                SigningError::Certificate(format!("trusted_cas: {}: {e}", path.display()))
            })
        })
        .collect()
}

/// A certificate's id: the hex of the first 16 bytes of SHA-256 over its DER. What a signature
/// names to say which key made it.
pub fn certificate_id(der: &[u8]) -> String {
    hex::encode(&Sha256::digest(der)[..16])
}

/// The kind of public key a certificate carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256, signatures over SHA-256, ASN.1 DER encoded.
    EcdsaP256,
    /// RSA, PKCS #1 v1.5 signatures over SHA-256, 2048 to 8192 bits.
    Rsa,
}

/// A parsed certificate.
#[derive(Debug, Clone)]
pub struct AgencyCertificate {
    der: Vec<u8>,
    id: String,
    subject: String,
    agency: String,
    issuer: String,
    serial: String,
    not_before_ms: i64,
    not_after_ms: i64,
    key_kind: KeyKind,
    /// The key as ring takes it: the subject public key's bit string.
    public_key: Vec<u8>,
}

const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const P256: &str = "1.2.840.10045.3.1.7";
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";

fn bad(what: impl std::fmt::Display) -> SigningError {
    SigningError::Certificate(what.to_string())
}

impl AgencyCertificate {
    /// The certificate in PEM (one `CERTIFICATE` block).
    pub fn from_pem(pem: &str) -> Result<Self, SigningError> {
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
        if block.label != "CERTIFICATE" {
            return Err(bad(format!(
                "a PEM {} block, not a CERTIFICATE",
                block.label
            )));
        }
        Self::from_der(&block.contents)
    }

    /// The certificate in DER.
    pub fn from_der(der: &[u8]) -> Result<Self, SigningError> {
        let (rest, cert) =
            parse_x509_certificate(der).map_err(|e| bad(format!("not a certificate: {e}")))?;
        if !rest.is_empty() {
            return Err(bad("bytes after the certificate"));
        }
        let spki = cert.public_key();
        let key_kind = match spki.algorithm.algorithm.to_id_string().as_str() {
            EC_PUBLIC_KEY => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string());
                if curve.as_deref() != Some(P256) {
                    return Err(bad(format!("an EC key on {curve:?}: only P-256 is taken")));
                }
                KeyKind::EcdsaP256
            }
            RSA_ENCRYPTION => KeyKind::Rsa,
            other => return Err(bad(format!("a public key of algorithm {other}: not taken"))),
        };
        let agency = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or_else(|| bad("no common name: whose key is it?"))?
            .to_string();
        let validity = cert.validity();
        Ok(AgencyCertificate {
            der: der.to_vec(),
            id: certificate_id(der),
            subject: cert.subject().to_string(),
            agency,
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string(),
            not_before_ms: validity.not_before.timestamp() * 1000,
            not_after_ms: validity.not_after.timestamp() * 1000,
            key_kind,
            public_key: spki.subject_public_key.data.to_vec(),
        })
    }

    /// Its id ([`certificate_id`]).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The agency whose key it is: its subject's common name.
    pub fn agency(&self) -> &str {
        &self.agency
    }

    /// The whole subject, as text.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The issuer, as text.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The serial number, as hex.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// Valid from, in milliseconds since the epoch.
    pub fn not_before_ms(&self) -> i64 {
        self.not_before_ms
    }

    /// Valid until, in milliseconds since the epoch.
    pub fn not_after_ms(&self) -> i64 {
        self.not_after_ms
    }

    /// The kind of key.
    pub fn key_kind(&self) -> KeyKind {
        self.key_kind
    }

    /// The DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The PEM.
    pub fn pem(&self) -> String {
        let text = STANDARD.encode(&self.der);
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in text.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        pem
    }

    /// Whether `ca` issued this certificate: its signature verifies under `ca`'s key.
    pub fn check_issued_by(&self, ca: &AgencyCertificate) -> Result<(), SigningError> {
        let (_, cert) = parse_x509_certificate(&self.der).map_err(|e| bad(e.to_string()))?;
        let (_, ca_cert) = parse_x509_certificate(&ca.der).map_err(|e| bad(e.to_string()))?;
        if cert.issuer() != ca_cert.subject() {
            return Err(bad(format!(
                "issued by {}, not by {}",
                cert.issuer(),
                ca_cert.subject()
            )));
        }
        cert.verify_signature(Some(ca_cert.public_key()))
            .map_err(|e| {
                bad(format!(
                    "its signature does not verify under {}: {e}",
                    ca.subject
                ))
            })
    }

    /// Whether `signature` is this certificate's key's signature of `message`, made at
    /// `signed_at_ms` within the certificate's validity.
    pub fn verify(
        &self,
        message: &[u8],
        signature: &[u8],
        signed_at_ms: i64,
    ) -> Result<(), SigningError> {
        if signed_at_ms < self.not_before_ms || signed_at_ms > self.not_after_ms {
            return Err(SigningError::BadSignature(format!(
                "made at {signed_at_ms}, outside certificate {}'s validity",
                self.id
            )));
        }
        let algorithm: &dyn ring::signature::VerificationAlgorithm = match self.key_kind {
            KeyKind::EcdsaP256 => &ECDSA_P256_SHA256_ASN1,
            KeyKind::Rsa => &RSA_PKCS1_2048_8192_SHA256,
        };
        UnparsedPublicKey::new(algorithm, &self.public_key)
            .verify(message, signature)
            .map_err(|_| {
                SigningError::BadSignature(format!(
                    "does not verify under certificate {} ({})",
                    self.id, self.agency
                ))
            })
    }
}
