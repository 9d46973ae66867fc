//! The store model: which tables a store holds, how an Avro record becomes a row, and how a
//! batch of changes folds into what a store writes (the [`plan`]), identically for every store
//! kind.
//!
//! Each [`Entity`] has a **current-state table** keyed by the aggregate id, holding `version`,
//! the envelope (`event_id`, `occurred_at`, `producer_unit`, `correlation_id`) and one column per
//! leaf field of the record body. Case and feedback events are deltas (a union of lifecycle
//! steps); their table also has `status` (the last step's name) and an **append-only history
//! table** (`case_events`, `feedback_events`) keyed by the event id.
//!
//! Columns follow from the writer schema, mechanically:
//! - a record field is flattened, its path joined by `__` (`result_document__sha256`);
//! - a delta's union branch prefixes its fields with the branch name in snake case
//!   (`case_submitted__receiving_unit`), since branches reuse field names (`reason`, `channel`);
//! - `["null", T]` is `T`, nullable; arrays, maps and other unions are canonical JSON text;
//! - booleans are `Bool`, every integer and date/time is `Int` (64-bit), floats are `Double`,
//!   strings, enums, UUIDs and decimals are `Text`, bytes and fixed are lower-case hex `Text`.
//!
//! A name longer than [`MAX_IDENT`] bytes is cut and suffixed with a hash, the same in every store.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

/// Longest column name (PostgreSQL's identifier limit).
pub const MAX_IDENT: usize = 63;

/// The kinds of record a store holds, one current-state table each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    /// Administrative-procedure cases (`hcm.case.events`), deltas.
    Cases,
    /// Citizen records (`hcm.citizen.records`), snapshots, compacted with tombstones.
    Citizens,
    /// Citizen feedback (`hcm.feedback.events`), deltas.
    Feedback,
    /// Administrative units (`hcm.reference.units`), snapshots.
    Units,
    /// Procedures (`hcm.reference.procedures`), snapshots.
    Procedures,
}

impl Entity {
    /// Every entity.
    pub const ALL: [Entity; 5] = [
        Entity::Cases,
        Entity::Citizens,
        Entity::Feedback,
        Entity::Units,
        Entity::Procedures,
    ];

    /// The current-state table.
    pub fn table(self) -> &'static str {
        match self {
            Entity::Cases => "cases",
            Entity::Citizens => "citizens",
            Entity::Feedback => "feedback",
            Entity::Units => "units",
            Entity::Procedures => "procedures",
        }
    }

    /// The append-only history table of a delta entity.
    pub fn history_table(self) -> Option<&'static str> {
        match self {
            Entity::Cases => Some("case_events"),
            Entity::Feedback => Some("feedback_events"),
            _ => None,
        }
    }

    /// Whether records are deltas (a union of steps merged into the row) rather than snapshots.
    pub fn is_delta(self) -> bool {
        self.history_table().is_some()
    }

    /// The catalog topic whose value schema is this entity's reader schema.
    pub fn catalog_topic(self) -> &'static str {
        match self {
            Entity::Cases => "hcm.case.events",
            Entity::Citizens => "hcm.citizen.records",
            Entity::Feedback => "hcm.feedback.events",
            Entity::Units => "hcm.reference.units",
            Entity::Procedures => "hcm.reference.procedures",
        }
    }

    /// The entity of a catalog topic.
    pub fn of_catalog_topic(topic: &str) -> Option<Entity> {
        Entity::ALL.into_iter().find(|e| e.catalog_topic() == topic)
    }

    /// Leaf field names that name a unit, for the unit filter.
    pub fn unit_fields(self) -> &'static [&'static str] {
        match self {
            Entity::Cases => &["receiving_unit", "home_unit", "processing_unit", "to_unit"],
            Entity::Feedback => &["receiving_unit", "to_unit"],
            Entity::Citizens => &["permanent_unit", "temporary_unit"],
            Entity::Units | Entity::Procedures => &[],
        }
    }

    /// Fixed columns of the current-state table after `id` and `version`.
    pub fn fixed_columns(self) -> &'static [(&'static str, SqlType)] {
        const SNAPSHOT: &[(&str, SqlType)] = &[
            ("event_id", SqlType::Text),
            ("occurred_at", SqlType::Int),
            ("producer_unit", SqlType::Text),
            ("correlation_id", SqlType::Text),
        ];
        const DELTA: &[(&str, SqlType)] = &[
            ("event_id", SqlType::Text),
            ("occurred_at", SqlType::Int),
            ("producer_unit", SqlType::Text),
            ("correlation_id", SqlType::Text),
            ("status", SqlType::Text),
        ];
        if self.is_delta() { DELTA } else { SNAPSHOT }
    }
}

/// Columns of a history table, in order: `event_id` (primary key), then these.
pub const HISTORY_COLUMNS: &[(&str, SqlType)] = &[
    ("id", SqlType::Text),
    ("version", SqlType::Int),
    ("occurred_at", SqlType::Int),
    ("producer_unit", SqlType::Text),
    ("correlation_id", SqlType::Text),
    ("kind", SqlType::Text),
    ("body", SqlType::Text),
];

/// The type of a column, the same four in every store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlType {
    /// Boolean.
    Bool,
    /// 64-bit integer.
    Int,
    /// 64-bit float.
    Double,
    /// UTF-8 text.
    Text,
}

impl SqlType {
    /// Its name in the migrations table.
    pub fn as_str(self) -> &'static str {
        match self {
            SqlType::Bool => "bool",
            SqlType::Int => "int",
            SqlType::Double => "double",
            SqlType::Text => "text",
        }
    }

    /// Parse [`SqlType::as_str`].
    pub fn parse(s: &str) -> Option<SqlType> {
        match s {
            "bool" => Some(SqlType::Bool),
            "int" => Some(SqlType::Int),
            "double" => Some(SqlType::Double),
            "text" => Some(SqlType::Text),
            _ => None,
        }
    }
}

/// Quote an identifier as both stores do (SQL's double quotes, a quote inside doubled).
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// How a store spells what the tables every store holds leave open.
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    /// A column's type.
    pub sql_type: fn(SqlType) -> &'static str,
    /// The type of `lienthong_offsets.partition`.
    pub partition_type: &'static str,
    /// The type and default of `lienthong_migrations.applied_at` (when a column was added).
    pub applied_at: &'static str,
    /// For an entity's current-state table (its name quoted): what follows the column list in
    /// `CREATE TABLE`, and the statements that follow it.
    pub table_options: fn(&str, Entity) -> (String, String),
}

/// The statements that create every table a store holds, idempotently, in `dialect`: the
/// offsets (`lienthong_offsets`), the columns added by schema evolution
/// (`lienthong_migrations`), each entity's current-state table and its history table.
pub fn base_ddl(dialect: &Dialect) -> String {
    let int = (dialect.sql_type)(SqlType::Int);
    let mut ddl = format!(
        "CREATE TABLE IF NOT EXISTS lienthong_offsets (
            connector TEXT NOT NULL, topic TEXT NOT NULL, partition {} NOT NULL,
            next_offset {int} NOT NULL, PRIMARY KEY (connector, topic, partition));
         CREATE TABLE IF NOT EXISTS lienthong_migrations (
            table_name TEXT NOT NULL, column_name TEXT NOT NULL, column_type TEXT NOT NULL,
            applied_at {}, PRIMARY KEY (table_name, column_name));
         INSERT INTO lienthong_migrations (table_name, column_name, column_type)
            VALUES ('*', 'base', 'v1') ON CONFLICT DO NOTHING;\n",
        dialect.partition_type, dialect.applied_at,
    );
    for e in Entity::ALL {
        let mut cols = vec![
            "id TEXT PRIMARY KEY NOT NULL".to_string(),
            format!("version {int} NOT NULL CHECK (version >= 1)"),
        ];
        for (name, ty) in e.fixed_columns() {
            cols.push(format!(
                "{} {} NOT NULL",
                quote(name),
                (dialect.sql_type)(*ty)
            ));
        }
        let table = quote(e.table());
        let (options, after) = (dialect.table_options)(&table, e);
        ddl.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {table} ({}){options};\n{after}",
            cols.join(", ")
        ));
        if let Some(h) = e.history_table() {
            ddl.push_str(&history_table_ddl(h, dialect));
        }
    }
    ddl
}

/// The statements that create history table `history` and its index on `(id, version)`: the
/// event id the primary key, every history column `NOT NULL`, the version at least 1.
fn history_table_ddl(history: &str, dialect: &Dialect) -> String {
    let mut cols = vec!["event_id TEXT PRIMARY KEY NOT NULL".to_string()];
    for (name, ty) in HISTORY_COLUMNS {
        let check = if *name == "version" {
            " CHECK (version >= 1)"
        } else {
            ""
        };
        cols.push(format!(
            "{} {} NOT NULL{check}",
            quote(name),
            (dialect.sql_type)(*ty)
        ));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({});\nCREATE INDEX IF NOT EXISTS {} ON {} (id, version);\n",
        quote(history),
        cols.join(", "),
        quote(&format!("{history}_by_id")),
        quote(history)
    )
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// Boolean.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Float.
    Double(f64),
    /// Text.
    Text(String),
}

/// A column: name and type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Column {
    /// Name.
    pub name: Arc<str>,
    /// Type.
    pub ty: SqlType,
}

/// Whether the connector's filter wants a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relevance {
    /// Always apply.
    Always,
    /// Apply only when the store already holds the key (or this batch made it hold it): later
    /// events of a case name no unit, so the store remembers which cases are its own.
    IfHeld,
}

/// A new state of one aggregate, decoded from one record.
#[derive(Debug, Clone)]
pub struct Change {
    /// Entity.
    pub entity: Entity,
    /// Aggregate id.
    pub key: String,
    /// Aggregate version.
    pub version: i64,
    /// Envelope columns (and `status` for deltas) followed by body columns.
    pub cells: Vec<(Column, Cell)>,
    /// For deltas: the history row.
    pub history: Option<HistoryRow>,
    /// Whether the filter wants it.
    pub relevance: Relevance,
}

/// One row of a history table.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    /// Event id (primary key).
    pub event_id: String,
    /// Aggregate id.
    pub id: String,
    /// Aggregate version.
    pub version: i64,
    /// Event time, ms since the epoch.
    pub occurred_at: i64,
    /// Publishing unit.
    pub producer_unit: String,
    /// Correlation id.
    pub correlation_id: String,
    /// The step, snake case (`case_submitted`).
    pub kind: String,
    /// The step's fields as canonical JSON.
    pub body: String,
}

/// A change to apply.
#[derive(Debug, Clone)]
pub enum Op {
    /// Insert or update, guarded by version.
    Upsert(Change),
    /// A tombstone: delete the key.
    Delete {
        /// Entity.
        entity: Entity,
        /// Aggregate id.
        key: String,
    },
}

impl Op {
    /// The entity and key.
    pub fn target(&self) -> (Entity, &str) {
        match self {
            Op::Upsert(c) => (c.entity, &c.key),
            Op::Delete { entity, key } => (*entity, key),
        }
    }
}

/// One row to write: the merged state of one key after a batch.
#[derive(Debug, Clone)]
pub struct Upsert {
    /// Entity.
    pub entity: Entity,
    /// Aggregate id.
    pub key: String,
    /// New version.
    pub version: i64,
    /// Columns to set (others keep their value, or NULL on insert).
    pub cells: Vec<(Column, Cell)>,
    /// The store held a row for the key before the batch at a lower version, and no tombstone
    /// in the batch deletes it first: the upsert updates that row. A sink may then write a
    /// plain version-guarded update instead of an insert-or-update, provided it checks that
    /// the update found every row (a writer outside the connector may have deleted one).
    pub updates_held_row: bool,
}

/// One history row to insert unless its event id is stored.
#[derive(Debug, Clone)]
pub struct HistoryInsert {
    /// The entity whose history table takes the row.
    pub entity: Entity,
    /// The row.
    pub row: HistoryRow,
    /// The event is newer than the row the store held for its aggregate before the batch, or
    /// the store held no row for it.
    ///
    /// Then the store almost certainly does not hold this event id yet: a history row is
    /// written in the transaction that moves the row to at least its version, and a row's
    /// version only grows; an aggregate with no row has had no event applied (a new case,
    /// about a quarter of all case events). A sink may insert such rows without looking their
    /// ids up first. This is a prediction, not a guarantee: a tombstone deletes the row but
    /// not its history, so a replay of a deleted aggregate's events breaks it, and so does a
    /// writer outside the connector. Correctness must not rest on it: a sink that skips the
    /// lookup keeps the event id unique (a primary key) and, on a conflict, inserts these rows
    /// again with the lookup (one wasted insert for each such batch of a replay).
    pub newer_than_store: bool,
}

/// What a store writes for a batch, in this order: deletes, upserts, history inserts.
#[derive(Debug, Default)]
pub struct Plan {
    /// Keys to delete.
    pub deletes: Vec<(Entity, String)>,
    /// Rows to insert or update (guarded: only if the stored version is lower).
    pub upserts: Vec<Upsert>,
    /// History rows to insert unless the event id is there.
    pub history: Vec<HistoryInsert>,
    /// Changes that moved a row (or deleted one).
    pub applied: usize,
    /// Changes not older than the row but not for this store (filter).
    pub filtered: usize,
    /// Changes older than or equal to the stored version (replays, duplicates): no-ops.
    pub stale: usize,
}

/// Fold `ops` (in log order) into what a store writes, given the versions it holds for their
/// keys (`held`; absent = no row). The same function serves every store kind, so they agree.
pub fn plan<S: std::hash::BuildHasher>(
    ops: Vec<Op>,
    held: &HashMap<(Entity, String), i64, S>,
) -> Plan {
    struct KeyState {
        /// The version the store held before the batch.
        stored: Option<i64>,
        /// The version after the batch's ops so far.
        version: Option<i64>,
        /// A tombstone in the batch deleted the stored row.
        deleted: bool,
        pending: Option<usize>,
    }
    impl KeyState {
        fn new(stored: Option<i64>) -> Self {
            KeyState {
                stored,
                version: stored,
                deleted: false,
                pending: None,
            }
        }
    }
    let mut out = Plan::default();
    let mut state: HashMap<(Entity, String), KeyState, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(ops.len(), Default::default());
    let mut upserts: Vec<Option<Upsert>> = Vec::new();
    for op in ops {
        match op {
            Op::Delete { entity, key } => {
                let k = (entity, key);
                let st = state
                    .entry(k.clone())
                    .or_insert_with(|| KeyState::new(held.get(&k).copied()));
                if let Some(i) = st.pending.take() {
                    upserts[i] = None;
                }
                st.version = None;
                st.deleted = true;
                out.deletes.push(k);
                out.applied += 1;
            }
            Op::Upsert(mut change) => {
                let k = (change.entity, change.key.clone());
                let st = state
                    .entry(k.clone())
                    .or_insert_with(|| KeyState::new(held.get(&k).copied()));
                if change.relevance == Relevance::IfHeld && st.version.is_none() {
                    out.filtered += 1;
                    continue;
                }
                if let Some(row) = change.history.take() {
                    out.history.push(HistoryInsert {
                        entity: change.entity,
                        newer_than_store: st.stored.is_none_or(|v| row.version > v),
                        row,
                    });
                }
                if st.version.is_some_and(|v| change.version <= v) {
                    out.stale += 1;
                    continue;
                }
                st.version = Some(change.version);
                out.applied += 1;
                match st.pending.and_then(|i| upserts[i].as_mut()) {
                    Some(pending) if change.entity.is_delta() => {
                        pending.version = change.version;
                        for (col, cell) in change.cells {
                            match pending.cells.iter_mut().find(|(c, _)| c.name == col.name) {
                                Some(slot) => slot.1 = cell,
                                None => pending.cells.push((col, cell)),
                            }
                        }
                    }
                    _ => {
                        let u = Upsert {
                            entity: change.entity,
                            key: change.key,
                            version: change.version,
                            cells: change.cells,
                            updates_held_row: st.stored.is_some() && !st.deleted,
                        };
                        match st.pending {
                            Some(i) => upserts[i] = Some(u),
                            None => {
                                st.pending = Some(upserts.len());
                                upserts.push(Some(u));
                            }
                        }
                    }
                }
            }
        }
    }
    out.upserts = upserts.into_iter().flatten().collect();
    out
}

mod layout;
pub use layout::*;

#[cfg(test)]
mod tests;
