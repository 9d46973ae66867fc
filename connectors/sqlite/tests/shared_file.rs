//! Two instances of one connector share a ward's SQLite file (a rebalance hands partitions from
//! one to the other): columns that one instance added for a newer writer schema are found, not
//! added twice, by the other, whose connection opened before they existed.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use lienthong_connect::Sink;
use lienthong_connect::model::sample_case_ops;
use lienthong_connect::sink::Batch;
use lienthong_sink_sqlite::SqliteSink;

#[tokio::test]
async fn a_second_connection_finds_the_columns_the_first_added() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.db");
    let mut first = SqliteSink::open(&path).await.unwrap();
    let mut second = SqliteSink::open(&path).await.unwrap();
    let batch = |prefix: &str| Batch {
        connector: "shared".into(),
        ops: sample_case_ops(200, prefix).unwrap(),
        offsets: vec![],
    };
    let a = first.apply(batch("A")).await.unwrap();
    assert!(a.applied > 0, "{a:?}");
    // The same columns, through the connection that has not seen them added.
    let b = second.apply(batch("B")).await.unwrap();
    assert!(b.applied > 0, "{b:?}");
    // Both connections read every row, with every column typed the same.
    let sorted = |mut rows: Vec<lienthong_connect::Row>| {
        rows.sort_by(|x, y| (&x.table, &x.key).cmp(&(&y.table, &y.key)));
        rows
    };
    let rows = sorted(first.rows().await.unwrap());
    assert_eq!(sorted(second.rows().await.unwrap()), rows);
    let case = |prefix: &str| {
        rows.iter()
            .find(|r| r.table == "cases" && r.key.starts_with(prefix))
            .map(|r| r.cells.len())
    };
    assert!(case("A-").is_some() && case("A-") == case("B-"), "{rows:?}");
}
