//! Shared by the KPI engine's tests against real Kafka (and Prometheus): a scenario of case
//! and feedback events with its expected indicators, publishing, running an engine, reading
//! its metrics.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use lienthong_contract::events::*;
use lienthong_contract::{Catalog, Codec};
use lienthong_kpi::KpiConfig;
use lienthong_kpi::calendar::parse_date;
use lienthong_kpi::reference::{Level, ProcedureRef};
use lienthong_telemetry::Telemetry;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

pub const PROC_TOP_ONLINE: &str = "1.001193";
pub const PROC_TOP_PARTIAL: &str = "1.000894";
pub const PROC_OTHER: &str = "2.002000";

/// Local 09:00 in Ho Chi Minh City on `date`, in milliseconds since the epoch.
pub fn at(date: &str) -> i64 {
    i64::from(parse_date(date).unwrap()) * 86_400_000 + 2 * 3_600_000
}

/// An engine configuration reading `case_topic` and `feedback_topic`.
pub fn config(bootstrap: &str, case_topic: &str, feedback_topic: &str) -> KpiConfig {
    KpiConfig {
        kafka: Some(lienthong_bus::KafkaConfig::new(bootstrap)),
        case_topic: case_topic.to_string(),
        feedback_topic: feedback_topic.to_string(),
        schemas_dir: lienthong_contract::repo_schemas_dir(),
        units: ["26734", "27004", "STP", "SXD"].map(String::from).to_vec(),
        procedures: vec![
            ProcedureRef {
                code: PROC_TOP_ONLINE.into(),
                level: Level::FullOnline,
            },
            ProcedureRef {
                code: PROC_TOP_PARTIAL.into(),
                level: Level::PartialOnline,
            },
            ProcedureRef {
                code: PROC_OTHER.into(),
                level: Level::Offline,
            },
        ],
        top_procedures: vec![PROC_TOP_ONLINE.into(), PROC_TOP_PARTIAL.into()],
        export_interval_ms: 200,
        ..KpiConfig::default()
    }
}

/// Builds the events of one case or feedback item with consecutive versions and fresh ids.
pub struct Aggregate {
    id: String,
    version: i64,
    run: String,
}

impl Aggregate {
    pub fn new(run: &str, id: &str) -> Aggregate {
        Aggregate {
            id: format!("{run}-{id}"),
            version: 0,
            run: run.to_string(),
        }
    }

    fn envelope(&mut self, when: i64) -> Envelope {
        self.version += 1;
        Envelope {
            event_id: uuid::Uuid::new_v4().to_string(),
            occurred_at: when,
            producer_unit: "26734".into(),
            aggregate_id: self.id.clone(),
            aggregate_version: self.version,
            correlation_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    pub fn case(&mut self, when: &str, event: CaseEventKind) -> CaseEvent {
        CaseEvent {
            envelope: self.envelope(at(when)),
            event,
        }
    }

    pub fn feedback(&mut self, event: FeedbackEventKind) -> FeedbackEvent {
        FeedbackEvent {
            envelope: self.envelope(at("2026-11-02")),
            event,
        }
    }
}

pub fn submitted(
    unit: &str,
    procedure: &str,
    channel: Channel,
    e2e: bool,
    due: &str,
) -> CaseEventKind {
    CaseEventKind::CaseSubmitted(CaseSubmitted {
        procedure_code: procedure.into(),
        receiving_unit: unit.into(),
        home_unit: "27004".into(),
        channel,
        end_to_end_online: e2e,
        applicant_id: "079203001234".into(),
        due_date: parse_date(due).unwrap(),
        documents: vec![],
    })
}

pub fn accepted(unit: &str) -> CaseEventKind {
    CaseEventKind::CaseAccepted(CaseAccepted {
        processing_unit: unit.into(),
    })
}

pub fn completed() -> CaseEventKind {
    CaseEventKind::CaseCompleted(CaseCompleted {
        result: "Giấy khai sinh số 1".into(),
        result_document: None,
    })
}

pub fn supplement_requested() -> CaseEventKind {
    CaseEventKind::SupplementRequested(SupplementRequested {
        reason: "Thiếu giấy chứng sinh".into(),
        requested_documents: vec![],
    })
}

pub fn supplement_received() -> CaseEventKind {
    CaseEventKind::SupplementReceived(SupplementReceived { documents: vec![] })
}

pub fn feedback_submitted(unit: &str) -> FeedbackEventKind {
    FeedbackEventKind::FeedbackSubmitted(FeedbackSubmitted {
        receiving_unit: unit.into(),
        channel: Channel::Online,
        category: "đất đai".into(),
        content: "Phản ánh".into(),
        related_case_id: None,
        citizen_id: None,
    })
}

pub fn feedback_resolved(score: Option<i32>) -> FeedbackEventKind {
    FeedbackEventKind::FeedbackResolved(FeedbackResolved {
        resolution: "Đã giải quyết".into(),
        satisfaction: score,
    })
}

/// One record to publish: a case event, a feedback event, or raw bytes on the case topic.
pub enum Item {
    Case(CaseEvent),
    Feedback(FeedbackEvent),
    Garbage(Vec<u8>),
}

/// The scenario of docs/kpi.md's worked example; returns (cases first part, second part).
/// Today (the machine's clock) must be after 2026-11-10 and before 2027-06-01.
pub fn scenario(run: &str) -> (Vec<Item>, Vec<Item>) {
    use Channel::*;
    let mut first = Vec::new();
    let mut a = Aggregate::new(run, "A");
    let case_a = vec![
        a.case(
            "2026-11-02",
            submitted("26734", PROC_TOP_ONLINE, Online, true, "2026-11-06"),
        ),
        a.case("2026-11-02", accepted("STP")),
        a.case("2026-11-04", supplement_requested()),
        a.case("2026-11-11", supplement_received()),
        a.case("2026-11-13", completed()),
    ];
    let mut b = Aggregate::new(run, "B");
    let mut c = Aggregate::new(run, "C");
    let mut d = Aggregate::new(run, "D");
    let mut e = Aggregate::new(run, "E");
    let mut f = Aggregate::new(run, "F");
    let mut g = Aggregate::new(run, "G");
    let mut x = Aggregate::new(run, "X");
    let mut y = Aggregate::new(run, "Y");
    let mut z = Aggregate::new(run, "Z");
    let mut t = Aggregate::new(run, "T");
    let cases = vec![
        b.case(
            "2026-11-02",
            submitted("26734", PROC_TOP_PARTIAL, Counter, false, "2026-11-04"),
        ),
        b.case("2026-11-03", accepted("STP")),
        b.case("2026-11-05", completed()),
        c.case(
            "2026-11-02",
            submitted("27004", PROC_OTHER, Postal, false, "2026-11-10"),
        ),
        c.case("2026-11-02", accepted("27004")),
        d.case(
            "2026-11-02",
            submitted("27004", PROC_TOP_ONLINE, Online, true, "2027-06-01"),
        ),
        d.case(
            "2026-11-03",
            CaseEventKind::CaseAssigned(CaseAssigned {
                from_unit: "27004".into(),
                to_unit: "SXD".into(),
                kind: AssignmentKind::Transferred,
                note: None,
            }),
        ),
        e.case(
            "2026-11-16",
            submitted("26734", PROC_TOP_ONLINE, Online, false, "2026-11-20"),
        ),
        e.case("2026-11-18", supplement_requested()),
        f.case(
            "2026-11-02",
            submitted("26734", PROC_OTHER, Counter, false, "2026-11-09"),
        ),
        f.case(
            "2026-11-04",
            CaseEventKind::CaseWithdrawn(CaseWithdrawn { reason: None }),
        ),
        g.case(
            "2026-11-02",
            submitted("27004", PROC_TOP_PARTIAL, Counter, false, "2026-11-09"),
        ),
        g.case(
            "2026-11-03",
            CaseEventKind::CaseRejected(CaseRejected {
                reason: "Hồ sơ không hợp lệ".into(),
            }),
        ),
        // Anomalies.
        x.case(
            "2026-11-02",
            submitted("99999", PROC_TOP_ONLINE, Online, true, "2026-11-06"),
        ),
        x.case("2026-11-03", completed()),
        {
            y.version = 3;
            y.case("2026-11-03", completed())
        },
        z.case(
            "2026-11-02",
            submitted("26734", "9.999999", Online, true, "2026-11-06"),
        ),
        t.case(
            "2026-11-10",
            submitted("27004", PROC_OTHER, Counter, false, "2026-11-16"),
        ),
        t.case("2026-11-09", completed()),
    ];
    first.extend(case_a.iter().cloned().map(Item::Case));
    first.extend(cases.into_iter().map(Item::Case));
    first.push(Item::Garbage(b"not an Avro record".to_vec()));

    let mut second = Vec::new();
    // Every event of case A again: duplicates, counted once.
    second.extend(case_a.into_iter().map(Item::Case));
    let mut f1 = Aggregate::new(run, "FB1");
    let mut f2 = Aggregate::new(run, "FB2");
    let mut f3 = Aggregate::new(run, "FB3");
    let mut f4 = Aggregate::new(run, "FB4");
    let mut f5 = Aggregate::new(run, "FB5");
    let feedback = vec![
        f1.feedback(feedback_submitted("26734")),
        f1.feedback(FeedbackEventKind::FeedbackAssigned(FeedbackAssigned {
            to_unit: "STP".into(),
            due_date: parse_date("2026-11-12").unwrap(),
        })),
        f1.feedback(feedback_resolved(Some(4))),
        f2.feedback(feedback_submitted("26734")),
        f2.feedback(feedback_resolved(Some(2))),
        f3.feedback(feedback_submitted("27004")),
        f4.feedback(feedback_submitted("STP")),
        f4.feedback(feedback_resolved(Some(5))),
        {
            f5.version = 1;
            f5.feedback(feedback_resolved(Some(5)))
        },
    ];
    second.extend(feedback.into_iter().map(Item::Feedback));
    (first, second)
}

/// Records in the scenario's first part (all on the case topic, one of them garbage).
pub const SCENARIO_FIRST: usize = 25;
/// Records in its second part: 5 duplicates on the case topic, 9 feedback events.
pub const SCENARIO_SECOND: usize = 14;

/// (metric, labels, value).
pub type Expectation = (&'static str, Vec<(&'static str, &'static str)>, f64);

/// Every indicator the scenario must produce.
pub fn scenario_expectations() -> Vec<Expectation> {
    let unit = |u| vec![("unit", u)];
    let uc = |u, c| vec![("unit", u), ("channel", c)];
    let ut = |u, t| vec![("unit", u), ("timeliness", t)];
    let uo = |u, o| vec![("unit", u), ("outcome", o)];
    let pl = |p, l| vec![("procedure", p), ("level", l)];
    let plc = |p, l, c| vec![("procedure", p), ("level", l), ("channel", c)];
    let plt = |p, l, t| vec![("procedure", p), ("level", l), ("timeliness", t)];
    let kind = |k| vec![("kind", k)];
    vec![
        (
            "lienthong_kpi_unit_cases_received_total",
            uc("26734", "online"),
            2.0,
        ),
        (
            "lienthong_kpi_unit_cases_received_total",
            uc("26734", "counter"),
            2.0,
        ),
        (
            "lienthong_kpi_unit_cases_received_total",
            uc("27004", "postal"),
            1.0,
        ),
        (
            "lienthong_kpi_unit_cases_received_total",
            uc("27004", "online"),
            1.0,
        ),
        (
            "lienthong_kpi_unit_cases_received_total",
            uc("27004", "counter"),
            2.0,
        ),
        (
            "lienthong_kpi_unit_cases_end_to_end_online_total",
            unit("26734"),
            1.0,
        ),
        (
            "lienthong_kpi_unit_end_to_end_online_ratio",
            unit("26734"),
            0.25,
        ),
        (
            "lienthong_kpi_unit_end_to_end_online_ratio",
            unit("27004"),
            0.25,
        ),
        ("lienthong_kpi_unit_cases_accepted_total", unit("STP"), 2.0),
        (
            "lienthong_kpi_unit_cases_accepted_total",
            unit("27004"),
            1.0,
        ),
        (
            "lienthong_kpi_unit_cases_completed_total",
            ut("STP", "on_time"),
            1.0,
        ),
        (
            "lienthong_kpi_unit_cases_completed_total",
            ut("STP", "late"),
            1.0,
        ),
        (
            "lienthong_kpi_unit_cases_ended_total",
            uo("26734", "withdrawn"),
            1.0,
        ),
        (
            "lienthong_kpi_unit_cases_ended_total",
            uo("27004", "rejected"),
            1.0,
        ),
        ("lienthong_kpi_unit_cases_open", unit("STP"), 0.0),
        ("lienthong_kpi_unit_cases_open", unit("27004"), 1.0),
        ("lienthong_kpi_unit_cases_open", unit("SXD"), 1.0),
        ("lienthong_kpi_unit_cases_open", unit("26734"), 1.0),
        ("lienthong_kpi_unit_cases_open_overdue", unit("27004"), 1.0),
        ("lienthong_kpi_unit_cases_open_overdue", unit("SXD"), 0.0),
        ("lienthong_kpi_unit_cases_open_overdue", unit("26734"), 0.0),
        ("lienthong_kpi_unit_open_overdue_ratio", unit("27004"), 1.0),
        ("lienthong_kpi_unit_open_overdue_ratio", unit("26734"), 0.0),
        (
            "lienthong_kpi_unit_supplement_requests_total",
            unit("STP"),
            1.0,
        ),
        (
            "lienthong_kpi_unit_supplement_requests_total",
            unit("26734"),
            1.0,
        ),
        (
            "lienthong_kpi_unit_processing_duration_seconds_count",
            unit("STP"),
            2.0,
        ),
        // A: 2 → 13 Nov (11 days), B: 2 → 5 Nov (3 days).
        (
            "lienthong_kpi_unit_processing_duration_seconds_sum",
            unit("STP"),
            14.0 * 86_400.0,
        ),
        (
            "lienthong_kpi_unit_feedback_received_total",
            unit("26734"),
            2.0,
        ),
        (
            "lienthong_kpi_unit_feedback_received_total",
            unit("27004"),
            1.0,
        ),
        (
            "lienthong_kpi_unit_feedback_received_total",
            unit("STP"),
            1.0,
        ),
        (
            "lienthong_kpi_unit_feedback_resolved_total",
            unit("STP"),
            2.0,
        ),
        (
            "lienthong_kpi_unit_feedback_resolved_total",
            unit("26734"),
            1.0,
        ),
        (
            "lienthong_kpi_unit_feedback_satisfaction_average_score",
            unit("STP"),
            4.5,
        ),
        (
            "lienthong_kpi_unit_feedback_satisfaction_average_score",
            unit("26734"),
            2.0,
        ),
        // The weights of those averages.
        (
            "lienthong_kpi_unit_feedback_ratings_total",
            unit("STP"),
            2.0,
        ),
        (
            "lienthong_kpi_unit_feedback_rating_points_total",
            unit("STP"),
            9.0,
        ),
        (
            "lienthong_kpi_unit_feedback_ratings_total",
            unit("26734"),
            1.0,
        ),
        // Every case filed at 26734 is from an applicant of 27004; D was transferred out of
        // 27004.
        (
            "lienthong_kpi_unit_cases_received_outside_home_total",
            unit("26734"),
            4.0,
        ),
        (
            "lienthong_kpi_unit_case_transfers_total",
            unit("27004"),
            1.0,
        ),
        // FB3 is the one item open (never assigned: not past due); the others were resolved.
        ("lienthong_kpi_unit_feedback_open", unit("27004"), 1.0),
        (
            "lienthong_kpi_unit_feedback_open_overdue",
            unit("27004"),
            0.0,
        ),
        ("lienthong_kpi_unit_feedback_open", unit("26734"), 0.0),
        ("lienthong_kpi_unit_feedback_open", unit("STP"), 0.0),
        (
            "lienthong_kpi_unit_feedback_handling_working_days_count",
            unit("STP"),
            2.0,
        ),
        (
            "lienthong_kpi_unit_feedback_handling_working_days_count",
            unit("26734"),
            1.0,
        ),
        (
            "lienthong_kpi_procedure_cases_received_total",
            plc(PROC_TOP_ONLINE, "full_online", "online"),
            3.0,
        ),
        (
            "lienthong_kpi_procedure_cases_received_total",
            plc(PROC_TOP_PARTIAL, "partial_online", "counter"),
            2.0,
        ),
        (
            "lienthong_kpi_procedure_cases_received_total",
            plc("other", "offline", "postal"),
            1.0,
        ),
        (
            "lienthong_kpi_procedure_cases_received_total",
            plc("other", "offline", "counter"),
            2.0,
        ),
        (
            "lienthong_kpi_procedure_cases_accepted_total",
            pl(PROC_TOP_ONLINE, "full_online"),
            1.0,
        ),
        (
            "lienthong_kpi_procedure_cases_accepted_total",
            pl(PROC_TOP_PARTIAL, "partial_online"),
            1.0,
        ),
        (
            "lienthong_kpi_procedure_cases_accepted_total",
            pl("other", "offline"),
            1.0,
        ),
        (
            "lienthong_kpi_procedure_cases_completed_total",
            plt(PROC_TOP_ONLINE, "full_online", "on_time"),
            1.0,
        ),
        (
            "lienthong_kpi_procedure_cases_completed_total",
            plt(PROC_TOP_PARTIAL, "partial_online", "late"),
            1.0,
        ),
        (
            "lienthong_kpi_procedure_cases_open",
            pl(PROC_TOP_ONLINE, "full_online"),
            2.0,
        ),
        (
            "lienthong_kpi_procedure_cases_open",
            pl(PROC_TOP_PARTIAL, "partial_online"),
            0.0,
        ),
        (
            "lienthong_kpi_procedure_cases_open",
            pl("other", "offline"),
            1.0,
        ),
        (
            "lienthong_kpi_procedure_cases_open_overdue",
            pl(PROC_TOP_ONLINE, "full_online"),
            0.0,
        ),
        (
            "lienthong_kpi_procedure_cases_open_overdue",
            pl("other", "offline"),
            1.0,
        ),
        (
            "lienthong_kpi_procedure_supplement_requests_total",
            pl(PROC_TOP_ONLINE, "full_online"),
            2.0,
        ),
        (
            "lienthong_kpi_procedure_end_to_end_online_ratio",
            pl(PROC_TOP_ONLINE, "full_online"),
            2.0 / 3.0,
        ),
        (
            "lienthong_kpi_procedure_processing_duration_seconds_count",
            pl(PROC_TOP_PARTIAL, "partial_online"),
            1.0,
        ),
        ("lienthong_kpi_anomalies_total", kind("unknown_unit"), 1.0),
        (
            "lienthong_kpi_anomalies_total",
            kind("unknown_procedure"),
            1.0,
        ),
        (
            "lienthong_kpi_anomalies_total",
            kind("before_submission"),
            2.0,
        ),
        (
            "lienthong_kpi_anomalies_total",
            kind("completed_before_submitted"),
            1.0,
        ),
        ("lienthong_kpi_anomalies_total", kind("undecodable"), 1.0),
        ("lienthong_kpi_anomalies_total", kind("out_of_order"), 0.0),
        ("lienthong_kpi_anomalies_total", kind("after_close"), 0.0),
        ("lienthong_kpi_cases_tracked", vec![], 11.0),
        ("lienthong_kpi_caught_up", vec![], 1.0),
    ]
}

/// An idempotent producer and the codec with the catalog's local ids.
pub struct Sender {
    producer: FutureProducer,
    codec: Codec,
    case_id: u32,
    feedback_id: u32,
    pub case_topic: String,
    pub feedback_topic: String,
}

impl Sender {
    pub fn new(kafka: &lienthong_tests::Kafka, case_topic: &str, feedback_topic: &str) -> Sender {
        let catalog = Catalog::load(lienthong_contract::repo_schemas_dir()).unwrap();
        Sender {
            producer: kafka.idempotent_producer().unwrap(),
            codec: Codec::from_catalog(&catalog).unwrap(),
            case_id: catalog.local_id("hcm.case.events").unwrap(),
            feedback_id: catalog.local_id("hcm.feedback.events").unwrap(),
            case_topic: case_topic.to_string(),
            feedback_topic: feedback_topic.to_string(),
        }
    }

    pub async fn send(&self, items: &[Item]) -> Result<()> {
        for item in items {
            let (topic, key, payload) = match item {
                Item::Case(e) => (
                    &self.case_topic,
                    e.envelope.aggregate_id.clone(),
                    self.codec.encode_to_vec(self.case_id, e)?,
                ),
                Item::Feedback(e) => (
                    &self.feedback_topic,
                    e.envelope.aggregate_id.clone(),
                    self.codec.encode_to_vec(self.feedback_id, e)?,
                ),
                Item::Garbage(bytes) => (&self.case_topic, "garbage".to_string(), bytes.clone()),
            };
            self.producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| anyhow::anyhow!("producing to {topic}: {e}"))?;
        }
        Ok(())
    }
}

/// A running engine: its telemetry, its `/metrics` URL, and how to stop it.
pub struct Running {
    pub telemetry: Arc<Telemetry>,
    pub url: String,
    pub addr: std::net::SocketAddr,
    engine: lienthong_telemetry::component::Running<lienthong_kpi::KpiError>,
}

impl Running {
    pub async fn start(config: KpiConfig) -> Result<Running> {
        Running::start_on(config, "127.0.0.1:0".parse()?).await
    }

    /// Start on a given address (a restart on the address Prometheus scrapes).
    pub async fn start_on(config: KpiConfig, addr: std::net::SocketAddr) -> Result<Running> {
        let telemetry = Telemetry::new("kpi")?;
        let listener =
            lienthong_telemetry::component::Listener::bind("kpi.listen", &addr.to_string()).await?;
        let addr = listener.addr();
        let engine = lienthong_kpi::start(config, listener, &telemetry, &CancellationToken::new())?;
        Ok(Running {
            telemetry,
            url: format!("http://{addr}/metrics"),
            addr,
            engine,
        })
    }

    pub async fn stop(self) -> Result<()> {
        self.engine.stop();
        tokio::time::timeout(Duration::from_secs(15), self.engine.wait()).await??;
        Ok(())
    }

    pub fn values(&self) -> Samples {
        Samples::parse(&self.telemetry.render())
    }

    /// Wait until the engine has caught up and read `records` records in all.
    pub async fn wait_for_records(&self, records: f64) -> Result<Samples> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.values();
            let read = s.sum("lienthong_kpi_events_total");
            if s.get("lienthong_kpi_caught_up", &[]) == Some(1.0) && read >= records {
                // One more export interval so the gauges reflect the last record.
                tokio::time::sleep(Duration::from_millis(500)).await;
                return Ok(self.values());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "engine read {read} of {records} records in 60 s:\n{}",
                    self.telemetry.render()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub use lienthong_tests::prometheus::Samples;

/// Check every expectation; returns the list of mismatches.
pub fn mismatches(samples: &Samples) -> Vec<String> {
    let mut wrong = Vec::new();
    for (name, labels, want) in scenario_expectations() {
        match samples.get(name, &labels) {
            Some(got) if (got - want).abs() < 1e-9 => {}
            got => wrong.push(format!("{name}{labels:?}: expected {want}, got {got:?}")),
        }
    }
    wrong
}
