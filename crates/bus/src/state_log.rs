//! A component's shared state kept as a compacted, one-partition Kafka topic: the schema
//! registry's schemas and the key service's wrapped data keys live this way. Every instance
//! reads the topic from the beginning and applies each record, in log order, to its own copy
//! of the state ([`LogState::apply`]); a write is a record appended to the topic and is
//! answered once this instance has applied it (read-your-writes). A tombstone (no value) is
//! delivered to the state too, so a key can be deleted for good: once compaction has run, the
//! record is gone from the broker's disks.
//!
//! [`StateLog::in_memory`] keeps the same contract without Kafka, for tests and the embedded
//! demo.

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{BusError, KafkaConfig};

/// State rebuilt from a log: the same records in the same order give the same state on every
/// instance. `apply` must not fail; a malformed record is skipped (deterministically, so every
/// instance skips it).
pub trait LogState: Send + Sync + 'static {
    /// Apply one record; `value` is `None` for a tombstone.
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>);
}

/// Where a state log lives in Kafka.
#[derive(Debug, Clone)]
pub struct StateLogConfig {
    /// The cluster, with the process's `[kafka]` options (security included).
    pub kafka: KafkaConfig,
    /// Topic name.
    pub topic: String,
    /// Replication factor when the topic is created (1 for a single broker).
    pub replication: i32,
    /// Extra topic settings when the topic is created (e.g. how soon compaction runs).
    pub topic_config: Vec<(String, String)>,
    /// The reader's group id. The log is read by assignment and commits nothing, but
    /// librdkafka still names a group: it starts with the component's principal, whose ACLs
    /// cover that prefix (`lienthong-registry-…`).
    pub group: String,
}

enum Backend<C: ConsumerContext + 'static> {
    Memory(Mutex<i64>),
    Kafka {
        topic: String,
        producer: FutureProducer<C>,
        watermarks: Arc<BaseConsumer<C>>,
    },
}

/// A state and the log it is rebuilt from.
pub struct StateLog<S: LogState, C: ConsumerContext + 'static> {
    what: &'static str,
    state: Arc<RwLock<S>>,
    applied: watch::Sender<i64>,
    backend: Backend<C>,
    /// Records queued by [`StateLog::enqueue`], not yet known to be on the log.
    queued: Mutex<Vec<DeliveryFuture>>,
    /// A queued record failed: the next [`StateLog::flush`] says so, whoever queued it.
    queue_failed: std::sync::atomic::AtomicBool,
    /// One flush at a time, so that a flush returns only once everything queued before it is
    /// settled, even what another flush took.
    flushing: tokio::sync::Mutex<()>,
}

impl<S: LogState, C: ClientContext + ConsumerContext + Clone + 'static> StateLog<S, C> {
    /// A log kept in memory: appends apply at once. `what` names it in errors ("schema log").
    pub fn in_memory(what: &'static str, state: S) -> Self {
        let (applied, _) = watch::channel(0);
        StateLog {
            what,
            state: Arc::new(RwLock::new(state)),
            applied,
            backend: Backend::Memory(Mutex::new(0)),
            queued: Mutex::new(Vec::new()),
            queue_failed: Default::default(),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    /// Connect, creating the topic (one partition, compacted) if it does not exist, and apply
    /// it from the beginning on a thread of its own until `shutdown`. Returns once the state
    /// holds everything the topic held when it was opened. Its Kafka clients use `context`.
    pub async fn open(
        what: &'static str,
        config: &StateLogConfig,
        state: S,
        context: C,
        shutdown: CancellationToken,
    ) -> Result<Self, BusError> {
        let kafka = |source: KafkaError| BusError::Kafka {
            bootstrap: config.kafka.bootstrap.clone(),
            source,
        };
        let admin: AdminClient<C> = config
            .kafka
            .admin()
            .create_with_context(context.clone())
            .map_err(kafka)?;
        let mut topic = NewTopic::new(
            &config.topic,
            1,
            TopicReplication::Fixed(config.replication),
        )
        .set("cleanup.policy", "compact")
        // With 3 or more replicas, an acknowledged write survives a broker loss.
        .set(
            "min.insync.replicas",
            if config.replication >= 3 { "2" } else { "1" },
        )
        .set("min.compaction.lag.ms", "0");
        for (k, v) in &config.topic_config {
            topic = topic.set(k, v);
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
        for result in admin
            .create_topics([&topic], &options)
            .await
            .map_err(kafka)?
        {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, RDKafkaErrorCode::TopicAuthorizationFailed))
                | Err((t, RDKafkaErrorCode::ClusterAuthorizationFailed)) => {
                    return Err(BusError::Denied(format!("creating the {what} topic {t}")));
                }
                Err((t, code)) => {
                    return Err(BusError::TopicsRefused(format!(
                        "the {what} topic {t}: {code}"
                    )));
                }
            }
        }
        // A topic that existed already must still be compacted only: with `delete` its oldest
        // records would expire, and the state with them.
        check_compacted(what, &admin, &config.topic).await?;
        // A Kafka outage fails a write within seconds instead of hanging the caller, whatever
        // `[kafka] options` say.
        let producer: FutureProducer<C> = config
            .kafka
            .producer()
            .set("linger.ms", "0")
            .set("message.timeout.ms", "10000")
            .create_with_context(context.clone())
            .map_err(kafka)?;
        let watermarks: BaseConsumer<C> = config
            .kafka
            .watermarks()
            .create_with_context(context.clone())
            .map_err(kafka)?;
        // Never skip ahead: the state is the whole log (the consumer profile starts at the
        // earliest offset and commits nothing; the group is never joined, only named).
        let reader: BaseConsumer<C> = config
            .kafka
            .consumer(&config.group)
            .create_with_context(context)
            .map_err(kafka)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&config.topic, 0, Offset::Beginning)
            .map_err(kafka)?;
        reader.assign(&tpl).map_err(kafka)?;
        let (applied, _) = watch::channel(0);
        let state = Arc::new(RwLock::new(state));
        {
            let (state, applied) = (state.clone(), applied.clone());
            std::thread::Builder::new()
                .name(format!("{what}-reader"))
                .spawn(move || apply_loop(what, reader, state, applied, shutdown))
                .map_err(|e| BusError::Invalid(format!("starting the {what} reader: {e}")))?;
        }
        let log = StateLog {
            what,
            state,
            applied,
            backend: Backend::Kafka {
                topic: config.topic.clone(),
                producer,
                watermarks: Arc::new(watermarks),
            },
            queued: Mutex::new(Vec::new()),
            queue_failed: Default::default(),
            flushing: tokio::sync::Mutex::new(()),
        };
        log.sync(Duration::from_secs(15)).await?;
        Ok(log)
    }

    /// The state as applied so far.
    pub fn read(&self) -> RwLockReadGuard<'_, S> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Append a record (`None`: a tombstone) and return its offset once this instance has
    /// applied it, within `timeout`.
    pub async fn append(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<i64, BusError> {
        let offset = match &self.backend {
            Backend::Memory(next) => {
                let mut next = next.lock().unwrap_or_else(|p| p.into_inner());
                self.state
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .apply(key, value);
                let offset = *next;
                *next += 1;
                self.applied.send_replace(*next);
                offset
            }
            Backend::Kafka {
                topic, producer, ..
            } => {
                let mut record = FutureRecord::<[u8], [u8]>::to(topic).key(key).partition(0);
                if let Some(v) = value {
                    record = record.payload(v);
                }
                producer
                    .send(record, Duration::from_secs(10))
                    .await
                    .map_err(|(e, _)| self.kafka_error(e))?
                    .offset
            }
        };
        self.wait_applied(offset + 1, timeout).await?;
        Ok(offset)
    }

    /// Queue a record for the log without waiting for it; [`StateLog::flush`] waits until
    /// everything queued is on the log. For records that are many and only written (an audit
    /// trail); a memory log applies it at once.
    pub fn enqueue(&self, key: &[u8], value: &[u8]) -> Result<(), BusError> {
        match &self.backend {
            Backend::Memory(next) => {
                let mut next = next.lock().unwrap_or_else(|p| p.into_inner());
                self.state
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .apply(key, Some(value));
                *next += 1;
                self.applied.send_replace(*next);
                Ok(())
            }
            Backend::Kafka {
                topic, producer, ..
            } => {
                let record = FutureRecord::<[u8], [u8]>::to(topic)
                    .key(key)
                    .payload(value)
                    .partition(0);
                let delivery = producer
                    .send_result(record)
                    .map_err(|(e, _)| self.kafka_error(e))?;
                self.queued
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(delivery);
                Ok(())
            }
        }
    }

    /// Wait until every record queued so far ([`StateLog::enqueue`]) is on the log. An error
    /// if one of them did not make it (it may have been queued by another caller).
    pub async fn flush(&self) -> Result<(), BusError> {
        let _one_at_a_time = self.flushing.lock().await;
        let queued = std::mem::take(&mut *self.queued.lock().unwrap_or_else(|p| p.into_inner()));
        let mut failure = None;
        for delivery in queued {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => failure = Some(self.kafka_error(e)),
                Err(_) => {
                    failure = Some(BusError::Timeout(format!(
                        "the {} producer went away before a record was acknowledged",
                        self.what
                    )))
                }
            }
        }
        let failed_before = self
            .queue_failed
            .swap(false, std::sync::atomic::Ordering::SeqCst);
        match failure {
            Some(e) => {
                // Whoever flushes next may have had records among these: it fails too.
                self.queue_failed
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                Err(e)
            }
            None if failed_before => Err(BusError::Timeout(format!(
                "a record queued for the {} was not written",
                self.what
            ))),
            None => Ok(()),
        }
    }

    /// Wait until everything in the log now is applied (read-your-writes across instances).
    pub async fn sync(&self, timeout: Duration) -> Result<(), BusError> {
        let end = match &self.backend {
            Backend::Memory(next) => *next.lock().unwrap_or_else(|p| p.into_inner()),
            Backend::Kafka {
                topic, watermarks, ..
            } => {
                let (topic, consumer) = (topic.clone(), watermarks.clone());
                tokio::task::spawn_blocking(move || {
                    consumer.fetch_watermarks(&topic, 0, Duration::from_secs(5))
                })
                .await
                .map_err(|e| BusError::Invalid(format!("{}: {e}", self.what)))?
                .map_err(|e| self.kafka_error(e))?
                .1
            }
        };
        self.wait_applied(end, timeout).await
    }

    async fn wait_applied(&self, next_offset: i64, timeout: Duration) -> Result<(), BusError> {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|applied| *applied >= next_offset))
            .await
            .map_err(|_| {
                BusError::Timeout(format!(
                    "the {} was not read up to offset {next_offset} within {timeout:?}",
                    self.what
                ))
            })?
            .map_err(|_| BusError::Timeout(format!("the {} reader stopped", self.what)))?;
        Ok(())
    }

    fn kafka_error(&self, source: KafkaError) -> BusError {
        match source.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed,
            ) => BusError::Denied(format!("the {}: {source}", self.what)),
            _ => BusError::Kafka {
                bootstrap: format!("the {}", self.what),
                source,
            },
        }
    }
}

async fn check_compacted<C: ClientContext + 'static>(
    what: &str,
    admin: &AdminClient<C>,
    topic: &str,
) -> Result<(), BusError> {
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    // A topic created a moment ago may not be describable yet: retry for a while.
    let mut last_error = String::new();
    for _ in 0..20 {
        let described = match admin
            .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                last_error = e.to_string();
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        match described.into_iter().next() {
            Some(Ok(resource)) => {
                // A fresh topic may be described before its config is: no value yet means
                // "ask again", not "wrong".
                match resource
                    .get("cleanup.policy")
                    .and_then(|e| e.value.clone())
                    .filter(|v| !v.is_empty())
                {
                    Some(policy) if policy == "compact" => return Ok(()),
                    Some(policy) => {
                        return Err(BusError::Invalid(format!(
                            "the {what} topic {topic} has cleanup.policy={policy:?}; it must be \"compact\" (alone), or old records, and the state with them, would expire"
                        )));
                    }
                    None => last_error = "cleanup.policy not described yet".into(),
                }
            }
            Some(Err(code)) => last_error = code.to_string(),
            None => last_error = "no description returned".into(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(BusError::Timeout(format!(
        "describing the {what} topic {topic}: {last_error}"
    )))
}

/// Read the log and apply each record, until shutdown. A blocking thread: librdkafka's poll.
fn apply_loop<S: LogState, C: ConsumerContext + 'static>(
    what: &'static str,
    reader: BaseConsumer<C>,
    state: Arc<RwLock<S>>,
    applied: watch::Sender<i64>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        match reader.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let key = m.key().unwrap_or_default();
                let mut state = state.write().unwrap_or_else(|p| p.into_inner());
                // A record that trips a panic is skipped like any malformed record: the reader
                // must outlive every record ever written (the same skip on every instance).
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    state.apply(key, m.payload())
                }));
                if outcome.is_err() {
                    tracing::error!(
                        log = what,
                        offset = m.offset(),
                        "a record could not be applied; skipped"
                    );
                }
                drop(state);
                applied.send_replace(m.offset() + 1);
            }
            Some(Err(e)) => tracing::warn!(log = what, error = %e, "reading the log"),
        }
    }
}
