//! The committer: every accepted request's records go to Kafka inside a transaction.
//!
//! One task owns a transactional producer. It takes the first waiting request, gathers the
//! requests that arrive within `group_commit_ms` (group commit), and runs one transaction for
//! all of them: begin, produce every record, commit. Each request is answered only after the
//! commit — its receipts are then durable and visible to `read_committed` consumers — or, on
//! any failure, after an abort: then nothing of it is visible, so a 503 means "nothing was
//! produced". If even the abort fails (the broker is gone), the producer is dropped and a new
//! one is initialised with the same `transactional.id` before the next transaction; the
//! broker's transaction coordinator then aborts whatever the old one left open.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use lienthong_telemetry::KafkaClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::GatewayConfig;
use lienthong_bus::KafkaConfig;

/// One record to produce.
#[derive(Debug, Clone)]
pub struct OutRecord {
    /// Topic.
    pub topic: Arc<str>,
    /// Key.
    pub key: String,
    /// Value (Confluent-framed Avro).
    pub value: Vec<u8>,
    /// Its signature header's value, when the gateway signs (`lienthong_signing::H_SIGNATURE`).
    pub signature: Option<Vec<u8>>,
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// A request's records and where to send the outcome.
pub struct Job {
    /// The records, all committed together or not at all.
    pub records: Vec<OutRecord>,
    /// Where they landed, or why not.
    pub reply: oneshot::Sender<Result<Vec<Placed>, Failure>>,
}

/// Why a transaction did not commit.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What happened.
    pub message: String,
    /// The commit was sent but neither it nor the abort was confirmed (Kafka went away in
    /// between): the broker may yet complete the commit. Otherwise nothing was produced.
    pub maybe_committed: bool,
}

/// The producer's state, for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ProducerState {
    /// Not initialised (yet, or after a failure).
    Down = 0,
    /// Initialised: transactions can run.
    Ready = 1,
    /// Fenced by another instance using the same `transactional.id`; stays so.
    Fenced = 2,
}

/// Shared view of Kafka's health.
#[derive(Debug, Default)]
pub struct Health {
    kafka_reachable: AtomicBool,
    /// Partitions of the served topics without a leader at the last probe (a broker that just
    /// came back, a failover in progress): writes to them cannot succeed yet.
    leaderless: std::sync::atomic::AtomicUsize,
    producer: AtomicU8,
}

impl Health {
    /// Did the last probe reach a broker?
    pub fn kafka_reachable(&self) -> bool {
        self.kafka_reachable.load(Ordering::Relaxed)
    }

    /// The producer's state.
    pub fn producer(&self) -> ProducerState {
        match self.producer.load(Ordering::Relaxed) {
            1 => ProducerState::Ready,
            2 => ProducerState::Fenced,
            _ => ProducerState::Down,
        }
    }

    fn set_producer(&self, s: ProducerState) {
        self.producer.store(s as u8, Ordering::Relaxed);
    }

    pub(crate) fn set_reachable(&self, up: bool) {
        self.kafka_reachable.store(up, Ordering::Relaxed);
    }

    /// How many partitions of the served topics had no leader at the last probe.
    pub fn leaderless_partitions(&self) -> usize {
        self.leaderless.load(Ordering::Relaxed)
    }
}

struct Committer {
    config: GatewayConfig,
    transactional_id: String,
    kafka: KafkaConfig,
    producer: Option<Arc<FutureProducer<KafkaClientContext>>>,
    health: Arc<Health>,
    timeout: Duration,
    /// Counts the producer's client errors.
    errors: KafkaClientContext,
}

fn is_fenced(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    )
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("Kafka call did not finish: {e}"))
}

impl Committer {
    async fn ensure_producer(&mut self) -> Result<Arc<FutureProducer<KafkaClientContext>>, String> {
        if self.health.producer() == ProducerState::Fenced {
            return Err(format!(
                "fenced: another gateway instance uses transactional.id {:?}",
                self.transactional_id
            ));
        }
        if let Some(p) = &self.producer {
            return Ok(p.clone());
        }
        let timeout_ms = self.timeout.as_millis().max(1000);
        let (timeout, transaction_timeout) = (
            timeout_ms.to_string(),
            (timeout_ms * 2).max(10_000).to_string(),
        );
        // Its timeouts are the gateway's own whatever `[kafka] options` say: a delivery may
        // take at most `kafka_timeout_ms`, and a transaction must outlive its deliveries.
        let producer: FutureProducer<KafkaClientContext> = self
            .kafka
            .transactional_producer(
                &self.transactional_id,
                &[
                    ("compression.type", "lz4"),
                    ("linger.ms", "1"),
                    ("batch.num.messages", "10000"),
                    // librdkafka backs off up to 10 s between reconnections: a producer that
                    // saw the broker go away would answer its first requests after the broker
                    // came back only with timeouts. A second at most, like the health probe.
                    ("reconnect.backoff.max.ms", "1000"),
                ],
            )
            .set("message.timeout.ms", &timeout)
            .set("transaction.timeout.ms", &transaction_timeout)
            .set("socket.connection.setup.timeout.ms", &timeout)
            .create_with_context(self.errors.clone())
            .map_err(|e| format!("creating the Kafka producer: {e}"))?;
        let producer = Arc::new(producer);
        let p = producer.clone();
        let timeout = self.timeout;
        match blocking(move || p.init_transactions(timeout)).await? {
            Ok(()) => {
                self.health.set_producer(ProducerState::Ready);
                self.producer = Some(producer.clone());
                Ok(producer)
            }
            Err(e) => {
                if is_fenced(&e) {
                    self.health.set_producer(ProducerState::Fenced);
                }
                let _ = blocking(move || drop(producer)).await;
                Err(format!("initialising Kafka transactions: {e}"))
            }
        }
    }

    async fn reset(&mut self) {
        self.health.set_producer(ProducerState::Down);
        if let Some(p) = self.producer.take() {
            let _ = blocking(move || drop(p)).await;
        }
    }

    /// Run one transaction holding every record of `jobs`.
    async fn transaction(&mut self, jobs: &[Job]) -> Result<Vec<Vec<Placed>>, Failure> {
        let sure = |message: String| Failure {
            message: format!("nothing was produced: {message}"),
            maybe_committed: false,
        };
        let producer = self.ensure_producer().await.map_err(sure)?;
        if let Err(e) = producer.begin_transaction() {
            self.reset().await;
            return Err(sure(format!("begin transaction: {e}")));
        }
        let deadline = Instant::now() + self.timeout;
        let mut futures = Vec::new();
        let mut failure = None;
        let mut commit_sent = false;
        'jobs: for job in jobs {
            for r in &job.records {
                let mut record = FutureRecord::to(&r.topic).key(&r.key).payload(&r.value);
                if let Some(signature) = &r.signature {
                    record = record.headers(rdkafka::message::OwnedHeaders::new().insert(
                        rdkafka::message::Header {
                            key: lienthong_signing::H_SIGNATURE,
                            value: Some(signature.as_slice()),
                        },
                    ));
                }
                loop {
                    match producer.send_result(record) {
                        Ok(f) => {
                            futures.push(f);
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                            if Instant::now() < deadline =>
                        {
                            record = back;
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        Err((e, _)) => {
                            failure = Some(format!("produce: {e}"));
                            break 'jobs;
                        }
                    }
                }
            }
        }
        // Wait for every acknowledgement first: committing with records outstanding made
        // librdkafka's commit take ~100 ms more. It also tells where each record landed.
        let mut acked: Option<Vec<Placed>> = None;
        if failure.is_none() {
            // In order, one after the other: the acknowledgements arrive about together, so
            // most are ready when their turn comes, and there is no set of futures to manage.
            let acks = async {
                let mut placed = Vec::with_capacity(futures.len());
                for f in &mut futures {
                    match f.await {
                        Ok(Ok(d)) => placed.push(Placed {
                            partition: d.partition,
                            offset: d.offset,
                        }),
                        Ok(Err((e, _))) => return Err(format!("produce: {e}")),
                        Err(_) => return Err("delivery report lost".to_string()),
                    }
                }
                Ok(placed)
            };
            match tokio::time::timeout_at(deadline, acks).await {
                Err(_) => failure = Some("Kafka did not acknowledge in time".into()),
                Ok(Err(why)) => failure = Some(why),
                Ok(Ok(placed)) => acked = Some(placed),
            }
        }
        if let Some(placed) = &acked {
            settle_delivery_reports(&producer, deadline).await;
            let p = producer.clone();
            let timeout = self.timeout;
            commit_sent = true;
            match blocking(move || p.commit_transaction(timeout)).await {
                Err(e) => failure = Some(format!("commit: {e}")),
                Ok(Ok(())) => {
                    let mut out = Vec::with_capacity(jobs.len());
                    let mut it = placed.iter().copied();
                    for job in jobs {
                        out.push(it.by_ref().take(job.records.len()).collect());
                    }
                    return Ok(out);
                }
                Ok(Err(e)) => {
                    if is_fenced(&e) {
                        self.health.set_producer(ProducerState::Fenced);
                    }
                    failure = Some(format!("commit: {e}"));
                }
            }
        }
        let why = failure.unwrap_or_default();
        // Every record was acknowledged and the commit was sent: the broker may have it.
        let acked = if commit_sent { acked } else { None };
        let p = producer.clone();
        let timeout = self.timeout;
        let aborted = blocking(move || p.abort_transaction(timeout)).await;
        drop(futures);
        if let Ok(Ok(())) = aborted {
            return Err(sure(why));
        }
        tracing::warn!(
            ?aborted,
            "abort failed: recreating the transactional producer"
        );
        let fenced = self.health.producer() == ProducerState::Fenced;
        self.reset().await;
        if fenced {
            self.health.set_producer(ProducerState::Fenced);
        }
        let Some(placed) = acked else {
            // The commit never left: the coordinator aborts the transaction (at the new
            // producer's initialisation, or at the transaction timeout).
            return Err(sure(why));
        };
        // The commit may have reached the coordinator. Find out: a new producer with the same
        // transactional.id makes the coordinator finish the old transaction one way or the
        // other; then a read_committed read at one of its offsets tells which.
        let Some(first) = jobs.iter().find_map(|j| j.records.first()) else {
            return Err(sure(why));
        };
        match self.resolve(&first.topic, placed[0]).await {
            Some(true) => {
                tracing::info!("the unconfirmed commit turned out committed");
                let mut out = Vec::with_capacity(jobs.len());
                let mut it = placed.into_iter();
                for job in jobs {
                    out.push(it.by_ref().take(job.records.len()).collect());
                }
                Ok(out)
            }
            Some(false) => Err(sure(format!("{why}; the transaction was aborted"))),
            None => Err(Failure {
                message: format!(
                    "{why}; Kafka did not come back within {} ms to say whether the commit happened",
                    self.config.outcome_resolve_ms
                ),
                maybe_committed: true,
            }),
        }
    }

    /// After an unconfirmed commit: was the record at `at` of `topic` committed? `None` if
    /// Kafka did not come back within `outcome_resolve_ms`.
    async fn resolve(&mut self, topic: &str, at: Placed) -> Option<bool> {
        let deadline = Instant::now() + Duration::from_millis(self.config.outcome_resolve_ms);
        loop {
            if self.ensure_producer().await.is_ok() {
                break;
            }
            if Instant::now() >= deadline || self.health.producer() == ProducerState::Fenced {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let consumer: BaseConsumer = self
            .kafka
            .consumer(&format!(
                "lienthong-gateway-resolve-{}",
                crate::idem::now_ms()
            ))
            .set("enable.partition.eof", "true")
            .create()
            .ok()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, at.partition, Offset::Offset(at.offset))
            .ok()?;
        consumer.assign(&tpl).ok()?;
        let timeout = self.timeout.max(Duration::from_secs(5));
        blocking(move || {
            let until = std::time::Instant::now() + timeout;
            while std::time::Instant::now() < until {
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) => return Some(m.offset() == at.offset),
                    Some(Err(KafkaError::PartitionEOF(_))) => return Some(false),
                    _ => {}
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    async fn run(mut self, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>) {
        // Initialise eagerly, so the first request does not pay for it (failure is retried
        // at the first transaction).
        if let Err(e) = self.ensure_producer().await {
            tracing::warn!(error = %e, "Kafka producer not ready yet");
        }
        let linger = Duration::from_millis(self.config.group_commit_ms);
        let max = self.config.max_transaction_records.max(1);
        let idle = Duration::from_millis(self.config.health_interval_ms.max(100));
        loop {
            // A producer dropped after a failure is made again while idle, once Kafka answers:
            // `/readyz` says ready only then, and the next request does not pay for it.
            if self.producer.is_none()
                && self.health.kafka_reachable()
                && let Err(e) = self.ensure_producer().await
            {
                tracing::debug!(error = %e, "Kafka producer not ready yet");
            }
            // Gather while holding the queue; run the transaction after letting go of it, so
            // the next committer gathers the next group meanwhile (pipelining).
            let (jobs, count) = {
                let first = tokio::time::timeout(idle, async {
                    let mut rx = rx.lock().await;
                    let first = rx.recv().await;
                    (rx, first)
                })
                .await;
                let (mut rx, first) = match first {
                    Err(_) => continue,
                    Ok(pair) => pair,
                };
                let Some(first) = first else {
                    break;
                };
                let mut count = first.records.len();
                let mut jobs = vec![first];
                let until = Instant::now() + linger;
                while count < max {
                    match tokio::time::timeout_at(until, rx.recv()).await {
                        Ok(Some(job)) => {
                            count += job.records.len();
                            jobs.push(job);
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
                (jobs, count)
            };
            match self.transaction(&jobs).await {
                Ok(placed) => {
                    for (job, p) in jobs.into_iter().zip(placed) {
                        let _ = job.reply.send(Ok(p));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e.message, records = count, "transaction failed");
                    for job in jobs {
                        let _ = job.reply.send(Err(e.clone()));
                    }
                }
            }
        }
        // Every sender is gone: drain done. Let the producer go with nothing pending.
        if let Some(p) = self.producer.take() {
            let timeout = self.timeout;
            let _ = blocking(move || {
                let _ = p.flush(timeout);
            })
            .await;
        }
        tracing::info!("committer stopped");
    }
}

/// Wait (within `deadline`) until librdkafka has let go of every delivery report, before
/// committing. A record's acknowledgement reaches us from inside rdkafka's polling thread, a
/// moment before that thread frees the report; librdkafka counts the record as outstanding
/// until then. rdkafka's `commit_transaction` flushes first, and a flush that finds one
/// outstanding record polls the producer's queue for up to 100 ms — a queue the polling thread
/// empties, so the wait runs its full length. That was the gateway's ~100 ms p99. The steps
/// here are short (tokio rounds them up to 1 ms), and the wait gives up after those same
/// 100 ms (the count also covers any other event the polling thread has yet to serve): at worst
/// a commit takes as long as it did without it.
async fn settle_delivery_reports(producer: &FutureProducer<KafkaClientContext>, deadline: Instant) {
    let until = deadline.min(Instant::now() + Duration::from_millis(100));
    while producer.in_flight_count() > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Start `config.producers` committer tasks, each with its own transactional producer
/// (`<transactional_id>-<i>` when more than one), sharing one queue: while one commits, the
/// next gathers. Send them [`Job`]s; they stop when every sender is dropped.
pub fn spawn_committer(
    config: &GatewayConfig,
    kafka: &KafkaConfig,
    health: Arc<Health>,
    errors: KafkaClientContext,
) -> (mpsc::Sender<Job>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(4096);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let n = config.producers.max(1);
    let committers: Vec<_> = (0..n)
        .map(|i| {
            let committer = Committer {
                config: config.clone(),
                transactional_id: if n == 1 {
                    config.transactional_id.clone()
                } else {
                    format!("{}-{i}", config.transactional_id)
                },
                kafka: kafka.clone(),
                producer: None,
                health: health.clone(),
                timeout: Duration::from_millis(config.kafka_timeout_ms.max(100)),
                errors: errors.clone(),
            };
            tokio::spawn(committer.run(rx.clone()))
        })
        .collect();
    let all = tokio::spawn(async move {
        for c in committers {
            let _ = c.await;
        }
    });
    (tx, all)
}

/// Probe Kafka every `interval` until `shutdown`: a metadata request with a short timeout.
pub fn spawn_health_probe(
    kafka: &KafkaConfig,
    topics: Vec<String>,
    health: Arc<Health>,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, KafkaError> {
    let probe: BaseProducer = kafka.watermarks().create()?;
    let probe = Arc::new(probe);
    let topics = Arc::new(topics);
    let interval = interval.max(Duration::from_millis(50));
    Ok(tokio::spawn(async move {
        loop {
            let (p, topics) = (probe.clone(), topics.clone());
            let timeout = interval.max(Duration::from_millis(500));
            let seen = tokio::task::spawn_blocking(move || {
                let m = p.client().fetch_metadata(None, timeout).ok()?;
                if m.brokers().is_empty() {
                    return None;
                }
                let leaderless = m
                    .topics()
                    .iter()
                    .filter(|t| topics.iter().any(|name| name == t.name()))
                    .flat_map(|t| t.partitions())
                    // Only a missing leader: a replica that is down (one broker of three) is
                    // reported as a partition error too, while writes still succeed.
                    .filter(|p| p.leader() < 0)
                    .count();
                Some(leaderless)
            })
            .await
            .unwrap_or(None);
            health.set_reachable(seen.is_some());
            if let Some(n) = seen {
                health.leaderless.store(n, Ordering::Relaxed);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }))
}
