#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::{Arc, RwLock};

use lienthong_contract::events::{CaseEvent, CaseEventKind};
use lienthong_telemetry::Telemetry;

use super::figures;
use super::html::{count, esc, percent};
use super::*;
use crate::engine::DayCounts;
use crate::trace::At;

fn board() -> (Board, Arc<Telemetry>, Arc<RwLock<TraceIndex>>) {
    let telemetry = Telemetry::new("test").unwrap();
    let index = Arc::new(RwLock::new(TraceIndex::default()));
    let board = Board::new(Arc::clone(&telemetry), Arc::clone(&index), 7 * 60);
    (board, telemetry, index)
}

#[test]
fn numbers_are_written_the_vietnamese_way_and_text_is_escaped() {
    assert_eq!(count(0.0), "0");
    assert_eq!(count(999.0), "999");
    assert_eq!(count(1234.0), "1.234");
    assert_eq!(count(1_234_567.0), "1.234.567");
    assert_eq!(count(-1234.0), "-1.234");
    assert_eq!(percent(0.935), "93,5 %");
    assert_eq!(
        esc("<a href=\"x\">'&'</a>"),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
}

/// The overview shows each connector's and each unit's figures exactly as the metrics hold
/// them, splits departments from wards by the units' kind, and escapes names.
#[test]
fn the_overview_shows_the_metrics_figures() {
    let (board, t, _) = board();
    let c = &t.connector;
    c.up.with_label_values(&["ward-26734"]).set(1);
    c.consumer_lag
        .with_label_values(&["ward-26734", "hcm.case.events", "0"])
        .set(3);
    c.consumer_lag
        .with_label_values(&["ward-26734", "hcm.case.events", "1"])
        .set(4);
    c.divergent_rows.with_label_values(&["ward-26734"]).set(2);
    c.verified_timestamp
        .with_label_values(&["ward-26734"])
        .set(1_765_000_000);
    c.applied_timestamp
        .with_label_values(&["ward-26734"])
        .set(1_765_000_100);
    c.dead_lettered
        .with_label_values(&["ward-26734", "hcm.case.events", "invalid"])
        .inc_by(5);
    c.up.with_label_values(&["stp"]).set(0);
    let k = &t.kpi;
    k.unit_info
        .with_label_values(&["26734", "Phường <Sài Gòn>", "ward"])
        .set(1);
    k.unit_info
        .with_label_values(&["STP", "Sở Tư pháp", "department"])
        .set(1);
    k.unit_received_in_period
        .with_label_values(&["26734", "this_month"])
        .set(10);
    k.unit_received_in_period
        .with_label_values(&["26734", "last_month"])
        .set(99);
    for (t_, n) in [("early", 2), ("on_time", 1), ("late", 1)] {
        k.unit_completed_in_period
            .with_label_values(&["26734", "this_month", t_])
            .set(n);
    }
    k.unit_feedback_received_in_period
        .with_label_values(&["26734", "this_month"])
        .set(5);
    k.unit_feedback_resolved_in_period
        .with_label_values(&["26734", "this_month"])
        .set(3);
    k.unit_feedback_resolved_in_period
        .with_label_values(&["26734", "last_month"])
        .set(30);
    k.unit_open.with_label_values(&["26734"]).set(6);
    k.unit_open_overdue.with_label_values(&["26734"]).set(2);
    k.unit_open.with_label_values(&["STP"]).set(1);
    k.unit_open_overdue.with_label_values(&["STP"]).set(0);
    k.unit_received
        .with_label_values(&["26734", "online"])
        .inc_by(40);
    k.unit_outside_home.with_label_values(&["26734"]).inc_by(10);
    let today = crate::calendar::parse_date("2026-12-03").unwrap();
    board.set_trend(MonthTrend {
        first_day: today - 2,
        today,
        units: [(
            "26734".to_string(),
            vec![
                DayCounts {
                    received: 4,
                    ..DayCounts::default()
                },
                DayCounts::default(),
                DayCounts {
                    received: 6,
                    early: 2,
                    on_time: 1,
                    late: 1,
                    ..DayCounts::default()
                },
            ],
        )]
        .into(),
    });
    let page = board.overview_html();
    let f = figures(&page);
    assert_eq!(f["store/ward-26734/up"], "1");
    assert_eq!(f["store/ward-26734/lag"], "7");
    assert_eq!(f["store/ward-26734/divergent_rows"], "2");
    assert_eq!(f["store/ward-26734/verified_at"], "1765000000");
    assert_eq!(f["store/ward-26734/applied_at"], "1765000100");
    assert_eq!(f["store/ward-26734/dead_letters"], "5");
    assert_eq!(f["store/stp/up"], "0");
    assert!(page.contains("Đã dừng"), "a stopped connector is shown");
    assert!(page.contains("Lệch · diverged"));
    assert_eq!(f["unit/26734/received"], "10");
    assert_eq!(f["unit/26734/completed"], "4");
    assert_eq!(f["unit/26734/on_time_ratio"], "0.75");
    assert_eq!(f["unit/26734/open"], "6");
    assert_eq!(f["unit/26734/overdue"], "2");
    assert_eq!(f["unit/26734/outside_home_ratio"], "0.25");
    assert_eq!(f["unit/26734/feedback_received"], "5");
    assert_eq!(f["unit/26734/feedback_resolved"], "3");
    assert_eq!(f["unit/STP/open"], "1");
    assert_eq!(f["city/open"], "7");
    assert_eq!(f["city/received"], "10");
    // No completion at STP: no ratio rather than 0 %.
    assert!(!f.contains_key("unit/STP/on_time_ratio"));
    assert!(page.contains("data-key=\"unit/STP/on_time_ratio\""));
    assert!(page.contains("data-received=\"4,0,6\" data-completed=\"0,0,4\""));
    assert!(page.contains("Phường &lt;Sài Gòn&gt;"), "names are escaped");
    assert!(!page.contains("<Sài Gòn>"));
    // Departments first, then wards.
    let departments = page.find("Sở, ban, ngành").unwrap();
    let wards = page.find("Phường, xã, đặc khu").unwrap();
    assert!(departments < page.find("data-unit=\"STP\"").unwrap());
    assert!(departments < wards && wards < page.find("data-unit=\"26734\"").unwrap());
    assert!(page.contains("tháng 12/2026"));
}

#[test]
fn while_rebuilding_the_chain_is_not_shown() {
    let (board, t, _) = board();
    t.kpi.unit_open.with_label_values(&["26734"]).set(6);
    t.hide_indicators(true);
    let page = board.overview_html();
    assert!(page.contains("id=\"rebuilding\""));
    assert!(!figures(&page).contains_key("unit/26734/open"));
    let (status, page) = board.case_html("C-1");
    assert_eq!(status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.contains("id=\"rebuilding\""));
}

/// A case's page lists its events, the units it went through and escapes the id typed in.
#[test]
fn a_case_page_shows_the_path_across_units() {
    let (board, t, index) = board();
    t.kpi
        .unit_info
        .with_label_values(&["STP", "Sở Tư pháp", "department"])
        .set(1);
    let catalog =
        lienthong_contract::Catalog::load(lienthong_contract::repo_schemas_dir()).unwrap();
    let codec = lienthong_contract::Codec::from_catalog(&catalog).unwrap();
    let id = catalog.local_id("hcm.case.events").unwrap();
    let mut events = lienthong_contract::samples::case_lifecycle();
    assert!(events.len() >= 5, "the sample case has at least 5 steps");
    let case_id = events[0].envelope.aggregate_id.clone();
    // Received at the ward, handled by the department, the result returned by the ward.
    for (i, e) in events.iter_mut().enumerate() {
        e.envelope.producer_unit = match i {
            0 => "26734".into(),
            1..=3 => "STP".into(),
            _ => "26734".into(),
        };
    }
    for (i, e) in events.iter().enumerate() {
        let bytes = codec.encode_to_vec(id, e).unwrap();
        let (_, event) = codec.decode::<CaseEvent<&str>>(&bytes).unwrap();
        let at = At {
            topic: "hcm.case.events",
            partition: 0,
            offset: i as i64,
            published_ms: 1_765_000_000_000 + i as i64,
        };
        index.write().unwrap().case_event(at, &event);
    }
    let (status, page) = board.case_html(&case_id);
    assert_eq!(status, axum::http::StatusCode::OK, "{page}");
    let f = figures(&page);
    assert_eq!(f["case/events"], events.len().to_string());
    // Submitted at the sample's receiving ward, accepted by the sample's processing unit
    // (the department), then whatever the later steps say.
    let trace = index.read().unwrap().trace(&case_id).unwrap();
    let mut expected: Vec<String> = Vec::new();
    for e in &events {
        let unit = match &e.event {
            CaseEventKind::CaseSubmitted(s) => s.receiving_unit.clone(),
            CaseEventKind::CaseAccepted(a) => a.processing_unit.clone(),
            CaseEventKind::CaseAssigned(a) => a.to_unit.clone(),
            _ => expected
                .last()
                .cloned()
                .unwrap_or_else(|| e.envelope.producer_unit.clone()),
        };
        if expected.last() != Some(&unit) {
            expected.push(unit);
        }
    }
    assert!(expected.len() >= 2, "the sample case moves: {expected:?}");
    assert_eq!(f["case/path"], expected.join(","));
    assert_eq!(html::path(&trace).join(","), expected.join(","));
    assert!(page.contains("Sở Tư pháp"), "units are named");
    assert!(
        events
            .iter()
            .any(|e| matches!(e.event, CaseEventKind::CaseSubmitted(_)))
    );
    assert!(page.contains("Tiếp nhận hồ sơ"));
    assert!(page.contains("chưa có biên nhận"), "no receipt was read");

    let (status, page) = board.case_html("<script>x</script>");
    assert_eq!(status, axum::http::StatusCode::NOT_FOUND);
    assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"));
    assert!(!page.contains("<script>"));
    let (status, page) = board.case_html("  ");
    assert_eq!(status, axum::http::StatusCode::OK);
    assert!(page.contains("name=\"id\""));
}

/// The reader of figures takes what is well formed and skips the rest, never panicking.
#[test]
fn figures_are_read_from_well_formed_cells_only() {
    let page = "<td data-key=\"a\" data-value=\"1\">1</td><td data-key=\"b\">—</td>\
                <td data-key=\"c\" data-value=\"x,y\">";
    let f = figures(page);
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!((f["a"].as_str(), f["c"].as_str()), ("1", "x,y"));
    for broken in [
        "data-key=\"",
        "data-key=\"k",
        "data-key=\"k\" data-value=\"v",
        "",
    ] {
        assert!(figures(broken).is_empty(), "{broken}");
    }
}
