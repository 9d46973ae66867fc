//! Kafka building blocks shared by lienthong's components: the one connection config every
//! component takes and the clients built from it ([`KafkaConfig`]), the catalog's topics created
//! with their partitions, cleanup policy, retention and min ISR ([`create_catalog_topics`]) and
//! waited for until they are served ([`wait_until_ready`]), the embedded in-memory broker of the
//! demo ([`EmbeddedKafka`]), and reading partitions back as a consumer sees them
//! ([`read_back`], [`record_ends`]) to tell when a store has caught up.
//!
//! Every event of the bus lives on one of these topics; the CLI's `topics create`, the demo
//! and the tests create them the same way, so a topic's settings are defined once, in
//! `schemas/catalog.toml`.

pub mod acl;
mod admin;
mod config;
mod retry;
pub mod state_log;

pub use config::{KafkaConfig, is_secret};
pub use retry::RetryConfig;

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use lienthong_contract::Catalog;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::types::RDKafkaErrorCode;

/// Errors of the Kafka building blocks.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The Kafka client could not be created or a request failed (broker unreachable, timeout).
    #[error("Kafka at {bootstrap}: {source}")]
    Kafka {
        /// Where we tried.
        bootstrap: String,
        /// Why.
        #[source]
        source: KafkaError,
    },
    /// Kafka refused to create some topics (for example a replication factor above the
    /// number of brokers).
    #[error("could not create: {0}")]
    TopicsRefused(String),
    /// A request was wrong (a replication factor below 1).
    #[error("{0}")]
    Invalid(String),
    /// The embedded broker did not start.
    #[error("the embedded Kafka broker did not start: {0}")]
    Embedded(String),
    /// Reading a partition back did not reach its end in time.
    #[error("{0}")]
    Timeout(String),
    /// The cluster refused: the credential is wrong, or the principal may not do this.
    #[error("refused by Kafka: {0}")]
    Denied(String),
    /// A security administration request (ACLs, SCRAM credentials) failed.
    #[error("{0}")]
    Admin(String),
}

impl BusError {
    /// Worth retrying: Kafka unreachable, not a refused request.
    pub fn is_transient(&self) -> bool {
        matches!(self, BusError::Kafka { .. } | BusError::Timeout(_))
    }
}

/// What a `read_committed` consumer sees of a partition between two points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionRead {
    /// Records delivered (committed data, no transaction markers, nothing aborted).
    pub records: u64,
    /// Offset of the last one.
    pub last: Option<i64>,
}

/// A topic's partition.
pub type Partition = (String, i32);

/// Reaching a partition's end is what reading back is for, not an error to log.
struct QuietEof;

impl rdkafka::ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        let end_of_partition = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !end_of_partition {
            tracing::warn!(%error, reason, "Kafka client error while reading back");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for QuietEof {}

/// Read each partition from its start offset to its end as a `read_committed` consumer
/// (blocking; one consumer for all; at most `timeout`). Transaction markers take offsets but
/// are never delivered, so the offset after the last record, not the high watermark, is where
/// a consumer that read everything has its stored position.
pub fn read_back(
    config: &KafkaConfig,
    from: &[(Partition, i64)],
    timeout: Duration,
) -> Result<std::collections::BTreeMap<Partition, PartitionRead>, BusError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};
    let kafka = |source| BusError::Kafka {
        bootstrap: config.bootstrap.clone(),
        source,
    };
    let consumer: BaseConsumer<QuietEof> = config
        .consumer("lienthong-read-back")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "50")
        .create_with_context(QuietEof)
        .map_err(kafka)?;
    let mut reads = std::collections::BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    // Partition → the high watermark to reach (the end as it is now).
    let mut pending = std::collections::BTreeMap::new();
    for ((topic, partition), start) in from {
        reads.insert((topic.clone(), *partition), PartitionRead::default());
        let (low, high) = consumer
            .fetch_watermarks(topic, *partition, Duration::from_secs(10))
            .map_err(kafka)?;
        let start = (*start).max(low);
        if start < high {
            assignment
                .add_partition_offset(topic, *partition, Offset::Offset(start))
                .map_err(kafka)?;
            pending.insert((topic.clone(), *partition), high);
        }
    }
    if pending.is_empty() {
        return Ok(reads);
    }
    consumer.assign(&assignment).map_err(kafka)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut since_check = 0u32;
    while !pending.is_empty() {
        if std::time::Instant::now() >= deadline {
            return Err(BusError::Timeout(format!(
                "reading back did not reach the end of {} partition(s) within {timeout:?}",
                pending.len()
            )));
        }
        let check = match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if let Some(read) = reads.get_mut(&(m.topic().to_string(), m.partition())) {
                    read.records += 1;
                    read.last = Some(m.offset());
                }
                since_check += 1;
                since_check >= 1_000
            }
            // An end reached (the error names only the partition number) or nothing new.
            Some(Err(KafkaError::PartitionEOF(_))) | None => true,
            Some(Err(e)) => return Err(kafka(e)),
        };
        if check {
            since_check = 0;
            // Where the consumer stands: past the last record and any markers after it.
            let positions = consumer.position().map_err(kafka)?;
            pending.retain(|(topic, partition), high| {
                let at = positions
                    .find_partition(topic, *partition)
                    .and_then(|e| e.offset().to_raw());
                at.is_none_or(|at| at < *high)
            });
        }
    }
    Ok(reads)
}

/// A client outside any group for metadata and watermarks.
fn watermark_client(config: &KafkaConfig) -> Result<rdkafka::consumer::BaseConsumer, BusError> {
    config
        .watermarks()
        .create()
        .map_err(|source| BusError::Kafka {
            bootstrap: config.bootstrap.clone(),
            source,
        })
}

/// For each partition, the offset after the last record a `read_committed` consumer sees
/// (`None`: it sees none). Reads back from the ends in growing windows.
pub fn record_ends(
    config: &KafkaConfig,
    partitions: &[Partition],
    timeout: Duration,
) -> Result<std::collections::BTreeMap<Partition, Option<i64>>, BusError> {
    use rdkafka::consumer::Consumer;
    let bootstrap = config.bootstrap.clone();
    let consumer = watermark_client(config)?;
    let mut bounds = std::collections::BTreeMap::new();
    for (topic, partition) in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *partition, Duration::from_secs(10))
            .map_err(|source| BusError::Kafka {
                bootstrap: bootstrap.clone(),
                source,
            })?;
        bounds.insert((topic.clone(), *partition), (low, high));
    }
    let mut ends = std::collections::BTreeMap::new();
    let mut window = 64i64;
    let mut todo: Vec<Partition> = partitions.to_vec();
    while !todo.is_empty() {
        let from: Vec<(Partition, i64)> = todo
            .iter()
            .map(|p| {
                let (low, high) = bounds[p];
                (p.clone(), (high - window).max(low))
            })
            .collect();
        let reads = read_back(config, &from, timeout)?;
        let mut again = Vec::new();
        for (p, start) in from {
            match reads.get(&p).and_then(|r| r.last) {
                Some(last) => {
                    ends.insert(p, Some(last + 1));
                }
                None if start > bounds[&p].0 => again.push(p),
                None => {
                    ends.insert(p, None);
                }
            }
        }
        todo = again;
        window = window.saturating_mul(16);
    }
    Ok(ends)
}

/// What happened to one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    /// Created now.
    Created(String),
    /// It was there already (left as it is).
    Exists(String),
}

/// Create every catalog topic that does not exist yet, with its partitions, cleanup policy,
/// retention and min ISR (capped at `replication`), its records stamped with the broker's
/// append time. Topics that exist are left alone, so
/// running it twice changes nothing.
pub async fn create_catalog_topics(
    config: &KafkaConfig,
    catalog: &Catalog,
    replication: i32,
) -> Result<Vec<TopicOutcome>, BusError> {
    if replication < 1 {
        return Err(BusError::Invalid(
            "the replication factor must be at least 1".into(),
        ));
    }
    let kafka = |source| BusError::Kafka {
        bootstrap: config.bootstrap.clone(),
        source,
    };
    let admin: AdminClient<DefaultClientContext> = config.admin().create().map_err(kafka)?;
    let settings: Vec<(String, String)> = catalog
        .topics()
        .iter()
        .map(|t| {
            (
                t.retention_ms.to_string(),
                t.min_insync_replicas.min(replication).to_string(),
            )
        })
        .collect();
    let topics: Vec<NewTopic> = catalog
        .topics()
        .iter()
        .zip(&settings)
        .map(|(t, (retention, min_isr))| {
            NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(replication))
                .set("cleanup.policy", t.cleanup_policy.as_kafka())
                .set("retention.ms", retention)
                .set("min.insync.replicas", min_isr)
                // The broker's clock, not the producer's: what a connector checks a
                // signing certificate's revocation against (docs/signatures.md).
                .set("message.timestamp.type", "LogAppendTime")
        })
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(15)))
        .request_timeout(Some(Duration::from_secs(15)));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .map_err(kafka)?;
    let mut outcomes = Vec::new();
    let mut refused = Vec::new();
    for r in results {
        match r {
            Ok(name) => outcomes.push(TopicOutcome::Created(name)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                outcomes.push(TopicOutcome::Exists(name))
            }
            Err((name, code)) => refused.push(format!("{name}: {code}")),
        }
    }
    if !refused.is_empty() {
        return Err(BusError::TopicsRefused(refused.join(", ")));
    }
    // A topic just created has no leaders for a moment: whoever creates them uses them next.
    // A topic that was there already is waited for with the partitions it has.
    let wanted: Vec<(String, i32)> = catalog
        .topics()
        .iter()
        .map(|t| {
            let created = outcomes.contains(&TopicOutcome::Created(t.name.clone()));
            (t.name.clone(), if created { t.partitions } else { 0 })
        })
        .collect();
    let config = config.clone();
    tokio::task::spawn_blocking(move || wait_until_ready(&config, &wanted, TOPICS_READY_TIMEOUT))
        .await
        .map_err(|e| BusError::Invalid(format!("waiting for the topics' leaders: {e}")))??;
    Ok(outcomes)
}

/// How long [`create_catalog_topics`] waits for new topics to be served.
pub const TOPICS_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Wait (blocking, at most `timeout`) until every partition of each `(topic, partitions)`
/// has a leader that answers for it (`partitions` 0: whatever number the topic has, at least
/// one): metadata shows the partitions with a leader, and the
/// leader answers a `ListOffsets` request. Right after `CreateTopics` a broker can still
/// answer `NotLeaderForPartition`; a caller that creates topics and uses them at once calls
/// this in between. The error names the first partition that was not ready, and why.
pub fn wait_until_ready(
    config: &KafkaConfig,
    topics: &[(String, i32)],
    timeout: Duration,
) -> Result<(), BusError> {
    let bootstrap = config.bootstrap.clone();
    let consumer = watermark_client(config)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut todo: Vec<(String, i32)> = topics.to_vec();
    loop {
        let mut why = None;
        todo.retain(|(topic, partitions)| {
            if why.is_some() {
                return true;
            }
            match topic_not_ready(&consumer, topic, *partitions) {
                None => false,
                Some(reason) => {
                    why = Some(reason);
                    true
                }
            }
        });
        let Some(why) = why else {
            return Ok(());
        };
        if std::time::Instant::now() >= deadline {
            return Err(BusError::Timeout(format!(
                "topics at {bootstrap} not ready within {timeout:?}: {why}"
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Why `topic` is not ready yet, or `None` when every one of its `partitions` is served.
fn topic_not_ready(
    consumer: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    partitions: i32,
) -> Option<String> {
    use rdkafka::consumer::Consumer;
    let timeout = Duration::from_secs(5);
    let metadata = match consumer.fetch_metadata(Some(topic), timeout) {
        Ok(m) => m,
        Err(e) => return Some(format!("{topic}: metadata: {e}")),
    };
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Some(format!("{topic}: not in the metadata yet"));
    };
    if let Some(e) = t.error() {
        return Some(format!("{topic}: {:?}", RDKafkaErrorCode::from(e)));
    }
    if t.partitions().is_empty() || t.partitions().len() < partitions as usize {
        return Some(format!(
            "{topic}: {} of {partitions} partitions in the metadata",
            t.partitions().len()
        ));
    }
    for p in t.partitions() {
        if p.leader() < 0 || p.error().is_some() {
            return Some(format!("{topic}[{}]: no leader yet", p.id()));
        }
    }
    for p in t.partitions() {
        if let Err(e) = consumer.fetch_watermarks(topic, p.id(), timeout) {
            return Some(format!("{topic}[{}]: {e}", p.id()));
        }
    }
    None
}

/// librdkafka's in-memory mock cluster, for the demo: it speaks the Kafka protocol on
/// loopback ports, keeps nothing on disk, and has no compaction. It lives on a thread of its
/// own (the cluster handle may not move between threads) until this is dropped.
pub struct EmbeddedKafka {
    bootstrap: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedKafka {
    /// Start `brokers` in-memory brokers with `topics` (name, partitions) created.
    pub fn start(brokers: i32, topics: &[(String, i32)]) -> Result<EmbeddedKafka, BusError> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let topics = topics.to_vec();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let replication = brokers.min(3);
                for (name, partitions) in &topics {
                    if let Err(e) = cluster.create_topic(name, *partitions, replication) {
                        let _ = ready_tx.send(Err(format!("topic {name}: {e}")));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Hold the cluster until told to stop (or the handle is dropped).
                let _ = stop_rx.recv();
                drop(cluster);
            })
            .map_err(|e| BusError::Embedded(e.to_string()))?;
        let bootstrap = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|e| BusError::Embedded(e.to_string()))?
            .map_err(BusError::Embedded)?;
        Ok(EmbeddedKafka {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The catalog's topics plus `extra` (name, partitions).
    pub fn for_catalog(
        catalog: &Catalog,
        extra: &[(String, i32)],
    ) -> Result<EmbeddedKafka, BusError> {
        let mut topics: Vec<(String, i32)> = catalog
            .topics()
            .iter()
            .map(|t| (t.name.clone(), t.partitions))
            .collect();
        topics.extend(extra.iter().cloned());
        EmbeddedKafka::start(3, &topics)
    }

    /// Bootstrap servers (loopback).
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
