//! Sink connectors under faults, as operators run them: the `lienthong connect` process
//! SIGKILLed at random moments, two processes sharing a topic with one killed, and PostgreSQL
//! stopped for 20 seconds mid-stream. Real Kafka, real stores; the end state is checked against
//! an independent model, row by row and by digest against the log folded in memory.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[macro_use]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lienthong_connect::Digest;
use lienthong_tests::{Kafka, kafka, unique_suffix};
use support::*;

both_stores!(
    sigkill_ten_times_during_fifty_thousand_events_loses_and_duplicates_nothing,
    two_instances_share_the_partitions_and_one_is_killed,
);

fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join(format!("connector-{}.toml", unique_suffix()));
    std::fs::write(&path, toml).unwrap();
    path
}

/// Produce `records` in chunks over time, so that faults land mid-stream.
fn produce_slowly(
    kafka: &Kafka,
    topic: &str,
    records: Vec<(String, Option<Vec<u8>>)>,
    chunk: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<()> {
    let kafka = kafka.clone();
    let topic = topic.to_string();
    tokio::spawn(async move {
        let p = producer(&kafka);
        for c in records.chunks(chunk) {
            produce_with(&p, &topic, c).await;
            tokio::time::sleep(pause).await;
        }
    })
}

async fn check_exact(
    store: &Store,
    toml: &str,
    topic: &str,
    kafka: &Kafka,
    events: &[lienthong_contract::events::CaseEvent],
) {
    let rows = store.rows().await;
    check_cases(&rows, &expected_cases(events));
    let folded = fold_in_memory(toml, &[topic], kafka).await;
    assert_same_rows(&rows, &folded, store.kind());
    assert_eq!(Digest::of(rows, 64), Digest::of(folded, 64));
}

/// 50,000 case events; the connector process is SIGKILLed 10 times at random moments while
/// they stream in, and restarted each time. The store ends exactly as the log says.
async fn sigkill_ten_times_during_fifty_thousand_events_loses_and_duplicates_nothing(store: Store) {
    let kafka = kafka();
    let topic = kafka.create_topic("sink-crash", 6, 1, &[]).await.unwrap();
    let dlq = kafka.create_topic("sink-dlq", 1, 1, &[]).await.unwrap();
    let prefix = format!("HS-{}", unique_suffix());
    let mut cases = 11_000;
    let mut events = case_stream(&prefix, cases);
    while events.len() < 50_000 {
        cases += 200;
        events = case_stream(&prefix, cases);
    }
    events.truncate(50_000);
    let dir = tempfile::tempdir().unwrap();
    let name = format!("crash-{}", unique_suffix());
    let toml = config_toml(&name, &kafka, &[(&topic, "cases")], &store, &dlq, "");
    let path = write_config(dir.path(), &toml);
    let log = log_path(&name, "connector");

    let producing = produce_slowly(
        &kafka,
        &topic,
        encode_cases(&events),
        1_000,
        Duration::from_millis(700),
    );
    // The stream lasts about 40 s; a life of 2-6 s lets each instance join the group (about
    // 3 s) and die anywhere: before, during or after applying a batch.
    let mut connector = Process::start("connect", &path, &log);
    for kill in 0..10 {
        let wait = Duration::from_millis(fastrand::u64(2_000..6_000));
        tokio::time::sleep(wait).await;
        connector.sigkill();
        eprintln!("SIGKILL #{} after {wait:?}", kill + 1);
        connector = Process::start("connect", &path, &log);
    }
    producing.await.unwrap();
    let ends = end_offsets(&kafka, &topic).await;
    assert_eq!(ends.values().sum::<i64>(), 50_000);
    wait_caught_up(&store, &name, &topic, &ends, Duration::from_secs(300)).await;
    connector.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.matches("connector started").count() >= 11,
        "every restart ran: {text}"
    );
    check_exact(&store, &toml, &topic, &kafka, &events).await;
}

/// Two processes of one connector share a 6-partition topic; one is SIGKILLed mid-stream and
/// the other takes its partitions over. The store ends exactly as the log says.
async fn two_instances_share_the_partitions_and_one_is_killed(store: Store) {
    let kafka = kafka();
    let topic = kafka
        .create_topic("sink-rebalance", 6, 1, &[])
        .await
        .unwrap();
    let dlq = kafka.create_topic("sink-dlq", 1, 1, &[]).await.unwrap();
    let prefix = format!("HS-{}", unique_suffix());
    let events = case_stream(&prefix, 4_000);
    let dir = tempfile::tempdir().unwrap();
    let name = format!("shared-{}", unique_suffix());
    let toml = config_toml(&name, &kafka, &[(&topic, "cases")], &store, &dlq, "");
    let path = write_config(dir.path(), &toml);
    let (log_a, log_b) = (log_path(&name, "a"), log_path(&name, "b"));
    let a = Process::start("connect", &path, &log_a);
    let b = Process::start("connect", &path, &log_b);
    let producing = produce_slowly(
        &kafka,
        &topic,
        encode_cases(&events),
        500,
        Duration::from_millis(300),
    );
    // Wait until both hold a share, then kill one mid-stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shares = |p: &Path| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .rfind(|l| l.contains("positioned at the store's offsets"))
                .map(|l| l.contains("partitions=3"))
                .unwrap_or(false)
        };
        if shares(&log_a) && shares(&log_b) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the two instances never shared the partitions 3 and 3"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(fastrand::u64(500..2_000))).await;
    a.sigkill();
    producing.await.unwrap();
    let ends = end_offsets(&kafka, &topic).await;
    wait_caught_up(&store, &name, &topic, &ends, Duration::from_secs(180)).await;
    let b_log = std::fs::read_to_string(&log_b).unwrap();
    assert!(
        b_log
            .lines()
            .filter(|l| l.contains("positioned at the store's offsets"))
            .any(|l| l.contains("partitions=6")),
        "the survivor took every partition over: {b_log}"
    );
    b.stop();
    check_exact(&store, &toml, &topic, &kafka, &events).await;
}

/// PostgreSQL (its own instance) is stopped for 20 seconds while events stream in: the
/// connector pauses and retries, nothing is lost, nothing is dead-lettered. Two instances share
/// the topic, and one stops during the outage: the other gets its partitions in a rebalance
/// while its own are paused, and must still read every partition once the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_for_twenty_seconds_loses_nothing_and_dead_letters_nothing() {
    let instance = format!("sink-outage-{}", unique_suffix());
    let admin = ops_output(&["start", "--name", &instance]);
    let _guard = OwnPostgres(instance.clone());
    let admin = admin.lines().last().unwrap().to_string();
    let url = ops_output(&["createdb", "sink", "--name", &instance]);
    let url = url.lines().last().unwrap().to_string();
    assert!(url.starts_with("postgres://"), "{url} (admin {admin})");
    let store = Store::Postgres { url };

    let kafka = kafka();
    let topic = kafka.create_topic("sink-outage", 3, 1, &[]).await.unwrap();
    let dlq = kafka.create_topic("sink-dlq", 1, 1, &[]).await.unwrap();
    let prefix = format!("HS-{}", unique_suffix());
    let events = case_stream(&prefix, 3_000);
    let name = format!("outage-{}", unique_suffix());
    let metrics_port = lienthong_tests::free_port();
    let toml = config_toml(
        &name,
        &kafka,
        &[(&topic, "cases")],
        &store,
        &dlq,
        &format!("metrics_listen = \"127.0.0.1:{metrics_port}\""),
    );
    let (token, task) = spawn(config(&toml));
    // A second instance of the same connector (same group), without a metrics listener.
    let (second, second_task) = spawn(config(&config_toml(
        &name,
        &kafka,
        &[(&topic, "cases")],
        &store,
        &dlq,
        "",
    )));
    // About 13,500 events over about 40 seconds.
    let producing = produce_slowly(
        &kafka,
        &topic,
        encode_cases(&events),
        300,
        Duration::from_millis(800),
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    ops_output(&["pause", "--name", &instance]);
    let paused_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // It gives up its in-flight batch after its 10 s shutdown time and leaves the group.
    second.cancel();
    second_task.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(paused_at.elapsed())).await;
    let metrics = metrics_text(metrics_port).await;
    assert!(
        metrics.contains(&format!(
            "lienthong_connector_retrying{{connector=\"{name}\"}} 1"
        )),
        "the connector says it is retrying: {metrics}"
    );
    ops_output(&["resume", "--name", &instance]);
    eprintln!("PostgreSQL was down for {:?}", paused_at.elapsed());
    producing.await.unwrap();
    let ends = end_offsets(&kafka, &topic).await;
    wait_caught_up(&store, &name, &topic, &ends, Duration::from_secs(180)).await;
    let metrics = metrics_text(metrics_port).await;
    token.cancel();
    task.await.unwrap().unwrap();
    assert!(
        metrics.contains(&format!(
            "lienthong_connector_retries_total{{class=\"store_unavailable\",connector=\"{name}\"}}"
        )),
        "{metrics}"
    );
    assert!(
        !metrics.contains("lienthong_connector_events_dead_lettered_total{"),
        "{metrics}"
    );
    let dead = kafka
        .read_all(&dlq, 0, Duration::from_secs(2), Duration::ZERO)
        .await
        .unwrap();
    assert!(
        dead.is_empty(),
        "nothing dead-lettered because of an outage"
    );
    check_exact(&store, &toml, &topic, &kafka, &events).await;
}
