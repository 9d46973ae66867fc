//! The dead-letter topic: a record that can never be applied is written there, with headers
//! that say where it came from and why, before the batch that skips it commits.

use std::time::{Duration, Instant};

use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use crate::error::ConnectError;
use crate::sink::Sink;

use super::{Item, Runner};

/// DLQ header: the topic the record came from.
pub const H_TOPIC: &str = "lienthong.original.topic";
/// DLQ header: its partition (decimal).
pub const H_PARTITION: &str = "lienthong.original.partition";
/// DLQ header: its offset (decimal).
pub const H_OFFSET: &str = "lienthong.original.offset";
/// DLQ header: the error class (`signature`, `not_avro`, `unknown_schema`,
/// `incompatible_schema`, `invalid`, `constraint`).
pub const H_CLASS: &str = "lienthong.error.class";
/// DLQ header: the error message.
pub const H_MESSAGE: &str = "lienthong.error.message";
/// DLQ header: the connector's name.
pub const H_CONNECTOR: &str = "lienthong.connector";

impl<S: Sink> Runner<S> {
    /// Write a record that can never be applied to the dead-letter topic; waits for Kafka, and
    /// retries while Kafka is unavailable (the batch skipping the record commits only after).
    pub(super) async fn dead_letter(
        &self,
        item: &Item,
        class: &'static str,
        message: &str,
    ) -> Result<(), ConnectError> {
        if self.folding.is_some() {
            // A fold skips the record as the connector did; the connector dead-lettered it.
            return Ok(());
        }
        let topic = &*item.tp.0;
        tracing::warn!(connector = %self.name(), topic, partition = item.tp.1, offset = item.offset, class, message, "dead-lettering a record");
        self.metrics
            .failed
            .with_label_values(&[&self.config.name, topic, class])
            .inc();
        let partition = item.tp.1.to_string();
        let offset = item.offset.to_string();
        let message: String = message.chars().take(2_000).collect();
        let mut attempt = 0;
        loop {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: H_TOPIC,
                    value: Some(topic),
                })
                .insert(Header {
                    key: H_PARTITION,
                    value: Some(&partition),
                })
                .insert(Header {
                    key: H_OFFSET,
                    value: Some(&offset),
                })
                .insert(Header {
                    key: H_CLASS,
                    value: Some(class),
                })
                .insert(Header {
                    key: H_MESSAGE,
                    value: Some(&message),
                })
                .insert(Header {
                    key: H_CONNECTOR,
                    value: Some(&self.config.name),
                });
            let mut record =
                FutureRecord::<[u8], [u8]>::to(&self.config.dead_letter_topic).headers(headers);
            if let Some(k) = &item.key {
                record = record.key(k);
            }
            if let Some(p) = &item.payload {
                record = record.payload(p);
            }
            match self.producer.send(record, Duration::from_secs(30)).await {
                Ok(_) => break,
                Err((e, _)) => {
                    attempt += 1;
                    self.metrics
                        .retries
                        .with_label_values(&[&self.config.name, "kafka"])
                        .inc();
                    tracing::warn!(error = %e, attempt, "dead-letter topic unavailable; retrying");
                    if self.shutdown_expired() {
                        return Err(ConnectError::Kafka(e));
                    }
                    tokio::time::sleep(self.config.retry.backoff(attempt)).await;
                }
            }
        }
        self.metrics
            .dead_lettered
            .with_label_values(&[&self.config.name, topic, class])
            .inc();
        Ok(())
    }

    pub(super) fn shutdown_expired(&self) -> bool {
        self.shutdown_deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// Read a DLQ record's headers as `(name, value)` pairs (for tools and tests).
pub fn dlq_headers(m: &impl Message) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(h) = m.headers() {
        for i in 0..h.count() {
            let header = h.get(i);
            out.push((
                header.key.to_string(),
                header
                    .value
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default(),
            ));
        }
    }
    out
}
