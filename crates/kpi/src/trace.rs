//! The trace index (`lienthong trace`, `GET /trace/{id}`): every event of a case across the
//! case and feedback topics, and which agencies applied each and when, from their signed
//! apply receipts (docs/signatures.md). Built in memory by the engine's consumer as it reads
//! both topics from the beginning, and by a second consumer that reads the receipts topic and
//! verifies each receipt against the certificate log; looked up by case id or correlation id,
//! never by scanning a partition.
//!
//! Memory: about 150 bytes per event and 40 per receipt range; a city's year of case events
//! (a few million) fits in a few hundred MiB. Events and receipts older than the topics'
//! retention are not seen.

use std::collections::HashMap;
use std::sync::Arc;

use lienthong_contract::events::{CaseEvent, CaseEventKind, FeedbackEvent, FeedbackEventKind};
use lienthong_signing::Receipt;
use serde::Serialize;

/// One event of a case, where it is on the log.
#[derive(Debug, Clone)]
struct EventRef {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    event_id: Box<str>,
    kind: &'static str,
    producer_unit: Arc<str>,
    /// The unit the event sends the case (or the feedback) to, if it moves it.
    to_unit: Option<Arc<str>>,
    occurred_at_ms: i64,
    published_ms: i64,
}

/// One receipt's range of one partition, as one connector stated it.
#[derive(Debug, Clone)]
struct Applied {
    from: i64,
    to: i64,
    committed_ms: i64,
}

/// What a connector applied of a partition, in the order its receipts came.
#[derive(Debug, Default)]
struct ConnectorRanges {
    agency: Arc<str>,
    ranges: Vec<Applied>,
}

/// The index.
#[derive(Debug, Default)]
pub struct TraceIndex {
    /// Case id → its events in the order they were read.
    cases: HashMap<Box<str>, Vec<EventRef>>,
    /// Correlation id → case id.
    correlations: HashMap<Box<str>, Box<str>>,
    /// Feedback id → the case it is about.
    feedback: HashMap<Box<str>, Box<str>>,
    /// (topic, partition) → connector → what it applied.
    applied: HashMap<(Arc<str>, i32), HashMap<Arc<str>, ConnectorRanges>>,
    /// Interned topics, units, connectors and agencies (a few hundred strings).
    names: HashMap<Box<str>, Arc<str>>,
}

/// Where a record was read: its topic, partition, offset and the broker's timestamp.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The record's timestamp (ms), the broker's append time on the catalog's topics.
    pub published_ms: i64,
}

/// A case's trace, as `GET /trace/{id}` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Trace {
    /// The case.
    pub case_id: String,
    /// Its events, case and feedback, in the order they were published.
    pub events: Vec<TracedEvent>,
}

/// One event of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TracedEvent {
    /// Topic, partition, offset.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The event's id.
    pub event_id: String,
    /// `CaseSubmitted`, `CaseAssigned`, `FeedbackSubmitted`, …
    pub kind: String,
    /// The unit that published it.
    pub producer_unit: String,
    /// The unit the event puts the case (or the feedback item) with, for the events that move
    /// it: the receiving unit of a submission, the processing unit of an acceptance, the
    /// destination of an assignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_unit: Option<String>,
    /// When it happened (ms since the epoch, the publisher's clock).
    pub occurred_at_ms: i64,
    /// When the broker appended it (ms).
    pub published_ms: i64,
    /// Which connectors applied it, by their signed receipts, and when.
    pub applied: Vec<AppliedBy>,
}

/// A connector that applied an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AppliedBy {
    /// The connector.
    pub connector: String,
    /// Its agency (the receipt's signer).
    pub agency: String,
    /// When its store committed the event (ms).
    pub committed_ms: i64,
}

fn case_kind<S>(k: &CaseEventKind<S>) -> &'static str {
    match k {
        CaseEventKind::CaseSubmitted(_) => "CaseSubmitted",
        CaseEventKind::CaseAccepted(_) => "CaseAccepted",
        CaseEventKind::CaseAssigned(_) => "CaseAssigned",
        CaseEventKind::SupplementRequested(_) => "SupplementRequested",
        CaseEventKind::SupplementReceived(_) => "SupplementReceived",
        CaseEventKind::CaseCompleted(_) => "CaseCompleted",
        CaseEventKind::CaseRejected(_) => "CaseRejected",
        CaseEventKind::CaseWithdrawn(_) => "CaseWithdrawn",
        CaseEventKind::ResultReturned(_) => "ResultReturned",
    }
}

/// The unit a case event puts the case with, if it moves it.
fn moved_to<'a>(k: &CaseEventKind<&'a str>) -> Option<&'a str> {
    match k {
        CaseEventKind::CaseSubmitted(s) => Some(s.receiving_unit),
        CaseEventKind::CaseAccepted(a) => Some(a.processing_unit),
        CaseEventKind::CaseAssigned(a) => Some(a.to_unit),
        _ => None,
    }
}

impl TraceIndex {
    fn name(&mut self, s: &str) -> Arc<str> {
        if let Some(n) = self.names.get(s) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(s);
        self.names.insert(s.into(), n.clone());
        n
    }

    fn push(
        &mut self,
        case: &str,
        at: At<'_>,
        event_id: &str,
        kind: &'static str,
        (unit, to_unit): (&str, Option<&str>),
        occurred_at_ms: i64,
    ) {
        let event = EventRef {
            topic: self.name(at.topic),
            partition: at.partition,
            offset: at.offset,
            event_id: event_id.into(),
            kind,
            producer_unit: self.name(unit),
            to_unit: to_unit.map(|u| self.name(u)),
            occurred_at_ms,
            published_ms: at.published_ms,
        };
        let events = self.cases.entry(case.into()).or_default();
        // A record read again (a replayed duplicate has another offset, and is listed).
        if !events.iter().any(|e| {
            e.offset == event.offset && e.partition == event.partition && e.topic == event.topic
        }) {
            events.push(event);
        }
    }

    /// A case event read at `at`.
    pub fn case_event(&mut self, at: At<'_>, event: &CaseEvent<&str>) {
        let e = &event.envelope;
        if !self.correlations.contains_key(e.correlation_id) {
            self.correlations
                .insert(e.correlation_id.into(), e.aggregate_id.into());
        }
        self.push(
            e.aggregate_id,
            at,
            e.event_id,
            case_kind(&event.event),
            (e.producer_unit, moved_to(&event.event)),
            e.occurred_at,
        );
    }

    /// A feedback event read at `at`: traced under the case it is about, if it names one.
    pub fn feedback_event(&mut self, at: At<'_>, event: &FeedbackEvent<&str>) {
        let e = &event.envelope;
        let (kind, case, to_unit) = match &event.event {
            FeedbackEventKind::FeedbackSubmitted(s) => {
                if let Some(case) = s.related_case_id {
                    self.feedback.insert(e.aggregate_id.into(), case.into());
                }
                (
                    "FeedbackSubmitted",
                    s.related_case_id.map(Box::<str>::from),
                    Some(s.receiving_unit),
                )
            }
            FeedbackEventKind::FeedbackAssigned(a) => (
                "FeedbackAssigned",
                self.feedback.get(e.aggregate_id).cloned(),
                Some(a.to_unit),
            ),
            FeedbackEventKind::FeedbackResolved(_) => (
                "FeedbackResolved",
                self.feedback.get(e.aggregate_id).cloned(),
                None,
            ),
        };
        if let Some(case) = case {
            self.push(
                &case,
                at,
                e.event_id,
                kind,
                (e.producer_unit, to_unit),
                e.occurred_at,
            );
        }
    }

    /// A verified receipt; returns how many offsets it shows no receipt of its connector
    /// covers: its range starting beyond where the connector's previous range of the partition
    /// ended (a receipt lost, or a store changed outside its connector).
    pub fn receipt(&mut self, receipt: &Receipt) -> u64 {
        let mut gaps = 0;
        let connector = self.name(&receipt.connector);
        let agency = self.name(&receipt.agency);
        for r in &receipt.ranges {
            let tp = (self.name(&r.topic), r.partition);
            let of = self
                .applied
                .entry(tp)
                .or_default()
                .entry(connector.clone())
                .or_default();
            of.agency = agency.clone();
            // A connector's ranges come in offset order, each from where the last ended; one
            // that goes back (its store was replayed from the beginning) starts the list
            // again, so that the list stays sorted for the binary search.
            match of.ranges.last() {
                Some(l) if r.from < l.to => of.ranges.clear(),
                Some(l) if r.from > l.to => gaps += (r.from - l.to) as u64,
                _ => {}
            }
            of.ranges.push(Applied {
                from: r.from,
                to: r.to,
                committed_ms: receipt.committed_ms,
            });
        }
        gaps
    }

    /// The trace of `id`, a case id or a correlation id.
    pub fn trace(&self, id: &str) -> Option<Trace> {
        let (case_id, events) = match self.cases.get_key_value(id) {
            Some(found) => found,
            None => self.cases.get_key_value(self.correlations.get(id)?)?,
        };
        let mut events: Vec<TracedEvent> = events
            .iter()
            .map(|e| TracedEvent {
                topic: e.topic.to_string(),
                partition: e.partition,
                offset: e.offset,
                event_id: e.event_id.to_string(),
                kind: e.kind.to_string(),
                producer_unit: e.producer_unit.to_string(),
                to_unit: e.to_unit.as_deref().map(str::to_string),
                occurred_at_ms: e.occurred_at_ms,
                published_ms: e.published_ms,
                applied: self.applied_by(&e.topic, e.partition, e.offset),
            })
            .collect();
        events.sort_by_key(|e| (e.published_ms, e.occurred_at_ms));
        Some(Trace {
            case_id: case_id.to_string(),
            events,
        })
    }

    fn applied_by(&self, topic: &Arc<str>, partition: i32, offset: i64) -> Vec<AppliedBy> {
        let Some(connectors) = self.applied.get(&(topic.clone(), partition)) else {
            return Vec::new();
        };
        let mut out: Vec<AppliedBy> = connectors
            .iter()
            .filter_map(|(connector, of)| {
                let i = of.ranges.partition_point(|r| r.to <= offset);
                let r = of.ranges.get(i).filter(|r| r.from <= offset)?;
                Some(AppliedBy {
                    connector: connector.to_string(),
                    agency: of.agency.to_string(),
                    committed_ms: r.committed_ms,
                })
            })
            .collect();
        out.sort_by(|a, b| (a.committed_ms, &a.connector).cmp(&(b.committed_ms, &b.connector)));
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use lienthong_contract::events::FeedbackEventKind;
    use lienthong_contract::{Catalog, Codec, samples};
    use lienthong_signing::ReceiptRange;

    use super::*;

    const CASES: &str = "hcm.case.events";
    const FEEDBACK: &str = "hcm.feedback.events";

    /// Case events were published at 1 s and after, feedback at 2 s and after.
    fn at(topic: &str, offset: i64) -> At<'_> {
        let base = if topic == CASES { 1_000 } else { 2_000 };
        At {
            topic,
            partition: 0,
            offset,
            published_ms: base + offset,
        }
    }

    fn receipt(connector: &str, agency: &str, topic: &str, from: i64, to: i64, at: i64) -> Receipt {
        let mut r = Receipt::new(connector, agency, "sqlite");
        r.ranges.push(ReceiptRange {
            topic: topic.into(),
            partition: 0,
            from,
            to,
            records: (to - from) as u64,
            published_ms: [1_000 + from, 1_000 + to - 1],
        });
        r.committed_ms = at;
        r
    }

    /// A case's events and the feedback about it, each with the connectors whose receipts
    /// cover its offset; found by case id and by correlation id.
    #[test]
    fn a_trace_lists_a_cases_events_and_who_applied_each() {
        let catalog = Catalog::load(lienthong_contract::repo_schemas_dir()).unwrap();
        let codec = Codec::from_catalog(&catalog).unwrap();
        let cases = samples::case_lifecycle();
        let case_id = cases[0].envelope.aggregate_id.clone();
        let mut feedback = samples::feedback_lifecycle();
        if let FeedbackEventKind::FeedbackSubmitted(s) = &mut feedback[0].event {
            s.related_case_id = Some(case_id.clone());
        }
        let mut index = TraceIndex::default();
        let case_bytes: Vec<Vec<u8>> = cases
            .iter()
            .map(|e| {
                codec
                    .encode_to_vec(catalog.local_id(CASES).unwrap(), e)
                    .unwrap()
            })
            .collect();
        for (i, bytes) in case_bytes.iter().enumerate() {
            let (_, event) = codec.decode::<CaseEvent<&str>>(bytes).unwrap();
            index.case_event(at(CASES, i as i64), &event);
        }
        let feedback_bytes: Vec<Vec<u8>> = feedback
            .iter()
            .map(|e| {
                codec
                    .encode_to_vec(catalog.local_id(FEEDBACK).unwrap(), e)
                    .unwrap()
            })
            .collect();
        for (i, bytes) in feedback_bytes.iter().enumerate() {
            let (_, event) = codec.decode::<FeedbackEvent<&str>>(bytes).unwrap();
            index.feedback_event(at(FEEDBACK, i as i64), &event);
        }
        let n = cases.len() as i64;
        // The ward applied the case events in two batches, the department in one; the ward
        // applied the feedback.
        for (connector, agency, topic, from, to, at) in [
            ("ward", "26734", CASES, 0, 2, 5_000),
            ("ward", "26734", CASES, 2, n, 6_000),
            ("dept", "STP", CASES, 0, n, 7_000),
            ("ward", "26734", FEEDBACK, 0, 3, 8_000),
        ] {
            assert_eq!(
                index.receipt(&receipt(connector, agency, topic, from, to, at)),
                0
            );
        }

        let trace = index.trace(&case_id).unwrap();
        assert_eq!(trace.case_id, case_id);
        assert_eq!(trace.events.len(), cases.len() + feedback.len());
        for (i, e) in trace.events[..cases.len()].iter().enumerate() {
            assert_eq!(e.event_id, cases[i].envelope.event_id);
            let by: Vec<(&str, i64)> = e
                .applied
                .iter()
                .map(|a| (a.connector.as_str(), a.committed_ms))
                .collect();
            let ward = if i < 2 { 5_000 } else { 6_000 };
            assert_eq!(by, [("ward", ward), ("dept", 7_000)], "event {i}");
        }
        let kinds: Vec<&str> = trace.events[cases.len()..]
            .iter()
            .map(|e| e.kind.as_str())
            .collect();
        assert_eq!(
            kinds,
            ["FeedbackSubmitted", "FeedbackAssigned", "FeedbackResolved"]
        );
        assert_eq!(index.trace(&cases[0].envelope.correlation_id), Some(trace));
        assert_eq!(index.trace("no-such-case"), None);

        // Chained ranges show no gap; a range that starts beyond the last one's end does.
        assert_eq!(
            index.receipt(&receipt("dept", "STP", CASES, n, n + 2, 7_500)),
            0
        );
        assert_eq!(
            index.receipt(&receipt("dept", "STP", CASES, n + 5, n + 6, 7_600)),
            3
        );
        // A replay (the ward's store rebuilt from the beginning) starts its ranges again.
        assert_eq!(
            index.receipt(&receipt("ward", "26734", CASES, 0, n, 9_000)),
            0
        );
        let again = index.trace(&case_id).unwrap();
        assert!(
            again.events[..cases.len()]
                .iter()
                .all(|e| e.applied.iter().any(|a| a.committed_ms == 9_000))
        );
    }
}
