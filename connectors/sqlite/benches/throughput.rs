//! SQLite sink throughput, release build, in one run (files in a temporary folder):
//!
//! - **sink**: 50,000 case events applied by `SqliteSink::apply` in batches of 5,000, each batch
//!   with its offsets in one transaction (version guard, history, fencing);
//! - **history floor**: the same 50,000 history rows inserted with one prepared `INSERT` per
//!   row, one transaction per 5,000 rows, into an empty history table (no guard, no
//!   current-state row, no offsets);
//! - **content floor**: the same, for everything the sink leaves in the store — the 50,000
//!   history rows and the 12,501 current-state rows they fold into — into the same, empty
//!   tables, in ten transactions. Every round checks that both leave the same rows (their
//!   digests are equal).
//!
//! Five rounds, each in a fresh file; the median rates and the median of the per-round ratios
//! are printed.

#![allow(clippy::unwrap_used)]

/// The allocator of the `lienthong` binary, so that the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use lienthong_connect::Digest;
use lienthong_connect::model::{Cell, HistoryRow, Op, plan, sample_case_ops};
use lienthong_connect::sink::{Batch, OffsetUpdate, Sink};
use lienthong_sink_sqlite::SqliteSink;
use lienthong_tests::bench::median_ratio;

const EVENTS: usize = 50_000;
const BATCH: usize = 5_000;
const ROUNDS: usize = 5;

/// Apply 2,000 other cases' events (other case and event ids), so that the store has every
/// column before the timed run.
async fn warm(sink: &mut SqliteSink) {
    sink.apply(Batch {
        connector: "warm".into(),
        ops: sample_case_ops(2_000, "warm").unwrap(),
        offsets: vec![],
    })
    .await
    .unwrap();
}

async fn sink_round(dir: &std::path::Path, i: usize, ops: &[Op]) -> (Duration, Digest) {
    let mut sink = SqliteSink::open(dir.join(format!("sink-{i}.db")))
        .await
        .unwrap();
    warm(&mut sink).await;
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
    let took = t.elapsed();
    (took, Digest::of(sink.rows().await.unwrap(), 16))
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
        let mut conn = connect(&path);
        let t = Instant::now();
        for chunk in history.chunks(BATCH) {
            let tx = conn.transaction().unwrap();
            insert_history(&tx, chunk.iter());
            tx.commit().unwrap();
        }
        t.elapsed()
    })
    .await
    .unwrap()
}

fn connect(path: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn
}

fn insert_history<'a>(tx: &rusqlite::Transaction<'_>, rows: impl Iterator<Item = &'a HistoryRow>) {
    let mut s = tx
        .prepare_cached("INSERT INTO case_events (event_id, id, version, occurred_at, producer_unit, correlation_id, kind, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
        .unwrap();
    for h in rows {
        s.execute(rusqlite::params![
            h.event_id,
            h.id,
            h.version,
            h.occurred_at,
            h.producer_unit,
            h.correlation_id,
            h.kind,
            h.body
        ])
        .unwrap();
    }
}

/// The content floor: what the sink leaves in the store (every history row, and the
/// current-state rows the events fold into), inserted row by row into the same empty tables.
async fn content_round(dir: &std::path::Path, i: usize, ops: &[Op]) -> (Duration, Digest) {
    let path = dir.join(format!("content-{i}.db"));
    let mut sink = SqliteSink::open(&path).await.unwrap();
    warm(&mut sink).await;
    drop(sink);
    let final_state = plan(ops.to_vec(), &std::collections::HashMap::new());
    let file = path.clone();
    let took = tokio::task::spawn_blocking(move || {
        let mut conn = connect(&path);
        let columns: Vec<String> = conn
            .prepare(
                "SELECT name FROM pragma_table_info('cases') WHERE name NOT IN ('id', 'version')",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let sql = format!(
            "INSERT INTO cases (id, version, {}) VALUES ({})",
            columns
                .iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", "),
            (1..=columns.len() + 2)
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let history: Vec<&HistoryRow> = final_state.history.iter().map(|h| &h.row).collect();
        let cases = &final_state.upserts;
        let chunks = EVENTS.div_ceil(BATCH);
        let t = Instant::now();
        for (h, k) in history
            .chunks(BATCH)
            .zip(cases.chunks(cases.len().div_ceil(chunks)))
        {
            let tx = conn.transaction().unwrap();
            insert_history(&tx, h.iter().copied());
            {
                let mut s = tx.prepare_cached(&sql).unwrap();
                for u in k {
                    let mut values: Vec<rusqlite::types::Value> =
                        vec![u.key.clone().into(), u.version.into()];
                    for c in &columns {
                        let cell = u.cells.iter().find(|(col, _)| &*col.name == c);
                        values.push(match cell.map(|(_, v)| v) {
                            Some(Cell::Bool(b)) => i64::from(*b).into(),
                            Some(Cell::Int(i)) => (*i).into(),
                            Some(Cell::Double(d)) => (*d).into(),
                            Some(Cell::Text(t)) => t.clone().into(),
                            Some(Cell::Null) | None => rusqlite::types::Value::Null,
                        });
                    }
                    s.execute(rusqlite::params_from_iter(values)).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        t.elapsed()
    })
    .await
    .unwrap();
    // The floor must leave exactly the store the sink leaves: main compares the digests.
    let rows = SqliteSink::open(&file).await.unwrap().rows().await.unwrap();
    (took, Digest::of(rows, 16))
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
    let (mut sink, mut history, mut content) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        let (took, sink_digest) = sink_round(dir.path(), i, &ops).await;
        sink.push(took);
        history.push(plain_round(dir.path(), i, &ops).await);
        let (took, content_digest) = content_round(dir.path(), i, &ops).await;
        content.push(took);
        assert_eq!(
            sink_digest.overall, content_digest.overall,
            "the content floor must leave the same rows as the sink ({} vs {} rows)",
            sink_digest.rows, content_digest.rows
        );
        eprintln!(
            "round {}: sink {:?}, history floor {:?}, content floor {:?}",
            i + 1,
            sink[i],
            history[i],
            content[i]
        );
    }
    let rates = |v: &[Duration]| -> Vec<f64> { v.iter().map(|d| rate(*d)).collect() };
    let to_history = median_ratio(&rates(&sink), &rates(&history));
    let to_content = median_ratio(&rates(&sink), &rates(&content));
    let (s, h, c) = (median(sink), median(history), median(content));
    println!("SQLite sink, {EVENTS} case events in batches of {BATCH}, median of {ROUNDS} rounds:");
    println!(
        "  sink (effectively once):                            {:>9.0} events/s  ({s:?})",
        rate(s)
    );
    println!(
        "  history floor: plain insert of the history rows:    {:>9.0} events/s  ({h:?})",
        rate(h)
    );
    println!(
        "  content floor: plain insert of the same final rows: {:>9.0} events/s  ({c:?})",
        rate(c)
    );
    println!(
        "  sink / history floor = {to_history:.2}x;  sink / content floor = {to_content:.2}x  (medians of the per-round ratios)"
    );
}
