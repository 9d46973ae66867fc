//! The configuration tree: defaults, then a TOML file, then `LIENTHONG__SECTION__KEY`
//! environment variables (e.g. `LIENTHONG__KAFKA__BOOTSTRAP=broker1:9092`).

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use lienthong_registry::AgencyCredential;
use serde::Deserialize;

/// Everything the command can be configured with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The schemas folder (catalog and `.avsc` files).
    #[serde(default = "default_schemas_dir")]
    pub schemas_dir: PathBuf,
    /// Kafka.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// The schema registry.
    #[serde(default)]
    pub registry: RegistryConfig,
    /// The HTTP gateway: `up` runs it (with the registry mounted under `/registry`) when this
    /// section is present.
    #[serde(default)]
    pub gateway: Option<lienthong_gateway::GatewayConfig>,
    /// The KPI engine, run by `lienthong up` when this section is present (see `kpi.rs`).
    #[serde(default)]
    pub kpi: Option<lienthong_kpi::KpiConfig>,
    /// The Kafka principals of the bus's own components, for `lienthong acl sync`.
    #[serde(default)]
    pub principals: lienthong_bus::acl::BusPrincipals,
    /// Sink connectors `lienthong up` runs, each a connector TOML file as `lienthong connect`
    /// takes it (relative paths are from the working directory).
    #[serde(default)]
    pub connectors: Vec<PathBuf>,
    /// Source connectors `lienthong up` runs, each a source TOML file as `lienthong source`
    /// takes it (docs/sources.md); started last, once the gateway they may post to listens.
    #[serde(default)]
    pub sources: Vec<PathBuf>,
    /// Citizens' personal data (docs/personal-data.md): with this section, `up` runs the key
    /// service, the gateway seals citizen records, and the connectors it runs open them under
    /// their agency's grants; `lienthong pii …` manages grants, erasures and access reports.
    #[serde(default)]
    pub privacy: Option<PrivacyConfig>,
    /// Agencies' signing certificates (`lienthong cert`, docs/signatures.md).
    #[serde(default)]
    pub signing: Option<SigningConfig>,
    /// The audit trail this process writes (`pii` and `cert` actions) and `audit verify` reads.
    #[serde(default)]
    pub audit: Option<AuditConfig>,
}

/// `[audit]`: who this process writes the audit trail as, and with which key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The writer: the agency whose certificate signs (`SKHCN`), or that agency and a name
    /// (`SKHCN/admin-1`); one chain each.
    pub writer: String,
    /// The writer's private key (`lienthong cert issue`).
    pub key_file: PathBuf,
    /// The writer's certificate.
    pub certificate_file: PathBuf,
    /// Sign every this many entries (1: every entry).
    #[serde(default = "default_sign_every")]
    pub sign_every: u64,
    /// The audit topic.
    #[serde(default = "default_audit_topic")]
    pub topic: String,
}

fn default_sign_every() -> u64 {
    1
}

fn default_audit_topic() -> String {
    lienthong_signing::AUDIT_TOPIC.into()
}

/// `[signing]`: which CAs are trusted, and where the certificate log is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// The certificates (PEM files) of the CAs whose agency certificates are taken: the city
    /// CA's `ca.crt` (`lienthong cert ca-init`), and any national CA's.
    pub trusted_cas: Vec<PathBuf>,
    /// The compacted topic of certificates and revocations.
    #[serde(default = "default_certificates_topic")]
    pub topic: String,
    /// Replication factor of the topic when it is created.
    #[serde(default = "default_replication")]
    pub replication: i32,
    /// The admin's Kafka connection for it; unset, the process's `[kafka]`.
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
}

fn default_certificates_topic() -> String {
    lienthong_signing::CERTIFICATES_TOPIC.into()
}

/// The key service's `[privacy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// A file holding the master secret (base64, `lienthong pii new-master-key`); unset, the
    /// `LIENTHONG_MASTER_KEY` environment variable.
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
    /// The compacted topic of wrapped data keys.
    #[serde(default = "default_keys_topic")]
    pub keys_topic: String,
    /// The compacted topic of grants.
    #[serde(default = "default_grants_topic")]
    pub grants_topic: String,
    /// The topic of access records.
    #[serde(default = "default_access_topic")]
    pub access_topic: String,
    /// Replication factor of those topics when they are created.
    #[serde(default = "default_replication")]
    pub replication: i32,
    /// The key service's own Kafka connection (its principal on a secured cluster); unset,
    /// the process's `[kafka]`.
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
    /// Where the key service answers connectors outside `up` (`GET /privacy/keys/…`, with
    /// the agencies of `[[registry.agencies]]`); unset, it serves no HTTP.
    #[serde(default)]
    pub listen: Option<String>,
}

fn default_keys_topic() -> String {
    lienthong_privacy::KEYS_TOPIC.into()
}

fn default_grants_topic() -> String {
    lienthong_privacy::GRANTS_TOPIC.into()
}

fn default_access_topic() -> String {
    lienthong_privacy::ACCESS_TOPIC.into()
}

fn default_replication() -> i32 {
    1
}

fn default_schemas_dir() -> PathBuf {
    PathBuf::from("schemas")
}

/// How to reach Kafka: the bus's one connection config, shared by every component.
pub use lienthong_bus::KafkaConfig;

/// The schema registry run by `lienthong up`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Address to listen on.
    pub listen: String,
    /// The compacted topic that holds the registry's state.
    pub topic: String,
    /// Replication factor of that topic when it is created.
    pub replication: i32,
    /// Agencies and the SHA-256 of their tokens. On a secured cluster also the agencies whose
    /// ACLs `lienthong acl sync` keeps.
    pub agencies: Vec<AgencyCredential>,
    /// The registry's own Kafka connection (its principal on a secured cluster); unset, the
    /// process's `[kafka]`.
    pub kafka: Option<KafkaConfig>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            listen: "127.0.0.1:8081".into(),
            topic: "_lienthong_schemas".into(),
            replication: 1,
            agencies: Vec::new(),
            kafka: None,
        }
    }
}

impl Config {
    /// Defaults, then `file` if given, then `LIENTHONG__*` variables. Errors name the key.
    pub fn load(file: Option<&Path>) -> Result<Config, String> {
        // Built-in defaults are the serde defaults of the tree, filled in for every key that no
        // layer sets.
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(format!("config file {} does not exist", path.display()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed("LIENTHONG__").split("__").lowercase(true));
        figment.extract::<Config>().map_err(|e| {
            let mut msg = format!("invalid configuration: {e}");
            if let Some(path) = file {
                msg.push_str(&format!(
                    " (file {}, then LIENTHONG__* variables)",
                    path.display()
                ));
            }
            msg
        })
    }
}
