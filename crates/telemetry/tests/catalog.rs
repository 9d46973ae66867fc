#![allow(clippy::unwrap_used)]
//! The catalog, the registry and `docs/metrics.md` agree.

use std::collections::BTreeSet;
use std::path::PathBuf;

use lienthong_telemetry::Telemetry;
use lienthong_telemetry::catalog::{self, Kind};

fn docs_path() -> PathBuf {
    lienthong_contract::repo_root().join("docs/metrics.md")
}

#[test]
fn every_family_is_registered_with_its_declared_labels() {
    let telemetry = Telemetry::new("test").unwrap();
    let gathered: BTreeSet<String> = telemetry
        .registry()
        .gather()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    // build_info has a child from the start; the rest have none yet and are not gathered, so
    // check registration by registering again: a second registration of a name must fail.
    assert!(gathered.contains("lienthong_build_info"), "{gathered:?}");
    for spec in catalog::ALL {
        let again = match spec.kind {
            Kind::Counter => {
                lienthong_telemetry::register_counter(telemetry.registry(), spec).map(|_| ())
            }
            Kind::Gauge => {
                lienthong_telemetry::register_gauge(telemetry.registry(), spec).map(|_| ())
            }
            Kind::Histogram => {
                lienthong_telemetry::register_histogram(telemetry.registry(), spec).map(|_| ())
            }
        };
        assert!(
            again.is_err(),
            "{} is in the catalog but not registered",
            spec.name
        );
    }
}

#[test]
fn names_follow_prometheus_conventions() {
    let mut seen = BTreeSet::new();
    for spec in catalog::ALL {
        assert!(seen.insert(spec.name), "{} declared twice", spec.name);
        assert!(spec.name.starts_with("lienthong_"), "{}", spec.name);
        match spec.kind {
            Kind::Counter => assert!(spec.name.ends_with("_total"), "{}", spec.name),
            Kind::Histogram => {
                // Base units; and working days, the legal unit of the city's deadlines (days of
                // the civil-service calendar, which no number of seconds converts to).
                assert!(
                    ["_seconds", "_bytes", "_records", "_working_days"]
                        .iter()
                        .any(|u| spec.name.ends_with(u)),
                    "{} has no base unit",
                    spec.name
                );
                assert!(!spec.buckets.is_empty(), "{}", spec.name);
                assert!(
                    spec.buckets.windows(2).all(|w| w[0] < w[1]),
                    "{}",
                    spec.name
                );
            }
            Kind::Gauge => assert!(!spec.name.ends_with("_total"), "{}", spec.name),
        }
        for label in spec.labels {
            assert!(
                ![
                    "case_id",
                    "personal_id",
                    "event_id",
                    "error",
                    "message",
                    "aggregate_id"
                ]
                .contains(label),
                "{} has an unbounded label {label}",
                spec.name
            );
        }
        assert!(!spec.help.is_empty());
    }
}

#[test]
fn a_scrape_shows_recorded_values() {
    let telemetry = Telemetry::new("connector").unwrap();
    telemetry
        .connector
        .applied
        .with_label_values(&["ward-26734", "hcm.case.events"])
        .inc_by(3);
    telemetry
        .connector
        .batch_duration
        .with_label_values(&["ward-26734"])
        .observe(0.02);
    let text = telemetry.render();
    assert!(
        text.contains(
            "lienthong_connector_events_applied_total{connector=\"ward-26734\",topic=\"hcm.case.events\"} 3"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "lienthong_connector_batch_duration_seconds_count{connector=\"ward-26734\"} 1"
        )
    );
    assert!(text.contains("lienthong_build_info{component=\"connector\",version=\""));
}

#[tokio::test]
async fn metrics_route_serves_the_text_format() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let telemetry = Telemetry::new("gateway").unwrap();
    telemetry
        .gateway
        .requests
        .with_label_values(&["/topics/{topic}/events", "201"])
        .inc();
    let response = lienthong_telemetry::component::routes(
        telemetry,
        lienthong_telemetry::component::always_ready(),
    )
    .oneshot(
        axum::http::Request::get("/metrics")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        body.contains(
            "lienthong_gateway_requests_total{route=\"/topics/{topic}/events\",status=\"201\"} 1"
        ),
        "{body}"
    );
}

/// `docs/metrics.md` holds the catalog's table; `LIENTHONG_BLESS=1` rewrites it.
#[test]
fn docs_table_matches_the_catalog() {
    let path = docs_path();
    let table = catalog::markdown_table();
    let begin = "<!-- metrics-table:begin (generated from crates/telemetry/src/catalog.rs; LIENTHONG_BLESS=1 cargo test -p lienthong-telemetry rewrites it) -->\n";
    let end = "<!-- metrics-table:end -->";
    let text = std::fs::read_to_string(&path).unwrap();
    let (head, rest) = text
        .split_once(begin)
        .expect("begin marker in docs/metrics.md");
    let (_, tail) = rest.split_once(end).expect("end marker in docs/metrics.md");
    let wanted = format!("{head}{begin}{table}{end}{tail}");
    if std::env::var_os("LIENTHONG_BLESS").is_some() {
        std::fs::write(&path, &wanted).unwrap();
    } else {
        assert!(
            text == wanted,
            "docs/metrics.md is out of date with the catalog; run LIENTHONG_BLESS=1 cargo test -p lienthong-telemetry"
        );
    }
}
