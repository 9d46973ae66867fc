//! A store in memory, with exactly the semantics of the real ones: for unit tests, and to fold a
//! topic's records into the state a store should hold (the digest "from the log").

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::digest::{Row, Scan};
use crate::error::StoreError;
use crate::model::{Cell, Entity, HistoryInsert, plan};
use crate::sink::{Applied, Batch, Fix, Sink, Snapshot, StoredOffset};

/// Tables in memory. Clones share the same tables, so a test can keep one clone while a
/// connector runs over another.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Tables>>,
}

#[derive(Debug, Default)]
struct Tables {
    tables: BTreeMap<String, BTreeMap<String, Cells>>,
    offsets: BTreeMap<(String, String, i32), i64>,
    /// Column names, each held once: a fold of a large log holds millions of cells.
    names: HashSet<Arc<str>>,
}

/// A row's columns, by name.
type Cells = BTreeMap<Arc<str>, Cell>;

impl Tables {
    /// The one copy of the column name `name`.
    fn name(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.names.get(name) {
            return Arc::clone(n);
        }
        let n: Arc<str> = Arc::from(name);
        self.names.insert(Arc::clone(&n));
        n
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every row, for the digest or a row-by-row comparison.
    pub fn all_rows(&self) -> Vec<Row> {
        self.lock().all_rows()
    }

    /// How many rows the tables hold.
    pub fn row_count(&self) -> u64 {
        self.lock().tables.values().map(|t| t.len() as u64).sum()
    }

    /// Every row into `scan`, one at a time (the tables are not copied whole).
    pub fn scan(&self, scan: &mut Scan) {
        self.each_row(|row| scan.push(row));
    }

    /// Every row to `f`, one at a time.
    pub fn each_row(&self, f: impl FnMut(Row)) {
        self.lock().each_row(f);
    }

    /// The offsets held for `connector`.
    pub fn offsets_of(&self, connector: &str) -> Vec<StoredOffset> {
        self.lock().offsets_of(connector)
    }

    /// Apply a batch (what [`Sink::apply`] does, synchronously).
    pub fn apply_now(&self, batch: Batch) -> Result<Applied, StoreError> {
        self.lock().apply(batch)
    }
}

impl Tables {
    fn all_rows(&self) -> Vec<Row> {
        let mut out = Vec::new();
        self.each_row(|row| out.push(row));
        out
    }

    fn each_row(&self, mut f: impl FnMut(Row)) {
        for (table, rows) in &self.tables {
            for (key, cells) in rows {
                f(Row {
                    table: table.clone(),
                    key: key.clone(),
                    cells: cells
                        .iter()
                        .filter(|(_, c)| **c != Cell::Null)
                        .map(|(k, c)| (k.to_string(), c.clone()))
                        .collect(),
                });
            }
        }
    }

    fn offsets_of(&self, connector: &str) -> Vec<StoredOffset> {
        self.offsets
            .iter()
            .filter(|((c, _, _), _)| c == connector)
            .map(|((_, t, p), n)| StoredOffset {
                topic: t.clone(),
                partition: *p,
                next: *n,
            })
            .collect()
    }

    fn repair(&mut self, connector: &str, fix: &Fix) -> Result<(), StoreError> {
        fix.check(self.offsets_of(connector))?;
        for (table, key) in &fix.keys {
            Fix::key_column(table)?;
            if let Some(t) = self.tables.get_mut(table) {
                t.remove(key);
            }
        }
        for row in &fix.rows {
            Fix::key_column(&row.table)?;
            let cells: Cells = row
                .cells
                .iter()
                .map(|(n, c)| (self.name(n), c.clone()))
                .collect();
            self.tables
                .entry(row.table.clone())
                .or_default()
                .insert(row.key.clone(), cells);
        }
        Ok(())
    }

    fn apply(&mut self, batch: Batch) -> Result<Applied, StoreError> {
        for o in &batch.offsets {
            let k = (batch.connector.clone(), o.topic.clone(), o.partition);
            if self.offsets.get(&k).copied() != o.expected {
                return Err(StoreError::Fenced {
                    topic: o.topic.clone(),
                    partition: o.partition,
                });
            }
        }
        let mut held = HashMap::new();
        for op in &batch.ops {
            let (entity, key) = op.target();
            if let Some(v) = self
                .tables
                .get(entity.table())
                .and_then(|t| t.get(key))
                .and_then(|r| match r.get("version") {
                    Some(Cell::Int(v)) => Some(*v),
                    _ => None,
                })
            {
                held.insert((entity, key.to_string()), v);
            }
        }
        let p = plan(batch.ops, &held);
        // Check constraints first, so a failure changes nothing (a transaction).
        if p.upserts.iter().any(|u| u.version < 1) || p.history.iter().any(|h| h.row.version < 1) {
            return Err(StoreError::Constraint(
                "check constraint: version must be at least 1".into(),
            ));
        }
        for (entity, key) in &p.deletes {
            if let Some(t) = self.tables.get_mut(entity.table()) {
                t.remove(key);
            }
        }
        let version = self.name("version");
        for u in p.upserts {
            let row = self
                .tables
                .entry(u.entity.table().to_string())
                .or_default()
                .entry(u.key.clone())
                .or_default();
            let current = match row.get("version") {
                Some(Cell::Int(v)) => Some(*v),
                _ => None,
            };
            if current.is_some_and(|v| v >= u.version) {
                continue;
            }
            row.insert(Arc::clone(&version), Cell::Int(u.version));
            for (c, v) in u.cells {
                row.insert(c.name, v);
            }
        }
        for HistoryInsert { entity, row: h, .. } in p.history {
            let Some(table) = entity.history_table() else {
                continue;
            };
            let names = [
                "id",
                "version",
                "occurred_at",
                "producer_unit",
                "correlation_id",
                "kind",
                "body",
            ]
            .map(|n| self.name(n));
            let t = self.tables.entry(table.to_string()).or_default();
            t.entry(h.event_id.clone()).or_insert_with(|| {
                let [
                    id,
                    version,
                    occurred_at,
                    producer_unit,
                    correlation_id,
                    kind,
                    body,
                ] = names;
                BTreeMap::from([
                    (id, Cell::Text(h.id)),
                    (version, Cell::Int(h.version)),
                    (occurred_at, Cell::Int(h.occurred_at)),
                    (producer_unit, Cell::Text(h.producer_unit)),
                    (correlation_id, Cell::Text(h.correlation_id)),
                    (kind, Cell::Text(h.kind)),
                    (body, Cell::Text(h.body)),
                ])
            });
        }
        for o in batch.offsets {
            self.offsets
                .insert((batch.connector.clone(), o.topic, o.partition), o.next);
        }
        Ok(Applied {
            applied: p.applied,
            filtered: p.filtered,
            stale: p.stale,
        })
    }
}

impl Sink for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn offsets(&mut self, connector: &str) -> Result<Vec<StoredOffset>, StoreError> {
        Ok(self.offsets_of(connector))
    }

    async fn apply(&mut self, batch: Batch) -> Result<Applied, StoreError> {
        self.apply_now(batch)
    }

    async fn rows(&mut self) -> Result<Vec<Row>, StoreError> {
        Ok(self.all_rows())
    }

    async fn snapshot(&mut self, connector: &str, mut scan: Scan) -> Result<Snapshot, StoreError> {
        let tables = self.lock();
        tables.each_row(|row| scan.push(row));
        Ok(Snapshot::new(tables.offsets_of(connector), scan))
    }

    async fn repair(&mut self, connector: &str, fix: &Fix) -> Result<(), StoreError> {
        self.lock().repair(connector, fix)
    }

    async fn forget_offsets(&mut self, connector: &str) -> Result<u64, StoreError> {
        let mut tables = self.lock();
        let before = tables.offsets.len();
        tables.offsets.retain(|(c, _, _), _| c != connector);
        Ok((before - tables.offsets.len()) as u64)
    }
}

/// Every entity table name and history table name, for stores that list their tables.
pub fn all_tables() -> Vec<(&'static str, Option<Entity>)> {
    let mut out = Vec::new();
    for e in Entity::ALL {
        out.push((e.table(), Some(e)));
        if let Some(h) = e.history_table() {
            out.push((h, None));
        }
    }
    out
}
