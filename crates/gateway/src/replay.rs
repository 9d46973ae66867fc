//! Fill the idempotency index from the log: at start from `now - window`, then by tailing.
//!
//! Each catalog topic is read with `read_committed` (aborted transactions are not events). A
//! record's event id is the first field of its envelope, which is the first field of every value
//! schema (the catalog enforces it), so the id is the first Avro string of the body whatever the
//! schema version — no schema lookup is needed, even for records other publishers wrote. A
//! record whose id is not a UUID's text is skipped: the gateway accepts no other ids, so no
//! request could ever be its retry. The index is *ready* once every partition has been read up
//! to where it stood at start.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::idem::{EventKey, Index, content_hash, now_ms};
use lienthong_bus::KafkaConfig;

/// How many records the replay takes at once when that many are ready.
const BATCH: usize = 512;

/// Reaching a partition's end is expected here, not an error worth logging as one.
struct Quiet;

impl rdkafka::ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        // librdkafka reports a partition's end either way, depending on the broker.
        let end_of_partition = matches!(
            error,
            KafkaError::PartitionEOF(_)
                | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        );
        if !end_of_partition {
            tracing::error!(%error, reason, "Kafka client error (idempotency replay)");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

/// The event id at the start of an Avro body (the envelope's first field), if any.
pub fn leading_event_id(value: &[u8]) -> Option<&str> {
    let (_, body) = lienthong_contract::codec::split_frame(value).ok()?;
    // The length, then the UTF-8 bytes.
    let mut rest = body;
    let len = usize::try_from(lienthong_contract::write::read_long(&mut rest)?).ok()?;
    std::str::from_utf8(rest.get(..len)?).ok()
}

/// Read `topics` into `index` from `now - window` on; `ready` is set once each partition is
/// caught up to where it stood. Runs until `shutdown`; retries (with a pause) if Kafka fails.
pub fn spawn(
    kafka: KafkaConfig,
    topics: Vec<String>,
    index: Arc<Index>,
    window: Duration,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let done: Arc<std::sync::Mutex<HashMap<String, bool>>> = Arc::default();
        let mut tasks = Vec::new();
        for topic in topics {
            done.lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(topic.clone(), false);
            let (kafka, index, ready, done, shutdown) = (
                kafka.clone(),
                index.clone(),
                ready.clone(),
                done.clone(),
                shutdown.clone(),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    let caught_up = || {
                        let mut d = done.lock().unwrap_or_else(|p| p.into_inner());
                        d.insert(topic.clone(), true);
                        if d.values().all(|v| *v) {
                            ready.store(true, Ordering::Relaxed);
                        }
                    };
                    match tail(&kafka, &topic, &index, window, &shutdown, caught_up).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(%topic, error = %e, "idempotency replay failed; retrying");
                            tokio::select! {
                                _ = shutdown.cancelled() => break,
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            }
                        }
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    })
}

async fn tail(
    kafka: &KafkaConfig,
    topic: &str,
    index: &Index,
    window: Duration,
    shutdown: &CancellationToken,
    mut caught_up: impl FnMut(),
) -> Result<(), KafkaError> {
    let consumer: Arc<StreamConsumer<Quiet>> = Arc::new(
        kafka
            .consumer(&format!("lienthong-gateway-replay-{}", now_ms()))
            .set("enable.partition.eof", "true")
            .create_with_context(Quiet)?,
    );
    let since = now_ms() - i64::try_from(window.as_millis()).unwrap_or(i64::MAX / 2);
    let (c, t) = (consumer.clone(), topic.to_string());
    let (start, targets) = tokio::task::spawn_blocking(move || -> Result<_, KafkaError> {
        let timeout = Duration::from_secs(10);
        let md = c.fetch_metadata(Some(&t), timeout)?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|mt| mt.name() == t)
            .flat_map(|mt| mt.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(KafkaError::MetadataFetch(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            ));
        }
        let mut query = TopicPartitionList::new();
        let mut targets = HashMap::new();
        for p in &partitions {
            query.add_partition_offset(&t, *p, Offset::Offset(since.max(0)))?;
            let (_, high) = c.fetch_watermarks(&t, *p, timeout)?;
            targets.insert(*p, high);
        }
        Ok((c.offsets_for_times(query, timeout)?, targets))
    })
    .await
    .map_err(|_| KafkaError::Canceled)??;
    consumer.assign(&start)?;
    let mut pending: HashMap<i32, i64> = targets;
    for e in start.elements() {
        if let (Offset::Offset(o), Some(&t)) = (e.offset(), pending.get(&e.partition()))
            && o >= t
        {
            pending.remove(&e.partition());
        } else if matches!(e.offset(), Offset::End) {
            pending.remove(&e.partition());
        }
    }
    if pending.is_empty() {
        caught_up();
    }
    let mut stream = consumer.stream();
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            n = stream.next() => n,
        };
        // Take what else is ready too (without waiting), so that the whole batch meets the
        // index under one lock, its lookups side by side.
        let mut batch = vec![first];
        while batch.len() < BATCH
            && let Some(next) = stream.next().now_or_never()
        {
            batch.push(next);
        }
        // First into the index, then progress: the index is ready only once it holds every
        // record up to where each partition stood.
        let read: Vec<(usize, EventKey)> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, next)| match next {
                Some(Ok(m)) => Some((
                    i,
                    m.payload()
                        .and_then(leading_event_id)
                        .and_then(EventKey::parse)?,
                )),
                _ => None,
            })
            .collect();
        let ids: Vec<EventKey> = read.iter().map(|&(_, id)| id).collect();
        for unknown in index.unknown(&ids) {
            let (i, id) = read[unknown];
            if let Some(Ok(m)) = &batch[i]
                && let (Some(value), Some(key)) = (m.payload(), m.key())
            {
                let at = m.timestamp().to_millis().unwrap_or_else(now_ms);
                index.record(
                    || content_hash(topic, key, value),
                    id,
                    (topic, m.partition(), m.offset()),
                    at,
                );
            }
        }
        for next in batch {
            match next {
                None => return Ok(()),
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    if pending.remove(&p).is_some() && pending.is_empty() {
                        caught_up();
                    }
                }
                Some(Err(e)) => tracing::debug!(%topic, error = %e, "replay consumer"),
                Some(Ok(m)) => {
                    if let Some(&t) = pending.get(&m.partition())
                        && m.offset() + 1 >= t
                    {
                        pending.remove(&m.partition());
                        if pending.is_empty() {
                            caught_up();
                        }
                    }
                }
            }
        }
    }
}
