//! The producer SDK: how a department's or ward's Rust system, and lienthong's own components,
//! put a typed event on the bus.
//!
//! A [`Publisher`] is one agency's identity on the bus. [`Publisher::publish`] checks that the
//! agency may write the event's topic and publishes only as itself, normalises the event's text
//! to NFC, encodes it with its registered schema id (learned once, at [`Publisher::connect`]),
//! keys it by the aggregate id so all events of one case stay in order, and hands it to an
//! idempotent `acks=all` producer. The returned [`Receipt`] comes only once Kafka has the
//! record. Many publishes may be in flight; a bounded number is, and the next waits
//! (backpressure). [`Publisher::flush`] drains on shutdown.
//!
//! A publisher given its agency's signing key ([`Publisher::with_signer`], issue #29) signs
//! what it publishes: records queue for one task that signs whatever has gathered as one
//! batch (one ECDSA signature over a Merkle root; see `lienthong_signing::SignedBatch`) and
//! hands each to Kafka with its signature headers, in the order they were published.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use lienthong_bus::KafkaConfig;
use lienthong_contract::codec::encode_typed;
use lienthong_contract::events::{
    AdminUnitRecord, CaseEvent, CitizenRecord, Envelope, FeedbackEvent, ProcedureRecord,
};
use lienthong_contract::nfc::NormalizeText;
use lienthong_contract::write::WriteAvro;
use lienthong_contract::{AgencyKind, Catalog, Codec};
use lienthong_privacy::CitizenKeyService;
use lienthong_registry::client::RegistryClient;
use lienthong_signing::{AgencySigner, SignedBatch};
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Where a publish stands when [`Publisher::publish`] returns.
enum Publish {
    /// Refused or not encodable; nothing reached Kafka.
    Failed(SdkError),
    /// Handed to librdkafka; waiting for the acknowledgement.
    Enqueued {
        delivery: DeliveryFuture,
        permit: OwnedSemaphorePermit,
        event_id: String,
    },
    /// Queued for signing; handed to librdkafka once its batch is signed.
    Signing {
        queued: oneshot::Receiver<Result<DeliveryFuture, SdkError>>,
        permit: OwnedSemaphorePermit,
        event_id: String,
    },
    /// Encoded, waiting for a slot (or for room in librdkafka's queue).
    Waiting {
        key: String,
        event_id: String,
        payload: Vec<u8>,
    },
}

thread_local! {
    /// Encoding buffer reused by every publish on this thread: librdkafka copies the bytes
    /// when it takes the record, so the common path allocates nothing for the payload.
    static ENCODE_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The delivery future of a record the signing task handed to librdkafka.
async fn handed(
    queued: oneshot::Receiver<Result<DeliveryFuture, SdkError>>,
) -> Result<DeliveryFuture, SdkError> {
    queued
        .await
        .unwrap_or_else(|_| Err(SdkError::Signing("the signing task has stopped".into())))
}

fn receipt(
    topic: &'static str,
    event_id: String,
    result: Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
) -> Result<Receipt, SdkError> {
    match result {
        Ok(Ok(delivery)) => Ok(Receipt {
            topic,
            partition: delivery.partition,
            offset: delivery.offset,
            event_id,
        }),
        Ok(Err((e, _))) => Err(SdkError::Kafka(e)),
        Err(_) => Err(SdkError::Kafka(KafkaError::Canceled)),
    }
}

/// Everything publishing can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// The agency may not publish this (wrong kind for the topic, or posing as another unit).
    /// Permanent; nothing reached Kafka.
    #[error("{0}")]
    NotAllowed(String),
    /// The event breaks its schema's rules (an envelope id that is not a UUID, an empty key, a
    /// version below 1), or its topic has no schema here. Permanent; nothing reached Kafka.
    #[error("event does not fit its schema: {0}")]
    Invalid(String),
    /// An event type of this build does not write its topic's schema (a schemas folder or a
    /// registry newer than the build). Permanent; found at connect, before anything is sent.
    #[error("this build's event types do not match the schemas: {0}")]
    TypeMismatch(String),
    /// The registry did not give the schema's id.
    #[error("schema registry: {0}")]
    Registry(#[from] lienthong_registry::RegistryError),
    /// Kafka did not take the record.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The record could not be sealed: the key service did not give the citizen's key.
    #[error("personal data: {0}")]
    Privacy(lienthong_privacy::PrivacyError),
    /// The record could not be signed (a key that is not the agency's, a signing failure).
    /// Permanent; nothing reached Kafka.
    #[error("signing: {0}")]
    Signing(String),
}

impl SdkError {
    /// Worth retrying: Kafka or the registry being unreachable, not a refused or invalid event.
    pub fn is_transient(&self) -> bool {
        match self {
            SdkError::NotAllowed(_)
            | SdkError::Invalid(_)
            | SdkError::TypeMismatch(_)
            | SdkError::Signing(_) => false,
            SdkError::Privacy(e) => e.is_transient(),
            SdkError::Registry(e) => e.is_transient(),
            SdkError::Kafka(e) => !matches!(
                e.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::MessageSizeTooLarge
                        | RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::UnknownTopicOrPartition
                )
            ),
        }
    }
}

/// Proof that Kafka has an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Topic.
    pub topic: &'static str,
    /// Partition.
    pub partition: i32,
    /// Offset in that partition.
    pub offset: i64,
    /// The event's id.
    pub event_id: String,
}

/// An event type of the contract: which topic it goes to, and its envelope. It writes itself
/// as Avro ([`WriteAvro`]), checked against its topic's schema at [`Publisher::connect`].
pub trait Event: WriteAvro + NormalizeText + PersonalIds {
    /// The catalog topic of this event type.
    const TOPIC: &'static str;
    /// The envelope.
    fn envelope(&self) -> &Envelope;
    /// The envelope, to move the key and event id out once the event is encoded.
    fn envelope_mut(&mut self) -> &mut Envelope;
}

/// The personal ids an event names besides a citizen record's own (which sealing handles):
/// replaced by the citizen's pseudonym when the publisher seals personal data.
pub trait PersonalIds {
    /// Every personal id field of `self`, to be replaced in place.
    fn personal_ids_mut(&mut self) -> Vec<&mut String>;
}

impl PersonalIds for CaseEvent {
    fn personal_ids_mut(&mut self) -> Vec<&mut String> {
        match &mut self.event {
            lienthong_contract::events::CaseEventKind::CaseSubmitted(s) => {
                vec![&mut s.applicant_id]
            }
            _ => Vec::new(),
        }
    }
}

impl PersonalIds for FeedbackEvent {
    fn personal_ids_mut(&mut self) -> Vec<&mut String> {
        match &mut self.event {
            lienthong_contract::events::FeedbackEventKind::FeedbackSubmitted(s) => {
                s.citizen_id.iter_mut().collect()
            }
            _ => Vec::new(),
        }
    }
}

/// Reference data names no citizen; a citizen record is sealed whole ([`Publisher::publish_citizen`]).
macro_rules! no_personal_ids {
    ($($t:ty),*) => {$(
        impl PersonalIds for $t {
            fn personal_ids_mut(&mut self) -> Vec<&mut String> {
                Vec::new()
            }
        }
    )*};
}
no_personal_ids!(AdminUnitRecord, ProcedureRecord, CitizenRecord);

/// `Event` for each type of the list, and `check_event_type` over all of them.
macro_rules! events {
    ($($t:ty => $topic:literal),* $(,)?) => {
        $(
            impl Event for $t {
                const TOPIC: &'static str = $topic;
                fn envelope(&self) -> &Envelope {
                    &self.envelope
                }
                fn envelope_mut(&mut self) -> &mut Envelope {
                    &mut self.envelope
                }
            }
        )*

        /// Whether the event type of `topic`, if it has one, writes exactly `schema`.
        fn check_event_type(
            topic: &str,
            schema: &lienthong_contract::RegisteredSchema,
        ) -> lienthong_contract::Result<()> {
            $(
                if topic == $topic {
                    return schema.check_typed::<$t>();
                }
            )*
            Ok(())
        }
    };
}

events! {
    CaseEvent => "hcm.case.events",
    CitizenRecord => "hcm.citizen.records",
    FeedbackEvent => "hcm.feedback.events",
    AdminUnitRecord => "hcm.reference.units",
    ProcedureRecord => "hcm.reference.procedures",
}

/// Who publishes, and how.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// The agency's unit code: events must carry it as `producer_unit`.
    pub agency: String,
    /// Department or ward.
    pub kind: AgencyKind,
    /// The cluster and its options (which override the producer defaults below).
    pub kafka: KafkaConfig,
    /// At most this many publishes in flight; the next waits.
    pub max_in_flight: usize,
    /// How long a record may wait for Kafka before the publish fails.
    pub delivery_timeout: Duration,
}

impl PublisherConfig {
    /// Defaults for `agency`: 10,000 in flight, 30 s delivery timeout.
    pub fn new(agency: impl Into<String>, kind: AgencyKind, kafka: KafkaConfig) -> Self {
        PublisherConfig {
            agency: agency.into(),
            kind,
            kafka,
            max_in_flight: 10_000,
            delivery_timeout: Duration::from_secs(30),
        }
    }
}

/// Where schema ids come from.
pub enum SchemaIds<'a> {
    /// A registry (lienthong's or external): ids are looked up once, at connect.
    Registry(&'a RegistryClient),
    /// Local ids 1, 2, … in catalog order (tests, the embedded demo).
    Local,
}

/// The producer's client context: logs the Kafka client's errors, and counts them once the
/// publisher records metrics ([`Publisher::with_metrics`]; the producer exists before that).
struct ErrorCounting {
    counter: Arc<OnceLock<lienthong_telemetry::KafkaClientContext>>,
    /// Until then.
    logging: lienthong_telemetry::KafkaClientContext,
}

impl ClientContext for ErrorCounting {
    fn error(&self, error: KafkaError, reason: &str) {
        self.counter
            .get()
            .unwrap_or(&self.logging)
            .count(&error, reason);
    }
}

/// One agency's handle on the bus. Cheap to share behind an `Arc`.
pub struct Publisher {
    config: PublisherConfig,
    producer: FutureProducer<ErrorCounting>,
    /// Where the producer's context counts client errors, once set by `with_metrics`.
    errors: Arc<OnceLock<lienthong_telemetry::KafkaClientContext>>,
    /// topic -> schema id; only the topics this agency may write.
    ids: HashMap<String, u32>,
    catalog: Arc<Catalog>,
    in_flight: Arc<Semaphore>,
    /// `lienthong_bus_events_produced_total`, if this publisher records metrics.
    produced: Option<prometheus::IntCounterVec>,
    /// The key service, when the bus seals personal data ([`Publisher::with_keys`]).
    keys: Option<Arc<dyn CitizenKeyService>>,
    /// The signing task's queue, when this publisher signs ([`Publisher::with_signer`]).
    signing: Option<Signing>,
}

/// A record waiting for its batch's signature.
struct SignJob {
    topic: &'static str,
    key: String,
    payload: Option<Vec<u8>>,
    leaf: lienthong_signing::Hash,
    handed: oneshot::Sender<Result<DeliveryFuture, SdkError>>,
}

/// The publisher's side of the signing task.
struct Signing {
    jobs: mpsc::UnboundedSender<SignJob>,
    /// Records queued and not yet handed to librdkafka (what [`Publisher::flush`] waits for).
    queued: Arc<AtomicUsize>,
}

/// At most this many records under one signature: a path of at most 6 hashes per record.
const SIGN_BATCH: usize = 64;

/// The signing task: take every record queued since the last batch (at most [`SIGN_BATCH`]),
/// sign their Merkle root once, and hand each to librdkafka with its headers, in order. Under
/// load, records gather while a batch is signed, so batches grow with the rate; a lone record
/// is signed alone at once. Ends when the publisher is dropped.
async fn sign_batches(
    signer: AgencySigner,
    producer: FutureProducer<ErrorCounting>,
    mut jobs: mpsc::UnboundedReceiver<SignJob>,
    queued: Arc<AtomicUsize>,
    timeout: Duration,
) {
    let mut batch = Vec::with_capacity(SIGN_BATCH);
    let mut leaves = Vec::with_capacity(SIGN_BATCH);
    while jobs.recv_many(&mut batch, SIGN_BATCH).await > 0 {
        leaves.clear();
        leaves.extend(batch.iter().map(|j: &SignJob| j.leaf));
        let signed = SignedBatch::sign(&signer, &leaves);
        for (i, job) in batch.drain(..).enumerate() {
            let handed = match &signed {
                Err(e) => Err(SdkError::Signing(e.to_string())),
                Ok(signed) => {
                    let mut record = FutureRecord::<str, [u8]>::to(job.topic)
                        .key(job.key.as_str())
                        .headers(signed.headers(i));
                    if let Some(p) = &job.payload {
                        record = record.payload(p);
                    }
                    let deadline = tokio::time::Instant::now() + timeout;
                    loop {
                        match producer.send_result(record) {
                            Ok(delivery) => break Ok(delivery),
                            Err((
                                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                back,
                            )) if tokio::time::Instant::now() < deadline => {
                                record = back;
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                            Err((e, _)) => break Err(SdkError::Kafka(e)),
                        }
                    }
                }
            };
            queued.fetch_sub(1, Ordering::Release);
            let _ = job.handed.send(handed);
        }
    }
}

impl Publisher {
    /// Create the producer and learn the schema id of every topic the agency may write.
    pub async fn connect(
        config: PublisherConfig,
        catalog: Arc<Catalog>,
        ids: SchemaIds<'_>,
    ) -> Result<Self, SdkError> {
        // The delivery timeout is the publisher's own (`PublisherConfig::delivery_timeout`).
        let mut kafka = config.kafka.producer_with(&[
            ("compression.type", "lz4"),
            ("linger.ms", "5"),
            ("batch.num.messages", "10000"),
        ]);
        kafka.set(
            "message.timeout.ms",
            config.delivery_timeout.as_millis().to_string(),
        );
        let errors = Arc::new(OnceLock::new());
        let producer: FutureProducer<ErrorCounting> = kafka.create_with_context(ErrorCounting {
            counter: errors.clone(),
            logging: lienthong_telemetry::KafkaClientContext::logging_only("sdk"),
        })?;
        let codec = match &ids {
            SchemaIds::Registry(client) => client.codec().clone(),
            SchemaIds::Local => {
                Codec::from_catalog(&catalog).map_err(|e| SdkError::Invalid(e.to_string()))?
            }
        };
        let mut topic_ids = HashMap::new();
        for topic in catalog
            .topics()
            .iter()
            .filter(|t| t.may_publish(&config.agency, config.kind))
        {
            let id = match &ids {
                SchemaIds::Registry(client) => {
                    client
                        .id_for(&topic.value_subject, &topic.schema_json, false)
                        .await?
                }
                SchemaIds::Local => catalog
                    .local_id(&topic.name)
                    .map_err(|e| SdkError::Invalid(e.to_string()))?,
            };
            // The event type must write what the schema says: refused here, not per event.
            let schema = codec
                .schema(id)
                .map_err(|e| SdkError::Invalid(e.to_string()))?;
            check_event_type(&topic.name, &schema)
                .map_err(|e| SdkError::TypeMismatch(format!("{}: {e}", topic.name)))?;
            topic_ids.insert(topic.name.clone(), id);
        }
        let in_flight = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
        Ok(Publisher {
            config,
            producer,
            errors,
            ids: topic_ids,
            catalog,
            in_flight,
            produced: None,
            keys: None,
            signing: None,
        })
    }

    /// Sign every record this publisher publishes with `signer`, the agency's key and
    /// certificate (`lienthong cert issue`); refused if the certificate is another agency's.
    /// Sinks that require signatures then verify each record against the certificate log.
    pub fn with_signer(mut self, signer: AgencySigner) -> Result<Self, SdkError> {
        if signer.certificate().agency() != self.config.agency {
            return Err(SdkError::Signing(format!(
                "certificate {} is {}'s, and this publisher publishes as {}",
                signer.certificate().id(),
                signer.certificate().agency(),
                self.config.agency
            )));
        }
        let (jobs, waiting) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        tokio::spawn(sign_batches(
            signer,
            self.producer.clone(),
            waiting,
            queued.clone(),
            self.config.delivery_timeout,
        ));
        self.signing = Some(Signing { jobs, queued });
        Ok(self)
    }

    /// Queue a record for the signing task; `None` if this publisher does not sign.
    fn queue_signed(
        &self,
        topic: &'static str,
        key: &str,
        payload: Option<&[u8]>,
    ) -> Option<Result<oneshot::Receiver<Result<DeliveryFuture, SdkError>>, SdkError>> {
        let signing = self.signing.as_ref()?;
        let (handed, queued) = oneshot::channel();
        let job = SignJob {
            topic,
            key: key.to_string(),
            payload: payload.map(<[u8]>::to_vec),
            leaf: lienthong_signing::leaf(topic, Some(key.as_bytes()), payload),
            handed,
        };
        signing.queued.fetch_add(1, Ordering::AcqRel);
        if signing.jobs.send(job).is_err() {
            signing.queued.fetch_sub(1, Ordering::AcqRel);
            return Some(Err(SdkError::Signing(
                "the signing task has stopped".into(),
            )));
        }
        Some(Ok(queued))
    }

    /// Seal personal data with `keys` (the key service): citizen records are then published
    /// with [`Publisher::publish_citizen`], their personal fields sealed under the citizen's
    /// data key and the personal id replaced by the citizen's pseudonym, and
    /// [`Publisher::erase_citizen`] destroys the citizen's key.
    pub fn with_keys(mut self, keys: Arc<dyn CitizenKeyService>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Publish a citizen record: sealed first when this publisher seals personal data
    /// ([`Publisher::with_keys`]), as it is otherwise.
    pub async fn publish_citizen(&self, mut record: CitizenRecord) -> Result<Receipt, SdkError> {
        if let Some(keys) = &self.keys {
            record.normalize_text();
            if !lienthong_contract::catalog::FieldFormat::PersonalId
                .accepts(&record.profile.personal_id)
            {
                return Err(SdkError::Invalid(format!(
                    "profile.personal_id {:?} is not a 12-digit personal id",
                    record.profile.personal_id
                )));
            }
            let key = keys
                .seal_key(&self.config.agency, &record.profile.personal_id)
                .await
                .map_err(SdkError::Privacy)?;
            lienthong_privacy::seal_citizen(&mut record, &key).map_err(SdkError::Privacy)?;
        }
        self.publish_unsealed(record).await
    }

    /// How many publishes are handed to Kafka and not yet acknowledged (at most
    /// `max_in_flight`; further publishes wait for a slot).
    pub fn in_flight(&self) -> usize {
        self.config.max_in_flight.max(1) - self.in_flight.available_permits()
    }

    /// The agency this publisher speaks for.
    pub fn agency(&self) -> &str {
        &self.config.agency
    }

    /// Check, normalise, encode and produce `event`; resolves once Kafka acknowledged it.
    ///
    /// Everything happens when this is called: the checks, the encoding, and — when a slot is
    /// free and librdkafka's queue has room, the usual case — handing the record to Kafka's
    /// client, which copies it. The returned future then only waits for the acknowledgement.
    /// When no slot is free, the future holds the encoded bytes and hands them over once one
    /// is (backpressure).
    ///
    /// When this publisher seals personal data, citizen records go through
    /// [`Publisher::publish_citizen`] instead and are refused here, and the personal ids of
    /// case and feedback events are replaced by pseudonyms ([`PersonalIds`]). With a remote
    /// key service ([`lienthong_privacy::HttpSealKeys`]) a personal id is replaced only if
    /// the service told this publisher its pseudonym before ([`Publisher::pseudonyms`]);
    /// otherwise the event is refused, and nothing reaches Kafka.
    pub fn publish<E: Event>(
        &self,
        mut event: E,
    ) -> impl Future<Output = Result<Receipt, SdkError>> + Send + '_ {
        let refused = match &self.keys {
            None => None,
            Some(_) if E::TOPIC == CitizenRecord::TOPIC => Some(SdkError::Invalid(
                "this publisher seals personal data: publish citizen records with publish_citizen"
                    .into(),
            )),
            Some(keys) => {
                let mut unknown = 0;
                for id in event.personal_ids_mut() {
                    match keys.known_pseudonym(id) {
                        Some(pseudonym) => *id = pseudonym,
                        None => unknown += 1,
                    }
                }
                (unknown > 0).then(|| {
                    SdkError::Invalid(format!(
                        "{unknown} personal id(s) of this event have no pseudonym known here yet: \
                         ask the key service first (Publisher::pseudonyms), or put the pseudonym in"
                    ))
                })
            }
        };
        // Refused: nothing is encoded or handed to Kafka.
        let publish = match refused {
            None => Ok(self.publish_unsealed(event)),
            Some(e) => Err(e),
        };
        async move { publish?.await }
    }

    /// The pseudonyms of `personal_ids`, in order, from the key service this publisher seals
    /// with; remembered, so that [`Publisher::publish`] then replaces these ids itself.
    pub async fn pseudonyms(&self, personal_ids: &[String]) -> Result<Vec<String>, SdkError> {
        let Some(keys) = &self.keys else {
            return Err(SdkError::Invalid(
                "this publisher does not seal personal data: it has no key service".into(),
            ));
        };
        keys.pseudonyms(personal_ids)
            .await
            .map_err(SdkError::Privacy)
    }

    fn publish_unsealed<E: Event>(
        &self,
        mut event: E,
    ) -> impl Future<Output = Result<Receipt, SdkError>> + Send + '_ {
        let state = match self.check(E::TOPIC, event.envelope()) {
            Err(e) => Publish::Failed(e),
            Ok(id) => {
                event.normalize_text();
                ENCODE_BUFFER.with_borrow_mut(|buffer| {
                    buffer.clear();
                    encode_typed(id, &event, buffer);
                    self.enqueue(E::TOPIC, event.envelope_mut(), buffer)
                })
            }
        };
        async move {
            match state {
                Publish::Failed(e) => Err(e),
                Publish::Enqueued {
                    delivery,
                    permit,
                    event_id,
                } => {
                    let result = delivery.await;
                    drop(permit);
                    self.count(receipt(E::TOPIC, event_id, result))
                }
                Publish::Signing {
                    queued,
                    permit,
                    event_id,
                } => {
                    let result = match handed(queued).await {
                        Ok(delivery) => receipt(E::TOPIC, event_id, delivery.await),
                        Err(e) => Err(e),
                    };
                    drop(permit);
                    self.count(result)
                }
                Publish::Waiting {
                    key,
                    event_id,
                    payload,
                } => self.produce(E::TOPIC, &key, Some(&payload), event_id).await,
            }
        }
    }

    /// Hand the encoded record to librdkafka now if a slot is free and its queue has room;
    /// otherwise keep the bytes for [`Publisher::produce`].
    fn enqueue(&self, topic: &'static str, envelope: &mut Envelope, payload: &[u8]) -> Publish {
        let event_id = std::mem::take(&mut envelope.event_id);
        if let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() {
            if let Some(queued) = self.queue_signed(topic, &envelope.aggregate_id, Some(payload)) {
                return match queued {
                    Ok(queued) => Publish::Signing {
                        queued,
                        permit,
                        event_id,
                    },
                    Err(e) => Publish::Failed(e),
                };
            }
            let record = FutureRecord::<str, [u8]>::to(topic)
                .key(envelope.aggregate_id.as_str())
                .payload(payload);
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    return Publish::Enqueued {
                        delivery,
                        permit,
                        event_id,
                    };
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {}
                Err((e, _)) => return Publish::Failed(SdkError::Kafka(e)),
            }
        }
        Publish::Waiting {
            key: std::mem::take(&mut envelope.aggregate_id),
            event_id,
            payload: payload.to_vec(),
        }
    }

    /// Erase a citizen's record everywhere: a tombstone (null value) on the compacted citizen
    /// topic, keyed by the personal id, or by the citizen's pseudonym when this publisher seals
    /// personal data. Then the citizen's data key is destroyed first: from that moment every
    /// sealed copy (log, dead-letter topic, backups) is unreadable, whatever happens to the
    /// tombstone, which then removes the rows the stores hold.
    pub async fn erase_citizen(&self, personal_id: &str) -> Result<Receipt, SdkError> {
        let topic = CitizenRecord::TOPIC;
        if !self.ids.contains_key(topic) {
            return Err(self.not_allowed(topic));
        }
        if !lienthong_contract::catalog::FieldFormat::PersonalId.accepts(personal_id) {
            return Err(SdkError::Invalid(format!(
                "{personal_id:?} is not a 12-digit personal id"
            )));
        }
        let Some(keys) = &self.keys else {
            return self.produce(topic, personal_id, None, String::new()).await;
        };
        let pseudonym = match keys.known_pseudonym(personal_id) {
            Some(pseudonym) => pseudonym,
            None => keys
                .pseudonyms(&[personal_id.to_string()])
                .await
                .map_err(SdkError::Privacy)?
                .pop()
                .ok_or_else(|| {
                    SdkError::Privacy(lienthong_privacy::PrivacyError::Unreachable(
                        "no pseudonym".into(),
                    ))
                })?,
        };
        keys.erase(&self.config.agency, &pseudonym)
            .await
            .map_err(SdkError::Privacy)?;
        self.produce(topic, &pseudonym, None, String::new()).await
    }

    fn not_allowed(&self, topic: &str) -> SdkError {
        match self.catalog.topic(topic) {
            Ok(spec) => match spec.check_publisher(&self.config.agency, self.config.kind) {
                Err(refusal) => SdkError::NotAllowed(refusal.to_string()),
                Ok(()) => SdkError::NotAllowed(format!("{topic}: no schema id known")),
            },
            Err(e) => SdkError::NotAllowed(e.to_string()),
        }
    }

    /// The schema id for `topic`, if this agency may publish there as the envelope says.
    fn check(&self, topic: &str, envelope: &Envelope) -> Result<u32, SdkError> {
        let id = *self.ids.get(topic).ok_or_else(|| self.not_allowed(topic))?;
        lienthong_contract::catalog::check_publishes_as_itself(
            &self.config.agency,
            &envelope.producer_unit,
        )
        .map_err(|refusal| SdkError::NotAllowed(refusal.to_string()))?;
        if envelope.aggregate_id.is_empty() {
            return Err(SdkError::Invalid(
                "the envelope's aggregate_id (the Kafka key) is empty".into(),
            ));
        }
        // The schema types these as `uuid`: a consumer decoding with the logical type (the
        // connectors, apache-avro, fastavro) would refuse anything else as a poison record.
        for (field, value) in [
            ("event_id", &envelope.event_id),
            ("correlation_id", &envelope.correlation_id),
        ] {
            // The hyphenated form only, as the gateway and Java's UUID.fromString read it.
            if value.len() != 36 || uuid::Uuid::try_parse(value).is_err() {
                return Err(SdkError::Invalid(format!(
                    "the envelope's {field} {value:?} is not a UUID"
                )));
            }
        }
        if envelope.aggregate_version < 1 {
            return Err(SdkError::Invalid(format!(
                "the envelope's aggregate_version is {}; versions start at 1",
                envelope.aggregate_version
            )));
        }
        Ok(id)
    }

    async fn produce(
        &self,
        topic: &'static str,
        key: &str,
        payload: Option<&[u8]>,
        event_id: String,
    ) -> Result<Receipt, SdkError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| SdkError::NotAllowed("the publisher is closed".into()))?;
        if let Some(queued) = self.queue_signed(topic, key, payload) {
            let delivery = handed(queued?).await?;
            return self.count(receipt(topic, event_id, delivery.await));
        }
        let mut record = FutureRecord::<str, [u8]>::to(topic).key(key);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        let delivery = self
            .producer
            .send(record, Timeout::After(self.config.delivery_timeout))
            .await
            .map_err(|(e, _)| SdkError::Kafka(e))?;
        self.count(Ok(Receipt {
            topic,
            partition: delivery.partition,
            offset: delivery.offset,
            event_id,
        }))
    }

    /// Count an acknowledged event in `lienthong_bus_events_produced_total{producer="sdk"}`
    /// when the publisher records metrics ([`Publisher::with_metrics`]).
    fn count(&self, result: Result<Receipt, SdkError>) -> Result<Receipt, SdkError> {
        if let (Ok(r), Some(produced)) = (&result, &self.produced) {
            produced.with_label_values(&[r.topic, "sdk"]).inc();
        }
        result
    }

    /// Record every acknowledged event in `telemetry` (the process's metrics registry), as
    /// `lienthong_bus_events_produced_total{topic, producer="sdk"}`.
    /// From then on, the Kafka client's errors count in `lienthong_kafka_client_errors_total
    /// {component="sdk"}` too.
    pub fn with_metrics(mut self, telemetry: &lienthong_telemetry::Telemetry) -> Self {
        self.produced = Some(telemetry.bus.events_produced.clone());
        let _ = self
            .errors
            .set(lienthong_telemetry::KafkaClientContext::new(
                telemetry, "sdk",
            ));
        self
    }

    /// Refuse further publishes and wait until everything published is acknowledged (or
    /// `timeout` passes), including records still waiting for their batch's signature.
    pub async fn flush(&self, timeout: Duration) -> Result<(), SdkError> {
        self.in_flight.close();
        let deadline = tokio::time::Instant::now() + timeout;
        if let Some(signing) = &self.signing {
            while signing.queued.load(Ordering::Acquire) > 0 {
                if tokio::time::Instant::now() >= deadline {
                    return Err(SdkError::Kafka(KafkaError::Flush(
                        RDKafkaErrorCode::RequestTimedOut,
                    )));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.producer
            .flush(Timeout::After(left))
            .map_err(SdkError::Kafka)
    }
}
