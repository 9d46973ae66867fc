//! The key service: the one place that hands out citizens' data keys, and records it.
//!
//! It holds three logs, each a compacted topic read by every instance: the wrapped data keys
//! ([`KeyVault`]), the grants ([`Grants`]) and the access records ([`AccessRecord`]). A
//! reader gets a key only under a live grant of its agency for the topic and the purpose it
//! states, and only for the classes the grant names ([`KeyService::release`]); a publisher
//! gets the key it seals with ([`KeyService::seal_key`]); an admin erases
//! ([`KeyService::erase`]). Each of these is recorded.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use lienthong_bus::KafkaConfig;
use lienthong_bus::state_log::{StateLog, StateLogConfig};
use lienthong_contract::PersonalDataClass;
use rdkafka::consumer::ConsumerContext;
use tokio_util::sync::CancellationToken;

#[cfg(test)]
use crate::access::CitizenAccess;
use crate::access::{ACCESS_TOPIC, AccessCount, AccessRecord, record_key};
use crate::cases::OpenCases;
use crate::error::PrivacyError;
use crate::grants::{GRANTS_TOPIC, Grant, Grants};
use crate::master::MasterKey;
use crate::seal::DataKey;
use crate::vault::{CitizenKey, KEYS_TOPIC, KeyVault, keys_topic_config};

const TIMEOUT: Duration = Duration::from_secs(15);
/// The case events need-to-know follows.
const CASE_TOPIC: &str = "hcm.case.events";
/// The same access (agency, citizen, topic, purpose, basis, action) is recorded once per this
/// window by an instance.
pub const RECORD_WINDOW_MS: i64 = 15 * 60 * 1000;
/// How many recent accesses an instance remembers to dedupe (beyond it, the oldest are
/// forgotten and recorded again: more records, never fewer).
const RECENT_CAPACITY: usize = 200_000;

/// Where the key service's three logs live.
#[derive(Debug, Clone)]
pub struct KeyServiceConfig {
    /// The cluster (the key service's own principal on a secured one).
    pub kafka: KafkaConfig,
    /// Replication factor of the topics when they are created.
    pub replication: i32,
    /// The wrapped data keys.
    pub keys_topic: String,
    /// The grants.
    pub grants_topic: String,
    /// The access records.
    pub access_topic: String,
    /// Prefix of the readers' group ids (the principal's name on a secured cluster).
    pub group_prefix: String,
}

impl KeyServiceConfig {
    /// The default topics on `kafka`.
    pub fn new(kafka: KafkaConfig) -> Self {
        KeyServiceConfig {
            kafka,
            replication: 1,
            keys_topic: KEYS_TOPIC.into(),
            grants_topic: GRANTS_TOPIC.into(),
            access_topic: ACCESS_TOPIC.into(),
            group_prefix: "lienthong-keys".into(),
        }
    }

    fn log(&self, topic: &str, topic_config: Vec<(String, String)>) -> StateLogConfig {
        StateLogConfig {
            kafka: self.kafka.clone(),
            topic: topic.to_string(),
            replication: self.replication,
            topic_config,
            group: format!("{}-{topic}-{}", self.group_prefix, std::process::id()),
        }
    }
}

/// A key released to a reader: the data key (none if the citizen was erased) and the classes
/// it may open.
#[derive(Debug, Clone)]
pub struct Release {
    /// The citizen's data key; `None` when the citizen has none (erased).
    pub key: Option<DataKey>,
    /// The classes the grant covers.
    pub classes: BTreeSet<PersonalDataClass>,
    /// The grant's id.
    pub grant: String,
}

/// The key service.
pub struct KeyService<C: ConsumerContext + 'static> {
    vault: KeyVault<C>,
    grants: StateLog<Grants, C>,
    access: StateLog<AccessCount, C>,
    /// Accesses recorded lately, and when ([`KeyService::record`]).
    recent: std::sync::Mutex<RecentAccesses>,
    /// The open cases and the units handling them ([`KeyService::follow_cases`]).
    cases: std::sync::RwLock<OpenCases>,
    /// What its consumer groups start with (its principal's name on a secured cluster).
    group_prefix: String,
}

/// Where the case follower finds the schema (JSON) of an id it has not seen: the schema
/// registry's, in `lienthong up`.
pub type SchemaLookup = Arc<
    dyn Fn(u32) -> std::pin::Pin<Box<dyn Future<Output = Option<String>> + Send>> + Send + Sync,
>;

/// Every class a citizen's profile carries: what a unit handling a citizen's open case may
/// read of the citizen's record (the data the case needs: who, where, how to reach them).
pub fn profile_classes() -> BTreeSet<PersonalDataClass> {
    use PersonalDataClass::*;
    [Identifier, Name, Demographic, Residence, Contact]
        .into_iter()
        .collect()
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl<C: ConsumerContext + Clone + 'static> KeyService<C> {
    /// A key service in memory (tests, the embedded demo).
    pub fn in_memory(master: &MasterKey) -> Self {
        KeyService {
            vault: KeyVault::in_memory(master),
            grants: StateLog::in_memory("grant log", Grants::default()),
            access: StateLog::in_memory("access log", AccessCount::default()),
            recent: Default::default(),
            cases: Default::default(),
            group_prefix: KeyServiceConfig::new(KafkaConfig::new("")).group_prefix,
        }
    }

    /// The key service on Kafka, its three logs read to their ends.
    pub async fn open(
        config: &KeyServiceConfig,
        master: &MasterKey,
        context: C,
        shutdown: CancellationToken,
    ) -> Result<Self, PrivacyError> {
        let vault = KeyVault::open(
            &config.log(&config.keys_topic, keys_topic_config()),
            master,
            context.clone(),
            shutdown.clone(),
        )
        .await?;
        let grants = StateLog::open(
            "grant log",
            &config.log(&config.grants_topic, Vec::new()),
            Grants::default(),
            context.clone(),
            shutdown.clone(),
        )
        .await
        .map_err(PrivacyError::Log)?;
        let access = StateLog::open(
            "access log",
            &config.log(&config.access_topic, Vec::new()),
            AccessCount::default(),
            context,
            shutdown,
        )
        .await
        .map_err(PrivacyError::Log)?;
        Ok(KeyService {
            vault,
            grants,
            access,
            recent: Default::default(),
            cases: Default::default(),
            group_prefix: config.group_prefix.clone(),
        })
    }

    /// The wrapped keys.
    pub fn vault(&self) -> &KeyVault<C> {
        &self.vault
    }

    /// The pseudonym of `personal_id`.
    pub fn pseudonym(&self, personal_id: &str) -> String {
        self.vault.pseudonym(personal_id)
    }

    /// Record `grant` (replacing the one with the same agency, topic and purpose); its id.
    pub async fn grant(&self, grant: &Grant) -> Result<String, PrivacyError> {
        grant.check(now_ms())?;
        let id = grant.id();
        let value = serde_json::to_vec(grant).map_err(|e| PrivacyError::Invalid(e.to_string()))?;
        self.grants
            .append(id.as_bytes(), Some(&value), TIMEOUT)
            .await
            .map_err(PrivacyError::Log)?;
        Ok(id)
    }

    /// Revoke the grant `id`; whether there was one. Readers lose it at their next key fetch.
    pub async fn revoke(&self, id: &str) -> Result<bool, PrivacyError> {
        let had = self.grants.read().get(id).is_some();
        self.grants
            .append(id.as_bytes(), None, TIMEOUT)
            .await
            .map_err(PrivacyError::Log)?;
        Ok(had)
    }

    /// Every grant, by id.
    pub fn grants(&self) -> Vec<(String, Grant)> {
        self.grants
            .read()
            .all()
            .map(|(id, g)| (id.clone(), g.clone()))
            .collect()
    }

    /// The key to open the citizen `pseudonym`'s records of `topic` for `agency`, under its
    /// live grant for `purpose`; refused ([`PrivacyError::NotGranted`]) without one. A release
    /// of a key is recorded (queued on the access log: [`KeyService::flush`] waits for it).
    pub fn release(
        &self,
        agency: &str,
        topic: &str,
        pseudonym: &str,
        purpose: &str,
    ) -> Result<Release, PrivacyError> {
        let now = now_ms();
        let grant = crate::grants::grant_id(agency, topic, purpose);
        let granted = self
            .grants
            .read()
            .live(&grant, now)
            .map(|g| g.classes.clone());
        let (classes, id) = match granted {
            Some(classes) => (classes, grant),
            // Need-to-know: a unit handling an open case of the citizen reads the citizen's
            // record without a grant of its own, while the case is open there.
            None => match self.handled_case(agency, topic, pseudonym) {
                Some(case) => (profile_classes(), format!("case:{case}")),
                None => {
                    return Err(PrivacyError::NotGranted(format!(
                        "{agency} has no live grant on {topic} for {purpose:?}, and handles no open case of this citizen"
                    )));
                }
            },
        };
        let key = self.vault.key(pseudonym)?;
        if key.is_some() {
            self.record(Access {
                at_ms: now,
                agency,
                pseudonym,
                topic,
                purpose,
                basis: &id,
                action: "released",
            })?;
        }
        Ok(Release {
            key,
            grant: id,
            classes,
        })
    }

    /// An open case of the citizen `pseudonym` that `agency` handles, for a read of the
    /// citizen's record.
    fn handled_case(&self, agency: &str, topic: &str, pseudonym: &str) -> Option<String> {
        if topic != crate::citizen::TOPIC {
            return None;
        }
        self.cases
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .handled_by(pseudonym, agency)
            .map(str::to_string)
    }

    /// Fold a case event into the open cases (what [`KeyService::follow_cases`] does for each
    /// record of `hcm.case.events`).
    pub fn apply_case_event<S: AsRef<str>>(
        &self,
        event: &lienthong_contract::events::CaseEvent<S>,
    ) {
        self.cases
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .apply(event, self.vault.pseudonyms());
    }

    /// Follow `hcm.case.events` from its beginning on a thread of its own until `shutdown`,
    /// folding every case event into the open cases (need-to-know). `codec` knows the schema
    /// ids the case events are written with at the start; an id it does not know is looked up
    /// once with `lookup` (schemas registered later), and if that finds nothing its records
    /// are skipped (logged once per id). Called from within a Tokio runtime, which runs the
    /// lookups.
    pub fn follow_cases(
        self: &Arc<Self>,
        kafka: &KafkaConfig,
        codec: lienthong_contract::Codec,
        lookup: Option<SchemaLookup>,
        shutdown: CancellationToken,
    ) -> Result<(), PrivacyError>
    where
        C: Send + Sync,
    {
        use lienthong_contract::events::CaseEvent;
        use rdkafka::Message;
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let mut suffix = [0u8; 4];
        crate::seal::random(&mut suffix)?;
        let kafka_error = |e| {
            PrivacyError::Log(lienthong_bus::BusError::Kafka {
                bootstrap: kafka.bootstrap.clone(),
                source: e,
            })
        };
        // A group of its own, committing nothing: every start reads the whole log again.
        let consumer: BaseConsumer = kafka
            .consumer(&format!(
                "{}-cases-{}",
                self.group_prefix,
                hex::encode(suffix)
            ))
            .create()
            .map_err(kafka_error)?;
        consumer.subscribe(&[CASE_TOPIC]).map_err(kafka_error)?;
        let runtime = tokio::runtime::Handle::try_current().ok();
        let lookup = lookup.zip(runtime);
        let service = Arc::clone(self);
        std::thread::Builder::new()
            .name("keys-cases".into())
            .spawn(move || {
                let (mut looked_up, mut unreadable) = (BTreeSet::new(), BTreeSet::new());
                while !shutdown.is_cancelled() {
                    match consumer.poll(Duration::from_millis(100)) {
                        None => {}
                        Some(Ok(m)) => {
                            let Some(payload) = m.payload() else { continue };
                            let id = lienthong_contract::codec::split_frame(payload)
                                .map(|(id, _)| id)
                                .unwrap_or(0);
                            // A schema registered after the start: learned once.
                            if codec.schema(id).is_err()
                                && looked_up.insert(id)
                                && let Some((lookup, runtime)) = &lookup
                                && let Some(json) = runtime.block_on(lookup(id))
                                && let Err(e) = codec.insert(id, &json)
                            {
                                tracing::warn!(schema_id = id, error = %e, "a case event schema the key service cannot parse");
                            }
                            match codec.decode::<CaseEvent<&str>>(payload) {
                                Ok((_, event)) => service.apply_case_event(&event),
                                Err(e) => {
                                    if unreadable.insert(id) {
                                        tracing::warn!(schema_id = id, error = %e, "a case event the key service cannot read: need-to-know skips it");
                                    }
                                }
                            }
                        }
                        Some(Err(e)) => tracing::warn!(error = %e, "reading the case events"),
                    }
                }
            })
            .map_err(|e| PrivacyError::Invalid(format!("starting the case follower: {e}")))?;
        Ok(())
    }

    /// How many cases are open, as far as this instance has read.
    pub fn open_cases(&self) -> usize {
        self.cases.read().unwrap_or_else(|p| p.into_inner()).open()
    }

    /// The key `agency` seals the citizen `personal_id`'s record with (created on first use),
    /// recorded.
    pub async fn seal_key(
        &self,
        agency: &str,
        topic: &str,
        personal_id: &str,
    ) -> Result<CitizenKey, PrivacyError> {
        let key = self.vault.for_citizen(personal_id).await?;
        self.record(Access {
            at_ms: now_ms(),
            agency,
            pseudonym: &key.pseudonym,
            topic,
            purpose: "publish",
            basis: "publisher",
            action: "sealed",
        })?;
        Ok(key)
    }

    /// Destroy the citizen `pseudonym`'s data key, recorded as done by `by`; whether there
    /// was one.
    pub async fn erase(&self, by: &str, pseudonym: &str) -> Result<bool, PrivacyError> {
        let had = self.vault.erase(pseudonym).await?;
        self.record(Access {
            at_ms: now_ms(),
            agency: by,
            pseudonym,
            topic: "",
            purpose: "erasure",
            basis: "the citizen's request",
            action: "erased",
        })?;
        self.flush().await?;
        Ok(had)
    }

    /// Queue `record` on the access log, unless this instance recorded the same access (same
    /// agency, citizen, topic, purpose, basis and action) less than [`RECORD_WINDOW_MS`] ago:
    /// the log says who read whose data, when and why, not every record a connector opened
    /// in a replay. Erasures are always recorded.
    fn record(&self, access: Access<'_>) -> Result<(), PrivacyError> {
        if access.action != "erased" {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if !recent.note(&access) {
                return Ok(());
            }
        }
        let record = AccessRecord {
            at_ms: access.at_ms,
            agency: access.agency.to_string(),
            pseudonym: access.pseudonym.to_string(),
            topic: access.topic.to_string(),
            purpose: access.purpose.to_string(),
            basis: access.basis.to_string(),
            action: access.action.to_string(),
        };
        let key = record_key(&record.pseudonym)?;
        let value =
            serde_json::to_vec(&record).map_err(|e| PrivacyError::Invalid(e.to_string()))?;
        self.access.enqueue(&key, &value).map_err(PrivacyError::Log)
    }

    /// Wait until every access record so far is on the access log.
    pub async fn flush(&self) -> Result<(), PrivacyError> {
        self.access.flush().await.map_err(PrivacyError::Log)
    }

    /// How many access records this instance has read or written.
    pub fn access_records(&self) -> u64 {
        self.access.read().0
    }
}

/// An access about to be recorded, borrowed ([`KeyService::record`] builds the record only
/// when it is not a repeat).
/// The accesses this instance recorded lately, by citizen: what [`KeyService::record`]
/// dedupes against. A lookup allocates nothing; only a new access is stored.
#[derive(Default)]
struct RecentAccesses {
    by_citizen: std::collections::HashMap<String, Vec<Recent>, foldhash::fast::RandomState>,
    len: usize,
}

/// One recorded access, less its citizen.
struct Recent {
    agency: String,
    topic: String,
    purpose: String,
    basis: String,
    action: &'static str,
    at_ms: i64,
}

impl RecentAccesses {
    /// Whether `access` is to be recorded (no same access within [`RECORD_WINDOW_MS`]); if
    /// so, it is remembered as recorded now.
    fn note(&mut self, access: &Access<'_>) -> bool {
        let now = access.at_ms;
        let same = |r: &Recent| {
            r.action == access.action
                && r.agency == access.agency
                && r.topic == access.topic
                && r.purpose == access.purpose
                && r.basis == access.basis
        };
        if let Some(seen) = self.by_citizen.get_mut(access.pseudonym)
            && let Some(r) = seen.iter_mut().find(|r| same(r))
        {
            if now - r.at_ms < RECORD_WINDOW_MS {
                return false;
            }
            r.at_ms = now;
            return true;
        }
        if self.len >= RECENT_CAPACITY {
            self.by_citizen.retain(|_, seen| {
                seen.retain(|r| now - r.at_ms < RECORD_WINDOW_MS);
                !seen.is_empty()
            });
            self.len = self.by_citizen.values().map(Vec::len).sum();
            if self.len >= RECENT_CAPACITY {
                self.by_citizen.clear();
                self.len = 0;
            }
        }
        self.by_citizen
            .entry(access.pseudonym.to_string())
            .or_default()
            .push(Recent {
                agency: access.agency.to_string(),
                topic: access.topic.to_string(),
                purpose: access.purpose.to_string(),
                basis: access.basis.to_string(),
                action: access.action,
                at_ms: now,
            });
        self.len += 1;
        true
    }
}

struct Access<'a> {
    at_ms: i64,
    agency: &'a str,
    pseudonym: &'a str,
    topic: &'a str,
    purpose: &'a str,
    basis: &'a str,
    action: &'static str,
}

/// A reader's key source: the key service, as one agency, for one purpose.
pub struct GrantedKeys<C: ConsumerContext + 'static> {
    service: Arc<KeyService<C>>,
    agency: String,
    purpose: String,
    refused_once: std::sync::Once,
}

impl<C: ConsumerContext + Clone + 'static> GrantedKeys<C> {
    /// Keys for `agency`, stating `purpose`.
    pub fn new(service: Arc<KeyService<C>>, agency: String, purpose: String) -> Self {
        GrantedKeys {
            service,
            agency,
            purpose,
            refused_once: std::sync::Once::new(),
        }
    }
}

impl<C: ConsumerContext + Clone + 'static> crate::CitizenKeys for GrantedKeys<C> {
    fn opening<'a>(
        &'a self,
        topic: &'a str,
        pseudonym: &'a str,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<Option<crate::Opening>, PrivacyError>> + Send + 'a>,
    > {
        Box::pin(std::future::ready(self.opening_now(topic, pseudonym)))
    }

    fn flush(
        &self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), PrivacyError>> + Send + '_>> {
        Box::pin(self.service.flush())
    }
}

impl<C: ConsumerContext + Clone + 'static> GrantedKeys<C> {
    fn opening_now(
        &self,
        topic: &str,
        pseudonym: &str,
    ) -> Result<Option<crate::Opening>, PrivacyError> {
        match self
            .service
            .release(&self.agency, topic, pseudonym, &self.purpose)
        {
            Ok(Release {
                key: Some(key),
                classes,
                ..
            }) => Ok(Some(crate::Opening { key, classes })),
            Ok(Release { key: None, .. }) => Ok(None),
            Err(PrivacyError::NotGranted(why)) => {
                self.refused_once.call_once(|| {
                    tracing::warn!(agency = %self.agency, purpose = %self.purpose, "{why}: citizen records are stored masked");
                });
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl<C: ConsumerContext + Clone + 'static> crate::CitizenKeyService for KeyService<C> {
    fn seal_key<'a>(
        &'a self,
        agency: &'a str,
        personal_id: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<CitizenKey, PrivacyError>> + Send + 'a>> {
        Box::pin(KeyService::seal_key(
            self,
            agency,
            crate::citizen::TOPIC,
            personal_id,
        ))
    }

    fn known_pseudonym(&self, personal_id: &str) -> Option<String> {
        Some(KeyService::pseudonym(self, personal_id))
    }

    fn pseudonyms<'a>(
        &'a self,
        personal_ids: &'a [String],
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<String>, PrivacyError>> + Send + 'a>>
    {
        let pseudonyms = personal_ids
            .iter()
            .map(|id| KeyService::pseudonym(self, id))
            .collect();
        Box::pin(std::future::ready(Ok(pseudonyms)))
    }

    fn erase<'a>(
        &'a self,
        agency: &'a str,
        pseudonym: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<bool, PrivacyError>> + Send + 'a>> {
        Box::pin(KeyService::erase(self, agency, pseudonym))
    }
}

#[cfg(test)]
mod tests;
