//! `lienthong tail`: read a topic and print every record as one line of JSON, decoded with its
//! writer schema (from the catalog's local ids, or from a registry by id).

use std::io::Write;
use std::time::Duration;

use lienthong_contract::{Catalog, Codec};
use lienthong_registry::client::RegistryClient;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

use crate::CliError;
use crate::config::Config;

/// `lienthong tail` options.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// The topic to read.
    pub topic: String,
    /// Where to start in every partition: `end` (only new records), `beginning`,
    /// `offset:N`, or `time:T` with T in RFC 3339 (`2026-11-28T08:00:00+07:00`) or
    /// milliseconds since the epoch.
    #[arg(long, default_value = "end", value_name = "WHERE")]
    pub from: String,
    /// Print only records with this key (a case id, a personal id, …).
    #[arg(long)]
    pub key: Option<String>,
    /// Stop after printing this many records.
    #[arg(long, value_name = "N")]
    pub max: Option<u64>,
    /// Stop at the end of the log as it was when tail started, instead of following it.
    #[arg(long)]
    pub until_end: bool,
    /// Fetch writer schemas by id from this Confluent-compatible registry (token from
    /// LIENTHONG_REGISTRY_TOKEN); without it, the catalog's local ids are used.
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Beginning,
    End,
    Offset(i64),
    Time(i64),
}

fn parse_start(s: &str) -> Result<Start, CliError> {
    let bad = || {
        CliError::Usage(format!(
            "--from {s:?}: use end, beginning, offset:N or time:T (RFC 3339 or milliseconds)"
        ))
    };
    match s {
        "end" | "latest" => Ok(Start::End),
        "beginning" | "earliest" => Ok(Start::Beginning),
        _ => {
            if let Some(n) = s.strip_prefix("offset:") {
                n.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .map(Start::Offset)
                    .ok_or_else(bad)
            } else if let Some(t) = s.strip_prefix("time:") {
                lienthong_contract::json::parse_time_millis(t)
                    .map(Start::Time)
                    .ok_or_else(bad)
            } else {
                Err(bad())
            }
        }
    }
}

/// Run `tail` until done or `shutdown`.
pub async fn tail(
    config: &Config,
    catalog: &Catalog,
    args: TailArgs,
    shutdown: CancellationToken,
) -> Result<(), CliError> {
    let decoder = Decoder::new(catalog, args.registry.as_deref())?;
    let mut range = Range::open(config, &args.topic, &args.from, args.until_end).await?;
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    while let Some(message) = range.next(&shutdown).await? {
        let wanted = args
            .key
            .as_deref()
            .is_none_or(|k| message.key() == Some(k.as_bytes()));
        if wanted {
            let line = decoder.line(&message).await?;
            let mut out = stdout.lock();
            writeln!(out, "{line}")
                .and_then(|_| out.flush())
                .map_err(|e| CliError::Failed(format!("stdout: {e}")))?;
            printed += 1;
            if args.max.is_some_and(|max| printed >= max) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The records of a topic from a start (`--from`), to the end of the log as it was when the
/// range was opened (`until_end`) or on (following it).
pub(crate) struct Range {
    consumer: StreamConsumer,
    /// With `until_end`: per partition not read to its end yet, the offset after its last
    /// record.
    pending: Option<std::collections::HashMap<i32, i64>>,
    kafka: String,
}

impl Range {
    /// Assign every partition of `topic` at `from` (`end`, `beginning`, `offset:N`, `time:T`).
    pub(crate) async fn open(
        config: &Config,
        topic: &str,
        from: &str,
        until_end: bool,
    ) -> Result<Self, CliError> {
        let start = parse_start(from)?;
        let kafka_err = |e: rdkafka::error::KafkaError| {
            CliError::Failed(format!("Kafka at {}: {e}", config.kafka.bootstrap))
        };
        let client = config
            .kafka
            .consumer(&format!("lienthong-tail-{}", std::process::id()));
        // Partitions, and where the log ends now.
        let probe: BaseConsumer = client.create().map_err(kafka_err)?;
        let name = topic.to_string();
        let ends = tokio::task::spawn_blocking(move || partitions_and_ends(&probe, &name))
            .await
            .map_err(|e| CliError::Failed(e.to_string()))??;
        let mut assignment = TopicPartitionList::new();
        for (p, _) in &ends {
            let offset = match start {
                Start::Beginning => Offset::Beginning,
                Start::End => Offset::End,
                Start::Offset(n) => Offset::Offset(n),
                Start::Time(t) => Offset::Offset(t),
            };
            assignment
                .add_partition_offset(topic, *p, offset)
                .map_err(kafka_err)?;
        }
        let consumer: StreamConsumer = client.create().map_err(kafka_err)?;
        if let Start::Time(_) = start {
            assignment = consumer
                .offsets_for_times(assignment, Duration::from_secs(10))
                .map_err(kafka_err)?;
        }
        consumer.assign(&assignment).map_err(kafka_err)?;
        let mut range = Range {
            consumer,
            pending: None,
            kafka: config.kafka.bootstrap.clone(),
        };
        if !until_end {
            return Ok(range);
        }
        // A partition is done once its last record at start has been read: the offset after
        // it, not the high watermark, which a transaction's commit marker can hold beyond any
        // record this (read_committed) consumer will ever receive.
        let partitions: Vec<lienthong_bus::Partition> =
            ends.iter().map(|(p, _)| (topic.to_string(), *p)).collect();
        let reader = config.kafka.clone();
        let record_ends = tokio::task::spawn_blocking(move || {
            lienthong_bus::record_ends(&reader, &partitions, Duration::from_secs(30))
        })
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?
        .map_err(|e| CliError::Failed(e.to_string()))?;
        let mut pending: std::collections::HashMap<i32, i64> = record_ends
            .into_iter()
            .filter_map(|((_, partition), end)| Some((partition, end?)))
            .collect();
        // Partitions whose start is already at or past their end have nothing to show.
        for elem in assignment.elements() {
            let end = pending.get(&elem.partition()).copied();
            let begins_at_end = match (elem.offset(), end) {
                (Offset::End, _) => true,
                (Offset::Offset(o), Some(end)) => o >= end,
                _ => false,
            };
            if begins_at_end {
                pending.remove(&elem.partition());
            }
        }
        range.pending = Some(pending);
        Ok(range)
    }

    /// The next record, or `None` once the range is read (or `shutdown`).
    pub(crate) async fn next(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<Option<BorrowedMessage<'_>>, CliError> {
        if self.pending.as_ref().is_some_and(|p| p.is_empty()) {
            return Ok(None);
        }
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            m = self.consumer.recv() => m.map_err(|e| {
                CliError::Failed(format!("Kafka at {}: {e}", self.kafka))
            })?,
        };
        if let Some(pending) = &mut self.pending
            && pending
                .get(&message.partition())
                .is_some_and(|end| message.offset() + 1 >= *end)
        {
            pending.remove(&message.partition());
        }
        Ok(Some(message))
    }
}

/// The topic's partitions with their high watermarks; an unknown topic is a usage error.
fn partitions_and_ends(consumer: &BaseConsumer, topic: &str) -> Result<Vec<(i32, i64)>, CliError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| CliError::Failed(format!("Kafka unreachable: {e}")))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(CliError::Usage(format!(
            "unknown topic {topic:?}: Kafka has no such topic"
        )));
    }
    partitions
        .into_iter()
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map(|(_, high)| (p, high))
                .map_err(|e| CliError::Failed(format!("{topic}[{p}]: {e}")))
        })
        .collect()
}

/// Decodes records with their writer schema: the catalog's local ids, or a registry's.
pub(crate) enum Decoder {
    Local(Codec),
    Registry(RegistryClient),
}

impl Decoder {
    /// From the registry at `registry` (token from LIENTHONG_REGISTRY_TOKEN), or the catalog.
    pub(crate) fn new(catalog: &Catalog, registry: Option<&str>) -> Result<Self, CliError> {
        Ok(match registry {
            Some(url) => Decoder::Registry(crate::registry_client(url, None)?),
            None => Decoder::Local(
                Codec::from_catalog(catalog).map_err(|e| CliError::Failed(e.to_string()))?,
            ),
        })
    }

    /// One record as one JSON line; a record that cannot be decoded is shown with its error.
    /// A registry that cannot be read (unreachable, the credential refused, a server error)
    /// stops tail: it says nothing about the record.
    async fn line(&self, message: &BorrowedMessage<'_>) -> Result<Json, CliError> {
        let key = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned());
        let timestamp = message
            .timestamp()
            .to_millis()
            .map(|ms| lienthong_contract::json::format_timestamp_micros(ms * 1_000, 3));
        let mut line = json!({
            "topic": message.topic(),
            "partition": message.partition(),
            "offset": message.offset(),
            "timestamp": timestamp,
            "key": key,
        });
        match message.payload() {
            None => line["value"] = Json::Null,
            Some(bytes) => match self.decode(bytes).await? {
                Ok((id, value)) => {
                    line["schema_id"] = json!(id);
                    line["value"] = value;
                }
                Err(e) => line["error"] = json!(e),
            },
        }
        Ok(line)
    }

    /// The record's value, or why it cannot be decoded (`Ok(Err)`); `Err` when the registry
    /// cannot be read.
    pub(crate) async fn decode(
        &self,
        bytes: &[u8],
    ) -> Result<Result<(u32, Json), String>, CliError> {
        Ok(self
            .codec_for(bytes)
            .await?
            .and_then(|codec| Self::decode_with(codec, bytes)))
    }

    /// The codec that knows the record's writer schema (fetched from the registry once), or
    /// why none does (`Ok(Err)`); `Err` when the registry cannot be read.
    pub(crate) async fn codec_for(&self, bytes: &[u8]) -> Result<Result<&Codec, String>, CliError> {
        let codec = match self {
            Decoder::Local(codec) => codec,
            Decoder::Registry(client) => {
                let id = match lienthong_contract::codec::split_frame(bytes) {
                    Ok((id, _)) => id,
                    Err(e) => return Ok(Err(e.to_string())),
                };
                match client.schema(id).await {
                    Ok(_) => {}
                    Err(e) if e.is_unknown_schema_id() => return Ok(Err(e.to_string())),
                    Err(e) => {
                        return Err(CliError::Failed(format!(
                            "{e} (a token goes in {})",
                            crate::REGISTRY_TOKEN_ENV
                        )));
                    }
                }
                client.codec()
            }
        };
        Ok(Ok(codec))
    }

    fn decode_with(codec: &Codec, bytes: &[u8]) -> Result<(u32, Json), String> {
        let (id, value) = codec.decode_value(bytes, None).map_err(|e| e.to_string())?;
        let schema = codec.schema(id).map_err(|e| e.to_string())?;
        Ok((
            id,
            lienthong_contract::json::to_json(&value, schema.schema()),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn start_positions() {
        assert_eq!(parse_start("end").unwrap(), Start::End);
        assert_eq!(parse_start("beginning").unwrap(), Start::Beginning);
        assert_eq!(parse_start("offset:42").unwrap(), Start::Offset(42));
        assert_eq!(
            parse_start("time:2025-11-02T15:00:00+07:00").unwrap(),
            Start::Time(1_762_070_400_000)
        );
        for bad in ["offset:-1", "offset:x", "time:yesterday", "middle"] {
            assert!(matches!(parse_start(bad), Err(CliError::Usage(_))), "{bad}");
        }
    }
}
