//! The status page of `lienthong up`, loaded in headless Chromium (Debian's package) against real
//! Kafka and a real PostgreSQL store: the overview shows the ward's store (lag, last commit,
//! last check, dead letters) and the service chain per department and ward, and every figure
//! on it equals what `/metrics` says at the same moment, and what the events themselves imply;
//! a row changed by hand in the store shows as diverged; a case's page shows its path across
//! units and matches `/trace/{id}`; an unknown case is a 404 page. A screenshot of each page
//! is saved under the test's target folder (`CARGO_TARGET_TMPDIR/status-page/`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use lienthong_contract::events::CaseEventKind;
use lienthong_tests::browser;
use lienthong_tests::prometheus::Samples;
use lienthong_tests::{kafka, now_ms, unique_suffix};
use support::*;

/// The numeric figures of a page's DOM (`data-key` → `data-value`), read as the product
/// documents them.
fn figures(dom: &str) -> BTreeMap<String, f64> {
    lienthong_kpi::status::figures(dom)
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect()
}

/// The `data-value` text of `key` (for non-numeric values such as the case's path).
fn text_value(dom: &str, key: &str) -> String {
    lienthong_kpi::status::figures(dom)
        .remove(key)
        .unwrap_or_else(|| panic!("no {key} on the page"))
}

async fn scrape(addr: &str) -> Samples {
    Samples::parse(
        &reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_stores_and_the_chain_as_the_metrics_do() {
    let kafka = kafka();
    let suffix = unique_suffix();
    let case_topic = kafka.create_topic("status-case", 2, 1, &[]).await.unwrap();
    let feedback_topic = kafka
        .create_topic("status-feedback", 1, 1, &[])
        .await
        .unwrap();
    let units_topic = kafka.create_topic("status-units", 1, 1, &[]).await.unwrap();
    let dlq = kafka.create_topic("status-dlq", 1, 1, &[]).await.unwrap();

    // The units' names, as the reference topic gives them.
    let catalog = catalog();
    let codec = lienthong_contract::Codec::from_catalog(&catalog).unwrap();
    let units_id = catalog.local_id("hcm.reference.units").unwrap();
    let mut named = Vec::new();
    for (code, name, kind) in [
        (
            "26734",
            "Phường Sài Gòn",
            lienthong_contract::events::UnitKind::Ward,
        ),
        (
            "26737",
            "Phường Tân Định",
            lienthong_contract::events::UnitKind::Ward,
        ),
        (
            "26740",
            "Phường Bến Thành",
            lienthong_contract::events::UnitKind::Ward,
        ),
        (
            "STP",
            "Sở Tư pháp",
            lienthong_contract::events::UnitKind::Department,
        ),
    ] {
        let mut record = lienthong_contract::samples::admin_unit();
        record.unit.code = code.into();
        record.unit.name = name.into();
        record.unit.kind = kind;
        named.push((
            code.to_string(),
            Some(codec.encode_to_vec(units_id, &record).unwrap()),
        ));
    }
    produce(&kafka, &units_topic, &named).await;

    // 60 cases of today, due from two days ago to two days ahead (some late, some early), at
    // three wards and the Department of Justice; and one record that is not an event at all.
    let today = (now_ms() / 1000 + 7 * 3600).div_euclid(86_400) as i32;
    let prefix = format!("ST-{suffix}");
    let mut events = case_stream(&prefix, 60);
    let start = now_ms() - 60_000;
    for (j, e) in events.iter_mut().enumerate() {
        e.envelope.occurred_at = start + j as i64;
        let i: usize = e
            .envelope
            .aggregate_id
            .rsplit('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        if let CaseEventKind::CaseSubmitted(s) = &mut e.event {
            s.due_date = today + (i % 5) as i32 - 2;
        }
    }
    let mut received: BTreeMap<String, f64> = BTreeMap::new();
    for e in &events {
        if let CaseEventKind::CaseSubmitted(s) = &e.event {
            *received.entry(s.receiving_unit.clone()).or_default() += 1.0;
        }
    }
    let mut records = encode_cases(&events);
    records.push(("garbage".to_string(), Some(b"not an event".to_vec())));
    produce(&kafka, &case_topic, &records).await;

    let store = postgres_store().await;
    let name = format!("status-{suffix}");
    let dir = tempfile::tempdir().unwrap();
    let connector = dir.path().join("ward.toml");
    std::fs::write(
        &connector,
        config_toml(
            &name,
            &kafka,
            &[(&case_topic, "cases")],
            &store,
            &dlq,
            "[verify]\ninterval_secs = 10\nbuckets = 16",
        ),
    )
    .unwrap();
    let config = dir.path().join("lienthong.toml");
    std::fs::write(
        &config,
        format!(
            r#"connectors = ["{}"]
[registry]
listen = "127.0.0.1:0"
topic = "_lienthong_schemas-{suffix}"

[kpi]
listen = "127.0.0.1:0"
case_topic = "{case_topic}"
feedback_topic = "{feedback_topic}"
units_topic = "{units_topic}"
units = ["26734", "26737", "26740", "STP", "27004"]
top_procedures = ["1.001193"]
[[kpi.procedures]]
code = "1.001193"
level = "FULL_ONLINE"
"#,
            connector.display()
        ),
    )
    .unwrap();
    let child =
        lienthong_tests::up_command(assert_cmd::cargo::cargo_bin("lienthong"), &config, &kafka)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
    let mut child = lienthong_tests::ChildGuard(child);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        assert!(Instant::now() < deadline, "no KPI engine line");
        let line = lines.next().expect("the process ended").unwrap();
        if let Some(rest) = line.strip_prefix("KPI engine metrics on http://") {
            break rest.trim_end_matches("/metrics").to_string();
        }
    };
    // Let stdout drain in the background, so that the process never blocks on it.
    std::thread::spawn(move || for _ in lines {});

    // Everything read and applied, and the store checked once.
    let case_events = events.len() as f64 + 1.0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = scrape(&addr).await;
        let by = [("connector", name.as_str())];
        let settled = m.get("lienthong_kpi_caught_up", &[]) == Some(1.0)
            && m.sum("lienthong_kpi_events_total") >= case_events
            && m.series("lienthong_kpi_unit_info").len() == 4
            && m.get(
                "lienthong_connector_events_dead_lettered_total",
                &[
                    ("connector", name.as_str()),
                    ("topic", case_topic.as_str()),
                    ("class", "not_avro"),
                ],
            ) == Some(1.0)
            && m.series("lienthong_connector_consumer_lag_records")
                .iter()
                .filter(|(l, _)| l["connector"] == name)
                .map(|(_, v)| v)
                .sum::<f64>()
                == 0.0
            && m.series("lienthong_connector_consumer_lag_records")
                .iter()
                .any(|(l, _)| l["connector"] == name)
            && m.get("lienthong_connector_divergent_rows", &by) == Some(0.0);
        if settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never settled: {:?}",
            m.0.iter()
                .filter(|(n, l, _)| n.starts_with("lienthong_kpi_caught_up")
                    || n == "lienthong_kpi_events_total"
                    || n == "lienthong_kpi_unit_info"
                    || (n.starts_with("lienthong_connector_")
                        && l.get("connector") == Some(&name)
                        && !n.contains("bucket")))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A row changed by hand in the ward's store: the next scheduled check finds it.
    let changed = case_id(&prefix, 7);
    let (client, connection) = tokio_postgres::connect(
        match &store {
            Store::Postgres { url } => url,
            Store::Sqlite { .. } => unreachable!(),
        },
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "UPDATE cases SET status = 'edited by hand' WHERE id = '{changed}'"
        ))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while scrape(&addr).await.get(
        "lienthong_connector_divergent_rows",
        &[("connector", name.as_str())],
    ) != Some(1.0)
    {
        assert!(Instant::now() < deadline, "the change never showed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The overview, in the browser, beside /metrics read just before and just after (nothing
    // moves now: no new event, the next check finds the same row).
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    let url = format!("http://{addr}/status");
    let before = scrape(&addr).await;
    let dom = browser::dump_dom(&url).unwrap();
    let after = scrape(&addr).await;
    browser::screenshot(&url, &shots.join("overview.png"), 1600, 2000).unwrap();
    assert!(dom.contains("Kho dữ liệu của các cơ quan"), "{dom}");
    let f = figures(&dom);
    let same = |what: &str, page: Option<&f64>, metric: Option<f64>| {
        assert_eq!(
            page.copied(),
            metric,
            "{what}: the page and /metrics differ (after: {:?})",
            after
        );
    };
    let by = [("connector", name.as_str())];
    let key = |field: &str| format!("store/{name}/{field}");
    same(
        "up",
        f.get(&key("up")),
        before.get("lienthong_connector_up", &by),
    );
    assert_eq!(f[&key("up")], 1.0);
    assert_eq!(f[&key("lag")], 0.0);
    assert_eq!(f[&key("divergent_rows")], 1.0, "the change by hand shows");
    assert!(dom.contains("Lệch · diverged"));
    same(
        "dead letters",
        f.get(&key("dead_letters")),
        Some(
            before
                .get(
                    "lienthong_connector_events_dead_lettered_total",
                    &[
                        ("connector", name.as_str()),
                        ("topic", case_topic.as_str()),
                        ("class", "not_avro"),
                    ],
                )
                .unwrap_or(0.0),
        ),
    );
    assert_eq!(f[&key("dead_letters")], 1.0, "the garbage record");
    same(
        "last commit",
        f.get(&key("applied_at")),
        before.get("lienthong_connector_applied_timestamp_seconds", &by),
    );
    let applied_at = f[&key("applied_at")];
    assert!(
        (applied_at - now_ms() as f64 / 1000.0).abs() < 600.0,
        "{applied_at}"
    );
    let verified = f[&key("verified_at")];
    assert!(
        Some(verified) == before.get("lienthong_connector_verified_timestamp_seconds", &by)
            || Some(verified) == after.get("lienthong_connector_verified_timestamp_seconds", &by)
    );

    let mut city_open = 0.0;
    for unit in ["26734", "26737", "26740", "STP"] {
        let u = [("unit", unit)];
        let key = |field: &str| format!("unit/{unit}/{field}");
        let month = [("unit", unit), ("period", "this_month")];
        let received_now = before
            .get("lienthong_kpi_unit_cases_received_in_period", &month)
            .unwrap_or(0.0);
        same(
            &key("received"),
            f.get(&key("received")),
            Some(received_now),
        );
        assert_eq!(
            f[&key("received")],
            received.get(unit).copied().unwrap_or(0.0),
            "{unit}: received today, from the events themselves"
        );
        let done = |t: &str| {
            before
                .get(
                    "lienthong_kpi_unit_cases_completed_in_period",
                    &[("unit", unit), ("period", "this_month"), ("timeliness", t)],
                )
                .unwrap_or(0.0)
        };
        same(&key("early"), f.get(&key("early")), Some(done("early")));
        same(
            &key("on_time"),
            f.get(&key("on_time")),
            Some(done("on_time")),
        );
        same(&key("late"), f.get(&key("late")), Some(done("late")));
        same(
            &key("completed"),
            f.get(&key("completed")),
            Some(done("early") + done("on_time") + done("late")),
        );
        same(
            &key("open"),
            f.get(&key("open")),
            before.get("lienthong_kpi_unit_cases_open", &u),
        );
        same(
            &key("overdue"),
            f.get(&key("overdue")),
            before.get("lienthong_kpi_unit_cases_open_overdue", &u),
        );
        city_open += f[&key("open")];
    }
    assert!(city_open > 0.0, "some cases are open");
    assert_eq!(f["city/open"], city_open);
    let completed: f64 = ["26734", "26737", "26740", "STP"]
        .iter()
        .map(|u| f[&format!("unit/{u}/completed")])
        .sum();
    assert!(completed > 0.0, "some cases completed today");
    assert_eq!(f["city/completed"], completed);
    assert!(dom.contains("Sở Tư pháp") && dom.contains("Phường Sài Gòn"));
    // The month's trend: today's received and completed are the last day's.
    for unit in ["26734", "STP"] {
        let svg = &dom[dom
            .find(&format!("data-key=\"unit/{unit}/trend\""))
            .unwrap()..];
        let attr = |name: &str| -> Vec<f64> {
            svg.split(&format!("{name}=\""))
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .split(',')
                .map(|v| v.parse().unwrap())
                .collect()
        };
        assert_eq!(
            attr("data-received").last().copied(),
            Some(f[&format!("unit/{unit}/received")]),
            "{unit}: today is the trend's last day"
        );
        assert_eq!(
            attr("data-completed").iter().sum::<f64>(),
            f[&format!("unit/{unit}/completed")],
            "{unit}: the month's completions"
        );
    }

    // A case's page: its events and path, as /trace says.
    let case = case_id(&prefix, 9);
    let trace: serde_json::Value = reqwest::get(format!("http://{addr}/trace/{case}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let traced = trace["events"].as_array().unwrap();
    assert_eq!(
        traced.len(),
        events
            .iter()
            .filter(|e| e.envelope.aggregate_id == case)
            .count()
    );
    let url = format!("http://{addr}/status/case?id={case}");
    let dom = browser::dump_dom(&url).unwrap();
    browser::screenshot(&url, &shots.join("case.png"), 1600, 1000).unwrap();
    assert_eq!(figures(&dom)["case/events"], traced.len() as f64);
    // Case 9 is received at 26734, accepted by 26737 and assigned to 26740 (support's
    // case_steps), and the events of its later steps do not move it.
    let mut path: Vec<String> = Vec::new();
    for e in events.iter().filter(|e| e.envelope.aggregate_id == case) {
        let unit = match &e.event {
            CaseEventKind::CaseSubmitted(s) => s.receiving_unit.clone(),
            CaseEventKind::CaseAccepted(a) => a.processing_unit.clone(),
            CaseEventKind::CaseAssigned(a) => a.to_unit.clone(),
            _ => path
                .last()
                .cloned()
                .unwrap_or_else(|| e.envelope.producer_unit.clone()),
        };
        if path.last() != Some(&unit) {
            path.push(unit);
        }
    }
    assert_eq!(path, ["26734", "26737", "26740"]);
    assert_eq!(text_value(&dom, "case/path"), path.join(","));
    assert!(
        dom.contains("Phường Tân Định"),
        "the path's units are named"
    );
    assert!(dom.contains("Tiếp nhận hồ sơ"), "{dom}");

    // An unknown case: a page that says so, with status 404.
    let missing = format!("http://{addr}/status/case?id=NO-SUCH-{suffix}");
    let response = reqwest::get(&missing).await.unwrap();
    assert_eq!(response.status(), 404);
    let dom = browser::dump_dom(&missing).unwrap();
    browser::screenshot(&missing, &shots.join("case-not-found.png"), 1600, 600).unwrap();
    assert!(dom.contains("Không tìm thấy"), "{dom}");
    eprintln!("screenshots in {}", shots.display());

    let status = lienthong_tests::interrupt_and_wait(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}");
}
