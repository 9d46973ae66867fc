//! SQLite sink throughput, release build, in one run (files in a temporary folder):
//!
//! - **sink**: 50,000 case events applied by `SqliteSink::apply` in batches of 5,000, each batch
//!   with its offsets in one transaction (version guard, history, fencing);
//! - **plain insert floor**: the same 50,000 history rows inserted with one prepared `INSERT`
//!   per row, one transaction per 5,000 rows, into an empty history table (no guard, no
//!   current-state row, no offsets).
//!
//! Several rounds, each in a fresh file; medians and the ratio are printed.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use lienthong_connect::model::{HistoryRow, Op, sample_case_ops};
use lienthong_connect::sink::{Batch, OffsetUpdate, Sink};
use lienthong_sink_sqlite::SqliteSink;

const EVENTS: usize = 50_000;
const BATCH: usize = 5_000;
const ROUNDS: usize = 3;

async fn sink_round(dir: &std::path::Path, i: usize, ops: &[Op]) -> Duration {
    let mut sink = SqliteSink::open(dir.join(format!("sink-{i}.db")))
        .await
        .unwrap();
    sink.apply(Batch {
        connector: "warm".into(),
        ops: sample_case_ops(2_000, "warm").unwrap(),
        offsets: vec![],
    })
    .await
    .unwrap();
    let t = Instant::now();
    for (n, chunk) in ops.chunks(BATCH).enumerate() {
        sink.apply(Batch {
            connector: "bench".into(),
            ops: chunk.to_vec(),
            offsets: vec![OffsetUpdate {
                topic: "t".into(),
                partition: 0,
                expected: (n > 0).then_some((n * BATCH) as i64),
                next: ((n + 1) * BATCH) as i64,
            }],
        })
        .await
        .unwrap();
    }
    t.elapsed()
}

async fn plain_round(dir: &std::path::Path, i: usize, ops: &[Op]) -> Duration {
    let path = dir.join(format!("plain-{i}.db"));
    SqliteSink::open(&path).await.unwrap();
    let history: Vec<HistoryRow> = ops
        .iter()
        .filter_map(|o| match o {
            Op::Upsert(c) => c.history.clone(),
            Op::Delete { .. } => None,
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        let t = Instant::now();
        for chunk in history.chunks(BATCH) {
            let tx = conn.transaction().unwrap();
            {
                let mut s = tx
                    .prepare_cached("INSERT INTO case_events (event_id, id, version, occurred_at, producer_unit, correlation_id, kind, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
                    .unwrap();
                for h in chunk {
                    s.execute(rusqlite::params![
                        h.event_id, h.id, h.version, h.occurred_at, h.producer_unit,
                        h.correlation_id, h.kind, h.body
                    ])
                    .unwrap();
                }
            }
            tx.commit().unwrap();
        }
        t.elapsed()
    })
    .await
    .unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rate(d: Duration) -> f64 {
    EVENTS as f64 / d.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let ops = sample_case_ops(EVENTS, "bench").unwrap();
    let (mut sink, mut plain) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        sink.push(sink_round(dir.path(), i, &ops).await);
        plain.push(plain_round(dir.path(), i, &ops).await);
    }
    let (s, p) = (median(sink), median(plain));
    println!("SQLite sink, {EVENTS} case events in batches of {BATCH}, median of {ROUNDS} rounds:");
    println!(
        "  sink (effectively once):              {:>9.0} events/s  ({s:?})",
        rate(s)
    );
    println!(
        "  plain batched insert of history rows: {:>9.0} rows/s    ({p:?})",
        rate(p)
    );
    println!("  sink / plain insert = {:.2}x", rate(s) / rate(p));
}
