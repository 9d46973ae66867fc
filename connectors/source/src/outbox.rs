//! The agency's side: the outbox table its application writes in its own transactions, read in
//! id order by the one source instance that holds the outbox's advisory lock, and emptied as
//! the gateway accepts its rows.
//!
//! The documented table (docs/sources.md), created when missing with `create_tables`:
//!
//! ```sql
//! CREATE TABLE lienthong_outbox (
//!     id         bigserial   PRIMARY KEY,
//!     topic      text        NOT NULL,   -- a catalog topic, e.g. hcm.case.events
//!     payload    json        NOT NULL,   -- the event in the gateway's JSON form
//!     created_at timestamptz NOT NULL DEFAULT clock_timestamp()
//! );
//! ```
//!
//! A statement-level trigger notifies the source's channel when an insert commits, so a row is
//! published within milliseconds without the source polling hard; polling at
//! `poll_interval_ms` stays as the fallback (a lost connection, a table without the trigger).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};
use tokio_util::sync::CancellationToken;

use crate::config::{DatabaseConfig, table_name};
use crate::error::SourceError;

/// One row of the outbox, as read.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Its id: the order rows are published in.
    pub id: i64,
    /// The catalog topic it names (None if the column is NULL).
    pub topic: Option<String>,
    /// The event's JSON text (None if the column is NULL).
    pub payload: Option<String>,
    /// How old it was when read, by the database's clock.
    pub age: Duration,
}

/// An open connection to the agency's database, and what the source does there.
pub struct Outbox {
    client: Client,
    outbox: String,
    dead: String,
    lock_key: String,
    create_tables: bool,
    channel: String,
    wake: Arc<Notify>,
    closed: CancellationToken,
    statements: Option<Statements>,
}

struct Statements {
    fetch: Statement,
    delete: Statement,
    dead_letter: Statement,
    dead_letter_gone: Statement,
}

impl Outbox {
    /// Connect (within 10 s unless the URL says otherwise). The connection is not yet the
    /// outbox's publisher: see [`Outbox::try_lead`].
    pub async fn connect(config: &DatabaseConfig) -> Result<Outbox, SourceError> {
        let mut pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| SourceError::Config(format!("database.url: {e}")))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(10));
        }
        pg.keepalives_idle(Duration::from_secs(30));
        if pg.get_application_name().is_none() {
            pg.application_name("lienthong source");
        }
        let (client, mut connection) = pg.connect(NoTls).await?;
        let wake = Arc::new(Notify::new());
        let closed = CancellationToken::new();
        let (w, c) = (Arc::clone(&wake), closed.clone());
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => w.notify_one(),
                    Ok(_) => {}
                    Err(e) => {
                        let error = crate::error::describe(&e);
                        tracing::warn!(%error, "the database connection ended");
                        break;
                    }
                }
            }
            c.cancel();
            w.notify_one();
        });
        let outbox = table_name(&config.outbox_table).map_err(SourceError::Config)?;
        let dead = table_name(&config.dead_letter_table).map_err(SourceError::Config)?;
        Ok(Outbox {
            client,
            lock_key: format!("lienthong.source:{outbox}"),
            outbox,
            dead,
            create_tables: config.create_tables,
            channel: config.channel.clone(),
            wake,
            closed,
            statements: None,
        })
    }

    /// Take the outbox's advisory lock, held for as long as this connection lives: one
    /// instance publishes, in id order, and any other stands by. On success the tables are
    /// checked (and created, with `create_tables`) and the channel listened to.
    pub async fn try_lead(&mut self) -> Result<bool, SourceError> {
        let led: bool = self
            .client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                &[&self.lock_key],
            )
            .await?
            .try_get(0)?;
        if !led {
            return Ok(false);
        }
        if self.create_tables {
            self.create().await?;
        }
        self.statements = Some(self.prepare().await?);
        self.client
            .batch_execute(&format!("LISTEN \"{}\"", self.channel))
            .await?;
        Ok(true)
    }

    async fn create(&self) -> Result<(), SourceError> {
        let (outbox, dead, channel) = (&self.outbox, &self.dead, &self.channel);
        let trigger = format!("\"{channel}_notify\"");
        self.client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {outbox} (
                     id bigserial PRIMARY KEY,
                     topic text NOT NULL,
                     payload json NOT NULL,
                     created_at timestamptz NOT NULL DEFAULT clock_timestamp());
                 CREATE OR REPLACE FUNCTION lienthong_outbox_notify() RETURNS trigger
                     LANGUAGE plpgsql AS $$
                     BEGIN PERFORM pg_notify(TG_ARGV[0], ''); RETURN NULL; END $$;
                 CREATE OR REPLACE TRIGGER {trigger} AFTER INSERT ON {outbox}
                     FOR EACH STATEMENT EXECUTE FUNCTION lienthong_outbox_notify('{channel}');
                 {DEAD_DDL}",
                DEAD_DDL = dead_ddl(dead),
            ))
            .await
            .map_err(|e| refused_ddl(e, "creating the outbox tables"))
    }

    async fn prepare(&self) -> Result<Statements, SourceError> {
        let (outbox, dead) = (&self.outbox, &self.dead);
        let fetch = self
            .client
            .prepare(&format!(
                "SELECT id::int8, topic::text, payload::text,
                        extract(epoch FROM clock_timestamp() - created_at)::float8
                 FROM {outbox} ORDER BY id LIMIT $1"
            ))
            .await
            .map_err(|e| {
                refused_ddl(
                    e,
                    &format!(
                        "reading the outbox {outbox}: it needs the columns id (bigint), topic \
                         (text), payload (json, jsonb or text) and created_at (timestamptz)"
                    ),
                )
            })?;
        let delete = self
            .client
            .prepare(&format!("DELETE FROM {outbox} WHERE id = ANY($1::int8[])"))
            .await?;
        let dead_letter = self
            .client
            .prepare(&format!(
                "WITH moved AS (DELETE FROM {outbox} WHERE id = $1 RETURNING id, topic, payload, created_at)
                 INSERT INTO {dead} (outbox_id, topic, payload, created_at, status, error, reason)
                 SELECT id, topic::text, payload::text, created_at, $2, $3, $4 FROM moved"
            ))
            .await
            .map_err(|e| {
                refused_ddl(
                    e,
                    &format!("writing the dead-letter table {dead} (docs/sources.md has its DDL)"),
                )
            })?;
        // A row gone before it could be moved (deleted by the agency meanwhile).
        let dead_letter_gone = self
            .client
            .prepare(&format!("SELECT 1 FROM {outbox} WHERE id = $1"))
            .await?;
        Ok(Statements {
            fetch,
            delete,
            dead_letter,
            dead_letter_gone,
        })
    }

    fn statements(&self) -> Result<&Statements, SourceError> {
        self.statements
            .as_ref()
            .ok_or_else(|| SourceError::Database("the outbox is not held by this source".into()))
    }

    /// Up to `limit` rows, oldest id first.
    pub async fn fetch(&self, limit: usize) -> Result<Vec<OutboxRow>, SourceError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client
            .query(&self.statements()?.fetch, &[&limit])
            .await?;
        rows.iter()
            .map(|r| {
                let age: Option<f64> = r.try_get(3)?;
                Ok(OutboxRow {
                    id: r.try_get(0)?,
                    topic: r.try_get(1)?,
                    payload: r.try_get(2)?,
                    age: Duration::try_from_secs_f64(age.unwrap_or(0.0).max(0.0))
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Remove rows the gateway accepted.
    pub async fn published(&self, ids: &[i64]) -> Result<u64, SourceError> {
        Ok(self
            .client
            .execute(&self.statements()?.delete, &[&ids])
            .await?)
    }

    /// Move a refused row to the dead-letter table with the refusal, in one statement.
    /// Returns false if the row was no longer in the outbox.
    pub async fn dead_letter(
        &self,
        id: i64,
        status: u16,
        error: &str,
        reason: &str,
    ) -> Result<bool, SourceError> {
        let s = self.statements()?;
        let moved = self
            .client
            .execute(&s.dead_letter, &[&id, &i32::from(status), &error, &reason])
            .await?;
        if moved == 0
            && !self
                .client
                .query(&s.dead_letter_gone, &[&id])
                .await?
                .is_empty()
        {
            return Err(SourceError::Database(format!(
                "outbox row {id} was not moved to the dead-letter table"
            )));
        }
        Ok(moved == 1)
    }

    /// Woken when an insert into the outbox commits (or the connection ends).
    pub fn wake(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Cancelled when the connection has ended.
    pub fn closed(&self) -> CancellationToken {
        self.closed.clone()
    }
}

/// The dead-letter table: every refused row, with what refused it.
fn dead_ddl(dead: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {dead} (
             dead_id bigserial PRIMARY KEY,
             outbox_id bigint NOT NULL,
             topic text,
             payload text,
             created_at timestamptz,
             dead_at timestamptz NOT NULL DEFAULT clock_timestamp(),
             status integer NOT NULL,
             error text NOT NULL,
             reason text NOT NULL);"
    )
}

/// A refusal while setting up is the agency's to fix: say what the source was doing.
fn refused_ddl(e: tokio_postgres::Error, doing: &str) -> SourceError {
    match SourceError::from(e) {
        SourceError::DatabaseRefused(m) => SourceError::DatabaseRefused(format!("{doing}: {m}")),
        other => other,
    }
}
