//! The `lienthong` command: how a city's IT staff meet the bus.
//!
//! It runs the bus's long-lived components (`up`: the schema registry, and the HTTP gateway
//! when configured), and manages
//! what they share: the schemas (`schemas check`) and the Kafka topics of the catalog
//! (`topics create`). The binary in `main.rs` only parses arguments and calls [`run`] with a
//! shutdown token; everything else lives here and in the component crates.
//!
//! Configuration is layered: built-in defaults, then a TOML file (`--config`), then
//! `LIENTHONG__SECTION__KEY` environment variables. Unknown keys are refused by name; secrets
//! never appear in logs or `Debug` output.

// Output goes through `say!` and `say_err!`, which never panic on a closed stream.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use lienthong_telemetry::{say, say_err};

pub mod cert;
pub mod config;
pub mod connect;
pub mod kpi;
pub mod pii;
pub mod publish;
pub mod replay;
pub mod schemas;
pub mod security;
pub mod source;
pub mod tail;
pub mod trace;
pub mod verify;

use std::path::Path;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use lienthong_contract::Catalog;
use lienthong_registry::{Agencies, KafkaLogConfig, Registry, api};
use lienthong_telemetry::Telemetry;
use lienthong_telemetry::component::{Component, Listener, Running};
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
    /// Run the bus's components in one process until Ctrl-C: the schema registry (HTTP), and
    /// the HTTP gateway (with the registry also under /registry) if [gateway] is configured,
    /// the KPI engine when the config has a `[kpi]` section, the sink connectors listed in
    /// `connectors = ["ward.toml", …]` and the source connectors in `sources = […]`.
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
    /// Run a source connector described by a TOML file until Ctrl-C: publish the rows an
    /// agency's application writes to its PostgreSQL outbox, through the gateway (see
    /// docs/sources.md).
    Source {
        /// The source's TOML file.
        #[arg(value_name = "SOURCE_TOML")]
        source: std::path::PathBuf,
    },
    /// Rebuild a connector's store from the beginning of the log, with a progress bar and an
    /// ETA; stop when it holds everything that was on the log at the start, and print its digest.
    Replay {
        /// The connector's TOML file (the same as for `connect`).
        #[arg(value_name = "CONNECTOR_TOML")]
        connector: std::path::PathBuf,
    },
    /// Put right, in place and while the connector runs, only the rows of a connector's store
    /// that differ from the log; then verify again (exit 1 if it still differs).
    Repair {
        /// The connector's TOML file (the same as for `connect`).
        #[arg(value_name = "CONNECTOR_TOML")]
        connector: std::path::PathBuf,
        /// Digest buckets, as for `verify` (default: the connector's `[verify] buckets`, 64).
        #[arg(long)]
        buckets: Option<usize>,
    },
    /// Play a day of the city on embedded defaults: an in-memory Kafka, the registry,
    /// `/metrics`, and cases filed, transferred, completed and rated at wards and departments.
    Demo(DemoArgs),
    /// Publish JSON events (the gateway's JSON form) from a file or stdin through the producer
    /// SDK, as one agency; print a receipt per event. Every event is checked before any is sent.
    Publish(publish::PublishArgs),
    /// Print a topic's records as JSON lines, decoded with their schemas; from the end, the
    /// beginning, an offset or a time, optionally only one key.
    Tail(tail::TailArgs),
    /// A secured cluster's access control lists, derived from the catalog (see
    /// docs/security.md). Connects with [kafka] as the bus's admin.
    #[command(subcommand)]
    Acl(AclCommand),
    /// An agency's credentials on a secured cluster (see docs/security.md). Connects with
    /// [kafka] as the bus's admin.
    #[command(subcommand)]
    Agency(AgencyCommand),
    /// A bus component's credential on a secured cluster: a new SCRAM-SHA-512 secret for its
    /// principal ([principals]), printed once; its ACLs come from `acl sync`.
    #[command(subcommand)]
    Component(ComponentCommand),
    /// Citizens' personal data (docs/personal-data.md): grants, erasure, access reports, on
    /// the key service's topics with [privacy]'s master secret.
    #[command(subcommand)]
    Pii(PiiCommand),
    /// Agencies' signing keys and certificates (docs/signatures.md): the city CA, issuing,
    /// revoking and listing, on the certificate log with [signing].
    #[command(subcommand)]
    Cert(CertCommand),
    /// The audit trail (docs/signatures.md): what admins did, hash-chained and signed.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Given a connector's TOML file: compare its live store with the log without stopping the
    /// connector, print the rows that differ and how, exit 1 if any do (docs/connectors.md).
    /// Given a topic: check every record, from --from to the end of the log as it is now,
    /// against the certificate log ([signing]): who signed each, and every record that is
    /// unsigned, altered, under an unknown or revoked certificate, or signed by another agency
    /// than its producer unit; exit 1 on any (docs/signatures.md).
    Verify(VerifyArgs),
    /// Every event of a case (by case id or correlation id) across the case and feedback
    /// topics, and which agencies applied each and when, from their signed apply receipts:
    /// asked of the KPI engine's trace index (docs/signatures.md).
    Trace(trace::TraceArgs),
}

/// `lienthong verify` options.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// A connector's TOML file (an existing file), or a topic.
    #[arg(value_name = "CONNECTOR_TOML|TOPIC")]
    pub topic: String,
    /// Topic only: where to start in every partition: `beginning` (the default), `offset:N`,
    /// or `time:T` (RFC 3339 or milliseconds since the epoch).
    #[arg(long, value_name = "WHERE")]
    pub from: Option<String>,
    /// Connector only: digest buckets (more buckets, fewer rows read again where a digest
    /// differs; default: the connector's `[verify] buckets`, 64).
    #[arg(long)]
    pub buckets: Option<usize>,
    /// Fetch writer schemas by id from this registry (token from LIENTHONG_REGISTRY_TOKEN),
    /// to read each record's producer unit; without it, the catalog's local ids.
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
}

/// `lienthong audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Read the whole trail and check every writer's chain and signatures against the
    /// certificate log ([signing]); exit 1 on a changed, removed, reordered or forged entry.
    Verify {
        /// The audit topic (default: [audit] topic, or _lienthong_audit).
        #[arg(long)]
        topic: Option<String>,
    },
}

/// `lienthong cert …`
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Create the city CA in a directory (`ca.key`, readable by its owner only, and `ca.crt`,
    /// which every component trusts: list it in [signing] trusted_cas). Never overwrites.
    CaInit {
        /// Where to keep it.
        #[arg(long)]
        dir: std::path::PathBuf,
        /// The CA's name.
        #[arg(long, default_value = "Ho Chi Minh City lienthong CA")]
        name: String,
        /// How long it is valid, in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue an agency a signing key and certificate with the city CA: the key and certificate
    /// are written to `--out` (`AGENCY.key`, `AGENCY.crt`), the certificate put on the log.
    Issue {
        /// The agency's unit code (the certificate's common name).
        #[arg(long)]
        agency: String,
        /// The city CA's directory.
        #[arg(long)]
        ca_dir: std::path::PathBuf,
        /// Where to write the agency's key and certificate.
        #[arg(long)]
        out: std::path::PathBuf,
        /// How long it is valid, in days.
        #[arg(long, default_value_t = 730)]
        days: u32,
        /// Who issues it (recorded on the log).
        #[arg(long)]
        by: String,
    },
    /// Put a certificate issued elsewhere (a national CA's, under a CA in trusted_cas) on the
    /// log.
    Add {
        /// The certificate, PEM.
        file: std::path::PathBuf,
        /// Who adds it.
        #[arg(long)]
        by: String,
    },
    /// Revoke a certificate from now on: signatures made with it after this are refused.
    Revoke {
        /// The certificate's id (`lienthong cert list`).
        id: String,
        /// Why (recorded).
        #[arg(long)]
        reason: String,
        /// Who revokes it.
        #[arg(long)]
        by: String,
    },
    /// List the certificates on the log: id, agency, key, valid until, revoked.
    List,
    /// Sign a document as an official of an agency, offline, with the agency's key: print the
    /// `Document` to put in a case event (`documents`, `result_document`), as JSON: its
    /// SHA-256, media type, size and signature (docs/signatures.md). Connectors with
    /// [signatures] and `lienthong verify` check it against the certificate log.
    SignDocument {
        /// The document (any file: a PDF, a scan).
        #[arg(value_name = "FILE")]
        file: std::path::PathBuf,
        /// The agency's private key (`AGENCY.key` from `cert issue`).
        #[arg(long)]
        key: std::path::PathBuf,
        /// The agency's certificate (`AGENCY.crt`), on the certificate log.
        #[arg(long)]
        certificate: std::path::PathBuf,
        /// The signing official's name, as it should appear.
        #[arg(long)]
        signer_name: String,
        /// The document's media type (default: from the file's extension).
        #[arg(long)]
        media_type: Option<String>,
    },
}

/// `lienthong pii …`
#[derive(Debug, Subcommand)]
pub enum PiiCommand {
    /// Print a new random master secret (base64) for [privacy] master_key_file or
    /// LIENTHONG_MASTER_KEY. Keep it like a CA's key: losing it loses every sealed record.
    NewMasterKey,
    /// Let an agency read classes of a topic's personal data for a purpose, on a legal basis,
    /// until a date; prints the grant's id. Granting the same agency, topic and purpose again
    /// replaces it.
    Grant {
        /// The agency's unit code.
        #[arg(long)]
        agency: String,
        /// The catalog topic.
        #[arg(long, default_value = "hcm.citizen.records")]
        topic: String,
        /// The classes, comma-separated: identifier, name, demographic, residence, contact,
        /// free_text.
        #[arg(long)]
        classes: String,
        /// The purpose of the processing.
        #[arg(long)]
        purpose: String,
        /// The legal basis.
        #[arg(long)]
        legal_basis: String,
        /// The last day it holds, YYYY-MM-DD (through the end of that day, Vietnam time).
        #[arg(long)]
        until: String,
        /// Who grants it (recorded with the grant).
        #[arg(long)]
        by: String,
    },
    /// Revoke a grant by its id: its agency gets no more keys under it.
    Revoke {
        /// The grant's id (`lienthong pii grants`).
        id: String,
        /// Who revokes it (recorded on the audit trail).
        #[arg(long, default_value = "unnamed admin")]
        by: String,
    },
    /// List the grants: id, agency, topic, classes, purpose, legal basis, live or expired.
    Grants,
    /// Erase a citizen: destroy the data key (every sealed copy becomes unreadable), then a
    /// tombstone on hcm.citizen.records removes the stores' rows.
    Erase {
        /// The citizen's 12-digit personal id.
        personal_id: String,
        /// Who erases (recorded).
        #[arg(long)]
        by: String,
    },
    /// Who got the citizen's key, when, for what purpose, under which grant; and its
    /// sealing and erasure.
    Report {
        /// The citizen's 12-digit personal id.
        #[arg(long)]
        citizen: String,
    },
}

/// `lienthong component …`
#[derive(Debug, Subcommand)]
pub enum ComponentCommand {
    /// Issue (or rotate) the component's secret.
    Add {
        /// Which component.
        #[arg(value_enum)]
        name: ComponentName,
    },
}

/// `lienthong acl …`
#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Make the cluster hold the ACLs the catalog's publishers and readers, the agencies of
    /// [[registry.agencies]] and the bus's components ([principals]) call for: create what is
    /// missing; report an ACL nobody declared (drift, exit 1), or delete it with --prune.
    /// Running it again changes nothing.
    Sync {
        /// Print what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete the ACLs nobody declared.
        #[arg(long)]
        prune: bool,
    },
}

/// `lienthong agency …`
#[derive(Debug, Subcommand)]
pub enum AgencyCommand {
    /// Issue the agency a SCRAM-SHA-512 secret (printed once) and grant its ACLs. For an
    /// agency that has one, the secret is replaced: that is how it is rotated.
    Add {
        /// The agency's code, e.g. 26734 or CATP: its Kafka user name.
        code: String,
        /// Ward (also commune, special zone) or department.
        #[arg(long, value_enum)]
        kind: publish::Kind,
    },
    /// Delete the agency's SCRAM credential: it can no longer connect.
    Revoke {
        /// The agency's code.
        code: String,
    },
}

/// A component of the bus, as `lienthong component add` names it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ComponentName {
    /// The HTTP gateway.
    Gateway,
    /// The schema registry.
    Registry,
    /// The KPI engine.
    Kpi,
    /// The key service (personal data).
    Keys,
}

/// `lienthong demo` options.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Run against this Kafka cluster (bootstrap servers) instead of the embedded broker.
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka: Option<String>,
    /// How long today runs, in seconds.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub duration: u64,
    /// Today's steps per second.
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// The simulation's seed: the same seed plays the same day.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Where the demo's stores are written (emptied first).
    #[arg(long, default_value = "lienthong-demo", value_name = "DIR")]
    pub data_dir: std::path::PathBuf,
    /// Address of the demo's HTTP server (registry, /metrics).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: String,
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
    /// Show, field by field, how the working tree's schemas differ from a registry's latest
    /// versions (--url) or from a git revision (--against, default HEAD), and whether each
    /// change is compatible under its subject's mode. Exits 1 on an incompatible change.
    Diff {
        /// Compare with this Confluent-compatible registry (token from LIENTHONG_REGISTRY_TOKEN).
        #[arg(long, conflicts_with = "against")]
        url: Option<String>,
        /// The agency code to authenticate as (HTTP Basic user); without it, a bearer token.
        #[arg(long, requires = "url")]
        agency: Option<String>,
        /// Compare with the catalog committed at this git revision.
        #[arg(long, value_name = "REV")]
        against: Option<String>,
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

impl From<lienthong_telemetry::TelemetryError> for CliError {
    /// A listen address that is not one is a usage error; one that cannot be bound, a failure.
    fn from(e: lienthong_telemetry::TelemetryError) -> CliError {
        if e.is_config() {
            CliError::Usage(e.to_string())
        } else {
            CliError::Failed(e.to_string())
        }
    }
}

impl CliError {
    /// The same error, saying what it was about (`connector x: …`).
    pub fn context(self, what: &str) -> CliError {
        match self {
            CliError::Usage(m) => CliError::Usage(format!("{what}: {m}")),
            CliError::Failed(m) => CliError::Failed(format!("{what}: {m}")),
        }
    }

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
    match &cli.command {
        Command::Connect { connector } => return connect::run_file(connector, shutdown).await,
        Command::Replay { connector } => return replay::run_file(connector, shutdown).await,
        Command::Source { source } => return source::run_file(source, shutdown).await,
        Command::Verify(args) if Path::new(&args.topic).is_file() => {
            if args.from.is_some() || args.registry.is_some() {
                return Err(CliError::Usage(
                    "--from and --registry are for checking a topic's signatures, not a connector's store".into(),
                ));
            }
            return verify::verify_file(Path::new(&args.topic), args.buckets, shutdown).await;
        }
        Command::Verify(args) if args.buckets.is_some() => {
            return Err(CliError::Usage(format!(
                "--buckets is for a connector's store, and {} is not a file",
                args.topic
            )));
        }
        Command::Repair { connector, buckets } => {
            return verify::repair_file(connector, *buckets, shutdown).await;
        }
        Command::Cert(sign @ CertCommand::SignDocument { .. }) => {
            return cert::sign_document(sign);
        }
        _ => {}
    }
    let catalog = Catalog::load(&config.schemas_dir).map_err(|e| CliError::Usage(e.to_string()))?;
    match cli.command {
        Command::Schemas(SchemasCommand::Check) => schemas_check(&config.schemas_dir, &catalog),
        Command::Schemas(SchemasCommand::Push { url, agency }) => {
            schemas_push(&catalog, &url, agency).await
        }
        Command::Schemas(SchemasCommand::Diff {
            url,
            agency,
            against,
        }) => match url {
            Some(url) => {
                let client = registry_client(&url, agency)?;
                schemas::diff(
                    &config.schemas_dir,
                    &catalog,
                    schemas::Baseline::Registry(&client),
                )
                .await
            }
            None => {
                let rev = against.unwrap_or_else(|| "HEAD".into());
                schemas::diff(&config.schemas_dir, &catalog, schemas::Baseline::Git(rev)).await
            }
        },
        Command::Topics(TopicsCommand::Create { replication }) => {
            topics_create(&config, &catalog, replication).await
        }
        Command::Up => up(&config, catalog, shutdown).await,
        Command::Connect { .. }
        | Command::Replay { .. }
        | Command::Source { .. }
        | Command::Repair { .. } => Ok(()),
        Command::Demo(args) => demo(args, &config.schemas_dir, catalog, shutdown).await,
        Command::Tail(args) => tail::tail(&config, &catalog, args, shutdown).await,
        Command::Acl(AclCommand::Sync { dry_run, prune }) => {
            security::acl_sync(&config, &catalog, dry_run, prune).await
        }
        Command::Agency(AgencyCommand::Add { code, kind }) => {
            security::agency_add(&config, &catalog, &code, kind.into()).await
        }
        Command::Agency(AgencyCommand::Revoke { code }) => {
            security::agency_revoke(&config, &code).await
        }
        Command::Component(ComponentCommand::Add { name }) => {
            let principals = &config.principals;
            let user = match name {
                ComponentName::Gateway => &principals.gateway,
                ComponentName::Registry => &principals.registry,
                ComponentName::Kpi => &principals.kpi,
                ComponentName::Keys => &principals.keys,
            };
            security::component_add(&config, user).await
        }
        Command::Publish(args) => publish::publish(&config, catalog, args, shutdown).await,
        Command::Pii(command) => pii::run(&config, &catalog, command).await,
        Command::Cert(command) => cert::run(&config, command).await,
        Command::Audit(AuditCommand::Verify { topic }) => cert::audit_verify(&config, topic).await,
        Command::Verify(args) => cert::verify_topic(&config, &catalog, args, shutdown).await,
        Command::Trace(args) => trace::run(&config, &args).await,
    }
}

fn schemas_check(dir: &Path, catalog: &Catalog) -> Result<(), CliError> {
    say!(
        "catalog {}: {} topics, every schema valid",
        catalog.file().display(),
        catalog.topics().len()
    );
    match lienthong_contract::history::check_history_of(dir)
        .map_err(|e| CliError::Failed(e.to_string()))?
    {
        None => say!("not in a git checkout: compatibility with earlier versions not checked"),
        Some(report) => {
            let failures = report.failures();
            if !failures.is_empty() {
                for f in &failures {
                    say_err!("INCOMPATIBLE: {f}");
                }
                return Err(CliError::Failed(format!(
                    "{} incompatible schema change(s)",
                    failures.len()
                )));
            }
            let versions: usize = report.subjects.iter().map(|s| s.versions.len()).sum();
            say!(
                "compatible with {versions} earlier version(s) from {} commit(s)",
                report.commits
            );
        }
    }
    Ok(())
}

/// The environment variable that holds the registry credential for `schemas push` and `tail`.
pub const REGISTRY_TOKEN_ENV: &str = lienthong_registry::client::TOKEN_ENV;

/// A registry client with the credential from [`REGISTRY_TOKEN_ENV`]: HTTP Basic as
/// `agency` when given, else a bearer token, else none.
pub fn registry_client(
    url: &str,
    agency: Option<String>,
) -> Result<lienthong_registry::client::RegistryClient, CliError> {
    use lienthong_registry::client::{Credentials, RegistryClient};
    let token = std::env::var(REGISTRY_TOKEN_ENV).ok();
    let credentials = Credentials::from_config(agency.as_deref(), token.as_deref(), None)
        .map_err(|e| CliError::Usage(format!("--agency: {e} ({REGISTRY_TOKEN_ENV})")))?;
    RegistryClient::new(url, credentials, lienthong_contract::Codec::new())
        .map_err(|e| CliError::Usage(format!("--url {url}: {e}")))
}

async fn schemas_push(
    catalog: &Catalog,
    url: &str,
    agency: Option<String>,
) -> Result<(), CliError> {
    let client = registry_client(url, agency)?;
    for topic in catalog.topics() {
        client
            .set_compatibility(&topic.value_subject, topic.compatibility)
            .await
            .map_err(|e| CliError::Failed(format!("{}: {e}", topic.value_subject)))?;
        let id = client
            .id_for(&topic.value_subject, &topic.schema_json, true)
            .await
            .map_err(|e| CliError::Failed(format!("{}: {e}", topic.value_subject)))?;
        say!("{}\tid {id}\t{}", topic.value_subject, topic.compatibility);
    }
    Ok(())
}

async fn topics_create(
    config: &Config,
    catalog: &Catalog,
    replication: i32,
) -> Result<(), CliError> {
    use lienthong_bus::{BusError, TopicOutcome};
    let outcomes = lienthong_bus::create_catalog_topics(&config.kafka, catalog, replication)
        .await
        .map_err(|e| match e {
            BusError::Invalid(m) => CliError::Usage(format!("--replication: {m}")),
            BusError::Kafka { .. } => CliError::Failed(format!("{e} (is Kafka unreachable?)")),
            e => CliError::Failed(e.to_string()),
        })?;
    for outcome in outcomes {
        match outcome {
            TopicOutcome::Created(name) => say!("created {name}"),
            TopicOutcome::Exists(name) => say!("exists  {name}"),
        }
    }
    Ok(())
}

async fn demo(
    args: DemoArgs,
    schemas_dir: &Path,
    catalog: Catalog,
    shutdown: CancellationToken,
) -> Result<(), CliError> {
    if args.duration == 0 || args.rate == 0 {
        return Err(CliError::Usage(
            "--duration and --rate must be at least 1".into(),
        ));
    }
    let config = lienthong_demo::DemoConfig {
        data_dir: args.data_dir,
        kafka: args.kafka,
        duration: std::time::Duration::from_secs(args.duration),
        rate: args.rate,
        seed: args.seed,
        listen: args.listen,
        schemas_dir: schemas_dir.to_path_buf(),
        ..lienthong_demo::DemoConfig::default()
    };
    let summary = lienthong_demo::run(config, Arc::new(catalog), shutdown)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    say!("{}", summary.render().trim_end_matches('\n'));
    if summary.consistent() {
        Ok(())
    } else {
        Err(CliError::Failed(
            "the summary found a mismatch (see the lines marked MISMATCH)".into(),
        ))
    }
}

/// Start the gateway (schema ids from the registry's bootstrap; its agencies unless the
/// gateway has its own), with the registry mounted under `/registry`.
async fn gateway(
    config: &Config,
    mut gateway_config: lienthong_gateway::GatewayConfig,
    registry: &Arc<Registry>,
    ids: Vec<(String, u32)>,
    sealer: Option<Arc<dyn lienthong_privacy::CitizenKeyService>>,
    telemetry: &Arc<Telemetry>,
    components: &CancellationToken,
) -> Result<Running<lienthong_gateway::GatewayError>, CliError> {
    use lienthong_gateway::Gateway;
    if gateway_config.agencies.is_empty() {
        gateway_config.agencies = config.registry.agencies.clone();
    }
    let catalog = Arc::new(registry.catalog().clone());
    let ids = ids
        .into_iter()
        .filter_map(|(subject, id)| Some((catalog.topic_by_subject(&subject)?.name.clone(), id)))
        .collect();
    let listener = Listener::bind("gateway.listen", &gateway_config.listen).await?;
    let kafka = gateway_config
        .kafka
        .clone()
        .unwrap_or_else(|| config.kafka.clone());
    let check_documents = gateway_config.check_document_signatures;
    let gw = Gateway::start(
        gateway_config,
        kafka,
        catalog,
        &ids,
        Some(registry.readiness()),
        Arc::clone(telemetry),
        components.clone(),
    )
    .map_err(|e| CliError::Failed(e.to_string()))?;
    if let Some(keys) = sealer {
        gw.seal_citizen_records(keys)
            .map_err(|e| CliError::Failed(e.to_string()))?;
    }
    if check_documents {
        // The certificate log of [signing], followed for as long as the components run.
        let certificates = cert::open(config, components).await.map_err(|e| match e {
            CliError::Usage(m) => {
                CliError::Usage(format!("[gateway] check_document_signatures: {m}"))
            }
            other => other,
        })?;
        gw.check_document_signatures(Arc::new(certificates))
            .map_err(|e| CliError::Usage(format!("[gateway] check_document_signatures: {e}")))?;
        say!("gateway: document signatures in case events are checked against the certificate log");
    }
    say!(
        "gateway listening on http://{} (schema registry under /registry)",
        listener.addr()
    );
    let api =
        lienthong_registry::metrics::count_operations(api::router(Arc::clone(registry)), telemetry);
    Ok(gw.serve(listener, Some(api), components))
}

/// Wait for a component to end. Whichever ends first (an error, or the shutdown) stops the
/// others: a supervisor then restarts the process rather than leave a store silently behind.
fn supervise<E: std::fmt::Display + Send + 'static>(
    running: Running<E>,
    components: &CancellationToken,
) -> futures::future::BoxFuture<'static, Result<(), CliError>> {
    let components = components.clone();
    Box::pin(async move {
        let name = running.name().to_string();
        let ended = running.wait().await;
        components.cancel();
        ended.map_err(|e| CliError::Failed(format!("{name}: {e}")))
    })
}

async fn up(
    config: &Config,
    catalog: Catalog,
    shutdown: CancellationToken,
) -> Result<(), CliError> {
    // One metrics registry for the whole process: every component's families, on every
    // component's /metrics.
    let telemetry = Telemetry::new("up")?;
    // Connector configs are checked now and the connectors started last, once every other
    // component has its config checked and its port bound.
    let mut connector_configs = connect::load_all(&config.connectors)?;
    let source_configs = source::load_all(&config.sources)?;
    // The components' own token: the end of any one of them, or of this function (a start
    // that failed half way), stops them all.
    let components = shutdown.child_token();
    let _stop_all = components.clone().drop_guard();
    let mut running = Vec::new();
    if let Some(kpi) = kpi::start(config, &telemetry, &components).await? {
        running.push(supervise(kpi, &components));
    }
    // Citizens' personal data: the key service first, for the gateway that seals with it and
    // the connectors that open with it (under their agency's grants).
    let key_service = match &config.privacy {
        None => None,
        Some(privacy) => {
            let master = pii::master_key(privacy)?;
            let service = lienthong_privacy::KeyService::open(
                &pii::service_config(config, privacy),
                &master,
                lienthong_telemetry::KafkaClientContext::new(&telemetry, "keys"),
                components.child_token(),
            )
            .await
            .map_err(|e| CliError::Failed(format!("key service: {e}")))?;
            say!(
                "key service: {} citizens with a data key, {} grants; citizen records are sealed",
                service.vault().citizens(),
                service.grants().len()
            );
            Some(Arc::new(service))
        }
    };
    for connector in &mut connector_configs {
        if let (Some(service), Some(who)) = (&key_service, &connector.privacy) {
            connector.keys =
                lienthong_privacy::KeySource(Some(Arc::new(lienthong_privacy::GrantedKeys::new(
                    Arc::clone(service),
                    who.agency.clone(),
                    who.purpose.clone(),
                ))));
        }
    }
    let agencies = Agencies::new(&config.registry.agencies).map_err(CliError::Usage)?;
    if let (Some(service), Some(listen)) = (
        &key_service,
        config.privacy.as_ref().and_then(|p| p.listen.as_ref()),
    ) {
        let listener = Listener::bind("privacy.listen", listen).await?;
        say!("key service listening on http://{}", listener.addr());
        let citizen_topic = catalog
            .topic(<lienthong_contract::events::CitizenRecord as lienthong_sdk::Event>::TOPIC)
            .map_err(|e| CliError::Usage(format!("the key service: {e}")))?
            .clone();
        let api =
            lienthong_privacy::http::router(Arc::clone(service), agencies.clone(), citizen_topic);
        running.push(supervise(
            Component::new("keys", &telemetry, &components)
                .serve_with(listener, move |common| api.merge(common))
                .start(|stopping| async move {
                    stopping.token().cancelled().await;
                    Ok::<(), CliError>(())
                }),
            &components,
        ));
    }
    let log = KafkaLogConfig {
        kafka: config
            .registry
            .kafka
            .clone()
            .unwrap_or_else(|| config.kafka.clone()),
        topic: config.registry.topic.clone(),
        replication: config.registry.replication,
    };
    let registry = Registry::with_kafka(
        &log,
        Arc::new(catalog),
        agencies,
        lienthong_telemetry::KafkaClientContext::new(&telemetry, "registry"),
        components.child_token(),
    )
    .await
    .map_err(|e| CliError::Failed(e.to_string()))?;
    // With [audit], every schema change is on the audit trail, as the registry's own writer.
    let registry = match &config.audit {
        Some(audit) => registry.with_audit(Arc::new(
            cert::open_trail(config, audit, Some("registry"), components.child_token()).await?,
        )),
        None => registry,
    };
    let registry = Arc::new(registry);
    let ids = registry
        .bootstrap()
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    tracing::info!(subjects = ids.len(), "catalog schemas registered");
    if let Some(service) = &key_service {
        // Need-to-know follows the case events, written with the registry's ids.
        let codec = lienthong_contract::Codec::new();
        for (subject, id) in &ids {
            if let Some(topic) = registry.catalog().topic_by_subject(subject) {
                codec
                    .insert(*id, &topic.schema_json)
                    .map_err(|e| CliError::Failed(format!("{subject}: {e}")))?;
            }
        }
        let privacy = config.privacy.as_ref().and_then(|p| p.kafka.clone());
        // Case events under a schema registered later: their schema from the registry.
        let registered = Arc::clone(&registry);
        let lookup: lienthong_privacy::SchemaLookup = Arc::new(move |id| {
            let registry = Arc::clone(&registered);
            Box::pin(async move { registry.schema_by_id(id).await.ok().map(|(json, _)| json) })
        });
        service
            .follow_cases(
                &privacy.unwrap_or_else(|| config.kafka.clone()),
                codec,
                Some(lookup),
                components.child_token(),
            )
            .map_err(|e| CliError::Failed(format!("key service: {e}")))?;
    }
    let listener = Listener::bind("registry.listen", &config.registry.listen).await?;
    say!("schema registry listening on http://{}", listener.addr());
    running.push(supervise(
        registry.serve(listener, &telemetry, &components),
        &components,
    ));
    if let Some(gateway_config) = config.gateway.clone() {
        let sealer = key_service
            .clone()
            .map(|s| s as Arc<dyn lienthong_privacy::CitizenKeyService>);
        let gateway = gateway(
            config,
            gateway_config,
            &registry,
            ids,
            sealer,
            &telemetry,
            &components,
        )
        .await?;
        running.push(supervise(gateway, &components));
    }
    for connector in connect::start_all(connector_configs, &telemetry, &components).await? {
        running.push(supervise(connector, &components));
    }
    for source in source::start_all(source_configs, &telemetry, &components).await? {
        running.push(supervise(source, &components));
    }
    let ended = futures::future::join_all(running).await;
    let failures: Vec<String> = ended
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    if let Some(first) = failures.first() {
        for failure in &failures {
            tracing::error!("{failure}");
        }
        return Err(CliError::Failed(first.clone()));
    }
    say!("stopped");
    Ok(())
}
