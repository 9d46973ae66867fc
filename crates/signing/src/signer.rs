//! An agency's signing key with its certificate: what the SDK and the gateway sign with.

use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};

use crate::cert::{AgencyCertificate, KeyKind};
use crate::error::SigningError;

/// An agency's key and certificate.
pub struct AgencySigner {
    certificate: AgencyCertificate,
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for AgencySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgencySigner")
            .field("agency", &self.certificate.agency())
            .field("certificate", &self.certificate.id())
            .finish_non_exhaustive()
    }
}

impl AgencySigner {
    /// The signer of the private key `key_pem` (PKCS #8 PEM) and its certificate; refused if
    /// the key is not the certificate's.
    pub fn from_pem(key_pem: &str, certificate: AgencyCertificate) -> Result<Self, SigningError> {
        if certificate.key_kind() != KeyKind::EcdsaP256 {
            return Err(SigningError::Certificate(
                "lienthong signs with ECDSA P-256 keys (the city CA issues them)".into(),
            ));
        }
        let (_, block) = x509_parser::pem::parse_x509_pem(key_pem.as_bytes())
            .map_err(|e| SigningError::Certificate(format!("not a PEM key: {e}")))?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &block.contents, &rng)
            .map_err(|e| SigningError::Certificate(format!("not a P-256 PKCS #8 key: {e}")))?;
        // The key must be the certificate's: sign and verify once.
        let probe = b"lienthong: is this the certificate's key?";
        let signature = key
            .sign(&rng, probe)
            .map_err(|_| SigningError::Certificate("the key does not sign".into()))?;
        if certificate
            .verify(probe, signature.as_ref(), certificate.not_before_ms())
            .is_err()
        {
            return Err(SigningError::Certificate(format!(
                "the key is not the key of certificate {}",
                certificate.id()
            )));
        }
        Ok(AgencySigner {
            certificate,
            key,
            rng,
        })
    }

    /// The signer of the key file and certificate file.
    pub fn load(key_file: &Path, certificate_file: &Path) -> Result<Self, SigningError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| SigningError::Io {
                path: p.display().to_string(),
                source,
            })
        };
        Self::from_pem(
            &read(key_file)?,
            AgencyCertificate::from_pem(&read(certificate_file)?)?,
        )
    }

    /// The certificate.
    pub fn certificate(&self) -> &AgencyCertificate {
        &self.certificate
    }

    /// The signature of `message` (ECDSA P-256 over SHA-256, ASN.1 DER).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SigningError> {
        self.key
            .sign(&self.rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| SigningError::BadSignature("signing failed".into()))
    }
}

/// The signers of a directory holding `<AGENCY>.key` and `<AGENCY>.crt` for each agency (as
/// `lienthong cert issue --out` writes them), by agency: what a gateway that signs for the
/// agencies posting to it holds. Refused if a key has no certificate, a certificate is not
/// its file's agency's, or a key is not its certificate's.
pub fn load_signers(
    dir: &Path,
) -> Result<std::collections::HashMap<String, AgencySigner>, SigningError> {
    let io = |source| SigningError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut signers = std::collections::HashMap::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("key") {
            continue;
        }
        let agency = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let certificate = path.with_extension("crt");
        let signer = AgencySigner::load(&path, &certificate)?;
        if signer.certificate().agency() != agency {
            return Err(SigningError::Certificate(format!(
                "{} is {}'s certificate, not {agency}'s",
                certificate.display(),
                signer.certificate().agency()
            )));
        }
        signers.insert(agency, signer);
    }
    Ok(signers)
}
