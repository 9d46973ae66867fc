//! Reading partitions back from real Kafka as a `read_committed` consumer: transaction markers
//! and aborted records take offsets but are never delivered, so a partition's record end is
//! not its high watermark.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use lienthong_tests::{kafka, unique_suffix};
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    partition: i32,
    n: usize,
) {
    for i in 0..n {
        let key = format!("k{i}");
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(partition)
                    .key(&key)
                    .payload("v"),
            )
            .unwrap();
    }
}

#[test]
fn record_ends_skip_transaction_markers_and_aborted_records() {
    let kafka = kafka();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let topic = rt
        .block_on(kafka.create_topic("read-back", 3, 1, &[]))
        .unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = kafka
        .config()
        .transactional_producer(&format!("read-back-{}", unique_suffix()), &[])
        .create()
        .unwrap();
    let t = Duration::from_secs(30);
    producer.init_transactions(t).unwrap();
    // Partition 0: 5 committed, then 3 aborted. Partition 1: 4 committed. Partition 2: empty.
    producer.begin_transaction().unwrap();
    send(&producer, &topic, 0, 5);
    send(&producer, &topic, 1, 4);
    producer.commit_transaction(t).unwrap();
    producer.begin_transaction().unwrap();
    send(&producer, &topic, 0, 3);
    producer.flush(t).unwrap();
    producer.abort_transaction(t).unwrap();

    let client = kafka.config();
    let partitions: Vec<(String, i32)> = (0..3).map(|p| (topic.clone(), p)).collect();
    let from: Vec<((String, i32), i64)> = partitions.iter().map(|p| (p.clone(), 0)).collect();
    let reads = lienthong_bus::read_back(&client, &from, t).unwrap();
    let p0 = reads[&(topic.clone(), 0)];
    assert_eq!((p0.records, p0.last), (5, Some(4)));
    let p1 = reads[&(topic.clone(), 1)];
    assert_eq!((p1.records, p1.last), (4, Some(3)));
    assert_eq!(reads[&(topic.clone(), 2)].records, 0);

    let ends = lienthong_bus::record_ends(&client, &partitions, t).unwrap();
    assert_eq!(
        ends[&(topic.clone(), 0)],
        Some(5),
        "not the high watermark (5 + 3 + 2 markers)"
    );
    assert_eq!(ends[&(topic.clone(), 1)], Some(4));
    assert_eq!(ends[&(topic.clone(), 2)], None);
    let high = kafka.end_offsets(&topic).unwrap();
    assert!(high.contains(&(0, 10)), "{high:?}");

    // From the middle: only what follows.
    let reads = lienthong_bus::read_back(&client, &[((topic.clone(), 0), 3)], t).unwrap();
    assert_eq!(reads[&(topic.clone(), 0)].records, 2);
}
