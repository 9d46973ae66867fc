//! Sink connector scenarios against real Kafka and real stores. Each scenario is written once,
//! as a function of the store, and run against PostgreSQL and SQLite.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::{Duration, Instant};

use lienthong_connect::Digest;
use lienthong_tests::{kafka, unique_suffix};
use support::*;

macro_rules! both_stores {
    ($($scenario:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::$scenario(super::postgres_store().await).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::$scenario(super::sqlite_store().await).await
                }
            )*
        }
    };
}

both_stores!(a_stream_is_applied_exactly_and_a_replay_changes_nothing);

/// 600 cases (about 2,700 events, some sent twice) over 4 partitions: the store holds exactly
/// what the log says (independent model, digest and row by row against the log folded in
/// memory); graceful shutdown stops in bounded time; offsets reset to 0 replay the whole log
/// and change nothing.
async fn a_stream_is_applied_exactly_and_a_replay_changes_nothing(store: Store) {
    let kafka = kafka();
    let topic = kafka.create_topic("sink-stream", 4, 1, &[]).await.unwrap();
    let dlq = kafka.create_topic("sink-dlq", 1, 1, &[]).await.unwrap();
    let prefix = format!("HS-{}", unique_suffix());
    let mut events = case_stream(&prefix, 600);
    // Duplicates: the same events delivered again later (a producer retry, a replayed outbox).
    let dups: Vec<_> = events.iter().step_by(37).cloned().collect();
    events.extend(dups);
    produce(&kafka, &topic, &encode_cases(&events)).await;
    let ends = end_offsets(&kafka, &topic).await;

    let name = format!("stream-{}", unique_suffix());
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = config_toml(
        &name,
        &kafka,
        &[(&topic, "cases")],
        &store,
        &dlq,
        &format!("metrics_listen = \"127.0.0.1:{metrics_port}\""),
    );
    let (token, task) = spawn(config(&toml));
    wait_caught_up(&store, &name, &topic, &ends, Duration::from_secs(120)).await;

    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "lienthong_connector_events_consumed_total{{connector=\"{name}\",topic=\"{topic}\"}} {}",
            events.len()
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!("lienthong_connector_up{{connector=\"{name}\"}} 1")));

    let stopping = Instant::now();
    token.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("shutdown within bounded time")
        .unwrap()
        .unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(20));

    let rows = store.rows().await;
    check_cases(&rows, &expected_cases(&events));
    let folded = fold_in_memory(&toml, &[&topic], &kafka).await;
    assert_same_rows(&rows, &folded, store.kind());
    let digest = Digest::of(rows.clone(), 64);
    assert_eq!(digest, Digest::of(folded, 64));
    let dead = kafka
        .read_all(&dlq, 0, Duration::from_secs(2), Duration::ZERO)
        .await
        .unwrap();
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");

    // Replay: forget the offsets, run again over the whole log: nothing changes.
    assert_eq!(store.forget_offsets(&name).await, 4);
    let (token, task) = spawn(config(&toml));
    wait_caught_up(&store, &name, &topic, &ends, Duration::from_secs(120)).await;
    token.cancel();
    task.await.unwrap().unwrap();
    let replayed = store.rows().await;
    assert_eq!(
        Digest::of(replayed, 64),
        digest,
        "a replay changed the store"
    );
}
