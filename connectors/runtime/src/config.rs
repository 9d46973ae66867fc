//! A connector's configuration: one TOML file, unknown keys refused by name, secrets redacted
//! in `Debug`. See `docs/connectors.md` for the reference.

use std::path::{Path, PathBuf};

use lienthong_bus::KafkaConfig;
pub use lienthong_bus::RetryConfig;
use serde::Deserialize;

use crate::error::ConnectError;
use crate::model::Entity;

/// Everything a connector is configured with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// The connector's name: its consumer group (unless `group` says otherwise), the key of its
    /// offsets in the store, a metric label and a DLQ header.
    pub name: String,
    /// Consumer group; defaults to `name`.
    #[serde(default)]
    pub group: Option<String>,
    /// Kafka.
    pub kafka: KafkaConfig,
    /// The topics to consume, each with the entity its records are.
    pub topics: Vec<TopicConfig>,
    /// The store.
    pub store: StoreConfig,
    /// Which records this store takes.
    #[serde(default)]
    pub filter: FilterConfig,
    /// Batching.
    #[serde(default)]
    pub batch: BatchConfig,
    /// The dead-letter topic for records that can never be applied.
    pub dead_letter_topic: String,
    /// Backoff for transient store errors.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Where writer schemas come from.
    #[serde(default)]
    pub schemas: SchemasConfig,
    /// Serve `/metrics` on this address (e.g. `127.0.0.1:9464`); none if absent.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// How long a shutdown may take to finish the in-flight batch.
    #[serde(default = "default_shutdown")]
    pub shutdown_timeout_secs: u64,
    /// How long Kafka may take to answer when the connector starts; after that the connector
    /// stops with an error (an outage later on is waited out instead).
    #[serde(default = "default_startup")]
    pub startup_timeout_secs: u64,
    /// Who this connector reads personal data as, and for what: the key service releases a
    /// citizen's key only under a live grant of this agency for this purpose
    /// (docs/personal-data.md). Without it, sealed records are stored masked.
    #[serde(default)]
    pub privacy: Option<ReaderIdentity>,
    /// Verify every record's signature before applying it (docs/signatures.md): a record
    /// that is unsigned, altered, signed under an unknown or revoked certificate, or signed
    /// by another agency than its producer unit goes to the dead-letter topic (class
    /// `signature`). Without it, signatures are not checked.
    #[serde(default)]
    pub signatures: Option<SignaturesConfig>,
    /// After each committed batch, publish a receipt of what it applied, signed with this
    /// agency's key (docs/signatures.md). Without it, no receipts.
    #[serde(default)]
    pub receipts: Option<ReceiptsConfig>,
    /// Where sealed citizen records get their keys: `lienthong up` hands its key service, as
    /// `privacy`'s agency and purpose, to the connectors it runs. Not read from the file.
    #[serde(skip)]
    pub keys: lienthong_privacy::KeySource,
    /// How often the running connector compares its store with the log itself (the
    /// divergence gauge); off by default.
    #[serde(default)]
    pub verify: VerifyConfig,
}

/// A connector's `[verify]`: the scheduled check behind `lienthong_connector_divergent_rows`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyConfig {
    /// Seconds between checks, the first one this long after the start; 0 (the default):
    /// never. A check reads the connector's topics up to the store's offsets and folds them in
    /// memory, so it costs a read of the log and memory for the rows the store holds: for a
    /// store of a million rows, every few hours, not every minute.
    pub interval_secs: u64,
    /// Digest buckets (as `lienthong verify --buckets`).
    pub buckets: usize,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            interval_secs: 0,
            buckets: crate::digest::DEFAULT_BUCKETS,
        }
    }
}

fn default_shutdown() -> u64 {
    10
}

fn default_startup() -> u64 {
    30
}

/// A connector's `[signatures]`: whose certificates it trusts, and where they are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignaturesConfig {
    /// The certificates (PEM files) of the CAs whose agency certificates are taken: the city
    /// CA's `ca.crt`, and any national CA's.
    pub trusted_cas: Vec<PathBuf>,
    /// The compacted topic of certificates and revocations.
    #[serde(default = "default_certificates_topic")]
    pub topic: String,
}

/// A connector's `[receipts]`: the key and certificate its receipts are signed with, where they
/// go, and how often they carry the store's digest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptsConfig {
    /// The agency's private key (`lienthong cert issue`).
    pub key_file: PathBuf,
    /// The agency's certificate: the receipts are its agency's.
    pub certificate_file: PathBuf,
    /// The receipts topic.
    #[serde(default = "default_receipts_topic")]
    pub topic: String,
    /// A receipt carries the store's digest (every row listed and hashed) at most this often;
    /// 0: after every batch. The first batch's receipt always carries it.
    #[serde(default = "default_digest_every")]
    pub store_digest_every_secs: u64,
}

fn default_receipts_topic() -> String {
    lienthong_signing::RECEIPTS_TOPIC.into()
}

fn default_digest_every() -> u64 {
    300
}

fn default_certificates_topic() -> String {
    lienthong_signing::CERTIFICATES_TOPIC.into()
}

/// A connector's `[privacy]`: the agency it reads personal data as, the purpose it states,
/// and, for a connector outside `lienthong up`, where the key service is.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderIdentity {
    /// The agency's unit code (its grants are looked up by it).
    pub agency: String,
    /// The purpose of the processing, as a grant names it.
    pub purpose: String,
    /// The key service (`http://host:port`, `[privacy] listen` of `lienthong up`); unset
    /// under `up`, which hands its own.
    #[serde(default)]
    pub key_service_url: Option<String>,
    /// The agency's token, inline (prefer `token_file`). Redacted in logs.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the agency's token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl ReaderIdentity {
    /// The credential the key service is sent: HTTP Basic, the agency and its token.
    pub fn credentials(&self) -> Result<lienthong_registry::client::Credentials, ConnectError> {
        lienthong_registry::client::Credentials::from_config(
            Some(&self.agency),
            self.token.as_deref(),
            self.token_file.as_deref(),
        )
        .map_err(|e| ConnectError::Config(format!("privacy: {e}")))
    }
}

impl std::fmt::Debug for ReaderIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderIdentity")
            .field("agency", &self.agency)
            .field("purpose", &self.purpose)
            .field("key_service_url", &self.key_service_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .finish()
    }
}

/// One consumed topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Topic name.
    pub name: String,
    /// What its records are; defaults to the catalog topic of that name.
    #[serde(default)]
    pub entity: Option<Entity>,
}

/// The store to write.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum StoreConfig {
    /// PostgreSQL, by URL (`postgres://user:password@host:port/db`).
    Postgres {
        /// Connection URL; its password is never shown.
        url: String,
    },
    /// SQLite, by file path.
    Sqlite {
        /// The database file (created if missing).
        path: PathBuf,
    },
}

/// `url` with any password replaced by `<redacted>`.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        if let Some(at) = rest.find('@') {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                out = format!(
                    "{}{}:<redacted>{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &rest[at..]
                );
            }
        }
    }
    // key=value form: `host=... password=...`, and `?password=` query parameters.
    let lower = out.to_ascii_lowercase();
    if let Some(i) = lower.find("password=") {
        let start = i + "password=".len();
        let end = out[start..]
            .find([' ', '&'])
            .map(|e| start + e)
            .unwrap_or(out.len());
        out.replace_range(start..end, "<redacted>");
    }
    out
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreConfig::Postgres { url } => f
                .debug_struct("Postgres")
                .field("url", &redact_url(url))
                .finish(),
            StoreConfig::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
        }
    }
}

/// Which records the store takes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Unit codes this store is for (a ward's own code). Empty: every record. A case is taken
    /// when one of these units receives, processes or is home to it (or it is assigned to one),
    /// and from then on every later event of it.
    #[serde(default)]
    pub units: Vec<String>,
    /// Whether the store is granted citizen records. Without the grant they never reach it.
    #[serde(default)]
    pub citizen_records: bool,
    /// How a sealed field this store may not read is stored: `"masked"` (the value the
    /// record carries in its place: the pseudonym for a personal id, empty text, 0, the
    /// enum's default) or `"null"`.
    #[serde(default)]
    pub unreadable_fields: Unreadable,
}

/// How a sealed field the store may not read is stored (`[filter] unreadable_fields`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unreadable {
    /// The masked value the record carries.
    #[default]
    Masked,
    /// SQL NULL.
    Null,
}

/// Batching.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Apply once this many records are waiting.
    pub max_records: usize,
    /// Apply once the oldest waiting record waited this long while more kept arriving. A batch
    /// is applied as soon as the consumer has nothing more ready (adaptive flushing): at low
    /// load each record goes to the store at once, and batches grow only under load.
    pub max_wait_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_records: 5_000,
            max_wait_ms: 100,
        }
    }
}

/// Where writer schemas come from.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemasConfig {
    /// The schemas folder (catalog and `.avsc` files): the connector's reader schemas.
    pub dir: PathBuf,
    /// A Confluent-compatible registry to fetch writer schemas by id. Without it, ids are the
    /// catalog's local ids (1, 2, … in catalog order).
    pub registry_url: Option<String>,
    /// The agency the connector reads the registry as (HTTP Basic user name, with the token as
    /// password); without it the token is sent as a bearer token. lienthong's own registry
    /// takes either form.
    pub registry_agency: Option<String>,
    /// The registry token, inline (prefer `registry_token_file`). Redacted in logs.
    pub registry_token: Option<String>,
    /// A file holding the registry token (surrounding white space ignored).
    pub registry_token_file: Option<PathBuf>,
}

impl SchemasConfig {
    /// The credential to send to the registry, from the config.
    pub fn registry_credentials(
        &self,
    ) -> Result<lienthong_registry::client::Credentials, ConnectError> {
        lienthong_registry::client::Credentials::from_config(
            self.registry_agency.as_deref(),
            self.registry_token.as_deref(),
            self.registry_token_file.as_deref(),
        )
        .map_err(|e| ConnectError::Config(format!("schemas: {e}")))
    }
}

impl std::fmt::Debug for SchemasConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemasConfig")
            .field("dir", &self.dir)
            .field(
                "registry_url",
                &self.registry_url.as_deref().map(redact_url),
            )
            .field("registry_agency", &self.registry_agency)
            .field(
                "registry_token",
                &self.registry_token.as_ref().map(|_| "<redacted>"),
            )
            .field("registry_token_file", &self.registry_token_file)
            .finish()
    }
}

impl Default for SchemasConfig {
    fn default() -> Self {
        SchemasConfig {
            dir: PathBuf::from("schemas"),
            registry_url: None,
            registry_agency: None,
            registry_token: None,
            registry_token_file: None,
        }
    }
}

impl ConnectorConfig {
    /// Parse and check a TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConnectError> {
        let config: ConnectorConfig =
            toml::from_str(text).map_err(|e| ConnectError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Read and check a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConnectError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConnectError::Config(format!("{}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| match e {
            ConnectError::Config(m) => ConnectError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    fn validate(&self) -> Result<(), ConnectError> {
        let bad = |m: String| Err(ConnectError::Config(m));
        if self.name.trim().is_empty() || self.name.chars().any(char::is_control) {
            return bad(format!("invalid connector name {:?}", self.name));
        }
        if self.topics.is_empty() {
            return bad("topics is empty: nothing to consume".into());
        }
        for t in &self.topics {
            self.entity_of(&t.name)?;
        }
        if self.batch.max_records == 0 {
            return bad("batch.max_records must be at least 1".into());
        }
        if !(1..=crate::digest::MAX_BUCKETS).contains(&self.verify.buckets) {
            return bad(format!(
                "verify.buckets must be between 1 and {}",
                crate::digest::MAX_BUCKETS
            ));
        }
        if (1..10).contains(&self.verify.interval_secs) {
            return bad("verify.interval_secs must be 0 (never) or at least 10".into());
        }
        if self.dead_letter_topic.trim().is_empty() {
            return bad("dead_letter_topic is empty".into());
        }
        if self.topics.iter().any(|t| t.name == self.dead_letter_topic) {
            return bad("dead_letter_topic must not be a consumed topic".into());
        }
        for u in &self.filter.units {
            if !lienthong_contract::catalog::FieldFormat::UnitCode.accepts(u) {
                return bad(format!("filter.units: {u:?} is not a unit code"));
            }
        }
        let s = &self.schemas;
        if s.registry_url.is_none()
            && (s.registry_agency.is_some()
                || s.registry_token.is_some()
                || s.registry_token_file.is_some())
        {
            return bad("schemas: a registry credential is set but registry_url is not".into());
        }
        if s.registry_url.is_some() {
            s.registry_credentials()?;
        }
        Ok(())
    }

    /// The entity of consumed topic `topic`.
    pub fn entity_of(&self, topic: &str) -> Result<Entity, ConnectError> {
        let t = self
            .topics
            .iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| ConnectError::Config(format!("topic {topic} is not consumed")))?;
        t.entity
            .or_else(|| Entity::of_catalog_topic(&t.name))
            .ok_or_else(|| {
                ConnectError::Config(format!(
                    "topic {}: not a catalog topic, so say its entity (cases, citizens, feedback, units, procedures)",
                    t.name
                ))
            })
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        self.group.as_deref().unwrap_or(&self.name)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const OK: &str = r#"
name = "ward-26734"
dead_letter_topic = "dlq"
[kafka]
bootstrap = "127.0.0.1:9092"
options = { "sasl.password" = "hunter2" }
[[topics]]
name = "hcm.case.events"
[store]
kind = "postgres"
url = "postgres://sink:s3cret@db:5432/ward"
[filter]
units = ["26734"]
"#;

    #[test]
    fn a_config_parses_and_hides_its_secrets() {
        let c = ConnectorConfig::from_toml(OK).unwrap();
        assert_eq!(c.entity_of("hcm.case.events").unwrap(), Entity::Cases);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(shown.contains("sink:<redacted>@db"), "{shown}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let e =
            ConnectorConfig::from_toml(&OK.replace("[filter]", "[filter]\nward = 1")).unwrap_err();
        assert!(e.to_string().contains("ward"), "{e}");
        let e = ConnectorConfig::from_toml(&OK.replace("hcm.case.events", "x")).unwrap_err();
        assert!(e.to_string().contains("entity"), "{e}");
        let e = ConnectorConfig::from_toml(&OK.replace("26734", "abc")).unwrap_err();
        assert!(e.to_string().contains("unit code"), "{e}");
    }

    #[test]
    fn a_registry_credential_is_taken_checked_and_hidden() {
        use lienthong_registry::client::Credentials;
        let with = |lines: &str| {
            OK.replace(
                "[filter]",
                &format!("[schemas]\nregistry_url = \"http://r:8081\"\n{lines}\n[filter]"),
            )
        };
        let c = ConnectorConfig::from_toml(&with(
            "registry_agency = \"26734\"\nregistry_token = \"ward-secret\"",
        ))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("ward-secret"), "{shown}");
        assert!(matches!(
            c.schemas.registry_credentials().unwrap(),
            Credentials::Basic { user, password } if user == "26734" && password == "ward-secret"
        ));
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "file-secret\n").unwrap();
        let c = ConnectorConfig::from_toml(&with(&format!(
            "registry_token_file = \"{}\"",
            file.path().display()
        )))
        .unwrap();
        assert!(matches!(
            c.schemas.registry_credentials().unwrap(),
            Credentials::Bearer(t) if t == "file-secret"
        ));
        for (lines, says) in [
            (
                "registry_token = \"a\"\nregistry_token_file = \"/x\"",
                "not both",
            ),
            ("registry_token_file = \"/no/such/file\"", "/no/such/file"),
        ] {
            let e = ConnectorConfig::from_toml(&with(lines)).unwrap_err();
            assert!(e.to_string().contains(says), "{lines}: {e}");
            assert!(matches!(e, ConnectError::Config(_)), "{e:?}");
        }
        let e = ConnectorConfig::from_toml(
            &OK.replace("[filter]", "[schemas]\nregistry_token = \"a\"\n[filter]"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("registry_url is not"), "{e}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let r = RetryConfig {
            initial_ms: 100,
            max_ms: 1_000,
        };
        for _ in 0..50 {
            let b1 = r.backoff(1).as_millis();
            assert!((50..=100).contains(&b1), "{b1}");
            let b9 = r.backoff(9).as_millis();
            assert!((500..=1_000).contains(&b9), "{b9}");
        }
    }

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("host=db user=a password=x dbname=y"),
            "host=db user=a password=<redacted> dbname=y"
        );
        assert_eq!(redact_url("postgres://a@h/d"), "postgres://a@h/d");
    }
}
