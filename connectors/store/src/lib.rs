//! One place that opens a connector's store. A connector config names its store
//! (`[store] kind = "postgres"` or `"sqlite"`); [`AnyStore::open`] opens that store, and
//! [`AnyStore`] is the one [`Sink`] the runtime's loop (`lienthong_connect::run`), `replay`,
//! the tests and the benchmarks hold, whatever the kind. This is the only place that tells the
//! stores apart.

use std::path::Path;

use lienthong_connect::config::{RetryConfig, StoreConfig};
use lienthong_connect::{
    Applied, Batch, Digest, Fix, MemoryStore, Row, Scan, Sink, Snapshot, StoreError, StoredOffset,
};
use lienthong_sink_postgres::PostgresSink;
use lienthong_sink_sqlite::SqliteSink;
use tokio_util::sync::CancellationToken;

/// A store of any kind, behind one [`Sink`].
pub enum AnyStore {
    /// A department's PostgreSQL database.
    Postgres(Box<PostgresSink>),
    /// A ward's SQLite file.
    Sqlite(SqliteSink),
    /// Tables in memory (tests, folding the log).
    Memory(MemoryStore),
}

impl AnyStore {
    /// Open the store `config` names (creating its tables if they are missing).
    pub async fn open(config: &StoreConfig) -> Result<AnyStore, StoreError> {
        Ok(match config {
            StoreConfig::Postgres { url } => {
                AnyStore::Postgres(Box::new(PostgresSink::open(url).await?))
            }
            StoreConfig::Sqlite { path } => AnyStore::Sqlite(SqliteSink::open(path).await?),
        })
    }

    /// A SQLite store at `path`.
    pub async fn sqlite(path: &Path) -> Result<AnyStore, StoreError> {
        Ok(AnyStore::Sqlite(SqliteSink::open(path).await?))
    }

    /// [`open`](Self::open), waiting with `retry`'s backoff while the store is unreachable
    /// (a transient error); `None` if `shutdown` came first. A permanent error is returned.
    pub async fn open_retrying(
        config: &StoreConfig,
        retry: &RetryConfig,
        shutdown: &CancellationToken,
    ) -> Result<Option<AnyStore>, StoreError> {
        let mut attempt = 0;
        loop {
            match AnyStore::open(config).await {
                Ok(s) => return Ok(Some(s)),
                Err(e) if e.is_transient() => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "store unreachable; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(retry.backoff(attempt)) => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Calls the same method on whichever store this is.
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Postgres($s) => $call,
            AnyStore::Sqlite($s) => $call,
            AnyStore::Memory($s) => $call,
        }
    };
}

impl Sink for AnyStore {
    fn kind(&self) -> &'static str {
        each!(self, s => s.kind())
    }

    async fn offsets(&mut self, connector: &str) -> Result<Vec<StoredOffset>, StoreError> {
        each!(self, s => s.offsets(connector).await)
    }

    async fn apply(&mut self, batch: Batch) -> Result<Applied, StoreError> {
        each!(self, s => s.apply(batch).await)
    }

    async fn rows(&mut self) -> Result<Vec<Row>, StoreError> {
        each!(self, s => s.rows().await)
    }

    async fn digest(&mut self, buckets: usize) -> Result<Digest, StoreError> {
        each!(self, s => s.digest(buckets).await)
    }

    async fn snapshot(&mut self, connector: &str, scan: Scan) -> Result<Snapshot, StoreError> {
        each!(self, s => s.snapshot(connector, scan).await)
    }

    async fn repair(&mut self, connector: &str, fix: &Fix) -> Result<(), StoreError> {
        each!(self, s => s.repair(connector, fix).await)
    }

    async fn forget_offsets(&mut self, connector: &str) -> Result<u64, StoreError> {
        each!(self, s => s.forget_offsets(connector).await)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_config_opens_its_kind_and_a_bad_one_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::Sqlite {
            path: dir.path().join("w.sqlite"),
        };
        let mut store = AnyStore::open(&config).await.unwrap();
        assert_eq!(store.kind(), "sqlite");
        assert!(store.offsets("c").await.unwrap().is_empty());
        assert_eq!(store.forget_offsets("c").await.unwrap(), 0);
        let bad = StoreConfig::Sqlite {
            path: dir.path().join("no/such/dir/w.sqlite"),
        };
        assert!(AnyStore::open(&bad).await.is_err());
        let mut memory = AnyStore::Memory(MemoryStore::new());
        assert_eq!(memory.kind(), "memory");
        assert!(memory.rows().await.unwrap().is_empty());
    }
}
