//! `verify` and `repair` on their own, over the embedded Kafka-protocol broker (librdkafka's
//! mock cluster) and a store in memory: a store in sync is found in sync even when the log has
//! moved on past it (the fold stops at the store's offsets); rows missing, extra and changed by
//! hand are each found, named and put right, and nothing else is touched. The same against
//! real Kafka, PostgreSQL and SQLite while the connector runs: `crates/cli/tests/verify.rs`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use lienthong_bus::{EmbeddedKafka, KafkaConfig};
use lienthong_connect::model::Cell;
use lienthong_connect::verify::{Difference, Progress};
use lienthong_connect::{ConnectorConfig, Fix, MemoryStore, Row, Sink};
use lienthong_contract::events::CaseEvent;
use lienthong_contract::{Catalog, Codec, samples};
use lienthong_telemetry::Telemetry;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "hcm.case.events";
const NAME: &str = "verify-test";

fn config(bootstrap: &str) -> ConnectorConfig {
    ConnectorConfig::from_toml(&format!(
        "name = \"{NAME}\"\ndead_letter_topic = \"dead-letters\"\nshutdown_timeout_secs = 5\n\
         [kafka]\nbootstrap = \"{bootstrap}\"\noptions = {{ \"session.timeout.ms\" = \"6000\" }}\n\
         [schemas]\ndir = \"{}\"\n[[topics]]\nname = \"{TOPIC}\"\n\
         [batch]\nmax_records = 50\nmax_wait_ms = 20\n\
         [store]\nkind = \"sqlite\"\npath = \"unused\"\n",
        lienthong_contract::repo_schemas_dir().display()
    ))
    .unwrap()
}

/// Publish the sample lifecycle of `cases` cases named `prefix-NNNN`.
async fn publish(bootstrap: &str, prefix: &str, cases: usize) {
    let catalog = Catalog::load(lienthong_contract::repo_schemas_dir()).unwrap();
    let codec = Codec::from_catalog(&catalog).unwrap();
    let id = catalog.local_id(TOPIC).unwrap();
    let producer: FutureProducer = KafkaConfig::new(bootstrap).producer().create().unwrap();
    for i in 0..cases {
        let case = format!("{prefix}-{i:04}");
        for (v, step) in samples::case_lifecycle().into_iter().enumerate() {
            let event = CaseEvent {
                envelope: samples::envelope((i * 100 + v) as u64, "26734", &case, v as i64 + 1),
                event: step.event,
            };
            let value = codec.encode_to_vec(id, &event).unwrap();
            producer
                .send(
                    FutureRecord::to(TOPIC).key(&case).payload(&value),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    }
}

/// Run the connector over `store` until it holds `records` records in all, then stop it.
async fn catch_up(
    config: &ConnectorConfig,
    catalog: &Arc<Catalog>,
    store: &MemoryStore,
    records: i64,
) {
    let stop = CancellationToken::new();
    let task = tokio::spawn(lienthong_connect::run(
        config.clone(),
        Arc::clone(catalog),
        store.clone(),
        Telemetry::new("connector").unwrap(),
        stop.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.offsets_of(NAME).iter().map(|o| o.next).sum::<i64>() < records {
        assert!(!task.is_finished(), "the connector stopped");
        assert!(Instant::now() < deadline, "the connector did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();
}

fn row(store: &MemoryStore, table: &str, key: &str) -> Row {
    store
        .all_rows()
        .into_iter()
        .find(|r| r.table == table && r.key == key)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_changed_removed_and_added_by_hand_are_found_and_put_right() {
    let kafka =
        EmbeddedKafka::start(1, &[(TOPIC.to_string(), 2), ("dead-letters".into(), 1)]).unwrap();
    let bootstrap = kafka.bootstrap().to_string();
    let config = config(&bootstrap);
    let catalog = Arc::new(Catalog::load(lienthong_contract::repo_schemas_dir()).unwrap());
    let steps = samples::case_lifecycle().len();
    publish(&bootstrap, "VF", 20).await;
    let mut store = MemoryStore::new();
    catch_up(&config, &catalog, &store, (20 * steps) as i64).await;
    // The log moves on past the store: still in sync as of the store's offsets.
    publish(&bootstrap, "LATER", 5).await;
    let (progress, stop) = (Progress::default(), CancellationToken::new());
    let v = lienthong_connect::verify(&config, &catalog, &mut store, 16, &progress, &stop)
        .await
        .unwrap();
    assert!(v.in_sync(), "{:?}", v.divergences);
    assert_eq!(v.store_rows, 20 + (20 * steps) as u64);
    assert_eq!((v.store_rows, v.differing_buckets), (v.log_rows, 0));

    // By hand: one case's status changed, one case removed, one history row added.
    let mut changed = row(&store, "cases", "VF-0003");
    let was = changed
        .cells
        .insert("status".into(), Cell::Text("edited".into()));
    let extra = Row {
        table: "case_events".into(),
        key: "not-an-event".into(),
        cells: [("kind".to_string(), Cell::Text("x".into()))].into(),
    };
    let tamper = Fix {
        expected: {
            let mut o = store.offsets_of(NAME);
            lienthong_connect::StoredOffset::sort(&mut o);
            o
        },
        keys: vec![
            ("cases".into(), "VF-0003".into()),
            ("cases".into(), "VF-0011".into()),
        ],
        // And a row of a table another connector would keep (units): not this one's to check.
        rows: vec![
            changed,
            extra,
            Row {
                table: "units".into(),
                key: "26734".into(),
                cells: [("name".to_string(), Cell::Text("Phường".into()))].into(),
            },
        ],
    };
    store.repair(NAME, &tamper).await.unwrap();

    let v = lienthong_connect::verify(&config, &catalog, &mut store, 16, &progress, &stop)
        .await
        .unwrap();
    let found: Vec<(&str, &str, &Difference)> = v
        .divergences
        .iter()
        .map(|d| (d.table.as_str(), d.key.as_str(), &d.difference))
        .collect();
    assert_eq!(
        found,
        vec![
            ("case_events", "not-an-event", &Difference::Extra),
            (
                "cases",
                "VF-0003",
                &Difference::Columns(vec![(
                    "status".into(),
                    Some(Cell::Text("edited".into())),
                    was
                )])
            ),
            ("cases", "VF-0011", &Difference::Missing),
        ]
    );
    assert!(
        v.divergences[1]
            .to_string()
            .contains("status is \"edited\" in the store")
    );

    // A connector name the store holds no offsets for: refused, not "every row is extra".
    let mut misnamed = config.clone();
    misnamed.name = "verify-tset".into();
    let refused = lienthong_connect::verify(&misnamed, &catalog, &mut store, 16, &progress, &stop)
        .await
        .unwrap_err();
    assert!(refused.is_config(), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("no offsets for connector verify-tset"),
        "{refused}"
    );

    let before = store.all_rows().len();
    let repaired = lienthong_connect::repair(&config, &catalog, &mut store, 16, &progress, &stop)
        .await
        .unwrap();
    assert_eq!(repaired.before.divergences.len(), 3);
    assert!(repaired.after.in_sync(), "{:?}", repaired.after.divergences);
    assert_eq!(store.all_rows().len(), before); // one added, one removed
    // The connector's offsets are the store's: the repair moved none.
    assert_eq!(
        store.offsets_of(NAME).iter().map(|o| o.next).sum::<i64>(),
        (20 * steps) as i64
    );
}

/// A store in memory whose first repair finds the connector moved on: before it, the connector
/// applies the records that arrived since the check (one of them to a key being repaired).
struct MovesOnce {
    inner: MemoryStore,
    catch_up: Option<(ConnectorConfig, Arc<Catalog>, i64)>,
}

impl Sink for MovesOnce {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn offsets(
        &mut self,
        connector: &str,
    ) -> Result<Vec<lienthong_connect::StoredOffset>, lienthong_connect::StoreError> {
        self.inner.offsets(connector).await
    }

    async fn apply(
        &mut self,
        batch: lienthong_connect::Batch,
    ) -> Result<lienthong_connect::Applied, lienthong_connect::StoreError> {
        self.inner.apply(batch).await
    }

    async fn rows(&mut self) -> Result<Vec<Row>, lienthong_connect::StoreError> {
        self.inner.rows().await
    }

    async fn snapshot(
        &mut self,
        connector: &str,
        scan: lienthong_connect::Scan,
    ) -> Result<lienthong_connect::Snapshot, lienthong_connect::StoreError> {
        self.inner.snapshot(connector, scan).await
    }

    async fn repair(
        &mut self,
        connector: &str,
        fix: &Fix,
    ) -> Result<(), lienthong_connect::StoreError> {
        if let Some((config, catalog, records)) = self.catch_up.take() {
            catch_up(&config, &catalog, &self.inner, records).await;
        }
        self.inner.repair(connector, fix).await
    }

    async fn forget_offsets(
        &mut self,
        connector: &str,
    ) -> Result<u64, lienthong_connect::StoreError> {
        self.inner.forget_offsets(connector).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_refused_because_the_connector_moved_is_made_again_as_of_where_it_is() {
    let kafka =
        EmbeddedKafka::start(1, &[(TOPIC.to_string(), 2), ("dead-letters".into(), 1)]).unwrap();
    let bootstrap = kafka.bootstrap().to_string();
    let config = config(&bootstrap);
    let catalog = Arc::new(Catalog::load(lienthong_contract::repo_schemas_dir()).unwrap());
    let steps = samples::case_lifecycle().len();
    publish(&bootstrap, "MV", 10).await;
    let memory = MemoryStore::new();
    catch_up(&config, &catalog, &memory, (10 * steps) as i64).await;
    // By hand: MV-0002 removed.
    let mut expected = memory.offsets_of(NAME);
    lienthong_connect::StoredOffset::sort(&mut expected);
    let mut tampering = memory.clone();
    tampering
        .repair(
            NAME,
            &Fix {
                expected,
                keys: vec![("cases".into(), "MV-0002".into())],
                rows: vec![],
            },
        )
        .await
        .unwrap();
    // Then the first three cases' lifecycles arrive again (a producer that sent them twice:
    // the same events, which bring MV-0002 back but change nothing else), and the connector
    // applies them just before the repair's transaction.
    publish(&bootstrap, "MV", 3).await;
    let mut store = MovesOnce {
        inner: memory.clone(),
        catch_up: Some((config.clone(), Arc::clone(&catalog), (13 * steps) as i64)),
    };
    let (progress, stop) = (Progress::default(), CancellationToken::new());
    let repaired = lienthong_connect::repair(&config, &catalog, &mut store, 8, &progress, &stop)
        .await
        .unwrap();
    assert_eq!(repaired.retries, 1);
    let found: Vec<(&str, &Difference)> = repaired
        .before
        .divergences
        .iter()
        .map(|d| (d.key.as_str(), &d.difference))
        .collect();
    assert_eq!(found, vec![("MV-0002", &Difference::Missing)]);
    assert!(repaired.after.in_sync(), "{:?}", repaired.after.divergences);
    assert_eq!(repaired.after.store_rows, (10 + 10 * steps) as u64);
    assert_eq!(
        memory.offsets_of(NAME).iter().map(|o| o.next).sum::<i64>(),
        (13 * steps) as i64
    );
}
