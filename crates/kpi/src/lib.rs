//! The KPI engine: the service-chain indicators the city lacks, computed from the same events
//! that keep every agency's store in sync.
//!
//! It sits at the end of the data path beside the sink connectors: it consumes
//! `hcm.case.events` and `hcm.feedback.events`, decodes them with the contract codec (writer
//! schema by id, from the catalog's local ids or a schema registry), folds them into the
//! [`engine::Engine`] state machine — cases received, accepted, completed on time or late, open
//! and overdue in working days ([`calendar`]), supplement pauses, processing time, feedback —
//! and exports the result as Prometheus metrics ([`export`]) at `/metrics`. [`start`] runs it
//! in the shape every component has (`lienthong_telemetry::component`).
//!
//! State is rebuilt on every start by re-reading both topics from the beginning (they are
//! kept forever, `retention_ms = -1` in the catalog); nothing is stored elsewhere, so a restart
//! can never count an event twice. Replayed or duplicated events are recognised by event id.
//! See `docs/kpi.md` for the exact definitions.
//!
//! Beside the indicators it keeps the trace index ([`trace`]): every case's events and, from
//! the connectors' signed apply receipts (`[kpi.receipts]`), which agencies applied each and
//! when, served at `/trace/{id}` for `lienthong trace`, with the sync delay per agency.

pub mod calendar;
pub mod config;
pub mod engine;
pub mod export;
mod receipts;
pub mod reference;
mod service;
pub mod status;
pub mod trace;

pub use crate::config::KpiConfig;
pub use crate::service::start;

use std::path::PathBuf;

/// Everything that can go wrong starting or running the KPI engine.
#[derive(Debug, thiserror::Error)]
pub enum KpiError {
    /// The configuration, calendar or reference list is invalid.
    #[error("KPI engine configuration: {0}")]
    Config(String),
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The metrics address is not one, or cannot be bound.
    #[error("{0}")]
    Listen(#[from] lienthong_telemetry::TelemetryError),
    /// The Kafka client failed.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The schemas could not be loaded.
    #[error("schemas: {0}")]
    Contract(#[from] lienthong_contract::ContractError),
    /// Something that should not happen did (a blocking Kafka call panicked): a bug, not bad
    /// input.
    #[error("internal error: {0}")]
    Internal(String),
    /// The schema registry client could not be built.
    #[error("schema registry: {0}")]
    Registry(#[from] lienthong_registry::RegistryError),
}

impl KpiError {
    /// Whether retrying could help: Kafka and registry trouble, not bad configuration.
    pub fn is_transient(&self) -> bool {
        match self {
            KpiError::Kafka(_) => true,
            KpiError::Registry(e) => e.is_transient(),
            KpiError::Contract(e) => e.is_transient(),
            KpiError::Config(_)
            | KpiError::Io { .. }
            | KpiError::Listen(_)
            | KpiError::Internal(_) => false,
        }
    }
}
