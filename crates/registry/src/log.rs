//! Where the registry's records live: a compacted Kafka topic shared by every instance
//! ([`lienthong_bus::state_log`]), or memory (tests and the embedded demo). Both feed the same
//! [`State::apply`](crate::state::State::apply).

use lienthong_bus::KafkaConfig;
use lienthong_bus::state_log::LogState;

use crate::error::RegistryError;
use crate::state::State;

/// What the log is called in errors and logs.
pub(crate) const LOG: &str = "schema log";

/// How to reach the Kafka log.
#[derive(Debug, Clone)]
pub struct KafkaLogConfig {
    /// The cluster, with the process's `[kafka]` options (security included).
    pub kafka: KafkaConfig,
    /// Topic name.
    pub topic: String,
    /// Replication factor when the topic is created (1 for a single broker).
    pub replication: i32,
}

impl LogState for State {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        State::apply(self, key, value)
    }
}

/// A log failure, as the registry answers it (`50001`).
pub(crate) fn store(e: lienthong_bus::BusError) -> RegistryError {
    RegistryError::Store(e.to_string())
}
