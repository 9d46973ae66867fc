//! The process's metric samples, read once per page: counters and gauges by name and labels,
//! histograms as their `_count` and `_sum`.

use std::collections::{BTreeMap, BTreeSet};

use lienthong_telemetry::Telemetry;
use prometheus::proto::MetricType;

/// One sample: a family's name (histograms: `…_count`, `…_sum`), its labels, its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The name.
    pub name: String,
    /// Label name → value.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// Every sample of the registry at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples(pub Vec<Sample>);

impl Samples {
    /// Read the registry now.
    pub fn gather(telemetry: &Telemetry) -> Samples {
        let mut out = Vec::new();
        for family in telemetry.registry().gather() {
            for metric in family.get_metric() {
                let labels: BTreeMap<String, String> = metric
                    .get_label()
                    .iter()
                    .map(|l| (l.name().to_string(), l.value().to_string()))
                    .collect();
                let mut push = |name: String, value: f64| {
                    out.push(Sample {
                        name,
                        labels: labels.clone(),
                        value,
                    })
                };
                match family.get_field_type() {
                    MetricType::COUNTER => {
                        push(family.name().into(), metric.get_counter().get_value())
                    }
                    MetricType::GAUGE => push(family.name().into(), metric.get_gauge().get_value()),
                    MetricType::HISTOGRAM => {
                        let h = metric.get_histogram();
                        push(
                            format!("{}_count", family.name()),
                            h.get_sample_count() as f64,
                        );
                        push(format!("{}_sum", family.name()), h.get_sample_sum());
                    }
                    _ => {}
                }
            }
        }
        Samples(out)
    }

    /// The samples of `name` whose labels include every pair of `matching`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        matching: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| {
            s.name == name
                && matching
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of the samples of `name` matching `matching`; `None` when there is none.
    pub fn sum(&self, name: &str, matching: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for s in self.matching(name, matching) {
            *found.get_or_insert(0.0) += s.value;
        }
        found
    }

    /// The values of label `label` over the families whose name starts with `prefix`.
    pub fn label_values(&self, prefix: &str, label: &str) -> BTreeSet<String> {
        self.0
            .iter()
            .filter(|s| s.name.starts_with(prefix))
            .filter_map(|s| s.labels.get(label).cloned())
            .collect()
    }
}
