//! A real Prometheus server for tests (the Debian package, `$LIENTHONG_PROMETHEUS`): started on
//! a free port with its own config and data directory, scraping the given `/metrics` targets
//! every second, queried over its HTTP API; and [`Samples`], scraped values by name and labels.

#![allow(clippy::unwrap_used)] // test harness: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A `/metrics` endpoint for the server to scrape.
pub struct Target {
    /// The scrape job's name.
    pub job: &'static str,
    /// host:port of the `/metrics` endpoint.
    pub addr: String,
}

/// A Prometheus server on a free port with its own config and data directory; killed on drop.
pub struct Prometheus {
    child: Child,
    /// The server's base URL.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Prometheus binary, from `$LIENTHONG_PROMETHEUS` (set by `ops/services.sh up`).
pub fn prometheus_binary() -> PathBuf {
    match std::env::var_os("LIENTHONG_PROMETHEUS") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "LIENTHONG_PROMETHEUS is not set: this test starts a Prometheus server (Debian package \
             `prometheus`). Run the suite with `ops/test`, or `eval \"$(ops/services.sh up)\"` first."
        ),
    }
}

impl Prometheus {
    /// Start a server scraping `targets` every second; wait until it is ready.
    pub async fn start(targets: &[Target]) -> Result<Prometheus> {
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
    pub async fn query(&self, promql: &str) -> Result<Samples> {
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
    pub async fn until<F: Fn(&Samples) -> Vec<String>>(&self, promql: &str, check: F) -> Samples {
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

/// Samples of one scrape, by metric name and label set.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<(String, BTreeMap<String, String>, f64)>);

impl Samples {
    /// From (name, labels, value) triples.
    pub fn from_series(series: Vec<(String, BTreeMap<String, String>, f64)>) -> Samples {
        Samples(series)
    }

    /// Parse the text exposition format (what `/metrics` serves).
    pub fn parse(text: &str) -> Samples {
        let mut out = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap();
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.trim_end_matches('}');
                    let mut labels = BTreeMap::new();
                    for pair in body.split("\",").filter(|p| !p.is_empty()) {
                        let (k, v) = pair.split_once("=\"").unwrap();
                        labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                    }
                    (name.to_string(), labels)
                }
            };
            out.push((name, labels, value));
        }
        Samples(out)
    }

    /// The value of the series with exactly these labels.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .map(|(_, _, v)| *v)
    }

    /// The sum over every series of `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Every series of `name`, as (labels, value).
    pub fn series(&self, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        self.0
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, v)| (l.clone(), *v))
            .collect()
    }
}
