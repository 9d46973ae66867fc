//! What a store implements: apply one batch and its offsets in one transaction, say which
//! offsets it holds (and forget them, for a replay), list its rows for the digest, and read
//! its offsets and rows in one snapshot for a check against the log.
//! Everything else is the runtime's.

use std::future::Future;

use crate::digest::{Digest, Row, Scan};
use crate::error::StoreError;
use crate::model::Op;

/// Where a partition got to: the batch moves it from `expected` to `next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetUpdate {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The next offset the store holds now (`None`: none yet). If the store holds something
    /// else, another instance moved it: the transaction must fail with
    /// [`StoreError::Fenced`].
    pub expected: Option<i64>,
    /// The next offset to read after this batch.
    pub next: i64,
}

/// A batch: changes in log order, and the offsets they take their partitions to.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The connector's name (offsets are kept per connector).
    pub connector: String,
    /// Changes, in log order per partition.
    pub ops: Vec<Op>,
    /// New offsets, one per partition in the batch.
    pub offsets: Vec<OffsetUpdate>,
}

/// What a committed batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Changes that moved a row.
    pub applied: usize,
    /// Changes left out by the filter (cases the store does not hold).
    pub filtered: usize,
    /// Replays and duplicates: older or equal versions, no-ops.
    pub stale: usize,
}

/// A partition's offset as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset to read.
    pub next: i64,
}

impl StoredOffset {
    /// Sort `offsets` by topic and partition (how snapshots and fixes hold them).
    pub fn sort(offsets: &mut [StoredOffset]) {
        offsets.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    }
}

/// A store a connector writes to.
///
/// `apply` folds the ops with [`crate::model::plan`] (given the versions the store holds for
/// their keys), writes the plan and the offsets in **one** transaction, and commits. It must
/// check each [`OffsetUpdate::expected`] inside that transaction. It creates missing columns
/// (recording the migration) in the same transaction.
pub trait Sink: Send + 'static {
    /// `postgres`, `sqlite`, `memory`.
    fn kind(&self) -> &'static str;

    /// The offsets the store holds for `connector`.
    fn offsets(
        &mut self,
        connector: &str,
    ) -> impl Future<Output = Result<Vec<StoredOffset>, StoreError>> + Send;

    /// Apply `batch` and its offsets in one transaction.
    fn apply(&mut self, batch: Batch) -> impl Future<Output = Result<Applied, StoreError>> + Send;

    /// Every row of every entity and history table, for the digest.
    fn rows(&mut self) -> impl Future<Output = Result<Vec<Row>, StoreError>> + Send;

    /// The digest of every row with `buckets` buckets. The default folds [`Sink::rows`]; a
    /// store that may hold many rows streams them into a [`crate::DigestBuilder`] instead, so that
    /// it never holds them all at once.
    fn digest(
        &mut self,
        buckets: usize,
    ) -> impl Future<Output = Result<Digest, StoreError>> + Send {
        async move { Ok(Digest::of(self.rows().await?, buckets)) }
    }

    /// In **one** read snapshot, while a connector may be writing: the offsets the store holds
    /// for `connector`, and every row pushed into `scan` (its digest, and the rows of the
    /// buckets it keeps). The default reads one after the other, which is right only for a
    /// store nobody else writes meanwhile.
    fn snapshot(
        &mut self,
        connector: &str,
        mut scan: Scan,
    ) -> impl Future<Output = Result<Snapshot, StoreError>> + Send {
        async move {
            let offsets = self.offsets(connector).await?;
            for row in self.rows().await? {
                scan.push(row);
            }
            Ok(Snapshot::new(offsets, scan))
        }
    }

    /// Put right the keys `fix` names, in **one** transaction: first check that the store
    /// still holds exactly `fix.expected` for `connector` (else [`StoreError::Fenced`]) and
    /// hold them so that the connector waits (a row lock, the write lock), then remove every
    /// row under `fix.keys` and insert `fix.rows` (the log's rows for those keys) as they are.
    fn repair(
        &mut self,
        connector: &str,
        fix: &Fix,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Forget `connector`'s offsets, so that its next start reads every topic from the
    /// beginning (the version guard makes that replay change nothing); returns how many
    /// partitions' offsets were forgotten.
    fn forget_offsets(
        &mut self,
        connector: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// What a store held at one moment: see [`Sink::snapshot`].
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The connector's offsets.
    pub offsets: Vec<StoredOffset>,
    /// The digest of every row.
    pub digest: Digest,
    /// The rows of the buckets asked for.
    pub rows: Vec<Row>,
}

impl Snapshot {
    /// The snapshot of a finished scan at `offsets`.
    pub fn new(mut offsets: Vec<StoredOffset>, scan: Scan) -> Snapshot {
        StoredOffset::sort(&mut offsets);
        let (digest, rows) = scan.finish();
        Snapshot {
            offsets,
            digest,
            rows,
        }
    }
}

/// What `repair` writes: see [`Sink::repair`].
#[derive(Debug, Clone)]
pub struct Fix {
    /// The offsets the store must still hold (sorted by topic and partition).
    pub expected: Vec<StoredOffset>,
    /// `(table, key)` of every row to put right.
    pub keys: Vec<(String, String)>,
    /// The log's rows for those keys (a key the log does not hold has none: it is removed).
    pub rows: Vec<Row>,
}

impl Fix {
    /// [`StoreError::Fenced`] unless `held` is exactly [`Fix::expected`].
    pub fn check(&self, mut held: Vec<StoredOffset>) -> Result<(), StoreError> {
        StoredOffset::sort(&mut held);
        if held == self.expected {
            return Ok(());
        }
        let moved = held
            .iter()
            .find(|h| !self.expected.contains(h))
            .or_else(|| self.expected.iter().find(|e| !held.contains(e)));
        Err(match moved {
            Some(o) => StoreError::Fenced {
                topic: o.topic.clone(),
                partition: o.partition,
            },
            None => StoreError::Fenced {
                topic: String::new(),
                partition: -1,
            },
        })
    }

    /// The key column of `table` (`id`, or `event_id` in a history table); an unknown table is
    /// refused.
    pub fn key_column(table: &str) -> Result<&'static str, StoreError> {
        crate::model::Entity::ALL
            .iter()
            .find_map(|e| {
                if e.table() == table {
                    Some("id")
                } else if e.history_table() == Some(table) {
                    Some("event_id")
                } else {
                    None
                }
            })
            .ok_or_else(|| {
                StoreError::Fatal(format!("repair: {table} is not a table of the store"))
            })
    }
}
