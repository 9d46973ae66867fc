//! The one-command demo: a day of the city on embedded defaults.
//!
//! [`run`] starts everything the bus needs in one process — an embedded in-memory Kafka (or a
//! real cluster with `kafka`), the schema registry and `/metrics` on one HTTP address — and
//! then plays a day of the city from [`city::Simulator`]: the reference data, the backlog of
//! cases still open from earlier days, and today's steps at a steady rate, each published by
//! the unit that did it through the producer SDK. It prints live progress and ends with a
//! summary that checks the log holds exactly what was published.

pub mod city;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use lienthong_bus::EmbeddedKafka;
use lienthong_contract::{AgencyKind, Catalog};
use lienthong_registry::auth::{Agencies, AgencyCredential, hash_token};
use lienthong_registry::client::{Credentials, RegistryClient};
use lienthong_registry::{Registry, api};
use lienthong_sdk::{Publisher, PublisherConfig, Receipt, SchemaIds, SdkError};
use lienthong_telemetry::Telemetry;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

use crate::city::{CityEvent, DEPARTMENTS, Simulator, WARDS};

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Kafka (embedded or real) is not usable.
    #[error("Kafka: {0}")]
    Kafka(String),
    /// The registry or the HTTP server could not start.
    #[error("{0}")]
    Startup(String),
    /// Publishing failed.
    #[error("publishing: {0}")]
    Publish(#[from] SdkError),
    /// The data directory could not be prepared.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl DemoError {
    /// Worth running again: Kafka unreachable, not a bad option.
    pub fn is_transient(&self) -> bool {
        match self {
            DemoError::Kafka(_) => true,
            DemoError::Publish(e) => e.is_transient(),
            DemoError::Startup(_) | DemoError::DataDir { .. } => false,
        }
    }
}

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Where the stores' files go; emptied first.
    pub data_dir: PathBuf,
    /// A real Kafka cluster's bootstrap servers; `None` runs an embedded in-memory broker.
    pub kafka: Option<String>,
    /// How long today runs.
    pub duration: Duration,
    /// Today's steps per second.
    pub rate: u32,
    /// The simulation's seed (the same seed plays the same day).
    pub seed: u64,
    /// Address of the HTTP server (registry and `/metrics`).
    pub listen: String,
    /// Working days of backlog before today.
    pub backlog_days: i32,
    /// Cases filed per backlog day.
    pub backlog_cases_per_day: usize,
    /// The schemas folder (for the KPI engine's decoder).
    pub schemas_dir: PathBuf,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            data_dir: PathBuf::from("lienthong-demo"),
            kafka: None,
            duration: Duration::from_secs(60),
            rate: 500,
            seed: 2026,
            listen: "127.0.0.1:8080".into(),
            backlog_days: 10,
            backlog_cases_per_day: 60,
            schemas_dir: PathBuf::from("schemas"),
        }
    }
}

/// What the demo proved.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Events acknowledged by Kafka, per topic.
    pub published: BTreeMap<String, u64>,
    /// Records on the log after the run, per topic (high watermark minus low watermark).
    pub on_log: BTreeMap<String, u64>,
    /// Cases still open at the end of the day, as the simulation knows them.
    pub open_cases: usize,
    /// Open cases as the KPI engine counted them from the log.
    pub kpi_open: i64,
    /// Of those, past their due date (working days).
    pub kpi_overdue: i64,
}

impl Summary {
    /// The log holds exactly what was published, topic by topic, and the KPI engine counts
    /// as many open cases as the simulation left open.
    pub fn consistent(&self) -> bool {
        self.published == self.on_log && self.kpi_open == self.open_cases as i64
    }

    /// The summary as printed at the end; `lienthong demo`'s test parses these lines.
    pub fn render(&self) -> String {
        let mut out = String::from("== summary ==\n");
        for (topic, published) in &self.published {
            let on_log = self.on_log.get(topic).copied().unwrap_or(0);
            let verdict = if on_log == *published {
                "MATCH"
            } else {
                "MISMATCH"
            };
            out.push_str(&format!(
                "log {topic}: published {published} on_log {on_log} {verdict}\n"
            ));
        }
        out.push_str(&format!(
            "kpi open cases: simulation {} kpi {} {} (overdue {})\n",
            self.open_cases,
            self.kpi_open,
            if self.kpi_open == self.open_cases as i64 {
                "MATCH"
            } else {
                "MISMATCH"
            },
            self.kpi_overdue
        ));
        out.push_str(&format!(
            "result: {}\n",
            if self.consistent() {
                "CONSISTENT"
            } else {
                "INCONSISTENT"
            }
        ));
        out
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

type InFlight<'a> = Pin<Box<dyn Future<Output = Result<Receipt, SdkError>> + Send + 'a>>;

/// Run the demo until `config.duration` passes or `shutdown` is cancelled; print progress
/// to stdout; return the summary.
pub async fn run(
    config: DemoConfig,
    catalog: Arc<Catalog>,
    shutdown: CancellationToken,
) -> Result<Summary, DemoError> {
    prepare_data_dir(&config.data_dir)?;
    // Kafka: embedded unless a cluster is named.
    let embedded;
    let bootstrap = match &config.kafka {
        Some(b) => {
            lienthong_bus::create_catalog_topics(&kafka_client(b), &catalog, 1)
                .await
                .map_err(|e| DemoError::Kafka(e.to_string()))?;
            println!("Kafka: the cluster at {b}");
            b.clone()
        }
        None => {
            embedded = EmbeddedKafka::for_catalog(&catalog, &[])
                .map_err(|e| DemoError::Kafka(e.to_string()))?;
            println!(
                "Kafka: an embedded in-memory broker (librdkafka's mock cluster, 3 brokers) at {} — nothing is kept after the demo",
                embedded.bootstrap()
            );
            embedded.bootstrap().to_string()
        }
    };

    // The registry and /metrics on one HTTP server. The demo's own credential is an admin's.
    let token = format!(
        "demo-{}",
        lienthong_contract::samples::uuid_like(config.seed)
    );
    let agencies = Agencies::new(&[AgencyCredential {
        code: "SKHCN".into(),
        kind: AgencyKind::Department,
        token_sha256: hash_token(&token),
        admin: true,
    }])
    .map_err(DemoError::Startup)?;
    let registry = Arc::new(Registry::in_memory(Arc::clone(&catalog), agencies));
    let ids = registry
        .bootstrap()
        .await
        .map_err(|e| DemoError::Startup(format!("registry: {e}")))?;
    // A fresh registry gives the catalog's subjects the ids 1, 2, … in catalog order, so the
    // in-process consumers can decode with the catalog's local ids. Check rather than assume.
    for (subject, id) in &ids {
        let local = catalog
            .topic_by_subject(subject)
            .and_then(|t| catalog.local_id(&t.name).ok());
        if local != Some(*id) {
            return Err(DemoError::Startup(format!(
                "registry gave {subject} id {id}, not its catalog id {local:?}"
            )));
        }
    }
    let telemetry = Telemetry::new("demo").map_err(|e| DemoError::Startup(e.to_string()))?;
    let components = CancellationToken::new();
    let kpi = start_kpi(&config, &bootstrap, &telemetry, components.clone()).await?;
    let app = api::router(Arc::clone(&registry))
        .merge(lienthong_telemetry::router(Arc::clone(&telemetry)));
    let addr: SocketAddr = config
        .listen
        .parse()
        .map_err(|e| DemoError::Startup(format!("listen address {:?}: {e}", config.listen)))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| DemoError::Startup(format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| DemoError::Startup(e.to_string()))?;
    let server_stop = CancellationToken::new();
    let server = {
        let stop = server_stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    };
    println!("schema registry: http://{local}/subjects");
    println!("KPI engine:      service-chain indicators under lienthong_kpi_* in /metrics");
    println!("metrics:         http://{local}/metrics");

    // A real cluster may hold earlier runs: count only what this run adds.
    let before = log_counts(&bootstrap, &catalog)?;
    let result = play(
        &config,
        &catalog,
        &bootstrap,
        &format!("http://{local}"),
        &token,
        &telemetry,
        &shutdown,
    )
    .await;
    // Let the KPI engine see the last events before the summary reads its gauges.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let open = gauge_sum(&telemetry, "lienthong_kpi_unit_cases_open");
    let overdue = gauge_sum(&telemetry, "lienthong_kpi_unit_cases_open_overdue");
    components.cancel();
    if let Err(e) = kpi.await {
        tracing::warn!(error = %e, "the KPI engine task failed");
    }
    server_stop.cancel();
    let _ = server.await;
    let mut summary = result?;
    summary.kpi_open = open;
    summary.kpi_overdue = overdue;
    summary.on_log = log_counts(&bootstrap, &catalog)?
        .into_iter()
        .map(|(topic, n)| {
            let earlier = before.get(&topic).copied().unwrap_or(0);
            (topic, n.saturating_sub(earlier))
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    Ok(summary)
}

/// The KPI engine, in this process, on this process's metrics; its own `/metrics` listener is
/// an unused ephemeral port (the demo's server shows the same registry).
async fn start_kpi(
    config: &DemoConfig,
    bootstrap: &str,
    telemetry: &Arc<Telemetry>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<Result<(), lienthong_kpi::KpiError>>, DemoError> {
    use lienthong_kpi::reference::{Level, ProcedureRef};
    let kpi = lienthong_kpi::KpiConfig {
        bootstrap: bootstrap.to_string(),
        schemas_dir: config.schemas_dir.clone(),
        units: WARDS
            .iter()
            .chain(DEPARTMENTS)
            .map(|u| u.code.to_string())
            .collect(),
        procedures: city::PROCEDURES
            .iter()
            .map(|p| ProcedureRef {
                code: p.code.to_string(),
                level: match p.level {
                    lienthong_contract::events::ServiceLevel::FullOnline => Level::FullOnline,
                    lienthong_contract::events::ServiceLevel::PartialOnline => Level::PartialOnline,
                    _ => Level::Offline,
                },
            })
            .collect(),
        top_procedures: city::PROCEDURES
            .iter()
            .map(|p| p.code.to_string())
            .collect(),
        ..lienthong_kpi::KpiConfig::default()
    };
    kpi.validate()
        .map_err(|e| DemoError::Startup(format!("KPI engine: {e}")))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| DemoError::Startup(format!("KPI engine: {e}")))?;
    Ok(tokio::spawn(lienthong_kpi::run_with_listener(
        kpi,
        listener,
        Arc::clone(telemetry),
        shutdown,
    )))
}

/// The sum of a gauge family over all its label values (0 when it has none yet).
fn gauge_sum(telemetry: &Telemetry, name: &str) -> i64 {
    telemetry
        .registry()
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .map(|m| m.get_gauge().get_value() as i64)
        .sum()
}

fn prepare_data_dir(dir: &PathBuf) -> Result<(), DemoError> {
    let err = |source| DemoError::DataDir {
        path: dir.clone(),
        source,
    };
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(err)?;
    }
    std::fs::create_dir_all(dir).map_err(err)
}

fn kafka_client(bootstrap: &str) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// Publish the day; returns what Kafka acknowledged.
async fn play(
    config: &DemoConfig,
    catalog: &Arc<Catalog>,
    bootstrap: &str,
    registry_url: &str,
    token: &str,
    telemetry: &Telemetry,
    shutdown: &CancellationToken,
) -> Result<Summary, DemoError> {
    let client = RegistryClient::new(
        registry_url,
        Credentials::Bearer(token.to_string()),
        lienthong_contract::Codec::new(),
    )
    .map_err(|e| DemoError::Startup(e.to_string()))?;
    let mut publishers: HashMap<&'static str, Publisher> = HashMap::new();
    for unit in WARDS.iter().chain(DEPARTMENTS) {
        let publisher = Publisher::connect(
            PublisherConfig::new(unit.code, unit.kind, bootstrap),
            Arc::clone(catalog),
            SchemaIds::Registry(&client),
        )
        .await?;
        publishers.insert(unit.code, publisher);
    }
    let mut summary = Summary::default();
    let mut sim = Simulator::new(config.seed);
    let start_ms = now_ms();
    let mut opening = sim.reference_data(start_ms);
    opening.extend(sim.backlog(start_ms, config.backlog_days, config.backlog_cases_per_day));
    println!(
        "opening the day: {} events of reference data and backlog",
        opening.len()
    );
    let mut in_flight: FuturesUnordered<InFlight<'_>> = FuturesUnordered::new();
    for event in opening {
        in_flight.push(publish(&publishers, event)?);
    }
    drain(&mut in_flight, &mut summary, 0).await?;

    println!(
        "today: {} steps/s for {} s (Ctrl-C ends the day early)",
        config.rate,
        config.duration.as_secs()
    );
    let started = Instant::now();
    let tick = Duration::from_millis(20);
    let per_tick = (config.rate as f64 * tick.as_secs_f64()).max(1.0);
    let mut owed = 0.0;
    let mut ticker = tokio::time::interval(tick);
    let mut last_report = Instant::now();
    let mut last_count = summary.published.values().sum::<u64>();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if started.elapsed() >= config.duration {
            break;
        }
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            in_flight.push(publish(&publishers, sim.step(now_ms()))?);
        }
        // Keep at most a few thousand in flight; collect what is done.
        drain(&mut in_flight, &mut summary, 5_000).await?;
        if last_report.elapsed() >= Duration::from_secs(1) {
            let total: u64 = summary.published.values().sum();
            let rate = (total - last_count) as f64 / last_report.elapsed().as_secs_f64();
            println!(
                "[{:>4.0} s] events {total:>8}  {rate:>7.0}/s  open cases {:>6}  overdue {:>5}",
                started.elapsed().as_secs_f64(),
                gauge_sum(telemetry, "lienthong_kpi_unit_cases_open"),
                gauge_sum(telemetry, "lienthong_kpi_unit_cases_open_overdue"),
            );
            last_report = Instant::now();
            last_count = total;
        }
    }
    drain(&mut in_flight, &mut summary, 0).await?;
    for publisher in publishers.values() {
        publisher.flush(Duration::from_secs(10))?;
    }
    summary.open_cases = sim.open_cases();
    Ok(summary)
}

fn publish<'a>(
    publishers: &'a HashMap<&'static str, Publisher>,
    event: CityEvent,
) -> Result<InFlight<'a>, DemoError> {
    let producer = event.envelope().producer_unit.clone();
    let publisher = publishers.get(producer.as_str()).ok_or_else(|| {
        DemoError::Startup(format!(
            "the simulation names unit {producer}, which has no publisher"
        ))
    })?;
    Ok(match event {
        CityEvent::Case(e) => Box::pin(publisher.publish(e)),
        CityEvent::Feedback(e) => Box::pin(publisher.publish(e)),
        CityEvent::Unit(e) => Box::pin(publisher.publish(e)),
        CityEvent::Procedure(e) => Box::pin(publisher.publish(e)),
    })
}

/// Collect finished publishes until at most `keep` are in flight.
async fn drain(
    in_flight: &mut FuturesUnordered<InFlight<'_>>,
    summary: &mut Summary,
    keep: usize,
) -> Result<(), DemoError> {
    loop {
        let next = if in_flight.len() > keep {
            in_flight.next().await
        } else {
            // Count what is already acknowledged, without waiting.
            match in_flight.next().now_or_never() {
                Some(next) => next,
                None => return Ok(()),
            }
        };
        let Some(receipt) = next else {
            return Ok(());
        };
        let receipt = receipt?;
        *summary
            .published
            .entry(receipt.topic.to_string())
            .or_insert(0) += 1;
    }
}

/// Records on the log per catalog topic.
fn log_counts(bootstrap: &str, catalog: &Catalog) -> Result<BTreeMap<String, u64>, DemoError> {
    let consumer: BaseConsumer = kafka_client(bootstrap)
        .set("group.id", "lienthong-demo-summary")
        .create()
        .map_err(|e| DemoError::Kafka(e.to_string()))?;
    let mut counts = BTreeMap::new();
    for topic in catalog.topics() {
        let mut n = 0u64;
        for p in 0..topic.partitions {
            let (low, high) = consumer
                .fetch_watermarks(&topic.name, p, Duration::from_secs(10))
                .map_err(|e| DemoError::Kafka(format!("{}[{p}]: {e}", topic.name)))?;
            n += (high - low).max(0) as u64;
        }
        if n > 0 {
            counts.insert(topic.name.clone(), n);
        }
    }
    Ok(counts)
}
