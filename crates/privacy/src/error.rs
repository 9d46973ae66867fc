//! The one error type of the personal-data layer.

/// What can go wrong with keys and sealed fields.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// The master key could not be read or is not a key (config: fix and restart).
    #[error("master key: {0}")]
    MasterKey(String),
    /// A sealed value or a wrapped key does not open: tampered with, cut, or sealed under
    /// another key or for another citizen or topic. Permanent for that value.
    #[error("does not open: {0}")]
    Unreadable(String),
    /// A value cannot be sealed or put back (not the shape its schema says). Permanent.
    #[error("{0}")]
    Invalid(String),
    /// No live grant allows this read (none, expired, or revoked). Permanent until an admin
    /// grants it.
    #[error("not granted: {0}")]
    NotGranted(String),
    /// The key log could not be read or written (Kafka unreachable, timed out): retry.
    #[error("key log: {0}")]
    Log(#[source] lienthong_bus::BusError),
    /// The key service could not be asked (unreachable, timed out, a server error): retry.
    #[error("key service: {0}")]
    Unreachable(String),
    /// The key service refused the credential (config: fix it).
    #[error("key service: {0}")]
    Refused(String),
    /// The operating system gave no randomness.
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

impl PrivacyError {
    /// Worth retrying: only the key log's transient failures.
    pub fn is_transient(&self) -> bool {
        match self {
            PrivacyError::Log(e) => e.is_transient(),
            PrivacyError::Unreachable(_) => true,
            _ => false,
        }
    }
}
