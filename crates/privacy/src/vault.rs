//! The key service's store: every citizen's data key, wrapped under the key-encryption key,
//! one record per pseudonym on a compacted topic ([`KEYS_TOPIC`]). Erasing a citizen writes a
//! tombstone: the key is gone from every instance at once and, once compaction has run, from
//! the broker's disks; every sealed copy of the citizen's data is then unreadable for good.
//!
//! One instance (the one in `lienthong up`) creates keys: two instances creating a key for the
//! same new citizen at the same moment would each seal with their own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lienthong_bus::state_log::{LogState, StateLog, StateLogConfig};
use rdkafka::consumer::ConsumerContext;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::PrivacyError;
use crate::master::{KeyWrap, MasterKey};
use crate::pseudonym::Pseudonyms;
use crate::seal::DataKey;

/// The compacted topic of wrapped data keys.
pub const KEYS_TOPIC: &str = "_lienthong_citizen_keys";

const LOG: &str = "key log";
const TIMEOUT: Duration = Duration::from_secs(15);

/// Topic settings that make an erased key leave the broker's disks soon: segments roll every
/// hour (compaction never touches the active one) and are compacted as soon as anything in
/// them is superseded; the tombstone itself, which holds no key, is kept a day so that every
/// reader sees it.
pub fn keys_topic_config() -> Vec<(String, String)> {
    [
        ("segment.ms", "3600000"),
        ("min.cleanable.dirty.ratio", "0.01"),
        ("delete.retention.ms", "86400000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// One record's value: which key-encryption key wrapped it, and the wrapped key.
#[derive(Debug, Serialize, Deserialize)]
struct WrappedRecord {
    kek: String,
    wrapped: String,
}

/// One citizen's key as the log holds it: which key-encryption key wrapped it, the wrapped
/// bytes, and the key once unwrapped by this instance (dropped with the entry on erasure).
#[derive(Debug)]
struct Entry {
    #[allow(dead_code)] // for a rotation: which wrapping key to ask
    kek: String,
    wrapped: Vec<u8>,
    unwrapped: std::sync::OnceLock<DataKey>,
}

/// The wrapped keys as read from the log, by pseudonym.
#[derive(Debug, Default)]
pub struct WrappedKeys {
    /// By the pseudonym's 16 bytes ([`Pseudonyms::bytes`]).
    keys: HashMap<[u8; 16], Entry, foldhash::fast::RandomState>,
}

impl LogState for WrappedKeys {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        // A record under a key that is no pseudonym is no citizen's key: skipped.
        let Some(pseudonym) = std::str::from_utf8(key).ok().and_then(Pseudonyms::bytes) else {
            return;
        };
        match value {
            None => {
                self.keys.remove(&pseudonym);
            }
            Some(v) => {
                let Ok(record) = serde_json::from_slice::<WrappedRecord>(v) else {
                    return;
                };
                let Ok(wrapped) = STANDARD.decode(&record.wrapped) else {
                    return;
                };
                self.keys.insert(
                    pseudonym,
                    Entry {
                        kek: record.kek,
                        wrapped,
                        unwrapped: std::sync::OnceLock::new(),
                    },
                );
            }
        }
    }
}

impl WrappedKeys {
    /// How many citizens have a key.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no citizen has a key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A citizen's pseudonym and data key, for sealing.
#[derive(Debug, Clone)]
pub struct CitizenKey {
    /// The pseudonym that stands for the personal id.
    pub pseudonym: String,
    /// The data key.
    pub key: DataKey,
}

/// The key service's store.
pub struct KeyVault<C: ConsumerContext + 'static> {
    log: StateLog<WrappedKeys, C>,
    kek: Arc<dyn KeyWrap>,
    pseudonyms: Pseudonyms,
    /// Keys are created one at a time, so two publishes of one new citizen share one key.
    creating: tokio::sync::Mutex<()>,
}

impl<C: ConsumerContext + Clone + 'static> KeyVault<C> {
    /// A vault in memory (tests, the embedded demo), under `master`.
    pub fn in_memory(master: &MasterKey) -> Self {
        Self::with_log(StateLog::in_memory(LOG, WrappedKeys::default()), master)
    }

    /// The vault on Kafka (`config.topic`, normally [`KEYS_TOPIC`]), read to its end.
    pub async fn open(
        config: &StateLogConfig,
        master: &MasterKey,
        context: C,
        shutdown: CancellationToken,
    ) -> Result<Self, PrivacyError> {
        let log = StateLog::open(LOG, config, WrappedKeys::default(), context, shutdown)
            .await
            .map_err(PrivacyError::Log)?;
        Ok(Self::with_log(log, master))
    }

    fn with_log(log: StateLog<WrappedKeys, C>, master: &MasterKey) -> Self {
        KeyVault {
            log,
            kek: Arc::new(master.kek().clone()),
            pseudonyms: master.pseudonyms().clone(),
            creating: tokio::sync::Mutex::new(()),
        }
    }

    /// The pseudonym of `personal_id`.
    pub fn pseudonym(&self, personal_id: &str) -> String {
        self.pseudonyms.of(personal_id)
    }

    /// The pseudonym function.
    pub fn pseudonyms(&self) -> &Pseudonyms {
        &self.pseudonyms
    }

    /// How many citizens have a key now.
    pub fn citizens(&self) -> usize {
        self.log.read().len()
    }

    /// The key of the citizen `pseudonym`, or `None` if there is none (never created, or
    /// erased).
    pub fn key(&self, pseudonym: &str) -> Result<Option<DataKey>, PrivacyError> {
        let state = self.log.read();
        let Some(entry) = Pseudonyms::bytes(pseudonym).and_then(|p| state.keys.get(&p)) else {
            return Ok(None);
        };
        if let Some(key) = entry.unwrapped.get() {
            return Ok(Some(key.clone()));
        }
        let key = self.kek.unwrap(&entry.wrapped, pseudonym.as_bytes())?;
        Ok(Some(entry.unwrapped.get_or_init(|| key).clone()))
    }

    /// The citizen's pseudonym and data key, the key created (and written to the log) if the
    /// citizen has none yet: what a publisher seals with.
    pub async fn for_citizen(&self, personal_id: &str) -> Result<CitizenKey, PrivacyError> {
        let pseudonym = self.pseudonym(personal_id);
        if let Some(key) = self.key(&pseudonym)? {
            return Ok(CitizenKey { pseudonym, key });
        }
        let _one_at_a_time = self.creating.lock().await;
        if let Some(key) = self.key(&pseudonym)? {
            return Ok(CitizenKey { pseudonym, key });
        }
        let key = DataKey::generate()?;
        let record = WrappedRecord {
            kek: self.kek.id().to_string(),
            wrapped: STANDARD.encode(self.kek.wrap(&key, pseudonym.as_bytes())?),
        };
        let value =
            serde_json::to_vec(&record).map_err(|e| PrivacyError::Invalid(e.to_string()))?;
        self.log
            .append(pseudonym.as_bytes(), Some(&value), TIMEOUT)
            .await
            .map_err(PrivacyError::Log)?;
        Ok(CitizenKey { pseudonym, key })
    }

    /// Destroy the citizen's data key (a tombstone on the log). Returns whether there was one.
    pub async fn erase(&self, pseudonym: &str) -> Result<bool, PrivacyError> {
        let _one_at_a_time = self.creating.lock().await;
        let had =
            Pseudonyms::bytes(pseudonym).is_some_and(|p| self.log.read().keys.contains_key(&p));
        self.log
            .append(pseudonym.as_bytes(), None, TIMEOUT)
            .await
            .map_err(PrivacyError::Log)?;
        Ok(had)
    }
}

/// A key released to a reader, and the classes of personal data it may open with it.
#[derive(Debug, Clone)]
pub struct Opening {
    /// The citizen's data key.
    pub key: DataKey,
    /// The classes its grant covers; fields of other classes stay masked.
    pub classes: std::collections::BTreeSet<lienthong_contract::PersonalDataClass>,
}

/// Where a reader (a connector) gets citizens' keys: the key service, as its agency, for its
/// purpose ([`crate::GrantedKeys`]).
pub trait CitizenKeys: Send + Sync {
    /// What opens the citizen `pseudonym`'s records of `topic`; `None` when nothing may be
    /// opened (no live grant, or the citizen is erased): the record stays masked. An error
    /// that [`PrivacyError::is_transient`] is worth retrying (the key service unreachable).
    fn opening<'a>(
        &'a self,
        topic: &'a str,
        pseudonym: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Option<Opening>, PrivacyError>> + Send + 'a>>;
    /// Wait until every key released so far is recorded on the access log.
    fn flush(
        &self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), PrivacyError>> + Send + '_>>;
}

/// A connector's key source, if it has one (not part of its file config: the process that runs
/// it hands it over).
#[derive(Clone, Default)]
pub struct KeySource(pub Option<Arc<dyn CitizenKeys>>);

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "KeySource(key service)"
        } else {
            "KeySource(none)"
        })
    }
}

/// What a publisher needs of the key service: a citizen's pseudonym and data key (created on
/// first use) to seal with, and erasure; each recorded as done by `agency`.
/// [`crate::KeyService`] in process.
pub trait CitizenKeyService: Send + Sync {
    /// The citizen's pseudonym and data key, for `agency` to seal a citizen record with.
    fn seal_key<'a>(
        &'a self,
        agency: &'a str,
        personal_id: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<CitizenKey, PrivacyError>> + Send + 'a>>;
    /// The pseudonym of `personal_id` without waiting, when this service can tell it in
    /// place: always in process; over HTTP ([`crate::HttpSealKeys`]), one it was told before,
    /// or `personal_id` when it already is a pseudonym. `None`: ask [`Self::pseudonyms`] first.
    fn known_pseudonym(&self, personal_id: &str) -> Option<String>;
    /// The pseudonyms of `personal_ids`, in order, asking the key service if need be.
    fn pseudonyms<'a>(
        &'a self,
        personal_ids: &'a [String],
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<String>, PrivacyError>> + Send + 'a>>;
    /// Destroy the citizen's data key, as `agency`; whether there was one.
    fn erase<'a>(
        &'a self,
        agency: &'a str,
        pseudonym: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<bool, PrivacyError>> + Send + 'a>>;
}
