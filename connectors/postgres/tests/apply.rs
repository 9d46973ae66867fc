//! `PostgresSink::apply` against the real PostgreSQL of `LIENTHONG_PG_URL` (started by
//! `ops/services.sh up`): what one batch transaction writes when events arrive more than once
//! and another writer races it, and which slower, safe path it takes then. What every store
//! must do is in the conformance suite (`connectors/store/tests/conformance.rs`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use lienthong_connect::model::{Op, sample_case_ops};
use lienthong_connect::sink::{Batch, OffsetUpdate, Sink};
use lienthong_sink_postgres::PostgresSink;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn batch(ops: Vec<Op>, expected: Option<i64>, next: i64) -> Batch {
    Batch {
        connector: "apply-test".into(),
        ops,
        offsets: vec![OffsetUpdate {
            topic: "t".into(),
            partition: 0,
            expected,
            next,
        }],
    }
}

/// A sink on a fresh database of the suite's PostgreSQL, and that database's URL.
async fn fresh_sink(prefix: &str) -> (PostgresSink, String) {
    let url = lienthong_tests::postgres()
        .fresh_database(prefix)
        .await
        .unwrap();
    (PostgresSink::open(&url).await.unwrap(), url)
}

/// Commit `tx`, another writer's transaction on the store at `url`, once a session of that
/// database waits for a transaction to end (the sink, on a row or key `tx` wrote).
async fn commit_once_the_sink_waits(url: &str, tx: tokio_postgres::Transaction<'_>) {
    let watcher = lienthong_tests::connect(url).await.unwrap();
    let since = Instant::now();
    while watcher
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'transactionid'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(since.elapsed() < Duration::from_secs(20), "the sink never waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.commit().await.unwrap();
}

/// The two stores hold the same rows (equal digests).
async fn assert_same_rows(a: &mut PostgresSink, b: &mut PostgresSink) {
    let digest = |rows| lienthong_connect::Digest::of(rows, 16);
    assert_eq!(
        digest(a.rows().await.unwrap()),
        digest(b.rows().await.unwrap())
    );
}

async fn count(url: &str, sql: &str) -> i64 {
    let client = lienthong_tests::connect(url).await.unwrap();
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Another writer, outside the connector's fence, stores an event while the batch that carries
/// it runs. The case is new to the store, so its events' history goes in by COPY (predicted
/// new): the COPY meets the other transaction's key, waits for it, and fails when it commits.
/// The sink rolls back to its savepoint and inserts those rows again with a lookup, which now
/// sees the other writer's row and skips it: the batch applies, each event once.
#[tokio::test]
async fn an_event_stored_by_another_writer_during_the_copy_is_looked_up_again() {
    let (mut sink, url) = fresh_sink("apply_race_copy").await;
    let ops = sample_case_ops(10, "RACEC").unwrap();
    let n = ops.len() as i64;
    let mut other = lienthong_tests::connect(&url).await.unwrap();
    let tx = other.transaction().await.unwrap();
    insert_history(&tx, &ops[0]).await;
    let (applied, ()) = tokio::join!(
        sink.apply(batch(ops.clone(), None, n)),
        commit_once_the_sink_waits(&url, tx)
    );
    applied.unwrap();
    assert_eq!(
        sink.fallbacks().predicted_new,
        1,
        "the COPY met the key once"
    );
    assert_eq!(count(&url, "SELECT count(*) FROM case_events").await, n);
    assert_eq!(
        count(&url, "SELECT count(*) FROM lienthong_offsets").await,
        1
    );
}

/// A writer outside the connector's fence inserts, at `other_version`, the row of a case new to
/// the store while the batch that creates it runs. The sink inserts rows it held no row of
/// plainly (predicted new), so the insert meets the other transaction's key, waits, and fails
/// when it commits; from the savepoint the sink writes them again as a version-guarded upsert,
/// and the history with a lookup. The store first takes other cases, so that the batch adds no
/// column (an `ALTER TABLE` would wait on the other writer's lock instead of the insert).
/// Returns the sink, its URL, the case's key and the batch's events.
async fn race_a_row_into_the_insert(
    prefix: &str,
    other_version: i64,
) -> (PostgresSink, String, String, Vec<Op>) {
    let (mut sink, url) = fresh_sink(prefix).await;
    let warm = sample_case_ops(10, &format!("{prefix}W")).unwrap();
    let w = warm.len() as i64;
    sink.apply(batch(warm, None, w)).await.unwrap();
    let ops = sample_case_ops(10, prefix).unwrap();
    let n = ops.len() as i64;
    let key = ops
        .iter()
        .map(|op| op.target().1)
        .find(|k| ops.iter().filter(|op| op.target().1 == *k).count() >= 2)
        .unwrap()
        .to_string();
    let mut other = lienthong_tests::connect(&url).await.unwrap();
    let tx = other.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO cases (id, version, event_id, occurred_at, producer_unit, correlation_id, status) VALUES ($1, $2, 'other', 0, 'other', 'other', 'other_writer')",
        &[&key, &other_version],
    )
    .await
    .unwrap();
    let (applied, ()) = tokio::join!(
        sink.apply(batch(ops.clone(), Some(w), w + n)),
        commit_once_the_sink_waits(&url, tx)
    );
    applied.unwrap();
    assert_eq!(
        sink.fallbacks().predicted_new,
        1,
        "the insert met the key once"
    );
    assert_eq!(
        count(&url, "SELECT count(*) FROM case_events").await,
        w + n,
        "every event's history, whichever row wins"
    );
    (sink, url, key, ops)
}

/// The other writer's row is older than the batch's: the batch's version wins, and the store
/// ends as one that took the same events without the race.
#[tokio::test]
async fn a_row_stored_by_another_writer_during_the_insert_is_upserted_again() {
    let (mut sink, url, key, ops) = race_a_row_into_the_insert("apply_race_row", 1).await;
    let other =
        format!("SELECT count(*) FROM cases WHERE id = '{key}' AND status = 'other_writer'");
    assert_eq!(
        count(&url, &other).await,
        0,
        "the batch's newer version wins"
    );
    let (mut once, _) = fresh_sink("apply_race_row_once").await;
    let warm = sample_case_ops(10, "apply_race_rowW").unwrap();
    let w = warm.len() as i64;
    once.apply(batch(warm, None, w)).await.unwrap();
    once.apply(batch(ops.clone(), Some(w), w + ops.len() as i64))
        .await
        .unwrap();
    assert_same_rows(&mut sink, &mut once).await;
}

/// The other writer's row is newer than any of the batch's events: the upsert's version guard
/// keeps it as it is.
#[tokio::test]
async fn a_newer_row_stored_by_another_writer_during_the_insert_is_kept() {
    let (_sink, url, key, _) = race_a_row_into_the_insert("apply_race_newer", 1000).await;
    let other = format!(
        "SELECT count(*) FROM cases WHERE id = '{key}' AND status = 'other_writer' AND version = 1000 AND event_id = 'other'"
    );
    assert_eq!(
        count(&url, &other).await,
        1,
        "the older events do not overwrite it"
    );
}

/// A record that breaks a constraint in the writes predicted new (a new case's event at version
/// 0, against `CHECK (version >= 1)`) is a per-record error for the runtime to dead-letter, not
/// a prediction missed: the batch is refused as a constraint violation, and nothing of it stays.
#[tokio::test]
async fn a_constraint_broken_after_the_savepoint_is_a_record_error() {
    let (mut sink, url) = fresh_sink("apply_check").await;
    let mut ops = sample_case_ops(10, "CHECK").unwrap();
    let n = ops.len() as i64;
    let Op::Upsert(change) = &mut ops[0] else {
        panic!("a case event is an upsert")
    };
    change.version = 0;
    if let Some(h) = change.history.as_mut() {
        h.version = 0;
    }
    let err = sink.apply(batch(ops, None, n)).await.unwrap_err();
    assert!(
        matches!(err, lienthong_connect::StoreError::Constraint(_)),
        "{err:?}"
    );
    assert_eq!(sink.fallbacks().predicted_new, 0);
    assert_eq!(count(&url, "SELECT count(*) FROM cases").await, 0);
    assert_eq!(count(&url, "SELECT count(*) FROM case_events").await, 0);
    assert_eq!(
        count(&url, "SELECT count(*) FROM lienthong_offsets").await,
        0
    );
}

/// The same race on the lookup path. The store holds the case; a writer outside the fence
/// deletes one of its history rows and, while the sink replays the case's events (all older
/// than the row, so looked up), stores it again. The lookup does not see the uncommitted row,
/// so the insert meets its key, waits, and fails when it commits. That is not the record's
/// fault: the batch is refused as transient (not sent to the dead-letter topic), nothing of it
/// stays, and tried again it applies with the event once.
#[tokio::test]
async fn an_event_stored_by_another_writer_during_the_lookup_is_a_transient_error() {
    let (mut sink, url) = fresh_sink("apply_race").await;
    let ops = sample_case_ops(10, "RACE").unwrap();
    let n = ops.len() as i64;
    sink.apply(batch(ops.clone(), None, n)).await.unwrap();
    let Op::Upsert(change) = &ops[0] else {
        panic!("a case event is an upsert")
    };
    let event_id = change.history.as_ref().unwrap().event_id.clone();
    let client = lienthong_tests::connect(&url).await.unwrap();
    client
        .execute("DELETE FROM case_events WHERE event_id = $1", &[&event_id])
        .await
        .unwrap();
    let mut other = lienthong_tests::connect(&url).await.unwrap();
    let tx = other.transaction().await.unwrap();
    insert_history(&tx, &ops[0]).await;
    // The case's events again (a replay).
    let (applied, ()) = tokio::join!(
        sink.apply(batch(ops.clone(), Some(n), 2 * n)),
        commit_once_the_sink_waits(&url, tx)
    );
    let err = applied.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("another writer"), "{err}");
    assert_eq!(
        sink.fallbacks().predicted_new,
        0,
        "no row was predicted new"
    );
    assert_eq!(count(&url, "SELECT count(*) FROM case_events").await, n);
    assert_eq!(
        count(&url, "SELECT max(next_offset) FROM lienthong_offsets").await,
        n,
        "nothing of the refused batch stays"
    );
    let applied = sink.apply(batch(ops, Some(n), 2 * n)).await.unwrap();
    assert_eq!(applied.stale as i64, n, "{applied:?}");
    assert_eq!(count(&url, "SELECT count(*) FROM case_events").await, n);
}

/// `op`'s history row inserted by `tx`, another writer's transaction.
async fn insert_history(tx: &tokio_postgres::Transaction<'_>, op: &Op) {
    let Op::Upsert(change) = op else {
        panic!("a case event is an upsert")
    };
    let h = change.history.clone().unwrap();
    tx.execute(
        "INSERT INTO case_events (event_id, id, version, occurred_at, producer_unit, correlation_id, kind, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&h.event_id, &h.id, &h.version, &h.occurred_at, &h.producer_unit, &h.correlation_id, &h.kind, &h.body],
    )
    .await
    .unwrap();
}

/// A tombstone deletes a case's row, not its history; a replay of the log then re-creates the
/// row at its first version while the history holds the later events too. Those events look
/// new (the first: the store held no row; the rest: newer than the row), so their history
/// rows go in by COPY without a lookup of their ids, meet the primary key, and go in again
/// with the lookup — together with the rows of the same COPY that were not stored yet
/// (another case's new events): each batch applies, each event once, and the store ends as
/// one that took every event once.
#[tokio::test]
async fn a_replay_after_a_tombstone_keeps_one_history_row_an_event() {
    let (mut sink, url) = fresh_sink("apply_tomb").await;
    let ops = sample_case_ops(60, "TOMB").unwrap();
    // Two cases' events, each in log order.
    let mut keys: Vec<&str> = Vec::new();
    for op in &ops {
        let k = op.target().1;
        if !keys.contains(&k) && ops.iter().filter(|op| op.target().1 == k).count() >= 3 {
            keys.push(k);
        }
    }
    let (key, other) = (keys[0].to_string(), keys[1].to_string());
    let of = |k: &str| -> Vec<Op> {
        ops.iter()
            .filter(|op| op.target().1 == k)
            .cloned()
            .collect()
    };
    let (events, others) = (of(&key), of(&other));
    let (n, m) = (events.len() as i64, others.len() as i64);
    let tombstone = Op::Delete {
        entity: lienthong_connect::model::Entity::Cases,
        key: key.clone(),
    };
    // The case and the other's first event; then the case's tombstone.
    let mut first = events.clone();
    first.push(others[0].clone());
    sink.apply(batch(first, None, n + 1)).await.unwrap();
    sink.apply(batch(vec![tombstone.clone()], Some(n + 1), n + 2))
        .await
        .unwrap();
    assert_eq!(count(&url, "SELECT count(*) FROM cases").await, 1);
    // The replay: the first event re-creates the row, the rest come in a later batch with the
    // other case's new events (newer than its held row too: the same COPY).
    sink.apply(batch(events[..1].to_vec(), Some(n + 2), n + 3))
        .await
        .unwrap();
    let version = format!("SELECT version FROM cases WHERE id = '{key}'");
    assert_eq!(count(&url, &version).await, 1);
    assert_eq!(
        sink.fallbacks().predicted_new,
        1,
        "no row was held: predicted new, but stored"
    );
    let mut replay = events[1..].to_vec();
    replay.extend(others[1..].iter().cloned());
    let applied = sink
        .apply(batch(replay, Some(n + 3), 2 * n + m + 1))
        .await
        .unwrap();
    assert_eq!(applied.applied, (n + m) as usize - 2, "{applied:?}");
    assert_eq!(
        sink.fallbacks().predicted_new,
        2,
        "the COPY met a stored event once more"
    );
    assert_eq!(count(&url, &version).await, n);
    assert_eq!(
        count(&url, "SELECT count(*) FROM case_events").await,
        n + m,
        "one history row an event, the other case's new ones included"
    );
    // And the tombstone again: the same end as the first time.
    sink.apply(batch(
        vec![tombstone.clone()],
        Some(2 * n + m + 1),
        2 * n + m + 2,
    ))
    .await
    .unwrap();
    assert_eq!(count(&url, "SELECT count(*) FROM cases").await, 1);
    assert_eq!(count(&url, "SELECT count(*) FROM case_events").await, n + m);
    // The rows the fallback inserted are those the COPY inserts for a store that took each
    // event once.
    let (mut once, _) = fresh_sink("apply_tomb_once").await;
    let mut all = events;
    all.extend(others);
    all.push(tombstone);
    once.apply(batch(all, None, n + m + 1)).await.unwrap();
    assert_eq!(once.fallbacks().predicted_new, 0);
    assert_same_rows(&mut sink, &mut once).await;
}

/// Events newer than the rows the store holds, or of aggregates it holds no row of, go into
/// the history by binary COPY, after a savepoint (so their rows carry the savepoint's
/// subtransaction id, not the batch transaction's); the others with a lookup. The same events
/// in two batches (a replay among them) and in one leave the same rows, with no fallback.
#[tokio::test]
async fn history_by_copy_takes_the_events_predicted_new() {
    let ops = sample_case_ops(400, "COPY").unwrap();
    let (mut two, two_url) = fresh_sink("apply_copy").await;
    // The first half's rows are held when the second half comes: its events are newer than a
    // row the store holds, or of cases new to it.
    let half = ops.len() / 2;
    two.apply(batch(ops[..half].to_vec(), None, half as i64))
        .await
        .unwrap();
    let mut held = std::collections::HashMap::new();
    for op in &ops[..half] {
        if let Op::Upsert(c) = op {
            let v = held.entry((c.entity, c.key.clone())).or_insert(c.version);
            *v = (*v).max(c.version);
        }
    }
    // The second half, and ten events of the first again (replays: looked up, skipped).
    let mut second = ops[half..].to_vec();
    second.extend(ops[..10].iter().cloned());
    let by_copy = lienthong_connect::model::plan(second.clone(), &held)
        .history
        .iter()
        .filter(|h| h.newer_than_store)
        .count() as i64;
    assert_eq!(
        by_copy,
        (ops.len() - half) as i64,
        "every event of the second half is new, none of the replays is"
    );
    two.apply(batch(second, Some(half as i64), ops.len() as i64 + 10))
        .await
        .unwrap();
    // The second batch's history rows written after its savepoint: those the COPY took.
    let after_savepoint = "SELECT count(*) FROM case_events h, lienthong_offsets o \
         WHERE h.xmin::text::bigint > o.xmin::text::bigint";
    assert_eq!(count(&two_url, after_savepoint).await, by_copy);
    let (mut one, one_url) = fresh_sink("apply_lookup").await;
    one.apply(batch(ops.clone(), None, ops.len() as i64))
        .await
        .unwrap();
    assert_eq!(
        count(&one_url, after_savepoint).await,
        ops.len() as i64,
        "nothing held: every event is new"
    );
    assert_eq!(
        count(&two_url, "SELECT count(*) FROM case_events").await,
        ops.len() as i64
    );
    assert_eq!(two.fallbacks(), one.fallbacks());
    assert_eq!(two.fallbacks().predicted_new, 0);
    assert_same_rows(&mut two, &mut one).await;
}

/// Rows the store holds are updated in place, not upserted. A writer outside the connector's
/// fence deletes one of them while the batch runs: the update waits for it, then finds the row
/// gone, and the sink upserts the rows the update missed. The batch applies in full. The store
/// first takes other cases with every step, so that the batch adds no column (an `ALTER TABLE`
/// would wait on the other writer's lock instead of the update).
#[tokio::test]
async fn a_held_row_deleted_by_another_writer_during_the_batch_is_written_again() {
    let (mut sink, url) = fresh_sink("apply_gone").await;
    let warm = sample_case_ops(200, "GONEW").unwrap();
    let w = warm.len() as i64;
    sink.apply(batch(warm, None, w)).await.unwrap();
    let ops = sample_case_ops(200, "GONE").unwrap();
    let half = ops.len() / 2;
    sink.apply(batch(ops[..half].to_vec(), Some(w), w + half as i64))
        .await
        .unwrap();
    // A case held now that has events in the second half.
    let key = ops[half..]
        .iter()
        .map(|op| op.target().1)
        .find(|k| ops[..half].iter().any(|op| op.target().1 == *k))
        .unwrap()
        .to_string();
    let mut other = lienthong_tests::connect(&url).await.unwrap();
    let tx = other.transaction().await.unwrap();
    assert_eq!(
        tx.execute("DELETE FROM cases WHERE id = $1", &[&key])
            .await
            .unwrap(),
        1
    );
    let second = batch(
        ops[half..].to_vec(),
        Some(w + half as i64),
        w + ops.len() as i64,
    );
    // Commit the delete once the sink's update waits on the row.
    let (applied, ()) = tokio::join!(sink.apply(second), commit_once_the_sink_waits(&url, tx));
    applied.unwrap();
    assert_eq!(
        sink.fallbacks().updates,
        1,
        "the update missed the deleted row"
    );
    // The row is back, at the version of its last event, with the columns the second half
    // set (those of the first half the other writer deleted with it).
    let last = ops
        .iter()
        .rev()
        .find_map(|op| match op {
            Op::Upsert(c) if c.key == key => Some(c.version),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        count(
            &url,
            &format!("SELECT version FROM cases WHERE id = '{key}'")
        )
        .await,
        last
    );
    assert_eq!(
        count(&url, "SELECT count(*) FROM cases").await,
        count(&url, "SELECT count(DISTINCT id) FROM case_events").await
    );
}

/// A COPY stream the server cannot read is the sink's own fault, not a record's: `classify`
/// makes it fatal, so that the runtime stops instead of splitting the batch and sending good
/// records to the dead-letter topic.
#[tokio::test]
async fn a_malformed_copy_stream_is_fatal_not_a_record_error() {
    use futures::SinkExt;
    let (_sink, url) = fresh_sink("apply_badcopy").await;
    let client = lienthong_tests::connect(&url).await.unwrap();
    let copy = client
        .copy_in::<_, &'static [u8]>("COPY case_events FROM STDIN BINARY")
        .await
        .unwrap();
    futures::pin_mut!(copy);
    // A stream that is not binary COPY: the server refuses it at the latest when it ends.
    let sent = copy.send(&b"not a binary copy stream"[..]).await;
    let err = match sent {
        Err(e) => e,
        Ok(()) => copy.finish().await.unwrap_err(),
    };
    assert_eq!(err.code().map(|c| c.code()), Some("22P04"), "{err}");
    let classed = lienthong_sink_postgres::classify(&err);
    assert!(
        matches!(classed, lienthong_connect::StoreError::Fatal(_)),
        "{classed:?}"
    );
}

/// Sequential scans of `table` counted so far. A backend reports its counts at most once a
/// second, at the end of a transaction: wait that long, and let the sink finish a transaction
/// (`flush`), before reading.
async fn seq_scans(url: &str, sink: &mut PostgresSink, flush: Batch, table: &str) -> i64 {
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    sink.apply(flush).await.unwrap();
    let client = lienthong_tests::connect(url).await.unwrap();
    client
        .query_one(
            "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = $1",
            &[&table],
        )
        .await
        .unwrap()
        .get(0)
}

/// A young store's statements must not keep the plans they got while its tables were small: a
/// statement run for every batch would switch to a generic plan after five runs, chosen for
/// tables of a few pages, where reading the whole table is cheapest (the history's anti-join
/// did), and keep it as they grow. Once the tables are large, a batch must find its rows by
/// index. (Found through the apply-latency bench, whose rounds fell into a fast and a slow
/// group: mean apply 5 vs 27 ms a 100-event batch.)
#[tokio::test]
async fn a_store_that_grew_is_not_read_whole_for_every_batch() {
    let (mut sink, url) = fresh_sink("apply_plans").await;
    let ops = sample_case_ops(1_200, "PLAN").unwrap();
    // The next batch of `ops`, its offsets following the one before.
    let mut next = 0i64;
    let batch_of = |ops: Vec<Op>, next: &mut i64| {
        let (from, to) = (*next, *next + ops.len() as i64);
        *next = to;
        batch(ops, (from > 0).then_some(from), to)
    };
    // Batches of fifty while the tables are small: more than five runs of every statement.
    let half = ops.len() / 2;
    for chunk in ops[..half].chunks(50) {
        sink.apply(batch_of(chunk.to_vec(), &mut next))
            .await
            .unwrap();
    }
    // The tables grow (another writer here, for speed).
    let client = lienthong_tests::connect(&url).await.unwrap();
    client
        .batch_execute(
            "INSERT INTO cases (id, version, event_id, occurred_at, producer_unit, correlation_id, status) \
             SELECT 'BIG-' || g, 1, 'e-' || g, 0, 'u', 'c', 'submitted' FROM generate_series(1, 50000) g;
             INSERT INTO case_events (event_id, id, version, occurred_at, producer_unit, correlation_id, kind, body) \
             SELECT 'BIG-e-' || g, 'BIG-' || g, 1, 0, 'u', 'c', 'case_submitted', '{}' FROM generate_series(1, 50000) g;",
        )
        .await
        .unwrap();
    // The rest of the events (updates of held rows, new cases, history), batch by batch; the
    // flushes between the counts replay a batch (no scan needed either).
    let replays: Vec<Vec<Op>> = ops[half..].chunks(50).map(<[Op]>::to_vec).collect();
    let mut before = HashMap::new();
    for table in ["cases", "case_events"] {
        let flush = batch_of(ops[..50].to_vec(), &mut next);
        before.insert(table, seq_scans(&url, &mut sink, flush, table).await);
    }
    for r in &replays {
        sink.apply(batch_of(r.clone(), &mut next)).await.unwrap();
    }
    for table in ["cases", "case_events"] {
        let flush = batch_of(ops[..50].to_vec(), &mut next);
        let after = seq_scans(&url, &mut sink, flush, table).await;
        assert_eq!(
            after, before[table],
            "{table} was read whole by the sink's batches"
        );
    }
}

/// `fillfactor` of `table`, from its storage options.
async fn fillfactor_of(url: &str, table: &str) -> String {
    let client = lienthong_tests::connect(url).await.unwrap();
    client
        .query_one(
            "SELECT coalesce(array_to_string(reloptions, ','), '') FROM pg_class WHERE relname = $1",
            &[&table],
        )
        .await
        .unwrap()
        .get(0)
}

/// A case's row grows at every step: its table leaves half of each new page for the later
/// versions (so that updates stay on their page); a snapshot entity's table leaves 30 %. A store
/// that an earlier version made with another fill factor takes these when the sink opens it.
#[tokio::test]
async fn current_state_tables_leave_room_for_their_rows_to_grow() {
    let (sink, url) = fresh_sink("apply_fill").await;
    assert_eq!(fillfactor_of(&url, "cases").await, "fillfactor=50");
    assert_eq!(fillfactor_of(&url, "feedback").await, "fillfactor=50");
    assert_eq!(fillfactor_of(&url, "citizens").await, "fillfactor=70");
    drop(sink);
    let client = lienthong_tests::connect(&url).await.unwrap();
    client
        .batch_execute("ALTER TABLE cases SET (fillfactor = 70)")
        .await
        .unwrap();
    assert_eq!(fillfactor_of(&url, "cases").await, "fillfactor=70");
    let _sink = PostgresSink::open(&url).await.unwrap();
    assert_eq!(fillfactor_of(&url, "cases").await, "fillfactor=50");
    // Right already: opening takes no lock a VACUUM would hold (it does not wait for one).
    let mut vacuum = lienthong_tests::connect(&url).await.unwrap();
    let tx = vacuum.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE cases IN SHARE UPDATE EXCLUSIVE MODE")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), PostgresSink::open(&url))
        .await
        .expect("the open waited for the lock")
        .unwrap();
    tx.rollback().await.unwrap();
}
