//! A Confluent-compatible schema registry whose subjects belong to agencies.
//!
//! Publishers and standard clients (Java's `KafkaAvroSerializer`, Python's
//! `confluent_kafka.schema_registry`, kcat) ask it for schema ids; every record on the bus carries
//! one in its Confluent header, and every sink resolves it here. Its state lives in a compacted
//! Kafka topic (see [`state`] for why several instances can register at once without ever giving
//! one id to two schemas), so instances share it and a restarted one rebuilds it. Unlike the
//! open-source registries, changing a subject takes the credential of the agency that owns it
//! ([`auth`]); reading takes any agency's.
//!
//! [`api::router`] is the axum router; [`Registry::serve`] serves it as a component, and the
//! gateway can mount it on its own server.

pub mod api;
pub mod auth;
pub mod client;
pub mod error;
pub mod log;
pub mod metrics;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use apache_avro::Schema;
use lienthong_contract::{Catalog, CompatibilityMode, check_compatibility};
use lienthong_telemetry::component::{Component, Listener, Readiness, Running};
use tokio_util::sync::CancellationToken;

pub use crate::auth::{Agencies, Agency, AgencyCredential};
pub use crate::error::RegistryError;
pub use crate::log::KafkaLogConfig;
use crate::log::{LOG, store};
use crate::state::{ConfigValue, LogKey, Outcome, Proposal, Reference, State};
use lienthong_bus::state_log::{StateLog, StateLogConfig};

/// The content type of the Confluent API.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// How many times a registration is retried when concurrent writes win the race.
const MAX_ATTEMPTS: u32 = 16;
/// How long to wait for the log to catch up before answering `50001`.
const SYNC_TIMEOUT: Duration = Duration::from_secs(15);

/// The registry's schema log: its state, rebuilt from a compacted Kafka topic (or memory).
type SchemaLog = StateLog<State, lienthong_telemetry::KafkaClientContext>;

/// One registry instance.
pub struct Registry {
    log: SchemaLog,
    catalog: Arc<Catalog>,
    agencies: Agencies,
    /// Registrations from this instance go one at a time, so they never race each other;
    /// only other instances' proposals can win an id or a version from under them.
    register_lock: tokio::sync::Mutex<()>,
    /// Where every change (a version registered, a mode set, a version deleted) is written,
    /// hash-chained and signed, when the registry keeps an audit trail.
    audit: Option<Arc<Audit>>,
}

/// The audit trail a registry writes to (docs/signatures.md).
pub type Audit = lienthong_signing::AuditTrail<rdkafka::consumer::DefaultConsumerContext>;

/// A version as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionView {
    /// Subject.
    pub subject: String,
    /// Version number.
    pub version: u32,
    /// Schema id.
    pub id: u32,
    /// Schema text.
    pub schema: String,
    /// References.
    pub references: Vec<Reference>,
}

/// Which version a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    /// The newest live version.
    Latest,
    /// A number.
    Number(u32),
}

impl VersionSpec {
    /// Parse `latest`, `-1` or a positive number up to 2^31-1; anything else is `42202`.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        if s == "latest" || s == "-1" {
            return Ok(VersionSpec::Latest);
        }
        match s.parse::<u32>() {
            Ok(n) if n >= 1 && n <= i32::MAX as u32 => Ok(VersionSpec::Number(n)),
            _ => Err(RegistryError::InvalidVersion(s.to_string())),
        }
    }
}

impl Registry {
    fn with_log(log: SchemaLog, catalog: Arc<Catalog>, agencies: Agencies) -> Self {
        Registry {
            log,
            catalog,
            agencies,
            register_lock: tokio::sync::Mutex::new(()),
            audit: None,
        }
    }

    /// A registry kept in memory: for tests and the embedded demo.
    pub fn in_memory(catalog: Arc<Catalog>, agencies: Agencies) -> Self {
        let state = State::new(CompatibilityMode::Backward);
        Self::with_log(StateLog::in_memory(LOG, state), catalog, agencies)
    }

    /// A registry whose state is the Kafka topic in `config`, read from the beginning; waits
    /// until the state is caught up. Its Kafka clients report their errors to `errors`.
    pub async fn with_kafka(
        config: &KafkaLogConfig,
        catalog: Arc<Catalog>,
        agencies: Agencies,
        errors: lienthong_telemetry::KafkaClientContext,
        shutdown: CancellationToken,
    ) -> Result<Self, RegistryError> {
        let state = State::new(CompatibilityMode::Backward);
        let config = StateLogConfig {
            kafka: config.kafka.clone(),
            topic: config.topic.clone(),
            replication: config.replication,
            topic_config: Vec::new(),
            group: format!("lienthong-registry-{}", uuid::Uuid::new_v4()),
        };
        let log = StateLog::open(LOG, &config, state, errors, shutdown)
            .await
            .map_err(store)?;
        Ok(Self::with_log(log, catalog, agencies))
    }

    /// Write every change to `trail` from now on: `schema.register` (subject, version, id and
    /// the SHA-256 of the schema's identity), `schema.config` and `schema.delete`, each as the agency that
    /// made it.
    pub fn with_audit(mut self, trail: Arc<Audit>) -> Self {
        self.audit = Some(trail);
        self
    }

    /// Write what `agency` did to the audit trail, if the registry keeps one. The change is
    /// made already: a trail that cannot be written is an error the caller sees (and the log
    /// names), never a change left silently out of the trail.
    async fn audited(
        &self,
        agency: &Agency,
        action: &str,
        subject: &str,
        detail: serde_json::Value,
    ) -> Result<(), RegistryError> {
        let Some(trail) = &self.audit else {
            return Ok(());
        };
        trail
            .append(&agency.code, action, subject, &detail.to_string())
            .await
            .map(|_| ())
            .map_err(|e| {
                tracing::error!(agency = %agency.code, action, subject, %detail, error = %e, "a registry change is not on the audit trail");
                RegistryError::Store(format!(
                    "{action} of {subject} is done, but the audit trail could not be written: {e}"
                ))
            })
    }

    /// The agencies that may call.
    pub fn agencies(&self) -> &Agencies {
        &self.agencies
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.log.read()
    }

    /// Wait until everything in the log now is applied (read-your-writes across instances).
    pub async fn sync(&self) -> Result<(), RegistryError> {
        self.log.sync(SYNC_TIMEOUT).await.map_err(store)
    }

    /// Whether it can answer: its schema log read to its end within 3 s. Its own `/readyz`,
    /// and the gateway's when the registry is mounted beside it.
    pub fn readiness(self: &Arc<Self>) -> Readiness {
        let registry = Arc::clone(self);
        Arc::new(move || {
            let registry = Arc::clone(&registry);
            Box::pin(async move {
                match tokio::time::timeout(Duration::from_secs(3), registry.sync()).await {
                    Ok(Ok(())) => Vec::new(),
                    Ok(Err(e)) => vec![format!("schema log: {e}")],
                    Err(_) => vec!["schema log: not read to its end within 3 s".into()],
                }
            })
        })
    }

    /// Serve this registry's API on `listener` until `shutdown` (or [`Running::stop`]), in the
    /// shape every component has (`lienthong_telemetry::component`): calls counted
    /// ([`metrics::count_operations`]), `/metrics`, `/healthz`, and `/readyz` ready while the
    /// schema log can be read to its end within 3 s.
    pub fn serve(
        self: &Arc<Self>,
        listener: Listener,
        telemetry: &Arc<lienthong_telemetry::Telemetry>,
        shutdown: &CancellationToken,
    ) -> Running<RegistryError> {
        let api = metrics::count_operations(api::router(Arc::clone(self)), telemetry);
        Component::new("registry", telemetry, shutdown)
            .readiness(self.readiness())
            .serve_with(listener, move |common| api.merge(common))
            .start(|stopping| async move {
                stopping.token().cancelled().await;
                Ok(())
            })
    }

    async fn append(
        &self,
        key: &LogKey,
        value: &impl serde::Serialize,
    ) -> Result<i64, RegistryError> {
        let key = serde_json::to_vec(key).map_err(|e| RegistryError::Store(e.to_string()))?;
        let value = serde_json::to_vec(value).map_err(|e| RegistryError::Store(e.to_string()))?;
        self.log
            .append(&key, Some(&value), SYNC_TIMEOUT)
            .await
            .map_err(store)
    }

    /// Register `schema` under `subject` for `agency`; returns its id. Registering the same
    /// schema again returns the same id and changes nothing.
    pub async fn register(
        &self,
        agency: &Agency,
        subject: &str,
        schema: &str,
        references: Vec<Reference>,
    ) -> Result<u32, RegistryError> {
        validate_subject(subject)?;
        auth::check_owner(&self.catalog, agency, subject)?;
        let _one_at_a_time = self.register_lock.lock().await;
        self.sync().await?;
        for _ in 0..MAX_ATTEMPTS {
            let (key, proposal, proposal_id, version) = {
                let state = self.read();
                let identity = state::identity_of(schema, &references)
                    .map_err(RegistryError::InvalidSchema)?;
                let known_id = state.by_identity.get(&identity).copied();
                let subject_entry = state.subjects.get(subject);
                if let (Some(id), Some(s)) = (known_id, subject_entry)
                    && s.live().any(|(_, v)| v.id == id)
                {
                    return Ok(id);
                }
                let violations = guarded_check(&state, subject, None, schema, &references)?;
                if !violations.is_empty() {
                    let details = violations
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ");
                    return Err(RegistryError::Incompatible {
                        subject: subject.to_string(),
                        details,
                    });
                }
                let id = match known_id {
                    Some(id) => id,
                    None if state.max_id < state::MAX_ID => state.max_id + 1,
                    None => {
                        return Err(RegistryError::Store(
                            "no schema ids left (2^31-1 used)".into(),
                        ));
                    }
                };
                let version = subject_entry.map_or(0, |s| s.last_version) + 1;
                let proposal_id = uuid::Uuid::new_v4().to_string();
                (
                    LogKey::Schema {
                        subject: subject.to_string(),
                        version,
                        proposal: proposal_id.clone(),
                    },
                    Proposal {
                        id,
                        identity,
                        schema: schema.to_string(),
                        references: references.clone(),
                        agency: agency.code.clone(),
                    },
                    proposal_id,
                    version,
                )
            };
            self.append(&key, &proposal).await?;
            let accepted = match self.read().outcomes.get(&proposal_id) {
                Some(Outcome::Accepted { id, .. }) => Some(*id),
                _ => None, // another instance won the race: look again
            };
            if let Some(id) = accepted {
                self.audited(
                    agency,
                    "schema.register",
                    subject,
                    serde_json::json!({
                        "version": version,
                        "id": id,
                        "fingerprint": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&proposal.identity)),
                    }),
                )
                .await?;
                return Ok(id);
            }
        }
        Err(RegistryError::Contended(MAX_ATTEMPTS))
    }

    /// Register every catalog schema under its subject, as its owner, and set each subject's
    /// compatibility mode from the catalog. Idempotent: a second run changes nothing.
    pub async fn bootstrap(&self) -> Result<Vec<(String, u32)>, RegistryError> {
        let mut ids = Vec::new();
        for topic in self.catalog.topics() {
            // The catalog is the authority here: act as its owner, with admin rights to set
            // the mode the catalog prescribes.
            let owner = Agency {
                code: topic.owner.clone(),
                kind: lienthong_contract::AgencyKind::Department,
                admin: true,
            };
            if self.read().subject_compat.get(&topic.value_subject) != Some(&topic.compatibility) {
                self.set_config(
                    &owner,
                    Some(&topic.value_subject),
                    Some(topic.compatibility),
                )
                .await?;
            }
            let id = self
                .register(&owner, &topic.value_subject, &topic.schema_json, Vec::new())
                .await?;
            ids.push((topic.value_subject.clone(), id));
        }
        Ok(ids)
    }

    /// Set (or, with `None`, remove) the compatibility of a subject, or the global one.
    pub async fn set_config(
        &self,
        agency: &Agency,
        subject: Option<&str>,
        mode: Option<CompatibilityMode>,
    ) -> Result<(), RegistryError> {
        match subject {
            Some(s) => {
                validate_subject(s)?;
                auth::check_admin_of(&self.catalog, agency, s)?;
            }
            None if !agency.admin => {
                return Err(RegistryError::Forbidden {
                    agency: agency.code.clone(),
                    subject: "(global config)".into(),
                    owner: "an admin agency".into(),
                });
            }
            None => {}
        }
        self.append(
            &LogKey::Config {
                subject: subject.map(str::to_string),
            },
            &ConfigValue {
                compatibility: mode,
                agency: agency.code.clone(),
            },
        )
        .await?;
        self.audited(
            agency,
            "schema.config",
            subject.unwrap_or("(global)"),
            serde_json::json!({"compatibility": mode.map(|m| format!("{m:?}"))}),
        )
        .await
    }

    /// The subject's own mode (`None` if it has none), and the global mode.
    pub fn config(&self, subject: Option<&str>) -> (Option<CompatibilityMode>, CompatibilityMode) {
        let state = self.read();
        (
            subject.and_then(|s| state.subject_compat.get(s).copied()),
            state.global_compat,
        )
    }

    /// Subjects with at least one live version (or any version, with `deleted`).
    pub fn subjects(&self, deleted: bool) -> Vec<String> {
        let state = self.read();
        state
            .subjects
            .iter()
            .filter(|(_, s)| {
                if deleted {
                    !s.versions.is_empty()
                } else {
                    s.live().next().is_some()
                }
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    async fn found_or_sync<T>(
        &self,
        f: impl Fn(&State) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let first = f(&self.read());
        if first.is_ok() {
            return first;
        }
        // Perhaps another instance just wrote it: catch up once, then answer.
        self.sync().await?;
        f(&self.read())
    }

    /// Version numbers of a subject.
    pub async fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<u32>, RegistryError> {
        self.found_or_sync(|state| {
            let s = state
                .subjects
                .get(subject)
                .ok_or_else(|| RegistryError::SubjectNotFound(subject.into()))?;
            let v: Vec<u32> = s
                .versions
                .iter()
                .filter(|(_, v)| deleted || !v.deleted)
                .map(|(n, _)| *n)
                .collect();
            if v.is_empty() {
                Err(RegistryError::SubjectNotFound(subject.into()))
            } else {
                Ok(v)
            }
        })
        .await
    }

    /// One version of a subject.
    pub async fn version(
        &self,
        subject: &str,
        spec: VersionSpec,
        deleted: bool,
    ) -> Result<VersionView, RegistryError> {
        self.found_or_sync(|state| version_view(state, subject, spec, deleted))
            .await
    }

    /// The schema with `id`, with its references; deleted schemas still resolve until purged.
    pub async fn schema_by_id(&self, id: u32) -> Result<(String, Vec<Reference>), RegistryError> {
        self.found_or_sync(|state| {
            state
                .schemas
                .get(&id)
                .and_then(|e| e.schema.clone().map(|s| (s, e.references.clone())))
                .ok_or_else(|| RegistryError::SchemaNotFound(format!("Schema {id} not found")))
        })
        .await
    }

    /// Every `(subject, version)` that uses schema `id`.
    pub async fn subject_versions_of(&self, id: u32) -> Result<Vec<(String, u32)>, RegistryError> {
        self.found_or_sync(|state| {
            if state.schemas.get(&id).is_none_or(|e| e.schema.is_none()) {
                return Err(RegistryError::SchemaNotFound(format!(
                    "Schema {id} not found"
                )));
            }
            Ok(state
                .subjects
                .iter()
                .flat_map(|(n, s)| {
                    s.live()
                        .filter(|(_, v)| v.id == id)
                        .map(move |(ver, _)| (n.clone(), ver))
                })
                .collect())
        })
        .await
    }

    /// Is `schema` registered under `subject`? Returns that version.
    pub async fn lookup(
        &self,
        subject: &str,
        schema: &str,
        references: &[Reference],
    ) -> Result<VersionView, RegistryError> {
        let identity =
            state::identity_of(schema, references).map_err(RegistryError::InvalidSchema)?;
        self.found_or_sync(|state| {
            let s = state
                .subjects
                .get(subject)
                .filter(|s| s.live().next().is_some())
                .ok_or_else(|| RegistryError::SubjectNotFound(subject.into()))?;
            let id = state.by_identity.get(&identity).copied();
            let (version, _) = s
                .live()
                .find(|(_, v)| Some(v.id) == id)
                .ok_or_else(|| RegistryError::SchemaNotFound("Schema not found".into()))?;
            version_view(state, subject, VersionSpec::Number(version), false)
        })
        .await
    }

    /// Would `schema` be accepted as a new version, judged against `against`?
    pub async fn test_compatibility(
        &self,
        subject: &str,
        against: VersionSpec,
        schema: &str,
        references: &[Reference],
    ) -> Result<Vec<String>, RegistryError> {
        self.sync().await?;
        let state = self.read();
        let target = version_view(&state, subject, against, false)?;
        let violations = guarded_check(&state, subject, Some(target.version), schema, references)?;
        Ok(violations.iter().map(ToString::to_string).collect())
    }

    /// Delete one version (soft, or permanently after a soft delete). Returns the version.
    pub async fn delete_version(
        &self,
        agency: &Agency,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<u32, RegistryError> {
        auth::check_admin_of(&self.catalog, agency, subject)?;
        self.sync().await?;
        let version = {
            let state = self.read();
            let v = version_view(&state, subject, spec, permanent)?;
            let deleted = state
                .subjects
                .get(subject)
                .and_then(|s| s.versions.get(&v.version))
                .is_some_and(|e| e.deleted);
            if permanent && !deleted {
                return Err(RegistryError::NotSoftDeleted {
                    subject: subject.into(),
                    version: v.version,
                });
            }
            v.version
        };
        self.append(
            &LogKey::Delete {
                subject: subject.into(),
                version,
                permanent,
            },
            &serde_json::json!({"agency": agency.code}),
        )
        .await?;
        self.audited(
            agency,
            "schema.delete",
            subject,
            serde_json::json!({"version": version, "permanent": permanent}),
        )
        .await?;
        Ok(version)
    }

    /// Delete every version of a subject. Returns the versions deleted.
    pub async fn delete_subject(
        &self,
        agency: &Agency,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<u32>, RegistryError> {
        auth::check_admin_of(&self.catalog, agency, subject)?;
        let versions = self.versions(subject, permanent).await?;
        for v in &versions {
            self.delete_version(agency, subject, VersionSpec::Number(*v), permanent)
                .await?;
        }
        Ok(versions)
    }
}

/// Parse `schema` and check it against the subject's live versions (up to `up_to`, if given)
/// under the subject's mode; `check_compatibility` picks the latest or all of them. Guarded:
/// input from any agency must never take the server down, even if it trips a panic inside the
/// Avro library.
fn guarded_check(
    state: &State,
    subject: &str,
    up_to: Option<u32>,
    schema: &str,
    references: &[Reference],
) -> Result<Vec<lienthong_contract::compat::Violation>, RegistryError> {
    let existing: Vec<Schema> = state
        .subjects
        .get(subject)
        .map(|s| {
            s.live()
                .filter(|(n, _)| up_to.is_none_or(|max| *n <= max))
                .filter_map(|(_, v)| state.schemas.get(&v.id).and_then(|e| e.parsed.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mode = state.compat_for(subject);
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let parsed = state.parse_with_references(schema, references)?;
        Ok::<_, String>(check_compatibility(mode, &parsed, &existing))
    }));
    match checked {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(RegistryError::InvalidSchema(e)),
        Err(_) => Err(RegistryError::InvalidSchema(
            "the schema could not be processed".into(),
        )),
    }
}

fn version_view(
    state: &State,
    subject: &str,
    spec: VersionSpec,
    deleted: bool,
) -> Result<VersionView, RegistryError> {
    let s = state
        .subjects
        .get(subject)
        .filter(|s| deleted || s.live().next().is_some())
        .ok_or_else(|| RegistryError::SubjectNotFound(subject.into()))?;
    let (version, entry) = match spec {
        VersionSpec::Latest => s.live().last(),
        VersionSpec::Number(n) => s
            .versions
            .get(&n)
            .filter(|v| deleted || !v.deleted)
            .map(|v| (n, *v)),
    }
    .ok_or_else(|| RegistryError::VersionNotFound {
        subject: subject.into(),
        version: match spec {
            VersionSpec::Latest => "latest".into(),
            VersionSpec::Number(n) => n.to_string(),
        },
    })?;
    let schema = state
        .schemas
        .get(&entry.id)
        .ok_or_else(|| RegistryError::SchemaNotFound(format!("Schema {} not found", entry.id)))?;
    Ok(VersionView {
        subject: subject.into(),
        version,
        id: entry.id,
        schema: schema.schema.clone().ok_or_else(|| {
            RegistryError::SchemaNotFound(format!("Schema {} not found", entry.id))
        })?,
        references: schema.references.clone(),
    })
}

/// Subjects are any non-empty Unicode text without control characters, up to 255 characters.
fn validate_subject(subject: &str) -> Result<(), RegistryError> {
    if subject.is_empty() || subject.chars().count() > 255 || subject.chars().any(char::is_control)
    {
        return Err(RegistryError::InvalidRequest(format!(
            "invalid subject name {subject:?}"
        )));
    }
    Ok(())
}
