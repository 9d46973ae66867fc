//! Is a live store in sync with the log? And if not, put right only what differs.
//!
//! **Verify**, while the connector runs: read the store in one snapshot (its offsets and the
//! digest of the rows of the connector's own tables, `Sink::snapshot`), fold the log into memory up to exactly those offsets
//! with the connector's own config ([`crate::fold`]: the same decode, filter and plan), and
//! compare the two digests bucket by bucket (`crate::digest`). Equal digests: the store holds
//! what the log says, as of those offsets. For the buckets that differ, the store is read once
//! more (a second snapshot, with those buckets' rows), the fold is read on to the offsets of
//! that snapshot, and the rows are compared key by key: each difference says which row is
//! missing, extra, or which columns differ and how.
//!
//! **Repair**, in place, while the connector runs: verify, then in one store transaction that
//! holds the connector's offsets (`Sink::repair`: it waits meanwhile) remove the differing
//! keys' rows and insert the log's rows for them. If the connector moved between the check and
//! the transaction, the fold is read on to the store's new offsets and the fix made again (keys
//! that the connector changed meanwhile changed identically in the fold). Then verify again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use lienthong_contract::Catalog;
use tokio_util::sync::CancellationToken;

use crate::config::ConnectorConfig;
use crate::digest::{Row, Scan};
use crate::error::{ConnectError, StoreError};
use crate::memory::MemoryStore;
use crate::model::Cell;
use crate::runner::fold;
use crate::sink::{Fix, Sink, StoredOffset};

/// How often a repair tries again when the connector moved its offsets between the fold and
/// the fix.
const REPAIR_ATTEMPTS: u32 = 20;

/// How far a verification or repair got, for a progress bar: a handle shared with whoever
/// draws it.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Mutex<ProgressState>>);

/// A stage, and how far it got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressState {
    /// What is being done.
    pub stage: &'static str,
    /// Units done (records folded, rows written).
    pub done: u64,
    /// Units in all (0: unknown).
    pub total: u64,
}

impl Progress {
    /// The current stage.
    pub fn get(&self) -> ProgressState {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn start(&self, stage: &'static str, total: u64) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = ProgressState {
            stage,
            done: 0,
            total,
        };
    }

    pub(crate) fn advance(&self, n: u64) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).done += n;
    }
}

/// How one row differs between the store and the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Difference {
    /// The log holds the row, the store does not.
    Missing,
    /// The store holds a row the log does not.
    Extra,
    /// Both hold it; these columns differ: `(column, in the store, in the log)`, `None` for
    /// NULL.
    Columns(Vec<(String, Option<Cell>, Option<Cell>)>),
}

/// One differing row.
#[derive(Debug, Clone, PartialEq)]
pub struct Divergence {
    /// Table.
    pub table: String,
    /// Key (aggregate id, or event id in a history table).
    pub key: String,
    /// How it differs.
    pub difference: Difference,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: ", self.table, self.key)?;
        match &self.difference {
            Difference::Missing => write!(f, "missing from the store"),
            Difference::Extra => write!(f, "in the store but not in the log"),
            Difference::Columns(columns) => {
                let shown = |c: &Option<Cell>| match c {
                    None | Some(Cell::Null) => "NULL".to_string(),
                    Some(Cell::Text(t)) => format!("{t:?}"),
                    Some(Cell::Int(i)) => i.to_string(),
                    Some(Cell::Double(d)) => d.to_string(),
                    Some(Cell::Bool(b)) => b.to_string(),
                };
                let parts: Vec<String> = columns
                    .iter()
                    .map(|(name, store, log)| {
                        format!(
                            "{name} is {} in the store, {} in the log",
                            shown(store),
                            shown(log)
                        )
                    })
                    .collect();
                write!(f, "{}", parts.join("; "))
            }
        }
    }
}

/// What a verification found.
#[derive(Debug, Clone)]
pub struct Verification {
    /// The store's offsets the comparison is as of.
    pub offsets: Vec<StoredOffset>,
    /// Rows the store holds.
    pub store_rows: u64,
    /// Rows the log says it should hold.
    pub log_rows: u64,
    /// Buckets compared.
    pub buckets: usize,
    /// Buckets whose digests differed.
    pub differing_buckets: usize,
    /// The differing rows, by table and key.
    pub divergences: Vec<Divergence>,
    /// The log folded up to `offsets`.
    fold: MemoryStore,
}

impl Verification {
    /// The store holds exactly what the log says.
    pub fn in_sync(&self) -> bool {
        self.divergences.is_empty()
    }
}

/// What a repair did.
#[derive(Debug, Clone)]
pub struct Repair {
    /// What the first verification found (and the repair put right).
    pub before: Verification,
    /// The log's rows written in place of the differing keys' rows (a key the log does not
    /// hold is only removed).
    pub rows_written: usize,
    /// Transactions refused because the connector moved meanwhile.
    pub retries: u32,
    /// The verification after the repair.
    pub after: Verification,
}

/// Compare `store` with the log read by `config`, as of the offsets the store holds when the
/// check starts. `buckets` as in [`crate::digest`].
pub async fn verify<S: Sink>(
    config: &ConnectorConfig,
    catalog: &Arc<Catalog>,
    store: &mut S,
    buckets: usize,
    progress: &Progress,
    shutdown: &CancellationToken,
) -> Result<Verification, ConnectError> {
    let buckets = buckets.max(1);
    let name = config.name.as_str();
    let tables = tables_of(config)?;
    let reading = |keep: &[usize]| Scan::new(buckets, keep).only(tables.iter().copied());
    progress.start("reading the store", 0);
    let first = store.snapshot(name, reading(&[])).await?;
    if consumed(config, &first.offsets).is_empty() && first.digest.rows > 0 {
        // Folding nothing would call every row extra, and a repair would remove them all.
        return Err(ConnectError::Config(format!(
            "the store holds {} rows in {} but no offsets for connector {name}: nothing to \
             compare them with (is `name` the one the connector runs as?)",
            first.digest.rows,
            tables.join(", ")
        )));
    }
    let log = MemoryStore::new();
    fold_to(config, catalog, &log, &first.offsets, progress, shutdown).await?;
    progress.start("comparing", 0);
    let (log_digest, _) = scan(&log, buckets, &[]);
    let differing = first.digest.differing_buckets(&log_digest);
    if differing.is_empty() {
        return Ok(Verification {
            offsets: first.offsets,
            store_rows: first.digest.rows,
            log_rows: log_digest.rows,
            buckets,
            differing_buckets: 0,
            divergences: Vec::new(),
            fold: log,
        });
    }
    // The connector may have moved since: read the differing buckets' rows in a second
    // snapshot, and the log on to its offsets.
    progress.start("reading the differing rows", 0);
    let second = store.snapshot(name, reading(&differing)).await?;
    forward(&first.offsets, &second.offsets)?;
    fold_to(config, catalog, &log, &second.offsets, progress, shutdown).await?;
    progress.start("comparing", 0);
    let (log_digest, log_rows) = scan(&log, buckets, &differing);
    let divergences = compare(second.rows, log_rows);
    let differing_buckets = second.digest.differing_buckets(&log_digest).len();
    Ok(Verification {
        offsets: second.offsets,
        store_rows: second.digest.rows,
        log_rows: log_digest.rows,
        buckets,
        differing_buckets,
        divergences,
        fold: log,
    })
}

/// Put right, in place, every row of `store` that differs from the log, then verify again.
pub async fn repair<S: Sink>(
    config: &ConnectorConfig,
    catalog: &Arc<Catalog>,
    store: &mut S,
    buckets: usize,
    progress: &Progress,
    shutdown: &CancellationToken,
) -> Result<Repair, ConnectError> {
    let before = verify(config, catalog, store, buckets, progress, shutdown).await?;
    let mut rows_written = 0;
    let mut retries = 0;
    if !before.in_sync() {
        let keys: Vec<(String, String)> = before
            .divergences
            .iter()
            .map(|d| (d.table.clone(), d.key.clone()))
            .collect();
        let mut expected = before.offsets.clone();
        loop {
            let rows = log_rows_of(&before.fold, &keys);
            let fix = Fix {
                expected: expected.clone(),
                keys: keys.clone(),
                rows,
            };
            progress.start("writing", fix.rows.len() as u64);
            match store.repair(&config.name, &fix).await {
                Ok(()) => {
                    rows_written = fix.rows.len();
                    progress.advance(rows_written as u64);
                    break;
                }
                Err(StoreError::Fenced { .. }) if retries < REPAIR_ATTEMPTS => {
                    // The connector applied a batch meanwhile: read the log on to where the
                    // store is now, and make the fix again as of there.
                    retries += 1;
                    if shutdown.is_cancelled() {
                        return Err(ConnectError::Stopped("repair"));
                    }
                    let mut now = store.offsets(&config.name).await?;
                    StoredOffset::sort(&mut now);
                    forward(&expected, &now)?;
                    fold_to(config, catalog, &before.fold, &now, progress, shutdown).await?;
                    expected = now;
                }
                Err(StoreError::Fenced { .. }) => {
                    return Err(StoreError::Transient {
                        class: "serialization",
                        message: format!(
                            "the connector committed a batch before each of {REPAIR_ATTEMPTS} attempts to repair; nothing was changed, run the repair again"
                        ),
                    }
                    .into());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let after = verify(config, catalog, store, buckets, progress, shutdown).await?;
    Ok(Repair {
        before,
        rows_written,
        retries,
        after,
    })
}

/// The scheduled check beside a running connector (`[verify] interval_secs`): every interval,
/// verify the store (opened by `opening`, a connection of its own) and set the divergence
/// gauges in `telemetry`, until `stop`. A check that fails is counted and logged, and the next
/// one runs at its time. [`crate::start`] runs it; the demo runs it beside its connectors.
pub async fn scheduled<S: Sink>(
    config: ConnectorConfig,
    catalog: Arc<Catalog>,
    telemetry: Arc<lienthong_telemetry::Telemetry>,
    opening: impl std::future::Future<Output = Result<Option<S>, ConnectError>>,
    stop: CancellationToken,
) {
    let name = config.name.clone();
    let mut store = match opening.await {
        Ok(Some(store)) => store,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(connector = %name, error = %e, "the scheduled check could not open the store; no checks");
            return;
        }
    };
    let m = &telemetry.connector;
    let interval = std::time::Duration::from_secs(config.verify.interval_secs);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let started = std::time::Instant::now();
        let progress = Progress::default();
        let result = verify(
            &config,
            &catalog,
            &mut store,
            config.verify.buckets,
            &progress,
            &stop,
        )
        .await;
        let outcome = match result {
            Ok(v) => {
                m.divergent_rows
                    .with_label_values(&[&name])
                    .set(v.divergences.len() as i64);
                if v.in_sync() {
                    tracing::info!(connector = %name, rows = v.store_rows, seconds = started.elapsed().as_secs_f64(), "scheduled check: the store is in sync with the log");
                    "in_sync"
                } else {
                    let first: Vec<String> = v
                        .divergences
                        .iter()
                        .take(5)
                        .map(|d| d.to_string())
                        .collect();
                    tracing::warn!(connector = %name, rows = v.divergences.len(), first = ?first, "scheduled check: the store differs from the log; `lienthong repair` puts it right");
                    "diverged"
                }
            }
            Err(ConnectError::Stopped(_)) => return,
            Err(e) => {
                tracing::warn!(connector = %name, error = %e, "scheduled check failed");
                "failed"
            }
        };
        m.verifications.with_label_values(&[&name, outcome]).inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        m.verified_timestamp.with_label_values(&[&name]).set(now);
    }
}

/// The tables `config`'s topics fill: a store may hold other connectors' tables too.
fn tables_of(config: &ConnectorConfig) -> Result<Vec<&'static str>, ConnectError> {
    let mut tables = Vec::new();
    for topic in &config.topics {
        let entity = config.entity_of(&topic.name)?;
        tables.push(entity.table());
        tables.extend(entity.history_table());
    }
    tables.sort_unstable();
    tables.dedup();
    Ok(tables)
}

/// Read the log on into `log` up to `offsets` (those of the topics `config` consumes).
async fn fold_to(
    config: &ConnectorConfig,
    catalog: &Arc<Catalog>,
    log: &MemoryStore,
    offsets: &[StoredOffset],
    progress: &Progress,
    shutdown: &CancellationToken,
) -> Result<(), ConnectError> {
    let until = consumed(config, offsets);
    let catalog = Arc::clone(catalog);
    fold(config, catalog, log.clone(), &until, progress, shutdown).await
}

/// The digest of the fold, and its rows in the buckets `keep`.
fn scan(log: &MemoryStore, buckets: usize, keep: &[usize]) -> (crate::Digest, Vec<Row>) {
    let mut scan = Scan::new(buckets, keep);
    log.scan(&mut scan);
    scan.finish()
}

/// The offsets of the topics `config` consumes (a store may still hold a topic's offsets that
/// the connector no longer reads).
fn consumed(config: &ConnectorConfig, offsets: &[StoredOffset]) -> Vec<StoredOffset> {
    offsets
        .iter()
        .filter(|o| config.topics.iter().any(|t| t.name == o.topic))
        .cloned()
        .collect()
}

/// Refuse offsets that went back from `before` to `after` (a replay started meanwhile).
fn forward(before: &[StoredOffset], after: &[StoredOffset]) -> Result<(), ConnectError> {
    for b in before {
        let now = after
            .iter()
            .find(|a| a.topic == b.topic && a.partition == b.partition)
            .map(|a| a.next);
        if now.is_none_or(|n| n < b.next) {
            return Err(ConnectError::StoreMovedBack(format!(
                "{}/{} was at {}, now at {}",
                b.topic,
                b.partition,
                b.next,
                now.map_or("none".to_string(), |n| n.to_string())
            )));
        }
    }
    Ok(())
}

/// The log's rows for `keys`.
fn log_rows_of(log: &MemoryStore, keys: &[(String, String)]) -> Vec<Row> {
    let wanted: std::collections::HashSet<(&str, &str)> =
        keys.iter().map(|(t, k)| (t.as_str(), k.as_str())).collect();
    let mut rows = Vec::new();
    log.each_row(|row| {
        if wanted.contains(&(row.table.as_str(), row.key.as_str())) {
            rows.push(row);
        }
    });
    rows
}

/// Row-by-row differences between the store's rows and the log's, sorted by table and key.
fn compare(store: Vec<Row>, log: Vec<Row>) -> Vec<Divergence> {
    let index = |rows: Vec<Row>| -> BTreeMap<(String, String), BTreeMap<String, Cell>> {
        rows.into_iter()
            .map(|r| {
                let cells = r
                    .cells
                    .into_iter()
                    .filter(|(_, c)| *c != Cell::Null)
                    .collect();
                ((r.table, r.key), cells)
            })
            .collect()
    };
    let (mut store, log) = (index(store), index(log));
    let mut out = Vec::new();
    for ((table, key), want) in log {
        let difference = match store.remove(&(table.clone(), key.clone())) {
            None => Some(Difference::Missing),
            Some(held) if held == want => None,
            Some(held) => {
                let mut names: Vec<&String> = held.keys().chain(want.keys()).collect();
                names.sort();
                names.dedup();
                Some(Difference::Columns(
                    names
                        .into_iter()
                        .filter(|n| held.get(*n) != want.get(*n))
                        .map(|n| (n.clone(), held.get(n).cloned(), want.get(n).cloned()))
                        .collect(),
                ))
            }
        };
        if let Some(difference) = difference {
            out.push(Divergence {
                table,
                key,
                difference,
            });
        }
    }
    out.extend(store.into_keys().map(|(table, key)| Divergence {
        table,
        key,
        difference: Difference::Extra,
    }));
    out.sort_by(|a, b| (&a.table, &a.key).cmp(&(&b.table, &b.key)));
    out
}
