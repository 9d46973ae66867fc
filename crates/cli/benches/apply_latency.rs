//! A running connector's apply latency and peak memory, release build, against the real Kafka
//! of `LIENTHONG_KAFKA_BOOTSTRAP` and the PostgreSQL of `LIENTHONG_PG_URL` (`source
//! /tmp/svc.env` or `eval "$(ops/services.sh up)"`):
//!
//! ```text
//! cargo bench -p lienthong-cli --bench apply_latency
//! ```
//!
//! Each round starts the real `lienthong connect` process (the default batch settings:
//! 5,000 records or 100 ms) over a fresh one-partition topic and a fresh store, PostgreSQL or
//! SQLite (dropped after its round, so that a round does not share the machine with the
//! autovacuum of the rounds before it), and then:
//!
//! - **steady**: produces case events at a steady 1,000 events/s for `LIENTHONG_BENCH_SECS`
//!   (default 20) seconds, each stamped when it is made, through a producer with the SDK's
//!   settings (idempotent, `acks=all`, 5 ms linger). A poller reads the store's offset for the
//!   partition every 2 ms; the store writes it in the same transaction as the rows, and with one
//!   partition it says exactly which events are committed. An event's **apply latency** is the
//!   first poll that sees it committed minus the moment it was made (so at most one poll
//!   interval too high). p50 and p99 per round; the medians of the rounds are printed.
//! - **burst**: 50,000 more events, produced as fast as Kafka takes them, until the store holds
//!   them all: the connector at full speed.
//!
//! The connector's **peak RSS** (`VmHWM` from `/proc`) is read after each phase.

#![allow(clippy::unwrap_used)] // a benchmark: a failed unwrap is a failed run

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lienthong_connect::Sink;
use lienthong_contract::Codec;
use lienthong_contract::events::CaseEvent;
use lienthong_store::AnyStore;
use lienthong_tests::bench::{median, quantile};
use lienthong_tests::{Kafka, kafka, unique_suffix};
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::{Store, case_stream, catalog, postgres_store, producer, sqlite_store};

const RATE: u64 = 1_000;
const BURST: usize = 50_000;
const ROUNDS: usize = 3;
const POLL: Duration = Duration::from_millis(2);

/// One round's figures.
struct Round {
    p50_ms: f64,
    p99_ms: f64,
    steady_events: usize,
    steady_hwm_kib: u64,
    burst_rate: f64,
    burst_hwm_kib: u64,
}

/// The offset after the last committed record of partition 0, as `store` holds it.
async fn next_offset(store: &mut AnyStore, connector: &str) -> i64 {
    store
        .offsets(connector)
        .await
        .ok()
        .and_then(|h| h.into_iter().find(|o| o.partition == 0))
        .map_or(0, |o| o.next)
}

/// `VmHWM` (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn start_connector(config: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .arg("connect")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn stop_connector(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Wait until the store holds `n` records of partition 0.
async fn until_held(reader: &mut AnyStore, connector: &str, n: i64, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let at = next_offset(reader, connector).await;
        if at >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the connector holds {at} of {n} records; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn encode(codec: &Codec, id: u32, event: &CaseEvent) -> Vec<u8> {
    codec.encode_to_vec(id, event).unwrap()
}

async fn send(p: &FutureProducer, topic: &str, key: &str, value: &[u8]) {
    p.send(
        FutureRecord::<str, [u8]>::to(topic)
            .key(key)
            .payload(value)
            .partition(0),
        Duration::from_secs(30),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
}

async fn round(kafka: &Kafka, kind: &str, secs: u64) -> Round {
    let store = match kind {
        "postgres" => postgres_store().await,
        _ => sqlite_store().await,
    };
    let run = unique_suffix();
    let topic = kafka.create_topic("latency", 1, 1, &[]).await.unwrap();
    let dlq = kafka.create_topic("latency-dlq", 1, 1, &[]).await.unwrap();
    let name = format!("latency-{run}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("connector.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"{name}\"\ndead_letter_topic = \"{dlq}\"\n[kafka]\nbootstrap = \"{}\"\n\
             [schemas]\ndir = \"{}\"\n[[topics]]\nname = \"{topic}\"\nentity = \"cases\"\n{}",
            kafka.bootstrap(),
            lienthong_contract::repo_schemas_dir().display(),
            store.toml()
        ),
    )
    .unwrap();
    let log = dir.path().join("connector.log");
    let catalog = catalog();
    let codec = Codec::from_catalog(&catalog).unwrap();
    let id = catalog.local_id("hcm.case.events").unwrap();
    let producer = producer(kafka);
    let steady_events = (secs * RATE) as usize;
    // Case lifecycles, interleaved: about five events per case.
    let mut events = case_stream(&format!("LAT-{run}"), (steady_events + BURST) / 4 + 200);
    assert!(events.len() > steady_events + BURST + 100);

    // Warm up: the connector starts, makes its tables and applies a first hundred events.
    let child = start_connector(&config, &log);
    let pid = child.id();
    let mut sent = 0usize;
    for e in events.iter_mut().take(100) {
        e.envelope.occurred_at = now_ms();
        send(
            &producer,
            &topic,
            &e.envelope.aggregate_id,
            &encode(&codec, id, e),
        )
        .await;
        sent += 1;
    }
    loop {
        if store
            .offsets(&name)
            .await
            .first()
            .is_some_and(|o| o.next >= 100)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut reader = store.open().await;

    // Steady: one event a millisecond, each stamped as it is made; a poller watches the store.
    let mut made: Vec<Instant> = Vec::with_capacity(steady_events);
    let seen: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(steady_events)));
    let poller = {
        let seen = Arc::clone(&seen);
        let name = name.clone();
        tokio::spawn(async move {
            let base = 100i64;
            let mut done = 0usize;
            while done < steady_events {
                let at = (next_offset(&mut reader, &name).await - base).max(0) as usize;
                let now = Instant::now();
                if at > done {
                    let mut s = seen.lock().unwrap();
                    s.extend(std::iter::repeat_n(now, at.min(steady_events) - done));
                    done = at.min(steady_events);
                }
                tokio::time::sleep(POLL).await;
            }
            reader
        })
    };
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut acks = Vec::with_capacity(steady_events);
    for e in events.iter_mut().skip(sent).take(steady_events) {
        tick.tick().await;
        made.push(Instant::now());
        e.envelope.occurred_at = now_ms();
        let payload = encode(&codec, id, e);
        let key = e.envelope.aggregate_id.clone();
        let record = FutureRecord::<str, [u8]>::to(&topic)
            .key(&key)
            .payload(&payload)
            .partition(0);
        acks.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    sent += steady_events;
    for a in acks {
        a.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    let mut reader = tokio::time::timeout(Duration::from_secs(120), poller)
        .await
        .expect("the store holds the steady events within two minutes")
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    let latencies: Vec<f64> = made
        .iter()
        .zip(&seen)
        .map(|(m, s)| s.saturating_duration_since(*m).as_secs_f64() * 1000.0)
        .collect();
    let steady_hwm_kib = peak_rss_kib(pid);

    // Burst: everything else, as fast as Kafka takes it.
    let started = Instant::now();
    let rest: Vec<(String, Vec<u8>)> = events
        .iter_mut()
        .skip(sent)
        .take(BURST)
        .map(|e| {
            e.envelope.occurred_at = now_ms();
            (e.envelope.aggregate_id.clone(), encode(&codec, id, e))
        })
        .collect();
    for chunk in rest.chunks(5_000) {
        let acks: Vec<_> = chunk
            .iter()
            .map(|(k, v)| {
                producer.send(
                    FutureRecord::<str, [u8]>::to(&topic)
                        .key(k)
                        .payload(v)
                        .partition(0),
                    Duration::from_secs(30),
                )
            })
            .collect();
        for a in futures::future::join_all(acks).await {
            a.map_err(|(e, _)| e).unwrap();
        }
    }
    until_held(&mut reader, &name, (sent + BURST) as i64, &log).await;
    let burst_rate = BURST as f64 / started.elapsed().as_secs_f64();
    let burst_hwm_kib = peak_rss_kib(pid);
    stop_connector(child);
    // The next round must not pay for vacuuming this one's rows.
    drop(reader);
    if let Store::Postgres { url } = &store {
        lienthong_tests::postgres()
            .drop_database(url)
            .await
            .unwrap();
    }
    Round {
        p50_ms: quantile(latencies.clone(), 0.5),
        p99_ms: quantile(latencies, 0.99),
        steady_events,
        steady_hwm_kib,
        burst_rate,
        burst_hwm_kib,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn main() {
    let secs: u64 = std::env::var("LIENTHONG_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let kafka = kafka();
        println!(
            "apply latency at a steady {RATE} events/s for {secs} s, then a burst of {BURST}; \
             {ROUNDS} rounds per store; the connector with its default batching (5,000 records or 100 ms)"
        );
        for kind in ["postgres", "sqlite"] {
            let mut rounds = Vec::new();
            for r in 0..ROUNDS {
                let round = round(&kafka, kind, secs).await;
                println!(
                    "  {kind} round {}: p50 {:.1} ms, p99 {:.1} ms over {} events; burst {:.0} events/s; peak RSS {} MiB (steady), {} MiB (after the burst)",
                    r + 1,
                    round.p50_ms,
                    round.p99_ms,
                    round.steady_events,
                    round.burst_rate,
                    round.steady_hwm_kib / 1024,
                    round.burst_hwm_kib / 1024
                );
                rounds.push(round);
            }
            println!(
                "{kind}: apply latency p50 {:.1} ms, p99 {:.1} ms (medians of {ROUNDS} rounds); \
                 burst {:.0} events/s; connector peak RSS {} MiB (highest of the rounds)",
                median(rounds.iter().map(|r| r.p50_ms).collect()),
                median(rounds.iter().map(|r| r.p99_ms).collect()),
                median(rounds.iter().map(|r| r.burst_rate).collect()),
                rounds.iter().map(|r| r.burst_hwm_kib).max().unwrap_or(0) / 1024
            );
        }
    });
}
