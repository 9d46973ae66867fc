//! The crate's one error type.

/// What can go wrong with certificates and signatures.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// A certificate, key or CA file that is not what it should be (config: fix it).
    #[error("certificate: {0}")]
    Certificate(String),
    /// A signature that does not verify, or is not one.
    #[error("signature: {0}")]
    BadSignature(String),
    /// No certificate with this id is known.
    #[error("unknown certificate {0}")]
    UnknownCertificate(String),
    /// The certificate was revoked before the signing time.
    #[error("certificate {id} revoked: {reason}")]
    Revoked {
        /// The certificate's id.
        id: String,
        /// Why, as the admin said.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The certificate log or the audit trail could not be read or written (Kafka
    /// unreachable, timed out): retry.
    #[error("{0}")]
    Log(lienthong_bus::BusError),
}

impl SigningError {
    /// Whether trying again may succeed (the certificate log unreachable); the others are
    /// permanent.
    pub fn is_transient(&self) -> bool {
        matches!(self, SigningError::Log(_))
    }
}
