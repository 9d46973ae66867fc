//! The configuration tree: defaults, then a TOML file, then `LIENTHONG__SECTION__KEY`
//! environment variables (e.g. `LIENTHONG__KAFKA__BOOTSTRAP=broker1:9092`).

use std::collections::BTreeMap;
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
    /// Sink connectors `lienthong up` runs, each a connector TOML file as `lienthong connect`
    /// takes it (relative paths are from the working directory).
    #[serde(default)]
    pub connectors: Vec<PathBuf>,
}

fn default_schemas_dir() -> PathBuf {
    PathBuf::from("schemas")
}

/// How to reach Kafka.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated.
    pub bootstrap: String,
    /// Extra librdkafka settings passed through as they are (e.g. `security.protocol`).
    pub options: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap: "127.0.0.1:9092".into(),
            options: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The same settings as the gateway takes them.
    pub fn connection(&self) -> lienthong_gateway::KafkaConnection {
        lienthong_gateway::KafkaConnection {
            bootstrap: self.bootstrap.clone(),
            options: self.options.clone(),
        }
    }

    /// A librdkafka client config with the bootstrap servers and the pass-through options.
    pub fn client(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c
    }
}

/// Options whose values are secrets and never shown.
fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", "key"]
        .iter()
        .any(|s| k.contains(s))
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options: BTreeMap<&str, &str> = self
            .options
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if is_secret(k) {
                        "<redacted>"
                    } else {
                        v.as_str()
                    },
                )
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap", &self.bootstrap)
            .field("options", &options)
            .finish()
    }
}

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
    /// Agencies and the SHA-256 of their tokens.
    pub agencies: Vec<AgencyCredential>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            listen: "127.0.0.1:8081".into(),
            topic: "_lienthong_schemas".into(),
            replication: 1,
            agencies: Vec::new(),
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
