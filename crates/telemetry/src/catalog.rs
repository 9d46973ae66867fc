//! The catalog of every metric lienthong exports: name, type, labels and meaning.
//!
//! This table is the single source: [`crate::Telemetry`] registers exactly these families,
//! `docs/metrics.md` is generated from it (a test fails when the two differ), and a test in
//! `tests/` fails when a Grafana dashboard or a Prometheus rule under `ops/` names a metric that
//! is not here. Labels come only from small fixed sets (topic, connector, route, status class,
//! unit code, …); never a case id, a personal id or error text.

/// The Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic count; the name ends in `_total`.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution; the name ends in its base unit (`_seconds`, `_bytes`, …).
    Histogram,
}

impl Kind {
    /// The type name Prometheus uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family.
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    /// Full name, `lienthong_<subsystem>_<name>_<unit>`.
    pub name: &'static str,
    /// Type.
    pub kind: Kind,
    /// Label names (each from a bounded set, described in `help`).
    pub labels: &'static [&'static str],
    /// What it measures.
    pub help: &'static str,
    /// Histogram bucket bounds; empty for counters and gauges.
    pub buckets: &'static [f64],
}

const fn counter(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricSpec {
    MetricSpec {
        name,
        kind: Kind::Counter,
        labels,
        help,
        buckets: &[],
    }
}

const fn gauge(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricSpec {
    MetricSpec {
        name,
        kind: Kind::Gauge,
        labels,
        help,
        buckets: &[],
    }
}

const fn histogram(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
    buckets: &'static [f64],
) -> MetricSpec {
    MetricSpec {
        name,
        kind: Kind::Histogram,
        labels,
        help,
        buckets,
    }
}

/// Buckets for request and apply latencies, 1 ms to 1 min.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets for end-to-end latency (event time to row committed), 10 ms to 1 h: it includes
/// outages and catch-up after a connector was down.
pub const END_TO_END_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Buckets for batch sizes, in records.
pub const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

// --- process -----------------------------------------------------------------------------------

/// Build information.
pub const BUILD_INFO: MetricSpec = gauge(
    "lienthong_build_info",
    &["version", "component"],
    "Always 1; the labels say which lienthong version runs which components (`component`: \
     registry, gateway, connector, kpi, demo, or a `+`-joined set for `lienthong up`).",
);

// --- producing ---------------------------------------------------------------------------------

/// Events acknowledged by Kafka, by producer.
pub const EVENTS_PRODUCED: MetricSpec = counter(
    "lienthong_bus_events_produced_total",
    &["topic", "producer"],
    "Events Kafka acknowledged, by topic and producer (`gateway`, `sdk`).",
);
/// Kafka client errors.
pub const KAFKA_CLIENT_ERRORS: MetricSpec = counter(
    "lienthong_kafka_client_errors_total",
    &["component", "code"],
    "Errors reported by the Kafka client (librdkafka), by component (`gateway`, `connector`, \
     `kpi`, `registry`, `sdk`) and librdkafka error code name (a fixed enumeration).",
);

// --- gateway -----------------------------------------------------------------------------------

/// Gateway requests.
pub const GATEWAY_REQUESTS: MetricSpec = counter(
    "lienthong_gateway_requests_total",
    &["route", "status"],
    "HTTP requests answered by the gateway, by route template (not the concrete path) and \
     status code.",
);
/// Gateway request latency.
pub const GATEWAY_REQUEST_DURATION: MetricSpec = histogram(
    "lienthong_gateway_request_duration_seconds",
    &["route"],
    "Time from request received to response sent, by route template. A publish answers only \
     after Kafka acknowledged, so this includes the produce.",
    LATENCY_BUCKETS,
);
/// Events the gateway refused.
pub const GATEWAY_EVENTS_REJECTED: MetricSpec = counter(
    "lienthong_gateway_events_rejected_total",
    &["topic", "reason"],
    "Events refused before anything reached Kafka, by topic and reason (`invalid`, \
     `unauthorized`, `forbidden`, `too_large`, `conflict`, `unavailable`).",
);
/// Idempotent replays.
pub const GATEWAY_DUPLICATES: MetricSpec = counter(
    "lienthong_gateway_duplicate_events_total",
    &["topic"],
    "Retries of an event id already on the log, answered with the original receipt and not \
     produced again.",
);

// --- registry ----------------------------------------------------------------------------------

/// Registry operations.
pub const REGISTRY_OPERATIONS: MetricSpec = counter(
    "lienthong_registry_operations_total",
    &["operation", "outcome"],
    "Schema registry calls, by operation (`register`, `lookup`, `get_schema`, `compatibility`, \
     `config`, `delete`, `list`, `other` for a call the API does not have) and outcome (`ok`, `client_error`, `server_error`).",
);

// --- connectors --------------------------------------------------------------------------------

/// Records consumed by a connector.
pub const CONNECTOR_EVENTS_CONSUMED: MetricSpec = counter(
    "lienthong_connector_events_consumed_total",
    &["connector", "topic"],
    "Records a sink connector read from Kafka.",
);
/// Records applied to a store.
pub const CONNECTOR_EVENTS_APPLIED: MetricSpec = counter(
    "lienthong_connector_events_applied_total",
    &["connector", "topic"],
    "Records whose store transaction committed, including version-guarded no-ops and the records the filter left out (also counted as filtered).",
);
/// Records skipped by the connector's filter.
pub const CONNECTOR_EVENTS_FILTERED: MetricSpec = counter(
    "lienthong_connector_events_filtered_total",
    &["connector", "topic"],
    "Records not meant for this store (the connector's filter), skipped with their offset \
     still recorded.",
);
/// Records that could never be applied.
pub const CONNECTOR_EVENTS_FAILED: MetricSpec = counter(
    "lienthong_connector_events_failed_total",
    &["connector", "topic", "class"],
    "Records that can never be applied (a permanent error), by error class (`signature`, \
     `not_avro`, `unknown_schema`, `incompatible_schema`, `invalid`, `constraint`).",
);
/// Records sent to the dead-letter topic.
pub const CONNECTOR_EVENTS_DEAD_LETTERED: MetricSpec = counter(
    "lienthong_connector_events_dead_lettered_total",
    &["connector", "topic", "class"],
    "Failed records written to the connector's dead-letter topic, by error class.",
);
/// Transient failures retried.
pub const CONNECTOR_RETRIES: MetricSpec = counter(
    "lienthong_connector_retries_total",
    &["connector", "class"],
    "Attempts that failed with a transient error and were retried: a batch's (`store_unavailable`, \
     `serialization`, `deadlock`), Kafka's (`kafka`), or a writer schema's fetch from the \
     registry (`registry`: unreachable, the credential refused, a server error), or the key \
     service's access log not taking the records of a batch's key releases (`key_service`).",
);
/// Whether a connector is retrying now.
pub const CONNECTOR_RETRYING: MetricSpec = gauge(
    "lienthong_connector_retrying",
    &["connector"],
    "1 while the connector is paused retrying a transient error (its store or the schema \
     registry is away), else 0.",
);
/// Whether a connector runs.
pub const CONNECTOR_UP: MetricSpec = gauge(
    "lienthong_connector_up",
    &["connector"],
    "1 while the connector's loop runs, 0 once it stopped (an incompatible schema stops it).",
);
/// Batch sizes.
pub const CONNECTOR_BATCH_SIZE: MetricSpec = histogram(
    "lienthong_connector_batch_size_records",
    &["connector"],
    "Records per applied batch.",
    BATCH_SIZE_BUCKETS,
);
/// Batch apply latency.
pub const CONNECTOR_BATCH_DURATION: MetricSpec = histogram(
    "lienthong_connector_batch_duration_seconds",
    &["connector"],
    "Time to apply one batch and its offsets in one store transaction, retries excluded.",
    LATENCY_BUCKETS,
);
/// End-to-end latency.
pub const CONNECTOR_END_TO_END_LATENCY: MetricSpec = histogram(
    "lienthong_connector_end_to_end_latency_seconds",
    &["connector", "topic"],
    "From the event's own time (`envelope.occurred_at`) to its row committed in the store.",
    END_TO_END_BUCKETS,
);
/// Consumer lag.
pub const CONNECTOR_CONSUMER_LAG: MetricSpec = gauge(
    "lienthong_connector_consumer_lag_records",
    &["connector", "topic", "partition"],
    "Records on the log not yet applied, per partition (high watermark minus the store's \
     offset). Partitions are few and fixed per topic, so the label is bounded.",
);
/// Apply receipts sent.
pub const CONNECTOR_RECEIPTS: MetricSpec = counter(
    "lienthong_connector_receipts_total",
    &["connector", "outcome"],
    "Signed apply receipts (`[receipts]`, one per committed batch) by outcome: `delivered` to \
     the receipts topic, or `failed` (not signed, or not delivered within 30 s: a gap in the \
     connector's chain of receipts).",
);
/// Rows that differed from the log at the last scheduled check.
pub const CONNECTOR_DIVERGENT_ROWS: MetricSpec = gauge(
    "lienthong_connector_divergent_rows",
    &["connector"],
    "Rows of the store that differed from the log (missing, extra or changed) at the \
     connector's last scheduled check (`[verify] interval_secs`), as of the store's offsets \
     then; 0 when in sync. Absent until the first check finishes.",
);
/// When the last scheduled check finished.
pub const CONNECTOR_VERIFIED_TIMESTAMP: MetricSpec = gauge(
    "lienthong_connector_verified_timestamp_seconds",
    &["connector"],
    "Unix time at which the connector's last scheduled check of its store against the log \
     finished (whatever it found).",
);
/// When the connector last committed a batch.
pub const CONNECTOR_APPLIED_TIMESTAMP: MetricSpec = gauge(
    "lienthong_connector_applied_timestamp_seconds",
    &["connector"],
    "Unix time at which the connector last committed a batch to its store (rows and offsets \
     in one transaction); absent until its first batch.",
);
/// Scheduled checks, by outcome.
pub const CONNECTOR_VERIFICATIONS: MetricSpec = counter(
    "lienthong_connector_verifications_total",
    &["connector", "result"],
    "Scheduled checks of the store against the log, by result: `in_sync`, `diverged`, or \
     `failed` (the store or Kafka did not answer; see the log).",
);

// --- Source connectors (`lienthong source`) ----------------------------------------------------
//
// `source` is the source connector's name (a handful per agency); `topic` a catalog topic;
// `reason` the gateway's error code (a fixed set).

/// Outbox rows published.
pub const SOURCE_ROWS_PUBLISHED: MetricSpec = counter(
    "lienthong_source_rows_published_total",
    &["source", "topic"],
    "Outbox rows the gateway accepted (committed to Kafka, or already there under the same event \
     id) and the source then removed from the outbox.",
);
/// Outbox rows dead-lettered.
pub const SOURCE_ROWS_DEAD_LETTERED: MetricSpec = counter(
    "lienthong_source_rows_dead_lettered_total",
    &["source", "reason"],
    "Outbox rows the gateway refused, moved to the dead-letter table with the refusal, by the \
     gateway's error code (`malformed`, `invalid_event`, `forbidden`, `not_found`, \
     `event_id_conflict`, `too_large`, `unsupported_media_type`).",
);
/// Transient failures of a source.
pub const SOURCE_ERRORS: MetricSpec = counter(
    "lienthong_source_errors_total",
    &["source", "kind"],
    "Transient failures a source retried after a backoff: `database` (the agency's PostgreSQL \
     did not answer or lost the connection) or `gateway` (unreachable, 429 or 5xx).",
);
/// How far the log is behind the outbox.
pub const SOURCE_LAG: MetricSpec = gauge(
    "lienthong_source_lag_seconds",
    &["source"],
    "Age of the oldest row waiting in the outbox (0 when it is empty), set at each read and \
     while the source retries the gateway with rows in hand: how far the log is behind the \
     agency's database.",
);
/// Whether this instance publishes.
pub const SOURCE_UP: MetricSpec = gauge(
    "lienthong_source_up",
    &["source"],
    "1 while this instance holds the outbox (its advisory lock) over an open database \
     connection; 0 while it connects, retries, or stands by behind another instance.",
);
/// Insert to commit on the log.
pub const SOURCE_LATENCY: MetricSpec = histogram(
    "lienthong_source_latency_seconds",
    &["source"],
    "From an outbox row's `created_at` (the database's clock) to the gateway's answer that it is \
     committed to Kafka, per row.",
    END_TO_END_BUCKETS,
);

// --- KPI engine --------------------------------------------------------------------------------
//
// Two views, never crossed: by `unit` (about 170 unit codes from the engine's reference list)
// and by `procedure` (the configured top-N procedure codes, every other code folded into
// `other`) with the procedure's online `level`. See docs/kpi.md for the cardinality budget.

/// Buckets for case processing time, 1 h to 120 days (wall-clock seconds).
pub const PROCESSING_TIME_BUCKETS: &[f64] = &[
    3600.0,
    14_400.0,
    43_200.0,
    86_400.0,
    172_800.0,
    259_200.0,
    432_000.0,
    604_800.0,
    864_000.0,
    1_296_000.0,
    1_814_400.0,
    2_592_000.0,
    5_184_000.0,
    10_368_000.0,
];

/// Cases received, by unit and channel.
pub const KPI_UNIT_RECEIVED: MetricSpec = counter(
    "lienthong_kpi_unit_cases_received_total",
    &["unit", "channel"],
    "Cases submitted (CaseSubmitted), by receiving unit and channel (`online`, `counter`, \
     `postal`, `unknown`).",
);
/// Cases received end-to-end online, by unit.
pub const KPI_UNIT_END_TO_END_ONLINE: MetricSpec = counter(
    "lienthong_kpi_unit_cases_end_to_end_online_total",
    &["unit"],
    "Cases submitted with `end_to_end_online` set (toàn trình), by receiving unit.",
);
/// Share of cases handled end-to-end online, by unit.
pub const KPI_UNIT_END_TO_END_ONLINE_RATIO: MetricSpec = gauge(
    "lienthong_kpi_unit_end_to_end_online_ratio",
    &["unit"],
    "Cases submitted end-to-end online divided by cases submitted, by receiving unit, over \
     the whole log (0 to 1).",
);
/// Cases accepted, by unit.
pub const KPI_UNIT_ACCEPTED: MetricSpec = counter(
    "lienthong_kpi_unit_cases_accepted_total",
    &["unit"],
    "Cases accepted for processing (CaseAccepted), by processing unit.",
);
/// Cases completed, by unit and timeliness.
pub const KPI_UNIT_COMPLETED: MetricSpec = counter(
    "lienthong_kpi_unit_cases_completed_total",
    &["unit", "timeliness"],
    "Cases decided (CaseCompleted), by the unit responsible at completion and timeliness, \
     against the due date extended by supplement pauses in working days: `early` (before it), \
     `on_time` (on it), `late` (after it).",
);
/// Cases filed outside the applicant's home unit, by receiving unit.
pub const KPI_UNIT_OUTSIDE_HOME: MetricSpec = counter(
    "lienthong_kpi_unit_cases_received_outside_home_total",
    &["unit"],
    "Cases submitted at a unit other than the applicant's home unit (CaseSubmitted with \
     receiving_unit != home_unit: filed \"phi địa giới\"), by receiving unit.",
);
/// Transfers out, by unit.
pub const KPI_UNIT_TRANSFERS: MetricSpec = counter(
    "lienthong_kpi_unit_case_transfers_total",
    &["unit"],
    "Cases transferred to another competent unit (CaseAssigned of kind TRANSFERRED), by the \
     unit transferring out.",
);
/// How long a unit held a case, in working days.
pub const KPI_UNIT_HOLDING: MetricSpec = histogram(
    "lienthong_kpi_unit_holding_working_days",
    &["unit"],
    "Working days a unit was responsible for a case, observed when the responsibility moves \
     to another unit (acceptance elsewhere, assignment, transfer) and when the case closes.",
    WORKING_DAYS_BUCKETS,
);
/// Processing time in working days, by unit.
pub const KPI_UNIT_PROCESSING_WORKING_DAYS: MetricSpec = histogram(
    "lienthong_kpi_unit_processing_working_days",
    &["unit"],
    "Working days from submission to completion of completed cases, the supplement pauses left \
     out, by the unit responsible at completion.",
    WORKING_DAYS_BUCKETS,
);
/// Cases closed without a result, by unit and outcome.
pub const KPI_UNIT_ENDED: MetricSpec = counter(
    "lienthong_kpi_unit_cases_ended_total",
    &["unit", "outcome"],
    "Cases closed without a decision in the applicant's favour, by responsible unit and \
     outcome (`rejected`, `withdrawn`).",
);
/// Open cases, by unit.
pub const KPI_UNIT_OPEN: MetricSpec = gauge(
    "lienthong_kpi_unit_cases_open",
    &["unit"],
    "Cases submitted and not yet completed, rejected or withdrawn, by responsible unit (the \
     receiving unit, then the processing unit once accepted or assigned).",
);
/// Open cases past their due date, by unit.
pub const KPI_UNIT_OPEN_OVERDUE: MetricSpec = gauge(
    "lienthong_kpi_unit_cases_open_overdue",
    &["unit"],
    "Open cases whose extended due date is before today (Vietnam time) and that are not \
     waiting for a supplement, by responsible unit.",
);
/// Share of open cases that are overdue, by unit.
pub const KPI_UNIT_OPEN_OVERDUE_RATIO: MetricSpec = gauge(
    "lienthong_kpi_unit_open_overdue_ratio",
    &["unit"],
    "Open overdue cases divided by open cases, by responsible unit (0 when none are open).",
);
/// Supplement requests, by unit.
pub const KPI_UNIT_SUPPLEMENTS: MetricSpec = counter(
    "lienthong_kpi_unit_supplement_requests_total",
    &["unit"],
    "Requests for more documents (SupplementRequested), by responsible unit.",
);
/// Processing time, by unit.
pub const KPI_UNIT_PROCESSING_TIME: MetricSpec = histogram(
    "lienthong_kpi_unit_processing_duration_seconds",
    &["unit"],
    "Wall-clock time from submission to completion of completed cases, by the unit \
     responsible at completion.",
    PROCESSING_TIME_BUCKETS,
);
/// Feedback received, by unit.
pub const KPI_UNIT_FEEDBACK_RECEIVED: MetricSpec = counter(
    "lienthong_kpi_unit_feedback_received_total",
    &["unit"],
    "Feedback items submitted (FeedbackSubmitted), by receiving unit.",
);
/// Feedback resolved, by unit.
pub const KPI_UNIT_FEEDBACK_RESOLVED: MetricSpec = counter(
    "lienthong_kpi_unit_feedback_resolved_total",
    &["unit"],
    "Feedback items resolved (FeedbackResolved), by the unit last assigned (else the \
     receiving unit).",
);
/// Average satisfaction, by unit.
pub const KPI_UNIT_FEEDBACK_SATISFACTION: MetricSpec = gauge(
    "lienthong_kpi_unit_feedback_satisfaction_average_score",
    &["unit"],
    "Mean of the citizens' ratings (1 to 5) of resolved feedback, by resolving unit; absent \
     until a rating arrived.",
);
/// Buckets for feedback handling time, in working days.
pub const WORKING_DAYS_BUCKETS: &[f64] =
    &[0.0, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 60.0];
/// Ratings given, by unit.
pub const KPI_UNIT_FEEDBACK_RATINGS: MetricSpec = counter(
    "lienthong_kpi_unit_feedback_ratings_total",
    &["unit"],
    "Ratings (1 to 5) given with resolved feedback, by resolving unit: with \
     ..._rating_points_total, the weighted mean over any set of units.",
);
/// Rating points given, by unit.
pub const KPI_UNIT_FEEDBACK_RATING_POINTS: MetricSpec = counter(
    "lienthong_kpi_unit_feedback_rating_points_total",
    &["unit"],
    "The sum of the ratings (1 to 5) given with resolved feedback, by resolving unit.",
);
/// A unit's name.
pub const KPI_UNIT_INFO: MetricSpec = gauge(
    "lienthong_kpi_unit_info",
    &["unit", "name", "kind"],
    "1 for each unit of the reference list whose name the units reference topic \
     (hcm.reference.units) gives, labelled with that name (Vietnamese) and its kind \
     (`department`, `ward`, `commune`, `special_zone`): join it on `unit` \
     (`* on (unit) group_left (name) lienthong_kpi_unit_info`) to show names. One series per \
     unit; a renamed unit's old series is removed.",
);
/// Cases received in a period, by unit.
pub const KPI_UNIT_RECEIVED_IN_PERIOD: MetricSpec = gauge(
    "lienthong_kpi_unit_cases_received_in_period",
    &["unit", "period"],
    "Cases submitted in the period, by the local day of the submission and receiving unit: \
     `this_month`, `last_month`, `this_quarter`, `last_quarter` (calendar months and quarters \
     of the engine's calendar, as of today).",
);
/// Cases completed in a period, by unit and timeliness.
pub const KPI_UNIT_COMPLETED_IN_PERIOD: MetricSpec = gauge(
    "lienthong_kpi_unit_cases_completed_in_period",
    &["unit", "period", "timeliness"],
    "Cases completed in the period (as for ..._received_in_period), by the local day of the \
     completion, responsible unit and timeliness (`early`, `on_time`, `late`).",
);
/// Feedback received in a period, by unit.
pub const KPI_UNIT_FEEDBACK_RECEIVED_IN_PERIOD: MetricSpec = gauge(
    "lienthong_kpi_unit_feedback_received_in_period",
    &["unit", "period"],
    "Feedback items submitted in the period (as for ..._cases_received_in_period), by the \
     local day of the submission and receiving unit.",
);
/// Feedback resolved in a period, by unit.
pub const KPI_UNIT_FEEDBACK_RESOLVED_IN_PERIOD: MetricSpec = gauge(
    "lienthong_kpi_unit_feedback_resolved_in_period",
    &["unit", "period"],
    "Feedback items resolved in the period (as for ..._cases_received_in_period), by the \
     local day of the resolution and the unit that resolved them.",
);
/// Procedures' names.
pub const KPI_PROCEDURE_INFO: MetricSpec = gauge(
    "lienthong_kpi_procedure_info",
    &["procedure", "name"],
    "1 for each procedure of `top_procedures` whose name the procedures reference topic \
     (hcm.reference.procedures) gives, labelled with that name (Vietnamese): join it on \
     `procedure` (`* on (procedure) group_left (name) lienthong_kpi_procedure_info`). One \
     series per top procedure (at most 100); a renamed procedure's old series is removed.",
);
/// Feedback open, by unit.
pub const KPI_UNIT_FEEDBACK_OPEN: MetricSpec = gauge(
    "lienthong_kpi_unit_feedback_open",
    &["unit"],
    "Feedback items submitted and not resolved, by the unit handling them (the unit last \
     assigned, else the receiving unit).",
);
/// Feedback open past its due date, by unit.
pub const KPI_UNIT_FEEDBACK_OPEN_OVERDUE: MetricSpec = gauge(
    "lienthong_kpi_unit_feedback_open_overdue",
    &["unit"],
    "Open feedback items past the due date of their latest assignment (FeedbackAssigned \
     due_date; an item never assigned has none), by handling unit.",
);
/// Feedback handling time, by unit.
pub const KPI_UNIT_FEEDBACK_HANDLING: MetricSpec = histogram(
    "lienthong_kpi_unit_feedback_handling_working_days",
    &["unit"],
    "Working days from a feedback item's submission to its resolution (local days of the \
     calendar: the submission day counts, the resolution day does not), by resolving unit.",
    WORKING_DAYS_BUCKETS,
);
/// Cases received, by procedure.
pub const KPI_PROCEDURE_RECEIVED: MetricSpec = counter(
    "lienthong_kpi_procedure_cases_received_total",
    &["procedure", "level", "channel"],
    "Cases submitted, by procedure (a configured top-N code, or `other`), its online level \
     (`offline`, `partial_online`, `full_online`) and channel.",
);
/// Cases accepted, by procedure.
pub const KPI_PROCEDURE_ACCEPTED: MetricSpec = counter(
    "lienthong_kpi_procedure_cases_accepted_total",
    &["procedure", "level"],
    "Cases accepted for processing, by procedure and level.",
);
/// Cases completed, by procedure.
pub const KPI_PROCEDURE_COMPLETED: MetricSpec = counter(
    "lienthong_kpi_procedure_cases_completed_total",
    &["procedure", "level", "timeliness"],
    "Cases decided, by procedure, level and timeliness (`early`, `on_time`, `late`).",
);
/// Open cases, by procedure.
pub const KPI_PROCEDURE_OPEN: MetricSpec = gauge(
    "lienthong_kpi_procedure_cases_open",
    &["procedure", "level"],
    "Open cases, by procedure and level.",
);
/// Open overdue cases, by procedure.
pub const KPI_PROCEDURE_OPEN_OVERDUE: MetricSpec = gauge(
    "lienthong_kpi_procedure_cases_open_overdue",
    &["procedure", "level"],
    "Open cases past their extended due date, by procedure and level.",
);
/// End-to-end online share, by procedure.
pub const KPI_PROCEDURE_END_TO_END_ONLINE_RATIO: MetricSpec = gauge(
    "lienthong_kpi_procedure_end_to_end_online_ratio",
    &["procedure", "level"],
    "Cases submitted end-to-end online divided by cases submitted, by procedure and level.",
);
/// Supplement requests, by procedure.
pub const KPI_PROCEDURE_SUPPLEMENTS: MetricSpec = counter(
    "lienthong_kpi_procedure_supplement_requests_total",
    &["procedure", "level"],
    "Requests for more documents, by procedure and level.",
);
/// Processing time, by procedure.
pub const KPI_PROCEDURE_PROCESSING_TIME: MetricSpec = histogram(
    "lienthong_kpi_procedure_processing_duration_seconds",
    &["procedure", "level"],
    "Wall-clock time from submission to completion, by procedure and level.",
    PROCESSING_TIME_BUCKETS,
);
/// Records the KPI engine read, by outcome.
pub const KPI_EVENTS: MetricSpec = counter(
    "lienthong_kpi_events_total",
    &["topic", "outcome"],
    "Records the KPI engine read, by topic and outcome (`applied`, `duplicate`: an event id \
     already applied, `ignored`: an event of a case that was itself refused, `anomaly`).",
);
/// Anomalies, by kind.
pub const KPI_ANOMALIES: MetricSpec = counter(
    "lienthong_kpi_anomalies_total",
    &["kind"],
    "Records that could not be counted, by kind (`undecodable`, `unknown_unit`, \
     `unknown_procedure`, `before_submission`, `duplicate_submission`, `out_of_order`, \
     `after_close`, `completed_before_submitted`, `no_pending_supplement`, \
     `invalid_satisfaction`). They change no indicator.",
);
/// Whether the engine has caught up with the log.
pub const KPI_CAUGHT_UP: MetricSpec = gauge(
    "lienthong_kpi_caught_up",
    &[],
    "0 while the engine rebuilds its state by re-reading its topics from the beginning after \
     a start, 1 once it reached the end offsets it saw at start. Indicators are partial while 0.",
);
/// Buckets for the sync delay, 5 ms to 1 h.
pub const SYNC_DELAY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Published to applied, per agency, from the signed receipts.
pub const SYNC_DELAY: MetricSpec = histogram(
    "lienthong_sync_delay_seconds",
    &["agency"],
    "From an event's append to the log to its commit in an agency's store, read from the \
     agencies' signed apply receipts: one observation per receipt and partition, the delay of \
     the oldest record it covers (every record of the batch was applied within it). Agencies \
     are the city CA's certificate holders: bounded.",
    SYNC_DELAY_BUCKETS,
);
/// Receipts read by the KPI engine.
pub const RECEIPTS_READ: MetricSpec = counter(
    "lienthong_receipts_total",
    &["outcome"],
    "Apply receipts the KPI engine read (`[kpi.receipts]`): `verified` against the certificate \
     log, or `refused` (unsigned, altered, an unknown or revoked certificate, signed by \
     another agency than the receipt's, or not a receipt) and left out of the trace and the \
     sync delay.",
);
/// Offsets no receipt covers.
pub const RECEIPT_GAPS: MetricSpec = counter(
    "lienthong_receipt_gaps_total",
    &["agency"],
    "Offsets an agency's connector moved its store across that none of its verified receipts \
     covers: a receipt starting beyond where the connector's previous one for the partition \
     ended. A receipt was lost between the store's commit and the broker, or the store's \
     offsets were changed outside its connector.",
);
/// Cases held in memory.
pub const KPI_CASES_TRACKED: MetricSpec = gauge(
    "lienthong_kpi_cases_tracked",
    &[],
    "Cases (open and closed) the engine holds in memory, for capacity planning.",
);

/// Every metric family, in documentation order.
pub const ALL: &[&MetricSpec] = &[
    &BUILD_INFO,
    &EVENTS_PRODUCED,
    &KAFKA_CLIENT_ERRORS,
    &GATEWAY_REQUESTS,
    &GATEWAY_REQUEST_DURATION,
    &GATEWAY_EVENTS_REJECTED,
    &GATEWAY_DUPLICATES,
    &REGISTRY_OPERATIONS,
    &CONNECTOR_EVENTS_CONSUMED,
    &CONNECTOR_EVENTS_APPLIED,
    &CONNECTOR_EVENTS_FILTERED,
    &CONNECTOR_EVENTS_FAILED,
    &CONNECTOR_EVENTS_DEAD_LETTERED,
    &CONNECTOR_RETRIES,
    &CONNECTOR_RETRYING,
    &CONNECTOR_UP,
    &CONNECTOR_BATCH_SIZE,
    &CONNECTOR_BATCH_DURATION,
    &CONNECTOR_END_TO_END_LATENCY,
    &CONNECTOR_CONSUMER_LAG,
    &CONNECTOR_RECEIPTS,
    &CONNECTOR_DIVERGENT_ROWS,
    &CONNECTOR_VERIFIED_TIMESTAMP,
    &CONNECTOR_VERIFICATIONS,
    &CONNECTOR_APPLIED_TIMESTAMP,
    &SOURCE_ROWS_PUBLISHED,
    &SOURCE_ROWS_DEAD_LETTERED,
    &SOURCE_ERRORS,
    &SOURCE_LAG,
    &SOURCE_UP,
    &SOURCE_LATENCY,
    &KPI_UNIT_RECEIVED,
    &KPI_UNIT_END_TO_END_ONLINE,
    &KPI_UNIT_END_TO_END_ONLINE_RATIO,
    &KPI_UNIT_ACCEPTED,
    &KPI_UNIT_COMPLETED,
    &KPI_UNIT_ENDED,
    &KPI_UNIT_OPEN,
    &KPI_UNIT_OPEN_OVERDUE,
    &KPI_UNIT_OPEN_OVERDUE_RATIO,
    &KPI_UNIT_SUPPLEMENTS,
    &KPI_UNIT_PROCESSING_TIME,
    &KPI_UNIT_OUTSIDE_HOME,
    &KPI_UNIT_TRANSFERS,
    &KPI_UNIT_HOLDING,
    &KPI_UNIT_PROCESSING_WORKING_DAYS,
    &KPI_UNIT_FEEDBACK_RATINGS,
    &KPI_UNIT_FEEDBACK_RATING_POINTS,
    &KPI_UNIT_INFO,
    &KPI_PROCEDURE_INFO,
    &KPI_UNIT_FEEDBACK_RECEIVED_IN_PERIOD,
    &KPI_UNIT_FEEDBACK_RESOLVED_IN_PERIOD,
    &KPI_UNIT_RECEIVED_IN_PERIOD,
    &KPI_UNIT_COMPLETED_IN_PERIOD,
    &KPI_UNIT_FEEDBACK_OPEN,
    &KPI_UNIT_FEEDBACK_OPEN_OVERDUE,
    &KPI_UNIT_FEEDBACK_HANDLING,
    &KPI_UNIT_FEEDBACK_RECEIVED,
    &KPI_UNIT_FEEDBACK_RESOLVED,
    &KPI_UNIT_FEEDBACK_SATISFACTION,
    &KPI_PROCEDURE_RECEIVED,
    &KPI_PROCEDURE_ACCEPTED,
    &KPI_PROCEDURE_COMPLETED,
    &KPI_PROCEDURE_OPEN,
    &KPI_PROCEDURE_OPEN_OVERDUE,
    &KPI_PROCEDURE_END_TO_END_ONLINE_RATIO,
    &KPI_PROCEDURE_SUPPLEMENTS,
    &KPI_PROCEDURE_PROCESSING_TIME,
    &KPI_EVENTS,
    &KPI_ANOMALIES,
    &KPI_CAUGHT_UP,
    &KPI_CASES_TRACKED,
    &SYNC_DELAY,
    &RECEIPTS_READ,
    &RECEIPT_GAPS,
];

/// The catalog as the Markdown table in `docs/metrics.md`.
pub fn markdown_table() -> String {
    let mut out = String::from("| Metric | Type | Labels | Meaning |\n|---|---|---|---|\n");
    for spec in ALL {
        let labels = spec
            .labels
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            spec.name,
            spec.kind.as_str(),
            labels,
            spec.help.replace('|', "\\|")
        ));
    }
    out
}

/// Every series name a scrape of these families can show (histograms add `_bucket`, `_sum`
/// and `_count`).
pub fn exported_series_names() -> Vec<String> {
    let mut names = Vec::new();
    for spec in ALL {
        names.push(spec.name.to_string());
        if spec.kind == Kind::Histogram {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.push(format!("{}{suffix}", spec.name));
            }
        }
    }
    names
}
