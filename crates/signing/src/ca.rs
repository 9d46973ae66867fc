//! The city CA: one ECDSA P-256 key and its self-signed certificate, kept by the city's admins
//! (`lienthong cert ca-init`); it issues each agency's signing certificate
//! (`lienthong cert issue`).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};

use crate::cert::AgencyCertificate;
use crate::error::SigningError;

/// The CA's key file in its directory (PKCS #8 PEM, mode 0600).
pub const CA_KEY_FILE: &str = "ca.key";
/// The CA's certificate file in its directory (PEM): what every component trusts.
pub const CA_CERT_FILE: &str = "ca.crt";

/// The city CA.
pub struct CityCa {
    key: KeyPair,
    certificate: AgencyCertificate,
}

impl std::fmt::Debug for CityCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CityCa")
            .field("certificate", &self.certificate.id())
            .finish_non_exhaustive()
    }
}

/// What issuing gives an agency: its private key (PKCS #8 PEM: keep it with the agency) and
/// its certificate (public: on the certificate log).
pub struct Issued {
    /// The agency's private key.
    pub key_pem: String,
    /// The agency's certificate.
    pub certificate: AgencyCertificate,
}

fn rcgen_error(e: rcgen::Error) -> SigningError {
    SigningError::Certificate(e.to_string())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SigningError + '_ {
    move |source| SigningError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `days` from now, and now.
fn validity(days: u32) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    // A few minutes back: a clock a little behind still takes a fresh certificate.
    (
        now - time::Duration::minutes(5),
        now + time::Duration::days(i64::from(days)),
    )
}

fn serial() -> Result<SerialNumber, SigningError> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| SigningError::Certificate("no randomness for a serial number".into()))?;
    bytes[0] &= 0x7f; // a positive INTEGER
    Ok(SerialNumber::from_slice(&bytes))
}

impl CityCa {
    /// A new CA named `name`, valid `days`.
    pub fn generate(name: &str, days: u32) -> Result<CityCa, SigningError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_error)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "lienthong");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        (params.not_before, params.not_after) = validity(days);
        params.serial_number = Some(serial()?);
        let cert = params.self_signed(&key).map_err(rcgen_error)?;
        let certificate = AgencyCertificate::from_der(cert.der())?;
        Ok(CityCa { key, certificate })
    }

    /// The CA kept in `dir` ([`CA_KEY_FILE`], [`CA_CERT_FILE`]).
    pub fn load(dir: &Path) -> Result<CityCa, SigningError> {
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(rcgen_error)?;
        let certificate = AgencyCertificate::from_pem(&cert_pem)?;
        if key.public_key_raw() != public_key_of(&certificate)? {
            return Err(SigningError::Certificate(format!(
                "{} is not the key of {}",
                key_path.display(),
                cert_path.display()
            )));
        }
        Ok(CityCa { key, certificate })
    }

    /// Keep the CA in `dir`: the key readable by its owner only. Refuses to overwrite a CA.
    pub fn save(&self, dir: &Path) -> Result<(PathBuf, PathBuf), SigningError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);
        write_private(&key_path, &self.key.serialize_pem())?;
        std::fs::write(&cert_path, self.certificate.pem()).map_err(io(&cert_path))?;
        Ok((key_path, cert_path))
    }

    /// The CA's certificate: the trust anchor every component is given.
    pub fn certificate(&self) -> &AgencyCertificate {
        &self.certificate
    }

    /// A new signing key and certificate for `agency`, valid `days`.
    pub fn issue(&self, agency: &str, days: u32) -> Result<Issued, SigningError> {
        if agency.is_empty() || !agency.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(SigningError::Certificate(format!(
                "{agency:?} is not an agency code"
            )));
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_error)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, agency);
        dn.push(DnType::OrganizationName, "lienthong");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::ContentCommitment,
        ];
        (params.not_before, params.not_after) = validity(days);
        params.serial_number = Some(serial()?);
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_ca_cert_der(&self.certificate.der().to_vec().into(), &self.key)
            .map_err(rcgen_error)?;
        let cert = params.signed_by(&key, &issuer).map_err(rcgen_error)?;
        Ok(Issued {
            key_pem: key.serialize_pem(),
            certificate: AgencyCertificate::from_der(cert.der())?,
        })
    }
}

/// The raw public key of a certificate, as rcgen gives a key pair's.
fn public_key_of(certificate: &AgencyCertificate) -> Result<Vec<u8>, SigningError> {
    use x509_parser::prelude::*;
    let (_, cert) = parse_x509_certificate(certificate.der())
        .map_err(|e| SigningError::Certificate(e.to_string()))?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

/// Write `text` to a new file `path` readable by its owner only; an existing file is left as
/// it is (a key is never overwritten).
pub fn write_private(path: &Path, text: &str) -> Result<(), SigningError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io(path))?;
    file.write_all(text.as_bytes()).map_err(io(path))
}
