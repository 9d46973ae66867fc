//! The registry's state, rebuilt by applying the schema log in order.
//!
//! Every instance applies the same records in the same (log) order with the same deterministic
//! rules, so every instance reaches the same state. That is what makes concurrent registration
//! safe without a leader:
//!
//! - A registration is a **proposal**: "subject S, version v, id i, schema X". It is accepted
//!   only if version v is the next version of S, and id i is either already X's id or a new id
//!   above every id ever accepted. Otherwise it is rejected, and the instance that proposed it
//!   retries on the new state.
//! - So when two instances propose the same new id for two different schemas, the one whose
//!   record comes first in the log wins and the other is rejected: **one id can never name two
//!   schemas**, and ids are never reused (permanently deleted ids stay reserved).
//! - Records are never overwritten: proposals are keyed by a unique proposal id and deletions
//!   have keys of their own, so compaction can never reorder an accepted proposal after a
//!   rejected one. Only config records share keys (latest wins, which is what config means).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use apache_avro::Schema;
use lienthong_contract::CompatibilityMode;
use serde::{Deserialize, Serialize};

/// The largest id ever given: Java clients hold ids in a signed 32-bit int.
pub const MAX_ID: u32 = i32::MAX as u32;

/// A schema's identity with its references: two registrations are the same schema exactly when
/// these are equal. See [`lienthong_contract::codec::schema_identity`] for why this is not
/// Avro's canonical form.
pub fn identity_of(schema: &str, references: &[Reference]) -> Result<String, String> {
    let mut identity = lienthong_contract::codec::schema_identity(schema)?;
    if !references.is_empty() {
        identity.push('|');
        identity.push_str(&serde_json::to_string(references).map_err(|e| e.to_string())?);
    }
    Ok(identity)
}

/// Parse a schema, treating a panic inside the Avro library as "does not parse": registry input
/// comes from any agency, and one bad record must never stop the log's reader.
pub fn guarded_parse(state: &State, schema: &str, references: &[Reference]) -> Option<Schema> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        state.parse_with_references(schema, references).ok()
    }))
    .ok()
    .flatten()
}

/// A schema reference (Confluent's `references`): a named type defined in another subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// The full name of the referenced type.
    pub name: String,
    /// The subject that holds it.
    pub subject: String,
    /// The version of that subject.
    pub version: u32,
}

/// The key of a schema-log record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LogKey {
    /// A registration proposal.
    Schema {
        /// Subject.
        subject: String,
        /// Proposed version.
        version: u32,
        /// Unique id of the proposal.
        proposal: String,
    },
    /// A deletion of one version.
    Delete {
        /// Subject.
        subject: String,
        /// Version.
        version: u32,
        /// Permanent (the schema text is dropped) or soft.
        permanent: bool,
    },
    /// Compatibility config, global (`subject: None`) or per subject.
    Config {
        /// Subject, or none for the global config.
        subject: Option<String>,
    },
}

/// The value of a registration proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Proposed id.
    pub id: u32,
    /// The schema's identity ([`identity_of`]), computed by the proposer and stored, so that
    /// replaying the log decides from recorded fields only, whatever Avro library replays it.
    pub identity: String,
    /// The schema text as registered.
    pub schema: String,
    /// References it depends on.
    #[serde(default)]
    pub references: Vec<Reference>,
    /// The agency that registered it (for the audit trail).
    pub agency: String,
}

/// The value of a config record; `None` compatibility removes a subject's own config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigValue {
    /// The mode.
    pub compatibility: Option<CompatibilityMode>,
    /// The agency that set it.
    pub agency: String,
}

/// One schema known by id.
#[derive(Debug)]
pub struct SchemaEntry {
    /// Its id.
    pub id: u32,
    /// The text as first registered; `None` once every version using it was permanently
    /// deleted (the id stays reserved).
    pub schema: Option<String>,
    /// Its identity ([`identity_of`]).
    pub identity: String,
    /// Parsed, for compatibility checks.
    pub parsed: Option<Schema>,
    /// References.
    pub references: Vec<Reference>,
}

/// One version of a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionEntry {
    /// Schema id.
    pub id: u32,
    /// Soft-deleted.
    pub deleted: bool,
}

/// A subject's versions.
#[derive(Debug, Default)]
pub struct SubjectEntry {
    /// Live and soft-deleted versions (permanently deleted ones are removed).
    pub versions: BTreeMap<u32, VersionEntry>,
    /// Highest version ever accepted, so version numbers are never reused.
    pub last_version: u32,
}

impl SubjectEntry {
    /// Versions not deleted, in order.
    pub fn live(&self) -> impl Iterator<Item = (u32, VersionEntry)> + '_ {
        self.versions
            .iter()
            .filter(|(_, v)| !v.deleted)
            .map(|(n, v)| (*n, *v))
    }
}

/// What applying a proposal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted with this id and version.
    Accepted {
        /// Id.
        id: u32,
        /// Version.
        version: u32,
    },
    /// Rejected: the state changed under the proposer, who retries.
    Rejected,
}

/// The whole registry state.
#[derive(Debug)]
pub struct State {
    /// Schemas by id.
    pub schemas: HashMap<u32, Arc<SchemaEntry>>,
    /// Ids by identity.
    pub by_identity: HashMap<String, u32>,
    /// Highest id ever accepted.
    pub max_id: u32,
    /// Subjects.
    pub subjects: BTreeMap<String, SubjectEntry>,
    /// Global compatibility.
    pub global_compat: CompatibilityMode,
    /// Per-subject compatibility.
    pub subject_compat: HashMap<String, CompatibilityMode>,
    /// Outcome of each proposal seen, by proposal id, so a proposer learns its fate.
    pub outcomes: HashMap<String, Outcome>,
}

impl State {
    /// An empty state with a global default mode.
    pub fn new(global_compat: CompatibilityMode) -> Self {
        State {
            schemas: HashMap::new(),
            by_identity: HashMap::new(),
            max_id: 0,
            subjects: BTreeMap::new(),
            global_compat,
            subject_compat: HashMap::new(),
            outcomes: HashMap::new(),
        }
    }

    /// The mode in force for `subject`.
    pub fn compat_for(&self, subject: &str) -> CompatibilityMode {
        self.subject_compat
            .get(subject)
            .copied()
            .unwrap_or(self.global_compat)
    }

    /// Parse a schema with its references, as registration and apply both do.
    pub fn parse_with_references(
        &self,
        schema: &str,
        references: &[Reference],
    ) -> Result<Schema, String> {
        if references.is_empty() {
            return Schema::parse_str(schema).map_err(|e| e.to_string());
        }
        let mut texts = Vec::with_capacity(references.len() + 1);
        for r in references {
            let text = self
                .subjects
                .get(&r.subject)
                .and_then(|s| s.versions.get(&r.version))
                .and_then(|v| self.schemas.get(&v.id))
                .and_then(|e| e.schema.clone())
                .ok_or_else(|| {
                    format!(
                        "reference {:?} to subject {:?} version {} does not exist",
                        r.name, r.subject, r.version
                    )
                })?;
            texts.push(text);
        }
        texts.push(schema.to_string());
        let mut parsed =
            Schema::parse_list(texts.iter().map(String::as_str)).map_err(|e| e.to_string())?;
        parsed.pop().ok_or_else(|| "empty schema list".to_string())
    }

    /// Apply one log record. `value` is `None` for a Kafka tombstone (ignored: nothing here is
    /// ever deleted by tombstone). Malformed records are skipped, deterministically.
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Ok(key) = serde_json::from_slice::<LogKey>(key) else {
            return;
        };
        let Some(value) = value else { return };
        match key {
            LogKey::Schema {
                subject,
                version,
                proposal: proposal_id,
            } => {
                let outcome = match serde_json::from_slice::<Proposal>(value) {
                    Ok(p) => self.apply_proposal(&subject, version, p),
                    Err(_) => Outcome::Rejected,
                };
                self.outcomes.insert(proposal_id, outcome);
            }
            LogKey::Delete {
                subject,
                version,
                permanent,
            } => self.apply_delete(&subject, version, permanent),
            LogKey::Config { subject } => {
                let Ok(cfg) = serde_json::from_slice::<ConfigValue>(value) else {
                    return;
                };
                match (subject, cfg.compatibility) {
                    (None, Some(mode)) => self.global_compat = mode,
                    (None, None) => {}
                    (Some(s), Some(mode)) => {
                        self.subject_compat.insert(s, mode);
                    }
                    (Some(s), None) => {
                        self.subject_compat.remove(&s);
                    }
                }
            }
        }
    }

    fn apply_proposal(&mut self, subject: &str, version: u32, p: Proposal) -> Outcome {
        let last = self.subjects.get(subject).map_or(0, |s| s.last_version);
        // Ids stay within what Java clients can hold (a signed 32-bit int).
        if version != last + 1 || p.id == 0 || p.id > MAX_ID {
            return Outcome::Rejected;
        }
        match self.by_identity.get(&p.identity) {
            Some(&existing) if existing != p.id => return Outcome::Rejected,
            Some(_) => {}
            None if p.id <= self.max_id => return Outcome::Rejected, // ids are never reused
            None => {}
        }
        if let Some(s) = self.subjects.get(subject)
            && s.live().any(|(_, v)| v.id == p.id)
        {
            return Outcome::Rejected; // already registered: nothing new to record
        }
        let needs_text = self.schemas.get(&p.id).is_none_or(|e| e.schema.is_none());
        if needs_text {
            // New, or revived after a permanent delete. Parsing is for later compatibility
            // checks only; the decision above stands on the recorded fields.
            let parsed = guarded_parse(self, &p.schema, &p.references);
            self.schemas.insert(
                p.id,
                Arc::new(SchemaEntry {
                    id: p.id,
                    schema: Some(p.schema),
                    identity: p.identity.clone(),
                    parsed,
                    references: p.references,
                }),
            );
        }
        self.by_identity.insert(p.identity, p.id);
        self.max_id = self.max_id.max(p.id);
        let s = self.subjects.entry(subject.to_string()).or_default();
        s.versions.insert(
            version,
            VersionEntry {
                id: p.id,
                deleted: false,
            },
        );
        s.last_version = version;
        Outcome::Accepted { id: p.id, version }
    }

    fn apply_delete(&mut self, subject: &str, version: u32, permanent: bool) {
        let Some(s) = self.subjects.get_mut(subject) else {
            return;
        };
        let Some(v) = s.versions.get_mut(&version) else {
            return;
        };
        if !permanent {
            v.deleted = true;
            return;
        }
        if !v.deleted {
            return; // permanent deletion needs a soft deletion first, as in Confluent's API
        }
        let id = v.id;
        s.versions.remove(&version);
        // Drop the text once no version anywhere uses the id; the id itself stays reserved.
        let still_used = self
            .subjects
            .values()
            .any(|s| s.versions.values().any(|v| v.id == id));
        if !still_used && let Some(entry) = self.schemas.get_mut(&id) {
            *entry = Arc::new(SchemaEntry {
                id,
                schema: None,
                identity: entry.identity.clone(),
                parsed: None,
                references: Vec::new(),
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const A: &str = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"int"}]}"#;
    const B: &str = r#"{"type":"record","name":"B","fields":[{"name":"y","type":"string"}]}"#;

    fn propose(
        state: &mut State,
        subject: &str,
        version: u32,
        id: u32,
        schema: &str,
        proposal: &str,
    ) -> Outcome {
        let key = serde_json::to_vec(&LogKey::Schema {
            subject: subject.into(),
            version,
            proposal: proposal.into(),
        })
        .unwrap();
        let value = serde_json::to_vec(&Proposal {
            id,
            identity: identity_of(schema, &[]).unwrap_or_default(),
            schema: schema.into(),
            references: vec![],
            agency: "STP".into(),
        })
        .unwrap();
        state.apply(&key, Some(&value));
        state.outcomes[proposal]
    }

    #[test]
    fn the_first_claim_on_an_id_wins_and_the_second_is_rejected() {
        let mut s = State::new(CompatibilityMode::Backward);
        // Two instances both saw max_id = 0 and propose id 1 for different schemas.
        assert_eq!(
            propose(&mut s, "a", 1, 1, A, "p1"),
            Outcome::Accepted { id: 1, version: 1 }
        );
        assert_eq!(propose(&mut s, "b", 1, 1, B, "p2"), Outcome::Rejected);
        // The loser retries with the next id.
        assert_eq!(
            propose(&mut s, "b", 1, 2, B, "p3"),
            Outcome::Accepted { id: 2, version: 1 }
        );
        assert_eq!(s.schemas[&1].identity, identity_of(A, &[]).unwrap());
    }

    #[test]
    fn the_same_schema_keeps_its_id_across_subjects_and_versions_are_not_reused() {
        let mut s = State::new(CompatibilityMode::Backward);
        propose(&mut s, "a", 1, 1, A, "p1");
        assert_eq!(
            propose(&mut s, "b", 1, 2, A, "p2"),
            Outcome::Rejected,
            "A already has id 1"
        );
        assert_eq!(
            propose(&mut s, "b", 1, 1, A, "p3"),
            Outcome::Accepted { id: 1, version: 1 }
        );
        assert_eq!(
            propose(&mut s, "a", 1, 2, B, "p4"),
            Outcome::Rejected,
            "version 1 of a is taken"
        );
        let del = |s: &mut State, permanent| {
            let key = serde_json::to_vec(&LogKey::Delete {
                subject: "a".into(),
                version: 1,
                permanent,
            })
            .unwrap();
            s.apply(&key, Some(b"{}"));
        };
        del(&mut s, true);
        assert!(
            !s.subjects["a"].versions[&1].deleted,
            "permanent needs soft first"
        );
        del(&mut s, false);
        del(&mut s, true);
        assert!(s.subjects["a"].versions.is_empty());
        assert!(s.schemas[&1].schema.is_some(), "still used by subject b");
        assert_eq!(
            propose(&mut s, "a", 2, 2, B, "p5"),
            Outcome::Accepted { id: 2, version: 2 }
        );
    }

    #[test]
    fn malformed_records_are_skipped() {
        let mut s = State::new(CompatibilityMode::Backward);
        s.apply(b"not json", Some(b"{}"));
        s.apply(
            br#"{"kind":"SCHEMA","subject":"a","version":1,"proposal":"p"}"#,
            Some(b"garbage"),
        );
        assert_eq!(s.outcomes["p"], Outcome::Rejected);
        s.apply(
            br#"{"kind":"SCHEMA","subject":"a","version":1,"proposal":"q"}"#,
            Some(br#"{"id":1,"schema":"{bad","agency":"X"}"#),
        );
        assert_eq!(s.outcomes["q"], Outcome::Rejected);
        assert!(s.subjects.is_empty());
    }
}
