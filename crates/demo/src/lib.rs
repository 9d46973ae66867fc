//! The one-command demo: a day of the city on embedded defaults.
//!
//! [`run`] starts everything the bus needs in one process — an embedded in-memory Kafka (or a
//! real cluster with `kafka`), the schema registry and `/metrics` on one HTTP address — and
//! then plays a day of the city from [`city::Simulator`]: the reference data, the backlog of
//! cases still open from earlier days, and today's steps at a steady rate, each published by
//! the unit that did it through the producer SDK. It prints live progress and ends with a
//! summary that checks the log holds exactly what was published.

// Output goes through `say!` and `say_err!`, which never panic on a closed stream.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use lienthong_telemetry::say;

pub mod city;
pub mod portal;
pub mod stores;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use lienthong_bus::EmbeddedKafka;
use lienthong_bus::KafkaConfig;
use lienthong_contract::{AgencyKind, Catalog};
use lienthong_gateway::{Gateway, GatewayConfig};
use lienthong_registry::auth::{Agencies, AgencyCredential, hash_token};
use lienthong_registry::client::{Credentials, RegistryClient};
use lienthong_registry::{Registry, api};
use lienthong_sdk::{Publisher, PublisherConfig, Receipt, SchemaIds, SdkError};
use lienthong_telemetry::Telemetry;
use lienthong_telemetry::component::{Listener, Running};
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
    /// The gateway refused or failed a request of the demo's HTTP publisher.
    #[error("gateway: {0}")]
    Gateway(String),
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
            DemoError::Startup(_) | DemoError::Gateway(_) | DemoError::DataDir { .. } => false,
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
    /// Events acknowledged by Kafka, per topic (through the SDK and through the gateway).
    pub published: BTreeMap<String, u64>,
    /// Of those, events that came in over HTTP through the gateway.
    pub via_gateway: u64,
    /// Records on the log after the run, per topic (read back, committed records only).
    pub on_log: BTreeMap<String, u64>,
    /// Cases still open at the end of the day, as the simulation knows them.
    pub open_cases: usize,
    /// Open cases as the KPI engine counted them from the log.
    pub kpi_open: i64,
    /// Of those, past their due date (working days).
    pub kpi_overdue: i64,
    /// Each agency store compared with the log.
    pub stores: Vec<stores::StoreCheck>,
}

fn verdict(ok: bool) -> &'static str {
    if ok { "MATCH" } else { "MISMATCH" }
}

impl Summary {
    /// The log holds exactly what was published, topic by topic; the KPI engine counts as
    /// many open cases as the simulation left open; and every store holds what the log says.
    pub fn consistent(&self) -> bool {
        self.published == self.on_log
            && self.kpi_open == self.open_cases as i64
            && !self.stores.is_empty()
            && self.stores.iter().all(stores::StoreCheck::matches)
            && self.stores.iter().all(stores::StoreCheck::drift_repaired)
    }

    /// The summary as printed at the end; `lienthong demo`'s test parses these lines.
    pub fn render(&self) -> String {
        let mut out = String::from("== summary ==\n");
        for (topic, published) in &self.published {
            let on_log = self.on_log.get(topic).copied().unwrap_or(0);
            out.push_str(&format!(
                "log {topic}: published {published} on_log {on_log} {}\n",
                verdict(on_log == *published)
            ));
        }
        out.push_str(&format!(
            "gateway: {} of those events came in over HTTP\n",
            self.via_gateway
        ));
        out.push_str(&format!(
            "kpi open cases: simulation {} kpi {} {} (overdue {})\n",
            self.open_cases,
            self.kpi_open,
            verdict(self.kpi_open == self.open_cases as i64),
            self.kpi_overdue
        ));
        for s in &self.stores {
            // store <code>: rows <n> log_rows <m> digest <hex> log_digest <hex> MATCH (<path>)
            out.push_str(&format!(
                "store {}: rows {} log_rows {} digest {} log_digest {} {}{} ({})\n",
                s.code,
                s.rows,
                s.log_rows,
                short(&s.digest),
                short(&s.log_digest),
                verdict(s.matches()),
                if s.behind.is_empty() {
                    String::new()
                } else {
                    format!(" (did not catch up: {})", s.behind.join(", "))
                },
                s.path
            ));
        }
        for s in &self.stores {
            // drift <code>: edited <n> shown <g> page <p> repaired <r> MATCH
            out.push_str(&format!(
                "drift {}: edited {} shown {} page {} repaired {} {}\n",
                s.code,
                s.edited,
                s.gauge,
                s.page.map_or_else(|| "none".to_string(), |p| p.to_string()),
                s.repaired,
                verdict(s.drift_repaired())
            ));
        }
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

/// The first 16 hex digits of a digest: enough to see two differ.
fn short(digest: &str) -> &str {
    digest.get(..16).unwrap_or(digest)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

type InFlight<'a> = Pin<Box<dyn Future<Output = Result<Receipt, SdkError>> + Send + 'a>>;

/// The units whose agency stores the demo keeps: one department and a handful of wards.
pub const STORE_UNITS: &[&str] = &["STP", "26734", "26740", "27259"];

/// Run the demo until `config.duration` passes or `shutdown` is cancelled; print progress
/// to stdout; return the summary.
pub async fn run(
    config: DemoConfig,
    catalog: Arc<Catalog>,
    shutdown: CancellationToken,
) -> Result<Summary, DemoError> {
    prepare_data_dir(&config.data_dir)?;
    let run_id = now_ms();
    // Kafka: embedded unless a cluster is named.
    let embedded;
    let bootstrap = match &config.kafka {
        Some(b) => {
            lienthong_bus::create_catalog_topics(&KafkaConfig::new(b), &catalog, 1)
                .await
                .map_err(|e| DemoError::Kafka(e.to_string()))?;
            say!("Kafka: the cluster at {b}");
            b.clone()
        }
        None => {
            embedded =
                EmbeddedKafka::for_catalog(&catalog, &[(stores::DEAD_LETTER_TOPIC.to_string(), 1)])
                    .map_err(|e| DemoError::Kafka(e.to_string()))?;
            say!(
                "Kafka: an embedded in-memory broker (librdkafka's mock cluster, 3 brokers) at {} — nothing is kept after the demo",
                embedded.bootstrap()
            );
            embedded.bootstrap().to_string()
        }
    };
    say!(
        "security: none. The demo's Kafka takes anyone, unauthenticated and unencrypted; a city's \
         cluster is secured (TLS, SCRAM or mTLS per agency, ACLs from the catalog): docs/security.md"
    );
    // A real cluster may hold earlier runs: count only what this run adds.
    let before = high_watermarks(&bootstrap, &catalog).await?;

    // Every unit gets a gateway token; the demo's own credential is a registry admin's.
    let secret = lienthong_contract::samples::uuid_like(config.seed);
    let token = format!("demo-{secret}");
    let unit_tokens: HashMap<&'static str, String> = WARDS
        .iter()
        .chain(DEPARTMENTS)
        .map(|u| (u.code, format!("demo-{}-{secret}", u.code)))
        .collect();
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
    let mut topic_ids = HashMap::new();
    for (subject, id) in &ids {
        let topic = catalog.topic_by_subject(subject);
        let local = topic.and_then(|t| catalog.local_id(&t.name).ok());
        if local != Some(*id) {
            return Err(DemoError::Startup(format!(
                "registry gave {subject} id {id}, not its catalog id {local:?}"
            )));
        }
        if let Some(t) = topic {
            topic_ids.insert(t.name.clone(), *id);
        }
    }
    let telemetry = Telemetry::new("demo").map_err(|e| DemoError::Startup(e.to_string()))?;
    let components = CancellationToken::new();
    let (kpi, kpi_addr) = start_kpi(&config, &bootstrap, &telemetry, components.clone()).await?;
    let gateway = Gateway::start(
        GatewayConfig {
            agencies: WARDS
                .iter()
                .chain(DEPARTMENTS)
                .map(|u| AgencyCredential {
                    code: u.code.to_string(),
                    kind: u.kind,
                    token_sha256: hash_token(&unit_tokens[u.code]),
                    admin: false,
                })
                .collect(),
            transactional_id: format!("lienthong-demo-gateway-{run_id}"),
            producers: 2,
            ..GatewayConfig::default()
        },
        KafkaConfig::new(bootstrap.clone()),
        Arc::clone(&catalog),
        &topic_ids,
        None,
        Arc::clone(&telemetry),
        components.clone(),
    )
    .map_err(|e| DemoError::Startup(format!("gateway: {e}")))?;
    // One HTTP server: the gateway, the registry under /registry, and /metrics.
    let listener = Listener::bind("listen", &config.listen)
        .await
        .map_err(|e| DemoError::Startup(e.to_string()))?;
    let local = listener.addr();
    let server = gateway.serve(
        listener,
        Some(lienthong_registry::metrics::count_operations(
            api::router(Arc::clone(&registry)),
            &telemetry,
        )),
        &components,
    );
    let mut agency_stores = Vec::new();
    for code in STORE_UNITS {
        let unit = WARDS
            .iter()
            .chain(DEPARTMENTS)
            .find(|u| u.code == *code)
            .ok_or_else(|| DemoError::Startup(format!("store unit {code} is not in the city")))?;
        agency_stores.push(
            stores::start(
                unit,
                &config.data_dir,
                &bootstrap,
                &catalog,
                &config.schemas_dir,
                &telemetry,
                run_id,
            )
            .await?,
        );
    }
    say!("gateway:         http://{local}/openapi.json (POST /topics/{{topic}}/events)");
    say!("schema registry: http://{local}/registry/subjects");
    say!("KPI engine:      service-chain indicators under lienthong_kpi_* in /metrics");
    say!("status page:     http://{kpi_addr}/status (stores, service chain, find a case)");
    say!("metrics:         http://{local}/metrics");
    say!(
        "stores:          SQLite files under {}: {}",
        config.data_dir.display(),
        STORE_UNITS.join(", ")
    );

    let result = play(
        &config,
        &catalog,
        &bootstrap,
        &Endpoints {
            base: format!("http://{local}"),
            admin_token: token,
            unit_tokens,
        },
        &telemetry,
        &agency_stores,
        &shutdown,
    )
    .await;
    let mut summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            for store in agency_stores {
                store.abandon().await;
            }
            components.cancel();
            let _ = kpi.wait().await;
            let _ = server.wait().await;
            return Err(e);
        }
    };
    // Let the KPI engine read the last events before the summary reads its gauges. On the
    // fresh embedded log it has read them all once it counted as many records as were
    // published; it must also have stopped counting for half a second (a real cluster may
    // hold earlier days too, which it reads first).
    let published: u64 = summary
        .published
        .iter()
        .filter(|(topic, _)| *topic == "hcm.case.events" || *topic == "hcm.feedback.events")
        .map(|(_, n)| *n)
        .sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut read, mut since) = (u64::MAX, Instant::now());
    loop {
        let now_read = metric_sum(&telemetry, "lienthong_kpi_events_total") as u64;
        if now_read != read {
            (read, since) = (now_read, Instant::now());
        }
        let settled = read >= published && since.elapsed() >= Duration::from_millis(500);
        if settled || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    summary.kpi_open = metric_sum(&telemetry, "lienthong_kpi_unit_cases_open") as i64;
    summary.kpi_overdue = metric_sum(&telemetry, "lienthong_kpi_unit_cases_open_overdue") as i64;
    let after = scan_log(&bootstrap, &catalog, &before).await?;
    summary.on_log = after.counts;
    say!("checking each store against the log …");
    let ends = stores::consumed(&after.ends);
    let status_page = format!("http://{kpi_addr}/status");
    let checks = agency_stores.into_iter().map(|store| {
        store.check(
            &ends,
            &catalog,
            &telemetry,
            &status_page,
            Duration::from_secs(60),
        )
    });
    for check in futures::future::join_all(checks).await {
        summary.stores.push(check?);
    }
    components.cancel();
    if let Err(e) = kpi.wait().await {
        tracing::warn!(error = %e, "the KPI engine failed");
    }
    if let Err(e) = server.wait().await {
        tracing::warn!(error = %e, "the gateway failed");
    }
    Ok(summary)
}

/// Where the demo's HTTP publisher and registry client reach the server.
struct Endpoints {
    base: String,
    admin_token: String,
    unit_tokens: HashMap<&'static str, String>,
}

/// The KPI engine, in this process, on this process's metrics; its own listener, on an
/// ephemeral port, serves the status page (and the same `/metrics` as the demo's server).
async fn start_kpi(
    config: &DemoConfig,
    bootstrap: &str,
    telemetry: &Arc<Telemetry>,
    shutdown: CancellationToken,
) -> Result<(Running<lienthong_kpi::KpiError>, std::net::SocketAddr), DemoError> {
    use lienthong_kpi::reference::{Level, ProcedureRef};
    let kpi = lienthong_kpi::KpiConfig {
        kafka: Some(KafkaConfig::new(bootstrap)),
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
    let listener = Listener::bind("KPI engine", "127.0.0.1:0")
        .await
        .map_err(|e| DemoError::Startup(e.to_string()))?;
    let addr = listener.addr();
    lienthong_kpi::start(kpi, listener, telemetry, &shutdown)
        .map(|running| (running, addr))
        .map_err(|e| DemoError::Startup(format!("KPI engine: {e}")))
}

/// The sum of a counter or gauge family over all its label values (0 when it has none yet).
/// A sample is one or the other; the kind it is not reads as 0.
fn metric_sum(telemetry: &Telemetry, name: &str) -> f64 {
    telemetry
        .registry()
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .map(|m| m.get_counter().get_value() + m.get_gauge().get_value())
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

/// Publish the day; returns what Kafka acknowledged. Feedback comes in over HTTP through the
/// gateway (the public service portal's path); everything else through the SDK.
async fn play(
    config: &DemoConfig,
    catalog: &Arc<Catalog>,
    bootstrap: &str,
    endpoints: &Endpoints,
    telemetry: &Telemetry,
    agency_stores: &[stores::AgencyStore],
    shutdown: &CancellationToken,
) -> Result<Summary, DemoError> {
    let client = RegistryClient::new(
        &format!("{}/registry", endpoints.base),
        Credentials::Bearer(endpoints.admin_token.clone()),
        lienthong_contract::Codec::new(),
    )
    .map_err(|e| DemoError::Startup(e.to_string()))?;
    let mut publishers: HashMap<&'static str, Publisher> = HashMap::new();
    for unit in WARDS.iter().chain(DEPARTMENTS) {
        let publisher = Publisher::connect(
            PublisherConfig::new(unit.code, unit.kind, KafkaConfig::new(bootstrap)),
            Arc::clone(catalog),
            SchemaIds::Registry(&client),
        )
        .await?
        .with_metrics(telemetry);
        publishers.insert(unit.code, publisher);
    }
    let (to_portal, portal_rx) = tokio::sync::mpsc::channel(10_000);
    let mut portal = Some(tokio::spawn(portal::run(
        portal_rx,
        endpoints.base.clone(),
        endpoints.unit_tokens.clone(),
        Arc::clone(catalog),
    )));
    let played = async {
        let mut summary = Summary::default();
        let mut sim = Simulator::new(config.seed);
        let start_ms = now_ms();
        let mut opening = sim.reference_data(start_ms);
        opening.extend(sim.backlog(start_ms, config.backlog_days, config.backlog_cases_per_day));
        say!(
            "opening the day: {} events of reference data and backlog",
            opening.len()
        );
        let mut in_flight: FuturesUnordered<InFlight<'_>> = FuturesUnordered::new();
        for event in opening {
            route(&publishers, &to_portal, &mut in_flight, event).await?;
        }
        drain(&mut in_flight, &mut summary, &mut sim, 0).await?;

        say!(
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
        // Halfway through the day, someone edits a ward's store by hand: the scheduled check
        // shows it, and the end of the day repairs it.
        let mut edit_due = agency_stores.get(1);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            if started.elapsed() >= config.duration {
                break;
            }
            if started.elapsed() >= config.duration / 2
                && let Some(store) = edit_due.take()
            {
                say!("hand edit: an operator changes a row of a ward's store, outside lienthong: {}", store.edit_by_hand().await?);
            }
            owed += per_tick;
            while owed >= 1.0 {
                owed -= 1.0;
                route(&publishers, &to_portal, &mut in_flight, sim.step(now_ms())).await?;
            }
            // Keep at most a few thousand in flight; collect what is done.
            drain(&mut in_flight, &mut summary, &mut sim, 5_000).await?;
            if last_report.elapsed() >= Duration::from_secs(1) {
                let total: u64 = summary.published.values().sum();
                let rate = (total - last_count) as f64 / last_report.elapsed().as_secs_f64();
                let applied: Vec<String> = agency_stores
                    .iter()
                    .map(|s| format!("{} {}", s.unit.code, s.applied(telemetry)))
                    .collect();
                say!(
                    "[{:>4.0} s] events {total:>8} {rate:>6.0}/s  open cases {:>5}  overdue {:>4}  rows applied: {}  rows differing from the log: {}",
                    started.elapsed().as_secs_f64(),
                    metric_sum(telemetry, "lienthong_kpi_unit_cases_open") as i64,
                    metric_sum(telemetry, "lienthong_kpi_unit_cases_open_overdue") as i64,
                    applied.join(", "),
                    metric_sum(telemetry, "lienthong_connector_divergent_rows") as i64,
                );
                last_report = Instant::now();
                last_count = total;
            }
        }
        drain(&mut in_flight, &mut summary, &mut sim, 0).await?;
        for publisher in publishers.values() {
            publisher.flush(Duration::from_secs(10)).await?;
        }
        summary.open_cases = sim.open_cases();
        Ok::<_, DemoError>(summary)
    }
    .await;
    // The HTTP publisher ends once everything sent to it is acknowledged (or it failed).
    drop(to_portal);
    let via_gateway = match portal.take() {
        Some(task) => task
            .await
            .map_err(|e| DemoError::Gateway(format!("the HTTP publisher failed: {e}")))?,
        None => Ok(portal::Counts::new()),
    };
    // Its error explains a refused hand-over better than the hand-over's own.
    let via_gateway = via_gateway?;
    let mut summary = played?;
    for (topic, n) in via_gateway {
        summary.via_gateway += n;
        *summary.published.entry(topic).or_insert(0) += n;
    }
    Ok(summary)
}

/// Hand `event` to the HTTP publisher (feedback) or publish it through the SDK.
async fn route<'a>(
    publishers: &'a HashMap<&'static str, Publisher>,
    to_portal: &tokio::sync::mpsc::Sender<CityEvent>,
    in_flight: &mut FuturesUnordered<InFlight<'a>>,
    event: CityEvent,
) -> Result<(), DemoError> {
    if matches!(event, CityEvent::Feedback(_)) {
        to_portal
            .send(event)
            .await
            .map_err(|_| DemoError::Gateway("the HTTP publisher stopped".into()))
    } else {
        in_flight.push(publish(publishers, event)?);
        Ok(())
    }
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
    sim: &mut Simulator,
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
        sim.acknowledged(&receipt.event_id);
        *summary
            .published
            .entry(receipt.topic.to_string())
            .or_insert(0) += 1;
    }
}

/// The high watermark of every partition of every catalog topic.
async fn high_watermarks(
    bootstrap: &str,
    catalog: &Arc<Catalog>,
) -> Result<stores::Ends, DemoError> {
    let (bootstrap, catalog) = (bootstrap.to_string(), Arc::clone(catalog));
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = KafkaConfig::new(bootstrap)
            .watermarks()
            .create()
            .map_err(|e| DemoError::Kafka(e.to_string()))?;
        let mut ends = stores::Ends::new();
        for topic in catalog.topics() {
            for p in 0..topic.partitions {
                let (_, high) = consumer
                    .fetch_watermarks(&topic.name, p, Duration::from_secs(10))
                    .map_err(|e| DemoError::Kafka(format!("{}[{p}]: {e}", topic.name)))?;
                ends.insert((topic.name.clone(), p), high);
            }
        }
        Ok(ends)
    })
    .await
    .map_err(|e| DemoError::Kafka(format!("reading watermarks: {e}")))?
}

/// How long reading one partition back may take.
const SCAN: Duration = Duration::from_secs(60);

/// What reading the log back found.
struct LogScan {
    /// Committed records per topic since the given offsets.
    counts: BTreeMap<String, u64>,
    /// Per partition with records, the offset after its last record: where a consumer that
    /// read everything stands (transaction markers after it are never delivered).
    ends: stores::Ends,
}

/// Read every catalog topic back from `since` (per partition) to its end, as a consumer sees
/// it (`read_committed`): count the records and note where each partition's last one is.
async fn scan_log(
    bootstrap: &str,
    catalog: &Arc<Catalog>,
    since: &stores::Ends,
) -> Result<LogScan, DemoError> {
    let (bootstrap, catalog, since) = (bootstrap.to_string(), Arc::clone(catalog), since.clone());
    tokio::task::spawn_blocking(move || {
        let client = KafkaConfig::new(bootstrap);
        let kafka = |e: lienthong_bus::BusError| DemoError::Kafka(e.to_string());
        let from: Vec<(lienthong_bus::Partition, i64)> = catalog
            .topics()
            .iter()
            .flat_map(|t| (0..t.partitions).map(move |p| (t.name.clone(), p)))
            .map(|tp| {
                let start = since.get(&tp).copied().unwrap_or(0);
                (tp, start)
            })
            .collect();
        let reads = lienthong_bus::read_back(&client, &from, SCAN).map_err(kafka)?;
        let mut scan = LogScan {
            counts: BTreeMap::new(),
            ends: stores::Ends::new(),
        };
        // Partitions with nothing new: where their earlier records end still matters.
        let quiet: Vec<lienthong_bus::Partition> = from
            .iter()
            .filter(|(tp, start)| *start > 0 && reads.get(tp).is_none_or(|r| r.last.is_none()))
            .map(|(tp, _)| tp.clone())
            .collect();
        let earlier = lienthong_bus::record_ends(&client, &quiet, SCAN).map_err(kafka)?;
        for (tp, read) in reads {
            if read.records > 0 {
                *scan.counts.entry(tp.0.clone()).or_insert(0) += read.records;
            }
            let end = read
                .last
                .map(|last| last + 1)
                .or_else(|| earlier.get(&tp).copied().flatten());
            if let Some(end) = end {
                scan.ends.insert(tp, end);
            }
        }
        Ok(scan)
    })
    .await
    .map_err(|e| DemoError::Kafka(format!("reading the log back: {e}")))?
}
