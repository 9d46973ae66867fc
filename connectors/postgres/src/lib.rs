//! The PostgreSQL sink: a department's own store, kept in sync with the log effectively once.
//!
//! The runtime (`lienthong-connect`) owns the loop; this crate applies one batch and its
//! offsets in one PostgreSQL transaction:
//!
//! 1. **fence** — each partition's offset row moves from the offset the runtime expects to the
//!    new one (`UPDATE … WHERE next_offset = expected`); if another instance moved it, the
//!    transaction is refused;
//! 2. read the versions held for the batch's keys, and fold the batch with
//!    [`lienthong_connect::model::plan`];
//! 3. group the merged rows by table, by whether the store holds them, and by the columns
//!    they set: one statement per group;
//! 4. add any column a newer writer schema brought (`ALTER TABLE … ADD COLUMN`, recorded in
//!    `lienthong_migrations`);
//! 5. delete tombstoned keys, then write:
//!    - rows the store holds with `UPDATE … FROM (SELECT unnest($1::text[]), …) WHERE
//!      t.version < u.version`, checked to have found every row (the rows it missed are
//!      upserted: `INSERT … ON CONFLICT (id) DO UPDATE … WHERE version < EXCLUDED.version`);
//!    - the history rows of events not newer than the row the store held (replays,
//!      duplicates) with a lookup: `WHERE NOT EXISTS`, each id once a batch;
//!    - then, after a savepoint, the writes **predicted new**, without a check of what the
//!      store holds: the rows it held no row of by a plain `INSERT … SELECT unnest(…)`, and the
//!      history rows of events newer than the held row, or of aggregates with no row, by
//!      binary `COPY` (see [`lienthong_connect::model::HistoryInsert::newer_than_store`]).
//!      Should a key be stored after all (a replay of a tombstoned aggregate, another writer),
//!      the sink rolls back to the savepoint and writes the same rows again as upserts and
//!      with the lookup ([`Fallbacks::predicted_new`]);
//! 6. commit.
//!
//! The statements of steps 1 and 2 are sent together, and so are the writes of step 5 (after
//! the deletes, one statement a table; the `COPY` after them): tokio-postgres pipelines them on
//! the connection, so a batch costs a few round trips, not one per partition or table.
//! Current-state tables leave room on each page for their rows' later versions (`fillfactor`
//! 50 for cases and feedback, whose rows grow at every step; 70 for the others): an update
//! then stays on its page (a HOT update, no new index entry). The connection plans every run
//! of a statement for its own arrays (`plan_cache_mode = force_custom_plan`), so that a plan
//! chosen while the tables were small is not kept as they grow.
//!
//! Errors are classed for the runtime: serialization failures (40001), deadlocks (40P01), a
//! history key taken by another writer during the batch (23505 on a history table), a lost or
//! refused connection and server shutdowns are transient; integrity (class 23) and data
//! (class 22) errors are per-record constraint violations; anything else stops the connector.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use lienthong_connect::model::{self, Cell, Dialect, Entity, SqlType, quote as q};
use lienthong_connect::sink::{Applied, Batch, Fix, Sink, Snapshot, StoredOffset};
use lienthong_connect::{Digest, DigestBuilder, Row, Scan, StoreError};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

/// How long one batch transaction may take before it counts as a lost connection.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// Class a PostgreSQL error for the runtime.
pub fn classify(e: &tokio_postgres::Error) -> StoreError {
    let message = e.to_string();
    let detail = match e.as_db_error() {
        Some(db) => format!("{message}: {}", db.message()),
        None => message,
    };
    match e.code() {
        None => StoreError::Transient {
            class: "store_unavailable",
            message: detail,
        },
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE => StoreError::Transient {
            class: "serialization",
            message: detail,
        },
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED => StoreError::Transient {
            class: "deadlock",
            message: detail,
        },
        // The history insert skips event ids already stored, so a history key taken can only
        // mean that a writer outside this connector's fence stored the same event while the
        // batch ran: tried again, the batch skips it. (Not a per-record error: a batch of one
        // record would go to the dead-letter topic.)
        Some(_) if is_history_key_taken(e) => StoreError::Transient {
            class: "serialization",
            message: format!("{detail} (another writer stored the same event during the batch)"),
        },
        Some(c) => {
            let code = c.code();
            if code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code == "55P03"
                || code == "40003"
            {
                StoreError::Transient {
                    class: "store_unavailable",
                    message: detail,
                }
            } else if code == "22P04" {
                // bad_copy_file_format: the sink's own COPY data is wrong, not a record.
                StoreError::Fatal(detail)
            } else if code.starts_with("23") || code.starts_with("22") {
                StoreError::Constraint(detail)
            } else {
                StoreError::Fatal(detail)
            }
        }
    }
}

/// The table of a unique violation: the key is stored there already.
fn key_taken_in(e: &tokio_postgres::Error) -> Option<&str> {
    if e.code() != Some(&SqlState::UNIQUE_VIOLATION) {
        return None;
    }
    e.as_db_error().and_then(|db| db.table())
}

/// A unique violation on a table of the sink's (current state or history).
fn is_key_taken(e: &tokio_postgres::Error) -> bool {
    key_taken_in(e).is_some_and(|t| {
        Entity::ALL
            .iter()
            .any(|entity| entity.table() == t || entity.history_table() == Some(t))
    })
}

/// A unique violation on a history table: its event id is stored already.
fn is_history_key_taken(e: &tokio_postgres::Error) -> bool {
    key_taken_in(e).is_some_and(|t| {
        Entity::ALL
            .iter()
            .any(|entity| entity.history_table() == Some(t))
    })
}

fn sql_type(t: SqlType) -> &'static str {
    match t {
        SqlType::Bool => "BOOLEAN",
        SqlType::Int => "BIGINT",
        SqlType::Double => "DOUBLE PRECISION",
        SqlType::Text => "TEXT",
    }
}

fn array_type(t: SqlType) -> &'static str {
    match t {
        SqlType::Bool => "bool[]",
        SqlType::Int => "int8[]",
        SqlType::Double => "float8[]",
        SqlType::Text => "text[]",
    }
}

/// How PostgreSQL spells the tables every store holds ([`model::base_ddl`]).
const DIALECT: Dialect = Dialect {
    sql_type,
    partition_type: "INT",
    applied_at: "TIMESTAMPTZ NOT NULL DEFAULT now()",
    table_options,
};

/// How full PostgreSQL fills a new page of `entity`'s current-state table, in percent: the rest
/// is room for the row's later versions, so that an update can stay on its page (a HOT update:
/// no new index entry, no tuple lock record, the old version pruned in place). A delta entity's
/// row (a case) grows at every step with that step's columns, from a few hundred bytes to about
/// 850: at 70 only 63 % of the bench's updates stayed on their page, and the moved rows left the
/// table a third larger than at 50, where all of them did (27 MB against 20 MB for its 12,501
/// cases; the sink ×1.14 events/s). A snapshot entity's row is replaced whole and keeps its size.
fn fillfactor(entity: Entity) -> u8 {
    if entity.is_delta() { 50 } else { 70 }
}

/// A current-state table's fill factor. A table an earlier version made keeps its own fill
/// factor until told, and is told only if it differs: `SET` takes a lock that lets reads and
/// writes through but waits for a running VACUUM (and it applies to new pages only).
fn table_options(table: &str, entity: Entity) -> (String, String) {
    let ff = fillfactor(entity);
    (
        format!(" WITH (fillfactor = {ff})"),
        format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = '{table}'::regclass \
             AND reloptions @> ARRAY['fillfactor={ff}']) THEN \
             ALTER TABLE {table} SET (fillfactor = {ff}); END IF; END $$;\n"
        ),
    )
}

/// The DDL of the base tables (idempotent).
pub fn base_ddl() -> String {
    model::base_ddl(&DIALECT)
}

/// A PostgreSQL store.
pub struct PostgresSink {
    config: tokio_postgres::Config,
    client: Option<Client>,
    statements: HashMap<String, Statement>,
    /// Body columns per table, as recorded in `lienthong_migrations`.
    known: HashMap<String, HashMap<String, SqlType>>,
    fallbacks: Fallbacks,
}

/// How often a batch took one of the sink's slower, safe paths, since the sink opened (each is
/// also logged). Both mean that a writer outside the connector changed the store, or that a
/// tombstone was replayed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fallbacks {
    /// The writes predicted new (rows the store held no row of, by plain insert; history rows
    /// of events newer than the store's row or of aggregates it held no row of, by `COPY`) met
    /// a key already stored, and went in again, from the savepoint before them, as an upsert
    /// and with a lookup of each event id. Counts batch attempts: a batch that took this path
    /// and then failed (and was tried again) counts each time.
    pub predicted_new: u64,
    /// An update of rows the store held did not find them all, and the rows were upserted.
    pub updates: u64,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("connected", &self.client.is_some())
            .finish()
    }
}

async fn connect(config: &tokio_postgres::Config) -> Result<Client, StoreError> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| classify(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed");
        }
    });
    // Plan every execution for its own arrays. A statement prepared once and run for every
    // batch would otherwise switch to a generic plan after five runs, chosen for the table's
    // size at that moment: for a young store, a scan of the whole (small) table, then kept as
    // the table grows.
    client
        .batch_execute("SET plan_cache_mode = force_custom_plan")
        .await
        .map_err(|e| classify(&e))?;
    Ok(client)
}

impl PostgresSink {
    /// Connect to `url`, create the base tables if missing, and load the applied migrations.
    /// A store that cannot be reached is a transient error: the caller may retry.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Fatal(format!("invalid PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.keepalives_idle(Duration::from_secs(30));
        let mut sink = PostgresSink {
            config,
            client: None,
            statements: HashMap::new(),
            known: HashMap::new(),
            fallbacks: Fallbacks::default(),
        };
        sink.migrate().await?;
        Ok(sink)
    }

    async fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.statements.clear();
            self.client = Some(connect(&self.config).await?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Fatal("no client".into()))
    }

    async fn migrate(&mut self) -> Result<(), StoreError> {
        let client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| classify(&e))?;
        // Two instances opening at once must not race on CREATE TABLE.
        tx.batch_execute(&format!(
            "SELECT pg_advisory_xact_lock(7411250706);\n{}",
            base_ddl()
        ))
        .await
        .map_err(|e| classify(&e))?;
        let rows = tx
            .query(
                "SELECT table_name, column_name, column_type FROM lienthong_migrations WHERE table_name <> '*'",
                &[],
            )
            .await
            .map_err(|e| classify(&e))?;
        tx.commit().await.map_err(|e| classify(&e))?;
        self.known.clear();
        for r in rows {
            let (t, c, ty): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            let ty = SqlType::parse(&ty)
                .ok_or_else(|| StoreError::Fatal(format!("unknown column type {ty:?}")))?;
            self.known.entry(t).or_default().insert(c, ty);
        }
        Ok(())
    }

    /// How often a batch took a slower, safe path since the sink opened.
    pub fn fallbacks(&self) -> Fallbacks {
        self.fallbacks
    }

    fn drop_client_on(&mut self, e: &StoreError) {
        if e.is_transient() {
            self.client = None;
            self.statements.clear();
        }
    }

    async fn apply_inner(&mut self, batch: Batch) -> Result<Applied, StoreError> {
        let mut known = std::mem::take(&mut self.known);
        let mut statements = std::mem::take(&mut self.statements);
        let mut fallbacks = self.fallbacks;
        let result = async {
            let client = self.client().await?;
            let tx = client.transaction().await.map_err(|e| classify(&e))?;
            let applied = apply_in(&tx, batch, &mut known, &mut statements, &mut fallbacks).await?;
            tx.commit().await.map_err(|e| classify(&e))?;
            Ok(applied)
        }
        .await;
        self.fallbacks = fallbacks;
        match &result {
            Ok(_) => {
                self.known = known;
                self.statements = statements;
            }
            Err(_) => {
                // Columns added in a rolled-back transaction are not there: the next batch
                // asks `lienthong_migrations` again for every column it uses.
                self.statements = statements;
                self.known.clear();
            }
        }
        result
    }
}

mod apply;
use apply::*;

impl Sink for PostgresSink {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn forget_offsets(&mut self, connector: &str) -> Result<u64, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM lienthong_offsets WHERE connector = $1",
                &[&connector],
            )
            .await
            .map_err(|e| classify(&e))
    }

    async fn offsets(&mut self, connector: &str) -> Result<Vec<StoredOffset>, StoreError> {
        let result = async { offsets_on(self.client().await?, connector).await }.await;
        if let Err(e) = &result {
            self.drop_client_on(e);
        }
        result
    }

    async fn apply(&mut self, batch: Batch) -> Result<Applied, StoreError> {
        let result = match tokio::time::timeout(APPLY_TIMEOUT, self.apply_inner(batch)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Transient {
                class: "store_unavailable",
                message: format!("the batch transaction took longer than {APPLY_TIMEOUT:?}"),
            }),
        };
        if let Err(e) = &result {
            self.drop_client_on(e);
        }
        result
    }

    async fn rows(&mut self) -> Result<Vec<Row>, StoreError> {
        let mut out = Vec::new();
        self.each_row(|row| out.push(row)).await?;
        Ok(out)
    }

    async fn digest(&mut self, buckets: usize) -> Result<Digest, StoreError> {
        let mut digest = DigestBuilder::new(buckets);
        self.each_row(|row| digest.push(&row)).await?;
        Ok(digest.finish())
    }

    async fn repair(&mut self, connector: &str, fix: &Fix) -> Result<(), StoreError> {
        let result = async { repair_on(self.client().await?, connector, fix).await }.await;
        if let Err(e) = &result {
            self.drop_client_on(e);
        }
        result
    }

    /// One `REPEATABLE READ, READ ONLY` transaction: the offsets and every row as of its
    /// first statement, whatever the connector commits meanwhile.
    async fn snapshot(&mut self, connector: &str, mut scan: Scan) -> Result<Snapshot, StoreError> {
        let result = async {
            let client = self.client().await?;
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .await
                .map_err(|e| classify(&e))?;
            let read = async {
                let offsets = offsets_on(client, connector).await?;
                each_row_on(client, |row| scan.push(row)).await?;
                Ok::<_, StoreError>(Snapshot::new(offsets, scan))
            }
            .await;
            let end = if read.is_ok() { "COMMIT" } else { "ROLLBACK" };
            client.batch_execute(end).await.map_err(|e| classify(&e))?;
            read
        }
        .await;
        if let Err(e) = &result {
            self.drop_client_on(e);
        }
        result
    }
}

/// A cell as a statement parameter.
fn param(cell: &Cell) -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
    match cell {
        Cell::Null => Box::new(None::<String>),
        Cell::Bool(b) => Box::new(*b),
        Cell::Int(i) => Box::new(*i),
        Cell::Double(d) => Box::new(*d),
        Cell::Text(t) => Box::new(t.clone()),
    }
}

/// [`Sink::repair`]'s transaction on `client`.
async fn repair_on(client: &mut Client, connector: &str, fix: &Fix) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(|e| classify(&e))?;
    // The connector's next batch updates these rows: it waits until this commits, and is
    // then fenced if this moved them (it does not).
    let held = tx
        .query(
            "SELECT topic, partition, next_offset FROM lienthong_offsets WHERE connector = $1 FOR UPDATE",
            &[&connector],
        )
        .await
        .map_err(|e| classify(&e))?;
    fix.check(
        held.iter()
            .map(|r| StoredOffset {
                topic: r.get(0),
                partition: r.get(1),
                next: r.get(2),
            })
            .collect(),
    )?;
    for (table, key) in &fix.keys {
        let column = Fix::key_column(table)?;
        tx.execute(
            &format!("DELETE FROM {} WHERE {} = $1", q(table), q(column)),
            &[key],
        )
        .await
        .map_err(|e| classify(&e))?;
    }
    for row in &fix.rows {
        let column = Fix::key_column(&row.table)?;
        let mut names = vec![q(column)];
        let mut params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> =
            vec![Box::new(row.key.clone())];
        for (name, cell) in &row.cells {
            names.push(q(name));
            params.push(param(cell));
        }
        let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            q(&row.table),
            names.join(", "),
            placeholders.join(", ")
        );
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        tx.execute(&sql, &refs).await.map_err(|e| classify(&e))?;
    }
    tx.commit().await.map_err(|e| classify(&e))
}

/// The offsets `client`'s database holds for `connector`.
async fn offsets_on(client: &Client, connector: &str) -> Result<Vec<StoredOffset>, StoreError> {
    let rows = client
        .query(
            "SELECT topic, partition, next_offset FROM lienthong_offsets WHERE connector = $1",
            &[&connector],
        )
        .await
        .map_err(|e| classify(&e))?;
    Ok(rows
        .iter()
        .map(|r| StoredOffset {
            topic: r.get(0),
            partition: r.get(1),
            next: r.get(2),
        })
        .collect())
}

impl PostgresSink {
    /// Every row of every entity and history table, one at a time, as the server sends them
    /// (a million rows are never all in memory).
    async fn each_row(&mut self, f: impl FnMut(Row) + Send) -> Result<(), StoreError> {
        each_row_on(self.client().await?, f).await
    }
}

/// Every row of every entity and history table of `client`'s database, one at a time.
async fn each_row_on(client: &Client, mut f: impl FnMut(Row) + Send) -> Result<(), StoreError> {
    for e in Entity::ALL {
        let tables = [(e.table(), "id")]
            .into_iter()
            .chain(e.history_table().map(|h| (h, "event_id")));
        for (table, key) in tables {
            let rows = client
                .query_raw(&format!("SELECT * FROM {}", q(table)), NO_PARAMS)
                .await
                .map_err(|e| classify(&e))?;
            let mut rows = std::pin::pin!(rows);
            while let Some(r) = rows.next().await {
                let r = r.map_err(|e| classify(&e))?;
                let mut cells = std::collections::BTreeMap::new();
                let mut id = String::new();
                for (i, c) in r.columns().iter().enumerate() {
                    let cell = cell_of(&r, i)?;
                    if c.name() == key {
                        if let Cell::Text(s) = cell {
                            id = s;
                        }
                    } else if cell != Cell::Null {
                        cells.insert(c.name().to_string(), cell);
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

/// No statement parameters.
const NO_PARAMS: [&(dyn tokio_postgres::types::ToSql + Sync); 0] = [];

#[cfg(test)]
mod tests;
