//! The Kafka client context counts what librdkafka reports: a client pointed at a port where
//! no broker listens reports transport failures, counted by component and error code name.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use lienthong_telemetry::{KafkaClientContext, Telemetry};
use rdkafka::producer::FutureProducer;

#[test]
fn client_errors_are_counted_by_component_and_code() {
    let telemetry = Telemetry::new("test").unwrap();
    // A future producer polls its client on a thread of its own, so its errors arrive by
    // themselves.
    let _producer: FutureProducer<KafkaClientContext> =
        lienthong_bus::KafkaConfig::new("127.0.0.1:1")
            .with_option("reconnect.backoff.ms", "100")
            .producer()
            .create_with_context(KafkaClientContext::new(&telemetry, "gateway"))
            .unwrap();
    let counted = |text: &str| -> Vec<(String, f64)> {
        text.lines()
            .filter(|l| l.starts_with("lienthong_kafka_client_errors_total{"))
            .filter(|l| l.contains("component=\"gateway\""))
            .filter_map(|l| {
                let code = l.split("code=\"").nth(1)?.split('"').next()?.to_string();
                let value = l.rsplit(' ').next()?.parse().ok()?;
                Some((code, value))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let found = loop {
        std::thread::sleep(Duration::from_millis(100));
        let found = counted(&telemetry.render());
        if !found.is_empty() || Instant::now() > deadline {
            break found;
        }
    };
    assert!(!found.is_empty(), "no client error counted in 20 s");
    for (code, value) in &found {
        assert!(*value >= 1.0, "{found:?}");
        assert!(
            code.chars().all(|c| c.is_ascii_alphanumeric()) && code != "Other",
            "a librdkafka code name, not free text: {found:?}"
        );
    }
}
