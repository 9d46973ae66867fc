//! The loop every sink connector runs: consume, decode, filter, batch, apply with offsets in one
//! store transaction, retry, dead-letter, and shut down cleanly.
//!
//! **Offsets.** The store is the only source of truth. When the group assigns partitions, the
//! loop reads the store's offsets and assigns the partitions again at exactly those offsets
//! (the beginning if the store has none). Records of a partition not (yet) positioned this way
//! are dropped unread (librdkafka drops what the first assignment fetched once the second is
//! made). No partition is ever paused across an assignment (see `resume_paused`). Each batch
//! tells the store which offset it expects each partition to be at; a store that holds another
//! offset (another instance got there first) refuses the batch ([`StoreError::Fenced`]) and
//! the loop re-reads from the store. Offsets are committed to Kafka after each batch only so
//! that lag shows.
//!
//! **Pipelining.** A batch's store transaction runs on its own task while the loop reads and
//! decodes the next batch; the next batch is handed to the store only once the one before it
//! has landed (committed, its offsets, metrics and receipt taken), so at most one transaction
//! is in flight and each batch expects the offsets the previous one left. A batch whose
//! pipelined transaction fails is applied again serially, with the retries, bisection and
//! fencing below.
//!
//! **Rebalances.** Callbacks run only while the loop polls. The loop lands the batch in flight
//! before it forgets revoked partitions or positions assigned ones; if the group gave a
//! partition of that batch to another instance meanwhile, whichever commits second finds the
//! offsets moved and is fenced ([`StoreError::Fenced`]), so nothing is applied twice. A batch
//! that is waiting for a store to come back loses the records of revoked partitions.
//!
//! **Errors.** A record that can never be applied (not Avro, unknown schema id, a foreign or
//! invalid record, a constraint violation) goes to the dead-letter topic with headers, before
//! the batch that skips it commits. A transient store error pauses consumption and retries the
//! batch with capped, jittered exponential backoff, forever (or until shutdown): nothing is
//! dead-lettered because a store is down. A constraint violation bisects the batch until the
//! one record is found.
//!
//! The loop lives here ([`run`]), and [`start`] runs it as a component (its `/metrics`,
//! `/healthz`, `/readyz`); its parts, each an `impl` of the same `Runner`: positioning
//! at the store's offsets on a rebalance (`rebalance`), decoding a record with its writer
//! schema (`decode`), writing a record that can never be applied to the dead-letter topic
//! (`dead_letter`), and applying a batch with its retries, bisection and fencing (`apply`).

mod apply;
mod dead_letter;
mod decode;
mod fold;
mod rebalance;
mod receipts;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use lienthong_contract::{Catalog, Codec};
use lienthong_registry::client::RegistryClient;
use lienthong_telemetry::component::{Component, Listener, Readiness, Running};
use lienthong_telemetry::{ConnectorMetrics, KafkaClientContext, Telemetry};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

use crate::config::ConnectorConfig;
use crate::error::{ConnectError, StoreError};
use crate::model::{Entity, Layout, Op};
use crate::sink::{Applied, OffsetUpdate, Sink};

pub use dead_letter::{
    H_CLASS, H_CONNECTOR, H_MESSAGE, H_OFFSET, H_PARTITION, H_TOPIC, dlq_headers,
};
pub use fold::fold;
use rebalance::{Ctx, RebalanceEvent};

type Tp = (Arc<str>, i32);

/// How far the consumer reads ahead of the loop (the options may say otherwise): enough for
/// the next batches (16 MiB, 10,000 records a partition), not librdkafka's default of 64 MiB
/// and 100,000 records a partition, which held most of a connector's memory while it drained
/// a large backlog. With thresholds this low, librdkafka's default pause of a second before it
/// fetches again for a partition over them (`fetch.queue.backoff.ms`) halved a one-partition
/// topic's rate; 10 ms does not.
/// How often at most the lag gauge is set (each time, a watermark request per partition).
pub(super) const LAG_INTERVAL: Duration = Duration::from_secs(5);

const PREFETCH: &[(&str, &str)] = &[
    ("queued.max.messages.kbytes", "16384"),
    ("queued.min.messages", "10000"),
    ("fetch.queue.backoff.ms", "10"),
];

/// One consumed record, decoded or not.
struct Item {
    tp: Tp,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    /// The change, or None when the record is skipped (filtered out or dead-lettered).
    op: Option<Op>,
    occurred_at: Option<i64>,
    /// The record's timestamp (ms): the broker's append time on the catalog's topics.
    published_ms: i64,
}

/// What one turn of the loop got.
enum Received<S> {
    Nothing,
    Message(Result<OwnedMessage, rdkafka::error::KafkaError>),
    Landed(Joined<S>),
}

enum Decoded {
    Op(Op, Option<i64>),
    Skip,
    Fail(&'static str, String),
    /// The connector was stopped while it waited for the record's writer schema.
    Interrupted,
}

/// What the task applying a batch gives back: the store, and the transaction's result.
type Joined<S> = Result<(S, Result<Applied, StoreError>), tokio::task::JoinError>;

/// A batch whose store transaction runs on its own task while the loop reads the next one.
struct InFlight<S> {
    items: Vec<Item>,
    /// Where the batch takes its partitions.
    offsets: Vec<OffsetUpdate>,
    /// How many changes it holds.
    ops: usize,
    started: Instant,
    task: tokio::task::JoinHandle<(S, Result<Applied, StoreError>)>,
}

/// A connector's loop over one store.
struct Runner<S: Sink> {
    config: ConnectorConfig,
    /// The store; `None` while a batch's transaction holds it (`in_flight`).
    sink: Option<S>,
    /// `postgres`, `sqlite`, `memory`.
    kind: &'static str,
    in_flight: Option<InFlight<S>>,
    metrics: ConnectorMetrics,
    codec: Codec,
    registry: Option<Arc<RegistryClient>>,
    readers: HashMap<Entity, Schema>,
    entities: HashMap<String, Entity>,
    layouts: HashMap<u32, Result<Arc<Layout>, String>>,
    consumer: StreamConsumer<Ctx>,
    events: Arc<Mutex<Vec<RebalanceEvent>>>,
    wake: Arc<tokio::sync::Notify>,
    /// Partitions paused while a batch waits for its store (shared with the context).
    paused: Arc<Mutex<Vec<(String, i32)>>>,
    producer: FutureProducer<KafkaClientContext>,
    /// Partitions positioned at the store's offset, with that offset (None: the store has none).
    positions: HashMap<Tp, Option<i64>>,
    /// Highest offset taken into the batch per partition.
    seen: HashMap<Tp, i64>,
    topics: HashMap<String, Arc<str>>,
    batch: Vec<Item>,
    batch_since: Option<Instant>,
    /// Records that arrived while a batch was being retried.
    held_back: VecDeque<OwnedMessage>,
    shutdown: CancellationToken,
    shutdown_deadline: Option<Instant>,
    /// A client outside the group, for high watermarks (the lag gauge).
    watermarks: Arc<BaseConsumer>,
    lag_updated: Option<Instant>,
    /// A commit came within 5 s of the last lag update: the gauge is to be set again once
    /// that time is up, even if nothing else arrives (else it would stay at a stale value).
    lag_stale: bool,
    /// The certificate log, when the connector verifies signatures (`[signatures]`).
    certificates: Option<Arc<Certificates>>,
    /// Batch roots already verified.
    verifier: lienthong_signing::RecordVerifier,
    /// What the connector signs its apply receipts with (`[receipts]`).
    receipts: Option<receipts::Receipts>,
    /// Set when the loop folds the log up to given offsets (`fold`) rather than runs a
    /// connector: no group, no dead-letter records, no commits to Kafka, and it stops once
    /// every partition reached its bound.
    folding: Option<Folding>,
}

/// Where a fold stops, and which partitions got there.
struct Folding {
    /// Per partition, the offset the fold stops before.
    until: HashMap<Tp, i64>,
    /// Partitions that reached their bound (or have nothing left below it).
    done: HashSet<Tp>,
    /// Records taken, for a progress bar.
    progress: crate::verify::Progress,
}

impl Folding {
    /// Whether the fold may take the record at `offset` of `tp`; a record at or past the bound
    /// means the partition is done.
    fn admits(&mut self, tp: &Tp, offset: i64) -> bool {
        match self.until.get(tp) {
            Some(until) if offset < *until => {
                self.progress.advance(1);
                true
            }
            _ => {
                self.done.insert(tp.clone());
                false
            }
        }
    }

    /// Note that the fold's store now holds `next` for `tp`.
    fn reached(&mut self, tp: &Tp, next: i64) {
        if self.until.get(tp).is_some_and(|u| next >= *u) {
            self.done.insert(tp.clone());
        }
    }

    fn finished(&self) -> bool {
        self.until.keys().all(|tp| self.done.contains(tp))
    }
}

/// The certificate log a connector verifies against.
type Certificates = lienthong_signing::CertificateLog<rdkafka::consumer::DefaultConsumerContext>;

/// Run a connector over `sink` until `shutdown` is cancelled (then finish the in-flight batch
/// within the configured time) or a permanent error stops it.
pub async fn run<S: Sink>(
    config: ConnectorConfig,
    catalog: Arc<Catalog>,
    sink: S,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) -> Result<(), ConnectError> {
    let metrics = telemetry.connector.clone();
    let name = config.name.clone();
    metrics.up.with_label_values(&[&name]).set(1);
    let result = async {
        check_kafka(&config).await?;
        let certificates = open_certificates(&config, &shutdown).await?;
        let mut runner = Runner::new(
            config,
            catalog,
            sink,
            &telemetry,
            certificates,
            shutdown,
            None,
        )?;
        tracing::info!(connector = %runner.name(), store = runner.kind, group = runner.config.group(), "connector started");
        runner.run().await
    }
    .await;
    metrics.up.with_label_values(&[&name]).set(0);
    metrics.retrying.with_label_values(&[&name]).set(0);
    if let Err(e) = &result {
        tracing::error!(connector = %name, error = %e, "connector stopped");
    }
    result
}

/// Start a connector in the shape every component has (`lienthong_telemetry::component`):
/// `/metrics`, `/healthz` and `/readyz` on `metrics_listen` if it is set; `open` opens the
/// store (it may wait for one that is unreachable, and gives `None` if stopped first), then the
/// loop ([`run`]) runs until `shutdown` or [`Running::stop`]. With `[verify] interval_secs`,
/// `open` opens the store a second time for the scheduled check beside the loop
/// (`crate::verify`). `/readyz` answers 503 until the
/// store is open and while consumption is paused for a store or registry that does not answer.
pub async fn start<S, Open, Opening>(
    config: ConnectorConfig,
    telemetry: &Arc<Telemetry>,
    shutdown: &CancellationToken,
    open: Open,
) -> Result<Running<ConnectError>, ConnectError>
where
    S: Sink + Sync,
    Open: Fn(CancellationToken) -> Opening,
    Opening: Future<Output = Result<Option<S>, ConnectError>> + Send + 'static,
{
    let catalog = Arc::new(Catalog::load(&config.schemas.dir)?);
    let mut component = Component::new(config.name.clone(), telemetry, shutdown)
        .readiness(readiness(&config.name, &telemetry.connector));
    if let Some(listen) = &config.metrics_listen {
        let listener = Listener::bind("metrics_listen", listen).await?;
        tracing::info!(address = %listener.addr(), "serving /metrics");
        component = component.serve(listener);
    }
    let telemetry = Arc::clone(telemetry);
    Ok(component.start(move |stopping| {
        let opening = open(stopping.token());
        // The scheduled check reads the store on a connection of its own.
        let checking = (config.verify.interval_secs > 0).then(|| {
            let token = stopping.token().child_token();
            (token.clone(), open(token))
        });
        async move {
            let Some(sink) = opening.await? else {
                return Ok(());
            };
            let checks = checking.map(|(token, opening)| {
                let task = tokio::spawn(crate::verify::scheduled(
                    config.clone(),
                    Arc::clone(&catalog),
                    Arc::clone(&telemetry),
                    opening,
                    token.clone(),
                ));
                (token, task)
            });
            let result = run(config, catalog, sink, telemetry, stopping.token()).await;
            if let Some((token, task)) = checks {
                token.cancel();
                let _ = task.await;
            }
            result
        }
    }))
}

/// An authorization refusal: permanent until someone grants it, so the connector stops and says
/// so rather than retry forever.
fn is_denied(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::TopicAuthorizationFailed
                | C::GroupAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::TransactionalIdAuthorizationFailed
        )
    )
}

/// A connector is ready once its loop runs over an open store, and while nothing holds its
/// consumption paused.
fn readiness(name: &str, metrics: &ConnectorMetrics) -> Readiness {
    let up = metrics.up.with_label_values(&[name]);
    let retrying = metrics.retrying.with_label_values(&[name]);
    Arc::new(move || {
        let mut problems = Vec::new();
        if up.get() == 0 {
            problems.push("the store is not open yet".to_string());
        }
        if retrying.get() != 0 {
            problems.push(
                "consumption paused: the store or the schema registry does not answer (see the log)"
                    .to_string(),
            );
        }
        Box::pin(async move { problems })
    })
}

/// Before anything else: Kafka answers within `startup_timeout_secs`, and every configured
/// topic exists. A connector started against a wrong address or topic says so and stops,
/// instead of waiting silently for records that will never come.
async fn check_kafka(config: &ConnectorConfig) -> Result<(), ConnectError> {
    let client = config.kafka.watermarks();
    let bootstrap = config.kafka.bootstrap.clone();
    let seconds = config.startup_timeout_secs.max(1);
    let mut topics: Vec<String> = config.topics.iter().map(|t| t.name.clone()).collect();
    topics.extend(config.receipts.as_ref().map(|r| r.topic.clone()));
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client.create()?;
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(seconds))
            .map_err(|source| ConnectError::KafkaUnreachable {
                bootstrap: bootstrap.clone(),
                seconds,
                source,
            })?;
        for topic in topics {
            let known = metadata
                .topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
            if !known {
                return Err(ConnectError::UnknownTopic {
                    topic,
                    bootstrap: bootstrap.clone(),
                });
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| ConnectError::Internal(format!("checking Kafka: {e}")))?
}

impl<S: Sink> Runner<S> {
    fn new(
        config: ConnectorConfig,
        catalog: Arc<Catalog>,
        sink: S,
        telemetry: &Telemetry,
        certificates: Option<Arc<Certificates>>,
        shutdown: CancellationToken,
        folding: Option<Folding>,
    ) -> Result<Self, ConnectError> {
        let metrics = telemetry.connector.clone();
        let kafka = KafkaClientContext::new(telemetry, "connector");
        let mut readers = HashMap::new();
        let mut entities = HashMap::new();
        for t in &config.topics {
            let e = config.entity_of(&t.name)?;
            entities.insert(t.name.clone(), e);
            readers.insert(e, catalog.topic(e.catalog_topic())?.schema.clone());
        }
        let (codec, registry) = match &config.schemas.registry_url {
            Some(url) => {
                let codec = Codec::new();
                let credentials = config.schemas.registry_credentials()?;
                let client = RegistryClient::new(url, credentials, codec.clone())
                    .map_err(|e| ConnectError::Internal(format!("registry client: {e}")))?;
                (codec, Some(Arc::new(client)))
            }
            None => (Codec::from_catalog(&catalog)?, None),
        };
        let kc = config.kafka.consumer_with(config.group(), PREFETCH);
        let events = Arc::new(Mutex::new(Vec::new()));
        let wake = Arc::new(tokio::sync::Notify::new());
        let paused = Arc::new(Mutex::new(Vec::new()));
        let consumer: StreamConsumer<Ctx> = kc.create_with_context(Ctx {
            events: events.clone(),
            wake: wake.clone(),
            paused: paused.clone(),
            kafka: kafka.clone(),
        })?;
        if folding.is_none() {
            let topic_names: Vec<&str> = config.topics.iter().map(|t| t.name.as_str()).collect();
            consumer.subscribe(&topic_names)?;
        }
        let producer: FutureProducer<KafkaClientContext> = config
            .kafka
            .producer_with(&[("message.timeout.ms", "30000")])
            .create_with_context(kafka)?;
        let watermarks: BaseConsumer = config.kafka.watermarks().create()?;
        let receipts = config
            .receipts
            .as_ref()
            .map(receipts::Receipts::open)
            .transpose()?;
        Ok(Runner {
            config,
            kind: sink.kind(),
            sink: Some(sink),
            in_flight: None,
            metrics,
            codec,
            registry,
            readers,
            entities,
            layouts: HashMap::new(),
            consumer,
            events,
            wake,
            paused,
            producer,
            positions: HashMap::new(),
            seen: HashMap::new(),
            topics: HashMap::new(),
            batch: Vec::new(),
            batch_since: None,
            held_back: VecDeque::new(),
            shutdown,
            shutdown_deadline: None,
            watermarks: Arc::new(watermarks),
            lag_updated: None,
            lag_stale: false,
            certificates,
            verifier: lienthong_signing::RecordVerifier::new(),
            receipts,
            folding,
        })
    }

    /// The signing agency of `m`, when the connector verifies signatures (`Ok(None)` when it
    /// does not); why not, when the signature is refused.
    fn signer(&self, m: &OwnedMessage) -> Result<Option<String>, String> {
        let Some(log) = &self.certificates else {
            return Ok(None);
        };
        self.verifier
            .verify_message(&log.read(), m)
            .map(|c| Some(c.agency().to_string()))
            .map_err(|r| r.to_string())
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    fn topic_arc(&mut self, topic: &str) -> Arc<str> {
        if let Some(t) = self.topics.get(topic) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(topic);
        self.topics.insert(topic.to_string(), t.clone());
        t
    }

    async fn run(&mut self) -> Result<(), ConnectError> {
        let max_wait = Duration::from_millis(self.config.batch.max_wait_ms);
        loop {
            let mut idle = false;
            self.handle_rebalances().await?;
            if self.shutdown.is_cancelled() {
                break;
            }
            if self.folding.as_ref().is_some_and(Folding::finished)
                && self.batch.is_empty()
                && self.in_flight.is_none()
                && self.held_back.is_empty()
            {
                return Ok(());
            }
            if let Some(m) = self.held_back.pop_front() {
                self.take(m).await?;
            } else {
                let lag_due = self
                    .lag_updated
                    .filter(|_| self.lag_stale)
                    .map(|t| t + LAG_INTERVAL);
                let deadline = self
                    .batch_since
                    .map(|t| t + max_wait)
                    .into_iter()
                    .chain(lag_due)
                    .min()
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                // Adaptive flushing: with records in the batch and no batch in flight, the
                // consumer is asked once whether more is ready; if not, the batch is applied
                // now rather than at its deadline. Under load more is always ready, and
                // batches grow; while a batch is in flight the next one grows until it lands.
                let waiting = !self.batch.is_empty() && self.in_flight.is_none();
                let applying = self.in_flight.is_some();
                let in_flight = &mut self.in_flight;
                let landed = async move {
                    match in_flight {
                        Some(f) => (&mut f.task).await,
                        None => std::future::pending().await,
                    }
                };
                let received = tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => Received::Nothing,
                    _ = self.wake.notified() => Received::Nothing,
                    joined = landed, if applying => Received::Landed(joined),
                    m = self.consumer.recv() => Received::Message(m.map(|m| m.detach())),
                    _ = std::future::ready(()), if waiting => {
                        idle = true;
                        Received::Nothing
                    }
                    _ = tokio::time::sleep_until(deadline.into()) => Received::Nothing,
                };
                match received {
                    Received::Nothing => {}
                    Received::Landed(joined) => self.landed(joined).await?,
                    Received::Message(Ok(m)) => self.take(m).await?,
                    Received::Message(Err(e)) if is_denied(&e) => {
                        return Err(ConnectError::Denied {
                            connector: self.config.name.clone(),
                            source: e,
                        });
                    }
                    Received::Message(Err(e)) => {
                        tracing::warn!(connector = %self.name(), error = %e, "Kafka consumer error");
                        self.metrics
                            .retries
                            .with_label_values(&[&self.config.name, "kafka"])
                            .inc();
                        // While Kafka is away every receive fails at once: do not spin.
                        tokio::select! {
                            _ = self.shutdown.cancelled() => {}
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        }
                    }
                }
            }
            if self.lag_stale && self.folding.is_none() {
                self.update_lag();
            }
            let due = idle || self.batch_since.is_some_and(|t| t.elapsed() >= max_wait);
            if self.batch.len() >= self.config.batch.max_records || (due && !self.batch.is_empty())
            {
                self.flush().await?;
            } else if due {
                self.batch_since = None;
            }
        }
        // Shutdown: finish the batches in flight and waiting within the bounded time, then
        // leave the group.
        self.shutdown_deadline =
            Some(Instant::now() + Duration::from_secs(self.config.shutdown_timeout_secs));
        self.land().await?;
        while let Some(m) = self.held_back.pop_front() {
            self.take(m).await?;
        }
        if !self.batch.is_empty() {
            self.flush().await?;
        }
        self.land().await?;
        self.consumer.unsubscribe();
        if self.receipts.is_some() {
            // The last batches' receipts are on their way: give them a moment to arrive.
            let producer = self.producer.clone();
            let _ = tokio::task::spawn_blocking(move || {
                rdkafka::producer::Producer::flush(&producer, Duration::from_secs(5))
            })
            .await;
        }
        Ok(())
    }

    /// Take one record into the batch.
    async fn take(&mut self, m: OwnedMessage) -> Result<(), ConnectError> {
        // Decoding a backlog never waits (the consumer always has a record ready), and the
        // consumer is not one of tokio's resources: without this the loop would keep its
        // worker thread, and the task applying the batch in flight (and the store client's
        // connection) could wait behind it instead of running beside it.
        tokio::task::consume_budget().await;
        let tp: Tp = (self.topic_arc(m.topic()), m.partition());
        let offset = m.offset();
        let Some(position) = self.positions.get(&tp) else {
            return Ok(()); // not positioned at the store's offset yet
        };
        if position.is_some_and(|p| offset < p) || self.seen.get(&tp).is_some_and(|s| offset <= *s)
        {
            return Ok(());
        }
        if let Some(folding) = &mut self.folding
            && !folding.admits(&tp, offset)
        {
            return Ok(());
        }
        self.seen.insert(tp.clone(), offset);
        self.metrics
            .consumed
            .with_label_values(&[&self.config.name, m.topic()])
            .inc();
        let key = m.key().map(<[u8]>::to_vec);
        let payload = m.payload().map(<[u8]>::to_vec);
        let decoded = match self.signer(&m) {
            Err(refusal) => Decoded::Fail("signature", refusal),
            Ok(signer) => {
                self.decode(
                    m.topic(),
                    key.as_deref(),
                    payload.as_deref(),
                    signer.as_deref(),
                )
                .await?
            }
        };
        if let Decoded::Interrupted = decoded {
            // Nothing of this partition from here on may commit: it is read again, from the
            // store's offset, at the next start.
            self.forget(&[(tp.0.to_string(), tp.1)]);
            return Ok(());
        }
        let mut item = Item {
            tp,
            offset,
            key,
            payload,
            op: None,
            occurred_at: None,
            published_ms: m.timestamp().to_millis().unwrap_or(0),
        };
        match decoded {
            Decoded::Op(op, at) => {
                item.op = Some(op);
                item.occurred_at = at;
            }
            Decoded::Skip => {
                self.metrics
                    .filtered
                    .with_label_values(&[&self.config.name, m.topic()])
                    .inc();
            }
            Decoded::Fail(class, message) => {
                self.dead_letter(&item, class, &message).await?;
            }
            Decoded::Interrupted => {}
        }
        self.batch.push(item);
        if self.batch_since.is_none() {
            self.batch_since = Some(Instant::now());
        }
        Ok(())
    }
}

/// Open the certificate log when the connector verifies signatures, read to its end.
async fn open_certificates(
    config: &ConnectorConfig,
    shutdown: &CancellationToken,
) -> Result<Option<Arc<Certificates>>, ConnectError> {
    let Some(signatures) = &config.signatures else {
        return Ok(None);
    };
    let certificates = Certificates::open_trusting(
        &config.kafka,
        &signatures.topic,
        &signatures.trusted_cas,
        format!("{}-certificates", config.group()),
        rdkafka::consumer::DefaultConsumerContext,
        shutdown.child_token(),
    )
    .await
    .map_err(|e| match e.is_transient() {
        true => ConnectError::Internal(format!("the certificate log: {e}")),
        false => ConnectError::Config(format!("signatures: {e}")),
    })?;
    tracing::info!(connector = %config.name, topic = %signatures.topic, certificates = certificates.read().entries().count(), "verifying signatures");
    Ok(Some(Arc::new(certificates)))
}
