//! The demo's agency stores: a SQLite database per chosen ward and department, each kept in sync
//! with the log by a sink connector in this process (the same runtime as `lienthong connect`),
//! and the proof at the end that each holds exactly what the log says.
//!
//! The proof folds the log into memory with the store's own connector config (same filter,
//! same fold) and compares the two digests (`lienthong_connect::digest`): equal digests mean
//! the same rows, column by column.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lienthong_connect::config::{
    BatchConfig, FilterConfig, RetryConfig, SchemasConfig, StoreConfig, TopicConfig,
};
use lienthong_connect::{ConnectError, ConnectorConfig, Digest, MemoryStore, Sink, StoredOffset};
use lienthong_contract::Catalog;
use lienthong_store::AnyStore;
use lienthong_telemetry::Telemetry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::DemoError;
use crate::city::Unit;

/// Where the connectors send what they can never apply.
pub const DEAD_LETTER_TOPIC: &str = "lienthong.demo.dead-letters";

/// The topics every demo store consumes.
const TOPICS: &[&str] = &[
    "hcm.case.events",
    "hcm.feedback.events",
    "hcm.reference.units",
    "hcm.reference.procedures",
];

/// One agency's store and its running connector.
pub struct AgencyStore {
    /// The unit whose store it is.
    pub unit: &'static Unit,
    config: ConnectorConfig,
    /// The store opened a second time, to watch it (the connector holds its own).
    sink: AnyStore,
    task: JoinHandle<Result<(), ConnectError>>,
    stop: CancellationToken,
    /// The scheduled check beside the connector (every [`CHECK_EVERY`]).
    checks: JoinHandle<()>,
    /// Rows changed by hand in this store during the run.
    edited: AtomicUsize,
}

/// How often each demo store is checked against the log while the demo runs.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// What the end-of-day check found for one store.
#[derive(Debug, Clone)]
pub struct StoreCheck {
    /// The unit's code.
    pub code: String,
    /// The database file.
    pub path: String,
    /// Rows the store holds.
    pub rows: u64,
    /// Rows the log says it should hold.
    pub log_rows: u64,
    /// Digest of what the store holds.
    pub digest: String,
    /// Digest of the log folded with the store's connector config.
    pub log_digest: String,
    /// Partitions the store had not caught up on when the check's time ran out, as
    /// `topic/partition at <held> of <end>`; empty when it caught up.
    pub behind: Vec<String>,
    /// Rows changed by hand in the store during the run.
    pub edited: usize,
    /// Rows the scheduled check showed as differing on `lienthong_connector_divergent_rows`
    /// at the end of the day, before the repair.
    pub gauge: i64,
    /// The divergent rows the status page showed for the store at that moment (`None`: the
    /// page did not answer, or did not list the store).
    pub page: Option<i64>,
    /// Rows the end-of-day `repair` found differing (and put right, while the connector ran).
    pub repaired: usize,
}

impl StoreCheck {
    /// The store holds exactly what the log says.
    pub fn matches(&self) -> bool {
        self.behind.is_empty() && self.rows == self.log_rows && self.digest == self.log_digest
    }

    /// Every row changed by hand was shown by the gauge and the status page, found and put
    /// right.
    pub fn drift_repaired(&self) -> bool {
        self.repaired == self.edited
            && self.gauge == self.edited as i64
            && self.page == Some(self.gauge)
    }
}

/// Connector name of `unit`'s store (the `connector` label of its metrics).
pub fn connector_name(unit: &Unit) -> String {
    format!("demo-{}", unit.code)
}

fn connector_config(
    name: String,
    group: String,
    unit: &Unit,
    bootstrap: &str,
    store: StoreConfig,
    schemas_dir: &Path,
) -> ConnectorConfig {
    ConnectorConfig {
        name,
        group: Some(group),
        kafka: lienthong_bus::KafkaConfig::new(bootstrap),
        topics: TOPICS
            .iter()
            .map(|t| TopicConfig {
                name: (*t).to_string(),
                entity: None,
            })
            .collect(),
        store,
        filter: FilterConfig {
            units: vec![unit.code.to_string()],
            citizen_records: false,
            unreadable_fields: Default::default(),
        },
        batch: BatchConfig {
            max_records: 2_000,
            max_wait_ms: 200,
        },
        dead_letter_topic: DEAD_LETTER_TOPIC.to_string(),
        retry: RetryConfig::default(),
        schemas: SchemasConfig {
            dir: schemas_dir.to_path_buf(),
            ..SchemasConfig::default()
        },
        metrics_listen: None,
        shutdown_timeout_secs: 10,
        startup_timeout_secs: 30,
        privacy: None,
        signatures: None,
        receipts: None,
        keys: Default::default(),
        verify: lienthong_connect::config::VerifyConfig {
            interval_secs: CHECK_EVERY.as_secs(),
            buckets: lienthong_connect::digest::DEFAULT_BUCKETS,
        },
    }
}

/// Open `unit`'s SQLite store under `data_dir` and start its connector. `run_id` makes the
/// consumer groups this run's own (a real cluster may remember earlier runs' groups).
pub async fn start(
    unit: &'static Unit,
    data_dir: &Path,
    bootstrap: &str,
    catalog: &Arc<Catalog>,
    schemas_dir: &Path,
    telemetry: &Arc<Telemetry>,
    run_id: i64,
) -> Result<AgencyStore, DemoError> {
    let path = data_dir.join(format!("{}.sqlite", unit.code));
    let name = connector_name(unit);
    let config = connector_config(
        name.clone(),
        format!("lienthong-{name}-{run_id}"),
        unit,
        bootstrap,
        StoreConfig::Sqlite { path: path.clone() },
        schemas_dir,
    );
    let open = || async {
        AnyStore::open(&config.store)
            .await
            .map_err(|e| DemoError::Startup(format!("store {}: {e}", path.display())))
    };
    let (connector_sink, sink, check_sink) = (open().await?, open().await?, open().await?);
    let stop = CancellationToken::new();
    let task = tokio::spawn(lienthong_connect::run(
        config.clone(),
        Arc::clone(catalog),
        connector_sink,
        Arc::clone(telemetry),
        stop.clone(),
    ));
    let checks = tokio::spawn(lienthong_connect::verify::scheduled(
        config.clone(),
        Arc::clone(catalog),
        Arc::clone(telemetry),
        async move { Ok(Some(check_sink)) },
        stop.child_token(),
    ));
    Ok(AgencyStore {
        unit,
        config,
        sink,
        task,
        stop,
        checks,
        edited: AtomicUsize::new(0),
    })
}

/// Where each partition of the consumed topics ends: the offset after its last record (not
/// after a transaction marker, which a consumer never sees).
pub type Ends = BTreeMap<(String, i32), i64>;

/// The partitions on which `held` has not reached `ends`, as `topic/partition at <held> of
/// <end>` (`held` is `-` for a partition the store has no offset for).
fn behind(held: &[StoredOffset], ends: &Ends) -> Vec<String> {
    ends.iter()
        .filter_map(|((topic, partition), end)| {
            let next = held
                .iter()
                .find(|o| &o.topic == topic && o.partition == *partition)
                .map(|o| o.next);
            match next {
                Some(next) if next >= *end => None,
                Some(next) => Some(format!("{topic}/{partition} at {next} of {end}")),
                None => Some(format!("{topic}/{partition} at - of {end}")),
            }
        })
        .collect()
}

/// The consumed topics' ends, from the log scan (`ends` of every catalog topic).
pub fn consumed(ends: &Ends) -> Ends {
    ends.iter()
        .filter(|((topic, _), _)| TOPICS.contains(&topic.as_str()))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

impl AgencyStore {
    /// Rows applied so far by this store's connector (from the shared metrics).
    pub fn applied(&self, telemetry: &Telemetry) -> u64 {
        telemetry
            .registry()
            .gather()
            .iter()
            .filter(|f| f.name() == "lienthong_connector_events_applied_total")
            .flat_map(|f| f.get_metric().iter())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "connector" && l.value() == self.config.name)
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    /// Change one row of the store by hand, outside the connector, as an operator's script
    /// might: the unit's own name in the `units` table (reference data, which no event of the
    /// day changes again). Returns what was changed.
    pub async fn edit_by_hand(&self) -> Result<String, DemoError> {
        let StoreConfig::Sqlite { path } = &self.config.store else {
            return Err(DemoError::Startup(
                "the demo's stores are SQLite files".into(),
            ));
        };
        let (path, code) = (path.clone(), self.unit.code);
        let changed = tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open(&path)?;
            conn.busy_timeout(Duration::from_secs(10))?;
            conn.execute(
                "UPDATE units SET name = name || ' (sửa tay)' WHERE id = ?1",
                [code],
            )
        })
        .await
        .map_err(|e| DemoError::Startup(format!("editing store {}: {e}", self.unit.code)))?
        .map_err(|e| DemoError::Startup(format!("editing store {}: {e}", self.unit.code)))?;
        self.edited.fetch_add(changed, Ordering::Relaxed);
        Ok(format!(
            "units {code}: name edited in {} ({changed} row)",
            self.path()
        ))
    }

    fn path(&self) -> String {
        match &self.config.store {
            StoreConfig::Sqlite { path } => path.display().to_string(),
            StoreConfig::Postgres { .. } => String::new(),
        }
    }

    /// What the scheduled check last showed for this store.
    fn gauge(&self, telemetry: &Telemetry) -> i64 {
        telemetry
            .connector
            .divergent_rows
            .with_label_values(&[&self.config.name])
            .get()
    }

    /// Wait (up to `timeout`) until the store holds `ends`; note what the scheduled check
    /// shows and `repair` the store while its connector still runs; then stop the connector,
    /// and compare what the store holds with the log folded in memory by the same config.
    pub async fn check(
        mut self,
        ends: &Ends,
        catalog: &Arc<Catalog>,
        telemetry: &Telemetry,
        status_page: &str,
        timeout: Duration,
    ) -> Result<StoreCheck, DemoError> {
        let store_err = |e: lienthong_connect::StoreError| {
            DemoError::Startup(format!("store {}: {e}", self.unit.code))
        };
        let deadline = Instant::now() + timeout;
        let behind = loop {
            let held = self
                .sink
                .offsets(&self.config.name)
                .await
                .map_err(store_err)?;
            let behind = behind(&held, ends);
            if behind.is_empty() || Instant::now() >= deadline || self.task.is_finished() {
                break behind;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // The scheduled check shows the rows edited by hand (it runs every CHECK_EVERY; give
        // it two turns); then the repair, with the connector still running.
        let edited = self.edited.load(Ordering::Relaxed);
        let shown_by = Instant::now() + 2 * CHECK_EVERY + Duration::from_secs(5);
        while self.gauge(telemetry) != edited as i64 && Instant::now() < shown_by {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let gauge = self.gauge(telemetry);
        let page = shown_on_page(status_page, &self.config.name).await;
        let progress = lienthong_connect::verify::Progress::default();
        let repaired = lienthong_connect::repair(
            &self.config,
            catalog,
            &mut self.sink,
            lienthong_connect::digest::DEFAULT_BUCKETS,
            &progress,
            &CancellationToken::new(),
        )
        .await
        .map_err(|e| DemoError::Startup(format!("repairing store {}: {e}", self.unit.code)))?;
        if !repaired.after.in_sync() {
            return Err(DemoError::Startup(format!(
                "store {} still differs from the log after the repair: {:?}",
                self.unit.code, repaired.after.divergences
            )));
        }
        self.stop.cancel();
        let _ = (&mut self.checks).await;
        match (&mut self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(DemoError::Startup(format!(
                    "the connector of store {} stopped: {e}",
                    self.unit.code
                )));
            }
            Err(e) => return Err(DemoError::Startup(format!("connector task: {e}"))),
        }
        let rows = self.sink.rows().await.map_err(store_err)?;
        let digest = Digest::of(rows, lienthong_connect::digest::DEFAULT_BUCKETS);
        let folded = fold_in_memory(&self.config, ends, catalog, timeout).await?;
        let log_digest = Digest::of(folded, lienthong_connect::digest::DEFAULT_BUCKETS);
        Ok(StoreCheck {
            code: self.unit.code.to_string(),
            path: self.path(),
            rows: digest.rows,
            log_rows: log_digest.rows,
            digest: digest.overall,
            log_digest: log_digest.overall,
            behind,
            edited,
            gauge,
            page,
            repaired: repaired.before.divergences.len(),
        })
    }

    /// Stop the connector without checking (the run failed).
    pub async fn abandon(self) {
        self.stop.cancel();
        let _ = self.checks.await;
        let _ = self.task.await;
    }
}

/// The rows a store with `config` must hold once it has read up to `ends`: the log folded in
/// memory by the same config (`lienthong_connect::fold`).
async fn fold_in_memory(
    config: &ConnectorConfig,
    ends: &Ends,
    catalog: &Arc<Catalog>,
    timeout: Duration,
) -> Result<Vec<lienthong_connect::Row>, DemoError> {
    let until: Vec<StoredOffset> = ends
        .iter()
        .map(|((topic, partition), end)| StoredOffset {
            topic: topic.clone(),
            partition: *partition,
            next: *end,
        })
        .collect();
    let memory = MemoryStore::new();
    let (progress, stop) = (
        lienthong_connect::verify::Progress::default(),
        CancellationToken::new(),
    );
    let folding = lienthong_connect::fold(
        config,
        Arc::clone(catalog),
        memory.clone(),
        &until,
        &progress,
        &stop,
    );
    let why = match tokio::time::timeout(timeout, folding).await {
        Ok(Ok(())) => return Ok(memory.all_rows()),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("it did not reach the end of the log within {timeout:?}"),
    };
    Err(DemoError::Startup(format!(
        "folding the log for {}: {why}",
        config.name
    )))
}

/// The divergent rows the status page at `url` shows for connector `name` (its
/// `data-key="store/{name}/divergent_rows"` cell), or `None` if the page does not answer or
/// has no such figure.
async fn shown_on_page(url: &str, name: &str) -> Option<i64> {
    let page = reqwest::get(url).await.ok()?.text().await.ok()?;
    let value =
        lienthong_kpi::status::figures(&page).remove(&format!("store/{name}/divergent_rows"))?;
    value.parse::<f64>().ok().map(|v| v as i64)
}
