//! The pages' HTML. Every figure cell carries `data-key` (what it is: `store/{connector}/lag`,
//! `unit/{code}/open`, `city/received`, …) and `data-value` (the exact number, as `/metrics`
//! has it), so that a test, or a script of the city's, reads the page without parsing the
//! Vietnamese number format shown to people (`1.234`, `93,5 %`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::calendar::{civil_from_days, format_date};
use crate::engine::{DayCounts, MonthTrend};
use crate::trace::Trace;

use super::Samples;

/// Every figure of a page as its `data-key` → `data-value` (as written, HTML-escaped): how a
/// script, a test or the demo reads the page.
pub fn figures(page: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for part in page.split("data-key=\"").skip(1) {
        let Some((key, rest)) = part.split_once('"') else {
            continue;
        };
        let tag = rest.split('>').next().unwrap_or(rest);
        if let Some((_, value)) = tag.split_once("data-value=\"")
            && let Some((value, _)) = value.split_once('"')
        {
            out.insert(key.to_string(), value.to_string());
        }
    }
    out
}

/// What a page is drawn from.
pub struct Context<'a> {
    /// The process's metrics now.
    pub samples: &'a Samples,
    /// The engine is reading the log from the beginning: its indicators are partial.
    pub rebuilding: bool,
    /// Now (ms since the epoch).
    pub now_ms: i64,
    /// Local time's offset.
    pub utc_offset_minutes: i32,
    /// This month's trend.
    pub trend: &'a MonthTrend,
}

/// Escape text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A count in the Vietnamese way: `1.234.567`.
pub fn count(value: f64) -> String {
    let digits = format!("{}", value.round().abs() as u64);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('.');
        }
        out.push(c);
    }
    if value < -0.5 {
        out.insert(0, '-');
    }
    out
}

/// A share in the Vietnamese way: `93,5 %`.
pub fn percent(ratio: f64) -> String {
    format!("{:.1} %", ratio * 100.0).replace('.', ",")
}

/// A Unix time in ms as local `YYYY-MM-DD HH:MM:SS`.
fn local_time(ms: i64, utc_offset_minutes: i32) -> String {
    let secs = ms.div_euclid(1000) + i64::from(utc_offset_minutes) * 60;
    let day = secs.div_euclid(86_400);
    let in_day = secs.rem_euclid(86_400);
    let day = day.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
    format!(
        "{} {:02}:{:02}:{:02}",
        format_date(day),
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

/// How long ago, in words: `12 giây trước` (`12 s ago`).
fn ago(ms: i64, now_ms: i64) -> String {
    let secs = (now_ms - ms).max(0) / 1000;
    match secs {
        0..=119 => format!("{secs} giây trước"),
        120..=7199 => format!("{} phút trước", secs / 60),
        7200..=172_799 => format!("{} giờ trước", secs / 3600),
        _ => format!("{} ngày trước", secs / 86_400),
    }
}

/// A figure cell: `data-value` exact, the text for people.
fn cell(out: &mut String, key: &str, value: Option<f64>, text: &str, class: &str) {
    let _ = match value {
        Some(v) => write!(
            out,
            "<td class=\"num {class}\" data-key=\"{}\" data-value=\"{v}\">{}</td>",
            esc(key),
            esc(text)
        ),
        None => write!(
            out,
            "<td class=\"num none\" data-key=\"{}\" title=\"không có số liệu / no data\">—</td>",
            esc(key)
        ),
    };
}

/// A count cell: absent series read as no data.
fn count_cell(out: &mut String, key: &str, value: Option<f64>, class: &str) {
    let text = value.map(count).unwrap_or_default();
    cell(out, key, value, &text, class);
}

/// A ratio cell: the share of `part` in `whole`, or no data when `whole` is 0.
fn ratio_cell(out: &mut String, key: &str, part: f64, whole: f64) {
    if whole > 0.0 {
        let r = part / whole;
        cell(out, key, Some(r), &percent(r), "");
    } else {
        cell(out, key, None, "", "");
    }
}

const STYLE: &str = "\
body{font-family:system-ui,'Segoe UI',Roboto,'Noto Sans',sans-serif;margin:0;color:#1c2530;background:#f4f6f8}\
header{background:#0b4f8a;color:#fff;padding:14px 24px}\
header h1{margin:0;font-size:22px}header p{margin:4px 0 0;font-size:14px;opacity:.9}\
header a{color:#fff}\
main{padding:12px 24px 40px}\
section{background:#fff;border:1px solid #d5dde5;border-radius:6px;margin:16px 0;padding:12px 16px;overflow-x:auto}\
h2{font-size:18px;margin:4px 0 10px}h2 small,th small,.en{font-weight:normal;color:#5a6775;font-size:12px}\
table{border-collapse:collapse;width:100%;font-size:14px}\
th,td{border-bottom:1px solid #e3e8ee;padding:5px 8px;text-align:left;vertical-align:top}\
th{background:#eef2f6;font-weight:600}\
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
.ok{color:#17723a;font-weight:600}.warn{color:#9a6300;font-weight:600}.bad{color:#b3261e;font-weight:600}\
.none{color:#98a2ad}\
.note{background:#fff6e0;border:1px solid #e6c66a;padding:8px 12px;border-radius:4px}\
form{display:flex;gap:8px;align-items:center;flex-wrap:wrap}\
input[type=text]{font-size:15px;padding:6px 8px;min-width:280px;border:1px solid #9fb0c0;border-radius:4px}\
button{font-size:15px;padding:6px 14px;background:#0b4f8a;color:#fff;border:0;border-radius:4px}\
.path{font-size:16px;line-height:1.8}.path span.unit{background:#e6f0fa;border:1px solid #b8d0ea;border-radius:4px;padding:2px 8px;white-space:nowrap}\
svg.trend{display:block}\
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}\
";

fn start(out: &mut String, title: &str, refresh: bool) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"vi\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{}\
         <title>{}</title><style>{STYLE}</style></head><body>",
        if refresh {
            "<meta http-equiv=\"refresh\" content=\"30\">"
        } else {
            ""
        },
        esc(title)
    );
}

fn header(out: &mut String, ctx: &Context<'_>) {
    let _ = write!(
        out,
        "<header><h1>Liên thông dữ liệu TP. Hồ Chí Minh <span class=\"en\" style=\"color:#dbe7f3\">\
         lienthong, the city's data exchange</span></h1>\
         <p>Cập nhật lúc <span id=\"generated\">{}</span> (giờ địa phương) · <span class=\"en\" \
         style=\"color:#dbe7f3\">as of, local time</span> · <a href=\"/status\">Tổng quan / \
         Overview</a> · <a href=\"/metrics\">/metrics</a></p></header><main>",
        local_time(ctx.now_ms, ctx.utc_offset_minutes)
    );
    if ctx.rebuilding {
        out.push_str(
            "<p class=\"note\" id=\"rebuilding\">Bộ chỉ số đang đọc lại nhật ký từ đầu; số liệu \
             chuỗi dịch vụ sẽ hiện khi đọc xong. <span class=\"en\">The KPI engine is reading \
             the log from the beginning; the service-chain figures show once it is done.</span></p>",
        );
    }
}

fn search(out: &mut String, id: &str) {
    let _ = write!(
        out,
        "<section id=\"search\"><h2>Tra cứu hồ sơ <small>Find a case</small></h2>\
         <form method=\"get\" action=\"/status/case\"><label for=\"id\">Mã hồ sơ hoặc mã liên kết \
         <span class=\"en\">case id or correlation id</span></label>\
         <input type=\"text\" id=\"id\" name=\"id\" value=\"{}\" required>\
         <button type=\"submit\">Tra cứu / Search</button></form></section>",
        esc(id)
    );
}

fn finish(out: &mut String) {
    out.push_str(
        "<p class=\"en\">Mọi số liệu đọc từ cùng các chỉ số mà <a href=\"/metrics\">/metrics</a> \
         công bố. Every figure is read from the same metrics that /metrics serves.</p>\
         </main></body></html>\n",
    );
}

/// `GET /status`.
pub fn overview(ctx: &Context<'_>) -> String {
    let mut out = String::with_capacity(64 * 1024);
    start(&mut out, "Tình trạng liên thông · lienthong status", true);
    header(&mut out, ctx);
    search(&mut out, "");
    stores(&mut out, ctx);
    receipts(&mut out, ctx);
    chain(&mut out, ctx);
    finish(&mut out);
    out
}

/// The sink connectors running in this process.
fn stores(out: &mut String, ctx: &Context<'_>) {
    let s = ctx.samples;
    out.push_str(
        "<section id=\"stores\"><h2>Kho dữ liệu của các cơ quan <small>Agencies' stores \
         (connectors in this process)</small></h2>",
    );
    let connectors = s.label_values("lienthong_connector_", "connector");
    if connectors.is_empty() {
        out.push_str(
            "<p>Không có bộ kết nối nào chạy trong tiến trình này. <span class=\"en\">No sink \
             connector runs in this process (list them in <code>connectors = […]</code>).</span></p>\
             </section>",
        );
        return;
    }
    out.push_str(
        "<table><thead><tr><th>Bộ kết nối <small>Connector</small></th>\
         <th>Trạng thái <small>State</small></th>\
         <th>Chưa áp dụng <small>Lag, records</small></th>\
         <th>Áp dụng lần cuối <small>Last commit</small></th>\
         <th>Đối chiếu với nhật ký <small>Last check against the log</small></th>\
         <th>Dòng lệch <small>Divergent rows</small></th>\
         <th>Thư lỗi <small>Dead letters</small></th></tr></thead><tbody>",
    );
    for c in &connectors {
        let by = [("connector", c.as_str())];
        let key = |field: &str| format!("store/{c}/{field}");
        let up = s.sum("lienthong_connector_up", &by);
        let retrying = s.sum("lienthong_connector_retrying", &by).unwrap_or(0.0);
        let (state, class) = match up {
            Some(u) if u >= 1.0 && retrying >= 1.0 => ("Đang thử lại · retrying", "warn"),
            Some(u) if u >= 1.0 => ("Đang chạy · running", "ok"),
            Some(_) => ("Đã dừng · stopped", "bad"),
            None => ("Chưa khởi động · starting", "warn"),
        };
        let _ = write!(out, "<tr data-connector=\"{}\"><td>{}</td>", esc(c), esc(c));
        cell(out, &key("up"), up, state, class);
        let lag = s.sum("lienthong_connector_consumer_lag_records", &by);
        let lag_class = match lag {
            Some(l) if l > 0.0 => "warn",
            _ => "",
        };
        count_cell(out, &key("lag"), lag, lag_class);
        match s.sum("lienthong_connector_applied_timestamp_seconds", &by) {
            Some(t) => {
                let ms = (t * 1000.0) as i64;
                let text = format!(
                    "{} ({})",
                    local_time(ms, ctx.utc_offset_minutes),
                    ago(ms, ctx.now_ms)
                );
                cell(out, &key("applied_at"), Some(t), &text, "");
            }
            None => cell(out, &key("applied_at"), None, "", ""),
        }
        let verified = s.sum("lienthong_connector_verified_timestamp_seconds", &by);
        let divergent = s.sum("lienthong_connector_divergent_rows", &by);
        let failed = s
            .sum(
                "lienthong_connector_verifications_total",
                &[("connector", c.as_str()), ("result", "failed")],
            )
            .unwrap_or(0.0);
        match verified {
            Some(t) => {
                let ms = (t * 1000.0) as i64;
                let (verdict, class) = match divergent {
                    Some(d) if d > 0.0 => ("Lệch · diverged", "bad"),
                    _ => ("Khớp · in sync", "ok"),
                };
                let mut text = format!(
                    "{verdict}, {} ({})",
                    local_time(ms, ctx.utc_offset_minutes),
                    ago(ms, ctx.now_ms)
                );
                if failed > 0.0 {
                    let _ = write!(text, "; {} lần lỗi · failed", count(failed));
                }
                cell(out, &key("verified_at"), Some(t), &text, class);
            }
            None => {
                let _ = write!(
                    out,
                    "<td class=\"none\" data-key=\"{}\">Chưa đối chiếu · not checked \
                     (<code>[verify] interval_secs</code>)</td>",
                    esc(&key("verified_at"))
                );
            }
        }
        let divergent_class = match divergent {
            Some(d) if d > 0.0 => "bad",
            _ => "",
        };
        count_cell(out, &key("divergent_rows"), divergent, divergent_class);
        let dead = s.sum("lienthong_connector_events_dead_lettered_total", &by);
        let dead_class = match dead {
            Some(d) if d > 0.0 => "warn",
            _ => "",
        };
        count_cell(out, &key("dead_letters"), dead.or(Some(0.0)), dead_class);
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></section>");
}

/// Every agency's sync delay, from their signed apply receipts.
fn receipts(out: &mut String, ctx: &Context<'_>) {
    let s = ctx.samples;
    let agencies = s.label_values("lienthong_sync_delay_seconds", "agency");
    if agencies.is_empty() {
        return;
    }
    out.push_str(
        "<section id=\"receipts\"><h2>Đồng bộ tại các cơ quan <small>Sync delay at every \
         agency, from its signed apply receipts</small></h2><table><thead><tr>\
         <th>Cơ quan <small>Agency</small></th><th>Biên nhận <small>Receipts</small></th>\
         <th>Độ trễ trung bình <small>Mean delay, s</small></th>\
         <th>Khoảng trống <small>Gaps</small></th></tr></thead><tbody>",
    );
    for agency in &agencies {
        let by = [("agency", agency.as_str())];
        let n = s.sum("lienthong_sync_delay_seconds_count", &by);
        let total = s
            .sum("lienthong_sync_delay_seconds_sum", &by)
            .unwrap_or(0.0);
        let _ = write!(out, "<tr><td>{}</td>", esc(agency));
        count_cell(out, &format!("agency/{agency}/receipts"), n, "");
        match n {
            Some(n) if n > 0.0 => {
                let mean = total / n;
                cell(
                    out,
                    &format!("agency/{agency}/mean_delay_seconds"),
                    Some(mean),
                    &format!("{mean:.3}").replace('.', ","),
                    "",
                );
            }
            _ => cell(
                out,
                &format!("agency/{agency}/mean_delay_seconds"),
                None,
                "",
                "",
            ),
        }
        let gaps = s.sum("lienthong_receipt_gaps_total", &by).unwrap_or(0.0);
        count_cell(
            out,
            &format!("agency/{agency}/gaps"),
            Some(gaps),
            if gaps > 0.0 { "bad" } else { "" },
        );
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></section>");
}

/// A unit's figures for the service-chain table.
struct UnitRow {
    code: String,
    name: Option<String>,
    received: f64,
    early: f64,
    on_time: f64,
    late: f64,
    open: Option<f64>,
    overdue: Option<f64>,
    received_all: f64,
    outside_home: f64,
    transfers: f64,
    feedback_open: f64,
    feedback_overdue: f64,
    feedback_received: f64,
    feedback_resolved: f64,
}

impl UnitRow {
    fn read(s: &Samples, code: &str, name: Option<String>) -> UnitRow {
        let unit = ("unit", code);
        let month = ("period", "this_month");
        let done = |t: &str| {
            s.sum(
                "lienthong_kpi_unit_cases_completed_in_period",
                &[unit, month, ("timeliness", t)],
            )
            .unwrap_or(0.0)
        };
        let total = |name: &str| s.sum(name, &[unit]).unwrap_or(0.0);
        UnitRow {
            code: code.to_string(),
            name,
            received: s
                .sum(
                    "lienthong_kpi_unit_cases_received_in_period",
                    &[unit, month],
                )
                .unwrap_or(0.0),
            early: done("early"),
            on_time: done("on_time"),
            late: done("late"),
            open: s.sum("lienthong_kpi_unit_cases_open", &[unit]),
            overdue: s.sum("lienthong_kpi_unit_cases_open_overdue", &[unit]),
            received_all: total("lienthong_kpi_unit_cases_received_total"),
            outside_home: total("lienthong_kpi_unit_cases_received_outside_home_total"),
            transfers: total("lienthong_kpi_unit_case_transfers_total"),
            feedback_open: total("lienthong_kpi_unit_feedback_open"),
            feedback_overdue: total("lienthong_kpi_unit_feedback_open_overdue"),
            feedback_received: s
                .sum(
                    "lienthong_kpi_unit_feedback_received_in_period",
                    &[unit, month],
                )
                .unwrap_or(0.0),
            feedback_resolved: s
                .sum(
                    "lienthong_kpi_unit_feedback_resolved_in_period",
                    &[unit, month],
                )
                .unwrap_or(0.0),
        }
    }

    fn completed(&self) -> f64 {
        self.early + self.on_time + self.late
    }
}

/// Units' names and kinds, from `lienthong_kpi_unit_info`.
fn unit_names(s: &Samples) -> BTreeMap<String, (String, String)> {
    s.matching("lienthong_kpi_unit_info", &[])
        .filter(|x| x.value > 0.0)
        .filter_map(|x| {
            Some((
                x.labels.get("unit")?.clone(),
                (
                    x.labels.get("name")?.clone(),
                    x.labels.get("kind").cloned().unwrap_or_default(),
                ),
            ))
        })
        .collect()
}

fn unit_label(code: &str, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{} <span class=\"en\">{}</span>", esc(name), esc(code)),
        None => esc(code),
    }
}

/// The service chain per department and per ward, this month.
fn chain(out: &mut String, ctx: &Context<'_>) {
    let s = ctx.samples;
    let (year, month, _) = civil_from_days(ctx.trend.today.max(ctx.trend.first_day));
    let title_month = if ctx.trend.units.is_empty() && ctx.trend.first_day == 0 {
        String::new()
    } else {
        format!(" tháng {month:02}/{year}")
    };
    let _ = write!(
        out,
        "<section id=\"chain\"><h2>Chỉ số chuỗi dịch vụ{title_month} <small>Service chain, \
         this month (received and completed by the day of the event)</small></h2>"
    );
    if ctx.rebuilding {
        out.push_str(
            "<p class=\"note\">Đang dựng lại · rebuilding from the beginning of the log.</p>\
             </section>",
        );
        return;
    }
    let names = unit_names(s);
    let units = s.label_values("lienthong_kpi_unit_", "unit");
    if units.is_empty() {
        out.push_str(
            "<p>Chưa có hồ sơ nào. <span class=\"en\">No case has been read yet.</span></p>\
             </section>",
        );
        return;
    }
    let rows: Vec<(UnitRow, bool)> = units
        .iter()
        .map(|code| {
            let named = names.get(code);
            let department = named.is_some_and(|(_, kind)| kind == "department");
            (
                UnitRow::read(s, code, named.map(|(n, _)| n.clone())),
                department,
            )
        })
        .collect();
    city_totals(out, rows.iter().map(|(r, _)| r));
    for (department, title, english) in [
        (true, "Sở, ban, ngành", "Departments"),
        (
            false,
            "Phường, xã, đặc khu",
            "Wards, communes and the special zone",
        ),
    ] {
        let mut group: Vec<&UnitRow> = rows
            .iter()
            .filter(|(_, d)| *d == department)
            .map(|(r, _)| r)
            .collect();
        if group.is_empty() {
            continue;
        }
        group.sort_by(|a, b| {
            (a.name.as_deref().unwrap_or(&a.code), &a.code)
                .cmp(&(b.name.as_deref().unwrap_or(&b.code), &b.code))
        });
        let _ = write!(
            out,
            "<h3>{title} <small class=\"en\">{english}</small></h3><table \
             class=\"units\"><thead><tr>\
             <th>Đơn vị <small>Unit</small></th>\
             <th>Tiếp nhận <small>Received</small></th>\
             <th>Hoàn thành <small>Completed</small></th>\
             <th>Trước hạn <small>Early</small></th>\
             <th>Đúng hạn <small>On time</small></th>\
             <th>Trễ hạn <small>Late</small></th>\
             <th>Tỷ lệ đúng hạn <small>On time or early</small></th>\
             <th>Đang xử lý <small>Open now</small></th>\
             <th>Quá hạn <small>Overdue now</small></th>\
             <th>Nộp ngoài địa giới <small>Filed outside home ward, all time</small></th>\
             <th>Chuyển đi <small>Transfers out, all time</small></th>\
             <th>Phản ánh nhận / đã xử lý <small>Feedback received / resolved</small></th>\
             <th>Phản ánh mở / quá hạn <small>Feedback open / overdue now</small></th>\
             <th>Xu hướng theo ngày <small>Daily trend</small> <span class=\"legend\">\
             <span style=\"background:#7fb2e5\"></span>nhận<span \
             style=\"background:#17723a\"></span>xong</span></th>\
             </tr></thead><tbody>"
        );
        for row in group {
            unit_row(out, ctx, row);
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
}

fn city_totals<'a>(out: &mut String, rows: impl Iterator<Item = &'a UnitRow>) {
    let (mut received, mut completed, mut timely, mut open, mut overdue) =
        (0.0, 0.0, 0.0, 0.0, 0.0);
    for r in rows {
        received += r.received;
        completed += r.completed();
        timely += r.early + r.on_time;
        open += r.open.unwrap_or(0.0);
        overdue += r.overdue.unwrap_or(0.0);
    }
    out.push_str(
        "<table id=\"city\"><thead><tr><th>Toàn thành phố <small>Whole city</small></th>\
         <th>Tiếp nhận tháng này <small>Received</small></th>\
         <th>Hoàn thành tháng này <small>Completed</small></th>\
         <th>Tỷ lệ đúng hạn <small>On time or early</small></th>\
         <th>Đang xử lý <small>Open now</small></th>\
         <th>Quá hạn <small>Overdue now</small></th></tr></thead><tbody><tr><td></td>",
    );
    count_cell(out, "city/received", Some(received), "");
    count_cell(out, "city/completed", Some(completed), "");
    ratio_cell(out, "city/on_time_ratio", timely, completed);
    count_cell(out, "city/open", Some(open), "");
    count_cell(
        out,
        "city/overdue",
        Some(overdue),
        if overdue > 0.0 { "bad" } else { "" },
    );
    out.push_str("</tr></tbody></table>");
}

fn unit_row(out: &mut String, ctx: &Context<'_>, r: &UnitRow) {
    let key = |field: &str| format!("unit/{}/{field}", r.code);
    let _ = write!(
        out,
        "<tr data-unit=\"{}\"><td>{}</td>",
        esc(&r.code),
        unit_label(&r.code, r.name.as_deref())
    );
    count_cell(out, &key("received"), Some(r.received), "");
    count_cell(out, &key("completed"), Some(r.completed()), "");
    count_cell(out, &key("early"), Some(r.early), "");
    count_cell(out, &key("on_time"), Some(r.on_time), "");
    count_cell(
        out,
        &key("late"),
        Some(r.late),
        if r.late > 0.0 { "warn" } else { "" },
    );
    ratio_cell(
        out,
        &key("on_time_ratio"),
        r.early + r.on_time,
        r.completed(),
    );
    count_cell(out, &key("open"), r.open, "");
    let overdue_class = match r.overdue {
        Some(o) if o > 0.0 => "bad",
        _ => "",
    };
    count_cell(out, &key("overdue"), r.overdue, overdue_class);
    ratio_cell(
        out,
        &key("outside_home_ratio"),
        r.outside_home,
        r.received_all,
    );
    count_cell(out, &key("transfers"), Some(r.transfers), "");
    let _ = write!(
        out,
        "<td class=\"num\" data-key=\"{}\" data-value=\"{}\">{} / <span data-key=\"{}\" \
         data-value=\"{}\">{}</span></td>",
        esc(&key("feedback_received")),
        r.feedback_received,
        count(r.feedback_received),
        esc(&key("feedback_resolved")),
        r.feedback_resolved,
        count(r.feedback_resolved)
    );
    let class = if r.feedback_overdue > 0.0 { "bad" } else { "" };
    let _ = write!(
        out,
        "<td class=\"num {class}\" data-key=\"{}\" data-value=\"{}\" data-overdue=\"{}\">{} / {}</td>",
        esc(&key("feedback_open")),
        r.feedback_open,
        r.feedback_overdue,
        count(r.feedback_open),
        count(r.feedback_overdue)
    );
    out.push_str("<td>");
    trend(out, ctx.trend, &r.code);
    out.push_str("</td></tr>");
}

/// A unit's month as an inline SVG: a bar per day for cases received, a line for completed.
fn trend(out: &mut String, trend: &MonthTrend, code: &str) {
    let empty = Vec::new();
    let days: &Vec<DayCounts> = trend.units.get(code).unwrap_or(&empty);
    let n = ((trend.today - trend.first_day + 1).max(1)) as usize;
    let received: Vec<u64> = (0..n)
        .map(|i| days.get(i).map_or(0, |d| d.received))
        .collect();
    let completed: Vec<u64> = (0..n)
        .map(|i| days.get(i).map_or(0, DayCounts::completed))
        .collect();
    let top = received
        .iter()
        .chain(&completed)
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let (w, h) = (5.0, 32.0);
    let join = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let _ = write!(
        out,
        "<svg class=\"trend\" role=\"img\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" \
         data-key=\"unit/{}/trend\" data-received=\"{}\" data-completed=\"{}\">",
        n as f64 * w,
        h,
        n as f64 * w,
        h,
        esc(code),
        join(&received),
        join(&completed)
    );
    let mut title = String::from("Theo ngày (nhận / xong) · by day (received / completed): ");
    for (i, (r, c)) in received.iter().zip(&completed).enumerate() {
        let _ = write!(title, "{}: {r}/{c}; ", i + 1);
    }
    let _ = write!(out, "<title>{}</title>", esc(&title));
    for (i, r) in received.iter().enumerate() {
        let bar = *r as f64 / top * (h - 2.0);
        if bar > 0.0 {
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bar:.1}\" fill=\"#7fb2e5\"/>",
                i as f64 * w + 0.5,
                h - bar,
                w - 1.0
            );
        }
    }
    let points: Vec<String> = completed
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * w + w / 2.0,
                h - 1.0 - *c as f64 / top * (h - 2.0)
            )
        })
        .collect();
    let _ = write!(
        out,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#17723a\" stroke-width=\"1.5\"/></svg>",
        points.join(" ")
    );
}

/// The Vietnamese name of an event kind.
fn kind_vi(kind: &str) -> &'static str {
    match kind {
        "CaseSubmitted" => "Tiếp nhận hồ sơ",
        "CaseAccepted" => "Thụ lý",
        "CaseAssigned" => "Chuyển xử lý",
        "SupplementRequested" => "Yêu cầu bổ sung",
        "SupplementReceived" => "Nhận hồ sơ bổ sung",
        "CaseCompleted" => "Hoàn thành",
        "CaseRejected" => "Từ chối",
        "CaseWithdrawn" => "Rút hồ sơ",
        "ResultReturned" => "Trả kết quả",
        "FeedbackSubmitted" => "Phản ánh, kiến nghị",
        "FeedbackAssigned" => "Giao xử lý phản ánh",
        "FeedbackResolved" => "Đã xử lý phản ánh",
        _ => "Sự kiện khác",
    }
}

/// The units a case went through, in order, each once per stay: where each event put it
/// (received at, accepted by, assigned to). The events that do not move it leave it where it
/// is; before any event that places it, it is with the unit that published the first event.
pub fn path(trace: &Trace) -> Vec<&str> {
    let mut path: Vec<&str> = Vec::new();
    for e in &trace.events {
        let unit = match (e.to_unit.as_deref(), path.last()) {
            (Some(to), _) => to,
            (None, Some(_)) => continue,
            (None, None) => &e.producer_unit,
        };
        if path.last() != Some(&unit) {
            path.push(unit);
        }
    }
    path
}

/// `GET /status/case?id=…`.
pub fn case(ctx: &Context<'_>, id: &str, trace: Option<&Trace>) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let title = if id.is_empty() {
        "Tra cứu hồ sơ · Find a case".to_string()
    } else {
        format!("Hồ sơ {id} · Case {id}")
    };
    start(&mut out, &title, false);
    header(&mut out, ctx);
    search(&mut out, id);
    match trace {
        Some(trace) => case_trace(&mut out, ctx, trace),
        None if id.is_empty() => {}
        None if ctx.rebuilding => {}
        None => {
            let _ = write!(
                out,
                "<section id=\"not-found\"><p class=\"note\">Không tìm thấy sự kiện nào của hồ sơ \
                 hoặc mã liên kết <b>{}</b>. <span class=\"en\">No event of case or correlation \
                 id {} has been read.</span></p></section>",
                esc(id),
                esc(id)
            );
        }
    }
    finish(&mut out);
    out
}

fn case_trace(out: &mut String, ctx: &Context<'_>, trace: &Trace) {
    let names = unit_names(ctx.samples);
    let named = |code: &str| unit_label(code, names.get(code).map(|(n, _)| n.as_str()));
    let units = path(trace);
    let _ = write!(
        out,
        "<section id=\"case\"><h2>Hồ sơ {} <small>Case</small></h2>\
         <p>Lộ trình qua các đơn vị <span class=\"en\">Path across units</span>:</p>\
         <p class=\"path\" data-key=\"case/path\" data-value=\"{}\">",
        esc(&trace.case_id),
        esc(&units.join(","))
    );
    for (i, unit) in units.iter().enumerate() {
        if i > 0 {
            out.push_str(" → ");
        }
        let _ = write!(out, "<span class=\"unit\">{}</span>", named(unit));
    }
    let _ = write!(
        out,
        "</p><table id=\"events\" data-key=\"case/events\" data-value=\"{}\"><thead><tr>\
         <th>Thời điểm <small>When (local)</small></th><th>Sự kiện <small>Event</small></th>\
         <th>Đơn vị <small>Unit (→ sent to)</small></th><th>Trên nhật ký <small>Topic / partition / \
         offset</small></th><th>Đã áp dụng tại <small>Applied by (signed receipts)</small></th>\
         </tr></thead><tbody>",
        trace.events.len()
    );
    for e in &trace.events {
        let _ = write!(
            out,
            "<tr data-event=\"{}\"><td>{}</td><td>{} <span class=\"en\">{}</span></td><td>{}</td>\
             <td><code>{} / {} / {}</code></td><td>",
            esc(&e.event_id),
            local_time(e.occurred_at_ms, ctx.utc_offset_minutes),
            kind_vi(&e.kind),
            esc(&e.kind),
            match e.to_unit.as_deref() {
                Some(to) if to != e.producer_unit => {
                    format!("{} → {}", named(&e.producer_unit), named(to))
                }
                _ => named(&e.producer_unit),
            },
            esc(&e.topic),
            e.partition,
            e.offset
        );
        if e.applied.is_empty() {
            out.push_str("<span class=\"none\">chưa có biên nhận · no receipt yet</span>");
        }
        for (i, a) in e.applied.iter().enumerate() {
            if i > 0 {
                out.push_str("<br>");
            }
            let _ = write!(
                out,
                "{} <span class=\"en\">({})</span> {} (+{:.1} s)",
                esc(&a.agency),
                esc(&a.connector),
                local_time(a.committed_ms, ctx.utc_offset_minutes),
                (a.committed_ms - e.published_ms).max(0) as f64 / 1000.0
            );
        }
        out.push_str("</td></tr>");
    }
    out.push_str("</tbody></table></section>");
}
