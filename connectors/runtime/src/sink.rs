//! What a store implements: apply one batch and its offsets in one transaction, say which
//! offsets it holds (and forget them, for a replay), and list its rows for the digest.
//! Everything else is the runtime's.

use std::future::Future;

use crate::digest::{Digest, Row};
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

    /// Forget `connector`'s offsets, so that its next start reads every topic from the
    /// beginning (the version guard makes that replay change nothing); returns how many
    /// partitions' offsets were forgotten.
    fn forget_offsets(
        &mut self,
        connector: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
