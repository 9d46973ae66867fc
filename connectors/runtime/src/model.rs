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

use apache_avro::Schema;
use apache_avro::schema::{Name, NamesRef, ResolvedSchema, UnionSchema};
use apache_avro::types::Value;
use lienthong_contract::physical::Physical;
use serde::Deserialize;
use sha2::Digest as _;

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

/// How one writer schema's records become changes.
#[derive(Debug)]
pub struct Layout {
    entity: Entity,
    schema: Schema,
    /// Every body column this writer can produce, in schema order.
    pub columns: Vec<Column>,
}

/// Snake case of a record name: `CaseSubmitted` → `case_submitted`.
pub fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// A column name from a field path, cut to [`MAX_IDENT`] bytes with a hash suffix if longer.
pub fn column_name(path: &[&str]) -> String {
    let full = path.join("__");
    if full.len() <= MAX_IDENT {
        return full;
    }
    let hash = hex::encode(&sha2::Sha256::digest(full.as_bytes())[..4]);
    let mut cut = MAX_IDENT - 9;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash}", &full[..cut])
}

/// Why a record could not become a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

struct Walker<'a> {
    names: NamesRef<'a>,
}

impl<'a> Walker<'a> {
    fn deref(&self, s: &'a Schema) -> &'a Schema {
        match s {
            Schema::Ref { name } => self.names.get(name).copied().unwrap_or(s),
            _ => s,
        }
    }

    /// Emit the columns of `schema` at `path`, with values from `value` (None: all NULL).
    fn walk(
        &self,
        schema: &'a Schema,
        value: Option<Value>,
        path: &mut Vec<String>,
        out: &mut Vec<(Column, Cell)>,
        depth: usize,
    ) -> Result<(), Invalid> {
        if depth > 32 {
            return Err(Invalid("record nests too deeply".into()));
        }
        let schema = self.deref(schema);
        let col = |path: &[String], ty| Column {
            name: Arc::from(column_name(
                &path.iter().map(String::as_str).collect::<Vec<_>>(),
            )),
            ty,
        };
        match schema {
            Schema::Record(r) => {
                let present = value.is_some();
                let mut fields: HashMap<String, Value> = match value {
                    Some(Value::Record(f)) => f.into_iter().collect(),
                    None => HashMap::new(),
                    Some(other) => {
                        return Err(Invalid(format!("expected a record, found {other:?}")));
                    }
                };
                for f in &r.fields {
                    path.push(f.name.clone());
                    let v = if present {
                        Some(fields.remove(&f.name).ok_or_else(|| {
                            Invalid(format!("field {} missing from the record", f.name))
                        })?)
                    } else {
                        None
                    };
                    self.walk(&f.schema, v, path, out, depth + 1)?;
                    path.pop();
                }
                Ok(())
            }
            Schema::Union(u) if nullable_single(u).is_some() => {
                let inner = nullable_single(u).unwrap_or(schema);
                let v = match value {
                    None | Some(Value::Null) => None,
                    Some(Value::Union(_, b)) if *b == Value::Null => None,
                    Some(Value::Union(_, b)) => Some(*b),
                    Some(other) => Some(other),
                };
                self.walk(inner, v, path, out, depth + 1)
            }
            Schema::Null => Ok(()),
            _ => {
                let ty = leaf_type(schema);
                let cell = match value {
                    None => Cell::Null,
                    Some(v) => leaf_cell(v, ty)?,
                };
                out.push((col(path, ty), cell));
                Ok(())
            }
        }
    }
}

/// `Some(T)` for `["null", T]` / `[T, "null"]`.
fn nullable_single(u: &UnionSchema) -> Option<&Schema> {
    let v = u.variants();
    match v {
        [Schema::Null, t] | [t, Schema::Null] if !matches!(t, Schema::Null) => Some(t),
        _ => None,
    }
}

fn leaf_type(schema: &Schema) -> SqlType {
    match Physical::of(schema) {
        Some(Physical::Boolean) => SqlType::Bool,
        Some(Physical::Int | Physical::Long) => SqlType::Int,
        Some(Physical::Float | Physical::Double) => SqlType::Double,
        _ => SqlType::Text,
    }
}

fn leaf_cell(v: Value, ty: SqlType) -> Result<Cell, Invalid> {
    let v = match v {
        Value::Union(_, b) => *b,
        v => v,
    };
    Ok(match (ty, v) {
        (_, Value::Null) => Cell::Null,
        (SqlType::Bool, Value::Boolean(b)) => Cell::Bool(b),
        (SqlType::Int, Value::Int(i) | Value::Date(i) | Value::TimeMillis(i)) => {
            Cell::Int(i64::from(i))
        }
        (
            SqlType::Int,
            Value::Long(i)
            | Value::TimeMicros(i)
            | Value::TimestampMillis(i)
            | Value::TimestampMicros(i)
            | Value::TimestampNanos(i)
            | Value::LocalTimestampMillis(i)
            | Value::LocalTimestampMicros(i)
            | Value::LocalTimestampNanos(i),
        ) => Cell::Int(i),
        (SqlType::Double, Value::Float(f)) => Cell::Double(f64::from(f)),
        (SqlType::Double, Value::Double(f)) => Cell::Double(f),
        (SqlType::Text, Value::String(s)) => Cell::Text(s),
        (SqlType::Text, Value::Enum(_, s)) => Cell::Text(s),
        (SqlType::Text, Value::Uuid(u)) => Cell::Text(u.to_string()),
        (SqlType::Text, Value::Bytes(b) | Value::Fixed(_, b)) => Cell::Text(hex::encode(b)),
        (SqlType::Text, v @ (Value::Array(_) | Value::Map(_) | Value::Record(_))) => {
            Cell::Text(canonical_json(&v).to_string())
        }
        (SqlType::Text, v) => Cell::Text(canonical_json(&v).to_string()),
        (ty, v) => {
            return Err(Invalid(format!(
                "a {v:?} value does not fit a {} column",
                ty.as_str()
            )));
        }
    })
}

/// An Avro value as JSON, deterministically: records keep schema field order, unions show
/// their value, enums their symbol, bytes lower-case hex, non-finite floats as strings.
pub fn canonical_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => J::from(*i),
        Value::Long(i)
        | Value::TimeMicros(i)
        | Value::TimestampMillis(i)
        | Value::TimestampMicros(i)
        | Value::TimestampNanos(i)
        | Value::LocalTimestampMillis(i)
        | Value::LocalTimestampMicros(i)
        | Value::LocalTimestampNanos(i) => J::from(*i),
        Value::Float(f) => float_json(f64::from(*f)),
        Value::Double(f) => float_json(*f),
        Value::String(s) | Value::Enum(_, s) => J::String(s.clone()),
        Value::Bytes(b) | Value::Fixed(_, b) => J::String(hex::encode(b)),
        Value::Union(_, b) => canonical_json(b),
        Value::Array(items) => J::Array(items.iter().map(canonical_json).collect()),
        Value::Map(m) => {
            let mut entries: Vec<_> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            J::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), canonical_json(v)))
                    .collect(),
            )
        }
        Value::Record(fields) => J::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), canonical_json(v)))
                .collect(),
        ),
        Value::Uuid(u) => J::String(u.to_string()),
        other => J::String(format!("{other:?}")),
    }
}

fn float_json(f: f64) -> serde_json::Value {
    serde_json::Number::from_f64(f)
        .map(serde_json::Value::Number)
        .unwrap_or_else(|| serde_json::Value::String(f.to_string()))
}

fn names_of(schema: &Schema) -> Result<NamesRef<'_>, Invalid> {
    ResolvedSchema::try_from(schema)
        .map(|r| r.get_names().clone())
        .map_err(|e| Invalid(e.to_string()))
}

/// The full name of a top-level record schema.
pub fn record_name(schema: &Schema) -> Option<&Name> {
    match schema {
        Schema::Record(r) => Some(&r.name),
        _ => None,
    }
}

impl Layout {
    /// The layout of writer `schema` for `entity`. Fails when the schema is not a record with
    /// an `envelope` field, or (for deltas) has no union field.
    pub fn new(entity: Entity, schema: &Schema) -> Result<Layout, Invalid> {
        let Schema::Record(r) = schema else {
            return Err(Invalid("the value schema is not a record".into()));
        };
        if !r.fields.iter().any(|f| f.name == "envelope") {
            return Err(Invalid("the value schema has no envelope field".into()));
        }
        let names = names_of(schema)?;
        let walker = Walker { names };
        let mut cells = Vec::new();
        for f in r.fields.iter().filter(|f| f.name != "envelope") {
            let fs = walker.deref(&f.schema);
            match (entity.is_delta(), fs) {
                (true, Schema::Union(u)) => {
                    for branch in u.variants() {
                        let b = walker.deref(branch);
                        let Some(name) = record_name(b) else {
                            return Err(Invalid(format!(
                                "union {} has a branch that is not a record",
                                f.name
                            )));
                        };
                        let mut path = vec![snake(&name.name)];
                        walker.walk(b, None, &mut path, &mut cells, 0)?;
                    }
                }
                (true, _) => {
                    return Err(Invalid(format!(
                        "field {} of a delta entity is not a union of steps",
                        f.name
                    )));
                }
                (false, Schema::Record(_)) => {
                    walker.walk(fs, None, &mut Vec::new(), &mut cells, 0)?
                }
                (false, _) => walker.walk(fs, None, &mut vec![f.name.clone()], &mut cells, 0)?,
            }
        }
        let mut columns: Vec<Column> = Vec::with_capacity(cells.len());
        for (c, _) in cells {
            if let Some(prev) = columns.iter().find(|p| p.name == c.name) {
                if prev.ty != c.ty {
                    return Err(Invalid(format!(
                        "two fields map to column {} with different types",
                        c.name
                    )));
                }
            } else {
                columns.push(c);
            }
        }
        Ok(Layout {
            entity,
            schema: schema.clone(),
            columns,
        })
    }

    /// The entity.
    pub fn entity(&self) -> Entity {
        self.entity
    }

    /// Turn a decoded value (decoded with this layout's writer schema) into a change.
    pub fn change(
        &self,
        value: Value,
        relevance_units: Option<&[String]>,
    ) -> Result<Change, Invalid> {
        let Value::Record(fields) = value else {
            return Err(Invalid("the value is not a record".into()));
        };
        let Schema::Record(r) = &self.schema else {
            return Err(Invalid("the value schema is not a record".into()));
        };
        let walker = Walker {
            names: names_of(&self.schema)?,
        };
        let mut envelope = None;
        let mut cells: Vec<(Column, Cell)> = Vec::with_capacity(self.columns.len() + 5);
        let mut history_kind = None;
        let mut history_body = None;
        let mut body_cells = Vec::with_capacity(self.columns.len());
        for (name, v) in fields {
            if name == "envelope" {
                envelope = Some(v);
                continue;
            }
            let Some(f) = r.fields.iter().find(|f| f.name == name) else {
                return Err(Invalid(format!("unexpected field {name}")));
            };
            let fs = walker.deref(&f.schema);
            match (self.entity.is_delta(), fs, v) {
                (true, Schema::Union(u), Value::Union(i, inner)) => {
                    let b = u
                        .variants()
                        .get(i as usize)
                        .map(|b| walker.deref(b))
                        .ok_or_else(|| Invalid(format!("union branch {i} out of range")))?;
                    let name = record_name(b)
                        .ok_or_else(|| Invalid("a union branch is not a record".into()))?;
                    let kind = snake(&name.name);
                    history_body = Some(canonical_json(&inner).to_string());
                    walker.walk(b, Some(*inner), &mut vec![kind.clone()], &mut body_cells, 0)?;
                    history_kind = Some(kind);
                }
                (true, _, _) => return Err(Invalid(format!("field {name} is not a union value"))),
                (false, Schema::Record(_), v) => {
                    walker.walk(fs, Some(v), &mut Vec::new(), &mut body_cells, 0)?
                }
                (false, _, v) => walker.walk(fs, Some(v), &mut vec![name], &mut body_cells, 0)?,
            }
        }
        let Some(Value::Record(env)) = envelope else {
            return Err(Invalid("the record has no envelope".into()));
        };
        let mut event_id = None;
        let mut occurred_at = None;
        let mut producer_unit = None;
        let mut aggregate_id = None;
        let mut version = None;
        let mut correlation_id = None;
        for (k, v) in env {
            let v = match v {
                Value::Union(_, b) => *b,
                v => v,
            };
            match (k.as_str(), v) {
                ("event_id", Value::String(s)) => event_id = Some(s),
                ("event_id", Value::Uuid(u)) => event_id = Some(u.to_string()),
                ("occurred_at", Value::Long(t) | Value::TimestampMillis(t)) => {
                    occurred_at = Some(t)
                }
                ("producer_unit", Value::String(s)) => producer_unit = Some(s),
                ("aggregate_id", Value::String(s)) => aggregate_id = Some(s),
                ("aggregate_version", Value::Long(n)) => version = Some(n),
                ("aggregate_version", Value::Int(n)) => version = Some(i64::from(n)),
                ("correlation_id", Value::String(s)) => correlation_id = Some(s),
                ("correlation_id", Value::Uuid(u)) => correlation_id = Some(u.to_string()),
                _ => {}
            }
        }
        let missing = |f: &str| Invalid(format!("envelope field {f} missing or mistyped"));
        let event_id = event_id.ok_or_else(|| missing("event_id"))?;
        let occurred_at = occurred_at.ok_or_else(|| missing("occurred_at"))?;
        let producer_unit = producer_unit.ok_or_else(|| missing("producer_unit"))?;
        let key = aggregate_id.ok_or_else(|| missing("aggregate_id"))?;
        let version = version.ok_or_else(|| missing("aggregate_version"))?;
        let correlation_id = correlation_id.ok_or_else(|| missing("correlation_id"))?;
        if key.is_empty() {
            return Err(Invalid("the aggregate id is empty".into()));
        }
        let relevance = match relevance_units {
            None => Relevance::Always,
            Some(units) => {
                let fields = self.entity.unit_fields();
                let matched = body_cells.iter().any(|(c, v)| {
                    let leaf = c.name.rsplit("__").next().unwrap_or(&c.name);
                    fields.contains(&leaf)
                        && matches!(v, Cell::Text(u) if units.iter().any(|w| w == u))
                });
                if matched {
                    Relevance::Always
                } else {
                    Relevance::IfHeld
                }
            }
        };
        let fixed = |name: &'static str, ty| Column {
            name: Arc::from(name),
            ty,
        };
        cells.push((
            fixed("event_id", SqlType::Text),
            Cell::Text(event_id.clone()),
        ));
        cells.push((fixed("occurred_at", SqlType::Int), Cell::Int(occurred_at)));
        cells.push((
            fixed("producer_unit", SqlType::Text),
            Cell::Text(producer_unit.clone()),
        ));
        cells.push((
            fixed("correlation_id", SqlType::Text),
            Cell::Text(correlation_id.clone()),
        ));
        let history = match (history_kind, history_body) {
            (Some(kind), Some(body)) => {
                cells.push((fixed("status", SqlType::Text), Cell::Text(kind.clone())));
                Some(HistoryRow {
                    event_id,
                    id: key.clone(),
                    version,
                    occurred_at,
                    producer_unit,
                    correlation_id,
                    kind,
                    body,
                })
            }
            _ if self.entity.is_delta() => {
                return Err(Invalid("a delta record without a step".into()));
            }
            _ => None,
        };
        cells.extend(body_cells);
        Ok(Change {
            entity: self.entity,
            key,
            version,
            cells,
            history,
            relevance,
        })
    }
}

/// Decoded case-event changes for benchmarks and tests: `n` events of cases with 2 to 7 steps
/// each (round-robin, so a case's steps are spread over the stream), decoded by the same path
/// the runner takes (Avro bytes → value → [`Change`]). Case ids start with `prefix`; event ids
/// derive from the prefix and the event's number, so two prefixes never share an event id (a
/// store's history would take the second as a duplicate).
pub fn sample_case_ops(n: usize, prefix: &str) -> Result<Vec<Op>, Invalid> {
    use lienthong_contract::events::CaseEvent;
    use lienthong_contract::samples;
    let catalog = lienthong_contract::Catalog::load(lienthong_contract::repo_schemas_dir())
        .map_err(|e| Invalid(e.to_string()))?;
    let codec =
        lienthong_contract::Codec::from_catalog(&catalog).map_err(|e| Invalid(e.to_string()))?;
    let id = catalog
        .local_id("hcm.case.events")
        .map_err(|e| Invalid(e.to_string()))?;
    let spec = catalog
        .topic("hcm.case.events")
        .map_err(|e| Invalid(e.to_string()))?;
    let layout = Layout::new(Entity::Cases, &spec.schema)?;
    let lifecycle = samples::case_lifecycle();
    let cases = n / 4 + 1;
    let mut out = Vec::with_capacity(n);
    // FNV-1a of the prefix, kept clear of the event numbers' bits.
    let salt = prefix.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    }) << 24;
    let mut seed = 0u64;
    'rounds: for (step, template) in lifecycle.iter().take(7).enumerate() {
        for c in 0..cases {
            if step >= 2 + c % 6 {
                continue;
            }
            if out.len() == n {
                break 'rounds;
            }
            seed += 1;
            let mut envelope =
                samples::envelope(seed, "26734", &format!("{prefix}-{c:07}"), step as i64 + 1);
            envelope.event_id = samples::uuid_like(seed ^ salt);
            let event = CaseEvent {
                envelope,
                event: template.event.clone(),
            };
            let bytes = codec
                .encode_to_vec(id, &event)
                .map_err(|e| Invalid(e.to_string()))?;
            let (_, value) = codec
                .decode_value(&bytes, None)
                .map_err(|e| Invalid(e.to_string()))?;
            out.push(Op::Upsert(layout.change(value, None)?));
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn change(key: &str, version: i64, cols: &[(&str, i64)], rel: Relevance) -> Op {
        Op::Upsert(Change {
            entity: Entity::Cases,
            key: key.into(),
            version,
            cells: cols
                .iter()
                .map(|(n, v)| {
                    (
                        Column {
                            name: Arc::from(*n),
                            ty: SqlType::Int,
                        },
                        Cell::Int(*v),
                    )
                })
                .collect(),
            history: Some(HistoryRow {
                event_id: format!("{key}-{version}"),
                id: key.into(),
                version,
                occurred_at: 0,
                producer_unit: "u".into(),
                correlation_id: "c".into(),
                kind: "k".into(),
                body: "{}".into(),
            }),
            relevance: rel,
        })
    }

    #[test]
    fn a_batch_merges_deltas_and_skips_what_the_store_has() {
        let held: HashMap<_, _> = [((Entity::Cases, "a".to_string()), 2)].into();
        let ops = vec![
            change("a", 1, &[("x", 1)], Relevance::Always),
            change("a", 2, &[("y", 2)], Relevance::Always),
            change("a", 3, &[("z", 3)], Relevance::Always),
            change("b", 1, &[("x", 10)], Relevance::IfHeld),
            change("c", 1, &[("x", 5)], Relevance::Always),
            change("c", 2, &[("x", 6), ("y", 7)], Relevance::IfHeld),
        ];
        let p = plan(ops, &held);
        assert_eq!((p.applied, p.stale, p.filtered), (3, 2, 1));
        assert_eq!(p.upserts.len(), 2);
        let a = &p.upserts[0];
        assert_eq!((a.key.as_str(), a.version, a.cells.len()), ("a", 3, 1));
        assert!(a.updates_held_row, "a's row is held at version 2");
        let c = &p.upserts[1];
        assert_eq!(c.version, 2);
        assert!(!c.updates_held_row, "no row of c is held");
        assert_eq!(
            c.cells.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
            vec![Cell::Int(6), Cell::Int(7)]
        );
        assert_eq!(p.history.len(), 5, "filtered events have no history");
        // a's version 3 is newer than the row the store held; c had no row, so none of its
        // events can be stored yet.
        let newer: Vec<_> = p
            .history
            .iter()
            .map(|h| (h.row.id.as_str(), h.row.version, h.newer_than_store))
            .collect();
        assert_eq!(
            newer,
            [
                ("a", 1, false),
                ("a", 2, false),
                ("a", 3, true),
                ("c", 1, true),
                ("c", 2, true)
            ]
        );
    }

    #[test]
    fn an_event_at_the_held_version_is_not_newer_than_the_store() {
        let held: HashMap<_, _> = [
            ((Entity::Cases, "a".to_string()), 2),
            ((Entity::Cases, "b".to_string()), 1),
        ]
        .into();
        let ops = vec![
            // The held version again (a duplicate or a conflicting event): stale, looked up.
            change("a", 2, &[("x", 1)], Relevance::Always),
            // A filtered store takes b's event, newer than its held row, in place.
            change("b", 2, &[("x", 2)], Relevance::IfHeld),
            // c is not held: filtered out, no history.
            change("c", 1, &[("x", 3)], Relevance::IfHeld),
        ];
        let p = plan(ops, &held);
        assert_eq!((p.applied, p.stale, p.filtered), (1, 1, 1));
        let newer: Vec<_> = p
            .history
            .iter()
            .map(|h| (h.row.id.as_str(), h.newer_than_store))
            .collect();
        assert_eq!(newer, [("a", false), ("b", true)]);
        assert_eq!(p.upserts.len(), 1);
        assert!(p.upserts[0].updates_held_row);
    }

    #[test]
    fn a_delete_drops_pending_rows_and_lets_later_versions_in() {
        let held: HashMap<_, _> = [((Entity::Cases, "a".to_string()), 5)].into();
        let ops = vec![
            change("a", 6, &[("x", 1)], Relevance::Always),
            Op::Delete {
                entity: Entity::Cases,
                key: "a".into(),
            },
            change("a", 1, &[("x", 2)], Relevance::Always),
        ];
        let p = plan(ops, &held);
        assert_eq!(p.deletes.len(), 1);
        assert_eq!(p.upserts.len(), 1);
        assert_eq!(p.upserts[0].version, 1);
        assert!(
            !p.upserts[0].updates_held_row,
            "the tombstone deletes the held row before the upsert"
        );
        // Newer than the stored row is judged against the store before the batch: version 1,
        // after the delete, may be an old event the store has in its history.
        let newer: Vec<_> = p.history.iter().map(|h| h.newer_than_store).collect();
        assert_eq!(newer, [true, false]);
    }

    #[test]
    fn names_are_snake_and_bounded() {
        assert_eq!(snake("CaseSubmitted"), "case_submitted");
        let long = column_name(&["a".repeat(40).as_str(), "b".repeat(40).as_str()]);
        assert_eq!(long.len(), MAX_IDENT);
        assert_eq!(
            long,
            column_name(&["a".repeat(40).as_str(), "b".repeat(40).as_str()])
        );
    }
}
