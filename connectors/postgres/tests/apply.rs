//! `PostgresSink::apply` against the real PostgreSQL of `LIENTHONG_PG_URL` (started by
//! `ops/services.sh up`): what one batch transaction writes when events arrive more than once.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use lienthong_connect::model::{Op, sample_case_ops};
use lienthong_connect::sink::{Batch, OffsetUpdate, Sink};
use lienthong_sink_postgres::PostgresSink;

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

async fn count(url: &str, sql: &str) -> i64 {
    let client = lienthong_tests::connect(url).await.unwrap();
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// A producer's retry can put the same event twice into one batch, and a replay puts it into a
/// later one: the history holds it once, the batch is not refused, and the case row is the
/// same as without the duplicates.
#[tokio::test]
async fn an_event_delivered_twice_is_one_history_row() {
    let pg = lienthong_tests::postgres();
    let url = pg.fresh_database("apply_dup").await.unwrap();
    let mut sink = PostgresSink::open(&url).await.unwrap();
    let ops = sample_case_ops(40, "DUP").unwrap();
    let mut first: Vec<Op> = ops[..30].to_vec();
    // Ops 3 and 7 again, in the same batch, right after themselves and at its end.
    first.insert(4, ops[3].clone());
    first.push(ops[7].clone());
    let applied = sink.apply(batch(first, None, 32)).await.unwrap();
    assert_eq!(applied.applied, 30, "{applied:?}");
    assert_eq!(applied.stale, 2, "{applied:?}");
    assert_eq!(
        count(&url, "SELECT count(*) FROM case_events").await,
        30,
        "one history row an event"
    );
    // The rest, with three of the first batch's events replayed.
    let mut second: Vec<Op> = ops[30..].to_vec();
    second.extend(ops[..3].iter().cloned());
    let applied = sink.apply(batch(second, Some(32), 45)).await.unwrap();
    assert_eq!(applied.applied, 10, "{applied:?}");
    assert_eq!(applied.stale, 3, "{applied:?}");
    assert_eq!(count(&url, "SELECT count(*) FROM case_events").await, 40);
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM (SELECT event_id FROM case_events GROUP BY event_id HAVING count(*) > 1) d"
        )
        .await,
        0
    );
    // The same rows as the events applied once each, in one batch, into another database.
    let once_url = pg.fresh_database("apply_once").await.unwrap();
    let mut once = PostgresSink::open(&once_url).await.unwrap();
    once.apply(batch(ops, None, 40)).await.unwrap();
    let digest = |rows| lienthong_connect::Digest::of(rows, 16);
    assert_eq!(
        digest(sink.rows().await.unwrap()),
        digest(once.rows().await.unwrap())
    );
}
