//! Copies the engine's state into the Prometheus families of [`lienthong_telemetry::KpiMetrics`].
//!
//! Counters are *set from the tallies* (raised by the difference), never incremented per
//! record, so the exported value is always exactly the engine's count. Gauges (open, overdue,
//! ratios) are recomputed from the state for "today". Histograms take the processing times
//! recorded since the last export.

use lienthong_contract::events::UnitKind;
use lienthong_telemetry::KpiMetrics;
use prometheus::{GaugeVec, IntCounterVec};

use std::collections::{BTreeMap, BTreeSet};

use crate::calendar::Day;
use crate::engine::{Anomaly, Engine, Outcome, Stream};
use crate::reference::ProcedureKey;

fn set_counter(family: &IntCounterVec, labels: &[&str], value: u64) {
    let counter = family.with_label_values(labels);
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn set_ratio(family: &GaugeVec, labels: &[&str], value: f64) {
    family.with_label_values(labels).set(value);
}

/// Writes an engine's state into the KPI families.
pub struct Exporter {
    metrics: KpiMetrics,
    /// Gauge label sets exported before: one that no longer appears is set to 0, not left
    /// at its last value (a case moved to another unit).
    units_seen: BTreeSet<String>,
    procedures_seen: BTreeSet<ProcedureKey>,
    /// Units whose feedback gauges were exported.
    feedback_units_seen: BTreeSet<String>,
    /// Units' names from the reference topic, and the name last exported for each.
    names: BTreeMap<String, (String, &'static str)>,
    names_exported: BTreeMap<String, (String, &'static str)>,
    /// Procedures' names from the reference topic, and the name last exported for each.
    procedure_names: BTreeMap<String, String>,
    procedure_names_exported: BTreeMap<String, String>,
    case_topic: String,
    feedback_topic: String,
}

impl Exporter {
    /// An exporter into `metrics`; records are labelled with these topic names.
    pub fn new(metrics: KpiMetrics, case_topic: &str, feedback_topic: &str) -> Exporter {
        Exporter {
            metrics,
            units_seen: BTreeSet::new(),
            feedback_units_seen: BTreeSet::new(),
            names: BTreeMap::new(),
            names_exported: BTreeMap::new(),
            procedure_names: BTreeMap::new(),
            procedure_names_exported: BTreeMap::new(),
            procedures_seen: BTreeSet::new(),
            case_topic: case_topic.to_string(),
            feedback_topic: feedback_topic.to_string(),
        }
    }

    /// Unit `code` is named `name` and is of `kind` (from the units reference topic; the
    /// latest record wins).
    pub fn name_unit(&mut self, code: &str, name: &str, kind: UnitKind) {
        self.names
            .insert(code.to_string(), (name.to_string(), kind_label(kind)));
    }

    /// Procedure `code` is named `name` (from the procedures reference topic; the latest
    /// record wins).
    pub fn name_procedure(&mut self, code: &str, name: &str) {
        self.procedure_names
            .insert(code.to_string(), name.to_string());
    }

    /// Export everything as of local day `today`.
    pub fn export(&mut self, engine: &mut Engine, today: Day, caught_up: bool) {
        let m = &self.metrics;
        for obs in engine.take_observations() {
            m.unit_processing_time
                .with_label_values(&[obs.unit.as_str()])
                .observe(obs.seconds);
            m.unit_processing_working_days
                .with_label_values(&[obs.unit.as_str()])
                .observe(f64::from(obs.working_days));
            m.procedure_processing_time
                .with_label_values(&[obs.procedure.0.as_str(), obs.procedure.1.as_label()])
                .observe(obs.seconds);
        }
        for held in engine.take_holdings() {
            m.unit_holding
                .with_label_values(&[held.unit.as_str()])
                .observe(f64::from(held.working_days));
        }
        for obs in engine.take_feedback_observations() {
            m.unit_feedback_handling
                .with_label_values(&[obs.unit.as_str()])
                .observe(f64::from(obs.working_days));
        }
        let t = engine.tallies();
        let mut received_by_unit = std::collections::BTreeMap::<&str, u64>::new();
        for ((unit, channel), n) in &t.unit_received {
            set_counter(&m.unit_received, &[unit, channel], *n);
            *received_by_unit.entry(unit).or_insert(0) += n;
        }
        for (unit, received) in &received_by_unit {
            let online = t.unit_end_to_end_online.get(*unit).copied().unwrap_or(0);
            set_counter(&m.unit_end_to_end_online, &[unit], online);
            set_ratio(
                &m.unit_end_to_end_online_ratio,
                &[unit],
                ratio(online, *received),
            );
        }
        for (unit, n) in &t.unit_accepted {
            set_counter(&m.unit_accepted, &[unit], *n);
        }
        for ((unit, timeliness), n) in &t.unit_completed {
            set_counter(&m.unit_completed, &[unit, timeliness.as_label()], *n);
        }
        for ((unit, outcome), n) in &t.unit_ended {
            set_counter(&m.unit_ended, &[unit, outcome], *n);
        }
        for (unit, n) in &t.unit_supplements {
            set_counter(&m.unit_supplements, &[unit], *n);
        }
        for (unit, n) in &t.unit_outside_home {
            set_counter(&m.unit_outside_home, &[unit], *n);
        }
        for (unit, n) in &t.unit_transfers {
            set_counter(&m.unit_transfers, &[unit], *n);
        }
        for (unit, n) in &t.unit_feedback_received {
            set_counter(&m.unit_feedback_received, &[unit], *n);
        }
        for (unit, n) in &t.unit_feedback_resolved {
            set_counter(&m.unit_feedback_resolved, &[unit], *n);
        }
        for (unit, (sum, count)) in &t.unit_satisfaction {
            set_counter(&m.unit_feedback_ratings, &[unit], *count);
            set_counter(&m.unit_feedback_rating_points, &[unit], *sum);
            if *count > 0 {
                set_ratio(
                    &m.unit_feedback_satisfaction,
                    &[unit],
                    *sum as f64 / *count as f64,
                );
            }
        }
        let mut received_by_procedure = std::collections::BTreeMap::new();
        for (((code, level), channel), n) in &t.procedure_received {
            set_counter(
                &m.procedure_received,
                &[code, level.as_label(), channel],
                *n,
            );
            *received_by_procedure.entry((code, *level)).or_insert(0) += n;
        }
        for ((code, level), received) in &received_by_procedure {
            let key = ((*code).clone(), *level);
            let online = t
                .procedure_end_to_end_online
                .get(&key)
                .copied()
                .unwrap_or(0);
            set_ratio(
                &m.procedure_end_to_end_online_ratio,
                &[code, level.as_label()],
                ratio(online, *received),
            );
        }
        for ((code, level), n) in &t.procedure_accepted {
            set_counter(&m.procedure_accepted, &[code, level.as_label()], *n);
        }
        for (((code, level), timeliness), n) in &t.procedure_completed {
            set_counter(
                &m.procedure_completed,
                &[code, level.as_label(), timeliness.as_label()],
                *n,
            );
        }
        for ((code, level), n) in &t.procedure_supplements {
            set_counter(&m.procedure_supplements, &[code, level.as_label()], *n);
        }
        for kind in Anomaly::ALL {
            let n = t.anomalies.get(&kind).copied().unwrap_or(0);
            set_counter(&m.anomalies, &[kind.as_label()], n);
        }
        for stream in [Stream::Case, Stream::Feedback] {
            let topic = match stream {
                Stream::Case => self.case_topic.as_str(),
                Stream::Feedback => self.feedback_topic.as_str(),
            };
            for outcome in [
                Outcome::Applied,
                Outcome::Duplicate,
                Outcome::Ignored,
                Outcome::Anomaly,
            ] {
                let n = t.events.get(&(stream, outcome)).copied().unwrap_or(0);
                set_counter(&m.events, &[topic, outcome.as_label()], n);
            }
        }
        let mut g = engine.gauges(today);
        // Every unit and procedure that ever had a case gets its gauges, zero when nothing is
        // open (and the unit selector of the dashboard lists it).
        let t = engine.tallies();
        let units = t
            .unit_received
            .keys()
            .map(|(u, _)| u)
            .chain(t.unit_accepted.keys())
            .chain(t.unit_completed.keys().map(|(u, _)| u))
            .chain(t.unit_ended.keys().map(|(u, _)| u));
        for unit in units {
            if !self.units_seen.contains(unit) {
                self.units_seen.insert(unit.clone());
            }
        }
        for (key, _) in t.procedure_received.keys() {
            if !self.procedures_seen.contains(key) {
                self.procedures_seen.insert(key.clone());
            }
        }
        for unit in &self.units_seen {
            g.unit_open.entry(unit.clone()).or_insert(0);
        }
        for key in &self.procedures_seen {
            g.procedure_open.entry(key.clone()).or_insert(0);
        }
        self.units_seen.extend(g.unit_open.keys().cloned());
        self.procedures_seen
            .extend(g.procedure_open.keys().cloned());
        for (unit, open) in &g.unit_open {
            let overdue = g.unit_overdue.get(unit).copied().unwrap_or(0);
            m.unit_open.with_label_values(&[unit]).set(*open);
            m.unit_open_overdue.with_label_values(&[unit]).set(overdue);
            let share = if *open > 0 {
                overdue as f64 / *open as f64
            } else {
                0.0
            };
            set_ratio(&m.unit_open_overdue_ratio, &[unit], share);
        }
        // Month and quarter views: every unit that ever had a case gets every period, zero
        // when nothing happened in it (a new month starts at zero).
        let periods = engine.periods(today);
        for unit in &self.units_seen {
            for period in crate::engine::PERIODS {
                let received = periods
                    .received
                    .get(&(unit.clone(), period))
                    .copied()
                    .unwrap_or(0);
                m.unit_received_in_period
                    .with_label_values(&[unit, period])
                    .set(received as i64);
                for timeliness in crate::engine::Timeliness::ALL {
                    let label = timeliness.as_label();
                    let n = periods
                        .completed
                        .get(&(unit.clone(), period, label))
                        .copied()
                        .unwrap_or(0);
                    m.unit_completed_in_period
                        .with_label_values(&[unit, period, label])
                        .set(n as i64);
                }
            }
        }
        // Every unit that ever received or resolved feedback gets its feedback gauges.
        let feedback_units = t
            .unit_feedback_received
            .keys()
            .chain(t.unit_feedback_resolved.keys());
        for unit in feedback_units {
            if !self.feedback_units_seen.contains(unit) {
                self.feedback_units_seen.insert(unit.clone());
            }
        }
        for unit in &self.feedback_units_seen {
            for period in crate::engine::PERIODS {
                let key = (unit.clone(), period);
                let received = periods.feedback_received.get(&key).copied().unwrap_or(0);
                let resolved = periods.feedback_resolved.get(&key).copied().unwrap_or(0);
                m.unit_feedback_received_in_period
                    .with_label_values(&[unit, period])
                    .set(received as i64);
                m.unit_feedback_resolved_in_period
                    .with_label_values(&[unit, period])
                    .set(resolved as i64);
            }
        }
        self.feedback_units_seen
            .extend(g.unit_feedback_open.keys().cloned());
        for unit in &self.feedback_units_seen {
            let open = g.unit_feedback_open.get(unit).copied().unwrap_or(0);
            let overdue = g.unit_feedback_overdue.get(unit).copied().unwrap_or(0);
            m.unit_feedback_open.with_label_values(&[unit]).set(open);
            m.unit_feedback_open_overdue
                .with_label_values(&[unit])
                .set(overdue);
        }
        for ((code, level), open) in &g.procedure_open {
            let key = (code.clone(), *level);
            let overdue = g.procedure_overdue.get(&key).copied().unwrap_or(0);
            m.procedure_open
                .with_label_values(&[code, level.as_label()])
                .set(*open);
            m.procedure_open_overdue
                .with_label_values(&[code, level.as_label()])
                .set(overdue);
        }
        for (unit, named) in &self.names {
            if !engine.knows_unit(unit) || self.names_exported.get(unit) == Some(named) {
                continue;
            }
            if let Some((old, kind)) = self.names_exported.insert(unit.clone(), named.clone()) {
                let _ = m.unit_info.remove_label_values(&[unit, &old, kind]);
            }
            m.unit_info
                .with_label_values(&[unit, &named.0, named.1])
                .set(1);
        }
        for (code, name) in &self.procedure_names {
            if !engine.labels_procedure(code)
                || self.procedure_names_exported.get(code) == Some(name)
            {
                continue;
            }
            if let Some(old) = self
                .procedure_names_exported
                .insert(code.clone(), name.clone())
            {
                let _ = m.procedure_info.remove_label_values(&[code, &old]);
            }
            m.procedure_info.with_label_values(&[code, name]).set(1);
        }
        m.cases_tracked
            .with_label_values(&[] as &[&str])
            .set(engine.cases_tracked() as i64);
        m.caught_up
            .with_label_values(&[] as &[&str])
            .set(i64::from(caught_up));
    }
}

/// The `kind` label of a unit.
pub fn kind_label(kind: UnitKind) -> &'static str {
    match kind {
        UnitKind::Department => "department",
        UnitKind::Ward => "ward",
        UnitKind::Commune => "commune",
        UnitKind::SpecialZone => "special_zone",
        UnitKind::Unknown => "unknown",
    }
}
