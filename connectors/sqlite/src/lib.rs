//! The SQLite sink: a ward's local store, kept in sync with the log effectively once, and
//! readable while the ward is offline.
//!
//! The runtime (`lienthong-connect`) owns the loop; this crate applies one batch and its
//! offsets in one SQLite transaction (`BEGIN IMMEDIATE`), on a blocking thread: fence the
//! offsets, read the versions held for the batch's keys, fold the batch with
//! [`lienthong_connect::model::plan`] (the same fold as PostgreSQL), add columns newer writer
//! schemas brought (recorded in `lienthong_migrations`), delete, upsert with
//! `ON CONFLICT (id) DO UPDATE … WHERE version < excluded.version`, insert history rows
//! `ON CONFLICT (event_id) DO NOTHING`, commit. The database runs in WAL mode with
//! `synchronous = NORMAL` (a committed batch survives the process being killed; only a power
//! loss may take back the last commits, and their offsets with them) and uses cached prepared
//! statements.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lienthong_connect::model::{
    self, Cell, Dialect, Entity, HISTORY_COLUMNS, HistoryInsert, SqlType, plan, quote as q,
};
use lienthong_connect::sink::{Applied, Batch, Fix, Sink, Snapshot, StoredOffset};
use lienthong_connect::{Digest, DigestBuilder, Row, Scan, StoreError};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, ErrorCode, TransactionBehavior, params_from_iter};

/// Class a SQLite error for the runtime.
pub fn classify(e: &rusqlite::Error) -> StoreError {
    let message = e.to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Transient {
            class: "store_unavailable",
            message,
        },
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::OutOfMemory
            | ErrorCode::FileLockingProtocolFailed,
        ) => StoreError::Transient {
            class: "store_unavailable",
            message,
        },
        Some(ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch | ErrorCode::TooBig) => {
            StoreError::Constraint(message)
        }
        _ => StoreError::Fatal(message),
    }
}

fn err(e: rusqlite::Error) -> StoreError {
    classify(&e)
}

fn sql_type(t: SqlType) -> &'static str {
    match t {
        SqlType::Bool => "BOOLEAN",
        SqlType::Int => "INTEGER",
        SqlType::Double => "REAL",
        SqlType::Text => "TEXT",
    }
}

/// How SQLite spells the tables every store holds ([`model::base_ddl`]).
const DIALECT: Dialect = Dialect {
    sql_type,
    partition_type: "INTEGER",
    applied_at: "TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP",
    table_options: |_, _| (String::new(), String::new()),
};

/// The DDL of the base tables (idempotent).
pub fn base_ddl() -> String {
    model::base_ddl(&DIALECT)
}

struct Inner {
    conn: Connection,
    known: HashMap<String, HashMap<String, SqlType>>,
}

/// A SQLite store. Cloning shares the connection.
#[derive(Clone)]
pub struct SqliteSink {
    path: PathBuf,
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for SqliteSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteSink")
            .field("path", &self.path)
            .finish()
    }
}

fn load_known(conn: &Connection) -> Result<HashMap<String, HashMap<String, SqlType>>, StoreError> {
    let mut known: HashMap<String, HashMap<String, SqlType>> = HashMap::new();
    let mut stmt = conn
        .prepare("SELECT table_name, column_name, column_type FROM lienthong_migrations WHERE table_name <> '*'")
        .map_err(err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(err)?;
    for r in rows {
        let (t, c, ty) = r.map_err(err)?;
        let ty = SqlType::parse(&ty)
            .ok_or_else(|| StoreError::Fatal(format!("unknown column type {ty:?}")))?;
        known.entry(t).or_default().insert(c, ty);
    }
    Ok(known)
}

impl SqliteSink {
    /// Open (or create) the database at `path`, in WAL mode, with the base tables.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        let inner = tokio::task::spawn_blocking(move || -> Result<Inner, StoreError> {
            let conn = Connection::open(&p).map_err(err)?;
            conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(err)?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(err)?;
            // A deleted row is overwritten, not only unlinked: an erased citizen's data must
            // not stay readable in the file's free pages.
            conn.pragma_update(None, "secure_delete", "ON")
                .map_err(err)?;
            conn.set_prepared_statement_cache_capacity(256);
            conn.execute_batch(&format!("BEGIN IMMEDIATE;\n{}COMMIT;", base_ddl()))
                .map_err(err)?;
            let known = load_known(&conn)?;
            Ok(Inner { conn, known })
        })
        .await
        .map_err(|e| StoreError::Fatal(format!("the SQLite thread failed: {e}")))??;
        Ok(SqliteSink {
            path,
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = inner.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Fatal(format!("the SQLite thread failed: {e}")))?
    }
}

fn to_value(c: &Cell) -> Value {
    match c {
        Cell::Null => Value::Null,
        Cell::Bool(b) => Value::Integer(i64::from(*b)),
        Cell::Int(i) => Value::Integer(*i),
        Cell::Double(d) => Value::Real(*d),
        Cell::Text(s) => Value::Text(s.clone()),
    }
}

fn apply_batch(inner: &mut Inner, batch: Batch) -> Result<Applied, StoreError> {
    let mut known = inner.known.clone();
    let tx = inner
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    for o in &batch.offsets {
        let n = match o.expected {
            Some(expected) => tx
                .prepare_cached("UPDATE lienthong_offsets SET next_offset = ?5 WHERE connector = ?1 AND topic = ?2 AND partition = ?3 AND next_offset = ?4")
                .and_then(|mut s| s.execute(rusqlite::params![batch.connector, o.topic, o.partition, expected, o.next])),
            None => tx
                .prepare_cached("INSERT INTO lienthong_offsets (connector, topic, partition, next_offset) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING")
                .and_then(|mut s| s.execute(rusqlite::params![batch.connector, o.topic, o.partition, o.next])),
        }
        .map_err(err)?;
        if n != 1 {
            return Err(StoreError::Fenced {
                topic: o.topic.clone(),
                partition: o.partition,
            });
        }
    }
    let mut held = HashMap::new();
    for op in &batch.ops {
        let (e, k) = op.target();
        if held.contains_key(&(e, k.to_string())) {
            continue;
        }
        let mut s = tx
            .prepare_cached(&format!(
                "SELECT version FROM {} WHERE id = ?1",
                q(e.table())
            ))
            .map_err(err)?;
        let v: Option<i64> = s
            .query_row([k], |r| r.get(0))
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(err)?;
        if let Some(v) = v {
            held.insert((e, k.to_string()), v);
        }
    }
    let p = plan(batch.ops, &held);
    // Columns from newer writer schemas.
    for u in &p.upserts {
        for (c, _) in &u.cells {
            let table = u.entity.table();
            if u.entity.fixed_columns().iter().any(|(n, _)| *n == &*c.name) {
                continue;
            }
            let have = match known.get(table).and_then(|t| t.get(&*c.name)) {
                Some(t) => Some(*t),
                // Another connection (a second instance of the connector) may have added it;
                // this transaction holds the write lock, so the migrations table is current.
                None => tx
                    .query_row(
                        "SELECT column_type FROM lienthong_migrations WHERE table_name = ?1 AND column_name = ?2",
                        rusqlite::params![table, &*c.name],
                        |r| r.get::<_, String>(0),
                    )
                    .map(Some)
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        e => Err(e),
                    })
                    .map_err(err)?
                    .and_then(|ty| SqlType::parse(&ty)),
            };
            match have {
                Some(t) if t == c.ty => {
                    known
                        .entry(table.to_string())
                        .or_default()
                        .insert(c.name.to_string(), t);
                }
                Some(t) => {
                    return Err(StoreError::column_type_changed(table, &c.name, t, c.ty));
                }
                None => {
                    tx.execute_batch(&format!(
                        "ALTER TABLE {} ADD COLUMN {} {}",
                        q(table),
                        q(&c.name),
                        sql_type(c.ty)
                    ))
                    .map_err(err)?;
                    tx.execute(
                        "INSERT INTO lienthong_migrations (table_name, column_name, column_type) VALUES (?1, ?2, ?3)",
                        rusqlite::params![table, &*c.name, c.ty.as_str()],
                    )
                    .map_err(err)?;
                    tracing::info!(table, column = %c.name, ty = c.ty.as_str(), "added a column for a newer writer schema");
                    known
                        .entry(table.to_string())
                        .or_default()
                        .insert(c.name.to_string(), c.ty);
                }
            }
        }
    }
    for (e, k) in &p.deletes {
        tx.prepare_cached(&format!("DELETE FROM {} WHERE id = ?1", q(e.table())))
            .and_then(|mut s| s.execute([k]))
            .map_err(err)?;
    }
    for u in &p.upserts {
        let table = q(u.entity.table());
        let mut names = vec!["id".to_string(), "version".to_string()];
        let mut sets = vec!["version = excluded.version".to_string()];
        for (c, _) in &u.cells {
            names.push(q(&c.name));
            sets.push(format!("{} = excluded.{}", q(&c.name), q(&c.name)));
        }
        let marks: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT (id) DO UPDATE SET {} WHERE {table}.version < excluded.version",
            names.join(", "),
            marks.join(", "),
            sets.join(", ")
        );
        let mut values = Vec::with_capacity(names.len());
        values.push(Value::Text(u.key.clone()));
        values.push(Value::Integer(u.version));
        values.extend(u.cells.iter().map(|(_, c)| to_value(c)));
        tx.prepare_cached(&sql)
            .and_then(|mut s| s.execute(params_from_iter(values)))
            .map_err(err)?;
    }
    for HistoryInsert {
        entity: e, row: h, ..
    } in &p.history
    {
        let Some(table) = e.history_table() else {
            continue;
        };
        tx.prepare_cached(&format!(
            "INSERT INTO {} (event_id, id, version, occurred_at, producer_unit, correlation_id, kind, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (event_id) DO NOTHING",
            q(table)
        ))
        .and_then(|mut s| {
            s.execute(rusqlite::params![
                h.event_id,
                h.id,
                h.version,
                h.occurred_at,
                h.producer_unit,
                h.correlation_id,
                h.kind,
                h.body
            ])
        })
        .map_err(err)?;
    }
    tx.commit().map_err(err)?;
    inner.known = known;
    Ok(Applied {
        applied: p.applied,
        filtered: p.filtered,
        stale: p.stale,
    })
}

/// The offsets `conn`'s file holds for `connector`.
fn offsets_in(conn: &Connection, connector: &str) -> Result<Vec<StoredOffset>, StoreError> {
    let mut s = conn
        .prepare_cached(
            "SELECT topic, partition, next_offset FROM lienthong_offsets WHERE connector = ?1",
        )
        .map_err(err)?;
    let rows = s
        .query_map([connector], |r| {
            Ok(StoredOffset {
                topic: r.get(0)?,
                partition: r.get(1)?,
                next: r.get(2)?,
            })
        })
        .map_err(err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(err)
}

fn read_rows(inner: &mut Inner) -> Result<Vec<Row>, StoreError> {
    let mut out = Vec::new();
    each_row(inner, |row| out.push(row))?;
    Ok(out)
}

/// Every row of every entity and history table, one at a time (a large store is never all in
/// memory).
fn each_row(inner: &mut Inner, mut f: impl FnMut(Row)) -> Result<(), StoreError> {
    // Another connection (the connector, while this one reads) may have added columns since.
    inner.known = load_known(&inner.conn)?;
    for e in Entity::ALL {
        let mut types: HashMap<String, SqlType> = HashMap::new();
        types.insert("version".into(), SqlType::Int);
        for (n, t) in e.fixed_columns() {
            types.insert((*n).to_string(), *t);
        }
        if let Some(k) = inner.known.get(e.table()) {
            types.extend(k.iter().map(|(n, t)| (n.clone(), *t)));
        }
        let mut tables = vec![(e.table(), "id", types)];
        if let Some(h) = e.history_table() {
            let types = HISTORY_COLUMNS
                .iter()
                .map(|(n, t)| ((*n).to_string(), *t))
                .collect();
            tables.push((h, "event_id", types));
        }
        for (table, key, types) in tables {
            let mut stmt = inner
                .conn
                .prepare(&format!("SELECT * FROM {}", q(table)))
                .map_err(err)?;
            let names: Vec<String> = stmt.column_names().map(str::to_string).collect();
            let mut rows = stmt.query([]).map_err(err)?;
            while let Some(r) = rows.next().map_err(err)? {
                let mut cells = BTreeMap::new();
                let mut id = String::new();
                for (i, name) in names.iter().enumerate() {
                    let v = r.get_ref(i).map_err(err)?;
                    let ty = types.get(name).copied().unwrap_or(SqlType::Text);
                    let cell = match (v, ty) {
                        (ValueRef::Null, _) => Cell::Null,
                        (ValueRef::Integer(i), SqlType::Bool) => Cell::Bool(i != 0),
                        (ValueRef::Integer(i), SqlType::Double) => Cell::Double(i as f64),
                        (ValueRef::Integer(i), _) => Cell::Int(i),
                        (ValueRef::Real(d), _) => Cell::Double(d),
                        (ValueRef::Text(t) | ValueRef::Blob(t), _) => {
                            Cell::Text(String::from_utf8_lossy(t).into_owned())
                        }
                    };
                    if name == key {
                        if let Cell::Text(s) = cell {
                            id = s;
                        }
                    } else if cell != Cell::Null {
                        cells.insert(name.clone(), cell);
                    }
                }
                f(Row {
                    table: table.to_string(),
                    key: id,
                    cells,
                });
            }
        }
    }
    Ok(())
}

impl Sink for SqliteSink {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn forget_offsets(&mut self, connector: &str) -> Result<u64, StoreError> {
        let connector = connector.to_string();
        self.blocking(move |inner| {
            inner
                .conn
                .execute(
                    "DELETE FROM lienthong_offsets WHERE connector = ?1",
                    [connector],
                )
                .map(|n| n as u64)
                .map_err(err)
        })
        .await
    }

    async fn offsets(&mut self, connector: &str) -> Result<Vec<StoredOffset>, StoreError> {
        let connector = connector.to_string();
        self.blocking(move |inner| offsets_in(&inner.conn, &connector))
            .await
    }

    async fn repair(&mut self, connector: &str, fix: &Fix) -> Result<(), StoreError> {
        let connector = connector.to_string();
        let fix = fix.clone();
        self.blocking(move |inner| {
            // The write lock: the connector's next batch waits until this commits.
            let tx = inner
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            fix.check(offsets_in(&tx, &connector)?)?;
            for (table, key) in &fix.keys {
                let column = Fix::key_column(table)?;
                tx.execute(
                    &format!("DELETE FROM {} WHERE {} = ?1", q(table), q(column)),
                    [key],
                )
                .map_err(err)?;
            }
            for row in &fix.rows {
                let column = Fix::key_column(&row.table)?;
                let mut names = vec![q(column)];
                let mut values = vec![Value::Text(row.key.clone())];
                for (name, cell) in &row.cells {
                    names.push(q(name));
                    values.push(to_value(cell));
                }
                let placeholders: Vec<String> =
                    (1..=names.len()).map(|i| format!("?{i}")).collect();
                let sql = format!(
                    "INSERT INTO {} ({}) VALUES ({})",
                    q(&row.table),
                    names.join(", "),
                    placeholders.join(", ")
                );
                tx.execute(&sql, params_from_iter(values)).map_err(err)?;
            }
            tx.commit().map_err(err)
        })
        .await
    }

    /// One read transaction: in WAL mode its first read fixes what it sees, whatever the
    /// connector commits meanwhile.
    async fn snapshot(&mut self, connector: &str, mut scan: Scan) -> Result<Snapshot, StoreError> {
        let connector = connector.to_string();
        self.blocking(move |inner| {
            inner.conn.execute_batch("BEGIN DEFERRED").map_err(err)?;
            let read = (|| {
                let offsets = offsets_in(&inner.conn, &connector)?;
                each_row(inner, |row| scan.push(row))?;
                Ok(Snapshot::new(offsets, scan))
            })();
            let end = if read.is_ok() { "COMMIT" } else { "ROLLBACK" };
            inner.conn.execute_batch(end).map_err(err)?;
            read
        })
        .await
    }

    async fn apply(&mut self, batch: Batch) -> Result<Applied, StoreError> {
        self.blocking(move |inner| apply_batch(inner, batch)).await
    }

    async fn rows(&mut self) -> Result<Vec<Row>, StoreError> {
        self.blocking(read_rows).await
    }

    async fn digest(&mut self, buckets: usize) -> Result<Digest, StoreError> {
        self.blocking(move |inner| {
            let mut digest = DigestBuilder::new(buckets);
            each_row(inner, |row| digest.push(&row))?;
            Ok(digest.finish())
        })
        .await
    }
}
