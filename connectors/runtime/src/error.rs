//! The one error type of the sink runtime, and the errors a store reports to it.

/// What a store's transaction can fail with; the runtime decides what to do by the variant.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store is unreachable, the connection was lost, a serialization failure or a
    /// deadlock: retry the same batch later (consumption paused meanwhile).
    #[error("transient store error ({class}): {message}")]
    Transient {
        /// `store_unavailable`, `serialization` or `deadlock` (a metric label).
        class: &'static str,
        /// What the store said.
        message: String,
    },
    /// A record of the batch violates a constraint or holds a value the store refuses: the
    /// runtime bisects the batch to find it and dead-letters only that record.
    #[error("constraint violated: {0}")]
    Constraint(String),
    /// Another instance moved this partition's offsets: the batch is abandoned and the
    /// partition re-read from the store's offset.
    #[error("offsets of {topic}[{partition}] were moved by another instance")]
    Fenced {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// A newer writer schema does not fit the tables (a column changed type): stop.
    #[error("incompatible schema change: {0}")]
    Incompatible(String),
    /// Anything else that retrying cannot fix (bad URL, permissions, a bug): stop.
    #[error("store error: {0}")]
    Fatal(String),
}

impl StoreError {
    /// A writer schema sends `column` of `table` as `sent`, but the store holds it as `held`:
    /// the same refusal, worded the same, in every store.
    pub fn column_type_changed(
        table: &str,
        column: &str,
        held: crate::model::SqlType,
        sent: crate::model::SqlType,
    ) -> StoreError {
        StoreError::Incompatible(format!(
            "column {table}.{column} is {} but a writer schema now sends {}",
            held.as_str(),
            sent.as_str()
        ))
    }

    /// Whether retrying the same batch may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient { .. })
    }
}

/// Everything a connector can stop with.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The configuration is invalid (the only variant that means bad input: exit code 2).
    #[error("config: {0}")]
    Config(String),
    /// The contract (catalog, schemas) could not be loaded.
    #[error("contract: {0}")]
    Contract(#[from] lienthong_contract::ContractError),
    /// Kafka refused something that retrying will not fix.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The store failed permanently.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A writer schema cannot be read as the connector's entity: stop rather than write
    /// wrong data.
    #[error("incompatible schema {id} on {topic}: {message}")]
    IncompatibleSchema {
        /// Topic.
        topic: String,
        /// Writer schema id.
        id: u32,
        /// Why.
        message: String,
    },
    /// Kafka did not answer when the connector started.
    #[error("Kafka at {bootstrap} did not answer within {seconds} s: {source}")]
    KafkaUnreachable {
        /// The bootstrap servers tried.
        bootstrap: String,
        /// How long the connector waited.
        seconds: u64,
        /// The client's last error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The broker refuses this connector's principal something it needs (to read a topic, to
    /// join its consumer group): a missing grant, which waiting will not bring.
    #[error(
        "the broker refuses connector {connector}: {source}; grant it (lienthong acl sync, from the catalog's readers and the agency's namespace) or fix the connector's principal, topics or name (its consumer group)"
    )]
    Denied {
        /// The connector.
        connector: String,
        /// The broker's refusal.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A configured topic does not exist on the cluster.
    #[error("topic {topic} does not exist on Kafka at {bootstrap}")]
    UnknownTopic {
        /// The topic.
        topic: String,
        /// The bootstrap servers asked.
        bootstrap: String,
    },
    /// Shutdown came before a fold, a verification or a repair finished.
    #[error("stopped before the {0} finished")]
    Stopped(&'static str),
    /// The store's offsets went back while it was being checked (a replay started): nothing
    /// can be concluded; check again.
    #[error("the store moved back while it was checked ({0}); run the check again")]
    StoreMovedBack(String),
    /// Something that should not happen did (a task panicked, a record of a topic the
    /// connector does not consume): a bug, not bad input. The connector stops.
    #[error("internal error: {0}")]
    Internal(String),
    /// Metrics could not be set up, or `metrics_listen` is not an address or cannot be bound.
    #[error("{0}")]
    Telemetry(#[from] lienthong_telemetry::TelemetryError),
}

impl ConnectError {
    /// Whether running again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Store(e) => e.is_transient(),
            ConnectError::Kafka(_)
            | ConnectError::KafkaUnreachable { .. }
            | ConnectError::StoreMovedBack(_) => true,
            _ => false,
        }
    }

    /// A mistake in the connector's configuration (exit 2), not an outage or a bug.
    pub fn is_config(&self) -> bool {
        match self {
            ConnectError::Config(_) => true,
            ConnectError::Telemetry(e) => e.is_config(),
            _ => false,
        }
    }
}
