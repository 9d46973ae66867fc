//! Telemetry: how operators see the bus. Every long-running lienthong component (registry,
//! gateway, each sink connector, the KPI engine) records into one [`Telemetry`] per process
//! and serves it at `/metrics` for Prometheus to scrape, beside `/healthz` and `/readyz`, in the
//! one shape every component has ([`component`]: configured, started, a running handle with its
//! address, health and graceful stop).
//!
//! The families are declared once, in [`catalog`]; `docs/metrics.md` is generated from that
//! table, and the dashboards and alert rules under `ops/` are checked against it. Components
//! reach their families through typed fields ([`Telemetry::connector`], [`Telemetry::gateway`],
//! [`Telemetry::kpi`], …) so a name cannot be mistyped at the call site. The lines a command
//! prints for its operator go through [`say!`] and [`say_err!`].

/// Print a line for the operator on stdout. A closed stdout (`lienthong … | head`, or a parent
/// that went away) neither stops the command nor panics, as `println!` would: the line is
/// dropped. (`tail`, whose whole job is its output, stops on a write error instead.) Every
/// command of `lienthong` and the demo print their lines for the operator with it.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// [`say!`] for standard error: warnings and errors for the operator. A closed stderr drops the
/// line instead of panicking, as `eprintln!` would.
#[macro_export]
macro_rules! say_err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

pub mod catalog;
pub mod component;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::catalog::{Kind, MetricSpec};

/// Errors of this crate. All are permanent: they mean the catalog and the code disagree.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A family could not be created or registered.
    #[error("metric {name}: {source}")]
    Register {
        /// The metric.
        name: &'static str,
        /// Why.
        #[source]
        source: prometheus::Error,
    },
    /// A family was declared with one type and used as another.
    #[error("metric {0} is declared as a {1}, used as another type")]
    WrongKind(&'static str, &'static str),
    /// A component's listen address is not an address.
    #[error("{key} {listen:?}: not an address (host:port)")]
    NotAnAddress {
        /// The setting.
        key: String,
        /// Its value.
        listen: String,
    },
    /// A component's listen address could not be bound (in use, not this host's, no right).
    #[error("{key}: cannot listen on {listen}: {source}")]
    Listen {
        /// The setting.
        key: String,
        /// Its value.
        listen: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl TelemetryError {
    /// Never worth retrying.
    pub fn is_transient(&self) -> bool {
        false
    }

    /// A mistake in the configuration (exit 2), rather than in the code or the environment.
    pub fn is_config(&self) -> bool {
        matches!(self, TelemetryError::NotAnAddress { .. })
    }
}

type Result<T> = std::result::Result<T, TelemetryError>;

/// Families of the producing side.
#[derive(Clone)]
pub struct BusMetrics {
    /// [`catalog::EVENTS_PRODUCED`].
    pub events_produced: IntCounterVec,
    /// [`catalog::KAFKA_CLIENT_ERRORS`].
    pub kafka_client_errors: IntCounterVec,
}

/// Families of the gateway.
#[derive(Clone)]
pub struct GatewayMetrics {
    /// [`catalog::GATEWAY_REQUESTS`].
    pub requests: IntCounterVec,
    /// [`catalog::GATEWAY_REQUEST_DURATION`].
    pub request_duration: HistogramVec,
    /// [`catalog::GATEWAY_EVENTS_REJECTED`].
    pub events_rejected: IntCounterVec,
    /// [`catalog::GATEWAY_DUPLICATES`].
    pub duplicates: IntCounterVec,
}

/// Families of the schema registry.
#[derive(Clone)]
pub struct RegistryMetrics {
    /// [`catalog::REGISTRY_OPERATIONS`].
    pub operations: IntCounterVec,
}

/// Families of sink connectors.
#[derive(Clone)]
pub struct ConnectorMetrics {
    /// [`catalog::CONNECTOR_EVENTS_CONSUMED`].
    pub consumed: IntCounterVec,
    /// [`catalog::CONNECTOR_EVENTS_APPLIED`].
    pub applied: IntCounterVec,
    /// [`catalog::CONNECTOR_EVENTS_FILTERED`].
    pub filtered: IntCounterVec,
    /// [`catalog::CONNECTOR_EVENTS_FAILED`].
    pub failed: IntCounterVec,
    /// [`catalog::CONNECTOR_EVENTS_DEAD_LETTERED`].
    pub dead_lettered: IntCounterVec,
    /// [`catalog::CONNECTOR_RETRIES`].
    pub retries: IntCounterVec,
    /// [`catalog::CONNECTOR_RETRYING`].
    pub retrying: IntGaugeVec,
    /// [`catalog::CONNECTOR_UP`].
    pub up: IntGaugeVec,
    /// [`catalog::CONNECTOR_BATCH_SIZE`].
    pub batch_size: HistogramVec,
    /// [`catalog::CONNECTOR_BATCH_DURATION`].
    pub batch_duration: HistogramVec,
    /// [`catalog::CONNECTOR_END_TO_END_LATENCY`].
    pub end_to_end_latency: HistogramVec,
    /// [`catalog::CONNECTOR_CONSUMER_LAG`].
    pub consumer_lag: IntGaugeVec,
    /// [`catalog::CONNECTOR_RECEIPTS`].
    pub receipts: IntCounterVec,
    /// [`catalog::CONNECTOR_DIVERGENT_ROWS`].
    pub divergent_rows: IntGaugeVec,
    /// [`catalog::CONNECTOR_VERIFIED_TIMESTAMP`].
    pub verified_timestamp: IntGaugeVec,
    /// [`catalog::CONNECTOR_VERIFICATIONS`].
    pub verifications: IntCounterVec,
    /// [`catalog::CONNECTOR_APPLIED_TIMESTAMP`].
    pub applied_timestamp: IntGaugeVec,
}

/// Families of source connectors (`lienthong source`).
#[derive(Clone)]
pub struct SourceMetrics {
    /// [`catalog::SOURCE_ROWS_PUBLISHED`].
    pub published: IntCounterVec,
    /// [`catalog::SOURCE_ROWS_DEAD_LETTERED`].
    pub dead_lettered: IntCounterVec,
    /// [`catalog::SOURCE_ERRORS`].
    pub errors: IntCounterVec,
    /// [`catalog::SOURCE_LAG`].
    pub lag: GaugeVec,
    /// [`catalog::SOURCE_UP`].
    pub up: IntGaugeVec,
    /// [`catalog::SOURCE_LATENCY`].
    pub latency: HistogramVec,
}

/// Families of the KPI engine (service-chain indicators), in two views: by unit and by
/// procedure (top-N codes and `other`, with the procedure's online level).
#[derive(Clone)]
pub struct KpiMetrics {
    /// [`catalog::KPI_UNIT_RECEIVED`].
    pub unit_received: IntCounterVec,
    /// [`catalog::KPI_UNIT_END_TO_END_ONLINE`].
    pub unit_end_to_end_online: IntCounterVec,
    /// [`catalog::KPI_UNIT_END_TO_END_ONLINE_RATIO`].
    pub unit_end_to_end_online_ratio: GaugeVec,
    /// [`catalog::KPI_UNIT_ACCEPTED`].
    pub unit_accepted: IntCounterVec,
    /// [`catalog::KPI_UNIT_COMPLETED`].
    pub unit_completed: IntCounterVec,
    /// [`catalog::KPI_UNIT_ENDED`].
    pub unit_ended: IntCounterVec,
    /// [`catalog::KPI_UNIT_OPEN`].
    pub unit_open: IntGaugeVec,
    /// [`catalog::KPI_UNIT_OPEN_OVERDUE`].
    pub unit_open_overdue: IntGaugeVec,
    /// [`catalog::KPI_UNIT_OPEN_OVERDUE_RATIO`].
    pub unit_open_overdue_ratio: GaugeVec,
    /// [`catalog::KPI_UNIT_SUPPLEMENTS`].
    pub unit_supplements: IntCounterVec,
    /// [`catalog::KPI_UNIT_PROCESSING_TIME`].
    pub unit_processing_time: HistogramVec,
    /// [`catalog::KPI_UNIT_FEEDBACK_RECEIVED`].
    pub unit_feedback_received: IntCounterVec,
    /// [`catalog::KPI_UNIT_FEEDBACK_RESOLVED`].
    pub unit_feedback_resolved: IntCounterVec,
    /// [`catalog::KPI_UNIT_FEEDBACK_SATISFACTION`].
    pub unit_feedback_satisfaction: GaugeVec,
    /// [`catalog::KPI_UNIT_OUTSIDE_HOME`].
    pub unit_outside_home: IntCounterVec,
    /// [`catalog::KPI_UNIT_TRANSFERS`].
    pub unit_transfers: IntCounterVec,
    /// [`catalog::KPI_UNIT_HOLDING`].
    pub unit_holding: HistogramVec,
    /// [`catalog::KPI_UNIT_PROCESSING_WORKING_DAYS`].
    pub unit_processing_working_days: HistogramVec,
    /// [`catalog::KPI_UNIT_FEEDBACK_RATINGS`].
    pub unit_feedback_ratings: IntCounterVec,
    /// [`catalog::KPI_UNIT_FEEDBACK_RATING_POINTS`].
    pub unit_feedback_rating_points: IntCounterVec,
    /// [`catalog::KPI_UNIT_INFO`].
    pub unit_info: IntGaugeVec,
    /// [`catalog::KPI_PROCEDURE_INFO`].
    pub procedure_info: IntGaugeVec,
    /// [`catalog::KPI_UNIT_FEEDBACK_RECEIVED_IN_PERIOD`].
    pub unit_feedback_received_in_period: IntGaugeVec,
    /// [`catalog::KPI_UNIT_FEEDBACK_RESOLVED_IN_PERIOD`].
    pub unit_feedback_resolved_in_period: IntGaugeVec,
    /// [`catalog::KPI_UNIT_RECEIVED_IN_PERIOD`].
    pub unit_received_in_period: IntGaugeVec,
    /// [`catalog::KPI_UNIT_COMPLETED_IN_PERIOD`].
    pub unit_completed_in_period: IntGaugeVec,
    /// [`catalog::KPI_UNIT_FEEDBACK_OPEN`].
    pub unit_feedback_open: IntGaugeVec,
    /// [`catalog::KPI_UNIT_FEEDBACK_OPEN_OVERDUE`].
    pub unit_feedback_open_overdue: IntGaugeVec,
    /// [`catalog::KPI_UNIT_FEEDBACK_HANDLING`].
    pub unit_feedback_handling: HistogramVec,
    /// [`catalog::KPI_PROCEDURE_RECEIVED`].
    pub procedure_received: IntCounterVec,
    /// [`catalog::KPI_PROCEDURE_ACCEPTED`].
    pub procedure_accepted: IntCounterVec,
    /// [`catalog::KPI_PROCEDURE_COMPLETED`].
    pub procedure_completed: IntCounterVec,
    /// [`catalog::KPI_PROCEDURE_OPEN`].
    pub procedure_open: IntGaugeVec,
    /// [`catalog::KPI_PROCEDURE_OPEN_OVERDUE`].
    pub procedure_open_overdue: IntGaugeVec,
    /// [`catalog::KPI_PROCEDURE_END_TO_END_ONLINE_RATIO`].
    pub procedure_end_to_end_online_ratio: GaugeVec,
    /// [`catalog::KPI_PROCEDURE_SUPPLEMENTS`].
    pub procedure_supplements: IntCounterVec,
    /// [`catalog::KPI_PROCEDURE_PROCESSING_TIME`].
    pub procedure_processing_time: HistogramVec,
    /// [`catalog::KPI_EVENTS`].
    pub events: IntCounterVec,
    /// [`catalog::KPI_ANOMALIES`].
    pub anomalies: IntCounterVec,
    /// [`catalog::KPI_CAUGHT_UP`].
    pub caught_up: IntGaugeVec,
    /// [`catalog::KPI_CASES_TRACKED`].
    pub cases_tracked: IntGaugeVec,
    /// [`catalog::SYNC_DELAY`].
    pub sync_delay: HistogramVec,
    /// [`catalog::RECEIPTS_READ`].
    pub receipts: IntCounterVec,
    /// [`catalog::RECEIPT_GAPS`].
    pub receipt_gaps: IntCounterVec,
}

/// One process's metrics: a Prometheus registry holding every family of the catalog.
pub struct Telemetry {
    registry: Registry,
    /// Producing side.
    pub bus: BusMetrics,
    /// Gateway.
    pub gateway: GatewayMetrics,
    /// Schema registry.
    pub registry_ops: RegistryMetrics,
    /// Sink connectors.
    pub connector: ConnectorMetrics,
    /// Source connectors.
    pub source: SourceMetrics,
    /// KPI engine.
    pub kpi: KpiMetrics,
    /// Whether the KPI indicators are left out of [`Telemetry::render`] (while rebuilt).
    indicators_hidden: AtomicBool,
}

impl Telemetry {
    /// A registry with every catalog family, and the build-info gauge set for `component`.
    pub fn new(component: &str) -> Result<Arc<Telemetry>> {
        let registry = Registry::new();
        let r = &registry;
        let build_info = gauge(r, &catalog::BUILD_INFO)?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), component])
            .set(1);
        let bus = BusMetrics {
            events_produced: counter(r, &catalog::EVENTS_PRODUCED)?,
            kafka_client_errors: counter(r, &catalog::KAFKA_CLIENT_ERRORS)?,
        };
        let gateway = GatewayMetrics {
            requests: counter(r, &catalog::GATEWAY_REQUESTS)?,
            request_duration: histogram(r, &catalog::GATEWAY_REQUEST_DURATION)?,
            events_rejected: counter(r, &catalog::GATEWAY_EVENTS_REJECTED)?,
            duplicates: counter(r, &catalog::GATEWAY_DUPLICATES)?,
        };
        let registry_ops = RegistryMetrics {
            operations: counter(r, &catalog::REGISTRY_OPERATIONS)?,
        };
        let connector = ConnectorMetrics {
            consumed: counter(r, &catalog::CONNECTOR_EVENTS_CONSUMED)?,
            applied: counter(r, &catalog::CONNECTOR_EVENTS_APPLIED)?,
            filtered: counter(r, &catalog::CONNECTOR_EVENTS_FILTERED)?,
            failed: counter(r, &catalog::CONNECTOR_EVENTS_FAILED)?,
            dead_lettered: counter(r, &catalog::CONNECTOR_EVENTS_DEAD_LETTERED)?,
            retries: counter(r, &catalog::CONNECTOR_RETRIES)?,
            retrying: gauge(r, &catalog::CONNECTOR_RETRYING)?,
            up: gauge(r, &catalog::CONNECTOR_UP)?,
            batch_size: histogram(r, &catalog::CONNECTOR_BATCH_SIZE)?,
            batch_duration: histogram(r, &catalog::CONNECTOR_BATCH_DURATION)?,
            end_to_end_latency: histogram(r, &catalog::CONNECTOR_END_TO_END_LATENCY)?,
            consumer_lag: gauge(r, &catalog::CONNECTOR_CONSUMER_LAG)?,
            receipts: counter(r, &catalog::CONNECTOR_RECEIPTS)?,
            divergent_rows: gauge(r, &catalog::CONNECTOR_DIVERGENT_ROWS)?,
            verified_timestamp: gauge(r, &catalog::CONNECTOR_VERIFIED_TIMESTAMP)?,
            applied_timestamp: gauge(r, &catalog::CONNECTOR_APPLIED_TIMESTAMP)?,
            verifications: counter(r, &catalog::CONNECTOR_VERIFICATIONS)?,
        };
        let source = SourceMetrics {
            published: counter(r, &catalog::SOURCE_ROWS_PUBLISHED)?,
            dead_lettered: counter(r, &catalog::SOURCE_ROWS_DEAD_LETTERED)?,
            errors: counter(r, &catalog::SOURCE_ERRORS)?,
            lag: float_gauge(r, &catalog::SOURCE_LAG)?,
            up: gauge(r, &catalog::SOURCE_UP)?,
            latency: histogram(r, &catalog::SOURCE_LATENCY)?,
        };
        let kpi = KpiMetrics {
            unit_received: counter(r, &catalog::KPI_UNIT_RECEIVED)?,
            unit_end_to_end_online: counter(r, &catalog::KPI_UNIT_END_TO_END_ONLINE)?,
            unit_end_to_end_online_ratio: float_gauge(
                r,
                &catalog::KPI_UNIT_END_TO_END_ONLINE_RATIO,
            )?,
            unit_accepted: counter(r, &catalog::KPI_UNIT_ACCEPTED)?,
            unit_completed: counter(r, &catalog::KPI_UNIT_COMPLETED)?,
            unit_ended: counter(r, &catalog::KPI_UNIT_ENDED)?,
            unit_open: gauge(r, &catalog::KPI_UNIT_OPEN)?,
            unit_open_overdue: gauge(r, &catalog::KPI_UNIT_OPEN_OVERDUE)?,
            unit_open_overdue_ratio: float_gauge(r, &catalog::KPI_UNIT_OPEN_OVERDUE_RATIO)?,
            unit_supplements: counter(r, &catalog::KPI_UNIT_SUPPLEMENTS)?,
            unit_processing_time: histogram(r, &catalog::KPI_UNIT_PROCESSING_TIME)?,
            unit_feedback_received: counter(r, &catalog::KPI_UNIT_FEEDBACK_RECEIVED)?,
            unit_feedback_resolved: counter(r, &catalog::KPI_UNIT_FEEDBACK_RESOLVED)?,
            unit_feedback_satisfaction: float_gauge(r, &catalog::KPI_UNIT_FEEDBACK_SATISFACTION)?,
            unit_outside_home: counter(r, &catalog::KPI_UNIT_OUTSIDE_HOME)?,
            unit_transfers: counter(r, &catalog::KPI_UNIT_TRANSFERS)?,
            unit_holding: histogram(r, &catalog::KPI_UNIT_HOLDING)?,
            unit_processing_working_days: histogram(r, &catalog::KPI_UNIT_PROCESSING_WORKING_DAYS)?,
            unit_feedback_ratings: counter(r, &catalog::KPI_UNIT_FEEDBACK_RATINGS)?,
            unit_feedback_rating_points: counter(r, &catalog::KPI_UNIT_FEEDBACK_RATING_POINTS)?,
            unit_info: gauge(r, &catalog::KPI_UNIT_INFO)?,
            procedure_info: gauge(r, &catalog::KPI_PROCEDURE_INFO)?,
            unit_feedback_received_in_period: gauge(
                r,
                &catalog::KPI_UNIT_FEEDBACK_RECEIVED_IN_PERIOD,
            )?,
            unit_feedback_resolved_in_period: gauge(
                r,
                &catalog::KPI_UNIT_FEEDBACK_RESOLVED_IN_PERIOD,
            )?,
            unit_received_in_period: gauge(r, &catalog::KPI_UNIT_RECEIVED_IN_PERIOD)?,
            unit_completed_in_period: gauge(r, &catalog::KPI_UNIT_COMPLETED_IN_PERIOD)?,
            unit_feedback_open: gauge(r, &catalog::KPI_UNIT_FEEDBACK_OPEN)?,
            unit_feedback_open_overdue: gauge(r, &catalog::KPI_UNIT_FEEDBACK_OPEN_OVERDUE)?,
            unit_feedback_handling: histogram(r, &catalog::KPI_UNIT_FEEDBACK_HANDLING)?,
            procedure_received: counter(r, &catalog::KPI_PROCEDURE_RECEIVED)?,
            procedure_accepted: counter(r, &catalog::KPI_PROCEDURE_ACCEPTED)?,
            procedure_completed: counter(r, &catalog::KPI_PROCEDURE_COMPLETED)?,
            procedure_open: gauge(r, &catalog::KPI_PROCEDURE_OPEN)?,
            procedure_open_overdue: gauge(r, &catalog::KPI_PROCEDURE_OPEN_OVERDUE)?,
            procedure_end_to_end_online_ratio: float_gauge(
                r,
                &catalog::KPI_PROCEDURE_END_TO_END_ONLINE_RATIO,
            )?,
            procedure_supplements: counter(r, &catalog::KPI_PROCEDURE_SUPPLEMENTS)?,
            procedure_processing_time: histogram(r, &catalog::KPI_PROCEDURE_PROCESSING_TIME)?,
            events: counter(r, &catalog::KPI_EVENTS)?,
            anomalies: counter(r, &catalog::KPI_ANOMALIES)?,
            caught_up: gauge(r, &catalog::KPI_CAUGHT_UP)?,
            cases_tracked: gauge(r, &catalog::KPI_CASES_TRACKED)?,
            sync_delay: histogram(r, &catalog::SYNC_DELAY)?,
            receipts: counter(r, &catalog::RECEIPTS_READ)?,
            receipt_gaps: counter(r, &catalog::RECEIPT_GAPS)?,
        };
        Ok(Arc::new(Telemetry {
            registry,
            bus,
            gateway,
            registry_ops,
            connector,
            source,
            kpi,
            indicators_hidden: AtomicBool::new(false),
        }))
    }

    /// The underlying registry, for components that register families of their own kind
    /// through [`register_counter`], [`register_gauge`] or [`register_histogram`].
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Leave the KPI indicators out of [`Telemetry::render`] (and so of every `/metrics`) or
    /// show them again. The KPI engine hides them while it rebuilds its state from the log.
    ///
    /// After a restart the engine re-reads the log and its counters climb from zero back to
    /// their totals. Were Prometheus to scrape that climb, it would see a counter reset followed
    /// by the whole history counted again, and `increase()` over the restart would be wildly
    /// wrong. Hidden until rebuilt, the counters reappear at (at least) the value they had
    /// before the restart, so no reset is seen at all. The engine's own state
    /// (`lienthong_kpi_caught_up`, `lienthong_kpi_cases_tracked`) and every other family stay
    /// visible.
    pub fn hide_indicators(&self, hidden: bool) {
        self.indicators_hidden.store(hidden, Ordering::Release);
    }

    /// Whether the KPI indicators are hidden now.
    pub fn indicators_hidden(&self) -> bool {
        self.indicators_hidden.load(Ordering::Acquire)
    }

    /// Everything shown, in Prometheus' text exposition format: what `/metrics` serves.
    pub fn render(&self) -> String {
        let mut families = self.registry.gather();
        if self.indicators_hidden() {
            let visible = [catalog::KPI_CAUGHT_UP.name, catalog::KPI_CASES_TRACKED.name];
            families
                .retain(|f| !f.name().starts_with("lienthong_kpi_") || visible.contains(&f.name()));
        }
        let mut buffer = Vec::new();
        // Encoding into a Vec fails only on families the registry itself would have refused.
        if let Err(e) = TextEncoder::new().encode(&families, &mut buffer) {
            return format!("# encoding failed: {e}\n");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// The librdkafka client context of every long-running component's Kafka clients: it counts
/// each error the client reports in [`catalog::KAFKA_CLIENT_ERRORS`], labelled by component and
/// librdkafka error code name (a fixed enumeration), and logs it as rdkafka's default context
/// would. Components whose clients need a context of their own (a consumer's rebalance hooks)
/// delegate their `error` callback to [`KafkaClientContext::count`].
#[derive(Clone)]
pub struct KafkaClientContext {
    /// None: log only (a component run without a metrics registry).
    errors: Option<IntCounterVec>,
    component: &'static str,
}

impl KafkaClientContext {
    /// A context counting into `telemetry` for `component` (`gateway`, `connector`, …).
    pub fn new(telemetry: &Telemetry, component: &'static str) -> Self {
        KafkaClientContext {
            errors: Some(telemetry.bus.kafka_client_errors.clone()),
            component,
        }
    }

    /// A context that only logs, for a component run without a metrics registry.
    pub fn logging_only(component: &'static str) -> Self {
        KafkaClientContext {
            errors: None,
            component,
        }
    }

    /// Count and log one client error.
    pub fn count(&self, error: &rdkafka::error::KafkaError, reason: &str) {
        if let Some(errors) = &self.errors {
            let code = error
                .rdkafka_error_code()
                .map_or_else(|| "Other".to_string(), |c| format!("{c:?}"));
            errors
                .with_label_values(&[self.component, code.as_str()])
                .inc();
        }
        tracing::warn!(component = self.component, %error, reason, "Kafka client error");
    }
}

impl rdkafka::ClientContext for KafkaClientContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.count(&error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for KafkaClientContext {}

/// `GET /metrics`: served only through [`component::routes`], so that every component serves
/// it the same way.
fn router(telemetry: Arc<Telemetry>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let telemetry = Arc::clone(&telemetry);
            async move { metrics_response(&telemetry) }
        }),
    )
}

fn metrics_response(telemetry: &Telemetry) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry.render(),
    )
        .into_response()
}

fn check(spec: &MetricSpec, kind: Kind) -> Result<()> {
    if spec.kind == kind {
        Ok(())
    } else {
        Err(TelemetryError::WrongKind(spec.name, spec.kind.as_str()))
    }
}

fn registered<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    spec: &MetricSpec,
    made: std::result::Result<T, prometheus::Error>,
) -> Result<T> {
    let wrap = |source| TelemetryError::Register {
        name: spec.name,
        source,
    };
    let family = made.map_err(wrap)?;
    registry.register(Box::new(family.clone())).map_err(wrap)?;
    Ok(family)
}

/// Creates and registers a counter family declared in the catalog.
pub fn register_counter(registry: &Registry, spec: &MetricSpec) -> Result<IntCounterVec> {
    check(spec, Kind::Counter)?;
    let made = IntCounterVec::new(Opts::new(spec.name, spec.help), spec.labels);
    registered(registry, spec, made)
}

/// Creates and registers a gauge family declared in the catalog.
pub fn register_gauge(registry: &Registry, spec: &MetricSpec) -> Result<IntGaugeVec> {
    check(spec, Kind::Gauge)?;
    let made = IntGaugeVec::new(Opts::new(spec.name, spec.help), spec.labels);
    registered(registry, spec, made)
}

/// Creates and registers a gauge family declared in the catalog whose values are fractions
/// (ratios, averages) rather than counts.
pub fn register_float_gauge(registry: &Registry, spec: &MetricSpec) -> Result<GaugeVec> {
    check(spec, Kind::Gauge)?;
    let made = GaugeVec::new(Opts::new(spec.name, spec.help), spec.labels);
    registered(registry, spec, made)
}

/// Creates and registers a histogram family declared in the catalog.
pub fn register_histogram(registry: &Registry, spec: &MetricSpec) -> Result<HistogramVec> {
    check(spec, Kind::Histogram)?;
    let opts = HistogramOpts::new(spec.name, spec.help).buckets(spec.buckets.to_vec());
    let made = HistogramVec::new(opts, spec.labels);
    registered(registry, spec, made)
}

use register_counter as counter;
use register_float_gauge as float_gauge;
use register_gauge as gauge;
use register_histogram as histogram;
