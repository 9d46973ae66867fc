//! Shared test support for the connector scenarios: stores of both kinds behind one type, event
//! streams, producing, waiting for a connector to catch up, and the expected state folded from
//! the log by the in-memory store.

#![allow(dead_code, unused_macros, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lienthong_connect::config::StoreConfig;
use lienthong_connect::{ConnectorConfig, MemoryStore, Row, Sink, StoredOffset};
use lienthong_contract::events::*;
use lienthong_contract::samples;
use lienthong_contract::{Catalog, Codec};
use lienthong_store::AnyStore;
use lienthong_tests::{Kafka, postgres, unique_suffix};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

/// A test module `postgres` and a test module `sqlite`, each running every listed scenario (an
/// `async fn(Store)` of the test file) against a fresh store of that kind.
macro_rules! both_stores {
    ($($scenario:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::$scenario(super::postgres_store().await).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::$scenario(super::sqlite_store().await).await
                }
            )*
        }
    };
}

/// A store of either kind, created fresh for one test.
pub enum Store {
    /// A fresh PostgreSQL database.
    Postgres { url: String },
    /// A SQLite file in a temporary folder.
    Sqlite {
        path: PathBuf,
        _dir: tempfile::TempDir,
    },
}

pub async fn postgres_store() -> Store {
    let url = postgres().fresh_database("sink").await.unwrap();
    Store::Postgres { url }
}

pub async fn sqlite_store() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.db");
    Store::Sqlite { path, _dir: dir }
}

impl Store {
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Postgres { .. } => "postgres",
            Store::Sqlite { .. } => "sqlite",
        }
    }

    /// The `[store]` section of a connector config.
    pub fn toml(&self) -> String {
        match self {
            Store::Postgres { url } => format!("[store]\nkind = \"postgres\"\nurl = \"{url}\"\n"),
            Store::Sqlite { path, .. } => format!(
                "[store]\nkind = \"sqlite\"\npath = \"{}\"\n",
                path.display()
            ),
        }
    }

    /// Its config, as a connector's `[store]` names it.
    pub fn config(&self) -> StoreConfig {
        match self {
            Store::Postgres { url } => StoreConfig::Postgres { url: url.clone() },
            Store::Sqlite { path, .. } => StoreConfig::Sqlite { path: path.clone() },
        }
    }

    /// The store, opened as a connector opens it. A connector may be writing to it at that
    /// moment (SQLite: one writer at a time), so a failed open is tried again for 30 s.
    pub async fn open(&self) -> AnyStore {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match AnyStore::open(&self.config()).await {
                Ok(store) => return store,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("opening the store: {e}; again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("opening the store: {e}"),
            }
        }
    }

    pub async fn rows(&self) -> Vec<Row> {
        let mut rows = self.open().await.rows().await.unwrap();
        sort(&mut rows);
        rows
    }

    /// The store's own digest (streamed by the store, not built from [`Self::rows`]).
    pub async fn digest(&self, buckets: usize) -> lienthong_connect::Digest {
        self.open().await.digest(buckets).await.unwrap()
    }

    pub async fn offsets(&self, connector: &str) -> Vec<StoredOffset> {
        self.open().await.offsets(connector).await.unwrap()
    }

    pub async fn forget_offsets(&self, connector: &str) -> u64 {
        self.open().await.forget_offsets(connector).await.unwrap()
    }
}

pub fn sort(rows: &mut [Row]) {
    rows.sort_by(|a, b| (&a.table, &a.key).cmp(&(&b.table, &b.key)));
}

pub fn catalog() -> Arc<Catalog> {
    Arc::new(Catalog::load(lienthong_contract::repo_schemas_dir()).unwrap())
}

/// A connector config as TOML: `topics` as (name, entity), plus extra lines.
pub fn config_toml(
    name: &str,
    kafka: &Kafka,
    topics: &[(&str, &str)],
    store: &Store,
    dlq: &str,
    extra: &str,
) -> String {
    let mut t = format!(
        "name = \"{name}\"\ndead_letter_topic = \"{dlq}\"\nshutdown_timeout_secs = 10\n{extra}\n\
         [kafka]\nbootstrap = \"{}\"\noptions = {{ \"session.timeout.ms\" = \"6000\", \"heartbeat.interval.ms\" = \"500\" }}\n\
         [schemas]\ndir = \"{}\"\n[batch]\nmax_records = 2000\nmax_wait_ms = 50\n[retry]\ninitial_ms = 100\nmax_ms = 2000\n",
        kafka.bootstrap(),
        lienthong_contract::repo_schemas_dir().display()
    );
    for (topic, entity) in topics {
        t.push_str(&format!(
            "[[topics]]\nname = \"{topic}\"\nentity = \"{entity}\"\n"
        ));
    }
    t.push_str(&store.toml());
    t
}

/// `toml` (from [`config_toml`]) reading writer schemas from the registry at `url`, with
/// `lines` added to its `[schemas]` section (a credential).
pub fn with_registry(toml: &str, url: &str, lines: &str) -> String {
    let dir = format!(
        "dir = \"{}\"\n",
        lienthong_contract::repo_schemas_dir().display()
    );
    assert!(toml.contains(&dir), "{toml}");
    toml.replace(&dir, &format!("{dir}registry_url = \"{url}\"\n{lines}\n"))
}

pub fn config(toml: &str) -> ConnectorConfig {
    ConnectorConfig::from_toml(toml).unwrap()
}

/// Run a connector in this process; returns its token and task.
pub fn spawn(
    config: ConnectorConfig,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), lienthong_connect::ConnectError>>,
) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let token = CancellationToken::new();
    let t = token.clone();
    let task = tokio::spawn(async move { lienthong_cli::connect::run(config, t).await });
    (token, task)
}

/// Units used by the generated streams (wards of Ho Chi Minh City, and a department).
pub const UNITS: [&str; 4] = ["26734", "26737", "26740", "STP"];

/// The lifecycle steps of case `i`: 2 to 7 of them, with units depending on `i`.
pub fn case_steps(i: usize) -> Vec<CaseEventKind> {
    let base = samples::case_lifecycle();
    let receiving = UNITS[i % 3];
    let home = UNITS[(i / 3) % 3];
    let processing = UNITS[(i / 9) % 4];
    let steps = 2 + i % 6;
    base.into_iter()
        .take(7)
        .take(steps)
        .map(|k| match k.event {
            CaseEventKind::CaseSubmitted(mut s) => {
                s.receiving_unit = receiving.into();
                s.home_unit = home.into();
                s.due_date += (i % 30) as i32;
                CaseEventKind::CaseSubmitted(s)
            }
            CaseEventKind::CaseAccepted(_) => CaseEventKind::CaseAccepted(CaseAccepted {
                processing_unit: processing.into(),
            }),
            CaseEventKind::CaseAssigned(mut a) => {
                a.from_unit = processing.into();
                a.to_unit = UNITS[(i / 9 + 1) % 4].into();
                CaseEventKind::CaseAssigned(a)
            }
            other => other,
        })
        .collect()
}

/// Case `i`'s id in stream `prefix`.
pub fn case_id(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:06}")
}

/// The events of `cases` cases, interleaved round-robin (each case's events stay in order).
pub fn case_stream(prefix: &str, cases: usize) -> Vec<CaseEvent> {
    let per_case: Vec<Vec<CaseEventKind>> = (0..cases).map(case_steps).collect();
    let rounds = per_case.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::new();
    let mut seed = fastrand::u64(..) >> 16;
    for r in 0..rounds {
        for (i, steps) in per_case.iter().enumerate() {
            if let Some(kind) = steps.get(r) {
                seed += 1;
                out.push(CaseEvent {
                    envelope: samples::envelope(seed, "26734", &case_id(prefix, i), r as i64 + 1),
                    event: kind.clone(),
                });
            }
        }
    }
    out
}

/// What the log says a store holding `events` must hold, computed independently of the
/// runtime: per case its version, status and number of history rows.
pub fn expected_cases(events: &[CaseEvent]) -> BTreeMap<String, (i64, String, usize)> {
    let mut m: BTreeMap<String, (i64, String, usize)> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for e in events {
        let entry = m
            .entry(e.envelope.aggregate_id.clone())
            .or_insert((0, String::new(), 0));
        if seen.insert(e.envelope.event_id.clone()) {
            entry.2 += 1;
        }
        if e.envelope.aggregate_version > entry.0 {
            entry.0 = e.envelope.aggregate_version;
            entry.1 = status_of(&e.event).to_string();
        }
    }
    m
}

pub fn status_of(k: &CaseEventKind) -> &'static str {
    match k {
        CaseEventKind::CaseSubmitted(_) => "case_submitted",
        CaseEventKind::CaseAccepted(_) => "case_accepted",
        CaseEventKind::CaseAssigned(_) => "case_assigned",
        CaseEventKind::SupplementRequested(_) => "supplement_requested",
        CaseEventKind::SupplementReceived(_) => "supplement_received",
        CaseEventKind::CaseCompleted(_) => "case_completed",
        CaseEventKind::CaseRejected(_) => "case_rejected",
        CaseEventKind::CaseWithdrawn(_) => "case_withdrawn",
        CaseEventKind::ResultReturned(_) => "result_returned",
    }
}

/// Check the store's cases and history against the independent expectation.
pub fn check_cases(rows: &[Row], expected: &BTreeMap<String, (i64, String, usize)>) {
    let cases: BTreeMap<&str, &Row> = rows
        .iter()
        .filter(|r| r.table == "cases")
        .map(|r| (r.key.as_str(), r))
        .collect();
    assert_eq!(cases.len(), expected.len(), "number of cases");
    let mut history: HashMap<String, usize> = HashMap::new();
    for r in rows.iter().filter(|r| r.table == "case_events") {
        let lienthong_connect::model::Cell::Text(id) = &r.cells["id"] else {
            panic!("history row without id: {r:?}");
        };
        *history.entry(id.clone()).or_default() += 1;
    }
    for (id, (version, status, events)) in expected {
        let row = cases
            .get(id.as_str())
            .unwrap_or_else(|| panic!("case {id} missing"));
        assert_eq!(
            row.cells["version"],
            lienthong_connect::model::Cell::Int(*version),
            "version of {id}"
        );
        assert_eq!(
            row.cells["status"],
            lienthong_connect::model::Cell::Text(status.clone()),
            "status of {id}"
        );
        assert_eq!(
            history.get(id).copied().unwrap_or(0),
            *events,
            "history rows of {id}"
        );
    }
    assert_eq!(
        history.values().sum::<usize>(),
        expected.values().map(|e| e.2).sum::<usize>(),
        "history rows in total (no duplicates)"
    );
}

/// Encode case events with the catalog's local schema id.
pub fn encode_cases(events: &[CaseEvent]) -> Vec<(String, Option<Vec<u8>>)> {
    encode_cases_as(events, catalog().local_id("hcm.case.events").unwrap())
}

/// Encode case events with the case schema under schema id `id` (a registry's id for it).
pub fn encode_cases_as(events: &[CaseEvent], id: u32) -> Vec<(String, Option<Vec<u8>>)> {
    let codec = Codec::new();
    codec.insert(id, &case_schema()).unwrap();
    events
        .iter()
        .map(|e| {
            (
                e.envelope.aggregate_id.clone(),
                Some(codec.encode_to_vec(id, e).unwrap()),
            )
        })
        .collect()
}

/// The catalog's case event schema.
pub fn case_schema() -> String {
    catalog()
        .topic("hcm.case.events")
        .unwrap()
        .schema_json
        .clone()
}

/// The case event schema with `edit` applied to the fields of its `CaseAccepted` branch.
pub fn case_schema_with_accepted(edit: &dyn Fn(&mut Vec<serde_json::Value>)) -> String {
    samples::case_schema_with_accepted(&case_schema(), edit).unwrap()
}

/// A compatible evolution of the case schema: `CaseAccepted` gains an optional `note`.
pub fn case_schema_with_note() -> String {
    samples::case_schema_with_note(&case_schema()).unwrap()
}

/// A `CaseAccepted` of case `case_id` at `version` by STP, written with
/// [`case_schema_with_note`] registered as `id` in `codec`; its event id is random.
pub fn accepted_with_note(
    codec: &Codec,
    id: u32,
    case_id: &str,
    version: i64,
    note: Option<String>,
) -> Vec<u8> {
    samples::accepted_with_note(codec, id, fastrand::u64(..1 << 40), case_id, version, note)
        .unwrap()
}

pub fn producer(kafka: &Kafka) -> FutureProducer {
    kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .create()
        .unwrap()
}

/// Produce `records` (key, value or tombstone) to `topic`, waiting for every acknowledgement.
pub async fn produce(kafka: &Kafka, topic: &str, records: &[(String, Option<Vec<u8>>)]) {
    produce_with(&producer(kafka), topic, records).await
}

/// Produce with an existing producer.
pub async fn produce_with(p: &FutureProducer, topic: &str, records: &[(String, Option<Vec<u8>>)]) {
    for chunk in records.chunks(5_000) {
        let futures: Vec<_> = chunk
            .iter()
            .map(|(k, v)| {
                let mut r = FutureRecord::<str, [u8]>::to(topic).key(k);
                if let Some(v) = v {
                    r = r.payload(v);
                }
                p.send(r, Duration::from_secs(30))
            })
            .collect();
        // `send` is lazy: awaited one by one, each record would wait out the linger alone.
        for result in futures::future::join_all(futures).await {
            result.map_err(|(e, _)| e).unwrap();
        }
    }
}

/// Each partition's end offset (high watermark).
pub async fn end_offsets(kafka: &Kafka, topic: &str) -> BTreeMap<i32, i64> {
    let kafka = kafka.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = kafka.client_config().create().unwrap();
        let md = c
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .unwrap();
        let parts = md.topics()[0].partitions().len() as i32;
        (0..parts)
            .map(|p| {
                let (_, high) = c
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .unwrap();
                (p, high)
            })
            .collect()
    })
    .await
    .unwrap()
}

/// Wait until the store's offsets for `connector` reach `ends` on `topic`.
/// The text a connector serves at `/metrics` on `port`.
pub async fn metrics_text(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Run the connector `config` in this process until its store holds `topic` as it ends now
/// (within 60 s), then stop it; the run must end cleanly.
pub async fn run_until_caught_up(
    config: ConnectorConfig,
    kafka: &Kafka,
    store: &Store,
    topic: &str,
) {
    let name = config.name.clone();
    let (token, task) = spawn(config);
    wait_caught_up(
        store,
        &name,
        topic,
        &end_offsets(kafka, topic).await,
        Duration::from_secs(60),
    )
    .await;
    token.cancel();
    task.await.unwrap().unwrap();
}

pub async fn wait_caught_up(
    store: &Store,
    connector: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let held: BTreeMap<i32, i64> = store
            .offsets(connector)
            .await
            .into_iter()
            .filter(|o| o.topic == topic)
            .map(|o| (o.partition, o.next))
            .collect();
        let done = ends
            .iter()
            .all(|(p, end)| *end == 0 || held.get(p).is_some_and(|h| h >= end));
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{connector} did not catch up on {topic} within {timeout:?}: holds {held:?}, log ends at {ends:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The rows a store must hold after consuming `topics` with `toml`'s filters: the same
/// connector config run over the in-memory store (the digest "from the log").
pub async fn fold_in_memory(toml: &str, topics: &[&str], kafka: &Kafka) -> Vec<Row> {
    let name = format!("fold-{}", unique_suffix());
    let mut config = config(toml);
    config.name = name.clone();
    config.group = None;
    config.metrics_listen = None;
    config.dead_letter_topic = kafka.create_topic("fold-dlq", 1, 1, &[]).await.unwrap();
    let memory = MemoryStore::new();
    let telemetry = lienthong_telemetry::Telemetry::new("test").unwrap();
    let token = CancellationToken::new();
    let task = tokio::spawn(lienthong_connect::run(
        config,
        catalog(),
        memory.clone(),
        telemetry,
        token.clone(),
    ));
    for topic in topics {
        let ends = end_offsets(kafka, topic).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let held: BTreeMap<i32, i64> = memory
                .offsets_of(&name)
                .into_iter()
                .filter(|o| o.topic == *topic)
                .map(|o| (o.partition, o.next))
                .collect();
            if ends
                .iter()
                .all(|(p, e)| *e == 0 || held.get(p).is_some_and(|h| h >= e))
            {
                break;
            }
            assert!(Instant::now() < deadline, "memory fold did not catch up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    token.cancel();
    task.await.unwrap().unwrap();
    let mut rows = memory.all_rows();
    sort(&mut rows);
    rows
}

/// Assert two row sets are equal, naming the first difference.
pub fn assert_same_rows(actual: &[Row], expected: &[Row], what: &str) {
    let a: BTreeMap<(&str, &str), &Row> = actual
        .iter()
        .map(|r| ((r.table.as_str(), r.key.as_str()), r))
        .collect();
    let e: BTreeMap<(&str, &str), &Row> = expected
        .iter()
        .map(|r| ((r.table.as_str(), r.key.as_str()), r))
        .collect();
    for (k, row) in &e {
        match a.get(k) {
            None => panic!("{what}: row {k:?} missing"),
            Some(got) => assert_eq!(got, row, "{what}: row {k:?} differs"),
        }
    }
    for k in a.keys() {
        assert!(e.contains_key(k), "{what}: unexpected row {k:?}");
    }
    assert_eq!(actual.len(), expected.len(), "{what}: row count");
}

/// A dead-lettered record as read back: its headers (name, value) and its key.
pub type DeadLetter = (Vec<(String, String)>, Option<Vec<u8>>);

/// Read `n` DLQ records with their headers: `(headers, key)`, and one more if it comes
/// within 2 s (a record dead-lettered that should not have been).
pub async fn dlq_headers(kafka: &lienthong_tests::Kafka, topic: &str, n: usize) -> Vec<DeadLetter> {
    use rdkafka::Message;
    use rdkafka::consumer::Consumer;
    let consumer = kafka
        .consumer(&format!("dlq-reader-{}", unique_suffix()))
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while out.len() < n && std::time::Instant::now() < deadline {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            out.push((
                lienthong_connect::runner::dlq_headers(&m),
                m.key().map(<[u8]>::to_vec),
            ));
        }
    }
    // Anything more would be a record dead-lettered that should not have been.
    if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await {
        out.push((
            lienthong_connect::runner::dlq_headers(&m),
            m.key().map(<[u8]>::to_vec),
        ));
    }
    out
}

/// Run the connector `config` in this process until `store` holds the whole of `topic` as it
/// ends now, then stop it; the events/s from its first committed batch to its last (a
/// benchmark's measure: the start, connecting and joining the group, is left out).
pub async fn apply_rate(config: ConnectorConfig, kafka: &Kafka, store: &Store, topic: &str) -> f64 {
    let name = config.name.clone();
    let end: i64 = end_offsets(kafka, topic).await.values().sum();
    let (token, task) = spawn(config);
    let mut first: Option<(i64, Instant)> = None;
    let rate = loop {
        let at: i64 = store.offsets(&name).await.iter().map(|o| o.next).sum();
        if at > 0 && first.is_none() {
            first = Some((at, Instant::now()));
        }
        if at >= end {
            let (from, since) = first.unwrap_or((0, Instant::now()));
            break (end - from) as f64 / since.elapsed().as_secs_f64().max(1e-3);
        }
        assert!(!task.is_finished(), "the connector stopped");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    token.cancel();
    task.await.unwrap().unwrap();
    rate
}

/// A city CA for one test: its certificate saved in a temporary folder (`ca_crt`, for a
/// `trusted_cas`), and a certificate log on its own topic of `kafka`, trusting it.
pub struct Pki {
    pub ca: lienthong_signing::CityCa,
    pub ca_crt: PathBuf,
    pub dir: tempfile::TempDir,
    pub topic: String,
    pub log: lienthong_signing::CertificateLog<rdkafka::consumer::DefaultConsumerContext>,
}

impl Pki {
    pub async fn new(kafka: &Kafka, shutdown: &CancellationToken) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = lienthong_signing::CityCa::generate("HCMC City CA (test)", 30).unwrap();
        let (_, ca_crt) = ca.save(dir.path()).unwrap();
        let topic = format!("certificates-{}", unique_suffix());
        let log = lienthong_signing::CertificateLog::open(
            &lienthong_bus::state_log::StateLogConfig {
                kafka: kafka.config(),
                topic: topic.clone(),
                replication: 1,
                topic_config: Vec::new(),
                group: format!("certificates-{}", unique_suffix()),
            },
            vec![ca.certificate().clone()],
            rdkafka::consumer::DefaultConsumerContext,
            shutdown.child_token(),
        )
        .await
        .unwrap();
        Pki {
            ca,
            ca_crt,
            dir,
            topic,
            log,
        }
    }

    /// A certificate issued to `agency`, on the log, with its private key in PEM.
    pub async fn issue(&self, agency: &str) -> lienthong_signing::Issued {
        let issued = self.ca.issue(agency, 7).unwrap();
        self.log
            .publish(&issued.certificate, "admin")
            .await
            .unwrap();
        issued
    }

    /// `agency`'s certificate (on the log) and the signer holding its key.
    pub async fn signer(
        &self,
        agency: &str,
    ) -> (
        lienthong_signing::AgencyCertificate,
        lienthong_signing::AgencySigner,
    ) {
        let issued = self.issue(agency).await;
        let signer =
            lienthong_signing::AgencySigner::from_pem(&issued.key_pem, issued.certificate.clone())
                .unwrap();
        (issued.certificate, signer)
    }

    /// A `lienthong` config file for `kafka` whose `[signing]` trusts this CA's log.
    pub fn cli_config(&self, kafka: &Kafka) -> PathBuf {
        let path = self.dir.path().join("lienthong.toml");
        std::fs::write(
            &path,
            format!(
                "[kafka]\nbootstrap = \"{}\"\n[signing]\ntrusted_cas = [\"{}\"]\ntopic = \"{}\"\n",
                kafka.bootstrap(),
                self.ca_crt.display(),
                self.topic
            ),
        )
        .unwrap();
        path
    }

    /// A connector's `[signatures]` section trusting this CA's log.
    pub fn signatures_toml(&self) -> String {
        format!(
            "[signatures]\ntrusted_cas = [\"{}\"]\ntopic = \"{}\"\n",
            self.ca_crt.display(),
            self.topic
        )
    }
}

/// Assert that each of `expected` (a record key and a fragment of its reason) was
/// dead-lettered with class `class` and that reason, among `dead` (from [`dlq_headers`]).
pub fn assert_dead_lettered(dead: &[DeadLetter], class: &str, expected: &[(&str, &str)]) {
    for (key, reason) in expected {
        let (headers, _) = dead
            .iter()
            .find(|(_, k)| k.as_deref() == Some(key.as_bytes()))
            .unwrap_or_else(|| panic!("{reason}: {key} not dead-lettered"));
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(get("lienthong.error.class"), class, "{reason}");
        assert!(
            get("lienthong.error.message").contains(reason),
            "{reason}: {}",
            get("lienthong.error.message")
        );
    }
}

/// A fresh topic that keeps the broker's append time, as `lienthong topics create` makes the
/// catalog's (what revocations and the sync delay are read against).
pub async fn stamped_topic(kafka: &Kafka, name: &str, partitions: i32) -> String {
    kafka
        .create_topic(
            name,
            partitions,
            1,
            &[("message.timestamp.type", "LogAppendTime")],
        )
        .await
        .unwrap()
}

/// A `lienthong connect` or `lienthong source` process writing its log to a file.
pub struct Process {
    child: Child,
}

impl Process {
    /// `lienthong <command> <config>`, its log appended to `log`.
    pub fn start(command: &str, config: &Path, log: &Path) -> Process {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_lienthong"))
            .arg(command)
            .arg(config)
            .current_dir(lienthong_tests::repo_root())
            .env("RUST_LOG", "info,apache_avro=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Process { child }
    }

    /// SIGKILL, and reap it.
    pub fn sigkill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "the process exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no clean exit within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Process logs stay in /tmp after the test, for a post-mortem.
pub fn log_path(name: &str, which: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("lienthong-sink-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}-{which}.log"));
    eprintln!("log: {}", path.display());
    path
}

/// Stops (and deletes) a PostgreSQL instance of this test when dropped.
pub struct OwnPostgres(pub String);

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = lienthong_tests::run_ops("postgres.sh", &["stop", "--name", &self.0]);
    }
}

/// `ops/postgres.sh ARGS`, which must succeed; its output.
pub fn ops_output(args: &[&str]) -> String {
    let out = Command::new(lienthong_tests::repo_root().join("ops/postgres.sh"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ops/postgres.sh {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
