//! Grants: which agency may read which classes of a topic's personal data, for what purpose,
//! on what legal basis, until when. Decided by the city's admins, never by the reader: they
//! live on a compacted topic ([`GRANTS_TOPIC`]) that every key service reads, so a grant or a
//! revocation takes effect at every component within moments, without a restart.

use std::collections::{BTreeMap, BTreeSet};

use lienthong_bus::state_log::LogState;
use lienthong_contract::PersonalDataClass;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::PrivacyError;

/// The compacted topic of grants.
pub const GRANTS_TOPIC: &str = "_lienthong_pii_grants";

/// One grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The agency's unit code (`26734`, `STP`).
    pub agency: String,
    /// The catalog topic.
    pub topic: String,
    /// The personal-data classes it may read; the others stay masked.
    pub classes: BTreeSet<PersonalDataClass>,
    /// Why: the processing this serves (Law 91/2025/QH15 asks for one per processing).
    pub purpose: String,
    /// The legal basis (the decree, the procedure, the citizen's consent).
    pub legal_basis: String,
    /// Until when, milliseconds since the epoch (UTC).
    pub expires_at_ms: i64,
    /// Who granted it.
    pub granted_by: String,
    /// When, milliseconds since the epoch.
    pub granted_at_ms: i64,
}

impl Grant {
    /// Its id: the same agency, topic and purpose are one grant (granting again replaces it).
    pub fn id(&self) -> String {
        grant_id(&self.agency, &self.topic, &self.purpose)
    }

    /// Whether it is complete enough to be recorded.
    pub fn check(&self, now_ms: i64) -> Result<(), PrivacyError> {
        let missing = |what: &str| PrivacyError::Invalid(format!("a grant needs {what}"));
        if self.agency.trim().is_empty() {
            return Err(missing("an agency"));
        }
        if self.topic.trim().is_empty() {
            return Err(missing("a topic"));
        }
        if self.purpose.trim().is_empty() {
            return Err(missing("a purpose"));
        }
        if self.legal_basis.trim().is_empty() {
            return Err(missing("a legal basis"));
        }
        if self.classes.is_empty() || self.classes.contains(&PersonalDataClass::None) {
            return Err(missing("the personal-data classes it covers (not `none`)"));
        }
        if self.expires_at_ms <= now_ms {
            return Err(PrivacyError::Invalid(
                "the grant's expiry is in the past".into(),
            ));
        }
        Ok(())
    }
}

/// The id of the grant of `agency` on `topic` for `purpose`.
pub fn grant_id(agency: &str, topic: &str, purpose: &str) -> String {
    let mut h = Sha256::new();
    for part in [agency, topic, purpose.trim()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    format!("g-{}", hex::encode(&h.finalize()[..8]))
}

/// The grants as read from the log, by id.
#[derive(Debug, Default)]
pub struct Grants {
    by_id: BTreeMap<String, Grant>,
}

impl LogState for Grants {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Ok(id) = std::str::from_utf8(key) else {
            return;
        };
        match value {
            None => {
                self.by_id.remove(id);
            }
            Some(v) => {
                // A record whose id is not its grant's is skipped: nobody can slip a grant in
                // under another's id.
                if let Ok(grant) = serde_json::from_slice::<Grant>(v)
                    && grant.id() == id
                {
                    self.by_id.insert(id.to_string(), grant);
                }
            }
        }
    }
}

impl Grants {
    /// The grant `id`, if it is live at `now_ms`.
    pub fn live(&self, id: &str, now_ms: i64) -> Option<&Grant> {
        self.by_id.get(id).filter(|g| g.expires_at_ms > now_ms)
    }

    /// Every grant, live or expired, by id.
    pub fn all(&self) -> impl Iterator<Item = (&String, &Grant)> {
        self.by_id.iter()
    }

    /// The grant `id`.
    pub fn get(&self, id: &str) -> Option<&Grant> {
        self.by_id.get(id)
    }
}
