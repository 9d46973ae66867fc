//! The test harness for lienthong's end-to-end scenarios.
//!
//! Every scenario in `tests/tests/` runs against real services — Apache Kafka (KRaft), PostgreSQL,
//! Prometheus and a Python environment with clients nobody here wrote — that `ops/test` installs
//! and starts, then describes to the tests through environment variables (see
//! `ops/services.sh`). This crate finds those services, gives each test its own topic and its own
//! database so that tests run in parallel, and makes a test **fail**, naming the command to run,
//! when a service it needs is not there. Nothing here ever lets a test pass silently.

use std::collections::HashMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;

/// The command that starts every service for tests run by hand with `cargo test`.
pub const START_SERVICES: &str = "eval \"$(ops/services.sh up)\"";
/// The command that installs and starts everything, runs every test, and stops the services.
pub const TEST_COMMAND: &str = "ops/test";

/// Environment variable naming the single-node broker's bootstrap address.
pub const ENV_KAFKA: &str = "LIENTHONG_KAFKA_BOOTSTRAP";
/// Environment variable naming the three-broker cluster's bootstrap addresses.
pub const ENV_KAFKA_CLUSTER: &str = "LIENTHONG_KAFKA_CLUSTER_BOOTSTRAP";
/// Environment variable naming the three-broker cluster's instance name for `ops/kafka.sh`.
pub const ENV_KAFKA_CLUSTER_NAME: &str = "LIENTHONG_KAFKA_CLUSTER_NAME";
/// Environment variable with the PostgreSQL admin URL.
pub const ENV_POSTGRES: &str = "LIENTHONG_PG_URL";
/// Environment variable with the base URL of Apicurio Registry's Confluent-compatible API.
pub const ENV_APICURIO: &str = "LIENTHONG_APICURIO_URL";
/// Environment variable with the path of the interoperability venv's Python.
pub const ENV_PYTHON: &str = "LIENTHONG_PYTHON";

/// Why a service a test needs cannot be used.
#[derive(Debug)]
pub enum ServiceError {
    /// The environment variable that describes the service is not set.
    NotConfigured {
        /// Which service.
        service: &'static str,
        /// The variable that was expected.
        var: &'static str,
    },
    /// The variable is set but nothing answers at the address.
    Unreachable {
        /// Which service.
        service: &'static str,
        /// The address tried.
        address: String,
        /// What the connection attempt said.
        reason: String,
    },
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceError::NotConfigured { service, var } => write!(
                f,
                "{service} is needed by this test but {var} is not set. Run the whole suite with \
                 `{TEST_COMMAND}`, or start the services for `cargo test` with `{START_SERVICES}`."
            ),
            ServiceError::Unreachable {
                service,
                address,
                reason,
            } => write!(
                f,
                "{service} is needed by this test but nothing answers at {address} ({reason}). \
                 Run the whole suite with `{TEST_COMMAND}`, or restart the services with \
                 `{START_SERVICES}`."
            ),
        }
    }
}

impl std::error::Error for ServiceError {}

fn env_var(service: &'static str, var: &'static str) -> Result<String, ServiceError> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => Err(ServiceError::NotConfigured { service, var }),
    }
}

/// Check that every `host:port` in a comma-separated list accepts a TCP connection.
fn check_reachable(service: &'static str, addresses: &str) -> Result<(), ServiceError> {
    for address in addresses
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        let unreachable = |reason: String| ServiceError::Unreachable {
            service,
            address: address.to_string(),
            reason,
        };
        let addr = address
            .to_socket_addrs()
            .map_err(|e| unreachable(e.to_string()))?
            .next()
            .ok_or_else(|| unreachable("the address resolves to nothing".into()))?;
        TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .map_err(|e| unreachable(e.to_string()))?;
    }
    Ok(())
}

/// Unwrap a service lookup, failing the test with the message that names the command to run.
fn require<T>(found: Result<T, ServiceError>) -> T {
    match found {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

/// A unique suffix for names of per-test resources (topics, groups, databases).
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// The repository root, for calling the scripts under `ops/` (found at run time: see
/// [`lienthong_contract::repo_root`]).
pub fn repo_root() -> PathBuf {
    lienthong_contract::repo_root()
}

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
        let name = format!("{prefix}-{}", unique_suffix());
        let bootstrap = run_ops_output("kafka.sh", &["start", "--name", &name, "--brokers", "1"])?;
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

pub mod prometheus;

/// A child process (a `lienthong` under test) that is killed if the test ends without
/// stopping it, so that a failed test leaves no process behind holding ports and pipes.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A loopback port that was free a moment ago (for a component's listen address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// SIGINT to `child`, then wait at most `within` for it to end; its exit status.
pub fn interrupt_and_wait(child: &mut ChildGuard, within: Duration) -> std::process::ExitStatus {
    let sent = Command::new("kill")
        .arg("-INT")
        .arg(child.0.id().to_string())
        .status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -INT failed");
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.0.try_wait().ok().flatten() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "did not stop within {within:?} of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A broker of a test's own, started by `ops/kafka.sh start --name <unique> ARGS…` and
/// stopped when dropped (also when the test fails): a fresh broker, or one with listeners of
/// its own (a SASL listener).
pub struct OwnBroker {
    name: String,
    bootstrap: String,
}

impl OwnBroker {
    /// Start it; `args` go to `ops/kafka.sh start` after `--name`.
    pub fn start(prefix: &str, args: &[&str]) -> Result<OwnBroker> {
        let name = format!("{prefix}-{}", unique_suffix());
        let mut all = vec!["start", "--name", &name];
        all.extend_from_slice(args);
        let bootstrap = run_ops_output("kafka.sh", &all)?.trim().to_string();
        Ok(OwnBroker { name, bootstrap })
    }

    /// The bootstrap list the script printed (its PLAINTEXT listener).
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if let Err(e) = run_ops("kafka.sh", &["stop", "--name", &self.name]) {
            eprintln!("stopping broker {}: {e}", self.name);
        }
    }
}

/// Helpers shared by the benchmarks (which print medians of several rounds and ratios).
pub mod bench {
    use std::time::{Duration, Instant};

    use futures::StreamExt;
    use futures::stream::FuturesUnordered;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    /// The median of `v`.
    pub fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }

    /// The median of the per-round ratios `a[i] / b[i]`. Two variants timed seconds apart in
    /// the same round share that moment's load, so on a shared machine this is steadier than
    /// the ratio of the two medians.
    pub fn median_ratio(a: &[f64], b: &[f64]) -> f64 {
        median(a.iter().zip(b).map(|(a, b)| a / b).collect())
    }

    /// CPU time (user + system) of a `/proc/<pid>/stat` line, in seconds; 0 if unreadable.
    /// Fields 14 and 15 (clock ticks of 1/100 s) are counted after the command name, which ends
    /// with the last ')'.
    fn stat_cpu_secs(stat: &str) -> f64 {
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let ticks: f64 = after
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|t| t.parse::<f64>().ok())
            .sum();
        ticks / 100.0
    }

    /// CPU time this process has used, in seconds (0 where there is no `/proc`).
    pub fn process_cpu_secs() -> f64 {
        std::fs::read_to_string("/proc/self/stat").map_or(0.0, |s| stat_cpu_secs(&s))
    }

    /// CPU time used so far by every running process whose command name is `comm` (for
    /// example all of PostgreSQL's: backends, WAL writer, checkpointer), in seconds. Take the
    /// difference around a timed section whose processes outlive it.
    pub fn processes_cpu_secs(comm: &str) -> f64 {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 0.0;
        };
        let named = |stat: &str| {
            stat.split_once(" (")
                .and_then(|(_, rest)| rest.rsplit_once(") "))
                .is_some_and(|(name, _)| name == comm)
        };
        dir.filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|s| named(s))
            .map(|s| stat_cpu_secs(&s))
            .sum()
    }

    /// The `q` quantile (0..=1) of `v`.
    pub fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        v[i.min(v.len() - 1)]
    }

    /// The baseline: a raw rdkafka producer (idempotent, `acks=all`, lz4, linger 5 ms), as the
    /// SDK and gateway benchmarks compare against.
    pub fn raw_producer(bootstrap: &str) -> anyhow::Result<FutureProducer> {
        Ok(lienthong_bus::KafkaConfig::new(bootstrap)
            .producer()
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .create()?)
    }

    /// Produce pre-encoded `(key, value)` records to `topic` with at most `in_flight` awaiting
    /// acknowledgement; returns events/s.
    pub async fn raw_rate(
        producer: &FutureProducer,
        topic: &str,
        records: &[(String, Vec<u8>)],
        in_flight: usize,
    ) -> anyhow::Result<f64> {
        let t = Instant::now();
        let mut pending = FuturesUnordered::new();
        for (key, payload) in records {
            let record: FutureRecord<'_, String, Vec<u8>> =
                FutureRecord::to(topic).key(key).payload(payload);
            pending.push(producer.send(record, Duration::from_secs(30)));
            if pending.len() >= in_flight
                && let Some(Err((e, _))) = pending.next().await
            {
                anyhow::bail!("raw produce failed: {e}");
            }
        }
        while let Some(r) = pending.next().await {
            if let Err((e, _)) = r {
                anyhow::bail!("raw produce failed: {e}");
            }
        }
        Ok(records.len() as f64 / t.elapsed().as_secs_f64())
    }
}

/// One consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its value, if any.
    pub payload: Option<Vec<u8>>,
}

/// Run `ops/<script> args...`, failing with its output if it exits non-zero.
pub fn run_ops(script: &str, args: &[&str]) -> Result<()> {
    let path = repo_root().join("ops").join(script);
    let out = Command::new(&path)
        .args(args)
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}):\n{}{}",
            path.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Run `ops/<script> args...` and return its stdout, failing with its output if it exits
/// non-zero.
pub fn run_ops_output(script: &str, args: &[&str]) -> Result<String> {
    let path = repo_root().join("ops").join(script);
    let out = Command::new(&path)
        .args(args)
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}):\n{}{}",
            path.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A running PostgreSQL server.
#[derive(Debug, Clone)]
pub struct Postgres {
    admin_url: String,
}

/// Look up PostgreSQL, without failing.
pub fn try_postgres() -> Result<Postgres, ServiceError> {
    let service = "PostgreSQL";
    let admin_url = env_var(service, ENV_POSTGRES)?;
    let hostport = admin_url
        .split('@')
        .next_back()
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_string();
    check_reachable(service, &hostport)?;
    Ok(Postgres { admin_url })
}

/// PostgreSQL; the test fails, naming the command to run, if it is not there.
pub fn postgres() -> Postgres {
    require(try_postgres())
}

impl Postgres {
    /// The URL of the administrative database.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The URL of database `db` on this server.
    pub fn url_of(&self, db: &str) -> String {
        match self.admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{db}"),
            None => format!("{}/{db}", self.admin_url),
        }
    }

    /// Create a fresh, empty database for one test and return its URL.
    pub async fn fresh_database(&self, prefix: &str) -> Result<String> {
        let db = format!("{prefix}_{}", unique_suffix());
        let client = connect(&self.admin_url).await?;
        client
            .batch_execute(&format!("CREATE DATABASE \"{db}\""))
            .await
            .with_context(|| format!("CREATE DATABASE {db}"))?;
        Ok(self.url_of(&db))
    }

    /// Drop the database at `url` (one [`Postgres::fresh_database`] made), closing its
    /// sessions: a bench that leaves its databases behind has their autovacuum run during its
    /// later rounds.
    pub async fn drop_database(&self, url: &str) -> Result<()> {
        let db = url
            .rsplit_once('/')
            .map(|(_, db)| db.split('?').next().unwrap_or(db))
            .with_context(|| format!("no database in {url}"))?;
        let client = connect(&self.admin_url).await?;
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
            .await
            .with_context(|| format!("DROP DATABASE {db}"))?;
        Ok(())
    }
}

/// Connect to PostgreSQL at `url`, driving the connection on a background task.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("postgres connection closed with error: {e}");
        }
    });
    Ok(client)
}

/// Look up the interoperability venv's Python, without failing.
pub fn try_python() -> Result<PathBuf, ServiceError> {
    let service = "The Python interoperability environment";
    let path = PathBuf::from(env_var(service, ENV_PYTHON)?);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ServiceError::Unreachable {
            service,
            address: path.display().to_string(),
            reason: "no such file".into(),
        })
    }
}

/// The interoperability venv's Python; the test fails if it is not there.
pub fn python() -> PathBuf {
    require(try_python())
}

/// Serve `router` on a free loopback port for the rest of the test; returns its base URL.
pub async fn serve(router: axum::Router) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            eprintln!("test server stopped: {e}");
        }
    });
    Ok(format!("http://{addr}"))
}

/// Apicurio Registry (an external Confluent-compatible registry), without failing.
pub fn try_apicurio() -> Result<String, ServiceError> {
    let service = "Apicurio Registry";
    let url = env_var(service, ENV_APICURIO)?;
    let hostport = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    check_reachable(service, &hostport)?;
    Ok(url)
}

/// Apicurio's Confluent-compatible API URL; the test fails if it is not running.
pub fn apicurio() -> String {
    require(try_apicurio())
}

/// Count occurrences, for duplicate checks.
pub fn counts<T: std::hash::Hash + Eq, I: IntoIterator<Item = T>>(items: I) -> HashMap<T, usize> {
    let mut m = HashMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_service_names_the_command_to_run() {
        let err = env_var("Apache Kafka", "LIENTHONG_TEST_SURELY_UNSET_VARIABLE").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("LIENTHONG_TEST_SURELY_UNSET_VARIABLE"),
            "{msg}"
        );
        assert!(
            msg.contains(TEST_COMMAND) && msg.contains(START_SERVICES),
            "{msg}"
        );
    }

    #[test]
    fn an_unreachable_service_is_an_error_not_a_pass() {
        // Bind then drop a listener: the port is then (almost surely) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let err = check_reachable("Apache Kafka", &format!("127.0.0.1:{port}")).unwrap_err();
        assert!(matches!(err, ServiceError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains(TEST_COMMAND));
    }

    #[test]
    fn database_urls_keep_the_server_and_change_the_database() {
        let pg = Postgres {
            admin_url: "postgres://lienthong@127.0.0.1:5433/postgres".into(),
        };
        assert_eq!(pg.url_of("t_1"), "postgres://lienthong@127.0.0.1:5433/t_1");
    }
}
