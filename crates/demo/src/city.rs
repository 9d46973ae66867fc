//! The simulated city: a few wards and departments, the procedures they handle, and the life of
//! every case filed with them.
//!
//! The simulation is deterministic for a seed. It opens with the reference data (units and
//! procedures), then the **backlog**: cases filed on the previous working days and still in
//! progress, as their events happened then. It then runs **today**, one step at a time, with
//! the wall-clock time of each step as the events' time: new cases are filed at wards, about a
//! third of them outside the citizen's home ward; department procedures are transferred from
//! the receiving ward to the department; some cases need a supplement; cases are completed, on
//! time or — for backlog cases already past their due date — late; some are rejected or
//! withdrawn; results are returned; citizens send feedback, which is assigned and resolved.
//!
//! Every event is published by the unit that did the step, so each goes through the same
//! "publishes only as itself" check a real agency's system would.

use std::collections::HashMap;

use lienthong_contract::AgencyKind;
use lienthong_contract::events::*;

/// One simulated unit.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Official code.
    pub code: &'static str,
    /// Name, in Vietnamese.
    pub name: &'static str,
    /// Department or ward.
    pub kind: AgencyKind,
}

/// One procedure of the simulated catalogue.
#[derive(Debug, Clone)]
pub struct ProcedureSpec {
    /// National catalogue code.
    pub code: &'static str,
    /// Name, in Vietnamese.
    pub name: &'static str,
    /// The department that owns it; `None` when wards handle it themselves.
    pub department: Option<&'static str>,
    /// The legal processing time, in working days.
    pub processing_days: i32,
    /// How far online it can go.
    pub level: ServiceLevel,
}

/// The wards of the demo (codes and names are illustrative).
pub const WARDS: &[Unit] = &[
    ward("26734", "Phường Sài Gòn"),
    ward("26737", "Phường Tân Định"),
    ward("26740", "Phường Bến Thành"),
    ward("26743", "Phường Cầu Ông Lãnh"),
    ward("27004", "Phường Chợ Lớn"),
    ward("27259", "Xã Bình Chánh"),
];

/// The departments of the demo.
pub const DEPARTMENTS: &[Unit] = &[
    department("STP", "Sở Tư pháp"),
    department("SXD", "Sở Xây dựng"),
    department("SNV", "Sở Nội vụ"),
];

/// The procedures of the demo.
pub const PROCEDURES: &[ProcedureSpec] = &[
    procedure(
        "1.001193",
        "Đăng ký khai sinh",
        None,
        1,
        ServiceLevel::FullOnline,
    ),
    procedure(
        "1.000894",
        "Đăng ký kết hôn",
        None,
        3,
        ServiceLevel::PartialOnline,
    ),
    procedure(
        "2.000815",
        "Chứng thực bản sao từ bản chính",
        None,
        1,
        ServiceLevel::Offline,
    ),
    procedure(
        "1.001022",
        "Đăng ký thường trú",
        None,
        5,
        ServiceLevel::FullOnline,
    ),
    procedure(
        "2.001263",
        "Cấp Phiếu lý lịch tư pháp",
        Some("STP"),
        10,
        ServiceLevel::FullOnline,
    ),
    procedure(
        "1.009794",
        "Cấp giấy phép xây dựng nhà ở riêng lẻ",
        Some("SXD"),
        15,
        ServiceLevel::PartialOnline,
    ),
];

const fn ward(code: &'static str, name: &'static str) -> Unit {
    Unit {
        code,
        name,
        kind: AgencyKind::Ward,
    }
}

const fn department(code: &'static str, name: &'static str) -> Unit {
    Unit {
        code,
        name,
        kind: AgencyKind::Department,
    }
}

const fn procedure(
    code: &'static str,
    name: &'static str,
    department: Option<&'static str>,
    processing_days: i32,
    level: ServiceLevel,
) -> ProcedureSpec {
    ProcedureSpec {
        code,
        name,
        department,
        processing_days,
        level,
    }
}

/// One event of the simulation, and the unit that publishes it.
#[derive(Debug, Clone)]
pub enum CityEvent {
    /// A step of a case.
    Case(CaseEvent),
    /// A step of a feedback item.
    Feedback(FeedbackEvent),
    /// A unit of the reference data.
    Unit(AdminUnitRecord),
    /// A procedure of the reference data.
    Procedure(ProcedureRecord),
}

impl CityEvent {
    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        match self {
            CityEvent::Case(e) => &e.envelope,
            CityEvent::Feedback(e) => &e.envelope,
            CityEvent::Unit(e) => &e.envelope,
            CityEvent::Procedure(e) => &e.envelope,
        }
    }

    /// The catalog topic it goes to.
    pub fn topic(&self) -> &'static str {
        match self {
            CityEvent::Case(_) => "hcm.case.events",
            CityEvent::Feedback(_) => "hcm.feedback.events",
            CityEvent::Unit(_) => "hcm.reference.units",
            CityEvent::Procedure(_) => "hcm.reference.procedures",
        }
    }
}

const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 of a time in milliseconds.
pub fn day_of(ms: i64) -> i32 {
    ms.div_euclid(DAY_MS) as i32
}

/// Saturday or Sunday (1970-01-01 was a Thursday).
pub fn is_weekend(day: i32) -> bool {
    matches!(day.rem_euclid(7), 2 | 3)
}

/// The day `n` working days after `day` (weekends skipped; the KPI engine's calendar also
/// knows public holidays, so the simulation errs on the early side).
pub fn add_working_days(day: i32, n: i32) -> i32 {
    let mut d = day;
    let mut left = n;
    while left > 0 {
        d += 1;
        if !is_weekend(d) {
            left -= 1;
        }
    }
    d
}

/// SplitMix64: small, fast, and the same sequence everywhere for a seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// What is left to happen to a case, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Accept,
    Transfer,
    RequestSupplement,
    ReceiveSupplement,
    Complete,
    Reject,
    Withdraw,
    ReturnResult,
}

#[derive(Debug, Clone)]
struct OpenCase {
    id: String,
    correlation_id: String,
    version: i64,
    receiving: &'static str,
    processing: &'static str,
    channel: Channel,
    steps: Vec<Step>,
}

#[derive(Debug, Clone)]
struct OpenFeedback {
    id: String,
    /// The case it is about: feedback follows the case's correlation id.
    case_id: String,
    correlation_id: String,
    receiving: &'static str,
    version: i64,
    assigned_to: Option<&'static str>,
}

/// The simulation of one city day.
#[derive(Debug, Clone)]
pub struct Simulator {
    rng: Rng,
    cases: Vec<OpenCase>,
    feedback: Vec<OpenFeedback>,
    next_case: u64,
    next_feedback: u64,
    next_event: u64,
    /// Today's case events handed to a publisher and not yet acknowledged: event id → case.
    in_flight: HashMap<String, String>,
    /// Per case, how many of its events are in flight. A case does not move on meanwhile: its
    /// next step may be another unit's, published by another publisher, which could put it on
    /// the log before the step it follows.
    busy: HashMap<String, u32>,
}

impl Simulator {
    /// A simulation for `seed`.
    pub fn new(seed: u64) -> Self {
        Simulator {
            rng: Rng(seed),
            cases: Vec::new(),
            feedback: Vec::new(),
            next_case: 1,
            next_feedback: 1,
            next_event: 1,
            in_flight: HashMap::new(),
            busy: HashMap::new(),
        }
    }

    /// Cases not yet completed, rejected or withdrawn (returning the result comes after).
    pub fn open_cases(&self) -> usize {
        self.cases
            .iter()
            .filter(|c| {
                c.steps
                    .iter()
                    .any(|s| matches!(s, Step::Complete | Step::Reject | Step::Withdraw))
            })
            .count()
    }

    fn envelope(
        &mut self,
        now_ms: i64,
        producer: &str,
        aggregate: &str,
        version: i64,
        correlation: &str,
    ) -> Envelope {
        let seed = self.rng.next();
        self.next_event += 1;
        Envelope {
            event_id: lienthong_contract::samples::uuid_like(seed),
            occurred_at: now_ms,
            producer_unit: producer.into(),
            aggregate_id: aggregate.into(),
            aggregate_version: version,
            correlation_id: correlation.into(),
        }
    }

    /// The envelope of the first version of a register entry `code`, published by the
    /// Department of Home Affairs (SNV). An entry starts its own chain: a fresh correlation id.
    fn register_entry(&mut self, now_ms: i64, code: &str) -> Envelope {
        let correlation = lienthong_contract::samples::uuid_like(self.rng.next());
        self.envelope(now_ms, "SNV", code, 1, &correlation)
    }

    /// The reference data: every unit and procedure, published by the Department of Home
    /// Affairs (SNV), which owns the unit register.
    pub fn reference_data(&mut self, now_ms: i64) -> Vec<CityEvent> {
        let mut out = Vec::new();
        for unit in WARDS.iter().chain(DEPARTMENTS) {
            out.push(CityEvent::Unit(AdminUnitRecord {
                envelope: self.register_entry(now_ms, unit.code),
                unit: AdminUnit {
                    code: unit.code.into(),
                    name: unit.name.into(),
                    kind: match unit.kind {
                        AgencyKind::Department => UnitKind::Department,
                        AgencyKind::Ward if unit.name.starts_with("Xã") => UnitKind::Commune,
                        AgencyKind::Ward => UnitKind::Ward,
                    },
                    valid_from: 20_270, // 2025-07-01, the day the two-level city began
                    valid_to: None,
                    replaces: Vec::new(),
                },
            }));
        }
        for p in PROCEDURES {
            let owner = p.department.unwrap_or("SNV");
            out.push(CityEvent::Procedure(ProcedureRecord {
                envelope: self.register_entry(now_ms, p.code),
                procedure: Procedure {
                    code: p.code.into(),
                    name: p.name.into(),
                    owning_department: owner.into(),
                    processing_days: p.processing_days,
                    level: p.level,
                },
            }));
        }
        out
    }

    /// Cases filed on the `days` working days before `now_ms`, each advanced part of the way,
    /// as their events happened then; the cases stay open for today.
    pub fn backlog(&mut self, now_ms: i64, days: i32, cases_per_day: usize) -> Vec<CityEvent> {
        let mut out = Vec::new();
        let mut day = day_of(now_ms);
        let mut filed_days = Vec::new();
        while (filed_days.len() as i32) < days {
            day -= 1;
            if !is_weekend(day) {
                filed_days.push(day);
            }
        }
        for &day in filed_days.iter().rev() {
            for i in 0..cases_per_day {
                // Filed during office hours, 08:00 to 16:00 (UTC+7 is ignored: a demo).
                let at =
                    day as i64 * DAY_MS + 8 * 3_600_000 + (i as i64 * 7_919_000) % (8 * 3_600_000);
                out.push(self.file_case(at, day));
                // Part of the way: the first one or two steps, an hour apart.
                let idx = self.cases.len() - 1;
                let advance = self.rng.below(3);
                for k in 0..advance {
                    if let Some(e) = self.advance(idx, at + (k as i64 + 1) * 3_600_000) {
                        out.push(e);
                    }
                }
            }
        }
        out
    }

    /// One step of today, at `now_ms`: file a case, advance one (whose last event the
    /// publisher acknowledged: [`Simulator::acknowledged`]), or move feedback along.
    pub fn step(&mut self, now_ms: i64) -> CityEvent {
        let event = self.next_step(now_ms);
        if let CityEvent::Case(e) = &event {
            let case = e.envelope.aggregate_id.clone();
            self.in_flight
                .insert(e.envelope.event_id.clone(), case.clone());
            *self.busy.entry(case).or_insert(0) += 1;
        }
        event
    }

    /// The publisher acknowledged event `event_id`: its case may move on.
    pub fn acknowledged(&mut self, event_id: &str) {
        if let Some(case) = self.in_flight.remove(event_id)
            && let Some(n) = self.busy.get_mut(&case)
        {
            *n -= 1;
            if *n == 0 {
                self.busy.remove(&case);
            }
        }
    }

    fn next_step(&mut self, now_ms: i64) -> CityEvent {
        let roll = self.rng.below(100);
        if roll < 8 && !self.feedback.is_empty() {
            let idx = self.rng.below(self.feedback.len());
            return self.advance_feedback(idx, now_ms);
        }
        if roll < 30 || self.cases.is_empty() {
            return self.file_case(now_ms, day_of(now_ms));
        }
        let idx = self.rng.below(self.cases.len());
        if self.busy.contains_key(&self.cases[idx].id) {
            return self.file_case(now_ms, day_of(now_ms));
        }
        match self.advance(idx, now_ms) {
            Some(e) => e,
            None => self.file_case(now_ms, day_of(now_ms)),
        }
    }

    fn file_case(&mut self, at: i64, day: i32) -> CityEvent {
        let receiving = self.rng.pick(WARDS).code;
        let home = if self.rng.chance(35) {
            self.rng.pick(WARDS).code
        } else {
            receiving
        };
        let p = self.rng.pick(PROCEDURES).clone();
        let channel = match (p.level, self.rng.below(10)) {
            (ServiceLevel::Offline, 0..=7) => Channel::Counter,
            (ServiceLevel::Offline, _) => Channel::Postal,
            (_, 0..=5) => Channel::Online,
            (_, 6..=8) => Channel::Counter,
            _ => Channel::Postal,
        };
        let end_to_end_online = channel == Channel::Online && p.level == ServiceLevel::FullOnline;
        let id = format!("HS-{receiving}-{day}-{:06}", self.next_case);
        self.next_case += 1;
        let correlation = lienthong_contract::samples::uuid_like(self.rng.next());
        let mut steps = vec![Step::Accept];
        let processing = match p.department {
            Some(dept) => {
                steps.push(Step::Transfer);
                dept
            }
            None => receiving,
        };
        if self.rng.chance(15) {
            steps.extend([Step::RequestSupplement, Step::ReceiveSupplement]);
        }
        match self.rng.below(100) {
            0..=3 => steps.push(Step::Reject),
            4..=5 => steps.push(Step::Withdraw),
            _ => steps.extend([Step::Complete, Step::ReturnResult]),
        }
        steps.reverse(); // popped from the end
        let applicant = format!("079{:09}", self.rng.next() % 1_000_000_000);
        let documents = (0..1 + self.rng.below(3))
            .map(|_| self.document())
            .collect();
        let envelope = self.envelope(at, receiving, &id, 1, &correlation);
        self.cases.push(OpenCase {
            id,
            correlation_id: correlation,
            version: 1,
            receiving,
            processing,
            channel,
            steps,
        });
        CityEvent::Case(CaseEvent {
            envelope,
            event: CaseEventKind::CaseSubmitted(CaseSubmitted {
                procedure_code: p.code.into(),
                receiving_unit: receiving.into(),
                home_unit: home.into(),
                channel,
                end_to_end_online,
                applicant_id: applicant,
                due_date: add_working_days(day, p.processing_days),
                documents,
            }),
        })
    }

    fn document(&mut self) -> Document {
        Document {
            sha256: format!("{:016x}{:016x}", self.rng.next(), self.rng.next()).repeat(2),
            media_type: "application/pdf".into(),
            size_bytes: 50_000 + (self.rng.next() % 2_000_000) as i64,
            signature: None,
        }
    }

    /// The next step of case `idx`, or `None` when it has none left (it is then closed).
    fn advance(&mut self, idx: usize, at: i64) -> Option<CityEvent> {
        let step = self.cases.get_mut(idx)?.steps.pop()?;
        let case = self.cases[idx].clone();
        let version = case.version + 1;
        let (producer, event) = match step {
            Step::Accept => (
                case.receiving,
                CaseEventKind::CaseAccepted(CaseAccepted {
                    processing_unit: case.processing.into(),
                }),
            ),
            Step::Transfer => (
                case.receiving,
                CaseEventKind::CaseAssigned(CaseAssigned {
                    from_unit: case.receiving.into(),
                    to_unit: case.processing.into(),
                    kind: AssignmentKind::Transferred,
                    note: Some("Chuyển hồ sơ về sở để giải quyết".into()),
                }),
            ),
            Step::RequestSupplement => (
                case.processing,
                CaseEventKind::SupplementRequested(SupplementRequested {
                    reason: "Thiếu bản sao giấy tờ tùy thân có chứng thực".into(),
                    requested_documents: vec!["Bản sao CCCD".into()],
                }),
            ),
            Step::ReceiveSupplement => (
                case.receiving,
                CaseEventKind::SupplementReceived(SupplementReceived {
                    documents: vec![self.document()],
                }),
            ),
            Step::Complete => (
                case.processing,
                CaseEventKind::CaseCompleted(CaseCompleted {
                    result: "Đã giải quyết".into(),
                    result_document: Some(self.document()),
                }),
            ),
            Step::Reject => (
                case.processing,
                CaseEventKind::CaseRejected(CaseRejected {
                    reason: "Hồ sơ không đủ điều kiện theo quy định".into(),
                }),
            ),
            Step::Withdraw => (
                case.receiving,
                CaseEventKind::CaseWithdrawn(CaseWithdrawn {
                    reason: Some("Công dân xin rút hồ sơ".into()),
                }),
            ),
            Step::ReturnResult => (
                case.receiving,
                CaseEventKind::ResultReturned(ResultReturned {
                    channel: case.channel,
                }),
            ),
        };
        let envelope = self.envelope(at, producer, &case.id, version, &case.correlation_id);
        self.cases[idx].version = version;
        if self.cases[idx].steps.is_empty() {
            self.cases.swap_remove(idx);
            // One closed case in ten brings feedback.
            if self.rng.chance(10) {
                self.feedback.push(OpenFeedback {
                    id: format!("PA-{}-{:06}", case.receiving, self.next_feedback),
                    case_id: case.id.clone(),
                    correlation_id: case.correlation_id.clone(),
                    receiving: case.receiving,
                    version: 0,
                    assigned_to: None,
                });
                self.next_feedback += 1;
            }
        }
        Some(CityEvent::Case(CaseEvent { envelope, event }))
    }

    fn advance_feedback(&mut self, idx: usize, at: i64) -> CityEvent {
        let item = self.feedback[idx].clone();
        let version = item.version + 1;
        let (producer, event) = match (item.version, item.assigned_to) {
            (0, _) => (
                item.receiving,
                FeedbackEventKind::FeedbackSubmitted(FeedbackSubmitted {
                    receiving_unit: item.receiving.into(),
                    channel: Channel::Online,
                    category: "thai_do_phuc_vu".into(),
                    content: "Cán bộ hướng dẫn tận tình, nhưng thời gian chờ còn lâu.".into(),
                    related_case_id: Some(item.case_id.clone()),
                    citizen_id: None,
                }),
            ),
            (_, None) => {
                let to = self.rng.pick(DEPARTMENTS).code;
                self.feedback[idx].assigned_to = Some(to);
                (
                    item.receiving,
                    FeedbackEventKind::FeedbackAssigned(FeedbackAssigned {
                        to_unit: to.into(),
                        due_date: add_working_days(day_of(at), 5),
                    }),
                )
            }
            (_, Some(to)) => (
                to,
                FeedbackEventKind::FeedbackResolved(FeedbackResolved {
                    resolution: "Đã tiếp thu và chấn chỉnh.".into(),
                    satisfaction: Some(3 + self.rng.below(3) as i32),
                }),
            ),
        };
        let envelope = self.envelope(at, producer, &item.id, version, &item.correlation_id);
        if matches!(event, FeedbackEventKind::FeedbackResolved(_)) {
            self.feedback.swap_remove(idx);
        } else {
            self.feedback[idx].version = version;
        }
        CityEvent::Feedback(FeedbackEvent { envelope, event })
    }
}

/// The unit with `code`, if the demo has it.
pub fn unit(code: &str) -> Option<&'static Unit> {
    WARDS.iter().chain(DEPARTMENTS).find(|u| u.code == code)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const NOW: i64 = 1_795_000_000_000; // a Tuesday in 2026

    fn run(seed: u64, steps: usize) -> Vec<CityEvent> {
        let mut sim = Simulator::new(seed);
        let mut out = sim.reference_data(NOW);
        out.extend(sim.backlog(NOW, 5, 20));
        for i in 0..steps {
            // A publisher that acknowledges each event at once.
            let e = sim.step(NOW + i as i64 * 10);
            sim.acknowledged(&e.envelope().event_id);
            out.push(e);
        }
        out
    }

    /// While a case's event is not acknowledged, the case does not move on (its next step
    /// could be another unit's, whose publisher might put it on the log first); once it is,
    /// it does.
    #[test]
    fn a_case_moves_on_only_once_its_last_event_is_acknowledged() {
        let mut sim = Simulator::new(5);
        let today: Vec<CityEvent> = (0..5_000).map(|i| sim.step(NOW + i * 10)).collect();
        let mut seen = std::collections::HashSet::new();
        for e in today.iter().filter(|e| matches!(e, CityEvent::Case(_))) {
            assert!(
                seen.insert(e.envelope().aggregate_id.clone()),
                "a case advanced with an event in flight: {e:?}"
            );
        }
        for e in &today {
            sim.acknowledged(&e.envelope().event_id);
        }
        let advanced = (0..5_000)
            .map(|i| sim.step(NOW + 50_000 + i * 10))
            .filter(|e| matches!(e, CityEvent::Case(c) if seen.contains(&c.envelope.aggregate_id)))
            .count();
        assert!(advanced > 0, "acknowledged cases move on");
    }

    #[test]
    fn same_seed_same_city() {
        let a: Vec<String> = run(7, 500).iter().map(|e| format!("{e:?}")).collect();
        let b: Vec<String> = run(7, 500).iter().map(|e| format!("{e:?}")).collect();
        let c: Vec<String> = run(8, 500).iter().map(|e| format!("{e:?}")).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn versions_count_up_by_one_per_aggregate_and_ids_are_unique() {
        let events = run(1, 20_000);
        let mut versions: HashMap<(&str, String), i64> = HashMap::new();
        let mut ids = std::collections::HashSet::new();
        for e in &events {
            let env = e.envelope();
            assert!(ids.insert(env.event_id.clone()), "duplicate event id");
            let last = versions
                .entry((e.topic(), env.aggregate_id.clone()))
                .or_insert(0);
            assert_eq!(env.aggregate_version, *last + 1, "{e:?}");
            *last = env.aggregate_version;
        }
    }

    #[test]
    fn a_day_has_every_kind_of_step_and_cross_ward_filing() {
        let events = run(3, 20_000);
        let mut kinds = std::collections::BTreeSet::new();
        let mut outside_home = 0;
        for e in &events {
            match e {
                CityEvent::Case(c) => {
                    let name = format!("{:?}", c.event);
                    kinds.insert(name.split('(').next().unwrap().to_string());
                    if let CaseEventKind::CaseSubmitted(s) = &c.event
                        && s.home_unit != s.receiving_unit
                    {
                        outside_home += 1;
                    }
                }
                CityEvent::Feedback(f) => {
                    let name = format!("{:?}", f.event);
                    kinds.insert(name.split('(').next().unwrap().to_string());
                }
                _ => {}
            }
        }
        for k in [
            "CaseSubmitted",
            "CaseAccepted",
            "CaseAssigned",
            "SupplementRequested",
            "SupplementReceived",
            "CaseCompleted",
            "CaseRejected",
            "CaseWithdrawn",
            "ResultReturned",
            "FeedbackSubmitted",
            "FeedbackAssigned",
            "FeedbackResolved",
        ] {
            assert!(kinds.contains(k), "{k} missing from {kinds:?}");
        }
        assert!(outside_home > 100, "{outside_home}");
    }

    #[test]
    fn producers_are_the_units_that_did_the_step() {
        for e in run(5, 5_000) {
            let env = e.envelope();
            let unit = unit(&env.producer_unit).unwrap();
            match &e {
                CityEvent::Unit(_) | CityEvent::Procedure(_) => {
                    assert_eq!(unit.kind, AgencyKind::Department)
                }
                CityEvent::Case(c) => match &c.event {
                    CaseEventKind::CaseSubmitted(s) => assert_eq!(s.receiving_unit, unit.code),
                    CaseEventKind::CaseAssigned(a) => assert_eq!(a.from_unit, unit.code),
                    _ => {}
                },
                CityEvent::Feedback(f) => {
                    if let FeedbackEventKind::FeedbackSubmitted(s) = &f.event {
                        assert_eq!(s.receiving_unit, unit.code);
                    }
                }
            }
        }
    }

    #[test]
    fn working_days_skip_weekends() {
        // 2026-11-27 is a Friday: day 20_784.
        let friday: i32 = 20_784;
        assert_eq!(friday.rem_euclid(7), 1);
        assert_eq!(add_working_days(friday, 1), friday + 3);
        assert_eq!(add_working_days(friday, 5), friday + 7);
        assert!(is_weekend(friday + 1) && is_weekend(friday + 2));
    }
}
