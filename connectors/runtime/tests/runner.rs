//! The runtime's loop on its own, without the `lienthong` binary: the embedded Kafka-protocol
//! broker (librdkafka's mock cluster, enough for consumer groups and plain produce) feeds a
//! store in memory that fails on command. A transient store error is retried until it
//! passes, with nothing dead-lettered; a constraint violation is bisected down to the one
//! record, which alone goes to the dead-letter topic; a fenced batch makes the loop re-read
//! the store's offsets and carry on. Every case ends with the store holding each event once.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lienthong_bus::{EmbeddedKafka, KafkaConfig};
use lienthong_connect::model::{Cell, Op};
use lienthong_connect::{
    Applied, Batch, ConnectorConfig, MemoryStore, Row, Sink, StoreError, StoredOffset,
};
use lienthong_contract::events::CaseEvent;
use lienthong_contract::{Catalog, Codec, samples};
use lienthong_telemetry::Telemetry;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "hcm.case.events";
const DLQ: &str = "dead-letters";

/// What the store does at its next `apply` calls.
#[derive(Debug, Clone)]
enum Fault {
    /// Refuse as transient (the store is away).
    Transient,
    /// Another instance applies the batch first (moving the offsets), and this one is refused
    /// as fenced: retrying it as it is would be refused forever.
    Fenced,
}

#[derive(Default)]
struct Script {
    /// Faults for the next `apply` calls, in order.
    next: VecDeque<Fault>,
    /// Every batch holding a change of this key breaks a constraint.
    refuse_key: Option<String>,
    applies: usize,
    offsets_reads: usize,
    /// While set, `apply` waits for it to be notified before it writes (a transaction that
    /// takes its time).
    hold: Option<Arc<tokio::sync::Notify>>,
    /// How many changes the batch held open holds.
    held_ops: Option<usize>,
}

/// A store in memory that fails as its script says.
#[derive(Clone, Default)]
struct FaultyStore {
    inner: MemoryStore,
    script: Arc<Mutex<Script>>,
}

impl FaultyStore {
    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap()
    }
}

fn key_of(op: &Op) -> &str {
    match op {
        Op::Upsert(c) => &c.key,
        Op::Delete { key, .. } => key,
    }
}

impl Sink for FaultyStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn offsets(&mut self, connector: &str) -> Result<Vec<StoredOffset>, StoreError> {
        self.script().offsets_reads += 1;
        self.inner.offsets(connector).await
    }

    async fn apply(&mut self, batch: Batch) -> Result<Applied, StoreError> {
        let hold = self.script().hold.take();
        if let Some(hold) = hold {
            self.script().held_ops = Some(batch.ops.len());
            hold.notified().await;
        }
        let fault = {
            let mut s = self.script();
            s.applies += 1;
            if let Some(k) = &s.refuse_key
                && batch.ops.iter().any(|op| key_of(op) == k)
            {
                return Err(StoreError::Constraint(format!("case {k} refused")));
            }
            s.next.pop_front()
        };
        match fault {
            Some(Fault::Transient) => Err(StoreError::Transient {
                class: "store_unavailable",
                message: "the store is away".into(),
            }),
            Some(Fault::Fenced) => {
                let partition = batch.offsets[0].partition;
                self.inner.apply(batch).await?;
                Err(StoreError::Fenced {
                    topic: TOPIC.into(),
                    partition,
                })
            }
            None => self.inner.apply(batch).await,
        }
    }

    async fn rows(&mut self) -> Result<Vec<Row>, StoreError> {
        self.inner.rows().await
    }

    async fn repair(
        &mut self,
        connector: &str,
        fix: &lienthong_connect::Fix,
    ) -> Result<(), StoreError> {
        self.inner.repair(connector, fix).await
    }

    async fn forget_offsets(&mut self, connector: &str) -> Result<u64, StoreError> {
        self.inner.forget_offsets(connector).await
    }
}

/// `cases` cases of the sample lifecycle (every step of it), as (key, Avro bytes) in log order.
fn events(prefix: &str, cases: usize) -> Vec<(String, Vec<u8>)> {
    let catalog = Catalog::load(lienthong_contract::repo_schemas_dir()).unwrap();
    let codec = Codec::from_catalog(&catalog).unwrap();
    let id = catalog.local_id(TOPIC).unwrap();
    let mut out = Vec::new();
    for i in 0..cases {
        let case = format!("{prefix}-{i:04}");
        for (v, step) in samples::case_lifecycle().into_iter().enumerate() {
            let event = CaseEvent {
                envelope: samples::envelope((i * 100 + v) as u64, "26734", &case, v as i64 + 1),
                event: step.event,
            };
            out.push((case.clone(), codec.encode_to_vec(id, &event).unwrap()));
        }
    }
    out
}

struct Setup {
    _kafka: EmbeddedKafka,
    bootstrap: String,
    catalog: Arc<Catalog>,
}

async fn setup(records: &[(String, Vec<u8>)]) -> Setup {
    let catalog = Arc::new(Catalog::load(lienthong_contract::repo_schemas_dir()).unwrap());
    let kafka = EmbeddedKafka::start(1, &[(TOPIC.to_string(), 2), (DLQ.to_string(), 1)]).unwrap();
    let bootstrap = kafka.bootstrap().to_string();
    let producer: FutureProducer = KafkaConfig::new(&bootstrap).producer().create().unwrap();
    for (key, value) in records {
        producer
            .send(
                FutureRecord::to(TOPIC).key(key).payload(value),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    Setup {
        _kafka: kafka,
        bootstrap,
        catalog,
    }
}

fn config(bootstrap: &str) -> ConnectorConfig {
    ConnectorConfig::from_toml(&format!(
        "name = \"runner-test\"\ndead_letter_topic = \"{DLQ}\"\nshutdown_timeout_secs = 5\n\
         [kafka]\nbootstrap = \"{bootstrap}\"\noptions = {{ \"session.timeout.ms\" = \"6000\" }}\n\
         [schemas]\ndir = \"{}\"\n[[topics]]\nname = \"{TOPIC}\"\n\
         [batch]\nmax_records = 50\nmax_wait_ms = 20\n[retry]\ninitial_ms = 10\nmax_ms = 50\n\
         [store]\nkind = \"sqlite\"\npath = \"unused\"\n",
        lienthong_contract::repo_schemas_dir().display()
    ))
    .unwrap()
}

/// A loop running over a store, with its metrics.
struct Running {
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), lienthong_connect::ConnectError>>,
}

fn start(setup: &Setup, store: &FaultyStore) -> Running {
    let telemetry = Telemetry::new("connector").unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(lienthong_connect::run(
        config(&setup.bootstrap),
        setup.catalog.clone(),
        store.clone(),
        telemetry.clone(),
        shutdown.clone(),
    ));
    Running {
        telemetry,
        shutdown,
        task,
    }
}

/// Wait (at most 60 s) until the metric `name` with `labels` reaches `at_least`.
async fn wait_for_metric(running: &Running, name: &str, labels: &[&str], at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = running.telemetry.render();
        if metric(&text, name, labels) >= at_least {
            return;
        }
        assert!(!running.task.is_finished(), "the loop stopped");
        assert!(
            Instant::now() < deadline,
            "{name} stayed below {at_least}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run the loop over `store` until it holds `records` offsets in all (or 60 s pass), stop it,
/// and return its metrics.
async fn run_until_caught_up(setup: &Setup, store: &FaultyStore, records: i64) -> String {
    let Running {
        telemetry,
        shutdown,
        task,
    } = start(setup, store);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held: i64 = store
            .inner
            .offsets_of("runner-test")
            .iter()
            .map(|o| o.next)
            .sum();
        if held >= records {
            break;
        }
        assert!(
            !task.is_finished(),
            "the loop stopped: {:?}",
            task.await.unwrap()
        );
        assert!(Instant::now() < deadline, "held {held} of {records}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    telemetry.render()
}

/// The dead-letter topic's records: (key, error class).
fn dead_letters(bootstrap: &str) -> Vec<(String, String)> {
    let consumer: BaseConsumer = KafkaConfig::new(bootstrap)
        .consumer("dlq-reader")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(DLQ, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let (_, high) = consumer
        .fetch_watermarks(DLQ, 0, Duration::from_secs(5))
        .unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while (out.len() as i64) < high && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let class = lienthong_connect::runner::dlq_headers(&m)
                .into_iter()
                .find(|(k, _)| k == lienthong_connect::runner::H_CLASS)
                .map(|(_, v)| v)
                .unwrap_or_default();
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            out.push((key, class));
        }
    }
    out
}

/// Steps of the sample lifecycle: each case's events, and its last version.
fn steps() -> usize {
    samples::case_lifecycle().len()
}

fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

/// The store holds `cases` cases, each at its last step, and `events` history rows.
fn assert_every_event_once(store: &FaultyStore, cases: usize, events: usize) {
    let (held_cases, history, versions) = held(store);
    assert_eq!((held_cases, history), (cases, events));
    assert!(
        versions.iter().all(|v| *v == steps() as i64),
        "{versions:?}"
    );
}

/// Cases and history rows the store holds, and every case's version.
fn held(store: &FaultyStore) -> (usize, usize, Vec<i64>) {
    let rows = store.inner.all_rows();
    let cases: Vec<&Row> = rows.iter().filter(|r| r.table == "cases").collect();
    let versions = cases
        .iter()
        .map(|r| match r.cells["version"] {
            Cell::Int(v) => v,
            ref c => panic!("version {c:?}"),
        })
        .collect();
    let history = rows.iter().filter(|r| r.table == "case_events").count();
    (cases.len(), history, versions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_store_error_is_retried_and_nothing_is_dead_lettered() {
    let records = events("TR", 30);
    let setup = setup(&records).await;
    let store = FaultyStore::default();
    store.script().next = VecDeque::from(vec![Fault::Transient; 4]);
    let metrics = run_until_caught_up(&setup, &store, records.len() as i64).await;
    assert_eq!(
        metric(
            &metrics,
            "lienthong_connector_retries_total",
            &["class=\"store_unavailable\""]
        ),
        4.0,
        "{metrics}"
    );
    assert!(dead_letters(&setup.bootstrap).is_empty());
    assert_every_event_once(&store, 30, records.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constraint_violation_dead_letters_only_the_records_that_break_it() {
    let records = events("CV", 30);
    let setup = setup(&records).await;
    let store = FaultyStore::default();
    store.script().refuse_key = Some("CV-0007".into());
    let metrics = run_until_caught_up(&setup, &store, records.len() as i64).await;
    let dead = dead_letters(&setup.bootstrap);
    // Each of the case's records breaks it, alone: each goes to the dead-letter topic.
    assert_eq!(dead.len(), steps(), "{dead:?}");
    assert!(
        dead.iter()
            .all(|(k, class)| k == "CV-0007" && class == "constraint"),
        "{dead:?}"
    );
    assert_eq!(
        metric(
            &metrics,
            "lienthong_connector_events_dead_lettered_total",
            &["class=\"constraint\""]
        ),
        steps() as f64
    );
    let (cases, history, _) = held(&store);
    assert_eq!((cases, history), (29, records.len() - steps()));
    // Bisecting took more attempts than batches, but never a retry.
    assert!(store.script().applies > 2);
    assert_eq!(
        metric(&metrics, "lienthong_connector_retries_total", &[]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_batch_makes_the_loop_read_the_offsets_again() {
    let records = events("FE", 30);
    let setup = setup(&records).await;
    let store = FaultyStore::default();
    store.script().next = VecDeque::from(vec![Fault::Fenced]);
    run_until_caught_up(&setup, &store, records.len() as i64).await;
    // Once when the partitions were assigned, once more after the fence: the batch the other
    // instance applied is not applied again, and what follows it is.
    assert!(store.script().offsets_reads >= 2);
    assert!(dead_letters(&setup.bootstrap).is_empty());
    assert_every_event_once(&store, 30, records.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_is_not_avro_is_dead_lettered_and_the_rest_applied() {
    let mut records = events("NA", 10);
    records.insert(5, ("NA-POISON".into(), b"not avro".to_vec()));
    let setup = setup(&records).await;
    let store = FaultyStore::default();
    run_until_caught_up(&setup, &store, records.len() as i64).await;
    assert_eq!(
        dead_letters(&setup.bootstrap),
        vec![("NA-POISON".to_string(), "not_avro".to_string())]
    );
    let (cases, history, _) = held(&store);
    assert_eq!((cases, history), (10, records.len() - 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_is_read_while_a_batch_is_in_its_transaction_and_lands_without_more_records()
{
    // 40 cases: more records than one batch (50) holds.
    let records = events("PL", 40);
    assert!(records.len() > 2 * 50);
    let setup = setup(&records).await;
    let store = FaultyStore::default();
    let release = Arc::new(tokio::sync::Notify::new());
    store.script().hold = Some(release.clone());
    let running = start(&setup, &store);
    let deadline = Instant::now() + Duration::from_secs(60);
    let held = loop {
        if let Some(n) = store.script().held_ops {
            break n;
        }
        assert!(Instant::now() < deadline, "no batch reached the store");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The first batch's transaction is held open; meanwhile the loop reads and decodes on,
    // past that batch and into the next (a serial loop would stop at the held batch).
    wait_for_metric(
        &running,
        "lienthong_connector_events_consumed_total",
        &[],
        (held + 1) as f64,
    )
    .await;
    assert_eq!(store.script().applies, 0, "nothing was written yet");
    assert!(store.inner.all_rows().is_empty());
    release.notify_one();
    // Every batch lands, the last one too, with no record after it to wake the loop.
    wait_for_metric(
        &running,
        "lienthong_connector_events_applied_total",
        &[],
        records.len() as f64,
    )
    .await;
    running.shutdown.cancel();
    running.task.await.unwrap().unwrap();
    assert!(dead_letters(&setup.bootstrap).is_empty());
    assert_every_event_once(&store, 40, records.len());
}
