//! Pseudonyms: what stands for a citizen's personal id on the bus.
//!
//! `pseudonym = "pn1_" + hex(first 16 bytes of HMAC-SHA256(pseudonym key, personal id))`.
//!
//! Why a keyed hash: a personal id has 12 digits, so a plain hash of it is reversed by trying
//! every id, in minutes. Without the pseudonym key (derived from the city's master secret,
//! held by the key service) that is not possible. It is deterministic, so one citizen has one
//! pseudonym: the compacted citizen topic keeps one record per citizen, the citizen's records
//! stay on one partition and in order, and a case's applicant can be joined to the citizen's
//! record without either holding the id. 128 bits make a collision among 14 million citizens
//! negligible (about 10⁻²⁴). What it does not do: someone who holds the pseudonym key and
//! guesses an id can still tell that the id has records on the bus (never what they said,
//! once the citizen's data key is erased).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The prefix every pseudonym starts with (its version).
pub const PSEUDONYM_PREFIX: &str = "pn1_";

/// The pseudonym function, keyed.
#[derive(Clone)]
pub struct Pseudonyms {
    /// HMAC-SHA256 with the key already absorbed: each pseudonym clones it (the key's two
    /// blocks are not hashed again).
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonyms(<redacted>)")
    }
}

impl Pseudonyms {
    pub(crate) fn new(key: [u8; 32]) -> Self {
        let Ok(keyed) = <Hmac<Sha256> as KeyInit>::new_from_slice(&key) else {
            unreachable!("HMAC takes a key of any length")
        };
        Pseudonyms { keyed }
    }

    /// The pseudonym of `personal_id`. A value that already is a pseudonym is returned as it
    /// is, so sealing twice changes nothing.
    pub fn of(&self, personal_id: &str) -> String {
        if Self::is_pseudonym(personal_id) {
            return personal_id.to_string();
        }
        let mut mac = self.keyed.clone();
        mac.update(personal_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut hexed = [0u8; 32];
        let Ok(()) = hex::encode_to_slice(&digest[..16], &mut hexed) else {
            unreachable!("16 bytes are 32 hex digits")
        };
        let mut out = String::with_capacity(PSEUDONYM_PREFIX.len() + hexed.len());
        out.push_str(PSEUDONYM_PREFIX);
        // Hex digits are ASCII.
        out.extend(hexed.iter().map(|&b| char::from(b)));
        out
    }

    /// The 16 bytes a pseudonym stands for, or `None` if `value` is not one: the in-memory
    /// key of the key service's maps (fixed size, held in the table itself, so a lookup does
    /// not chase a pointer to a string).
    pub fn bytes(value: &str) -> Option<[u8; 16]> {
        let hexed = value.strip_prefix(PSEUDONYM_PREFIX)?;
        let mut out = [0u8; 16];
        // Lower-case hex only, as `of` writes it: one citizen, one spelling.
        if hexed.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        hex::decode_to_slice(hexed, &mut out).ok()?;
        Some(out)
    }

    /// Whether `value` has the shape of a pseudonym.
    pub fn is_pseudonym(value: &str) -> bool {
        value.len() == PSEUDONYM_PREFIX.len() + 32
            && value.starts_with(PSEUDONYM_PREFIX)
            && value[PSEUDONYM_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}
