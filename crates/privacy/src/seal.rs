//! The sealed form of a record's personal fields: the wire format.
//!
//! ```text
//! sealed    = "lt1." base64url-without-padding( nonce[12] || ciphertext || tag[16] )
//! algorithm = AES-256-GCM under the citizen's data key (32 bytes)
//! aad       = "lienthong/v1|" topic "|" pseudonym        (UTF-8)
//! plaintext = the Avro binary encoding of the record's `profile`, under the `profile`
//!             field's type in the record's writer schema (the schema id in its first 5 bytes)
//! ```
//!
//! The plaintext holds the profile's clear values exactly as the record would have carried
//! them, so a reader decodes it with the schema it already has for the record, in any
//! language (`fastavro.schemaless_reader` in Python). The associated data binds the ciphertext
//! to its topic and citizen, so a sealed value copied onto another citizen's record does not
//! open. A fresh random nonce is drawn for every seal.

use std::sync::Arc;

use aes_gcm::aead::{AeadInPlace, Nonce};
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

use crate::error::PrivacyError;

/// The version prefix of a sealed value.
pub const SEALED_PREFIX: &str = "lt1.";
/// AES-GCM's nonce length.
pub const NONCE_LEN: usize = 12;
/// AES-GCM's tag length.
const TAG_LEN: usize = 16;

/// One citizen's data key: 32 bytes for AES-256-GCM, with its expanded cipher (built once per
/// key, not per record). Clones share it. Never printed; the bytes and the expanded key are
/// zeroed when the last clone is dropped.
#[derive(Clone)]
pub struct DataKey(Arc<KeyInner>);

struct KeyInner {
    bytes: [u8; 32],
    /// Zeroed on drop by the `aes` crate's `zeroize` feature.
    cipher: Aes256Gcm,
}

impl Drop for KeyInner {
    fn drop(&mut self) {
        self.bytes = [0; 32];
        // Keeps the zeroing from being optimised away as a dead store.
        std::hint::black_box(&self.bytes);
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl DataKey {
    /// A new random key.
    pub fn generate() -> Result<DataKey, PrivacyError> {
        let mut key = [0u8; 32];
        random(&mut key)?;
        Ok(DataKey::from_bytes(key))
    }

    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> DataKey {
        let cipher = Aes256Gcm::new(&bytes.into());
        DataKey(Arc::new(KeyInner { bytes, cipher }))
    }

    /// The key's bytes (to hand it to a granted reader).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0.bytes
    }
}

/// Fill `out` from the operating system's randomness (keys, identifiers).
pub(crate) fn random(out: &mut [u8]) -> Result<(), PrivacyError> {
    getrandom::fill(out).map_err(|e| PrivacyError::Random(e.to_string()))
}

/// The associated data of a sealed value on `topic` for the citizen `pseudonym`.
pub fn aad(topic: &str, pseudonym: &str) -> Vec<u8> {
    const VERSION: &[u8] = b"lienthong/v1|";
    let mut aad = Vec::with_capacity(VERSION.len() + topic.len() + 1 + pseudonym.len());
    aad.extend_from_slice(VERSION);
    aad.extend_from_slice(topic.as_bytes());
    aad.push(b'|');
    aad.extend_from_slice(pseudonym.as_bytes());
    aad
}

/// Seal `plaintext` under `key`, bound to `aad`. The nonce is 96 random bits from the
/// thread's ChaCha12 generator (seeded from the operating system): with random nonces one key
/// stays safe for 2³² seals, and one citizen's records are sealed far fewer times than that.
pub fn seal(key: &DataKey, aad: &[u8], plaintext: &[u8]) -> Result<String, PrivacyError> {
    let mut raw = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    raw.resize(NONCE_LEN, 0);
    rand::rng().fill_bytes(&mut raw);
    raw.extend_from_slice(plaintext);
    let (nonce, body) = raw.split_at_mut(NONCE_LEN);
    let tag = key
        .0
        .cipher
        .encrypt_in_place_detached(Nonce::<Aes256Gcm>::from_slice(nonce), aad, body)
        .map_err(|_| PrivacyError::Invalid("sealing failed".into()))?;
    raw.extend_from_slice(&tag);
    let mut out = String::with_capacity(SEALED_PREFIX.len() + raw.len().div_ceil(3) * 4);
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
    if raw.len() < NONCE_LEN + TAG_LEN {
        return Err(PrivacyError::Unreadable("too short to be sealed".into()));
    }
    let (nonce, sealed) = raw.split_at(NONCE_LEN);
    let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
    let mut clear = body.to_vec();
    key.0
        .cipher
        .decrypt_in_place_detached(
            Nonce::<Aes256Gcm>::from_slice(nonce),
            aad,
            &mut clear,
            aes_gcm::Tag::from_slice(tag),
        )
        .map(|()| clear)
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
