//! The HTTP gateway: how department and ward systems written in any language put events on the
//! bus.
//!
//! ```text
//! POST /topics/{topic}/events[:batch]  (JSON, Bearer token)
//!   → authenticate the agency, check it may write the topic and publishes only as itself
//!   → NFC-normalise, check against the topic's Avro schema and encode (`encode`), key by the
//!     catalog's key field: a valid body in the usual shape straight from its bytes
//!     (`encode_direct`), any other through the JSON tree (`json`) and the walk, which names
//!     every problem
//!   → reserve the event ids (`idem`): a retry gets the original receipt, never a second event
//!   → the committer (`producer`) puts the records of concurrent requests in one Kafka
//!     transaction (group commit) and answers 201 with receipts only after the commit;
//!     a batch is all or nothing, and on any failure nothing is visible (503)
//! ```
//!
//! [`Gateway::start`] builds it and [`Gateway::serve`] serves it, in the shape every component
//! has (`lienthong_telemetry::component`: `/metrics`, `/healthz`, `/readyz`, a graceful stop);
//! [`http::router`] is its axum router (with `/openapi.json`), and the schema registry can be
//! mounted beside it under `/registry`.
//! See `docs/gateway.md` for the API, the idempotency guarantee and the configuration.

pub mod config;
pub mod error;
pub mod http;
pub mod idem;
pub mod producer;
pub mod replay;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use lienthong_contract::Catalog;
use lienthong_registry::Agencies;
use lienthong_telemetry::component::{Component, Listener, Readiness, Running};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::config::GatewayConfig;
pub use crate::error::GatewayError;
use crate::idem::Index;
pub use crate::idem::Receipt;
use crate::producer::{Health, Job, ProducerState};
pub use lienthong_bus::KafkaConfig;
use lienthong_encode::TopicEncoder;

/// One catalog topic as the gateway serves it.
struct Route {
    name: Arc<str>,
    encoder: TopicEncoder,
}

/// The topic whose records the gateway seals when asked to.
const CITIZEN_TOPIC: &str = "hcm.citizen.records";
/// Topics whose personal ids the gateway replaces by pseudonyms when it seals.
const CASE_TOPIC: &str = "hcm.case.events";
const FEEDBACK_TOPIC: &str = "hcm.feedback.events";

/// A running gateway: share it behind an `Arc` with [`http::router`].
pub struct Gateway {
    catalog: Arc<Catalog>,
    routes: HashMap<String, Route>,
    agencies: Agencies,
    config: GatewayConfig,
    index: Arc<Index>,
    index_ready: Arc<AtomicBool>,
    health: Arc<Health>,
    jobs: RwLock<Option<mpsc::Sender<Job>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    committer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    registry_readiness: Option<Readiness>,
    telemetry: Arc<lienthong_telemetry::Telemetry>,
    shutdown: CancellationToken,
    /// Seals citizen records before they reach Kafka, once [`Gateway::seal_citizen_records`]
    /// set it.
    sealer: std::sync::OnceLock<Sealer>,
    /// The agencies' signing keys, when the gateway signs (`signing_keys_dir`).
    signers: Option<HashMap<String, lienthong_signing::AgencySigner>>,
    /// Checks the signed documents of case events, once
    /// [`Gateway::check_document_signatures`] set it.
    documents: std::sync::OnceLock<DocumentCheck>,
}

/// The certificate log, a verifier's view of it, and the case event schema by the id this
/// gateway encodes with.
pub(crate) struct DocumentCheck {
    certificates: Arc<lienthong_signing::CertificateLog<rdkafka::consumer::DefaultConsumerContext>>,
    codec: lienthong_contract::Codec,
}

impl DocumentCheck {
    /// Why the encoded case event `value` may not be published, if a signed document of it
    /// does not verify.
    pub(crate) fn refusal(&self, value: &[u8]) -> Option<String> {
        use lienthong_contract::events::CaseEvent;
        match self.codec.decode::<CaseEvent<&str>>(value) {
            Ok((_, event)) => {
                lienthong_signing::verify_case_documents(&self.certificates.read(), &event)
                    .err()
                    .map(|refusal| refusal.to_string())
            }
            Err(e) => Some(format!("not a case event: {e}")),
        }
    }
}

/// What sealing a citizen record takes: the key service, and the record's schema to decode
/// the encoded event and write it back sealed.
pub(crate) struct Sealer {
    pub(crate) keys: Arc<dyn lienthong_privacy::CitizenKeyService>,
    /// The schemas of the topics it rewrites, by the ids this gateway encodes with.
    pub(crate) codec: lienthong_contract::Codec,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("topics", &self.routes.len())
            .field("config", &self.config)
            .finish()
    }
}

/// Schema ids of the catalog's topics as a [`lienthong_contract::Codec::from_catalog`] gives
/// them (1, 2, … in catalog order): for tests and the embedded demo.
pub fn local_ids(catalog: &Catalog) -> HashMap<String, u32> {
    catalog
        .topics()
        .iter()
        .filter_map(|t| Some((t.name.clone(), catalog.local_id(&t.name).ok()?)))
        .collect()
}

impl Gateway {
    /// Build the gateway and start its background tasks: the committer (which initialises the
    /// transactional producer), the Kafka health probe and the idempotency replay. `ids` maps
    /// each catalog topic to its value schema's registry id; topics without one are not served.
    /// Returns at once: `/readyz` says when it can take events.
    pub fn start(
        config: GatewayConfig,
        kafka: KafkaConfig,
        catalog: Arc<Catalog>,
        ids: &HashMap<String, u32>,
        registry_readiness: Option<Readiness>,
        telemetry: Arc<lienthong_telemetry::Telemetry>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Gateway>, GatewayError> {
        // The gateway's own token: `close` cancels it (and its tasks'), never the caller's.
        let shutdown = shutdown.child_token();
        config.check().map_err(GatewayError::Config)?;
        let agencies = Agencies::new(&config.agencies).map_err(GatewayError::Config)?;
        let signers = config
            .signing_keys_dir
            .as_deref()
            .map(lienthong_signing::load_signers)
            .transpose()
            .map_err(|e| GatewayError::Config(format!("signing_keys_dir: {e}")))?;
        let mut routes = HashMap::new();
        for topic in catalog.topics() {
            let Some(&id) = ids.get(&topic.name) else {
                continue;
            };
            let encoder = TopicEncoder::new(id, &topic.schema, &topic.key_field)
                .map_err(|e| GatewayError::Config(format!("{}: {e}", topic.name)))?;
            routes.insert(
                topic.name.clone(),
                Route {
                    name: Arc::from(topic.name.as_str()),
                    encoder,
                },
            );
        }
        let health = Arc::new(Health::default());
        let index = Arc::new(Index::new(
            Duration::from_secs(config.idempotency_window_secs),
            config.idempotency_max_entries,
        ));
        let index_ready = Arc::new(AtomicBool::new(false));
        let probe = producer::spawn_health_probe(
            &kafka,
            routes.keys().cloned().collect(),
            health.clone(),
            Duration::from_millis(config.health_interval_ms),
            shutdown.child_token(),
        )?;
        let replay = replay::spawn(
            kafka.clone(),
            routes.keys().cloned().collect(),
            index.clone(),
            Duration::from_secs(config.idempotency_window_secs),
            index_ready.clone(),
            shutdown.child_token(),
        );
        let (jobs, committer) = producer::spawn_committer(
            &config,
            &kafka,
            health.clone(),
            lienthong_telemetry::KafkaClientContext::new(&telemetry, "gateway"),
        );
        Ok(Arc::new(Gateway {
            catalog,
            routes,
            agencies,
            config,
            index,
            index_ready,
            health,
            jobs: RwLock::new(Some(jobs)),
            tasks: Mutex::new(vec![probe, replay]),
            committer: Mutex::new(Some(committer)),
            registry_readiness,
            telemetry,
            shutdown,
            sealer: std::sync::OnceLock::new(),
            signers,
            documents: std::sync::OnceLock::new(),
        }))
    }

    /// Seal every citizen record posted from now on (docs/personal-data.md): its personal
    /// fields encrypted under the citizen's data key from `keys`, the personal id replaced by
    /// the citizen's pseudonym, before it reaches Kafka. Refused if this gateway does not serve
    /// the citizen topic with a schema the contract's `CitizenRecord` writes.
    pub fn seal_citizen_records(
        &self,
        keys: Arc<dyn lienthong_privacy::CitizenKeyService>,
    ) -> Result<(), GatewayError> {
        use lienthong_contract::events::{CaseEvent, CitizenRecord, FeedbackEvent};
        if !self.routes.contains_key(CITIZEN_TOPIC) {
            return Err(GatewayError::Config(format!(
                "{CITIZEN_TOPIC} is not served: nothing to seal"
            )));
        }
        let codec = lienthong_contract::Codec::new();
        for topic in self.catalog.topics() {
            let Some(route) = self.routes.get(&topic.name) else {
                continue;
            };
            let check = match topic.name.as_str() {
                CITIZEN_TOPIC => lienthong_contract::RegisteredSchema::check_typed::<CitizenRecord>,
                CASE_TOPIC => lienthong_contract::RegisteredSchema::check_typed::<CaseEvent>,
                FEEDBACK_TOPIC => {
                    lienthong_contract::RegisteredSchema::check_typed::<FeedbackEvent>
                }
                _ => continue,
            };
            let schema = codec
                .insert(route.encoder.schema_id(), &topic.schema_json)
                .map_err(|e| GatewayError::Config(format!("{}: {e}", topic.name)))?;
            check(&schema)
                .map_err(|e| GatewayError::Config(format!("sealing {}: {e}", topic.name)))?;
        }
        self.sealer
            .set(Sealer { keys, codec })
            .map_err(|_| GatewayError::Config("citizen records are sealed already".into()))
    }

    /// Check every signed document of a case event posted from now on against
    /// `certificates` (which keeps following its topic: a revocation applies at once), and
    /// refuse the request when one does not verify. Refused if this gateway does not serve the
    /// case topic with a schema the contract's `CaseEvent` reads.
    pub fn check_document_signatures(
        &self,
        certificates: Arc<
            lienthong_signing::CertificateLog<rdkafka::consumer::DefaultConsumerContext>,
        >,
    ) -> Result<(), GatewayError> {
        use lienthong_contract::events::CaseEvent;
        let route = self.routes.get(CASE_TOPIC).ok_or_else(|| {
            GatewayError::Config(format!("{CASE_TOPIC} is not served: no documents to check"))
        })?;
        let topic = self
            .catalog
            .topic(CASE_TOPIC)
            .map_err(|e| GatewayError::Config(e.to_string()))?;
        let codec = lienthong_contract::Codec::new();
        let schema = codec
            .insert(route.encoder.schema_id(), &topic.schema_json)
            .map_err(|e| GatewayError::Config(format!("{CASE_TOPIC}: {e}")))?;
        lienthong_contract::RegisteredSchema::check_typed::<CaseEvent>(&schema)
            .map_err(|e| GatewayError::Config(format!("checking documents: {e}")))?;
        self.documents
            .set(DocumentCheck {
                certificates,
                codec,
            })
            .map_err(|_| GatewayError::Config("documents are checked already".into()))
    }

    /// The metrics it records (served at `/metrics` by [`http::router`]).
    pub fn telemetry(&self) -> &Arc<lienthong_telemetry::Telemetry> {
        &self.telemetry
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Whether events can be taken now: Kafka reachable, producer initialised, idempotency
    /// index rebuilt. `Err` says what is missing.
    pub fn ready(&self) -> Result<(), String> {
        if self.shutdown.is_cancelled() {
            return Err("shutting down".into());
        }
        match self.health.producer() {
            ProducerState::Fenced => {
                return Err(format!(
                    "fenced: another instance uses transactional.id {:?}",
                    self.config.transactional_id
                ));
            }
            _ if !self.health.kafka_reachable() => return Err("Kafka is unreachable".into()),
            // Dropped after a failed transaction (Kafka went away): the committer initialises
            // a new one as soon as Kafka answers again. Ready before that, the first request
            // would pay for the initialisation, or fail while the broker still recovers.
            ProducerState::Down => {
                return Err("the Kafka transactional producer is being initialised".into());
            }
            ProducerState::Ready => {}
        }
        match self.health.leaderless_partitions() {
            0 => {}
            n => {
                return Err(format!(
                    "{n} partition(s) of the served topics have no leader yet"
                ));
            }
        }
        if !self.index_ready.load(Ordering::Relaxed) {
            return Err("rebuilding the idempotency index from the log".into());
        }
        Ok(())
    }

    fn sender(&self) -> Option<mpsc::Sender<Job>> {
        self.jobs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What it lacks to take events now (empty: ready): [`Gateway::ready`], and what the
    /// schema registry it was given lacks (its own readiness). What `/readyz` answers.
    pub fn problems(self: &Arc<Self>) -> BoxFuture<'static, Vec<String>> {
        let gateway = Arc::clone(self);
        Box::pin(async move {
            let mut problems = Vec::new();
            if let Err(e) = gateway.ready() {
                problems.push(e);
            }
            if let Some(registry) = &gateway.registry_readiness {
                let lacking = registry().await;
                problems.extend(lacking.into_iter().map(|p| format!("schema registry: {p}")));
            }
            problems
        })
    }

    /// Serve the gateway on `listener` until `shutdown` (or [`Running::stop`]), with `registry`
    /// (the schema registry's router) mounted under `/registry` if given. Once asked to stop
    /// it refuses new requests, lets those in flight finish, then closes ([`Gateway::close`]:
    /// commit, flush).
    pub fn serve(
        self: &Arc<Self>,
        listener: Listener,
        registry: Option<axum::Router>,
        shutdown: &CancellationToken,
    ) -> Running<GatewayError> {
        let gateway = Arc::clone(self);
        let readiness: Readiness = {
            let gateway = Arc::clone(self);
            Arc::new(move || gateway.problems())
        };
        let routes = {
            let gateway = Arc::clone(self);
            move |common| {
                let router = http::router(gateway, common);
                match registry {
                    Some(registry) => http::with_registry(router, registry),
                    None => router,
                }
            }
        };
        Component::new("gateway", &self.telemetry, shutdown)
            .readiness(readiness)
            .serve_with(listener, routes)
            .start(move |stopping| async move {
                stopping.drained().await;
                gateway.close().await;
                Ok(())
            })
    }

    /// Stop after the HTTP server has drained: the committer finishes what it holds, commits,
    /// and the producer flushes; background tasks stop. Bounded by `drain_timeout_ms`.
    pub async fn close(&self) {
        self.shutdown.cancel();
        self.jobs.write().unwrap_or_else(|p| p.into_inner()).take();
        let committer = self
            .committer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let drain = Duration::from_millis(self.config.drain_timeout_ms);
        if let Some(c) = committer
            && tokio::time::timeout(drain, c).await.is_err()
        {
            tracing::warn!("the committer did not stop within the drain timeout");
        }
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            if tokio::time::timeout(drain, t).await.is_err() {
                tracing::warn!("a background task did not stop within the drain timeout");
            }
        }
    }
}
