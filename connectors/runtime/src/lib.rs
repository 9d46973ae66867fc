//! The sink runtime: how every lienthong sink connector keeps an agency's own store in sync
//! with the log, effectively once.
//!
//! ```text
//! Kafka topics ──► runner: consume (one group per connector) ─► decode (contract codec, writer
//!                  schema by id) ─► filter ─► batch by size and time ─► Sink::apply(batch +
//!                  offsets) in ONE store transaction ─► commit to Kafka (lag visibility only)
//!                        │ permanent per-record error ──► dead-letter topic (with headers)
//!                        └ transient store error ──► pause, back off, retry the same batch
//! ```
//!
//! The [`runner`] owns the loop; a store implements only [`sink::Sink`]: apply a batch and its
//! offsets in one transaction, say which offsets it holds, list its rows. The [`model`] says
//! what tables a store holds and folds a batch into what to write ([`model::plan`]), the same
//! for every store kind; [`digest`] says how to fingerprint what a store holds;
//! [`memory::MemoryStore`] is a store in memory with the same semantics; [`verify`](mod@verify) compares a
//! live store with the log folded in memory up to the store's own offsets ([`runner::fold`]),
//! and repairs only the rows that differ. `docs/connectors.md` is the user's guide.

pub mod config;
pub mod digest;
pub mod error;
pub mod memory;
pub mod model;
pub mod runner;
pub mod sink;
pub mod verify;

pub use config::ConnectorConfig;
pub use digest::{Digest, DigestBuilder, Row, Scan};
pub use error::{ConnectError, StoreError};
pub use memory::MemoryStore;
pub use runner::{fold, run, start};
pub use sink::{Applied, Batch, Fix, OffsetUpdate, Sink, Snapshot, StoredOffset};
pub use verify::{Progress, Verification, repair, verify};
