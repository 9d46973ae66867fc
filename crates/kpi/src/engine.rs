//! The state machine: case and feedback events in, indicator tallies out. No I/O, no clock:
//! the caller passes "today" when it asks for the gauges.
//!
//! Every tally is a function of the set of events applied, not of how often they were
//! delivered: an event id already applied to its aggregate changes nothing. A record that
//! cannot be counted (unknown unit, a step before the submission, …) changes no indicator and
//! is tallied as an [`Anomaly`].

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use lienthong_contract::events::{
    CaseEvent, CaseEventKind, Channel, FeedbackEvent, FeedbackEventKind,
};

use crate::calendar::{Calendar, Day};
use crate::reference::{ProcedureKey, Reference};

/// Which stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stream {
    /// `hcm.case.events`.
    Case,
    /// `hcm.feedback.events`.
    Feedback,
}

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Changed the indicators (or the case's state).
    Applied,
    /// An event id already applied to this aggregate: nothing changed.
    Duplicate,
    /// An event of an aggregate whose submission was refused as an anomaly.
    Ignored,
    /// Not counted; see the anomaly tally.
    Anomaly,
}

impl Outcome {
    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
            Outcome::Anomaly => "anomaly",
        }
    }
}

/// Kinds of bad input, the `kind` label of `lienthong_kpi_anomalies_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Anomaly {
    /// The record is not a decodable event of the topic's schema.
    Undecodable,
    /// A unit code not in the reference list.
    UnknownUnit,
    /// A procedure code not in the reference list.
    UnknownProcedure,
    /// A step of a case or feedback item that was never submitted.
    BeforeSubmission,
    /// A second submission of the same case or feedback id (with a new event id).
    DuplicateSubmission,
    /// An aggregate version not after the last applied one, or a result returned before a
    /// decision.
    OutOfOrder,
    /// A step after the case or feedback item was closed.
    AfterClose,
    /// A completion whose time is before the submission's.
    CompletedBeforeSubmitted,
    /// Documents received while none were requested.
    NoPendingSupplement,
    /// A satisfaction rating outside 1–5 (the resolution still counts, the rating not).
    InvalidSatisfaction,
}

impl Anomaly {
    /// Every kind, for exporting zeros.
    pub const ALL: [Anomaly; 10] = [
        Anomaly::Undecodable,
        Anomaly::UnknownUnit,
        Anomaly::UnknownProcedure,
        Anomaly::BeforeSubmission,
        Anomaly::DuplicateSubmission,
        Anomaly::OutOfOrder,
        Anomaly::AfterClose,
        Anomaly::CompletedBeforeSubmitted,
        Anomaly::NoPendingSupplement,
        Anomaly::InvalidSatisfaction,
    ];

    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Anomaly::Undecodable => "undecodable",
            Anomaly::UnknownUnit => "unknown_unit",
            Anomaly::UnknownProcedure => "unknown_procedure",
            Anomaly::BeforeSubmission => "before_submission",
            Anomaly::DuplicateSubmission => "duplicate_submission",
            Anomaly::OutOfOrder => "out_of_order",
            Anomaly::AfterClose => "after_close",
            Anomaly::CompletedBeforeSubmitted => "completed_before_submitted",
            Anomaly::NoPendingSupplement => "no_pending_supplement",
            Anomaly::InvalidSatisfaction => "invalid_satisfaction",
        }
    }
}

/// Completed on or before the (extended) due date, or after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timeliness {
    /// On or before the due date.
    OnTime,
    /// After it.
    Late,
}

impl Timeliness {
    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Timeliness::OnTime => "on_time",
            Timeliness::Late => "late",
        }
    }
}

/// The `channel` label value.
pub fn channel_label(channel: Channel) -> &'static str {
    match channel {
        Channel::Online => "online",
        Channel::Counter => "counter",
        Channel::Postal => "postal",
        Channel::Unknown => "unknown",
    }
}

/// The cumulative counts, keyed by their label values. The exporter copies them into the
/// Prometheus counters; tests read them directly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tallies {
    /// Received, by (receiving unit, channel).
    pub unit_received: BTreeMap<(String, &'static str), u64>,
    /// Received end-to-end online, by receiving unit.
    pub unit_end_to_end_online: BTreeMap<String, u64>,
    /// Accepted, by processing unit.
    pub unit_accepted: BTreeMap<String, u64>,
    /// Completed, by (responsible unit, timeliness).
    pub unit_completed: BTreeMap<(String, Timeliness), u64>,
    /// Rejected or withdrawn, by (responsible unit, `rejected` | `withdrawn`).
    pub unit_ended: BTreeMap<(String, &'static str), u64>,
    /// Supplement requests, by responsible unit.
    pub unit_supplements: BTreeMap<String, u64>,
    /// Feedback received, by receiving unit.
    pub unit_feedback_received: BTreeMap<String, u64>,
    /// Feedback resolved, by resolving unit.
    pub unit_feedback_resolved: BTreeMap<String, u64>,
    /// Ratings, by resolving unit: (sum, count).
    pub unit_satisfaction: BTreeMap<String, (u64, u64)>,
    /// Received, by (procedure key, channel).
    pub procedure_received: BTreeMap<(ProcedureKey, &'static str), u64>,
    /// Received end-to-end online, by procedure key.
    pub procedure_end_to_end_online: BTreeMap<ProcedureKey, u64>,
    /// Accepted, by procedure key.
    pub procedure_accepted: BTreeMap<ProcedureKey, u64>,
    /// Completed, by (procedure key, timeliness).
    pub procedure_completed: BTreeMap<(ProcedureKey, Timeliness), u64>,
    /// Supplement requests, by procedure key.
    pub procedure_supplements: BTreeMap<ProcedureKey, u64>,
    /// Records, by stream and outcome.
    pub events: BTreeMap<(Stream, Outcome), u64>,
    /// Anomalies, by kind.
    pub anomalies: BTreeMap<Anomaly, u64>,
}

fn bump<K: Ord>(map: &mut BTreeMap<K, u64>, key: K) {
    *map.entry(key).or_insert(0) += 1;
}

/// A processing time to observe in the histograms.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Responsible unit at completion.
    pub unit: String,
    /// Procedure key.
    pub procedure: ProcedureKey,
    /// Seconds from submission to completion.
    pub seconds: f64,
}

/// The gauges, computed from the open cases for a given day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Open cases by responsible unit (units with open cases only; the exporter adds zeros).
    pub unit_open: BTreeMap<String, i64>,
    /// Open overdue cases by responsible unit.
    pub unit_overdue: BTreeMap<String, i64>,
    /// Open cases by procedure key.
    pub procedure_open: BTreeMap<ProcedureKey, i64>,
    /// Open overdue cases by procedure key.
    pub procedure_overdue: BTreeMap<ProcedureKey, i64>,
}

/// An event id as 128 bits: the UUID's value, or a hash of any other text.
pub fn event_key(event_id: &str) -> u128 {
    let hex: String = event_id.chars().filter(|c| *c != '-').collect();
    if hex.len() == 32
        && let Ok(v) = u128::from_str_radix(&hex, 16)
    {
        return v;
    }
    let mut a = std::hash::DefaultHasher::new();
    event_id.hash(&mut a);
    let mut b = std::hash::DefaultHasher::new();
    (event_id, 0x6c69_656e_u32).hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

#[derive(Debug)]
struct OpenCase {
    unit: String,
    procedure: ProcedureKey,
    submitted_at: i64,
    due: Day,
    /// Working days the clock was paused by supplements already received.
    paused: i32,
    /// The due date extended by `paused` working days.
    effective_due: Day,
    /// Local day a pending supplement was requested.
    pending_since: Option<Day>,
    closed: bool,
    version: i64,
}

#[derive(Debug)]
enum CaseState {
    /// Only steps seen, no submission (each counted as an anomaly).
    Orphan,
    /// The submission named an unknown unit or procedure: later steps are ignored.
    Refused,
    /// Submitted.
    Known(Box<OpenCase>),
}

#[derive(Debug)]
struct CaseEntry {
    seen: Vec<u128>,
    state: CaseState,
}

#[derive(Debug)]
struct FeedbackItem {
    unit: String,
    resolved: bool,
    version: i64,
}

#[derive(Debug)]
enum FeedbackState {
    Orphan,
    Refused,
    Known(FeedbackItem),
}

#[derive(Debug)]
struct FeedbackEntry {
    seen: Vec<u128>,
    state: FeedbackState,
}

/// The KPI engine's state: every case and feedback item seen, and the tallies.
#[derive(Debug)]
pub struct Engine {
    calendar: Calendar,
    reference: Reference,
    /// Case id → index in `entries`.
    cases: HashMap<String, usize>,
    entries: Vec<CaseEntry>,
    /// Indexes of the open cases, so the gauges visit only those.
    open: std::collections::HashSet<usize>,
    feedback: HashMap<String, FeedbackEntry>,
    tallies: Tallies,
    observations: Vec<Observation>,
}

impl Engine {
    /// An empty engine.
    pub fn new(calendar: Calendar, reference: Reference) -> Engine {
        Engine {
            calendar,
            reference,
            cases: HashMap::new(),
            entries: Vec::new(),
            open: std::collections::HashSet::new(),
            feedback: HashMap::new(),
            tallies: Tallies::default(),
            observations: Vec::new(),
        }
    }

    /// The calendar.
    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    /// The tallies so far.
    pub fn tallies(&self) -> &Tallies {
        &self.tallies
    }

    /// Processing times recorded since the last call.
    pub fn take_observations(&mut self) -> Vec<Observation> {
        std::mem::take(&mut self.observations)
    }

    /// How many cases are held (any state).
    pub fn cases_tracked(&self) -> usize {
        self.cases.len()
    }

    /// A record of `stream` that could not be decoded.
    pub fn undecodable(&mut self, stream: Stream) -> Outcome {
        self.anomaly(Anomaly::Undecodable);
        self.outcome(stream, Outcome::Anomaly)
    }

    fn anomaly(&mut self, kind: Anomaly) {
        bump(&mut self.tallies.anomalies, kind);
    }

    fn outcome(&mut self, stream: Stream, outcome: Outcome) -> Outcome {
        bump(&mut self.tallies.events, (stream, outcome));
        outcome
    }

    /// Apply one case event.
    pub fn apply_case(&mut self, event: &CaseEvent<&str>) -> Outcome {
        let outcome = self.case_step(event);
        self.outcome(Stream::Case, outcome)
    }

    fn case_step(&mut self, event: &CaseEvent<&str>) -> Outcome {
        let key = event_key(event.envelope.event_id);
        let aggregate = event.envelope.aggregate_id;
        let index = match self.cases.get(aggregate) {
            Some(i) => *i,
            None => {
                self.entries.push(CaseEntry {
                    seen: Vec::new(),
                    state: CaseState::Orphan,
                });
                let i = self.entries.len() - 1;
                self.cases.insert(aggregate.to_string(), i);
                i
            }
        };
        let entry = &mut self.entries[index];
        if entry.seen.contains(&key) {
            return Outcome::Duplicate;
        }
        entry.seen.push(key);
        let calendar = &self.calendar;
        let reference = &self.reference;
        let tallies = &mut self.tallies;
        let observations = &mut self.observations;
        let result = match &mut entry.state {
            CaseState::Refused => return Outcome::Ignored,
            CaseState::Orphan => match &event.event {
                CaseEventKind::CaseSubmitted(s) => match submit(reference, tallies, event, s) {
                    Ok(case) => {
                        entry.state = CaseState::Known(Box::new(case));
                        Ok(())
                    }
                    Err(kind) => {
                        entry.state = CaseState::Refused;
                        Err(kind)
                    }
                },
                _ => Err(Anomaly::BeforeSubmission),
            },
            CaseState::Known(case) => step(reference, calendar, tallies, observations, case, event),
        };
        if matches!(&entry.state, CaseState::Known(case) if !case.closed) {
            self.open.insert(index);
        } else {
            self.open.remove(&index);
        }
        match result {
            Ok(()) => Outcome::Applied,
            Err(kind) => {
                self.anomaly(kind);
                Outcome::Anomaly
            }
        }
    }

    /// Apply one feedback event.
    pub fn apply_feedback(&mut self, event: &FeedbackEvent<&str>) -> Outcome {
        let outcome = self.feedback_step(event);
        self.outcome(Stream::Feedback, outcome)
    }

    fn feedback_step(&mut self, event: &FeedbackEvent<&str>) -> Outcome {
        let key = event_key(event.envelope.event_id);
        let entry = self
            .feedback
            .entry(event.envelope.aggregate_id.to_string())
            .or_insert_with(|| FeedbackEntry {
                seen: Vec::new(),
                state: FeedbackState::Orphan,
            });
        if entry.seen.contains(&key) {
            return Outcome::Duplicate;
        }
        entry.seen.push(key);
        let version = event.envelope.aggregate_version;
        let tallies = &mut self.tallies;
        let reference = &self.reference;
        let mut extra = None;
        let result = match (&mut entry.state, &event.event) {
            (FeedbackState::Refused, _) => return Outcome::Ignored,
            (FeedbackState::Orphan, FeedbackEventKind::FeedbackSubmitted(s)) => {
                if reference.knows_unit(s.receiving_unit) {
                    bump(
                        &mut tallies.unit_feedback_received,
                        s.receiving_unit.to_string(),
                    );
                    entry.state = FeedbackState::Known(FeedbackItem {
                        unit: s.receiving_unit.to_string(),
                        resolved: false,
                        version,
                    });
                    Ok(())
                } else {
                    entry.state = FeedbackState::Refused;
                    Err(Anomaly::UnknownUnit)
                }
            }
            (FeedbackState::Orphan, _) => Err(Anomaly::BeforeSubmission),
            (FeedbackState::Known(_), FeedbackEventKind::FeedbackSubmitted(_)) => {
                Err(Anomaly::DuplicateSubmission)
            }
            (FeedbackState::Known(item), _) if version <= item.version => Err(Anomaly::OutOfOrder),
            (FeedbackState::Known(item), _) if item.resolved => Err(Anomaly::AfterClose),
            (FeedbackState::Known(item), FeedbackEventKind::FeedbackAssigned(a)) => {
                if reference.knows_unit(a.to_unit) {
                    item.unit = a.to_unit.to_string();
                    item.version = version;
                    Ok(())
                } else {
                    Err(Anomaly::UnknownUnit)
                }
            }
            (FeedbackState::Known(item), FeedbackEventKind::FeedbackResolved(r)) => {
                item.resolved = true;
                item.version = version;
                bump(&mut tallies.unit_feedback_resolved, item.unit.clone());
                match r.satisfaction {
                    Some(score @ 1..=5) => {
                        let entry = tallies
                            .unit_satisfaction
                            .entry(item.unit.clone())
                            .or_insert((0, 0));
                        entry.0 += score as u64;
                        entry.1 += 1;
                    }
                    Some(_) => extra = Some(Anomaly::InvalidSatisfaction),
                    None => {}
                }
                Ok(())
            }
        };
        if let Some(kind) = extra {
            self.anomaly(kind);
        }
        match result {
            Ok(()) => Outcome::Applied,
            Err(kind) => {
                self.anomaly(kind);
                Outcome::Anomaly
            }
        }
    }

    /// Open and overdue cases as of local day `today`. A case is overdue when it is open, no
    /// supplement is pending, and `today` is after its due date extended by the working days
    /// its supplements were pending.
    pub fn gauges(&self, today: Day) -> Gauges {
        // Count under borrowed keys (no allocation per case), then copy the few keys out.
        let mut units: HashMap<&str, (i64, i64)> = HashMap::new();
        let mut procedures: HashMap<&ProcedureKey, (i64, i64)> = HashMap::new();
        for index in &self.open {
            let Some(CaseState::Known(case)) = self.entries.get(*index).map(|e| &e.state) else {
                continue;
            };
            let open = i64::from(!case.closed);
            let overdue = i64::from(
                !case.closed && case.pending_since.is_none() && today > case.effective_due,
            );
            let u = units.entry(case.unit.as_str()).or_default();
            u.0 += open;
            u.1 += overdue;
            let p = procedures.entry(&case.procedure).or_default();
            p.0 += open;
            p.1 += overdue;
        }
        let mut g = Gauges::default();
        for (unit, (open, overdue)) in units {
            g.unit_open.insert(unit.to_string(), open);
            g.unit_overdue.insert(unit.to_string(), overdue);
        }
        for (key, (open, overdue)) in procedures {
            g.procedure_open.insert(key.clone(), open);
            g.procedure_overdue.insert(key.clone(), overdue);
        }
        g
    }
}

fn submit(
    reference: &Reference,
    tallies: &mut Tallies,
    event: &CaseEvent<&str>,
    s: &lienthong_contract::events::CaseSubmitted<&str>,
) -> Result<OpenCase, Anomaly> {
    if !reference.knows_unit(s.receiving_unit) {
        return Err(Anomaly::UnknownUnit);
    }
    let procedure = reference
        .procedure_key(s.procedure_code)
        .ok_or(Anomaly::UnknownProcedure)?;
    let unit = s.receiving_unit.to_string();
    let channel = channel_label(s.channel);
    bump(&mut tallies.unit_received, (unit.clone(), channel));
    bump(
        &mut tallies.procedure_received,
        (procedure.clone(), channel),
    );
    if s.end_to_end_online {
        bump(&mut tallies.unit_end_to_end_online, unit.clone());
        bump(&mut tallies.procedure_end_to_end_online, procedure.clone());
    }
    Ok(OpenCase {
        unit,
        procedure,
        submitted_at: event.envelope.occurred_at,
        due: s.due_date,
        paused: 0,
        effective_due: s.due_date,
        pending_since: None,
        closed: false,
        version: event.envelope.aggregate_version,
    })
}

/// End a pending supplement pause on local day `day`.
fn end_pause(calendar: &Calendar, case: &mut OpenCase, day: Day) {
    if let Some(since) = case.pending_since.take() {
        case.paused = case
            .paused
            .saturating_add(calendar.working_days_between(since, day));
        case.effective_due = calendar.add_working_days(case.due, case.paused);
    }
}

fn step(
    reference: &Reference,
    calendar: &Calendar,
    tallies: &mut Tallies,
    observations: &mut Vec<Observation>,
    case: &mut OpenCase,
    event: &CaseEvent<&str>,
) -> Result<(), Anomaly> {
    use CaseEventKind::*;
    let version = event.envelope.aggregate_version;
    if let CaseSubmitted(_) = event.event {
        return Err(Anomaly::DuplicateSubmission);
    }
    if version <= case.version {
        return Err(Anomaly::OutOfOrder);
    }
    let day = calendar.local_day(event.envelope.occurred_at);
    match &event.event {
        ResultReturned(_) if !case.closed => return Err(Anomaly::OutOfOrder),
        ResultReturned(_) => {}
        _ if case.closed => return Err(Anomaly::AfterClose),
        CaseSubmitted(_) => return Err(Anomaly::DuplicateSubmission),
        CaseAccepted(a) => {
            if !reference.knows_unit(a.processing_unit) {
                return Err(Anomaly::UnknownUnit);
            }
            case.unit = a.processing_unit.to_string();
            bump(&mut tallies.unit_accepted, case.unit.clone());
            bump(&mut tallies.procedure_accepted, case.procedure.clone());
        }
        CaseAssigned(a) => {
            if !reference.knows_unit(a.to_unit) {
                return Err(Anomaly::UnknownUnit);
            }
            case.unit = a.to_unit.to_string();
        }
        SupplementRequested(_) => {
            if case.pending_since.is_none() {
                case.pending_since = Some(day);
            }
            bump(&mut tallies.unit_supplements, case.unit.clone());
            bump(&mut tallies.procedure_supplements, case.procedure.clone());
        }
        SupplementReceived(_) => {
            if case.pending_since.is_none() {
                return Err(Anomaly::NoPendingSupplement);
            }
            end_pause(calendar, case, day);
        }
        CaseCompleted(_) => {
            if event.envelope.occurred_at < case.submitted_at {
                // Closed, so it leaves the open set, but counted nowhere else.
                case.closed = true;
                case.pending_since = None;
                case.version = version;
                return Err(Anomaly::CompletedBeforeSubmitted);
            }
            end_pause(calendar, case, day);
            case.closed = true;
            let timeliness = if day <= case.effective_due {
                Timeliness::OnTime
            } else {
                Timeliness::Late
            };
            bump(&mut tallies.unit_completed, (case.unit.clone(), timeliness));
            bump(
                &mut tallies.procedure_completed,
                (case.procedure.clone(), timeliness),
            );
            observations.push(Observation {
                unit: case.unit.clone(),
                procedure: case.procedure.clone(),
                seconds: (event.envelope.occurred_at - case.submitted_at) as f64 / 1000.0,
            });
        }
        CaseRejected(_) | CaseWithdrawn(_) => {
            let outcome = if matches!(event.event, CaseRejected(_)) {
                "rejected"
            } else {
                "withdrawn"
            };
            case.closed = true;
            case.pending_since = None;
            bump(&mut tallies.unit_ended, (case.unit.clone(), outcome));
        }
    }
    case.version = version;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::calendar::parse_date;
    use crate::reference::{Level, ReferenceFile};
    use lienthong_contract::events::*;

    const HOUR: i64 = 3_600_000;

    fn reference() -> Reference {
        let file: ReferenceFile = toml::from_str(
            r#"
            units = ["W1", "W2", "STP"]
            [[procedures]]
            code = "P1"
            level = "FULL_ONLINE"
            [[procedures]]
            code = "P2"
            level = "OFFLINE"
            "#,
        )
        .unwrap();
        Reference::new([file], &["P1".to_string()]).unwrap()
    }

    fn engine() -> Engine {
        Engine::new(Calendar::vietnam_2026(), reference())
    }

    fn day(s: &str) -> Day {
        parse_date(s).unwrap()
    }

    /// Local 09:00 in Ho Chi Minh City on `date`, in milliseconds.
    fn at(date: &str) -> i64 {
        i64::from(day(date)) * 86_400_000 + 2 * HOUR
    }

    struct Case {
        id: String,
        version: i64,
        seq: u64,
    }

    impl Case {
        fn new(id: &str) -> Case {
            Case {
                id: id.into(),
                version: 0,
                seq: 0,
            }
        }
        fn event(&mut self, when: i64, event: CaseEventKind) -> CaseEvent {
            self.version += 1;
            self.seq += 1;
            CaseEvent {
                envelope: Envelope {
                    event_id: format!("{}-{}", self.id, self.seq),
                    occurred_at: when,
                    producer_unit: "W1".into(),
                    aggregate_id: self.id.clone(),
                    aggregate_version: self.version,
                    correlation_id: "c".into(),
                },
                event,
            }
        }
    }

    fn submitted(
        unit: &str,
        procedure: &str,
        channel: Channel,
        e2e: bool,
        due: &str,
    ) -> CaseEventKind {
        CaseEventKind::CaseSubmitted(CaseSubmitted {
            procedure_code: procedure.into(),
            receiving_unit: unit.into(),
            home_unit: "W2".into(),
            channel,
            end_to_end_online: e2e,
            applicant_id: "079203001234".into(),
            due_date: day(due),
            documents: vec![],
        })
    }

    fn accepted(unit: &str) -> CaseEventKind {
        CaseEventKind::CaseAccepted(CaseAccepted {
            processing_unit: unit.into(),
        })
    }

    fn completed() -> CaseEventKind {
        CaseEventKind::CaseCompleted(CaseCompleted {
            result: "ok".into(),
            result_document: None,
        })
    }

    fn supplement_requested() -> CaseEventKind {
        CaseEventKind::SupplementRequested(SupplementRequested {
            reason: "r".into(),
            requested_documents: vec![],
        })
    }

    fn supplement_received() -> CaseEventKind {
        CaseEventKind::SupplementReceived(SupplementReceived { documents: vec![] })
    }

    fn apply(engine: &mut Engine, event: &CaseEvent) -> Outcome {
        let bytes = serde_json::to_string(event).unwrap();
        let borrowed: CaseEvent<&str> = serde_json::from_str(&bytes).unwrap();
        engine.apply_case(&borrowed)
    }

    fn feedback(id: &str, version: i64, seq: u64, event: FeedbackEventKind) -> FeedbackEvent {
        FeedbackEvent {
            envelope: Envelope {
                event_id: format!("{id}-{seq}"),
                occurred_at: at("2026-11-02"),
                producer_unit: "W1".into(),
                aggregate_id: id.into(),
                aggregate_version: version,
                correlation_id: "c".into(),
            },
            event,
        }
    }

    fn apply_feedback(engine: &mut Engine, event: &FeedbackEvent) -> Outcome {
        let bytes = serde_json::to_string(event).unwrap();
        let borrowed: FeedbackEvent<&str> = serde_json::from_str(&bytes).unwrap();
        engine.apply_feedback(&borrowed)
    }

    fn p1() -> ProcedureKey {
        ("P1".to_string(), Level::FullOnline)
    }

    fn other() -> ProcedureKey {
        ("other".to_string(), Level::Offline)
    }

    #[test]
    fn a_case_on_time_and_a_case_late() {
        let mut e = engine();
        let mut a = Case::new("A");
        let mut b = Case::new("B");
        let events = [
            a.event(
                at("2026-11-02"),
                submitted("W1", "P1", Channel::Online, true, "2026-11-06"),
            ),
            a.event(at("2026-11-02"), accepted("STP")),
            a.event(at("2026-11-06"), completed()),
            b.event(
                at("2026-11-02"),
                submitted("W1", "P2", Channel::Counter, false, "2026-11-04"),
            ),
            b.event(at("2026-11-05"), completed()),
        ];
        for ev in &events {
            assert_eq!(apply(&mut e, ev), Outcome::Applied);
        }
        let t = e.tallies();
        assert_eq!(t.unit_received[&("W1".to_string(), "online")], 1);
        assert_eq!(t.unit_received[&("W1".to_string(), "counter")], 1);
        assert_eq!(t.unit_end_to_end_online["W1"], 1);
        assert_eq!(t.unit_accepted["STP"], 1);
        assert_eq!(
            t.unit_completed[&("STP".to_string(), Timeliness::OnTime)],
            1
        );
        assert_eq!(t.unit_completed[&("W1".to_string(), Timeliness::Late)], 1);
        assert_eq!(t.procedure_received[&(p1(), "online")], 1);
        assert_eq!(t.procedure_received[&(other(), "counter")], 1);
        assert_eq!(t.procedure_completed[&(p1(), Timeliness::OnTime)], 1);
        assert_eq!(t.procedure_completed[&(other(), Timeliness::Late)], 1);
        assert!(t.anomalies.is_empty());
        let obs = e.take_observations();
        assert_eq!(obs.len(), 2);
        assert_eq!(obs[0].seconds, 4.0 * 86_400.0);
        assert_eq!(obs[1].unit, "W1");
        let g = e.gauges(day("2026-11-28"));
        assert_eq!(g.unit_open.get("STP").copied().unwrap_or(0), 0);
        assert_eq!(g.unit_overdue.get("W1").copied().unwrap_or(0), 0);
    }

    #[test]
    fn open_and_overdue_follow_the_responsible_unit_and_today() {
        let mut e = engine();
        let mut a = Case::new("A");
        apply(
            &mut e,
            &a.event(
                at("2026-11-02"),
                submitted("W1", "P1", Channel::Postal, false, "2026-11-06"),
            ),
        );
        let g = e.gauges(day("2026-11-06"));
        assert_eq!(
            (
                g.unit_open.get("W1").copied().unwrap_or(0),
                g.unit_overdue.get("W1").copied().unwrap_or(0)
            ),
            (1, 0)
        );
        let g = e.gauges(day("2026-11-07"));
        assert_eq!(
            (
                g.unit_open.get("W1").copied().unwrap_or(0),
                g.unit_overdue.get("W1").copied().unwrap_or(0)
            ),
            (1, 1)
        );
        assert_eq!(g.procedure_overdue.get(&p1()).copied().unwrap_or(0), 1);
        apply(
            &mut e,
            &a.event(
                at("2026-11-03"),
                CaseEventKind::CaseAssigned(CaseAssigned {
                    from_unit: "W1".into(),
                    to_unit: "W2".into(),
                    kind: AssignmentKind::Transferred,
                    note: None,
                }),
            ),
        );
        let g = e.gauges(day("2026-11-07"));
        assert_eq!(g.unit_open.get("W1"), None);
        assert_eq!(g.unit_open.get("W2").copied().unwrap_or(0), 1);
        assert_eq!(g.unit_overdue.get("W2").copied().unwrap_or(0), 1);
        apply(
            &mut e,
            &a.event(
                at("2026-11-09"),
                CaseEventKind::CaseWithdrawn(CaseWithdrawn { reason: None }),
            ),
        );
        let g = e.gauges(day("2026-11-30"));
        assert_eq!(
            (
                g.unit_open.get("W2").copied().unwrap_or(0),
                g.unit_overdue.get("W2").copied().unwrap_or(0)
            ),
            (0, 0)
        );
        assert_eq!(e.tallies().unit_ended[&("W2".to_string(), "withdrawn")], 1);
    }

    #[test]
    fn a_pending_supplement_pauses_the_clock_in_working_days() {
        let mut e = engine();
        let mut a = Case::new("A");
        // Due Friday 6 Nov. Supplement requested Wednesday 4 Nov, received Wednesday 11 Nov:
        // paused 4, 5, 6, 9, 10 Nov = 5 working days, so the due date moves to Friday 13 Nov.
        apply(
            &mut e,
            &a.event(
                at("2026-11-02"),
                submitted("W1", "P1", Channel::Online, true, "2026-11-06"),
            ),
        );
        apply(&mut e, &a.event(at("2026-11-04"), supplement_requested()));
        // While pending, never overdue.
        let g = e.gauges(day("2026-11-10"));
        assert_eq!(
            (
                g.unit_open.get("W1").copied().unwrap_or(0),
                g.unit_overdue.get("W1").copied().unwrap_or(0)
            ),
            (1, 0)
        );
        apply(&mut e, &a.event(at("2026-11-11"), supplement_received()));
        assert_eq!(
            e.gauges(day("2026-11-13"))
                .unit_overdue
                .get("W1")
                .copied()
                .unwrap_or(0),
            0
        );
        assert_eq!(
            e.gauges(day("2026-11-14"))
                .unit_overdue
                .get("W1")
                .copied()
                .unwrap_or(0),
            1
        );
        apply(&mut e, &a.event(at("2026-11-13"), completed()));
        let t = e.tallies();
        assert_eq!(t.unit_completed[&("W1".to_string(), Timeliness::OnTime)], 1);
        assert_eq!(t.unit_supplements["W1"], 1);
        assert_eq!(t.procedure_supplements[&p1()], 1);
    }

    #[test]
    fn the_pause_skips_holidays_and_ends_at_completion() {
        let mut e = engine();
        let mut a = Case::new("A");
        // Due Thursday 29 Apr 2026; supplement requested Tuesday 28 Apr, never received,
        // completed Tuesday 5 May: paused 28, 29 Apr and 4 May (30 Apr, 1 May holidays,
        // 2–3 May weekend) = 3 working days, due moves to Tuesday 5 May: on time.
        apply(
            &mut e,
            &a.event(
                at("2026-04-20"),
                submitted("W1", "P2", Channel::Counter, false, "2026-04-29"),
            ),
        );
        apply(&mut e, &a.event(at("2026-04-28"), supplement_requested()));
        apply(&mut e, &a.event(at("2026-05-05"), completed()));
        assert_eq!(
            e.tallies().unit_completed[&("W1".to_string(), Timeliness::OnTime)],
            1
        );
        let mut b = Case::new("B");
        apply(
            &mut e,
            &b.event(
                at("2026-04-20"),
                submitted("W1", "P2", Channel::Counter, false, "2026-04-29"),
            ),
        );
        apply(&mut e, &b.event(at("2026-05-04"), completed()));
        apply(
            &mut e,
            &Case {
                id: "C".into(),
                version: 0,
                seq: 0,
            }
            .event(
                at("2026-04-20"),
                submitted("W1", "P2", Channel::Counter, false, "2026-04-29"),
            ),
        );
        // B: no pause, completed 4 May after 29 Apr: late.
        assert_eq!(
            e.tallies().unit_completed[&("W1".to_string(), Timeliness::Late)],
            1
        );
    }

    #[test]
    fn duplicates_change_nothing() {
        let mut e = engine();
        let mut a = Case::new("A");
        let events = [
            a.event(
                at("2026-11-02"),
                submitted("W1", "P1", Channel::Online, true, "2026-11-06"),
            ),
            a.event(at("2026-11-03"), supplement_requested()),
            a.event(at("2026-11-04"), completed()),
        ];
        for ev in &events {
            apply(&mut e, ev);
        }
        let before = e.tallies().clone();
        let gauges = e.gauges(day("2026-11-28"));
        for ev in events.iter().chain(events.iter()) {
            assert_eq!(apply(&mut e, ev), Outcome::Duplicate);
        }
        let mut after = e.tallies().clone();
        assert_eq!(
            after.events.remove(&(Stream::Case, Outcome::Duplicate)),
            Some(6)
        );
        let mut before_no_dup = before.clone();
        before_no_dup
            .events
            .remove(&(Stream::Case, Outcome::Duplicate));
        assert_eq!(after, before_no_dup);
        assert_eq!(e.gauges(day("2026-11-28")), gauges);
        assert_eq!(e.take_observations().len(), 1);
    }

    #[test]
    fn bad_input_is_counted_and_changes_no_indicator() {
        let mut e = engine();
        // Unknown unit, then a later step of the same case: ignored, not another anomaly.
        let mut u = Case::new("U");
        assert_eq!(
            apply(
                &mut e,
                &u.event(
                    at("2026-11-02"),
                    submitted("NOPE", "P1", Channel::Online, true, "2026-11-06")
                )
            ),
            Outcome::Anomaly
        );
        assert_eq!(
            apply(&mut e, &u.event(at("2026-11-03"), completed())),
            Outcome::Ignored
        );
        // Unknown procedure.
        let mut p = Case::new("P");
        assert_eq!(
            apply(
                &mut e,
                &p.event(
                    at("2026-11-02"),
                    submitted("W1", "9.999", Channel::Online, true, "2026-11-06")
                )
            ),
            Outcome::Anomaly
        );
        // Completion of a case never submitted.
        let mut o = Case::new("O");
        o.version = 4;
        assert_eq!(
            apply(&mut e, &o.event(at("2026-11-03"), completed())),
            Outcome::Anomaly
        );
        // A good case with bad steps.
        let mut g = Case::new("G");
        apply(
            &mut e,
            &g.event(
                at("2026-11-02"),
                submitted("W1", "P1", Channel::Online, false, "2026-11-06"),
            ),
        );
        assert_eq!(
            apply(
                &mut e,
                &g.event(
                    at("2026-11-02"),
                    submitted("W1", "P1", Channel::Online, false, "2026-11-06")
                )
            ),
            Outcome::Anomaly
        );
        assert_eq!(
            apply(&mut e, &g.event(at("2026-11-03"), accepted("XX"))),
            Outcome::Anomaly
        );
        assert_eq!(
            apply(&mut e, &g.event(at("2026-11-03"), supplement_received())),
            Outcome::Anomaly
        );
        assert_eq!(
            apply(
                &mut e,
                &g.event(
                    at("2026-11-03"),
                    CaseEventKind::ResultReturned(ResultReturned {
                        channel: Channel::Online
                    })
                )
            ),
            Outcome::Anomaly
        );
        // Out of order: a version not after the last applied one.
        let mut stale = g.event(at("2026-11-03"), accepted("STP"));
        stale.envelope.aggregate_version = 1;
        assert_eq!(apply(&mut e, &stale), Outcome::Anomaly);
        assert_eq!(
            apply(&mut e, &g.event(at("2026-11-04"), completed())),
            Outcome::Applied
        );
        assert_eq!(
            apply(&mut e, &g.event(at("2026-11-05"), completed())),
            Outcome::Anomaly
        );
        assert_eq!(
            apply(
                &mut e,
                &g.event(
                    at("2026-11-05"),
                    CaseEventKind::ResultReturned(ResultReturned {
                        channel: Channel::Online
                    })
                )
            ),
            Outcome::Applied
        );
        // Completion before submission (by time): closed, counted nowhere else.
        let mut t = Case::new("T");
        apply(
            &mut e,
            &t.event(
                at("2026-11-10"),
                submitted("W2", "P1", Channel::Online, false, "2026-11-16"),
            ),
        );
        assert_eq!(
            apply(&mut e, &t.event(at("2026-11-09"), completed())),
            Outcome::Anomaly
        );

        let tallies = e.tallies();
        let kinds: Vec<(&str, u64)> = tallies
            .anomalies
            .iter()
            .map(|(k, v)| (k.as_label(), *v))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("unknown_unit", 2),
                ("unknown_procedure", 1),
                ("before_submission", 1),
                ("duplicate_submission", 1),
                ("out_of_order", 2),
                ("after_close", 1),
                ("completed_before_submitted", 1),
                ("no_pending_supplement", 1),
            ]
        );
        // Only G and T were counted as received; only G completed.
        let received: u64 = tallies.unit_received.values().sum();
        assert_eq!(received, 2);
        let completed: u64 = tallies.unit_completed.values().sum();
        assert_eq!(completed, 1);
        assert!(!tallies.unit_accepted.contains_key("XX"));
        assert!(!tallies.unit_received.keys().any(|(u, _)| u == "NOPE"));
        let g = e.gauges(day("2026-11-28"));
        assert_eq!(g.unit_open.values().sum::<i64>(), 0);
        assert_eq!(tallies.events[&(Stream::Case, Outcome::Ignored)], 1);
        assert_eq!(e.take_observations().len(), 1);
    }

    #[test]
    fn undecodable_records_are_anomalies() {
        let mut e = engine();
        assert_eq!(e.undecodable(Stream::Feedback), Outcome::Anomaly);
        assert_eq!(e.tallies().anomalies[&Anomaly::Undecodable], 1);
        assert_eq!(e.tallies().events[&(Stream::Feedback, Outcome::Anomaly)], 1);
    }

    #[test]
    fn feedback_received_resolved_and_rated() {
        let mut e = engine();
        let submitted = |unit: &str| {
            FeedbackEventKind::FeedbackSubmitted(FeedbackSubmitted {
                receiving_unit: unit.into(),
                channel: Channel::Online,
                category: "land".into(),
                content: "x".into(),
                related_case_id: None,
                citizen_id: None,
            })
        };
        let resolved = |s: Option<i32>| {
            FeedbackEventKind::FeedbackResolved(FeedbackResolved {
                resolution: "done".into(),
                satisfaction: s,
            })
        };
        let assigned = FeedbackEventKind::FeedbackAssigned(FeedbackAssigned {
            to_unit: "STP".into(),
            due_date: day("2026-11-10"),
        });
        let f1 = [
            feedback("F1", 1, 1, submitted("W1")),
            feedback("F1", 2, 2, assigned.clone()),
            feedback("F1", 3, 3, resolved(Some(4))),
        ];
        for ev in &f1 {
            assert_eq!(apply_feedback(&mut e, ev), Outcome::Applied);
            assert_eq!(apply_feedback(&mut e, ev), Outcome::Duplicate);
        }
        apply_feedback(&mut e, &feedback("F2", 1, 1, submitted("W1")));
        apply_feedback(&mut e, &feedback("F2", 2, 2, resolved(Some(9))));
        apply_feedback(&mut e, &feedback("F3", 1, 1, submitted("W2")));
        apply_feedback(&mut e, &feedback("F3", 2, 2, resolved(Some(1))));
        assert_eq!(
            apply_feedback(&mut e, &feedback("F3", 3, 3, resolved(Some(5)))),
            Outcome::Anomaly
        );
        assert_eq!(
            apply_feedback(&mut e, &feedback("F4", 2, 1, resolved(Some(5)))),
            Outcome::Anomaly
        );
        assert_eq!(
            apply_feedback(&mut e, &feedback("F5", 1, 1, submitted("ZZ"))),
            Outcome::Anomaly
        );
        assert_eq!(
            apply_feedback(&mut e, &feedback("F5", 2, 2, resolved(None))),
            Outcome::Ignored
        );
        let t = e.tallies();
        assert_eq!(t.unit_feedback_received["W1"], 2);
        assert_eq!(t.unit_feedback_received["W2"], 1);
        assert_eq!(t.unit_feedback_resolved["STP"], 1);
        assert_eq!(t.unit_feedback_resolved["W1"], 1);
        assert_eq!(t.unit_satisfaction["STP"], (4, 1));
        assert!(!t.unit_satisfaction.contains_key("W1"));
        assert_eq!(t.unit_satisfaction["W2"], (1, 1));
        assert_eq!(t.anomalies[&Anomaly::InvalidSatisfaction], 1);
        assert_eq!(t.anomalies[&Anomaly::AfterClose], 1);
        assert_eq!(t.anomalies[&Anomaly::BeforeSubmission], 1);
        assert_eq!(t.anomalies[&Anomaly::UnknownUnit], 1);
    }

    #[test]
    fn event_keys() {
        assert_eq!(
            event_key("00000000-0000-4000-8000-00000000000a"),
            0x0000_0000_0000_4000_8000_0000_0000_000a
        );
        assert_eq!(event_key("not a uuid"), event_key("not a uuid"));
        assert_ne!(event_key("a"), event_key("b"));
    }
}
