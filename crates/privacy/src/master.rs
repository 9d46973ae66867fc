//! The city's master secret, and the one seam where a hardware security module or a cloud KMS
//! would come in: [`KeyWrap`].
//!
//! The master secret is 32 random bytes, base64, in a file (`[privacy] master_key_file`) or an
//! environment variable (`LIENTHONG_MASTER_KEY`). Two keys are derived from it with HKDF-SHA256
//! and never leave the process: the key-encryption key that wraps every citizen's data key, and
//! the pseudonym key ([`crate::Pseudonyms`]). Losing the secret loses every citizen's data on
//! the bus; leaking it lets the holder unwrap every data key that still exists (erased ones
//! are gone either way).

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hkdf::Hkdf;
use sha2::Sha256;

use crate::error::PrivacyError;
use crate::pseudonym::Pseudonyms;
use crate::seal::{DataKey, NONCE_LEN, random};

/// Wraps and unwraps data keys. [`LocalKek`] does it in process from the master secret; an HSM
/// or a KMS would implement the same two calls (and keep its key inside).
pub trait KeyWrap: Send + Sync {
    /// Names the wrapping key, stored beside each wrapped key so that keys wrapped under an
    /// older one can still be found after a rotation.
    fn id(&self) -> &str;
    /// `key`, encrypted and bound to `context` (the citizen's pseudonym).
    fn wrap(&self, key: &DataKey, context: &[u8]) -> Result<Vec<u8>, PrivacyError>;
    /// The key that [`KeyWrap::wrap`] wrapped with the same `context`.
    fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<DataKey, PrivacyError>;
}

/// The master secret: the two keys derived from it.
pub struct MasterKey {
    kek: LocalKek,
    pseudonyms: Pseudonyms,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// The environment variable that may hold the master secret.
pub const MASTER_KEY_ENV: &str = "LIENTHONG_MASTER_KEY";

impl MasterKey {
    /// From the base64 text of at least 32 random bytes (a file's content or a variable's).
    pub fn parse(text: &str) -> Result<MasterKey, PrivacyError> {
        let secret = STANDARD.decode(text.trim()).map_err(|e| {
            PrivacyError::MasterKey(format!(
                "not base64 ({e}); make one with `lienthong pii new-master-key`"
            ))
        })?;
        if secret.len() < 32 {
            return Err(PrivacyError::MasterKey(format!(
                "{} bytes; it must be at least 32 random bytes",
                secret.len()
            )));
        }
        let hkdf = Hkdf::<Sha256>::new(Some(b"lienthong"), &secret);
        let derive = |info: &[u8]| {
            let mut okm = [0u8; 32];
            hkdf.expand(info, &mut okm)
                .map_err(|e| PrivacyError::MasterKey(e.to_string()))?;
            Ok::<_, PrivacyError>(okm)
        };
        let kek = derive(b"key-encryption key v1")?;
        let pseudonym = derive(b"pseudonym key v1")?;
        // Names the key without revealing it: the first bytes of another derivation.
        let id = derive(b"key id v1")?;
        Ok(MasterKey {
            kek: LocalKek {
                id: format!("local-{}", hex::encode(&id[..4])),
                cipher: Aes256Gcm::new_from_slice(&kek)
                    .map_err(|e| PrivacyError::MasterKey(e.to_string()))?,
            },
            pseudonyms: Pseudonyms::new(pseudonym),
        })
    }

    /// From a file holding the base64 secret.
    pub fn from_file(path: &std::path::Path) -> Result<MasterKey, PrivacyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PrivacyError::MasterKey(format!("reading {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| PrivacyError::MasterKey(format!("{}: {e}", path.display())))
    }

    /// From [`MASTER_KEY_ENV`], if it is set.
    pub fn from_env() -> Result<Option<MasterKey>, PrivacyError> {
        match std::env::var(MASTER_KEY_ENV) {
            Ok(text) => Self::parse(&text)
                .map(Some)
                .map_err(|e| PrivacyError::MasterKey(format!("{MASTER_KEY_ENV}: {e}"))),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(e) => Err(PrivacyError::MasterKey(format!("{MASTER_KEY_ENV}: {e}"))),
        }
    }

    /// A new random secret, as the base64 text [`MasterKey::parse`] reads.
    pub fn generate() -> Result<String, PrivacyError> {
        let mut secret = [0u8; 32];
        random(&mut secret)?;
        Ok(STANDARD.encode(secret))
    }

    /// The key-encryption key, in process.
    pub fn kek(&self) -> &LocalKek {
        &self.kek
    }

    /// The pseudonym function.
    pub fn pseudonyms(&self) -> &Pseudonyms {
        &self.pseudonyms
    }
}

/// The key-encryption key held in process (derived from the master secret).
#[derive(Clone)]
pub struct LocalKek {
    id: String,
    cipher: Aes256Gcm,
}

impl KeyWrap for LocalKek {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, key: &DataKey, context: &[u8]) -> Result<Vec<u8>, PrivacyError> {
        let cipher = &self.cipher;
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce)?;
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: key.as_bytes(),
                    aad: context,
                },
            )
            .map_err(|_| PrivacyError::Invalid("wrapping a data key failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<DataKey, PrivacyError> {
        if wrapped.len() < NONCE_LEN {
            return Err(PrivacyError::Unreadable("a wrapped key too short".into()));
        }
        let cipher = &self.cipher;
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let key = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: context,
                },
            )
            .map_err(|_| {
                PrivacyError::Unreadable(format!(
                    "a data key that {} did not wrap for this citizen",
                    self.id
                ))
            })?;
        let bytes: [u8; 32] = key
            .try_into()
            .map_err(|_| PrivacyError::Unreadable("a data key of the wrong length".into()))?;
        Ok(DataKey::from_bytes(bytes))
    }
}
