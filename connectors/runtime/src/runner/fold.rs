//! Folding the log into a store in memory up to given offsets: the rows a store that holds
//! those offsets must hold. The same loop as a connector (decode, filter, plan, dead letters
//! skipped), with the partitions assigned rather than a group joined, nothing written to Kafka,
//! and a stop once every partition reached its bound. `crate::verify` compares a live store
//! with it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use lienthong_contract::Catalog;
use lienthong_telemetry::Telemetry;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

use crate::config::ConnectorConfig;
use crate::error::ConnectError;
use crate::memory::MemoryStore;
use crate::sink::StoredOffset;
use crate::verify::Progress;

use super::{Folding, Runner, Tp, check_kafka, open_certificates};

/// Fold `config`'s topics into `memory` (under `config.name`'s offsets) until it holds `until`
/// on every partition listed there; partitions not listed are not read. A fold may resume:
/// `memory` already at some offsets is read on from there. A partition whose records below its
/// bound are gone (retention) is folded as far as the log still reaches.
pub async fn fold(
    config: &ConnectorConfig,
    catalog: Arc<Catalog>,
    memory: MemoryStore,
    until: &[StoredOffset],
    progress: &Progress,
    shutdown: &CancellationToken,
) -> Result<(), ConnectError> {
    let mut config = config.clone();
    config.receipts = None;
    config.metrics_listen = None;
    let held = memory.offsets_of(&config.name);
    let lows = low_watermarks(&config, until).await?;
    let mut folding = Folding {
        until: HashMap::new(),
        done: HashSet::new(),
        progress: progress.clone(),
    };
    let mut total = 0;
    for o in until {
        let tp: Tp = (Arc::from(o.topic.as_str()), o.partition);
        let low = lows.get(&tp).copied().unwrap_or(0);
        let at = held
            .iter()
            .find(|h| h.topic == o.topic && h.partition == o.partition)
            .map_or(low, |h| h.next.max(low));
        if at >= o.next {
            folding.done.insert(tp.clone());
        } else {
            total += (o.next - at) as u64;
        }
        folding.until.insert(tp, o.next);
    }
    progress.start("folding the log", total);
    if folding.finished() {
        return Ok(());
    }
    check_kafka(&config).await?;
    let telemetry = Telemetry::new("fold")?;
    let certificates = open_certificates(&config, shutdown).await?;
    let partitions: Vec<(String, i32)> = until
        .iter()
        .map(|o| (o.topic.clone(), o.partition))
        .collect();
    let mut runner = Runner::new(
        config,
        catalog,
        memory,
        &telemetry,
        certificates,
        shutdown.child_token(),
        Some(folding),
    )?;
    runner.position(partitions).await?;
    runner.run().await?;
    match runner.folding.as_ref().is_some_and(Folding::finished) {
        true => Ok(()),
        false => Err(ConnectError::Stopped("fold of the log")),
    }
}

/// The first offset each partition of `until` still holds.
async fn low_watermarks(
    config: &ConnectorConfig,
    until: &[StoredOffset],
) -> Result<HashMap<Tp, i64>, ConnectError> {
    let client = config.kafka.watermarks();
    let partitions: Vec<(String, i32)> = until
        .iter()
        .map(|o| (o.topic.clone(), o.partition))
        .collect();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client.create()?;
        let mut lows = HashMap::new();
        for (topic, partition) in partitions {
            let (low, _) = consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10))?;
            lows.insert((Arc::from(topic.as_str()), partition), low);
        }
        Ok(lows)
    })
    .await
    .map_err(|e| ConnectError::Internal(format!("reading the log's first offsets: {e}")))?
}
