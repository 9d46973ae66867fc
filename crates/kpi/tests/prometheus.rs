#![allow(clippy::unwrap_used)]
//! A real Prometheus server (the Debian package, `$LIENTHONG_PROMETHEUS`) scrapes a running KPI
//! engine while case and feedback events flow through real Kafka; the test queries
//! Prometheus' HTTP API and checks the indicators against what was sent.
//!
//! The gateway and a sink connector are scraped the same way in
//! `crates/cli/tests/prometheus.rs`.

mod common;

use common::*;
use lienthong_tests::prometheus::{Prometheus, Target};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_indicators_while_events_flow() {
    let kafka = lienthong_tests::kafka();
    let case_topic = kafka
        .create_topic("kpi-prom-case", 3, 1, &[])
        .await
        .unwrap();
    let feedback_topic = kafka
        .create_topic("kpi-prom-feedback", 2, 1, &[])
        .await
        .unwrap();
    let engine = Running::start(config(kafka.bootstrap(), &case_topic, &feedback_topic))
        .await
        .unwrap();
    let prometheus = Prometheus::start(&[Target {
        job: "lienthong-kpi",
        addr: engine.addr.to_string(),
    }])
    .await
    .unwrap();
    // The engine is up and caught up with its empty topics before anything is sent.
    prometheus
        .until("lienthong_kpi_caught_up", |s| {
            match s.get("lienthong_kpi_caught_up", &[]) {
                Some(1.0) => vec![],
                v => vec![format!("caught_up = {v:?}")],
            }
        })
        .await;
    prometheus
        .until("up{job=\"lienthong-kpi\"}", |s| {
            if s.sum("up") == 1.0 {
                vec![]
            } else {
                vec!["target down".into()]
            }
        })
        .await;

    let run = lienthong_tests::unique_suffix();
    let (first, second) = scenario(&run);
    let sender = Sender::new(&kafka, &case_topic, &feedback_topic);
    sender.send(&first).await.unwrap();
    // The first part shows while the rest has not been sent: open cases, overdue, received.
    let partial = prometheus
        .until("{__name__=~\"lienthong_kpi_.*\"}", |s| {
            let mut wrong = Vec::new();
            for (name, labels, want) in [
                (
                    "lienthong_kpi_unit_cases_open",
                    vec![("unit", "27004")],
                    1.0,
                ),
                (
                    "lienthong_kpi_unit_cases_open_overdue",
                    vec![("unit", "27004")],
                    1.0,
                ),
                ("lienthong_kpi_unit_cases_open", vec![("unit", "SXD")], 1.0),
                (
                    "lienthong_kpi_unit_cases_received_total",
                    vec![("unit", "26734"), ("channel", "online")],
                    2.0,
                ),
                (
                    "lienthong_kpi_anomalies_total",
                    vec![("kind", "undecodable")],
                    1.0,
                ),
            ] {
                let got = s.get(name, &labels);
                if got != Some(want) {
                    wrong.push(format!("{name}{labels:?}: want {want}, got {got:?}"));
                }
            }
            wrong
        })
        .await;
    assert_eq!(
        partial.sum("lienthong_kpi_unit_feedback_received_total"),
        0.0,
        "no feedback sent yet"
    );

    sender.send(&second).await.unwrap();
    let all = prometheus
        .until("{__name__=~\"lienthong_kpi_.*\"}", mismatches)
        .await;
    // Duplicates were read but did not count twice.
    assert_eq!(
        all.get(
            "lienthong_kpi_events_total",
            &[("topic", &case_topic), ("outcome", "duplicate")]
        ),
        Some(5.0)
    );
    // A PromQL ratio over the scraped counters agrees with the engine's own gauge.
    let ratio = prometheus
        .query(
            "sum by (unit) (lienthong_kpi_unit_cases_end_to_end_online_total) \
             / sum by (unit) (lienthong_kpi_unit_cases_received_total)",
        )
        .await
        .unwrap();
    assert_eq!(ratio.get("", &[("unit", "26734")]), Some(0.25));

    // Restart: a new process on the same address rebuilds from the log. Prometheus sees the
    // target go away and come back with the same values, and no counter reset.
    let addr = engine.addr;
    engine.stop().await.unwrap();
    prometheus
        .until("up{job=\"lienthong-kpi\"}", |s| {
            if s.sum("up") == 0.0 {
                vec![]
            } else {
                vec!["still up".into()]
            }
        })
        .await;
    let engine = Running::start_on(
        config(kafka.bootstrap(), &case_topic, &feedback_topic),
        addr,
    )
    .await
    .unwrap();
    prometheus
        .until("up{job=\"lienthong-kpi\"}", |s| {
            if s.sum("up") == 1.0 {
                vec![]
            } else {
                vec!["not up again".into()]
            }
        })
        .await;
    let again = prometheus
        .until("{__name__=~\"lienthong_kpi_.*\"}", mismatches)
        .await;
    assert_eq!(
        again.get(
            "lienthong_kpi_events_total",
            &[("topic", &case_topic), ("outcome", "applied")]
        ),
        all.get(
            "lienthong_kpi_events_total",
            &[("topic", &case_topic), ("outcome", "applied")]
        ),
    );
    for spec in lienthong_telemetry::catalog::ALL {
        if !spec.name.starts_with("lienthong_kpi_") || !spec.name.ends_with("_total") {
            continue;
        }
        let resets = prometheus
            .query(&format!("sum(resets({}[5m]))", spec.name))
            .await
            .unwrap();
        assert_eq!(
            resets.get("", &[]),
            Some(0.0),
            "{}: a counter reset was seen",
            spec.name
        );
    }
    let increase = prometheus
        .query("sum(increase(lienthong_kpi_unit_cases_received_total[5m]))")
        .await
        .unwrap();
    let received = all.sum("lienthong_kpi_unit_cases_received_total");
    assert!(
        increase.get("", &[]).unwrap() <= received + 1e-9,
        "increase {:?} counts more than the {received} cases received",
        increase.get("", &[])
    );
    drop(prometheus);
    engine.stop().await.unwrap();
}
