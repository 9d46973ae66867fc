//! First scenarios against the real Apache Kafka started by `ops/test`: a keyed round trip, a
//! broker killed under an `acks=all` producer, and a consumer group resuming from its commit.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lienthong_tests::{Kafka, counts, kafka, kafka_cluster, unique_suffix};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};

/// `key-<k>` / `<k>:<seq>`: the sequence number is per key, so per-key order is checkable.
fn record(k: usize, seq: usize) -> (String, String) {
    (format!("key-{k}"), format!("{k}:{seq}"))
}

fn parse(payload: &[u8]) -> Result<(usize, usize)> {
    let s = std::str::from_utf8(payload)?;
    let (k, seq) = s.split_once(':').context("payload without ':'")?;
    Ok((k.parse()?, seq.parse()?))
}

/// Produce `per_key` records for each of `keys` keys, many in flight at once, and return the
/// acknowledged `(partition, offset)` of each payload.
async fn produce_keyed(
    kafka: &Kafka,
    topic: &str,
    keys: usize,
    per_key: usize,
) -> Result<HashMap<String, (i32, i64)>> {
    let producer = kafka.idempotent_producer()?;
    let mut in_flight = FuturesUnordered::new();
    let mut acked = HashMap::new();
    for seq in 0..per_key {
        for k in 0..keys {
            let (key, payload) = record(k, seq);
            let producer = producer.clone();
            let topic = topic.to_string();
            in_flight.push(async move {
                let r = producer
                    .send(
                        FutureRecord::to(&topic).key(&key).payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await;
                (payload, r)
            });
            // Bounded in-flight window: never await each send in turn, never unbounded memory.
            if in_flight.len() >= 2_000 {
                let (payload, r) = in_flight.next().await.context("in-flight set empty")?;
                let d = r.map_err(|(e, _)| e).context("delivery failed")?;
                acked.insert(payload, (d.partition, d.offset));
            }
        }
    }
    while let Some((payload, r)) = in_flight.next().await {
        let d = r.map_err(|(e, _)| e).context("delivery failed")?;
        acked.insert(payload, (d.partition, d.offset));
    }
    Ok(acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_of_10000_keyed_records_keeps_count_and_per_key_order() -> Result<()> {
    let kafka = kafka();
    let topic = kafka.create_topic("round-trip", 3, 1, &[]).await?;
    let (keys, per_key) = (100, 100);

    let acked = produce_keyed(&kafka, &topic, keys, per_key).await?;
    assert_eq!(
        acked.len(),
        keys * per_key,
        "every record acknowledged once"
    );

    let records = kafka
        .read_all(
            &topic,
            keys * per_key,
            Duration::from_secs(60),
            Duration::from_secs(2),
        )
        .await?;
    assert_eq!(records.len(), keys * per_key, "exact count, nothing extra");

    let payloads: Vec<&[u8]> = records
        .iter()
        .map(|r| r.payload.as_deref().unwrap_or_default())
        .collect();
    let dups: Vec<_> = counts(payloads.iter())
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(dups.is_empty(), "duplicates: {dups:?}");

    // Per-key order: each key's sequence numbers arrive 0, 1, 2, … and from one partition.
    let mut next_seq: HashMap<usize, usize> = HashMap::new();
    let mut partition_of: HashMap<usize, i32> = HashMap::new();
    for r in &records {
        let (k, seq) = parse(r.payload.as_deref().unwrap_or_default())?;
        let expected_key = format!("key-{k}");
        assert_eq!(r.key.as_deref(), Some(expected_key.as_bytes()));
        let want = next_seq.entry(k).or_insert(0);
        assert_eq!(
            seq, *want,
            "key {k} out of order at partition {} offset {}",
            r.partition, r.offset
        );
        *want += 1;
        let p = *partition_of.entry(k).or_insert(r.partition);
        assert_eq!(p, r.partition, "key {k} spread over two partitions");
    }
    assert!(next_seq.values().all(|n| *n == per_key));
    let used: HashSet<i32> = partition_of.values().copied().collect();
    assert_eq!(used.len(), 3, "100 keys should use all 3 partitions");
    Ok(())
}

/// Restarts the killed broker when the test ends, pass or fail, so the cluster stays whole.
struct RestartOnDrop<'a> {
    kafka: &'a Kafka,
    broker: u32,
    armed: bool,
}

impl Drop for RestartOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = self.kafka.restart_broker(self.broker)
        {
            eprintln!("could not restart broker {}: {e:#}", self.broker);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_record_survives_a_broker_killed_mid_stream() -> Result<()> {
    let kafka = kafka_cluster();
    let topic = kafka
        .create_topic("broker-failure", 3, 3, &[("min.insync.replicas", "2")])
        .await?;
    let producer = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create::<rdkafka::producer::FutureProducer>()?;

    let total = 30_000usize;
    let kill_at = 10_000usize;
    let victim = 2;
    let mut guard = RestartOnDrop {
        kafka: &kafka,
        broker: victim,
        armed: false,
    };
    let mut in_flight = FuturesUnordered::new();
    let mut acked: Vec<String> = Vec::new();
    let mut failed = 0usize;
    let mut settle = |r: (
        String,
        rdkafka::producer::future_producer::OwnedDeliveryResult,
    )| match r.1 {
        Ok(_) => acked.push(r.0),
        Err(_) => failed += 1,
    };
    for i in 0..total {
        if i == kill_at {
            kafka.kill_broker(victim)?;
            guard.armed = true;
            eprintln!("SIGKILLed broker {victim} after {i} sends");
        }
        let payload = format!("r{i}");
        let key = format!("k{}", i % 64);
        let producer = producer.clone();
        let topic = topic.clone();
        in_flight.push(async move {
            let r = producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&payload),
                    Duration::from_secs(60),
                )
                .await;
            (payload, r)
        });
        if in_flight.len() >= 1_000
            && let Some(r) = in_flight.next().await
        {
            settle(r);
        }
    }
    while let Some(r) = in_flight.next().await {
        settle(r);
    }
    eprintln!(
        "{} acknowledged, {failed} failed, broker {victim} down",
        acked.len()
    );
    // With replication factor 3 and min.insync.replicas=2, losing one broker must not stop an
    // acks=all producer: most sends after the kill are acknowledged too.
    assert!(acked.len() > kill_at, "only {} acknowledged", acked.len());

    kafka.restart_broker(victim)?;
    guard.armed = false;

    let records = kafka
        .read_all(
            &topic,
            acked.len(),
            Duration::from_secs(90),
            Duration::from_secs(2),
        )
        .await?;
    let read: HashSet<Vec<u8>> = records.into_iter().filter_map(|r| r.payload).collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|p| !read.contains(p.as_bytes()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged records lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    Ok(())
}

/// The offsets `group` has committed on `topic`, by partition, read by a separate consumer
/// that never joins the group.
///
/// Not `committed()` on the group member itself: with the librdkafka bundled by rdkafka 0.39,
/// a subscribed consumer that called `rd_kafka_committed` hangs forever when it is destroyed
/// (found here: the broker thread never drops its last reference). Sinks must not do that either.
fn committed_offsets(
    kafka: &Kafka,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<HashMap<i32, i64>> {
    let probe: rdkafka::consumer::BaseConsumer =
        kafka.client_config().set("group.id", group).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = probe.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_resumes_from_its_committed_offsets() -> Result<()> {
    let kafka = kafka();
    let topic = kafka.create_topic("group-resume", 3, 1, &[]).await?;
    let acked = produce_keyed(&kafka, &topic, 10, 30).await?;
    let total = acked.len();
    assert_eq!(total, 300);
    let group = format!("resume-{}", unique_suffix());

    // First life: read 120 records, commit what was consumed, close.
    let first_read = 120;
    let mut first: Vec<(i32, i64, Vec<u8>)> = Vec::new();
    let committed = {
        let consumer = kafka.consumer(&group)?;
        consumer.subscribe(&[&topic])?;
        let mut stream = consumer.stream();
        while first.len() < first_read {
            let m = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .context("first consumer timed out")?
                .context("stream ended")??;
            first.push((
                m.partition(),
                m.offset(),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
        drop(stream);
        consumer.commit_consumer_state(CommitMode::Sync)?;
        committed_offsets(&kafka, &group, &topic, 3)?
    };

    // The commit is exactly "one past the last record consumed" on every partition touched.
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o, _) in &first {
        let e = last.entry(*p).or_insert(*o);
        *e = (*e).max(*o);
    }
    for (p, o) in &last {
        assert_eq!(
            committed.get(p),
            Some(&(o + 1)),
            "partition {p}: committed {committed:?}"
        );
    }

    // Second life, same group: it starts where the first stopped, on every partition.
    let consumer = kafka.consumer(&group)?;
    consumer.subscribe(&[&topic])?;
    let mut second: Vec<(i32, i64, Vec<u8>)> = Vec::new();
    {
        let mut stream = consumer.stream();
        let settle = Duration::from_secs(2);
        loop {
            let wait = if second.len() >= total - first_read {
                settle
            } else {
                Duration::from_secs(30)
            };
            match tokio::time::timeout(wait, stream.next()).await {
                Err(_) => break,
                Ok(m) => {
                    let m = m.context("stream ended")??;
                    second.push((
                        m.partition(),
                        m.offset(),
                        m.payload().unwrap_or_default().to_vec(),
                    ));
                }
            }
        }
    }
    ensure!(
        second.len() == total - first_read,
        "second life read {} records, wanted {}",
        second.len(),
        total - first_read
    );
    for (p, o, _) in &second {
        if let Some(l) = last.get(p) {
            assert!(
                o > l,
                "partition {p}: offset {o} re-read after commit at {}",
                l + 1
            );
        }
    }
    let all: Vec<&Vec<u8>> = first
        .iter()
        .chain(second.iter())
        .map(|(_, _, v)| v)
        .collect();
    assert_eq!(
        counts(all.iter()).len(),
        total,
        "the two lives together read everything once"
    );

    // And the group's lag is visible through committed offsets: commit the end, check it.
    consumer.commit_consumer_state(CommitMode::Sync)?;
    let sum: i64 = committed_offsets(&kafka, &group, &topic, 3)?.values().sum();
    assert_eq!(sum as usize, total);
    Ok(())
}
