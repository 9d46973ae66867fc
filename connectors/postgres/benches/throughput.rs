//! PostgreSQL sink throughput, release build, in one run against the PostgreSQL of
//! `LIENTHONG_PG_URL` (`source /tmp/svc.env` or `eval "$(ops/services.sh up)"`):
//!
//! - **sink**: 50,000 case events applied by `PostgresSink::apply` in batches of 5,000, each
//!   batch with its offsets in one transaction (version guard, history, fencing): the
//!   effectively-once path, with `unnest` multi-row upserts;
//! - **staging**: the same batches written the other way the issue names — binary `COPY` of
//!   the planned rows into temporary staging tables, then one merge statement per table;
//! - **history floor**: a binary `COPY` of the same 50,000 history rows into an empty history
//!   table, nothing else (no current-state rows, no upsert, no guard, no offsets);
//! - **content floor**: a binary `COPY` of everything the sink leaves in the store — the same
//!   50,000 history rows and the 12,501 current-state rows they fold into — into the same, empty
//!   tables. The sink writes two tables; this is the cheapest way to the same database. Every
//!   round checks that both leave the same rows (their digests are equal).
//!
//! Each variant runs in a fresh database (dropped after its round), five rounds; the median
//! rate of each is printed, and the median of the per-round ratios. For the sink and the two
//! floors it also prints the CPU time an event, of the PostgreSQL server (the processes named
//! `postgres` that live through the timed part; a short-lived one, such as an autovacuum
//! worker, is missed) and of this process (the client), which moves less than the rate on a
//! shared machine.

#![allow(clippy::unwrap_used)]

/// The allocator of the `lienthong` binary, so that the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::pin_mut;
use lienthong_connect::Digest;
use lienthong_connect::model::{Cell, Entity, HistoryRow, Op, plan, sample_case_ops};
use lienthong_connect::sink::{Batch, OffsetUpdate, Sink};
use lienthong_sink_postgres::PostgresSink;
use lienthong_tests::bench::{self, median_ratio};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

const EVENTS: usize = 50_000;
const BATCH: usize = 5_000;
const ROUNDS: usize = 5;

/// A fresh database on the suite's PostgreSQL (`LIENTHONG_PG_URL`) for one round, and its URL.
async fn fresh_db(tag: &str) -> String {
    lienthong_tests::postgres()
        .fresh_database(&format!("bench_{tag}"))
        .await
        .unwrap()
}

/// Drop a round's database, so that later rounds do not share the server with its autovacuum.
async fn drop_db(url: &str) {
    lienthong_tests::postgres()
        .drop_database(url)
        .await
        .unwrap();
}

/// Wall and CPU time of a timed section: this process's CPU (the client: planning, encoding,
/// the connection) and the PostgreSQL server's (every process named `postgres` on the machine:
/// the backends, WAL writer and checkpointer of the server under test, and any other server's,
/// idle here). CPU per event is steadier than the rate on a shared machine.
#[derive(Debug, Clone, Copy)]
struct Cost {
    took: Duration,
    client_cpu: f64,
    server_cpu: f64,
}

struct Meter(Instant, f64, f64);

impl Meter {
    fn start() -> Self {
        Meter(
            Instant::now(),
            bench::process_cpu_secs(),
            bench::processes_cpu_secs("postgres"),
        )
    }

    fn stop(self) -> Cost {
        Cost {
            took: self.0.elapsed(),
            client_cpu: bench::process_cpu_secs() - self.1,
            server_cpu: bench::processes_cpu_secs("postgres") - self.2,
        }
    }
}

fn batches(ops: &[Op]) -> Vec<Batch> {
    ops.chunks(BATCH)
        .enumerate()
        .map(|(i, chunk)| Batch {
            connector: "bench".into(),
            ops: chunk.to_vec(),
            offsets: vec![OffsetUpdate {
                topic: "t".into(),
                partition: 0,
                expected: (i > 0).then_some((i * BATCH) as i64),
                next: ((i + 1) * BATCH) as i64,
            }],
        })
        .collect()
}

/// Apply 2,000 other cases' events (other case and event ids), so that the store has every
/// column before the timed run, which then measures steady-state apply, not DDL.
async fn warm(sink: &mut PostgresSink) {
    sink.apply(Batch {
        connector: "warm".into(),
        ops: sample_case_ops(2_000, "warm").unwrap(),
        offsets: vec![],
    })
    .await
    .unwrap();
}

async fn sink_round(ops: &[Op]) -> (Cost, Digest) {
    let url = fresh_db("sink").await;
    let mut sink = PostgresSink::open(&url).await.unwrap();
    warm(&mut sink).await;
    let bs = batches(ops);
    let meter = Meter::start();
    for b in bs {
        sink.apply(b).await.unwrap();
    }
    let took = meter.stop();
    let digest = Digest::of(sink.rows().await.unwrap(), 16);
    drop(sink);
    drop_db(&url).await;
    (took, digest)
}

async fn client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

async fn copy_history(tx: &tokio_postgres::Transaction<'_>, table: &str, rows: &[&HistoryRow]) {
    let sink = tx
        .copy_in(&format!(
            "COPY {table} (event_id, id, version, occurred_at, producer_unit, correlation_id, kind, body) FROM STDIN BINARY"
        ))
        .await
        .unwrap();
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for h in rows {
        writer
            .as_mut()
            .write(&[
                &h.event_id,
                &h.id,
                &h.version,
                &h.occurred_at,
                &h.producer_unit,
                &h.correlation_id,
                &h.kind,
                &h.body,
            ])
            .await
            .unwrap();
    }
    writer.finish().await.unwrap();
}

async fn copy_floor_round(ops: &[Op]) -> Cost {
    let url = fresh_db("copy").await;
    PostgresSink::open(&url).await.unwrap();
    let history: Vec<HistoryRow> = ops
        .iter()
        .filter_map(|o| match o {
            Op::Upsert(c) => c.history.clone(),
            Op::Delete { .. } => None,
        })
        .collect();
    let mut c = client(&url).await;
    let meter = Meter::start();
    for chunk in history.chunks(BATCH) {
        let tx = c.transaction().await.unwrap();
        let rows: Vec<&HistoryRow> = chunk.iter().collect();
        copy_history(&tx, "case_events", &rows).await;
        tx.commit().await.unwrap();
    }
    let took = meter.stop();
    drop(c);
    drop_db(&url).await;
    took
}

/// The body columns of the `cases` table (all but `id`), with their types, as the store has them.
async fn case_columns(c: &tokio_postgres::Client) -> Vec<(String, Type)> {
    c.query(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'cases' AND column_name NOT IN ('id') ORDER BY ordinal_position",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| {
        let ty = match r.get::<_, &str>(1) {
            "bigint" => Type::INT8,
            "boolean" => Type::BOOL,
            "double precision" => Type::FLOAT8,
            _ => Type::TEXT,
        };
        (r.get(0), ty)
    })
    .collect()
}

/// One `cases` row for binary COPY: `id`, then `cols` in order (`None` where the upsert sets
/// nothing).
fn case_values(
    u: &lienthong_connect::model::Upsert,
    cols: &[(String, Type)],
) -> Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> {
    let mut values: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> =
        vec![Box::new(u.key.clone())];
    for (n, t) in cols {
        let cell = if n == "version" {
            Some(Cell::Int(u.version))
        } else {
            u.cells
                .iter()
                .find(|(c, _)| &*c.name == n)
                .map(|(_, v)| v.clone())
        };
        values.push(match cell {
            Some(Cell::Int(i)) => Box::new(Some(i)),
            Some(Cell::Bool(b)) => Box::new(Some(b)),
            Some(Cell::Double(d)) => Box::new(Some(d)),
            Some(Cell::Text(s)) => Box::new(Some(s)),
            _ if *t == Type::INT8 => Box::new(None::<i64>),
            _ if *t == Type::BOOL => Box::new(None::<bool>),
            _ if *t == Type::FLOAT8 => Box::new(None::<f64>),
            _ => Box::new(None::<String>),
        });
    }
    values
}

async fn copy_cases(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    cols: &[(String, Type)],
    rows: &[&lienthong_connect::model::Upsert],
) {
    let mut names = vec!["id".to_string()];
    names.extend(cols.iter().map(|(n, _)| format!("\"{n}\"")));
    let mut types = vec![Type::TEXT];
    types.extend(cols.iter().map(|(_, t)| t.clone()));
    let copy = tx
        .copy_in(&format!(
            "COPY {table} ({}) FROM STDIN BINARY",
            names.join(", ")
        ))
        .await
        .unwrap();
    let writer = BinaryCopyInWriter::new(copy, &types);
    pin_mut!(writer);
    for u in rows {
        let values = case_values(u, cols);
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|b| &**b as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        writer.as_mut().write(&refs).await.unwrap();
    }
    writer.finish().await.unwrap();
}

/// The content floor: COPY what the sink leaves in the store (every history row, and the
/// current-state rows the events fold into) into the same empty tables, in ten transactions.
async fn copy_content_round(ops: &[Op]) -> (Cost, Digest) {
    let url = fresh_db("content").await;
    let mut sink = PostgresSink::open(&url).await.unwrap();
    warm(&mut sink).await;
    drop(sink);
    let final_state = plan(ops.to_vec(), &HashMap::new());
    let history: Vec<&HistoryRow> = final_state.history.iter().map(|h| &h.row).collect();
    let cases: Vec<&lienthong_connect::model::Upsert> = final_state.upserts.iter().collect();
    let mut c = client(&url).await;
    let cols = case_columns(&c).await;
    let chunks = EVENTS.div_ceil(BATCH);
    let meter = Meter::start();
    for (h, k) in history
        .chunks(BATCH)
        .zip(cases.chunks(cases.len().div_ceil(chunks)))
    {
        let tx = c.transaction().await.unwrap();
        copy_history(&tx, "case_events", h).await;
        copy_cases(&tx, "cases", &cols, k).await;
        tx.commit().await.unwrap();
    }
    let took = meter.stop();
    drop(c);
    // The floor must leave exactly the store the sink leaves: main compares the digests.
    let digest = Digest::of(
        PostgresSink::open(&url)
            .await
            .unwrap()
            .rows()
            .await
            .unwrap(),
        16,
    );
    drop_db(&url).await;
    (took, digest)
}

/// The alternative write path: COPY the planned rows into staging tables, merge once per table.
async fn staging_round(ops: &[Op]) -> Duration {
    let url = fresh_db("staging").await;
    let mut sink = PostgresSink::open(&url).await.unwrap();
    warm(&mut sink).await;
    let mut c = client(&url).await;
    let cols = case_columns(&c).await;
    let t = Instant::now();
    for (i, chunk) in ops.chunks(BATCH).enumerate() {
        let tx = c.transaction().await.unwrap();
        let moved = if i == 0 {
            tx.execute(
                "INSERT INTO lienthong_offsets VALUES ('bench', 't', 0, $1)",
                &[&(BATCH as i64)],
            )
            .await
            .unwrap()
        } else {
            tx.execute(
                "UPDATE lienthong_offsets SET next_offset = $2 WHERE connector = 'bench' AND next_offset = $1",
                &[&((i * BATCH) as i64), &(((i + 1) * BATCH) as i64)],
            )
            .await
            .unwrap()
        };
        assert_eq!(moved, 1);
        let keys: Vec<&str> = chunk.iter().map(|o| o.target().1).collect();
        let mut held = HashMap::new();
        for r in tx
            .query("SELECT id, version FROM cases WHERE id = ANY($1)", &[&keys])
            .await
            .unwrap()
        {
            held.insert((Entity::Cases, r.get::<_, String>(0)), r.get::<_, i64>(1));
        }
        let p = plan(chunk.to_vec(), &held);
        tx.batch_execute(
            "CREATE TEMP TABLE IF NOT EXISTS stage_events (LIKE case_events) ON COMMIT DELETE ROWS;
             CREATE TEMP TABLE IF NOT EXISTS stage_cases (LIKE cases) ON COMMIT DELETE ROWS;
             CREATE TEMP TABLE IF NOT EXISTS stage_set (id TEXT, col TEXT, PRIMARY KEY (id, col)) ON COMMIT DELETE ROWS;",
        )
        .await
        .unwrap();
        let history: Vec<&HistoryRow> = p.history.iter().map(|h| &h.row).collect();
        copy_history(&tx, "stage_events", &history).await;
        // Staged rows carry every column; which columns an upsert sets differs per row, so
        // the merge takes a staged value only where the batch set it (`stage_set`).
        let upserts: Vec<&lienthong_connect::model::Upsert> = p.upserts.iter().collect();
        copy_cases(&tx, "stage_cases", &cols, &upserts).await;
        let set_rows: Vec<(&str, &str)> = upserts
            .iter()
            .flat_map(|u| {
                cols.iter()
                    .filter(|(n, _)| n == "version" || u.cells.iter().any(|(c, _)| &*c.name == n))
                    .map(|(n, _)| (u.key.as_str(), n.as_str()))
            })
            .collect();
        let ids: Vec<&str> = set_rows.iter().map(|(i, _)| *i).collect();
        let cs: Vec<&str> = set_rows.iter().map(|(_, c)| *c).collect();
        tx.execute(
            "INSERT INTO stage_set SELECT * FROM unnest($1::text[], $2::text[])",
            &[&ids, &cs],
        )
        .await
        .unwrap();
        let sets: Vec<String> = cols
            .iter()
            .filter(|(n, _)| n != "version")
            .map(|(n, _)| {
                format!(
                    "\"{n}\" = CASE WHEN EXISTS (SELECT 1 FROM stage_set s WHERE s.id = EXCLUDED.id AND s.col = '{n}') THEN EXCLUDED.\"{n}\" ELSE t.\"{n}\" END"
                )
            })
            .collect();
        tx.batch_execute(&format!(
            "INSERT INTO cases AS t SELECT * FROM stage_cases ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, {} WHERE t.version < EXCLUDED.version;
             INSERT INTO case_events SELECT * FROM stage_events ON CONFLICT (event_id) DO NOTHING;",
            sets.join(", ")
        ))
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let took = t.elapsed();
    drop((sink, c));
    drop_db(&url).await;
    took
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
    if std::env::var("LIENTHONG_PG_URL").is_err() {
        eprintln!(
            "LIENTHONG_PG_URL is not set: source /tmp/svc.env or eval \"$(ops/services.sh up)\""
        );
        std::process::exit(2);
    }
    let ops = sample_case_ops(EVENTS, "bench").unwrap();
    eprintln!("{} events prepared", ops.len());
    let (mut sink, mut staging, mut history, mut content) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let (cost, sink_digest) = sink_round(&ops).await;
        sink.push(cost);
        staging.push(staging_round(&ops).await);
        history.push(copy_floor_round(&ops).await);
        let (cost, content_digest) = copy_content_round(&ops).await;
        content.push(cost);
        assert_eq!(
            sink_digest.overall, content_digest.overall,
            "the content floor must leave the same rows as the sink ({} vs {} rows)",
            sink_digest.rows, content_digest.rows
        );
        eprintln!(
            "round {round}: sink {:?}, staging {:?}, history floor {:?}, content floor {:?}",
            sink[round - 1].took,
            staging[round - 1],
            history[round - 1].took,
            content[round - 1].took
        );
    }
    // Ratios are taken within a round (the variants ran seconds apart) and their median is
    // reported: on a shared machine that cancels most of the drift between rounds.
    let rates = |v: &[Cost]| -> Vec<f64> { v.iter().map(|c| rate(c.took)).collect() };
    let sink_rates = rates(&sink);
    let to_history = median_ratio(&sink_rates, &rates(&history));
    let to_content = median_ratio(&sink_rates, &rates(&content));
    let staging_rates: Vec<f64> = staging.iter().map(|d| rate(*d)).collect();
    let to_staging = median_ratio(&sink_rates, &staging_rates);
    let cpu = |v: &[Cost]| {
        let per_event = |f: fn(&Cost) -> f64| {
            bench::median(v.iter().map(|c| f(c) * 1e6 / EVENTS as f64).collect())
        };
        (per_event(|c| c.server_cpu), per_event(|c| c.client_cpu))
    };
    let (sink_cpu, history_cpu, content_cpu) = (cpu(&sink), cpu(&history), cpu(&content));
    let took = |v: &[Cost]| median(v.iter().map(|c| c.took).collect());
    let (s, g, h, c) = (took(&sink), median(staging), took(&history), took(&content));
    println!(
        "PostgreSQL sink, {EVENTS} case events in batches of {BATCH}, median of {ROUNDS} rounds:"
    );
    println!(
        "  sink (unnest upserts, effectively once):          {:>9.0} events/s  ({s:?})",
        rate(s)
    );
    println!(
        "  COPY into staging + merge:                         {:>9.0} events/s  ({g:?})",
        rate(g)
    );
    println!(
        "  history floor: binary COPY of the history rows:    {:>9.0} events/s  ({h:?})",
        rate(h)
    );
    println!(
        "  content floor: binary COPY of the same final rows: {:>9.0} events/s  ({c:?})",
        rate(c)
    );
    println!(
        "  sink / history floor = {to_history:.2}x;  sink / content floor = {to_content:.2}x;  sink / staging = {to_staging:.2}x  (medians of the per-round ratios)"
    );
    println!(
        "  CPU an event, PostgreSQL server + client (medians): sink {:.1} + {:.1} µs, history floor {:.1} + {:.1} µs, content floor {:.1} + {:.1} µs",
        sink_cpu.0, sink_cpu.1, history_cpu.0, history_cpu.1, content_cpu.0, content_cpu.1
    );
}
