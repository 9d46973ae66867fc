#![allow(clippy::unwrap_used)]

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

fn submitted(unit: &str, procedure: &str, channel: Channel, e2e: bool, due: &str) -> CaseEventKind {
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
    feedback_on("2026-11-02", id, version, seq, event)
}

/// A feedback event at 09:00 local time on `date`.
fn feedback_on(
    date: &str,
    id: &str,
    version: i64,
    seq: u64,
    event: FeedbackEventKind,
) -> FeedbackEvent {
    FeedbackEvent {
        envelope: Envelope {
            event_id: format!("{id}-{seq}"),
            occurred_at: at(date),
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
    // 2–3 May weekend) = 3 working days, due moves 3 working days on, to Wednesday 6 May:
    // completed early.
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
        e.tallies().unit_completed[&("W1".to_string(), Timeliness::Early)],
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

fn feedback_submitted(unit: &str) -> FeedbackEventKind {
    FeedbackEventKind::FeedbackSubmitted(FeedbackSubmitted {
        receiving_unit: unit.into(),
        channel: Channel::Online,
        category: "land".into(),
        content: "x".into(),
        related_case_id: None,
        citizen_id: None,
    })
}

fn feedback_assigned(unit: &str, due: &str) -> FeedbackEventKind {
    FeedbackEventKind::FeedbackAssigned(FeedbackAssigned {
        to_unit: unit.into(),
        due_date: day(due),
    })
}

fn feedback_resolved() -> FeedbackEventKind {
    FeedbackEventKind::FeedbackResolved(FeedbackResolved {
        resolution: "done".into(),
        satisfaction: None,
    })
}

/// Handling time in working days (the submission day counts, the resolution day does not;
/// holidays and weekends do not), and open and overdue feedback by the unit handling it, by the
/// due date of its latest assignment.
#[test]
fn feedback_handling_time_in_working_days_and_open_and_overdue_by_unit() {
    let mut e = engine();
    let history = [
        // Mon 2 Nov, assigned to STP on the 3rd (due Fri 6), resolved Wed 11 Nov: 2, 3, 4, 5, 6,
        // 9, 10 Nov = 7 working days.
        feedback_on("2026-11-02", "F1", 1, 1, feedback_submitted("W1")),
        feedback_on(
            "2026-11-03",
            "F1",
            2,
            2,
            feedback_assigned("STP", "2026-11-06"),
        ),
        feedback_on("2026-11-11", "F1", 3, 3, feedback_resolved()),
        // Wed 29 Apr, resolved Tue 5 May: 29 Apr and 4 May (30 Apr, 1 May holidays, 2-3 May
        // a weekend) = 2.
        feedback_on("2026-04-29", "F2", 1, 1, feedback_submitted("W2")),
        feedback_on("2026-05-05", "F2", 2, 2, feedback_resolved()),
        // Resolved the day it came: 0.
        feedback_on("2026-11-04", "F3", 1, 1, feedback_submitted("W1")),
        feedback_on("2026-11-04", "F3", 2, 2, feedback_resolved()),
        // Open: assigned to STP, due Fri 6 Nov, reassigned to W2 due Tue 10 Nov.
        feedback_on("2026-11-02", "F4", 1, 1, feedback_submitted("W1")),
        feedback_on(
            "2026-11-02",
            "F4",
            2,
            2,
            feedback_assigned("STP", "2026-11-06"),
        ),
        feedback_on(
            "2026-11-05",
            "F4",
            3,
            3,
            feedback_assigned("W2", "2026-11-10"),
        ),
        // Open, never assigned: never overdue.
        feedback_on("2026-11-02", "F5", 1, 1, feedback_submitted("W2")),
        // Open at STP, due Fri 6 Nov.
        feedback_on("2026-11-02", "F6", 1, 1, feedback_submitted("W1")),
        feedback_on(
            "2026-11-02",
            "F6",
            2,
            2,
            feedback_assigned("STP", "2026-11-06"),
        ),
    ];
    for ev in &history {
        assert_eq!(apply_feedback(&mut e, ev), Outcome::Applied, "{ev:?}");
        assert_eq!(apply_feedback(&mut e, ev), Outcome::Duplicate);
    }
    let mut handled: Vec<(String, i32)> = e
        .take_feedback_observations()
        .into_iter()
        .map(|o| (o.unit, o.working_days))
        .collect();
    handled.sort();
    assert_eq!(
        handled,
        [("STP".into(), 7), ("W1".into(), 0), ("W2".into(), 2)]
    );
    assert!(e.take_feedback_observations().is_empty());
    let by_unit = |g: &Gauges| {
        (
            g.unit_feedback_open.clone(),
            g.unit_feedback_overdue.clone(),
        )
    };
    let map = |pairs: &[(&str, i64)]| -> BTreeMap<String, i64> {
        pairs.iter().map(|(u, n)| (u.to_string(), *n)).collect()
    };
    // On its due date an item is not overdue yet; the day after it is.
    assert_eq!(
        by_unit(&e.gauges(day("2026-11-06"))),
        (map(&[("STP", 1), ("W2", 2)]), map(&[("STP", 0), ("W2", 0)]))
    );
    assert_eq!(
        by_unit(&e.gauges(day("2026-11-09"))),
        (map(&[("STP", 1), ("W2", 2)]), map(&[("STP", 1), ("W2", 0)]))
    );
    assert_eq!(
        by_unit(&e.gauges(day("2026-11-11"))),
        (map(&[("STP", 1), ("W2", 2)]), map(&[("STP", 1), ("W2", 1)]))
    );
    // Resolving one takes it out of both.
    apply_feedback(
        &mut e,
        &feedback_on("2026-11-12", "F6", 3, 3, feedback_resolved()),
    );
    assert_eq!(
        by_unit(&e.gauges(day("2026-11-12"))),
        (map(&[("W2", 2)]), map(&[("W2", 1)]))
    );
}

#[test]
fn feedback_received_resolved_and_rated() {
    let mut e = engine();
    let submitted = feedback_submitted;
    let resolved = |s: Option<i32>| {
        FeedbackEventKind::FeedbackResolved(FeedbackResolved {
            resolution: "done".into(),
            satisfaction: s,
        })
    };
    let assigned = feedback_assigned("STP", "2026-11-10");
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

fn assigned(from: &str, to: &str, kind: AssignmentKind) -> CaseEventKind {
    CaseEventKind::CaseAssigned(CaseAssigned {
        from_unit: from.into(),
        to_unit: to.into(),
        kind,
        note: None,
    })
}

/// The service chain of one case: filed at W1 for an applicant of W2 (outside the home ward),
/// accepted at STP, assigned within STP's chain to W2, transferred back to STP, completed a
/// day before its due date: early. Each unit's hold in working days, the transfer counted
/// against the unit that transferred, the processing time in working days without the
/// supplement pause.
#[test]
fn the_chain_of_a_case_holding_transfers_outside_home_and_early() {
    let mut e = engine();
    let mut a = Case::new("A");
    let history = [
        // Mon 2 Nov at W1, due Fri 20 Nov.
        a.event(
            at("2026-11-02"),
            submitted("W1", "P1", Channel::Counter, false, "2026-11-20"),
        ),
        // Wed 4 Nov: STP accepts (W1 held it 2, 3 Nov = 2 working days).
        a.event(at("2026-11-04"), accepted("STP")),
        // Mon 9 Nov: assigned to W2 (STP held 4, 5, 6 Nov = 3).
        a.event(
            at("2026-11-09"),
            assigned("STP", "W2", AssignmentKind::Assigned),
        ),
        // Tue 10 Nov: supplement requested; received Thu 12 Nov (paused 10, 11 Nov = 2; the
        // due date moves to Tue 24 Nov).
        a.event(at("2026-11-10"), supplement_requested()),
        a.event(at("2026-11-12"), supplement_received()),
        // Fri 13 Nov: W2 transfers it back to STP (W2 held 9–12 Nov = 4).
        a.event(
            at("2026-11-13"),
            assigned("W2", "STP", AssignmentKind::Transferred),
        ),
        // Mon 23 Nov: completed (STP held 13, 16–20 Nov = 6), before Tue 24 Nov: early.
        a.event(at("2026-11-23"), completed()),
    ];
    for ev in &history {
        assert_eq!(apply(&mut e, ev), Outcome::Applied, "{ev:?}");
    }
    let t = e.tallies();
    assert_eq!(t.unit_outside_home["W1"], 1);
    assert_eq!(
        t.unit_transfers.clone().into_iter().collect::<Vec<_>>(),
        [("W2".to_string(), 1)]
    );
    assert_eq!(t.unit_completed[&("STP".to_string(), Timeliness::Early)], 1);
    let held: Vec<(String, i32)> = e
        .take_holdings()
        .into_iter()
        .map(|h| (h.unit, h.working_days))
        .collect();
    assert_eq!(
        held,
        [
            ("W1".to_string(), 2),
            ("STP".to_string(), 3),
            ("W2".to_string(), 4),
            ("STP".to_string(), 6),
        ]
    );
    // 2 Nov to 23 Nov: 15 working days, less the 2 paused.
    let obs = e.take_observations();
    assert_eq!(obs.len(), 1);
    assert_eq!((obs[0].unit.as_str(), obs[0].working_days), ("STP", 13));

    // Filed at the applicant's home ward: not counted outside; completed on its due date: on
    // time; after it: late.
    let mut b = Case::new("B");
    apply(
        &mut e,
        &b.event(
            at("2026-11-02"),
            submitted("W2", "P1", Channel::Online, true, "2026-11-04"),
        ),
    );
    apply(&mut e, &b.event(at("2026-11-04"), completed()));
    let mut c = Case::new("C");
    apply(
        &mut e,
        &c.event(
            at("2026-11-02"),
            submitted("W2", "P1", Channel::Online, true, "2026-11-04"),
        ),
    );
    apply(&mut e, &c.event(at("2026-11-05"), completed()));
    let t = e.tallies();
    assert!(!t.unit_outside_home.contains_key("W2"));
    assert_eq!(t.unit_completed[&("W2".to_string(), Timeliness::OnTime)], 1);
    assert_eq!(t.unit_completed[&("W2".to_string(), Timeliness::Late)], 1);
    // A withdrawal ends the hold too.
    let mut d = Case::new("D");
    apply(
        &mut e,
        &d.event(
            at("2026-11-02"),
            submitted("W2", "P1", Channel::Online, true, "2026-11-30"),
        ),
    );
    e.take_holdings();
    apply(
        &mut e,
        &d.event(
            at("2026-11-06"),
            CaseEventKind::CaseWithdrawn(CaseWithdrawn { reason: None }),
        ),
    );
    let held: Vec<(String, i32)> = e
        .take_holdings()
        .into_iter()
        .map(|h| (h.unit, h.working_days))
        .collect();
    assert_eq!(held, [("W2".to_string(), 4)]);
}

/// Cases received at W1 on 30 September, 1 October and 3 November 2026; completed on 5 October
/// (early) and 2 November (late).
fn three_months_at_one_ward() -> Engine {
    let mut e = engine();
    let mut a = Case::new("A");
    let mut b = Case::new("B");
    let mut c = Case::new("C");
    for ev in [
        a.event(
            at("2026-09-30"),
            submitted("W1", "P1", Channel::Online, true, "2026-10-09"),
        ),
        a.event(at("2026-10-05"), completed()),
        b.event(
            at("2026-10-01"),
            submitted("W1", "P1", Channel::Online, true, "2026-10-09"),
        ),
        b.event(at("2026-11-02"), completed()),
        c.event(
            at("2026-11-03"),
            submitted("W1", "P1", Channel::Online, true, "2026-11-30"),
        ),
    ] {
        assert_eq!(apply(&mut e, &ev), Outcome::Applied);
    }
    e
}

/// Month and quarter views by the local day of each event: received at W1 in September, October
/// and November; completed in October (early) and November (late). As of 15 November 2026:
/// this month is November, last month October, this quarter October to December, the last
/// one July to September.
#[test]
fn received_and_completed_by_month_and_quarter() {
    let e = three_months_at_one_ward();
    let p = e.periods(day("2026-11-15"));
    let received: Vec<(&str, u64)> = p
        .received
        .iter()
        .map(|((u, period), n)| {
            assert_eq!(u, "W1");
            (*period, *n)
        })
        .collect();
    assert_eq!(
        received,
        [
            ("last_month", 1),
            ("last_quarter", 1),
            ("this_month", 1),
            ("this_quarter", 2)
        ]
    );
    let completed: Vec<(&str, &str, u64)> = p
        .completed
        .iter()
        .map(|((_, period, t), n)| (*period, *t, *n))
        .collect();
    assert_eq!(
        completed,
        [
            ("last_month", "early", 1),
            ("this_month", "late", 1),
            ("this_quarter", "early", 1),
            ("this_quarter", "late", 1),
        ]
    );
    // In January the quarter before is October to December.
    let january = e.periods(day("2027-01-04"));
    assert_eq!(
        january.received.get(&("W1".to_string(), "last_quarter")),
        Some(&2)
    );
    assert_eq!(
        january.received.get(&("W1".to_string(), "this_month")),
        None
    );
}

/// The status page's trend: the same history day by day. On 15 November: B completed late on
/// the 2nd, C received on the 3rd, nothing else; on 31 October: B received on the 1st, A
/// completed early on the 5th (A's submission was in September).
#[test]
fn the_month_trend_counts_each_day_of_the_current_month() {
    let e = three_months_at_one_ward();
    let november = e.month_trend(day("2026-11-15"));
    assert_eq!(november.first_day, day("2026-11-01"));
    let w1 = &november.units["W1"];
    assert_eq!(w1.len(), 15);
    let late = DayCounts {
        late: 1,
        ..DayCounts::default()
    };
    let received = DayCounts {
        received: 1,
        ..DayCounts::default()
    };
    for (i, counts) in w1.iter().enumerate() {
        let expected = match i {
            1 => late,
            2 => received,
            _ => DayCounts::default(),
        };
        assert_eq!(*counts, expected, "day {}", i + 1);
    }
    let october = e.month_trend(day("2026-10-31"));
    let w1 = &october.units["W1"];
    assert_eq!(w1.len(), 31);
    assert_eq!(w1[0], received);
    assert_eq!(w1[4].early, 1);
    assert_eq!(w1.iter().map(DayCounts::completed).sum::<u64>(), 1);
    assert_eq!(w1.iter().map(|d| d.received).sum::<u64>(), 1);
    // A day before anything of the month happened: no unit.
    assert!(e.month_trend(day("2026-12-01")).units.is_empty());
}

/// Feedback by period and day: received at W1 on 30 October and resolved by STP (to which it
/// was assigned) on 3 November; received at W1 on 2 November, still open. As of 15 November:
/// W1 received 1 last month and 1 this month (2 this quarter); STP resolved 1 this month. The
/// month's trend shows the same on the 2nd and the 3rd, and no case.
#[test]
fn feedback_by_period_and_day() {
    let mut e = engine();
    for ev in [
        feedback_on("2026-10-30", "F1", 1, 1, feedback_submitted("W1")),
        feedback_on(
            "2026-10-30",
            "F1",
            2,
            2,
            feedback_assigned("STP", "2026-11-06"),
        ),
        feedback_on("2026-11-03", "F1", 3, 3, feedback_resolved()),
        feedback_on("2026-11-02", "F2", 1, 4, feedback_submitted("W1")),
    ] {
        assert_eq!(apply_feedback(&mut e, &ev), Outcome::Applied, "{ev:?}");
    }
    let p = e.periods(day("2026-11-15"));
    let w1 = |period| {
        p.feedback_received
            .get(&("W1".to_string(), period))
            .copied()
    };
    assert_eq!(w1("last_month"), Some(1));
    assert_eq!(w1("this_month"), Some(1));
    assert_eq!(w1("this_quarter"), Some(2));
    assert_eq!(w1("last_quarter"), None);
    assert_eq!(
        p.feedback_resolved
            .iter()
            .map(|((u, period), n)| (u.as_str(), *period, *n))
            .collect::<Vec<_>>(),
        [("STP", "this_month", 1), ("STP", "this_quarter", 1)]
    );
    assert!(p.received.is_empty() && p.completed.is_empty(), "no case");
    let trend = e.month_trend(day("2026-11-15"));
    assert_eq!(trend.units["W1"][1].feedback_received, 1);
    assert_eq!(trend.units["STP"][2].feedback_resolved, 1);
    for days in trend.units.values() {
        assert!(days.iter().all(|d| d.received == 0 && d.completed() == 0));
    }
}
