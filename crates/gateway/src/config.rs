//! The gateway's configuration (the `[gateway]` section of `lienthong.toml`).

use lienthong_registry::AgencyCredential;
use serde::Deserialize;

/// Everything the gateway can be configured with. Every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address to listen on.
    pub listen: String,
    /// Agencies and the SHA-256 of their tokens (`lienthong_registry::auth::hash_token`).
    /// Empty: the registry's list (`[registry] agencies`) is used.
    pub agencies: Vec<AgencyCredential>,
    /// Largest request body, in bytes (413 above).
    pub max_body_bytes: usize,
    /// Most events in one batch (413 above).
    pub max_batch_events: usize,
    /// Most problems reported for one request (the rest are counted, not listed).
    pub max_problems: usize,
    /// The producer's `transactional.id`. Must be unique per gateway instance: a second
    /// instance with the same id fences the first.
    pub transactional_id: String,
    /// How many transactional producers commit in turn (pipelining: while one commits, the
    /// next gathers). With more than one, their ids are `<transactional_id>-0`, `-1`, ….
    pub producers: usize,
    /// How long the committer waits to gather concurrent requests into one transaction.
    pub group_commit_ms: u64,
    /// Most records in one transaction.
    pub max_transaction_records: usize,
    /// Bound on every Kafka wait (delivery, commit, abort, init): past it the request is 503.
    pub kafka_timeout_ms: u64,
    /// When Kafka goes away after a commit was sent but before it was confirmed, how long to
    /// wait for it to come back and say whether the transaction committed (the request waits);
    /// past it the answer is 503 `outcome_unknown`.
    pub outcome_resolve_ms: u64,
    /// `Retry-After` of a 503.
    pub retry_after_secs: u64,
    /// How long an event id is remembered for deduplication.
    pub idempotency_window_secs: u64,
    /// Most event ids remembered (the oldest are forgotten first).
    pub idempotency_max_entries: usize,
    /// How often Kafka's reachability is probed (for `/readyz` and fast 503s).
    pub health_interval_ms: u64,
    /// On shutdown, how long in-flight work may take to finish.
    pub drain_timeout_ms: u64,
    /// The gateway's own Kafka connection under `lienthong up` (its principal on a secured
    /// cluster); unset, the process's `[kafka]`.
    pub kafka: Option<lienthong_bus::KafkaConfig>,
    /// Sign every record (docs/signatures.md) with the key of the agency that posted it,
    /// from this directory of `<AGENCY>.key` and `<AGENCY>.crt` (`lienthong cert issue
    /// --out`); an agency without a key here is refused (403). Unset: records are not signed.
    pub signing_keys_dir: Option<std::path::PathBuf>,
    /// Check the signature of every signed document in a case event before publishing it
    /// (docs/signatures.md): against the certificate log of the process's `[signing]` section
    /// under `lienthong up`. A signature that does not verify is refused (400, naming the
    /// event and the document). Default: off (connectors with `[signatures]` still check).
    pub check_document_signatures: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "127.0.0.1:8080".into(),
            agencies: Vec::new(),
            max_body_bytes: 4 * 1024 * 1024,
            max_batch_events: 1000,
            max_problems: 100,
            transactional_id: "lienthong-gateway-1".into(),
            producers: 4,
            group_commit_ms: 2,
            max_transaction_records: 20_000,
            kafka_timeout_ms: 5_000,
            outcome_resolve_ms: 60_000,
            retry_after_secs: 2,
            idempotency_window_secs: 24 * 3600,
            idempotency_max_entries: 2_000_000,
            health_interval_ms: 500,
            drain_timeout_ms: 10_000,
            signing_keys_dir: None,
            check_document_signatures: false,
            kafka: None,
        }
    }
}

/// Most event ids the index may be configured to remember: each takes about 150–250 bytes, so
/// this is some 10 GB, more than a gateway's machine should give it.
pub const MAX_IDEMPOTENCY_ENTRIES: usize = 50_000_000;

impl GatewayConfig {
    /// What in this configuration cannot work, before anything starts.
    pub fn check(&self) -> Result<(), String> {
        if self.transactional_id.trim().is_empty() {
            return Err("transactional_id is empty".into());
        }
        if !(1..=MAX_IDEMPOTENCY_ENTRIES).contains(&self.idempotency_max_entries) {
            return Err(format!(
                "idempotency_max_entries is {}: it must be between 1 and {MAX_IDEMPOTENCY_ENTRIES} \
                 (the index sets aside its eviction queue at start, 48 bytes an id)",
                self.idempotency_max_entries
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_pass_and_what_cannot_work_is_named() {
        assert_eq!(GatewayConfig::default().check(), Ok(()));
        let blank = GatewayConfig {
            transactional_id: " ".into(),
            ..GatewayConfig::default()
        };
        assert_eq!(blank.check(), Err("transactional_id is empty".into()));
        for n in [0, MAX_IDEMPOTENCY_ENTRIES + 1, usize::MAX] {
            let c = GatewayConfig {
                idempotency_max_entries: n,
                ..GatewayConfig::default()
            };
            let e = c.check().unwrap_err();
            assert!(
                e.starts_with(&format!("idempotency_max_entries is {n}:")),
                "{e}"
            );
        }
        let most = GatewayConfig {
            idempotency_max_entries: MAX_IDEMPOTENCY_ENTRIES,
            ..GatewayConfig::default()
        };
        assert_eq!(most.check(), Ok(()));
    }
}
