//! The record of every release of a citizen's data key: which agency, which citizen (by
//! pseudonym), which topic, for which purpose, under which grant, when. One append-only
//! record per release on [`ACCESS_TOPIC`] (compacted, but every record has a key of its own, so
//! none is ever compacted away). A connector's store commit waits until the records of the
//! keys it used are on it ([`crate::KeyService::flush`]): no row is opened with a key whose
//! release is not recorded.
//!
//! The records outlive an erasure: they hold the pseudonym, never the citizen's data, and an
//! officer can still show who read an erased citizen's data, and when
//! (`lienthong pii report --citizen ID`).

use lienthong_bus::state_log::LogState;
use serde::{Deserialize, Serialize};

/// The topic of access records.
pub const ACCESS_TOPIC: &str = "_lienthong_pii_access";

/// One release of a citizen's key, or an erasure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRecord {
    /// When, milliseconds since the epoch (UTC).
    pub at_ms: i64,
    /// The agency that got the key (or erased it).
    pub agency: String,
    /// The citizen.
    pub pseudonym: String,
    /// The catalog topic whose records the key opens.
    pub topic: String,
    /// The purpose stated.
    pub purpose: String,
    /// What allowed it: a grant's id, or the open case that made it need-to-know.
    pub basis: String,
    /// `released` (a reader got the key), `sealed` (a publisher got it to seal), `erased`.
    pub action: String,
}

/// The key of an access record: the citizen's pseudonym, then a unique suffix.
pub(crate) fn record_key(pseudonym: &str) -> Result<Vec<u8>, crate::PrivacyError> {
    let mut suffix = [0u8; 8];
    crate::seal::random(&mut suffix)?;
    Ok(format!("{pseudonym}/{}", hex::encode(suffix)).into_bytes())
}

/// What the key service keeps of the access log: only how many records it has seen.
#[derive(Debug, Default)]
pub struct AccessCount(pub u64);

impl LogState for AccessCount {
    fn apply(&mut self, _key: &[u8], value: Option<&[u8]>) {
        if value.is_some() {
            self.0 += 1;
        }
    }
}

/// The access records of one citizen, as a report reads them from the whole log.
#[derive(Debug, Default)]
pub struct CitizenAccess {
    pseudonym: String,
    /// Its records, in log order.
    pub records: Vec<AccessRecord>,
}

impl CitizenAccess {
    /// An empty report on the citizen `pseudonym`.
    pub fn new(pseudonym: String) -> Self {
        CitizenAccess {
            pseudonym,
            records: Vec::new(),
        }
    }
}

impl LogState for CitizenAccess {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Some(value) = value else { return };
        let prefix = self.pseudonym.as_bytes();
        if key.len() > prefix.len()
            && key.starts_with(prefix)
            && key[prefix.len()] == b'/'
            && let Ok(record) = serde_json::from_slice::<AccessRecord>(value)
            && record.pseudonym == self.pseudonym
        {
            self.records.push(record);
        }
    }
}
