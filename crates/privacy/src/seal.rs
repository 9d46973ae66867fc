//! The sealed form of a record's personal fields: the wire format.
//!
//! ```text
//! sealed    = "lt1." base64url-without-padding( nonce[12] || ciphertext || tag[16] )
//! algorithm = AES-256-GCM under the citizen's data key (32 bytes)
//! aad       = "lienthong/v1|" topic "|" pseudonym        (UTF-8)
//! plaintext = a JSON object (UTF-8): {"<dotted field path>": <value>, ...}
//! ```
//!
//! The object holds every sealed field that was not null, by its path in the record
//! (`"profile.full_name"`), with its value as JSON: text as a string, a date as days since
//! 1970-01-01, an enum as its symbol. The associated data binds the ciphertext to its topic
//! and citizen, so a sealed value copied onto another citizen's record does not open. A fresh
//! random nonce is drawn for every seal.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::PrivacyError;

/// The version prefix of a sealed value.
pub const SEALED_PREFIX: &str = "lt1.";
/// AES-GCM's nonce length.
pub const NONCE_LEN: usize = 12;

/// One citizen's data key: 32 bytes for AES-256-GCM. Never printed; zeroed when dropped.
#[derive(Clone)]
pub struct DataKey([u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0 = [0; 32];
        // Keeps the zeroing from being optimised away as a dead store.
        std::hint::black_box(&self.0);
    }
}

impl DataKey {
    /// A new random key.
    pub fn generate() -> Result<DataKey, PrivacyError> {
        let mut key = [0u8; 32];
        random(&mut key)?;
        Ok(DataKey(key))
    }

    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> DataKey {
        DataKey(bytes)
    }

    /// The key's bytes (to hand it to a granted reader).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Fill `out` from the operating system's randomness.
pub(crate) fn random(out: &mut [u8]) -> Result<(), PrivacyError> {
    getrandom::fill(out).map_err(|e| PrivacyError::Random(e.to_string()))
}

/// The associated data of a sealed value on `topic` for the citizen `pseudonym`.
pub fn aad(topic: &str, pseudonym: &str) -> Vec<u8> {
    format!("lienthong/v1|{topic}|{pseudonym}").into_bytes()
}

/// Seal `plaintext` under `key`, bound to `aad`.
pub fn seal(key: &DataKey, aad: &[u8], plaintext: &[u8]) -> Result<String, PrivacyError> {
    let cipher = Aes256Gcm::new_from_slice(key.as_bytes())
        .map_err(|e| PrivacyError::Invalid(e.to_string()))?;
    let mut nonce = [0u8; NONCE_LEN];
    random(&mut nonce)?;
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| PrivacyError::Invalid("sealing failed".into()))?;
    let mut raw = Vec::with_capacity(NONCE_LEN + sealed.len());
    raw.extend_from_slice(&nonce);
    raw.extend_from_slice(&sealed);
    let mut out = String::with_capacity(SEALED_PREFIX.len() + raw.len() * 4 / 3 + 4);
    out.push_str(SEALED_PREFIX);
    URL_SAFE_NO_PAD.encode_string(&raw, &mut out);
    Ok(out)
}

/// Open what [`seal`] sealed under `key` with the same `aad`.
pub fn open(key: &DataKey, aad: &[u8], sealed: &str) -> Result<Vec<u8>, PrivacyError> {
    let body = sealed.strip_prefix(SEALED_PREFIX).ok_or_else(|| {
        PrivacyError::Unreadable(format!("not a sealed value (no {SEALED_PREFIX:?} prefix)"))
    })?;
    let raw = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|e| PrivacyError::Unreadable(format!("not base64url: {e}")))?;
    if raw.len() < NONCE_LEN + 16 {
        return Err(PrivacyError::Unreadable("too short to be sealed".into()));
    }
    let cipher = Aes256Gcm::new_from_slice(key.as_bytes())
        .map_err(|e| PrivacyError::Invalid(e.to_string()))?;
    let (nonce, sealed) = raw.split_at(NONCE_LEN);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
        .map_err(|_| {
            PrivacyError::Unreadable(
                "authentication failed: another key, another citizen or topic, or altered".into(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_its_binding() {
        let key = DataKey::generate().unwrap();
        let other = DataKey::generate().unwrap();
        let bound = aad("hcm.citizen.records", "pn1_00");
        let sealed = seal(&key, &bound, b"{\"a\":1}").unwrap();
        assert!(sealed.starts_with(SEALED_PREFIX));
        assert_eq!(open(&key, &bound, &sealed).unwrap(), b"{\"a\":1}");
        // Two seals of the same text differ (fresh nonce).
        assert_ne!(seal(&key, &bound, b"{\"a\":1}").unwrap(), sealed);
        assert!(matches!(
            open(&other, &bound, &sealed),
            Err(PrivacyError::Unreadable(_))
        ));
        let elsewhere = aad("hcm.citizen.records", "pn1_01");
        assert!(open(&key, &elsewhere, &sealed).is_err());
        // Altered, cut, or not sealed at all: a clear error, never a panic.
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert!(open(&key, &bound, std::str::from_utf8(&altered).unwrap()).is_err());
        assert!(open(&key, &bound, &sealed[..10]).is_err());
        assert!(open(&key, &bound, "Nguyễn Văn A").is_err());
        assert!(open(&key, &bound, "lt1.!!!").is_err());
        assert!(open(&key, &bound, "lt1.").is_err());
    }
}
