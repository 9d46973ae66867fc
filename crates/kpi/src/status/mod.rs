//! The status page (`GET /status`, `GET /status/case?id=…`), served by the KPI engine under
//! `lienthong up`: what an operator and a reform-office official look at first. Server-rendered
//! HTML, in Vietnamese with English labels, with no script and no external asset, so that it
//! loads on any browser of a city office, behind any firewall.
//!
//! Every figure is read, at the moment of the request, from the same metric families the
//! process's `/metrics` serves (one registry for all of `lienthong up`): the page cannot say
//! anything the metrics do not. Two things are not metrics: the month's trend, day by day,
//! which the engine's loop leaves here at each export ([`Board::set_trend`]), and a case's path,
//! read from the trace index (`/trace/{id}`).
//!
//! - **Agencies' stores**: each sink connector running in this process, with its state, lag,
//!   last commit, last check against the log (`[verify]`) and dead letters; and, from the
//!   agencies' signed apply receipts (`[kpi.receipts]`), every agency's sync delay, wherever
//!   its connector runs.
//! - **Service chain**: per department and per ward, this month's cases received and completed
//!   (early, on time, late) with a daily trend, open and overdue cases, the share filed
//!   outside the applicant's home ward, transfers, open and overdue feedback.
//! - **A case's path**: every event of a case across the case and feedback topics, the units
//!   it went through, and which agencies applied each event and when.

mod html;
mod samples;

use std::sync::{Arc, RwLock};

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use lienthong_telemetry::Telemetry;

use crate::engine::MonthTrend;
use crate::service::now_millis;
use crate::trace::TraceIndex;

pub use html::figures;
pub use samples::Samples;

/// What the status page reads: the process's metrics, the engine's month trend and the trace
/// index. Cheap to clone.
#[derive(Clone)]
pub struct Board {
    telemetry: Arc<Telemetry>,
    index: Arc<RwLock<TraceIndex>>,
    trend: Arc<RwLock<MonthTrend>>,
    /// Minutes east of UTC of the engine's calendar: times are shown in local time.
    utc_offset_minutes: i32,
}

impl Board {
    /// A board over `telemetry` and `index`, with times shown `utc_offset_minutes` east of UTC.
    pub fn new(
        telemetry: Arc<Telemetry>,
        index: Arc<RwLock<TraceIndex>>,
        utc_offset_minutes: i32,
    ) -> Board {
        Board {
            telemetry,
            index,
            trend: Arc::new(RwLock::new(MonthTrend::default())),
            utc_offset_minutes,
        }
    }

    /// The trace index the case pages read (the engine's loop writes it).
    pub fn index(&self) -> &RwLock<TraceIndex> {
        &self.index
    }

    /// Replace the month's trend (the engine's loop, at each export).
    pub fn set_trend(&self, trend: MonthTrend) {
        *self.trend.write().unwrap_or_else(|p| p.into_inner()) = trend;
    }

    /// The routes: `/status` and `/status/case`, added to `router`.
    pub fn routes(self, router: axum::Router) -> axum::Router {
        router.merge(
            axum::Router::new()
                .route("/status", axum::routing::get(overview))
                .route("/status/case", axum::routing::get(case))
                .with_state(self),
        )
    }

    /// The overview page's HTML as of now.
    pub fn overview_html(&self) -> String {
        let samples = Samples::gather(&self.telemetry);
        let trend = self.trend.read().unwrap_or_else(|p| p.into_inner()).clone();
        html::overview(&html::Context {
            samples: &samples,
            rebuilding: self.telemetry.indicators_hidden(),
            now_ms: now_millis(),
            utc_offset_minutes: self.utc_offset_minutes,
            trend: &trend,
        })
    }

    /// A case's page, and the status to answer it with: 200, 404 for an id no event carries,
    /// 503 while the engine reads the log from the beginning.
    pub fn case_html(&self, id: &str) -> (StatusCode, String) {
        let samples = Samples::gather(&self.telemetry);
        let trend = MonthTrend::default();
        let context = html::Context {
            samples: &samples,
            rebuilding: self.telemetry.indicators_hidden(),
            now_ms: now_millis(),
            utc_offset_minutes: self.utc_offset_minutes,
            trend: &trend,
        };
        let id = id.trim();
        if id.is_empty() {
            return (StatusCode::OK, html::case(&context, id, None));
        }
        if context.rebuilding {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                html::case(&context, id, None),
            );
        }
        let trace = self
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .trace(id);
        let status = if trace.is_some() {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        (status, html::case(&context, id, trace.as_ref()))
    }
}

fn page(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn overview(State(board): State<Board>) -> Response {
    page(StatusCode::OK, board.overview_html())
}

/// The search form's query.
#[derive(serde::Deserialize)]
struct CaseQuery {
    #[serde(default)]
    id: String,
}

async fn case(State(board): State<Board>, Query(query): Query<CaseQuery>) -> Response {
    let (status, body) = board.case_html(&query.id);
    page(status, body)
}

#[cfg(test)]
mod tests;
