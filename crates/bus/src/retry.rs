//! How every component backs off from a transient error (a store, the gateway or the registry
//! not answering): one policy, configured as `[retry]` wherever a component has one.

use std::time::Duration;

use serde::Deserialize;

/// Backoff for transient errors: doubling from `initial_ms` up to `max_ms`, with ±50% jitter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First wait.
    pub initial_ms: u64,
    /// Longest wait.
    pub max_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_ms: 200,
            max_ms: 10_000,
        }
    }
}

impl RetryConfig {
    /// The wait before attempt `attempt` (1-based), jittered.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .initial_ms
            .max(1)
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
            .min(self.max_ms.max(1));
        let jitter = fastrand::u64(0..=base);
        Duration::from_millis(base / 2 + jitter / 2)
    }
}
