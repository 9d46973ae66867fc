//! The `lienthong` command: how a city's IT staff meet the bus.
//!
//! It runs the bus's long-lived components (`up`: the schema registry for now), and manages
//! what they share: the schemas (`schemas check`) and the Kafka topics of the catalog
//! (`topics create`). The binary in `main.rs` only parses arguments and calls [`run`] with a
//! shutdown token; everything else lives here and in the component crates.
//!
//! Configuration is layered: built-in defaults, then a TOML file (`--config`), then
//! `LIENTHONG__SECTION__KEY` environment variables. Unknown keys are refused by name; secrets
//! never appear in logs or `Debug` output.

pub mod config;
pub mod connect;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lienthong_contract::Catalog;
use lienthong_registry::{Agencies, KafkaLogConfig, Registry, api};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;

pub use crate::config::Config;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "lienthong",
    version,
    about = "The event-streamed data exchange bus of Ho Chi Minh City's departments and wards."
)]
pub struct Cli {
    /// A TOML config file (layered over the defaults, under LIENTHONG__* variables).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    pub log_json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bus's components in one process until Ctrl-C: the schema registry (HTTP).
    Up,
    /// Work with the schemas in the catalog.
    #[command(subcommand)]
    Schemas(SchemasCommand),
    /// Work with the catalog's Kafka topics.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Run a sink connector described by a TOML file until Ctrl-C (see docs/connectors.md).
    Connect {
        /// The connector's TOML file.
        #[arg(value_name = "CONNECTOR_TOML")]
        connector: std::path::PathBuf,
    },
}

/// `lienthong schemas …`
#[derive(Debug, Subcommand)]
pub enum SchemasCommand {
    /// Validate the catalog and every schema, and check each against every version committed
    /// earlier in git under its subject's compatibility mode.
    Check,
    /// Register every catalog schema under its subject, with the subject's compatibility
    /// mode, in a Confluent-compatible registry (lienthong's or an external one). Running it
    /// again changes nothing. The credential comes from LIENTHONG_REGISTRY_TOKEN.
    Push {
        /// The registry's base URL, e.g. http://127.0.0.1:8081 or an Apicurio …/apis/ccompat/v7.
        #[arg(long)]
        url: String,
        /// The agency code to authenticate as (HTTP Basic user); without it, a bearer token.
        #[arg(long)]
        agency: Option<String>,
    },
}

/// `lienthong topics …`
#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create every catalog topic that does not exist yet, with its partitions, cleanup
    /// policy, retention and min ISR. Running it again changes nothing.
    Create {
        /// Replication factor (use 3 on a production cluster).
        #[arg(long, default_value_t = 1)]
        replication: i32,
    },
}

/// What went wrong, and the exit code it deserves.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Configuration or input is wrong: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The job itself failed (a check failed, a service is unreachable): exit 1.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
        }
    }
}

/// Run one command until it is done or `shutdown` is cancelled.
pub async fn run(cli: Cli, config: Config, shutdown: CancellationToken) -> Result<(), CliError> {
    if let Command::Connect { connector } = &cli.command {
        return connect::run_file(connector, shutdown).await;
    }
    let catalog = Catalog::load(&config.schemas_dir).map_err(|e| CliError::Usage(e.to_string()))?;
    match cli.command {
        Command::Schemas(SchemasCommand::Check) => schemas_check(&config.schemas_dir, &catalog),
        Command::Schemas(SchemasCommand::Push { url, agency }) => {
            schemas_push(&catalog, &url, agency).await
        }
        Command::Topics(TopicsCommand::Create { replication }) => {
            topics_create(&config, &catalog, replication).await
        }
        Command::Up => up(&config, catalog, shutdown).await,
        Command::Connect { .. } => Ok(()),
    }
}

fn schemas_check(dir: &Path, catalog: &Catalog) -> Result<(), CliError> {
    println!(
        "catalog {}: {} topics, every schema valid",
        catalog.file().display(),
        catalog.topics().len()
    );
    match lienthong_contract::history::check_history_of(dir)
        .map_err(|e| CliError::Failed(e.to_string()))?
    {
        None => println!("not in a git checkout: compatibility with earlier versions not checked"),
        Some(report) => {
            let failures = report.failures();
            if !failures.is_empty() {
                for f in &failures {
                    eprintln!("INCOMPATIBLE: {f}");
                }
                return Err(CliError::Failed(format!(
                    "{} incompatible schema change(s)",
                    failures.len()
                )));
            }
            let versions: usize = report.subjects.iter().map(|s| s.versions.len()).sum();
            println!(
                "compatible with {versions} earlier version(s) from {} commit(s)",
                report.commits
            );
        }
    }
    Ok(())
}

/// The environment variable that holds the registry credential for `schemas push`.
pub const REGISTRY_TOKEN_ENV: &str = "LIENTHONG_REGISTRY_TOKEN";

async fn schemas_push(
    catalog: &Catalog,
    url: &str,
    agency: Option<String>,
) -> Result<(), CliError> {
    use lienthong_registry::client::{Credentials, RegistryClient};
    let token = std::env::var(REGISTRY_TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty());
    let credentials = match (agency, token) {
        (Some(user), Some(password)) => Credentials::Basic { user, password },
        (None, Some(t)) => Credentials::Bearer(t),
        (Some(_), None) => {
            return Err(CliError::Usage(format!(
                "--agency needs the token in {REGISTRY_TOKEN_ENV}"
            )));
        }
        (None, None) => Credentials::None,
    };
    let client = RegistryClient::new(url, credentials, lienthong_contract::Codec::new())
        .map_err(|e| CliError::Failed(e.to_string()))?;
    for topic in catalog.topics() {
        client
            .set_compatibility(&topic.value_subject, topic.compatibility)
            .await
            .map_err(|e| CliError::Failed(format!("{}: {e}", topic.value_subject)))?;
        let id = client
            .id_for(&topic.value_subject, &topic.schema_json, true)
            .await
            .map_err(|e| CliError::Failed(format!("{}: {e}", topic.value_subject)))?;
        println!("{}\tid {id}\t{}", topic.value_subject, topic.compatibility);
    }
    Ok(())
}

async fn topics_create(
    config: &Config,
    catalog: &Catalog,
    replication: i32,
) -> Result<(), CliError> {
    if replication < 1 {
        return Err(CliError::Usage("--replication must be at least 1".into()));
    }
    let admin: AdminClient<DefaultClientContext> = config
        .kafka
        .client()
        .create()
        .map_err(|e| CliError::Failed(format!("Kafka client: {e}")))?;
    let retention: Vec<String> = catalog
        .topics()
        .iter()
        .map(|t| t.retention_ms.to_string())
        .collect();
    let min_isr: Vec<String> = catalog
        .topics()
        .iter()
        .map(|t| t.min_insync_replicas.min(replication).to_string())
        .collect();
    let topics: Vec<NewTopic> = catalog
        .topics()
        .iter()
        .zip(retention.iter().zip(&min_isr))
        .map(|(t, (retention, min_isr))| {
            NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(replication))
                .set("cleanup.policy", t.cleanup_policy.as_kafka())
                .set("retention.ms", retention)
                .set("min.insync.replicas", min_isr)
        })
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(15)))
        .request_timeout(Some(Duration::from_secs(15)));
    let results = admin.create_topics(&topics, &options).await.map_err(|e| {
        CliError::Failed(format!(
            "Kafka at {} unreachable: {e}",
            config.kafka.bootstrap
        ))
    })?;
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(name) => println!("created {name}"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => println!("exists  {name}"),
            Err((name, code)) => failed.push(format!("{name}: {code}")),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "could not create: {}",
            failed.join(", ")
        )))
    }
}

async fn up(
    config: &Config,
    catalog: Catalog,
    shutdown: CancellationToken,
) -> Result<(), CliError> {
    let agencies = Agencies::new(&config.registry.agencies).map_err(CliError::Usage)?;
    let log = KafkaLogConfig {
        bootstrap: config.kafka.bootstrap.clone(),
        topic: config.registry.topic.clone(),
        replication: config.registry.replication,
    };
    let registry = Registry::with_kafka(&log, Arc::new(catalog), agencies, shutdown.child_token())
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let ids = registry
        .bootstrap()
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    tracing::info!(subjects = ids.len(), "catalog schemas registered");
    let addr: SocketAddr = config.registry.listen.parse().map_err(|e| {
        CliError::Usage(format!("registry.listen {:?}: {e}", config.registry.listen))
    })?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::Failed(format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::Failed(e.to_string()))?;
    println!("schema registry listening on http://{local}");
    tracing::info!(%local, "schema registry listening");
    axum::serve(listener, api::router(Arc::new(registry)))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    println!("stopped");
    Ok(())
}
