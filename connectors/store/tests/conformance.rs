//! One conformance suite for every store: the same generic cases run on the store in memory,
//! SQLite and PostgreSQL (the suite's real server, `ops/services.sh up`), each opened through
//! `AnyStore`, as a connector opens it. What every store must do with a batch: an event
//! delivered twice is one history row; the version guard never moves a row backwards; a
//! tombstone deletes the row and a replay after it keeps one history row an event; a newer
//! writer schema with a new optional field adds a column; offsets move only from where the
//! store holds them (fencing). Each store ends with the same rows as the store in memory that
//! took every event once.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use lienthong_connect::config::StoreConfig;
use lienthong_connect::model::{Cell, Entity, Layout, Op, sample_case_ops};
use lienthong_connect::{Batch, Digest, MemoryStore, OffsetUpdate, Row, Sink, StoreError};
use lienthong_contract::{Catalog, Codec, samples};
use lienthong_store::AnyStore;

macro_rules! every_store {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Fresh::memory()).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Fresh::sqlite().await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Fresh::postgres().await).await
                }
            )*
        }
    };
}

every_store!(
    an_event_delivered_twice_is_one_history_row,
    the_version_guard_never_moves_a_row_backwards,
    a_replay_after_a_tombstone_keeps_one_history_row_an_event,
    a_new_optional_field_adds_a_column,
    offsets_move_only_from_where_the_store_holds_them,
);

/// An empty store of one kind (and the folder its SQLite file lives in).
struct Fresh {
    store: AnyStore,
    _dir: Option<tempfile::TempDir>,
}

impl Fresh {
    fn memory() -> Fresh {
        Fresh {
            store: AnyStore::Memory(MemoryStore::new()),
            _dir: None,
        }
    }

    async fn sqlite() -> Fresh {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::Sqlite {
            path: dir.path().join("store.sqlite"),
        };
        Fresh {
            store: AnyStore::open(&config).await.unwrap(),
            _dir: Some(dir),
        }
    }

    async fn postgres() -> Fresh {
        let url = lienthong_tests::postgres()
            .fresh_database("conformance")
            .await
            .unwrap();
        Fresh {
            store: AnyStore::open(&StoreConfig::Postgres { url })
                .await
                .unwrap(),
            _dir: None,
        }
    }
}

const CONNECTOR: &str = "conformance";

fn batch(ops: Vec<Op>, expected: Option<i64>, next: i64) -> Batch {
    Batch {
        connector: CONNECTOR.into(),
        ops,
        offsets: vec![OffsetUpdate {
            topic: "t".into(),
            partition: 0,
            expected,
            next,
        }],
    }
}

/// The rows a store that took `ops` once each, in one batch, holds.
fn once(ops: &[Op]) -> Vec<Row> {
    let reference = MemoryStore::new();
    reference.apply_now(batch(ops.to_vec(), None, 1)).unwrap();
    reference.all_rows()
}

fn digest(rows: Vec<Row>) -> Digest {
    Digest::of(rows, 16)
}

fn count(rows: &[Row], table: &str) -> usize {
    rows.iter().filter(|r| r.table == table).count()
}

fn cell<'a>(rows: &'a [Row], table: &str, key: &str, column: &str) -> Option<&'a Cell> {
    rows.iter()
        .find(|r| r.table == table && r.key == key)
        .and_then(|r| r.cells.get(column))
}

/// Every event of the aggregate `key`, in log order.
fn of(ops: &[Op], key: &str) -> Vec<Op> {
    ops.iter()
        .filter(|op| op.target().1 == key)
        .cloned()
        .collect()
}

/// Keys of aggregates with at least `n` events, in order of first appearance.
fn keys_with(ops: &[Op], n: usize) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for op in ops {
        let k = op.target().1;
        if !keys.iter().any(|x| x == k) && of(ops, k).len() >= n {
            keys.push(k.to_string());
        }
    }
    keys
}

/// A producer's retry puts the same event twice into one batch, and a replay puts it into a
/// later one: the history holds it once, the batch is not refused, and the rows are those of
/// the events applied once.
async fn an_event_delivered_twice_is_one_history_row(mut fresh: Fresh) {
    let store = &mut fresh.store;
    let ops = sample_case_ops(40, "DUP").unwrap();
    let mut first: Vec<Op> = ops[..30].to_vec();
    first.insert(4, ops[3].clone());
    first.push(ops[7].clone());
    let applied = store.apply(batch(first, None, 32)).await.unwrap();
    assert_eq!((applied.applied, applied.stale), (30, 2), "{applied:?}");
    let mut second: Vec<Op> = ops[30..].to_vec();
    second.extend(ops[..3].iter().cloned());
    let applied = store.apply(batch(second, Some(32), 45)).await.unwrap();
    assert_eq!((applied.applied, applied.stale), (10, 3), "{applied:?}");
    let rows = store.rows().await.unwrap();
    assert_eq!(count(&rows, "case_events"), 40, "one history row an event");
    assert_eq!(digest(rows), digest(once(&ops)), "{}", store.kind());
}

/// Events of a case arrive out of order and again: an older version never moves the row back
/// (its status, version and columns stay the newest's), yet an event the store had not seen
/// still joins the history. Every store ends as the store in memory fed the same batches.
async fn the_version_guard_never_moves_a_row_backwards(mut fresh: Fresh) {
    let store = &mut fresh.store;
    let ops = sample_case_ops(40, "VER").unwrap();
    let key = keys_with(&ops, 4)[0].clone();
    let events = of(&ops, &key);
    let n = events.len();
    // Everything but the case's second event; then that one, late; then the first again.
    let late = events[1].clone();
    let Op::Upsert(late_change) = &late else {
        panic!("{late:?}")
    };
    let late_version = late_change.version;
    let mut first: Vec<Op> = ops.clone();
    first.retain(|op| !matches!(op, Op::Upsert(c) if c.key == key && c.version == late_version));
    assert_eq!(first.len(), ops.len() - 1);
    let reference = MemoryStore::new();
    reference.apply_now(batch(first.clone(), None, 10)).unwrap();
    store.apply(batch(first, None, 10)).await.unwrap();
    let before = store.rows().await.unwrap();
    let version = cell(&before, "cases", &key, "version").cloned();
    assert_eq!(version, Some(Cell::Int(n as i64)));
    let again = batch(vec![late, events[0].clone()], Some(10), 12);
    reference.apply_now(again.clone()).unwrap();
    let applied = store.apply(again).await.unwrap();
    assert_eq!(
        (applied.applied, applied.stale),
        (0, 2),
        "neither moves the row: {applied:?}"
    );
    let after = store.rows().await.unwrap();
    assert_eq!(cell(&after, "cases", &key, "version"), version.as_ref());
    assert_eq!(
        cell(&after, "cases", &key, "status"),
        cell(&before, "cases", &key, "status")
    );
    assert_eq!(
        count(&after, "case_events"),
        count(&before, "case_events") + 1,
        "the late event joins the history"
    );
    // Its step's columns stay as they were: the row is not the one of the events in order.
    assert_eq!(
        digest(after),
        digest(reference.all_rows()),
        "{}",
        store.kind()
    );
}

/// A tombstone deletes a case's row, not its history; a replay of the log re-creates the row
/// and keeps one history row an event, and the tombstone again deletes it again.
async fn a_replay_after_a_tombstone_keeps_one_history_row_an_event(mut fresh: Fresh) {
    let store = &mut fresh.store;
    let ops = sample_case_ops(60, "TOMB").unwrap();
    let keys = keys_with(&ops, 3);
    let (events, others) = (of(&ops, &keys[0]), of(&ops, &keys[1]));
    let tombstone = Op::Delete {
        entity: Entity::Cases,
        key: keys[0].clone(),
    };
    let mut first = events.clone();
    first.push(others[0].clone());
    store.apply(batch(first, None, 1)).await.unwrap();
    store
        .apply(batch(vec![tombstone.clone()], Some(1), 2))
        .await
        .unwrap();
    let rows = store.rows().await.unwrap();
    assert_eq!(count(&rows, "cases"), 1, "the tombstone deleted the row");
    assert_eq!(count(&rows, "case_events"), events.len() + 1);
    // The replay, with the other case's new events; then the tombstone again.
    store
        .apply(batch(events[..1].to_vec(), Some(2), 3))
        .await
        .unwrap();
    let mut replay = events[1..].to_vec();
    replay.extend(others[1..].iter().cloned());
    store.apply(batch(replay, Some(3), 4)).await.unwrap();
    let rows = store.rows().await.unwrap();
    assert_eq!(
        cell(&rows, "cases", &keys[0], "version"),
        Some(&Cell::Int(events.len() as i64))
    );
    assert_eq!(count(&rows, "case_events"), events.len() + others.len());
    store
        .apply(batch(vec![tombstone.clone()], Some(4), 5))
        .await
        .unwrap();
    let mut all = events;
    all.extend(others);
    all.push(tombstone);
    assert_eq!(
        digest(store.rows().await.unwrap()),
        digest(once(&all)),
        "{}",
        store.kind()
    );
}

/// A newer writer schema whose `CaseAccepted` has an optional `note`: its records add a
/// nullable column and fill it; rows written before keep no value there.
async fn a_new_optional_field_adds_a_column(mut fresh: Fresh) {
    let store = &mut fresh.store;
    let ops = sample_case_ops(20, "COL").unwrap();
    store.apply(batch(ops.clone(), None, 1)).await.unwrap();
    let catalog = Catalog::load(lienthong_contract::repo_schemas_dir()).unwrap();
    let v1 = &catalog.topic("hcm.case.events").unwrap().schema_json;
    let codec = Codec::new();
    codec
        .insert(2, &samples::case_schema_with_note(v1).unwrap())
        .unwrap();
    let layout = Layout::new(Entity::Cases, codec.schema(2).unwrap().schema()).unwrap();
    let noted = "COL-NOTED";
    let bytes =
        samples::accepted_with_note(&codec, 2, 77, noted, 1, Some("ghi chú".into())).unwrap();
    let (_, value) = codec.decode_value(&bytes, None).unwrap();
    let op = Op::Upsert(layout.change(value, None).unwrap());
    store
        .apply(batch(vec![op.clone()], Some(1), 2))
        .await
        .unwrap();
    let rows = store.rows().await.unwrap();
    assert_eq!(
        cell(&rows, "cases", noted, "case_accepted__note"),
        Some(&Cell::Text("ghi chú".into()))
    );
    let earlier = keys_with(&ops, 1);
    assert!(
        earlier
            .iter()
            .all(|k| cell(&rows, "cases", k, "case_accepted__note").is_none())
    );
    let mut all = ops;
    all.push(op);
    assert_eq!(digest(rows), digest(once(&all)), "{}", store.kind());
}

/// A batch says where it expects each partition to be; a store that holds another offset
/// (another instance moved it) refuses it as fenced and keeps nothing of it. Forgetting the
/// offsets lets a replay start from nothing.
async fn offsets_move_only_from_where_the_store_holds_them(mut fresh: Fresh) {
    let store = &mut fresh.store;
    let ops = sample_case_ops(12, "FEN").unwrap();
    store
        .apply(batch(ops[..6].to_vec(), None, 6))
        .await
        .unwrap();
    for expected in [None, Some(5), Some(7)] {
        let refused = store.apply(batch(ops[6..].to_vec(), expected, 12)).await;
        assert!(
            matches!(refused, Err(StoreError::Fenced { ref topic, partition: 0 }) if topic == "t"),
            "{expected:?}: {refused:?}"
        );
    }
    let rows = store.rows().await.unwrap();
    assert_eq!(digest(rows), digest(once(&ops[..6])), "nothing of it kept");
    store
        .apply(batch(ops[6..].to_vec(), Some(6), 12))
        .await
        .unwrap();
    let held = store.offsets(CONNECTOR).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!((held[0].partition, held[0].next), (0, 12));
    assert_eq!(store.forget_offsets(CONNECTOR).await.unwrap(), 1);
    assert!(store.offsets(CONNECTOR).await.unwrap().is_empty());
    store.apply(batch(ops.clone(), None, 12)).await.unwrap();
    assert_eq!(
        digest(store.rows().await.unwrap()),
        digest(once(&ops)),
        "{}",
        store.kind()
    );
}
