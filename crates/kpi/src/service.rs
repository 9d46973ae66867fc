//! The thin consumer loop: read both topics from the beginning, decode, hand each event to the
//! engine and the trace index, export the metrics; with `[kpi.receipts]`, a second loop reads
//! the apply receipts (`receipts`). Served as a component (`/metrics`, `/healthz`, `/readyz`,
//! and `/trace/{id}`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use lienthong_contract::codec::split_frame;
use lienthong_contract::events::{AdminUnitRecord, CaseEvent, FeedbackEvent, ProcedureRecord};
use lienthong_contract::{Catalog, Codec};
use lienthong_registry::client::{Credentials, RegistryClient};
use lienthong_telemetry::component::{Component, Listener, Readiness, Running};
use lienthong_telemetry::{KafkaClientContext, Telemetry};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, Stream};
use crate::export::Exporter;
use crate::status::Board;
use crate::trace::{At, TraceIndex};
use crate::{KpiConfig, KpiError};

/// How long a metadata or watermark request may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// Start the engine: serve `telemetry` at `/metrics` (with `/healthz` and `/readyz`) on
/// `listener`, rebuild the indicators from the beginning of both topics, then keep them
/// current until `shutdown` is cancelled or [`Running::stop`]. `/readyz` answers 503 until the
/// state is rebuilt, and the indicators are hidden from `/metrics` until then
/// ([`Telemetry::hide_indicators`]). A configuration mistake is refused here, before anything
/// runs.
pub fn start(
    config: KpiConfig,
    listener: Listener,
    telemetry: &Arc<Telemetry>,
    shutdown: &CancellationToken,
) -> Result<Running<KpiError>, KpiError> {
    config.validate()?;
    let engine = Engine::new(config.calendar()?, config.reference()?);
    let decoder = Decoder::new(&config)?;
    let exporter = Exporter::new(
        telemetry.kpi.clone(),
        &config.case_topic,
        &config.feedback_topic,
    );
    telemetry.hide_indicators(true);
    let readiness: Readiness = {
        let telemetry = Arc::clone(telemetry);
        Arc::new(move || {
            let rebuilding = telemetry.indicators_hidden();
            Box::pin(async move {
                if rebuilding {
                    vec!["rebuilding the indicators from the beginning of the log".to_string()]
                } else {
                    Vec::new()
                }
            })
        })
    };
    let recording = Arc::clone(telemetry);
    let index = Arc::new(RwLock::new(TraceIndex::default()));
    let board = Board::new(
        Arc::clone(telemetry),
        Arc::clone(&index),
        engine.calendar().utc_offset_minutes(),
    );
    let routes = {
        let (trace, board) = (
            trace_routes(Arc::clone(&index), Arc::clone(telemetry)),
            board.clone(),
        );
        move |router| board.routes(trace(router))
    };
    Ok(Component::new("kpi", telemetry, shutdown)
        .readiness(readiness)
        .serve_with(listener, routes)
        .start(move |stopping| async move {
            let events = consume(
                &config,
                engine,
                decoder,
                exporter,
                &board,
                &recording,
                stopping.token(),
            );
            let receipts = async {
                match &config.receipts {
                    Some(watch) => {
                        crate::receipts::watch(
                            &config,
                            watch,
                            Arc::clone(&index),
                            &recording,
                            stopping.token(),
                        )
                        .await
                    }
                    None => Ok(()),
                }
            };
            tokio::try_join!(events, receipts).map(|_| ())
        }))
}

/// `GET /trace/{id}`: a case's events and who applied them (JSON, [`crate::trace::Trace`]);
/// 404 for an id no event carries, 503 while the log is being read from the beginning.
fn trace_routes(
    index: Arc<RwLock<TraceIndex>>,
    telemetry: Arc<Telemetry>,
) -> impl FnOnce(axum::Router) -> axum::Router + Send + 'static {
    use axum::extract::Path;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    move |router| {
        router.route(
            "/trace/{id}",
            axum::routing::get(move |Path(id): Path<String>| async move {
                let response: Response = if telemetry.indicators_hidden() {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the engine is reading the log from the beginning",
                    )
                        .into_response()
                } else {
                    let trace = index.read().unwrap_or_else(|p| p.into_inner()).trace(&id);
                    match trace {
                        Some(t) => axum::Json(t).into_response(),
                        None => (
                            StatusCode::NOT_FOUND,
                            format!("no event of case or correlation id {id} has been read"),
                        )
                            .into_response(),
                    }
                };
                response
            }),
        )
    }
}

/// Writer schemas by id: the catalog's local ids, or a registry fetched on first sight.
enum Decoder {
    Local(Codec),
    Registry(RegistryClient),
}

impl Decoder {
    fn new(config: &KpiConfig) -> Result<Decoder, KpiError> {
        match &config.registry_url {
            Some(url) => Ok(Decoder::Registry(RegistryClient::new(
                url,
                Credentials::from_config(
                    config.registry_agency.as_deref(),
                    config.registry_token.as_deref(),
                    config.registry_token_file.as_deref(),
                )
                .map_err(|e| KpiError::Config(format!("kpi: {e}")))?,
                Codec::new(),
            )?)),
            None => {
                let catalog = Catalog::load(&config.schemas_dir)?;
                Ok(Decoder::Local(Codec::from_catalog(&catalog)?))
            }
        }
    }

    /// [`Decoder::prepare`], waiting while the registry cannot be read (skipping would lose
    /// the record); `false` if `shutdown` came first.
    async fn ready_for(&self, payload: &[u8], shutdown: &CancellationToken) -> bool {
        while let Err(e) = self.prepare(payload).await {
            tracing::warn!(error = %e, "schema registry unavailable; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        true
    }

    fn codec(&self) -> &Codec {
        match self {
            Decoder::Local(c) => c,
            Decoder::Registry(r) => r.codec(),
        }
    }

    /// Make sure the writer schema of `payload` is known. `Err` for anything the registry
    /// may still fix (unreachable, the credential refused, a server error); an id the
    /// registry says it does not know is left for decoding to report.
    async fn prepare(&self, payload: &[u8]) -> Result<(), KpiError> {
        let Decoder::Registry(client) = self else {
            return Ok(());
        };
        let Ok((id, _)) = split_frame(payload) else {
            return Ok(());
        };
        if client.codec().schema(id).is_ok() {
            return Ok(());
        }
        match client.schema(id).await {
            Ok(_) => Ok(()),
            // The registry does not know the id, or holds no usable Avro schema under it:
            // the event's fault, left for decoding to count as undecodable.
            Err(e @ lienthong_registry::RegistryError::InvalidSchema(_)) => {
                tracing::warn!(id, error = %e, "writer schema in the registry is not usable");
                Ok(())
            }
            Err(e) if e.is_unknown_schema_id() => {
                tracing::warn!(id, error = %e, "writer schema not in the registry");
                Ok(())
            }
            // Unreachable, a refused credential, a server error: waited for, never skipped.
            Err(e) => Err(e.into()),
        }
    }
}

/// Per partition, the offset the engine must reach to have read what was on the log at start.
pub(crate) struct Progress {
    remaining: HashMap<(String, i32), i64>,
}

impl Progress {
    fn done(&self) -> bool {
        self.remaining.is_empty()
    }

    fn advance(&mut self, topic: &str, partition: i32, offset: i64) {
        let key = (topic.to_string(), partition);
        if let Some(end) = self.remaining.get(&key)
            && offset + 1 >= *end
        {
            self.remaining.remove(&key);
        }
    }

    /// Partitions whose consumer position reached the end seen at start are done, even if
    /// their last records were transaction markers (which a consumer never receives).
    fn settle(&mut self, positions: &TopicPartitionList) {
        for e in positions.elements() {
            if let Offset::Offset(position) = e.offset() {
                self.advance(e.topic(), e.partition(), position - 1);
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KpiError> + Send + 'static,
) -> Result<T, KpiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KpiError::Internal(format!("a blocking Kafka call panicked: {e}")))?
}

/// Partitions of `topic` with their (low, high) watermarks; `None` while the topic does not
/// exist or has no partitions yet.
async fn describe(
    consumer: &Arc<StreamConsumer<KafkaClientContext>>,
    topic: &str,
) -> Result<Option<Vec<(i32, i64, i64)>>, KpiError> {
    let c = Arc::clone(consumer);
    let t = topic.to_string();
    blocking(move || {
        let md = c.fetch_metadata(Some(&t), KAFKA_TIMEOUT)?;
        let Some(partitions) = md
            .topics()
            .iter()
            .find(|m| m.name() == t && m.error().is_none())
            .map(|m| m.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
            .filter(|p| !p.is_empty())
        else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(partitions.len());
        for p in partitions {
            let (low, high) = c.fetch_watermarks(&t, p, KAFKA_TIMEOUT)?;
            out.push((p, low, high));
        }
        Ok(Some(out))
    })
    .await
}

/// Assign every partition of both topics from the beginning; returns the end offsets seen.
/// Waits (retrying every second) for topics that do not exist yet and for a broker that does
/// not answer; `None` if `shutdown` came first.
pub(crate) async fn assign(
    consumer: &Arc<StreamConsumer<KafkaClientContext>>,
    topics: &[String],
    shutdown: &CancellationToken,
) -> Result<Option<Progress>, KpiError> {
    assign_with(consumer, topics, &[], shutdown).await
}

/// [`assign`], with `optional` too if it exists now (it is not waited for).
async fn assign_with(
    consumer: &Arc<StreamConsumer<KafkaClientContext>>,
    topics: &[String],
    optional: &[&str],
    shutdown: &CancellationToken,
) -> Result<Option<Progress>, KpiError> {
    let mut tpl = TopicPartitionList::new();
    let mut remaining = HashMap::new();
    let mut wanted: Vec<(&str, bool)> = topics.iter().map(|t| (t.as_str(), true)).collect();
    wanted.extend(optional.iter().map(|t| (*t, false)));
    for (topic, required) in wanted {
        let partitions = loop {
            match describe(consumer, topic).await {
                Ok(Some(p)) => break p,
                Ok(None) if !required => {
                    tracing::warn!(%topic, "topic does not exist; going on without it");
                    break Vec::new();
                }
                Ok(None) => tracing::warn!(%topic, "topic does not exist yet; waiting"),
                Err(e) => tracing::warn!(%topic, error = %e, "cannot describe topic; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        };
        for (p, low, high) in partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            if high > low {
                remaining.insert((topic.to_string(), p), high);
            }
        }
    }
    consumer.assign(&tpl)?;
    Ok(Some(Progress { remaining }))
}

/// A consumer that reads by assignment, with no group membership and no commits: the engine
/// always reads its topics from the beginning.
pub(crate) fn reader(
    config: &KpiConfig,
    telemetry: &Arc<Telemetry>,
) -> Result<Arc<StreamConsumer<KafkaClientContext>>, KpiError> {
    let kafka = config
        .kafka
        .as_ref()
        .ok_or_else(|| KpiError::Config("kafka is not set".into()))?;
    Ok(Arc::new(
        kafka
            .consumer("lienthong-kpi-unused")
            .create_with_context(KafkaClientContext::new(telemetry, "kpi"))?,
    ))
}

async fn consume(
    config: &KpiConfig,
    mut engine: Engine,
    decoder: Decoder,
    mut exporter: Exporter,
    board: &Board,
    telemetry: &Arc<Telemetry>,
    shutdown: CancellationToken,
) -> Result<(), KpiError> {
    let consumer = reader(config, telemetry)?;
    let topics = [config.case_topic.clone(), config.feedback_topic.clone()];
    let reference: Vec<&str> = [config.units_topic.as_str(), &config.procedures_topic]
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect();
    let Some(mut progress) = assign_with(&consumer, &topics, &reference, &shutdown).await? else {
        return Ok(());
    };
    let started = Instant::now();
    let interval = Duration::from_millis(config.export_interval_ms);
    let mut caught_up = progress.done();
    let calendar = engine.calendar().clone();
    let today = || calendar.local_day(now_millis());
    exporter.export(&mut engine, today(), caught_up);
    board.set_trend(engine.month_trend(today()));
    telemetry.hide_indicators(!caught_up);
    let mut last_export = Instant::now();
    let mut read = 0u64;
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = tokio::time::timeout(interval, consumer.recv()) => next,
        };
        match next {
            // Nothing came within the interval: every partition may be at its end. A partition
            // whose last offset is a transaction marker (the gateway writes in transactions)
            // ends before its last offset, which no record can show: the position does.
            Err(_) if !caught_up => match consumer.position() {
                Ok(positions) => progress.settle(&positions),
                Err(e) => tracing::warn!(error = %e, "reading the consumer's positions"),
            },
            Err(_) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Kafka consumer error");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Ok(message)) if reference.contains(&message.topic()) => {
                let payload = message.payload().unwrap_or_default();
                if !decoder.ready_for(payload, &shutdown).await {
                    return Ok(());
                }
                if let Err(e) = name(&mut exporter, config, decoder.codec(), &message) {
                    tracing::warn!(topic = message.topic(), offset = message.offset(), error = %e, "a reference record that cannot be read; its name is not used");
                }
                progress.advance(message.topic(), message.partition(), message.offset());
            }
            Ok(Ok(message)) => {
                read += 1;
                let stream = if message.topic() == config.case_topic {
                    Stream::Case
                } else {
                    Stream::Feedback
                };
                let payload = message.payload().unwrap_or_default();
                // A registry that is down is waited for: skipping would lose the event.
                if !decoder.ready_for(payload, &shutdown).await {
                    return Ok(());
                }
                let at = At {
                    topic: message.topic(),
                    partition: message.partition(),
                    offset: message.offset(),
                    published_ms: message.timestamp().to_millis().unwrap_or(0),
                };
                apply(
                    &mut engine,
                    board.index(),
                    decoder.codec(),
                    stream,
                    at,
                    payload,
                );
                progress.advance(message.topic(), message.partition(), message.offset());
            }
        }
        let just_caught_up = !caught_up && progress.done();
        if just_caught_up {
            caught_up = true;
            tracing::info!(
                records = read,
                cases = engine.cases_tracked(),
                secs = started.elapsed().as_secs_f64(),
                "KPI state rebuilt from the beginning of the log"
            );
        }
        if just_caught_up || last_export.elapsed() >= interval {
            exporter.export(&mut engine, today(), caught_up);
            board.set_trend(engine.month_trend(today()));
            last_export = Instant::now();
            // Only now may a scrape see the indicators: the export above holds the full state.
            telemetry.hide_indicators(!caught_up);
        }
    }
    exporter.export(&mut engine, today(), caught_up);
    Ok(())
}

/// A units or procedures reference record: the unit's or procedure's name for the exporter.
fn name(
    exporter: &mut Exporter,
    config: &KpiConfig,
    codec: &Codec,
    message: &rdkafka::message::BorrowedMessage<'_>,
) -> lienthong_contract::Result<()> {
    let payload = message.payload().unwrap_or_default();
    if message.topic() == config.units_topic {
        let (_, record) = codec.decode::<AdminUnitRecord<&str>>(payload)?;
        exporter.name_unit(record.unit.code, record.unit.name, record.unit.kind);
    } else {
        let (_, record) = codec.decode::<ProcedureRecord<&str>>(payload)?;
        exporter.name_procedure(record.procedure.code, record.procedure.name);
    }
    Ok(())
}

/// Decode one record and apply it to the engine and the trace index (locked only for that, so
/// that `/trace` waits for no decoding); an undecodable one is an anomaly.
fn apply(
    engine: &mut Engine,
    index: &RwLock<TraceIndex>,
    codec: &Codec,
    stream: Stream,
    at: At<'_>,
    payload: &[u8],
) {
    match stream {
        Stream::Case => match codec.decode::<CaseEvent<&str>>(payload) {
            Ok((_, event)) => {
                engine.apply_case(&event);
                index
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .case_event(at, &event);
            }
            Err(_) => {
                engine.undecodable(stream);
            }
        },
        Stream::Feedback => match codec.decode::<FeedbackEvent<&str>>(payload) {
            Ok((_, event)) => {
                engine.apply_feedback(&event);
                index
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .feedback_event(at, &event);
            }
            Err(_) => {
                engine.undecodable(stream);
            }
        },
    }
}

/// Now, in ms since the epoch.
pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_ending_in_a_transaction_marker_is_done_by_its_position() {
        // Records at 0..=4, the commit marker at 5: the end seen at start is 6, the last
        // record a consumer receives is 4.
        let mut progress = Progress {
            remaining: HashMap::from([(("hcm.case.events".to_string(), 5), 6)]),
        };
        progress.advance("hcm.case.events", 5, 4);
        assert!(!progress.done(), "the last record is not the end");
        let mut positions = TopicPartitionList::new();
        positions
            .add_partition_offset("hcm.case.events", 5, Offset::Offset(5))
            .unwrap();
        progress.settle(&positions);
        assert!(
            !progress.done(),
            "a position before the marker is not the end"
        );
        let mut positions = TopicPartitionList::new();
        positions
            .add_partition_offset("hcm.case.events", 5, Offset::Offset(6))
            .unwrap();
        progress.settle(&positions);
        assert!(progress.done(), "the position past the marker is");
    }

    #[test]
    fn indicators_are_hidden_while_rebuilding() {
        let telemetry = Telemetry::new("kpi").unwrap();
        telemetry
            .kpi
            .unit_received
            .with_label_values(&["26734", "online"])
            .inc_by(7);
        telemetry
            .kpi
            .caught_up
            .with_label_values(&[] as &[&str])
            .set(0);
        telemetry.hide_indicators(true);
        let hidden = telemetry.render();
        assert!(
            !hidden.contains("lienthong_kpi_unit_cases_received_total"),
            "{hidden}"
        );
        assert!(hidden.contains("lienthong_kpi_caught_up 0"), "{hidden}");
        assert!(hidden.contains("lienthong_build_info{"), "{hidden}");
        telemetry.hide_indicators(false);
        let full = telemetry.render();
        assert!(full.contains(
            "lienthong_kpi_unit_cases_received_total{channel=\"online\",unit=\"26734\"} 7"
        ));
    }
}
