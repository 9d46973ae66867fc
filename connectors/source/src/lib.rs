//! The source connector: how the systems agencies already run put events on the bus, without
//! calling the SDK themselves.
//!
//! ```text
//! agency's application ── one DB transaction ──► its own tables + a row in the outbox
//!        (commit notifies the source's channel; polling is the fallback)
//! lienthong source (the one instance holding the outbox's advisory lock):
//!   read the outbox in id order (`outbox`) ─► lanes by topic and aggregate ─► per lane, POST
//!   …/events:batch to the gateway, up to `in_flight` lanes at once (`gateway`: the same
//!   checks, encoding, sealing, signing; one Kafka transaction per request) ─► delete the
//!   accepted rows
//!        │ refused (4xx) ──► split the request until the refused row is alone ──► moved to
//!        │                   the dead-letter table with the gateway's reason
//!        └ database or gateway unreachable ──► back off, send the same rows again
//! ```
//!
//! Nothing committed is lost: a row leaves the outbox only after the gateway answered that
//! Kafka holds it. A crash between that answer and the delete sends the row again with the
//! same event id, and the gateway answers with the original receipt instead of a second
//! event. Rows of one aggregate keep their order: they are read in id order, always share a
//! lane, and a lane sends one request at a time. `docs/sources.md` is the user's guide.

pub mod config;
pub mod error;
pub mod gateway;
pub mod outbox;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lienthong_telemetry::Telemetry;
use lienthong_telemetry::component::{Component, Listener, Readiness, Running};
use prometheus_metrics::Metrics;
use tokio_util::sync::CancellationToken;

pub use crate::config::SourceConfig;
pub use crate::error::SourceError;
use crate::gateway::{Answer, GatewayClient};
use crate::outbox::{Outbox, OutboxRow};

/// Start a source recording into `telemetry`; it runs until `shutdown` or a permanent error.
pub async fn start(
    config: SourceConfig,
    telemetry: &Arc<Telemetry>,
    shutdown: &CancellationToken,
) -> Result<Running<SourceError>, SourceError> {
    let gateway = GatewayClient::new(&config.gateway, config.credentials()?)?;
    let metrics = Metrics::new(telemetry, &config.name);
    let mut component =
        Component::new(config.name.clone(), telemetry, shutdown).readiness(readiness(&metrics));
    if let Some(listen) = &config.metrics_listen {
        let listener = Listener::bind("metrics_listen", listen).await?;
        tracing::info!(address = %listener.addr(), "serving /metrics");
        component = component.serve(listener);
    }
    Ok(component.start(move |stopping| {
        let source = Source {
            config,
            gateway,
            metrics,
            stop: stopping.token(),
            attempt: 0,
        };
        source.run()
    }))
}

/// Ready while this instance publishes the outbox.
fn readiness(metrics: &Metrics) -> Readiness {
    let up = metrics.up.clone();
    Arc::new(move || {
        let problems = if up.get() == 1 {
            Vec::new()
        } else {
            vec![
                "not publishing: connecting to the database, backing off, or standing by \
                 behind another instance (see the log)"
                    .to_string(),
            ]
        };
        Box::pin(async move { problems })
    })
}

struct Source {
    config: SourceConfig,
    gateway: GatewayClient,
    metrics: Metrics,
    stop: CancellationToken,
    /// Consecutive transient failures, for the backoff.
    attempt: u32,
}

/// Whether the work goes on.
enum Flow {
    Continue,
    Stopped,
}

impl Source {
    async fn run(mut self) -> Result<(), SourceError> {
        loop {
            let result = self.session().await;
            self.metrics.up.set(0);
            match result {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() => {
                    self.attempt = self.attempt.saturating_add(1);
                    if let Flow::Stopped = self.back_off(&e, self.attempt, "retrying").await {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Count a transient failure, say so, and wait out the backoff of its `attempt`
    /// (1-based); `Stopped` if asked to stop meanwhile.
    async fn back_off(&self, e: &SourceError, attempt: u32, what: &str) -> Flow {
        self.metrics.errors(e).inc();
        let wait = self.config.retry.backoff(attempt);
        tracing::warn!(error = %e, attempt, ?wait, "{what}");
        self.pause(wait).await
    }

    /// Sleep unless asked to stop.
    async fn pause(&self, wait: Duration) -> Flow {
        tokio::select! {
            () = self.stop.cancelled() => Flow::Stopped,
            () = tokio::time::sleep(wait) => Flow::Continue,
        }
    }

    /// One database connection: stand by until it holds the outbox, then publish from it.
    async fn session(&mut self) -> Result<(), SourceError> {
        let mut outbox = tokio::select! {
            () = self.stop.cancelled() => return Ok(()),
            opened = Outbox::connect(&self.config.database) => opened?,
        };
        let closed = outbox.closed();
        let mut standing_by = false;
        while !outbox.try_lead().await? {
            if !standing_by {
                tracing::info!("another instance holds the outbox; standing by");
                standing_by = true;
            }
            tokio::select! {
                () = self.stop.cancelled() => return Ok(()),
                () = closed.cancelled() => return Err(lost()),
                () = tokio::time::sleep(self.config.poll_interval()) => {}
            }
        }
        tracing::info!(
            outbox = %self.config.database.outbox_table,
            gateway = %self.config.gateway.url,
            "publishing the outbox"
        );
        self.metrics.up.set(1);
        let wake = outbox.wake();
        loop {
            if self.stop.is_cancelled() {
                return Ok(());
            }
            let rows = outbox
                .fetch(self.config.batch.max_rows * self.config.batch.in_flight)
                .await?;
            self.attempt = 0;
            self.metrics
                .lag
                .set(rows.first().map_or(0.0, |r| r.age.as_secs_f64()));
            if rows.is_empty() {
                tokio::select! {
                    () = self.stop.cancelled() => return Ok(()),
                    () = closed.cancelled() => return Err(lost()),
                    () = wake.notified() => {}
                    () = tokio::time::sleep(self.config.poll_interval()) => {}
                }
                continue;
            }
            if let Flow::Stopped = self.publish(&outbox, &rows, Instant::now()).await? {
                return Ok(());
            }
        }
    }

    /// Publish what one read of the outbox returned. Rows are split into lanes by topic and
    /// aggregate (the envelope's `aggregate_id`, the Kafka key), so all rows of one case share
    /// a lane; each lane sends its rows in id order, one request at a time, and up to
    /// `batch.in_flight` lanes send at once. The next read waits until every lane is done.
    async fn publish(
        &self,
        outbox: &Outbox,
        rows: &[OutboxRow],
        read_at: Instant,
    ) -> Result<Flow, SourceError> {
        let lanes = self.config.batch.in_flight;
        let mut units: Vec<((&str, usize), Vec<&OutboxRow>)> = Vec::new();
        for row in rows {
            let (Some(topic), Some(payload)) = (&row.topic, &row.payload) else {
                let what = if row.topic.is_none() {
                    "topic"
                } else {
                    "payload"
                };
                self.dead_letter(
                    outbox,
                    row,
                    0,
                    "malformed",
                    &format!("the row has no {what}"),
                )
                .await?;
                continue;
            };
            let unit = (topic.as_str(), lane(topic, payload, lanes));
            match units.iter_mut().find(|(u, _)| *u == unit) {
                Some((_, list)) => list.push(row),
                None => units.push((unit, vec![row])),
            }
        }
        let done = futures::future::join_all(
            units
                .iter()
                .map(|((topic, _), list)| self.publish_lane(outbox, topic, list, read_at)),
        )
        .await;
        let mut flow = Flow::Continue;
        for result in done {
            if let Flow::Stopped = result? {
                flow = Flow::Stopped;
            }
        }
        Ok(flow)
    }

    /// One lane's rows of one topic, in id order, at most `max_rows` per request.
    async fn publish_lane(
        &self,
        outbox: &Outbox,
        topic: &str,
        list: &[&OutboxRow],
        read_at: Instant,
    ) -> Result<Flow, SourceError> {
        // A refused request is split until the refused row is alone; the halves go in order,
        // so the rows that pass keep theirs.
        let mut parts: Vec<&[&OutboxRow]> = list.chunks(self.config.batch.max_rows).rev().collect();
        while let Some(part) = parts.pop() {
            let Some(answer) = self.post(topic, part, read_at).await? else {
                return Ok(Flow::Stopped);
            };
            match answer {
                Answer::Accepted => {
                    let ids: Vec<i64> = part.iter().map(|r| r.id).collect();
                    outbox.published(&ids).await?;
                    self.metrics.published(topic).inc_by(part.len() as u64);
                    let waited = read_at.elapsed();
                    for row in part {
                        self.metrics
                            .latency
                            .observe((row.age + waited).as_secs_f64());
                    }
                }
                Answer::Refused { .. } if part.len() > 1 => {
                    let (first, second) = part.split_at(part.len() / 2);
                    parts.push(second);
                    parts.push(first);
                }
                Answer::Refused {
                    status,
                    error,
                    reason,
                } => {
                    self.dead_letter(outbox, part[0], status, &error, &reason)
                        .await?
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// Send one request, again and again while the gateway is unreachable; `None` once asked
    /// to stop (the rows stay in the outbox).
    async fn post(
        &self,
        topic: &str,
        part: &[&OutboxRow],
        read_at: Instant,
    ) -> Result<Option<Answer>, SourceError> {
        let mut attempt = 0u32;
        loop {
            match self.gateway.post(topic, part).await {
                Ok(answer) => return Ok(Some(answer)),
                Err(e) if e.is_transient() => {
                    // The rows in hand keep ageing while the gateway is away.
                    let oldest = part.iter().map(|r| r.age).max().unwrap_or_default();
                    let lag = (oldest + read_at.elapsed()).as_secs_f64();
                    if lag > self.metrics.lag.get() {
                        self.metrics.lag.set(lag);
                    }
                    attempt = attempt.saturating_add(1);
                    let what = format!(
                        "the gateway did not take {} rows; sending them again",
                        part.len()
                    );
                    if let Flow::Stopped = self.back_off(&e, attempt, &what).await {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn dead_letter(
        &self,
        outbox: &Outbox,
        row: &OutboxRow,
        status: u16,
        error: &str,
        reason: &str,
    ) -> Result<(), SourceError> {
        if outbox.dead_letter(row.id, status, error, reason).await? {
            self.metrics.dead_lettered(error).inc();
            tracing::warn!(
                id = row.id,
                topic = row.topic.as_deref().unwrap_or(""),
                status,
                error,
                reason,
                "outbox row refused: moved to the dead-letter table"
            );
        }
        Ok(())
    }
}

/// The lane of a row: by topic and the envelope's `aggregate_id` (the Kafka key), so that one
/// aggregate's rows always share a lane. A payload without one (it will be refused) goes to
/// lane 0.
fn lane(topic: &str, payload: &str, lanes: usize) -> usize {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        envelope: Envelope<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        aggregate_id: std::borrow::Cow<'a, str>,
    }
    if lanes <= 1 {
        return 0;
    }
    match serde_json::from_str::<Head<'_>>(payload) {
        Ok(head) => {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            (topic, &*head.envelope.aggregate_id).hash(&mut h);
            (h.finish() % lanes as u64) as usize
        }
        Err(_) => 0,
    }
}

fn lost() -> SourceError {
    SourceError::Database("the connection to the database ended".into())
}

mod prometheus_metrics {
    //! The source's series, labelled once with its name.

    use lienthong_telemetry::Telemetry;
    use prometheus::{Gauge, Histogram, IntCounter, IntGauge};

    use crate::SourceError;

    pub(crate) struct Metrics {
        name: String,
        families: lienthong_telemetry::SourceMetrics,
        pub(crate) lag: Gauge,
        pub(crate) up: IntGauge,
        pub(crate) latency: Histogram,
    }

    impl Metrics {
        pub(crate) fn new(telemetry: &Telemetry, name: &str) -> Metrics {
            let families = telemetry.source.clone();
            Metrics {
                lag: families.lag.with_label_values(&[name]),
                up: families.up.with_label_values(&[name]),
                latency: families.latency.with_label_values(&[name]),
                name: name.to_string(),
                families,
            }
        }

        pub(crate) fn published(&self, topic: &str) -> IntCounter {
            self.families
                .published
                .with_label_values(&[self.name.as_str(), topic])
        }

        pub(crate) fn dead_lettered(&self, error: &str) -> IntCounter {
            self.families
                .dead_lettered
                .with_label_values(&[self.name.as_str(), error])
        }

        pub(crate) fn errors(&self, e: &SourceError) -> IntCounter {
            let kind = match e {
                SourceError::Gateway(_) => "gateway",
                _ => "database",
            };
            self.families
                .errors
                .with_label_values(&[self.name.as_str(), kind])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lane;

    #[test]
    fn one_aggregate_keeps_one_lane_and_aggregates_spread() {
        let row = |case: &str, v: u32| {
            format!(
                r#"{{"envelope": {{"event_id": "e{v}", "aggregate_id": "{case}", "aggregate_version": {v}}}, "event": {{}}}}"#
            )
        };
        let t = "hcm.case.events";
        for case in ["HS-1", "HS-2", "HS-\\u0041"] {
            let first = lane(t, &row(case, 1), 4);
            assert!((2..9).all(|v| lane(t, &row(case, v), 4) == first), "{case}");
        }
        let used: std::collections::HashSet<usize> = (0..200)
            .map(|i| lane(t, &row(&format!("HS-{i}"), 1), 4))
            .collect();
        assert_eq!(used.len(), 4, "200 cases use every lane");
        assert_eq!(lane(t, "not json", 4), 0);
        assert_eq!(lane(t, &row("HS-9", 1), 1), 0);
    }
}
