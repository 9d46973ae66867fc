//! `lienthong replay <CONNECTOR_TOML>`: rebuild a store from the beginning of the log, showing a
//! progress bar and an ETA, then stop and print the store's digest.
//!
//! It forgets the connector's offsets in the store, runs the connector (the same loop as
//! `lienthong connect`) until the store holds every record that was on the log when the replay
//! started, and stops. Rows already at their version are left as they are (the version guard),
//! so replaying a healthy store changes nothing and a store that lost rows gets them back. To
//! rebuild from nothing, point the config at an empty database and swap it in once the replay
//! is done (`docs/connectors.md`).

use lienthong_telemetry::{say, say_err};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lienthong_connect::{ConnectorConfig, Sink, StoredOffset};
use lienthong_store::AnyStore;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

use crate::CliError;

/// How long reading one partition's end may take.
const READ_BACK: Duration = Duration::from_secs(60);

/// One partition to replay: from its first offset to the offset after its last record.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: i64,
    end: i64,
}

/// Where every partition of the consumed topics starts and ends now.
async fn spans(config: &ConnectorConfig) -> Result<BTreeMap<(String, i32), Span>, CliError> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let kafka = |e: rdkafka::error::KafkaError| {
            CliError::Failed(format!("Kafka at {}: {e}", config.kafka.bootstrap))
        };
        let consumer: BaseConsumer = config.kafka.watermarks().create().map_err(kafka)?;
        let mut partitions = Vec::new();
        for topic in &config.topics {
            let metadata = consumer
                .fetch_metadata(Some(&topic.name), Duration::from_secs(10))
                .map_err(kafka)?;
            let count = metadata
                .topics()
                .first()
                .filter(|t| t.error().is_none())
                .map(|t| t.partitions().len())
                .unwrap_or(0);
            if count == 0 {
                return Err(CliError::Failed(format!(
                    "topic {} does not exist on Kafka at {}",
                    topic.name, config.kafka.bootstrap
                )));
            }
            partitions.extend((0..count as i32).map(|p| (topic.name.clone(), p)));
        }
        let ends = lienthong_bus::record_ends(&config.kafka, &partitions, READ_BACK)
            .map_err(|e| CliError::Failed(e.to_string()))?;
        let mut spans = BTreeMap::new();
        for ((topic, p), end) in ends {
            let Some(end) = end else { continue };
            let (low, _) = consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .map_err(kafka)?;
            // Retention may have moved the start past the end read a moment ago.
            spans.insert(
                (topic, p),
                Span {
                    start: low.min(end),
                    end,
                },
            );
        }
        Ok(spans)
    })
    .await
    .map_err(|e| CliError::Failed(format!("reading the log's ends: {e}")))?
}

/// Records done of `spans`, given what the store holds.
fn done(spans: &BTreeMap<(String, i32), Span>, held: &[StoredOffset]) -> (u64, bool) {
    let mut done = 0u64;
    let mut all = true;
    for ((topic, partition), span) in spans {
        let next = held
            .iter()
            .find(|o| &o.topic == topic && o.partition == *partition)
            .map_or(span.start, |o| o.next);
        done += (next.clamp(span.start, span.end) - span.start) as u64;
        all &= next >= span.end;
    }
    (done, all)
}

fn bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "replay [{elapsed_precise}] [{wide_bar}] {pos}/{len} records ({per_sec}, ETA {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// Run `replay` for the connector in `path`.
pub async fn run_file(path: &Path, shutdown: CancellationToken) -> Result<(), CliError> {
    let config = ConnectorConfig::load(path).map_err(|e| CliError::Usage(e.to_string()))?;
    let spans = spans(&config).await?;
    let total: u64 = spans.values().map(|s| (s.end - s.start) as u64).sum();
    // The store, opened a second time to watch the connector's progress.
    let mut store = AnyStore::open(&config.store)
        .await
        .map_err(|e| CliError::Failed(format!("store: {e}")))?;
    let forgotten = store
        .forget_offsets(&config.name)
        .await
        .map_err(|e| CliError::Failed(format!("store: {e}")))?;
    say_err!(
        "replaying {total} records of {} partition(s) into connector {}'s store (forgot {forgotten} offset(s))",
        spans.len(),
        config.name
    );
    let stop = CancellationToken::new();
    // A consumer group of its own, and no metrics port: the live connector may still be
    // running (against another store), and must keep its partitions and its port.
    let mut replaying = config.clone();
    replaying.group = Some(format!("{}-replay-{}", config.group(), std::process::id()));
    replaying.metrics_listen = None;
    let connector = tokio::spawn(crate::connect::run(replaying, stop.clone()));
    let started = Instant::now();
    let bar = bar(total);
    // Without a terminal the bar stays hidden: print a line every few seconds instead.
    let plain = !std::io::stderr().is_terminal();
    let mut last_line = Instant::now();
    let outcome = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Err(None),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        if connector.is_finished() {
            break Err(Some(
                "the connector stopped before the replay was done".to_string(),
            ));
        }
        let held = match store.offsets(&config.name).await {
            Ok(held) => held,
            Err(e) if e.is_transient() => continue,
            Err(e) => break Err(Some(format!("store: {e}"))),
        };
        let (records, finished) = done(&spans, &held);
        bar.set_position(records);
        if plain && (finished || last_line.elapsed() >= Duration::from_secs(2)) {
            let percent = if total == 0 {
                100.0
            } else {
                records as f64 * 100.0 / total as f64
            };
            say_err!(
                "replay: {records}/{total} records ({percent:.0}%), ETA {} s",
                bar.eta().as_secs()
            );
            last_line = Instant::now();
        }
        if finished {
            break Ok(records);
        }
    };
    bar.finish_and_clear();
    stop.cancel();
    let stopped = connector
        .await
        .map_err(|e| CliError::Failed(format!("the connector task failed: {e}")))?;
    match outcome {
        Ok(records) => {
            stopped.map_err(|e| CliError::Failed(e.to_string()))?;
            let digest = store
                .digest(lienthong_connect::digest::DEFAULT_BUCKETS)
                .await
                .map_err(|e| CliError::Failed(format!("store: {e}")))?;
            say!(
                "replayed {records} records in {:.1} s; the store holds {} rows, digest {}",
                started.elapsed().as_secs_f64(),
                digest.rows,
                digest.overall
            );
            Ok(())
        }
        Err(None) => Err(CliError::Failed(
            "interrupted; the store keeps what it applied, and `replay` starts over".into(),
        )),
        Err(Some(why)) => Err(CliError::Failed(match stopped {
            Err(e) => format!("{why}: {e}"),
            Ok(()) => why,
        })),
    }
}
