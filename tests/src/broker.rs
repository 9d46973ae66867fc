//! The suite's Apache Kafka: the single broker and the three-broker cluster that
//! `ops/services.sh up` starts, and brokers of a test's own (`OwnKafka`).

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;

use crate::*;

/// A running Apache Kafka, single node or cluster.
#[derive(Debug, Clone)]
pub struct Kafka {
    bootstrap: String,
    /// The `ops/kafka.sh --name` of a cluster whose brokers a test may kill and restart.
    cluster_name: Option<String>,
}

/// Look up the single-node broker, without failing.
pub fn try_kafka() -> Result<Kafka, ServiceError> {
    let bootstrap = env_var("Apache Kafka", ENV_KAFKA)?;
    check_reachable("Apache Kafka", &bootstrap)?;
    Ok(Kafka {
        bootstrap,
        cluster_name: None,
    })
}

/// The single-node broker; the test fails, naming the command to run, if it is not there.
pub fn kafka() -> Kafka {
    require(try_kafka())
}

/// Look up the three-broker cluster, without failing.
pub fn try_kafka_cluster() -> Result<Kafka, ServiceError> {
    let service = "The three-broker Apache Kafka cluster";
    let bootstrap = env_var(service, ENV_KAFKA_CLUSTER)?;
    let name = env_var(service, ENV_KAFKA_CLUSTER_NAME)?;
    check_reachable(service, &bootstrap)?;
    Ok(Kafka {
        bootstrap,
        cluster_name: Some(name),
    })
}

/// The three-broker cluster (for fault tests); the test fails if it is not there.
pub fn kafka_cluster() -> Kafka {
    require(try_kafka_cluster())
}

impl Kafka {
    /// The bootstrap address list.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The connection config of this broker, as the components take it.
    pub fn config(&self) -> lienthong_bus::KafkaConfig {
        lienthong_bus::KafkaConfig::new(&self.bootstrap)
    }

    /// A plain client config pointing at this broker (tests add what they need).
    pub fn client_config(&self) -> ClientConfig {
        self.config().admin()
    }

    /// An idempotent producer with `acks=all`.
    pub fn idempotent_producer(&self) -> Result<FutureProducer> {
        self.client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()
            .context("creating an idempotent producer")
    }

    /// A consumer in `group` that starts at the earliest offset and never auto-commits.
    pub fn consumer(&self, group: &str) -> Result<StreamConsumer> {
        self.client_config()
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .context("creating a consumer")
    }

    fn admin(&self) -> Result<AdminClient<DefaultClientContext>> {
        self.client_config()
            .create()
            .context("creating an admin client")
    }

    /// Create a topic named `<prefix>-<unique suffix>` with the given partitions, replication
    /// factor and topic configs, and wait until every partition has a leader. Returns its name.
    pub async fn create_topic(
        &self,
        prefix: &str,
        partitions: i32,
        replication: i32,
        configs: &[(&str, &str)],
    ) -> Result<String> {
        let name = format!("{prefix}-{}", unique_suffix());
        let admin = self.admin()?;
        let mut topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(replication));
        for (k, v) in configs {
            topic = topic.set(k, v);
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics([&topic], &options)
            .await
            .context("CreateTopics request")?;
        for result in results {
            result.map_err(|(topic, code)| anyhow!("creating topic {topic}: {code}"))?;
        }
        self.wait_for_leaders(&name, partitions).await?;
        Ok(name)
    }

    /// Delete `topic` (a benchmark's scratch topic: the suite broker lives on between runs).
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = self
            .admin()?
            .delete_topics(&[topic], &options)
            .await
            .context("DeleteTopics request")?;
        for result in results {
            result.map_err(|(topic, code)| anyhow!("deleting topic {topic}: {code}"))?;
        }
        Ok(())
    }

    /// Wait until every one of the `partitions` partitions of `topic` has a leader that
    /// answers for it (the bus's own wait, as `topics create` uses it).
    pub async fn wait_for_leaders(&self, topic: &str, partitions: i32) -> Result<()> {
        let config = self.config();
        let topics = vec![(topic.to_string(), partitions)];
        tokio::task::spawn_blocking(move || {
            lienthong_bus::wait_until_ready(&config, &topics, Duration::from_secs(30))
        })
        .await??;
        Ok(())
    }

    /// Read every record of `topic` from the beginning until `expected` records were seen or
    /// `timeout` passed, then keep reading for `settle` to catch any extra record. Returns
    /// `(partition, offset, key, payload)` in the order received.
    pub async fn read_all(
        &self,
        topic: &str,
        expected: usize,
        timeout: Duration,
        settle: Duration,
    ) -> Result<Vec<Record>> {
        use futures::StreamExt;
        use rdkafka::Message;
        let consumer = self.consumer(&format!("reader-{}", unique_suffix()))?;
        consumer.subscribe(&[topic])?;
        let mut stream = consumer.stream();
        let mut out = Vec::with_capacity(expected.min(100_000));
        let deadline = tokio::time::Instant::now() + timeout;
        let mut settle_deadline: Option<tokio::time::Instant> = None;
        loop {
            let until = settle_deadline.unwrap_or(deadline);
            match tokio::time::timeout_at(until, stream.next()).await {
                Err(_) => break,
                Ok(None) => bail!("consumer stream of {topic} ended"),
                Ok(Some(Err(e))) => bail!("consuming {topic}: {e}"),
                Ok(Some(Ok(m))) => {
                    out.push(Record {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                    });
                    if out.len() >= expected && settle_deadline.is_none() {
                        settle_deadline = Some(tokio::time::Instant::now() + settle);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Create every catalog topic that does not exist yet, as `lienthong topics create` does
    /// (idempotent; tests share them and tell their records apart by key).
    pub async fn ensure_catalog_topics(&self) -> Result<()> {
        let catalog = lienthong_contract::Catalog::load(lienthong_contract::repo_schemas_dir())?;
        lienthong_bus::create_catalog_topics(&self.config(), &catalog, 1).await?;
        Ok(())
    }

    fn cluster_name(&self) -> Result<&str> {
        self.cluster_name
            .as_deref()
            .context("this broker is not the three-broker cluster; use kafka_cluster()")
    }

    /// SIGKILL broker `id` (1..=3) of the cluster.
    pub fn kill_broker(&self, id: u32) -> Result<()> {
        let name = self.cluster_name()?;
        run_ops(
            "kafka.sh",
            &["kill", "--name", name, "--broker", &id.to_string()],
        )
    }

    /// Start broker `id` of the cluster again on its data directory and ports; waits until ready.
    pub fn restart_broker(&self, id: u32) -> Result<()> {
        let name = self.cluster_name()?;
        run_ops(
            "kafka.sh",
            &["restart", "--name", name, "--broker", &id.to_string()],
        )
    }
}

/// A single broker of the test's own (`ops/kafka.sh start --name NAME --brokers 1`), for fault
/// tests that stop and start it without disturbing anyone else. Stopped (and its data deleted)
/// on drop.
#[derive(Debug)]
pub struct OwnKafka {
    kafka: Kafka,
    name: String,
}

impl OwnKafka {
    /// Start a broker named `<prefix>-<unique suffix>` and wait until it is ready.
    pub fn start(prefix: &str) -> Result<OwnKafka> {
        OwnKafka::start_with(prefix, &[])
    }

    /// The same, with more `ops/kafka.sh start` arguments (`--port`, `--config K=V`: a
    /// listener of its own, say).
    pub fn start_with(prefix: &str, args: &[&str]) -> Result<OwnKafka> {
        let name = format!("{prefix}-{}", unique_suffix());
        let mut all = vec!["start", "--name", &name, "--brokers", "1"];
        all.extend_from_slice(args);
        let bootstrap = run_ops_output("kafka.sh", &all)?;
        let bootstrap = bootstrap.trim().to_string();
        if bootstrap.is_empty() {
            bail!("ops/kafka.sh start --name {name} printed no bootstrap address");
        }
        Ok(OwnKafka {
            kafka: Kafka {
                bootstrap,
                cluster_name: Some(name.clone()),
            },
            name,
        })
    }

    /// The broker.
    pub fn kafka(&self) -> &Kafka {
        &self.kafka
    }

    /// Its state folder under `ops/kafka.sh`'s (`admin.secret`, `mtls-bootstrap`, logs).
    pub fn state_dir(&self) -> std::path::PathBuf {
        std::env::var_os("LIENTHONG_STATE_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".lienthong"))
            .join("kafka")
            .join(&self.name)
    }

    /// SIGKILL the broker (its data stays).
    pub fn kill(&self) -> Result<()> {
        self.kafka.kill_broker(1)
    }

    /// Start it again on the same data and port; waits until ready.
    pub fn restart(&self) -> Result<()> {
        self.kafka.restart_broker(1)
    }
}

impl Drop for OwnKafka {
    fn drop(&mut self) {
        if let Err(e) = run_ops("kafka.sh", &["stop", "--name", &self.name]) {
            eprintln!("stopping the test's own broker {}: {e}", self.name);
        }
    }
}

impl Kafka {
    /// The end offset (high watermark) of every partition of `topic`.
    pub fn end_offsets(&self, topic: &str) -> Result<Vec<(i32, i64)>> {
        let consumer: rdkafka::consumer::BaseConsumer = self.client_config().create()?;
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .context("topic not in metadata")?;
        let mut out = Vec::new();
        for p in t.partitions() {
            let (_, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
            out.push((p.id(), high));
        }
        Ok(out)
    }

    /// The record at `offset` of `topic`/`partition`, read with `read_committed` (so a record
    /// of an aborted or open transaction is not returned).
    pub async fn read_at(&self, topic: &str, partition: i32, offset: i64) -> Result<Record> {
        let records = self
            .read_partition_range(topic, partition, offset, offset + 1)
            .await?;
        records
            .into_iter()
            .find(|r| r.offset == offset)
            .with_context(|| format!("no committed record at {topic}/{partition}@{offset}"))
    }

    /// The whole message at `offset` of `topic`/`partition` (headers and timestamp too), read
    /// with `read_committed`.
    pub async fn message_at(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<rdkafka::message::OwnedMessage> {
        use futures::StreamExt;
        use rdkafka::Message;
        let consumer: StreamConsumer = self
            .client_config()
            .set("group.id", format!("reader-{}", unique_suffix()))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset))?;
        consumer.assign(&tpl)?;
        let mut stream = consumer.stream();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) | Ok(None) => bail!("no committed record at {topic}/{partition}@{offset}"),
                Ok(Some(Err(e))) => bail!("consuming {topic}: {e}"),
                Ok(Some(Ok(m))) if m.offset() == offset => return Ok(m.detach()),
                Ok(Some(Ok(m))) if m.offset() > offset => {
                    bail!("no committed record at {topic}/{partition}@{offset}")
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    async fn read_partition_range(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
    ) -> Result<Vec<Record>> {
        use futures::StreamExt;
        use rdkafka::Message;
        let consumer: StreamConsumer = self
            .client_config()
            .set("group.id", format!("reader-{}", unique_suffix()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .create()?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(from))?;
        consumer.assign(&tpl)?;
        let mut stream = consumer.stream();
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => bail!("reading {topic}/{partition}: nothing at {from}..{to} in 30 s"),
                Ok(None) | Ok(Some(Err(rdkafka::error::KafkaError::PartitionEOF(_)))) => break,
                Ok(Some(Err(e))) => bail!("consuming {topic}: {e}"),
                Ok(Some(Ok(m))) => {
                    if m.offset() >= to {
                        break;
                    }
                    out.push(Record {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                    });
                    if m.offset() + 1 >= to {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// For every partition of `topic`, the offset of its first record written at or after
    /// `ms_since_epoch` (the end offset if none): a start for [`Kafka::read_since`] that skips
    /// the history of a busy shared topic.
    pub fn offsets_at_time(&self, topic: &str, ms_since_epoch: i64) -> Result<Vec<(i32, i64)>> {
        let consumer: rdkafka::consumer::BaseConsumer = self
            .client_config()
            .set("group.id", format!("reader-{}", unique_suffix()))
            .create()?;
        let ends = self.end_offsets(topic)?;
        let mut query = rdkafka::TopicPartitionList::new();
        for (p, _) in &ends {
            query.add_partition_offset(topic, *p, rdkafka::Offset::Offset(ms_since_epoch))?;
        }
        let found = consumer.offsets_for_times(query, Duration::from_secs(10))?;
        Ok(ends
            .iter()
            .map(|(p, end)| {
                let at = found
                    .find_partition(topic, *p)
                    .and_then(|e| match e.offset() {
                        rdkafka::Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                    .unwrap_or(*end);
                (*p, at)
            })
            .collect())
    }

    /// Every record of `topic` from the offsets `from` (per partition; as [`Kafka::end_offsets`]
    /// gave them earlier) to the current end, read with `isolation.level = read_committed` if
    /// `committed_only`, else `read_uncommitted`.
    pub async fn read_since(
        &self,
        topic: &str,
        from: &[(i32, i64)],
        committed_only: bool,
    ) -> Result<Vec<Record>> {
        use futures::StreamExt;
        use rdkafka::Message;
        let ends = self.end_offsets(topic)?;
        let consumer: StreamConsumer = self
            .client_config()
            .set("group.id", format!("reader-{}", unique_suffix()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set(
                "isolation.level",
                if committed_only {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            )
            .create()?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        let mut pending = std::collections::HashSet::new();
        for (p, end) in &ends {
            let start = from.iter().find(|(q, _)| q == p).map_or(0, |(_, o)| *o);
            if start < *end {
                tpl.add_partition_offset(topic, *p, rdkafka::Offset::Offset(start))?;
                pending.insert(*p);
            }
        }
        let mut out = Vec::new();
        if pending.is_empty() {
            return Ok(out);
        }
        consumer.assign(&tpl)?;
        let mut stream = consumer.stream();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !pending.is_empty() {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => {
                    bail!("reading {topic}: partitions {pending:?} did not reach their end in 30 s")
                }
                Ok(None) => bail!("consumer stream of {topic} ended"),
                Ok(Some(Err(rdkafka::error::KafkaError::PartitionEOF(p)))) => {
                    pending.remove(&p);
                }
                Ok(Some(Err(e))) => bail!("consuming {topic}: {e}"),
                Ok(Some(Ok(m))) => {
                    let end = ends
                        .iter()
                        .find(|(p, _)| *p == m.partition())
                        .map_or(0, |e| e.1);
                    if m.offset() < end {
                        out.push(Record {
                            partition: m.partition(),
                            offset: m.offset(),
                            key: m.key().map(<[u8]>::to_vec),
                            payload: m.payload().map(<[u8]>::to_vec),
                        });
                    }
                    if m.offset() + 1 >= end {
                        pending.remove(&m.partition());
                    }
                }
            }
        }
        Ok(out)
    }
}
