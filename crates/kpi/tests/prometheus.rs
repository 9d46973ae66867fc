#![allow(clippy::unwrap_used)]
//! A real Prometheus server (the Debian package, `$LIENTHONG_PROMETHEUS`) scrapes a running KPI
//! engine while case and feedback events flow through real Kafka; the test queries
//! Prometheus' HTTP API and checks the indicators against what was sent.
//!
//! The server scrapes a list of [`Target`]s. The gateway and the sink connectors are being
//! written in parallel: when they land, start them here, add their `/metrics` as targets
//! (jobs `lienthong-gateway`, `lienthong-connectors`) and query
//! `lienthong_connector_events_applied_total` the same way.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::*;

/// A `/metrics` endpoint for the server to scrape.
struct Target {
    job: &'static str,
    addr: String,
}

/// A Prometheus server on a free port with its own config and data directory; killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prometheus_binary() -> PathBuf {
    match std::env::var_os("LIENTHONG_PROMETHEUS") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "LIENTHONG_PROMETHEUS is not set: this test starts a Prometheus server (Debian package \
             `prometheus`). Run the suite with `ops/test`, or `eval \"$(ops/services.sh up)\"` first."
        ),
    }
}

impl Prometheus {
    async fn start(targets: &[Target]) -> Result<Prometheus> {
        let dir = tempfile::tempdir()?;
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        let mut jobs: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for t in targets {
            jobs.entry(t.job).or_default().push(&t.addr);
        }
        for (job, addrs) in jobs {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: {}\n",
                serde_json::to_string(&addrs)?
            ));
        }
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config)?;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let child = Command::new(prometheus_binary())
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting prometheus")?;
        let server = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/-/ready", server.url)).await
                && r.status().is_success()
            {
                return Ok(server);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("Prometheus not ready on {} within 30 s", server.url);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An instant query; returns the result vector as samples without `job`/`instance`.
    async fn query(&self, promql: &str) -> Result<Samples> {
        let encoded: String = promql
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let body: serde_json::Value =
            reqwest::get(format!("{}/api/v1/query?query={encoded}", self.url))
                .await?
                .json()
                .await?;
        if body["status"] != "success" {
            bail!("query {promql}: {body}");
        }
        let mut series = Vec::new();
        for item in body["data"]["result"].as_array().context("result")? {
            let mut labels: BTreeMap<String, String> = item["metric"]
                .as_object()
                .context("metric")?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let name = labels.remove("__name__").unwrap_or_default();
            labels.remove("job");
            labels.remove("instance");
            let value: f64 = item["value"][1].as_str().context("value")?.parse()?;
            series.push((name, labels, value));
        }
        Ok(Samples::from_series(series))
    }

    /// Query until `check` returns no complaint, or fail with the last one after 60 s.
    async fn until<F: Fn(&Samples) -> Vec<String>>(&self, promql: &str, check: F) -> Samples {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let samples = self.query(promql).await.unwrap();
            let wrong = check(&samples);
            if wrong.is_empty() {
                return samples;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Prometheus at {} never showed the expected values for {promql}:\n{}",
                self.url,
                wrong.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

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
