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

/// Completed before the (extended) due date, on it, or after it: the three classes of the
/// national service index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timeliness {
    /// Before the due date.
    Early,
    /// On the due date.
    OnTime,
    /// After it.
    Late,
}

impl Timeliness {
    /// Every class.
    pub const ALL: [Timeliness; 3] = [Timeliness::Early, Timeliness::OnTime, Timeliness::Late];

    /// The class of a completion on local day `day` of a case due on `due`.
    pub fn of(day: Day, due: Day) -> Timeliness {
        match day.cmp(&due) {
            std::cmp::Ordering::Less => Timeliness::Early,
            std::cmp::Ordering::Equal => Timeliness::OnTime,
            std::cmp::Ordering::Greater => Timeliness::Late,
        }
    }

    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Timeliness::Early => "early",
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
    /// Received from an applicant whose home unit is another (filed "outside the home ward"),
    /// by receiving unit.
    pub unit_outside_home: BTreeMap<String, u64>,
    /// Received and completed, by (local day of the event, unit, measure): `received`
    /// (receiving unit), the completion's timeliness label (responsible unit),
    /// `feedback_received` (receiving unit) or `feedback_resolved` (resolving unit). The periods
    /// and the month's trend are sums over it. A city's year is about 168 units × 365 days ×
    /// 4 measures, some 250,000 entries at most.
    pub unit_daily: BTreeMap<(Day, String, &'static str), u64>,
    /// Transfers to another competent unit (`CaseAssigned` of kind `TRANSFERRED`), by the
    /// unit transferring the case out.
    pub unit_transfers: BTreeMap<String, u64>,
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
    /// Working days from submission to completion, the supplement pauses left out.
    pub working_days: i32,
}

/// A span in working days, by unit, to observe in a histogram: how long a unit held a case,
/// or took to resolve a feedback item. Local days of the calendar: the first day counts, the
/// last does not (the same day is 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingDays {
    /// The unit.
    pub unit: String,
    /// Working days.
    pub working_days: i32,
}

/// A calendar month, as year × 12 + (month − 1).
pub type Month = i32;

/// The calendar month of local day `day`.
pub fn month_of(day: Day) -> Month {
    let (year, month, _) = crate::calendar::civil_from_days(day);
    year * 12 + month as i32 - 1
}

/// The measures of [`Tallies::unit_daily`] besides the completions' timeliness labels.
const RECEIVED: &str = "received";
const FEEDBACK_RECEIVED: &str = "feedback_received";
const FEEDBACK_RESOLVED: &str = "feedback_resolved";

/// The periods an analyst compares, relative to today: the `period` label.
pub const PERIODS: [&str; 4] = ["this_month", "last_month", "this_quarter", "last_quarter"];

/// The months of each of [`PERIODS`], as a range, for local day `today`.
pub fn period_months(today: Day) -> [std::ops::RangeInclusive<Month>; 4] {
    let month = month_of(today);
    let quarter = month.div_euclid(3) * 3;
    [
        month..=month,
        month - 1..=month - 1,
        quarter..=quarter + 2,
        quarter - 3..=quarter - 1,
    ]
}

/// Cases received and completed in each period, by unit: (unit, period) → received, and
/// (unit, period, timeliness) → completed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeriodCounts {
    /// Received, by (receiving unit, period).
    pub received: BTreeMap<(String, &'static str), u64>,
    /// Completed, by (responsible unit, period, timeliness label).
    pub completed: BTreeMap<(String, &'static str, &'static str), u64>,
    /// Feedback received, by (receiving unit, period).
    pub feedback_received: BTreeMap<(String, &'static str), u64>,
    /// Feedback resolved, by (resolving unit, period).
    pub feedback_resolved: BTreeMap<(String, &'static str), u64>,
}

/// Cases received and completed, and feedback received and resolved, at one unit on one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayCounts {
    /// Received (as receiving unit).
    pub received: u64,
    /// Completed before the due date (as responsible unit).
    pub early: u64,
    /// Completed on the due date.
    pub on_time: u64,
    /// Completed after it.
    pub late: u64,
    /// Feedback items received (as receiving unit).
    pub feedback_received: u64,
    /// Feedback items resolved (as the unit handling them).
    pub feedback_resolved: u64,
}

impl DayCounts {
    /// Completed, whatever the timeliness.
    pub fn completed(&self) -> u64 {
        self.early + self.on_time + self.late
    }
}

/// The current month day by day, per unit ([`Engine::month_trend`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonthTrend {
    /// The month's first local day.
    pub first_day: Day,
    /// The last day counted (today).
    pub today: Day,
    /// Unit → one entry per day from `first_day` to `today` (units with no case this month
    /// are absent).
    pub units: BTreeMap<String, Vec<DayCounts>>,
}

/// The gauges, computed from the open cases and feedback items for a given day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Open feedback items by handling unit (units with open items only).
    pub unit_feedback_open: BTreeMap<String, i64>,
    /// Of those, past the due date of their latest assignment.
    pub unit_feedback_overdue: BTreeMap<String, i64>,
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
    /// Local day of the submission.
    submitted: Day,
    /// Local day the responsible unit became responsible.
    held_since: Day,
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
    /// Local day of the submission.
    submitted: Day,
    /// Due date of the latest assignment (none before the first).
    due: Option<Day>,
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
    /// Ids of the feedback items not resolved yet, so the gauges visit only those.
    open_feedback: std::collections::HashSet<String>,
    tallies: Tallies,
    observations: Vec<Observation>,
    feedback_observations: Vec<WorkingDays>,
    holdings: Vec<WorkingDays>,
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
            open_feedback: std::collections::HashSet::new(),
            tallies: Tallies::default(),
            observations: Vec::new(),
            feedback_observations: Vec::new(),
            holdings: Vec::new(),
        }
    }

    /// The calendar.
    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    /// Whether `code` is a unit of the reference list.
    pub fn knows_unit(&self, code: &str) -> bool {
        self.reference.knows_unit(code)
    }

    /// Whether `code` is a procedure with its own `procedure` label (one of `top_procedures`).
    pub fn labels_procedure(&self, code: &str) -> bool {
        self.reference
            .procedure_key(code)
            .is_some_and(|(label, _)| label == code)
    }

    /// The tallies so far.
    pub fn tallies(&self) -> &Tallies {
        &self.tallies
    }

    /// Processing times recorded since the last call.
    pub fn take_observations(&mut self) -> Vec<Observation> {
        std::mem::take(&mut self.observations)
    }

    /// How long each unit held a case, observed since the last call: at each change of the
    /// responsible unit, and when the case closes (for the last unit).
    pub fn take_holdings(&mut self) -> Vec<WorkingDays> {
        std::mem::take(&mut self.holdings)
    }

    /// Feedback handling times observed since the last call.
    pub fn take_feedback_observations(&mut self) -> Vec<WorkingDays> {
        std::mem::take(&mut self.feedback_observations)
    }

    /// Cases received and completed in each of [`PERIODS`] as of local day `today`, by the
    /// local day of the event (not of its arrival: a rebuild gives the same counts).
    pub fn periods(&self, today: Day) -> PeriodCounts {
        let ranges = period_months(today);
        let mut counts = PeriodCounts::default();
        // Only the days from the first of the earliest month of any period on.
        let earliest = ranges.iter().map(|r| *r.start()).min().unwrap_or(0);
        let from = crate::calendar::days_from_civil(
            earliest.div_euclid(12),
            (earliest.rem_euclid(12) + 1) as u32,
            1,
        );
        let start = (from, String::new(), "");
        for ((day, unit, measure), n) in self.tallies.unit_daily.range(start..) {
            let month = month_of(*day);
            for (period, range) in PERIODS.iter().zip(&ranges) {
                if !range.contains(&month) {
                    continue;
                }
                let key = (unit.clone(), *period);
                let slot = match *measure {
                    RECEIVED => counts.received.entry(key).or_insert(0),
                    FEEDBACK_RECEIVED => counts.feedback_received.entry(key).or_insert(0),
                    FEEDBACK_RESOLVED => counts.feedback_resolved.entry(key).or_insert(0),
                    timeliness => counts
                        .completed
                        .entry((unit.clone(), *period, timeliness))
                        .or_insert(0),
                };
                *slot += n;
            }
        }
        counts
    }

    /// Each unit's cases received and completed on each day of the calendar month of local
    /// day `today`, up to `today` (by the local day of the event, as [`Engine::periods`]): the
    /// status page's trend.
    pub fn month_trend(&self, today: Day) -> MonthTrend {
        let (year, month, _) = crate::calendar::civil_from_days(today);
        let first = crate::calendar::days_from_civil(year, month, 1);
        let mut trend = MonthTrend {
            first_day: first,
            today,
            units: BTreeMap::new(),
        };
        let days = (today - first + 1).max(0) as usize;
        let start = (first, String::new(), "");
        for ((day, unit, measure), n) in self.tallies.unit_daily.range(start..) {
            if *day > today {
                break;
            }
            let daily = trend
                .units
                .entry(unit.clone())
                .or_insert_with(|| vec![DayCounts::default(); days]);
            let Some(counts) = daily.get_mut((day - first) as usize) else {
                continue;
            };
            match *measure {
                RECEIVED => counts.received += n,
                FEEDBACK_RECEIVED => counts.feedback_received += n,
                FEEDBACK_RESOLVED => counts.feedback_resolved += n,
                m if m == Timeliness::Early.as_label() => counts.early += n,
                m if m == Timeliness::OnTime.as_label() => counts.on_time += n,
                m if m == Timeliness::Late.as_label() => counts.late += n,
                _ => {}
            }
        }
        trend
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
        let holdings = &mut self.holdings;
        let result = match &mut entry.state {
            CaseState::Refused => return Outcome::Ignored,
            CaseState::Orphan => match &event.event {
                CaseEventKind::CaseSubmitted(s) => {
                    match submit(reference, calendar, tallies, event, s) {
                        Ok(case) => {
                            entry.state = CaseState::Known(Box::new(case));
                            Ok(())
                        }
                        Err(kind) => {
                            entry.state = CaseState::Refused;
                            Err(kind)
                        }
                    }
                }
                _ => Err(Anomaly::BeforeSubmission),
            },
            CaseState::Known(case) => step(
                reference,
                calendar,
                tallies,
                (observations, holdings),
                case,
                event,
            ),
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
        let day = self.calendar.local_day(event.envelope.occurred_at);
        let tallies = &mut self.tallies;
        let reference = &self.reference;
        let mut extra = None;
        let mut opened = false;
        let mut resolved = None;
        let result = match (&mut entry.state, &event.event) {
            (FeedbackState::Refused, _) => return Outcome::Ignored,
            (FeedbackState::Orphan, FeedbackEventKind::FeedbackSubmitted(s)) => {
                if reference.knows_unit(s.receiving_unit) {
                    bump(
                        &mut tallies.unit_feedback_received,
                        s.receiving_unit.to_string(),
                    );
                    bump(
                        &mut tallies.unit_daily,
                        (day, s.receiving_unit.to_string(), FEEDBACK_RECEIVED),
                    );
                    entry.state = FeedbackState::Known(FeedbackItem {
                        unit: s.receiving_unit.to_string(),
                        resolved: false,
                        version,
                        submitted: day,
                        due: None,
                    });
                    opened = true;
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
                    item.due = Some(a.due_date);
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
                bump(
                    &mut tallies.unit_daily,
                    (day, item.unit.clone(), FEEDBACK_RESOLVED),
                );
                resolved = Some(WorkingDays {
                    unit: item.unit.clone(),
                    working_days: self.calendar.working_days_between(item.submitted, day),
                });
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
        let id = event.envelope.aggregate_id;
        if opened {
            self.open_feedback.insert(id.to_string());
        }
        if let Some(observation) = resolved {
            self.open_feedback.remove(id);
            self.feedback_observations.push(observation);
        }
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

    /// Open and overdue cases and feedback items as of local day `today`. A case is overdue
    /// when it is open, no supplement is pending, and `today` is after its due date extended by
    /// the working days its supplements were pending; a feedback item, when it is not resolved
    /// and `today` is after the due date of its latest assignment.
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
        for id in &self.open_feedback {
            let Some(FeedbackState::Known(item)) = self.feedback.get(id).map(|e| &e.state) else {
                continue;
            };
            *g.unit_feedback_open.entry(item.unit.clone()).or_insert(0) += 1;
            let overdue = item.due.is_some_and(|due| today > due);
            *g.unit_feedback_overdue
                .entry(item.unit.clone())
                .or_insert(0) += i64::from(overdue);
        }
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
    calendar: &Calendar,
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
    if s.home_unit != s.receiving_unit {
        bump(&mut tallies.unit_outside_home, unit.clone());
    }
    let day = calendar.local_day(event.envelope.occurred_at);
    bump(&mut tallies.unit_daily, (day, unit.clone(), RECEIVED));
    Ok(OpenCase {
        unit,
        procedure,
        submitted_at: event.envelope.occurred_at,
        submitted: day,
        held_since: day,
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

/// The unit responsible for `case` becomes `to` on local day `day`: the unit before it held
/// the case from `held_since` (nothing changes when `to` is the same unit).
fn hand_over(
    calendar: &Calendar,
    holdings: &mut Vec<WorkingDays>,
    case: &mut OpenCase,
    to: &str,
    day: Day,
) {
    if case.unit != to {
        let unit = std::mem::replace(&mut case.unit, to.to_string());
        holdings.push(WorkingDays {
            unit,
            working_days: calendar.working_days_between(case.held_since, day),
        });
        case.held_since = day;
    }
}

/// The responsible unit's hold of `case` ends with the case, on local day `day`.
fn release(calendar: &Calendar, holdings: &mut Vec<WorkingDays>, case: &OpenCase, day: Day) {
    holdings.push(WorkingDays {
        unit: case.unit.clone(),
        working_days: calendar.working_days_between(case.held_since, day),
    });
}

fn step(
    reference: &Reference,
    calendar: &Calendar,
    tallies: &mut Tallies,
    (observations, holdings): (&mut Vec<Observation>, &mut Vec<WorkingDays>),
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
            hand_over(calendar, holdings, case, a.processing_unit, day);
            bump(&mut tallies.unit_accepted, case.unit.clone());
            bump(&mut tallies.procedure_accepted, case.procedure.clone());
        }
        CaseAssigned(a) => {
            if !reference.knows_unit(a.to_unit) {
                return Err(Anomaly::UnknownUnit);
            }
            if a.kind == lienthong_contract::events::AssignmentKind::Transferred {
                bump(&mut tallies.unit_transfers, case.unit.clone());
            }
            hand_over(calendar, holdings, case, a.to_unit, day);
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
            release(calendar, holdings, case, day);
            let timeliness = Timeliness::of(day, case.effective_due);
            bump(
                &mut tallies.unit_daily,
                (day, case.unit.clone(), timeliness.as_label()),
            );
            bump(&mut tallies.unit_completed, (case.unit.clone(), timeliness));
            bump(
                &mut tallies.procedure_completed,
                (case.procedure.clone(), timeliness),
            );
            observations.push(Observation {
                unit: case.unit.clone(),
                procedure: case.procedure.clone(),
                seconds: (event.envelope.occurred_at - case.submitted_at) as f64 / 1000.0,
                working_days: (calendar.working_days_between(case.submitted, day) - case.paused)
                    .max(0),
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
            release(calendar, holdings, case, day);
            bump(&mut tallies.unit_ended, (case.unit.clone(), outcome));
        }
    }
    case.version = version;
    Ok(())
}

#[cfg(test)]
mod tests;
