//! Where the registry's records live: a compacted Kafka topic shared by every instance, or
//! memory (tests and the embedded demo). Both feed the same [`State::apply`].

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use lienthong_bus::KafkaConfig;
use lienthong_telemetry::KafkaClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::RegistryError;
use crate::state::State;

/// The state, shared with the log's applier.
pub type SharedState = Arc<RwLock<State>>;

/// The schema log.
pub enum SchemaLog {
    /// In memory: appends apply at once. Not shared between processes.
    Memory {
        /// The records, for restarts within one process (tests).
        records: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
    },
    /// A one-partition compacted Kafka topic.
    Kafka(KafkaLog),
}

/// The Kafka side of the log.
pub struct KafkaLog {
    topic: String,
    producer: FutureProducer<KafkaClientContext>,
    watermarks: Arc<BaseConsumer<KafkaClientContext>>,
}

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

impl SchemaLog {
    /// Append a record; returns its offset once it is durable. Memory logs apply it at once.
    pub async fn append(
        &self,
        state: &SharedState,
        applied: &watch::Sender<i64>,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<i64, RegistryError> {
        match self {
            SchemaLog::Memory { records } => {
                let offset = {
                    let mut records = records.lock().unwrap_or_else(|p| p.into_inner());
                    state
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .apply(&key, Some(&value));
                    records.push((key, value));
                    records.len() as i64 - 1
                };
                applied.send_replace(offset + 1);
                Ok(offset)
            }
            SchemaLog::Kafka(k) => {
                let record = FutureRecord::to(&k.topic)
                    .key(&key)
                    .payload(&value)
                    .partition(0);
                let delivery = k
                    .producer
                    .send(record, Duration::from_secs(10))
                    .await
                    .map_err(|(e, _)| RegistryError::Store(e.to_string()))?;
                Ok(delivery.offset)
            }
        }
    }

    /// The offset one past the last record in the log now.
    pub async fn end_offset(&self) -> Result<i64, RegistryError> {
        match self {
            SchemaLog::Memory { records } => {
                Ok(records.lock().unwrap_or_else(|p| p.into_inner()).len() as i64)
            }
            SchemaLog::Kafka(k) => {
                let (topic, consumer) = (k.topic.clone(), k.watermarks.clone());
                let watermarks = tokio::task::spawn_blocking(move || {
                    consumer.fetch_watermarks(&topic, 0, Duration::from_secs(5))
                })
                .await
                .map_err(|e| RegistryError::Store(e.to_string()))?;
                watermarks
                    .map(|(_, high)| high)
                    .map_err(|e| RegistryError::Store(e.to_string()))
            }
        }
    }
}

impl KafkaLog {
    /// Connect, creating the topic if it does not exist, and start applying it into `state`
    /// from the beginning, publishing the next offset to apply on `applied`.
    pub async fn open(
        config: &KafkaLogConfig,
        state: SharedState,
        applied: watch::Sender<i64>,
        errors: KafkaClientContext,
        shutdown: CancellationToken,
    ) -> Result<KafkaLog, RegistryError> {
        let store = |e: KafkaError| RegistryError::Store(e.to_string());
        let admin: AdminClient<KafkaClientContext> = config
            .kafka
            .admin()
            .create_with_context(errors.clone())
            .map_err(store)?;
        let topic = NewTopic::new(
            &config.topic,
            1,
            TopicReplication::Fixed(config.replication),
        )
        .set("cleanup.policy", "compact")
        // With 3 or more replicas, an acknowledged proposal survives a broker loss.
        .set(
            "min.insync.replicas",
            if config.replication >= 3 { "2" } else { "1" },
        )
        .set("min.compaction.lag.ms", "0");
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
        for result in admin
            .create_topics([&topic], &options)
            .await
            .map_err(store)?
        {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => {
                    return Err(RegistryError::Store(format!(
                        "creating schema log topic {t}: {code}"
                    )));
                }
            }
        }
        // A topic that existed already must still be one partition, compacted only: with
        // `delete` its oldest records would expire, the highest id with them, and ids would be
        // given again.
        check_log_topic(&admin, &config.topic).await?;
        // A Kafka outage answers 50001 within seconds instead of hanging the request, whatever
        // `[kafka] options` say.
        let producer: FutureProducer<KafkaClientContext> = config
            .kafka
            .producer()
            .set("linger.ms", "0")
            .set("message.timeout.ms", "10000")
            .create_with_context(errors.clone())
            .map_err(store)?;
        let watermarks: BaseConsumer<KafkaClientContext> = config
            .kafka
            .watermarks()
            .create_with_context(errors.clone())
            .map_err(store)?;

        // Never skip ahead: the state is the whole log (the consumer profile starts at the
        // earliest offset and commits nothing).
        let reader: BaseConsumer<KafkaClientContext> = config
            .kafka
            .consumer(&format!("lienthong-registry-{}", uuid::Uuid::new_v4()))
            .create_with_context(errors)
            .map_err(store)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&config.topic, 0, Offset::Beginning)
            .map_err(store)?;
        reader.assign(&tpl).map_err(store)?;
        std::thread::Builder::new()
            .name("registry-log".into())
            .spawn(move || apply_loop(reader, state, applied, shutdown))
            .map_err(|e| RegistryError::Store(format!("starting the log reader: {e}")))?;
        Ok(KafkaLog {
            topic: config.topic.clone(),
            producer,
            watermarks: Arc::new(watermarks),
        })
    }
}

async fn check_log_topic(
    admin: &AdminClient<KafkaClientContext>,
    topic: &str,
) -> Result<(), RegistryError> {
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
                        return Err(RegistryError::Store(format!(
                            "schema log topic {topic} has cleanup.policy={policy:?}; it must be \"compact\" (alone), or old records, and with them used ids, would expire"
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
    Err(RegistryError::Store(format!(
        "describing schema log topic {topic}: {last_error}"
    )))
}

/// Read the log and apply each record, until shutdown. A blocking thread: librdkafka's poll.
fn apply_loop(
    reader: BaseConsumer<KafkaClientContext>,
    state: SharedState,
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
                        offset = m.offset(),
                        "a schema-log record could not be applied; skipped"
                    );
                }
                drop(state);
                applied.send_replace(m.offset() + 1);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "reading the schema log"),
        }
    }
}
