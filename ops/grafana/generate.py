#!/usr/bin/env python3
"""Writes the Grafana dashboards in ops/grafana/dashboards/ (JSON, Grafana 10+ schema).

The JSON files are what Grafana imports and what the tests check (every `lienthong_*` metric
an expression names must be exported by the code). Edit this script, run it, commit both.
"""
import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}

# Vietnamese titles of the dashboards' rows and panels: shown as "Vietnamese · English".
VI = {
    # bus health
    "lienthong — bus health": "Liên thông — tình trạng hệ thống",
    "Targets and versions": "Thành phần và phiên bản",
    "Components up": "Thành phần đang chạy",
    "Build info": "Phiên bản",
    "Flow": "Luồng sự kiện",
    "Events produced /s": "Sự kiện phát hành mỗi giây",
    "Events consumed /s": "Sự kiện đã đọc mỗi giây",
    "Events applied /s": "Sự kiện đã áp dụng mỗi giây",
    "Consumer lag (records)": "Độ trễ (bản ghi chưa áp dụng)",
    "Failed and dead-lettered /s": "Lỗi và thư lỗi mỗi giây",
    "Connectors up / retrying": "Bộ kết nối chạy / đang thử lại",
    "Rows differing from the log (scheduled check)": "Dòng lệch so với nhật ký (đối chiếu định kỳ)",
    "Hours since the last finished check": "Số giờ từ lần đối chiếu gần nhất",
    "Latency": "Độ trễ",
    "End-to-end latency p95 (event time → row committed)": "Độ trễ đầu-cuối p95 (sự kiện → dòng đã ghi)",
    "Batch apply latency p95": "Thời gian áp dụng lô p95",
    "Mean batch size": "Cỡ lô trung bình",
    "Transient retries /s": "Lần thử lại mỗi giây",
    "Gateway and registry": "Cổng tiếp nhận và kho lược đồ",
    "Gateway requests /s by status": "Yêu cầu tới cổng mỗi giây theo mã trạng thái",
    "Gateway 5xx share by route": "Tỷ lệ lỗi 5xx của cổng theo đường dẫn",
    "Gateway latency p95 by route": "Độ trễ cổng p95 theo đường dẫn",
    "Gateway rejections and duplicates /s": "Cổng từ chối và trùng lặp mỗi giây",
    "Registry operations /s": "Thao tác kho lược đồ mỗi giây",
    "Kafka client errors /s": "Lỗi máy khách Kafka mỗi giây",
    "Sources (agencies' outboxes)": "Nguồn dữ liệu (hộp thư đi của cơ quan)",
    "Outbox rows published /s": "Dòng hộp thư đi đã phát hành mỗi giây",
    "Outbox lag": "Độ trễ hộp thư đi",
    "Outbox row latency p95 (commit → Kafka)": "Độ trễ dòng hộp thư đi p95 (ghi → Kafka)",
    "Sources: dead letters, retries, up": "Nguồn: thư lỗi, thử lại, đang chạy",
    # service chain
    "lienthong — service-chain indicators": "Liên thông — chỉ số chuỗi dịch vụ",
    "Selected units ($unit)": "Đơn vị đã chọn ($unit)",
    "Open cases": "Hồ sơ đang xử lý",
    "Open past due": "Đang xử lý quá hạn",
    "Overdue share of open": "Tỷ lệ quá hạn trong hồ sơ đang xử lý",
    "Completed on time": "Hoàn thành đúng hạn",
    "Handled end-to-end online": "Xử lý trực tuyến toàn trình",
    "Feedback satisfaction (1–5)": "Mức hài lòng với xử lý phản ánh (1–5)",
    "Flow of cases": "Luồng hồ sơ",
    "Received per day by channel": "Tiếp nhận mỗi ngày theo kênh",
    "Accepted, completed and closed per day": "Thụ lý, hoàn thành và kết thúc mỗi ngày",
    "Supplement requests per day": "Yêu cầu bổ sung mỗi ngày",
    "Processing time (submission → completion), 7-day window": "Thời gian giải quyết (tiếp nhận → hoàn thành), 7 ngày",
    "Service chain: filed outside the home ward, transfers per case": "Chuỗi dịch vụ: nộp ngoài địa giới, số lần chuyển mỗi hồ sơ",
    "Working days: processing and holding, 30-day window (median)": "Ngày làm việc: giải quyết và lưu giữ, 30 ngày (trung vị)",
    "This month and last month, quarter and last quarter": "Tháng này và tháng trước, quý này và quý trước",
    "Open and overdue": "Đang xử lý và quá hạn",
    "Feedback per day": "Phản ánh, kiến nghị mỗi ngày",
    "Feedback open and past due": "Phản ánh đang xử lý và quá hạn",
    "Feedback handling time (working days), 30-day window": "Thời gian xử lý phản ánh (ngày làm việc), 30 ngày",
    "Units by overdue share": "Đơn vị theo tỷ lệ quá hạn",
    "Units by end-to-end online share": "Đơn vị theo tỷ lệ trực tuyến toàn trình",
    "By procedure (top-N codes, the rest as other; not filtered by unit)": "Theo thủ tục (N thủ tục chính, còn lại gộp là khác; không lọc theo đơn vị)",
    "Open and overdue by procedure": "Đang xử lý và quá hạn theo thủ tục",
    "Received per day by online level": "Tiếp nhận mỗi ngày theo mức độ trực tuyến",
    "Completed late share by procedure": "Tỷ lệ hoàn thành trễ hạn theo thủ tục",
    "Processing time p90 by procedure, 7-day window": "Thời gian giải quyết p90 theo thủ tục, 7 ngày",
    "End-to-end online share by procedure": "Tỷ lệ trực tuyến toàn trình theo thủ tục",
    "Supplement requests per day by procedure": "Yêu cầu bổ sung mỗi ngày theo thủ tục",
    "KPI engine": "Bộ tính chỉ số",
    "Caught up with the log": "Đã đọc kịp nhật ký",
    "Cases in memory": "Hồ sơ trong bộ nhớ",
    "Anomalies per hour by kind": "Bất thường mỗi giờ theo loại",
    "Records read /s by outcome": "Bản ghi đã đọc mỗi giây theo kết quả",
}


def title_of(english):
    """A title as shown: Vietnamese first, then the English one. Every title needs its
    Vietnamese form in VI (the city's officials read these dashboards)."""
    if english not in VI:
        raise SystemExit(f"no Vietnamese title for {english!r}: add it to VI in {__file__}")
    return f"{VI[english]} · {english}"


class Layout:
    def __init__(self):
        self.panels = []
        self.x = 0
        self.y = 0
        self.next_id = 1

    def row(self, name):
        if self.x:
            self.x, self.y = 0, self.y + 8
        self.panels.append({"type": "row", "title": title_of(name), "id": self.next_id, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.next_id += 1
        self.y += 1

    def panel(self, kind, name, targets, unit="short", w=8, h=8, description="", extra=None):
        if self.x + w > 24:
            self.x, self.y = 0, self.y + h
        p = {
            "type": kind,
            "title": title_of(name),
            "description": description,
            "id": self.next_id,
            "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {},
            "targets": [
                {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(65 + i)}
                for i, (expr, legend) in enumerate(targets)
            ],
        }
        if kind == "table":
            for t in p["targets"]:
                t["format"] = "table"
                t["instant"] = True
        if extra:
            p.update(extra)
        self.panels.append(p)
        self.next_id += 1
        self.x += w
        if self.x >= 24:
            self.x, self.y = 0, self.y + h


def dashboard(uid, name, description, layout, variables):
    return {
        "uid": uid,
        "title": title_of(name),
        "description": description,
        "tags": ["lienthong"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-24h", "to": "now"},
        "refresh": "1m",
        "timezone": "Asia/Ho_Chi_Minh",
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
        ] + variables},
        "annotations": {"list": []},
        "panels": layout.panels,
    }


def bus_health():
    l = Layout()
    l.row("Targets and versions")
    l.panel("stat", "Components up", [('sum by (job) (up{job=~"lienthong-.*"})', "{{job}}")], w=12, h=5,
            description="Scrape targets answering, by job (0 means Prometheus cannot reach it).")
    l.panel("table", "Build info", [("lienthong_build_info", "")], w=12, h=5,
            description="Which lienthong version runs which components.")
    l.row("Flow")
    l.panel("timeseries", "Events produced /s", [
        ("sum by (topic, producer) (rate(lienthong_bus_events_produced_total[5m]))", "{{topic}} ({{producer}})")],
        unit="ops")
    l.panel("timeseries", "Events consumed /s", [
        ("sum by (connector, topic) (rate(lienthong_connector_events_consumed_total[5m]))", "{{connector}} {{topic}}")],
        unit="ops")
    l.panel("timeseries", "Events applied /s", [
        ("sum by (connector, topic) (rate(lienthong_connector_events_applied_total[5m]))", "{{connector}} {{topic}}"),
        ("sum by (connector, topic) (rate(lienthong_connector_events_filtered_total[5m]))", "{{connector}} {{topic}} filtered")],
        unit="ops")
    l.panel("timeseries", "Consumer lag (records)", [
        ("sum by (connector, topic) (lienthong_connector_consumer_lag_records)", "{{connector}} {{topic}}")],
        description="Records on the log not yet applied; alert LienthongConsumerLagGrowing.")
    l.panel("timeseries", "Failed and dead-lettered /s", [
        ("sum by (connector, class) (rate(lienthong_connector_events_failed_total[5m]))", "failed {{connector}} {{class}}"),
        ("sum by (connector, class) (rate(lienthong_connector_events_dead_lettered_total[5m]))", "DLQ {{connector}} {{class}}")],
        unit="ops", description="Alert LienthongDeadLetters fires on any dead-lettered record.")
    l.panel("timeseries", "Connectors up / retrying", [
        ("lienthong_connector_up", "up {{connector}}"),
        ("lienthong_connector_retrying", "retrying {{connector}}")])
    l.panel("timeseries", "Rows differing from the log (scheduled check)", [
        ("max by (connector) (lienthong_connector_divergent_rows)", "{{connector}}")],
        description="Rows of each store that the log does not account for, at the connector's last "
        "[verify] check; alert LienthongStoreDiverged. `lienthong verify` names them, "
        "`lienthong repair` puts them right.")
    l.panel("stat", "Hours since the last finished check", [
        ("(time() - max by (connector) (lienthong_connector_verified_timestamp_seconds)) / 3600", "{{connector}}")],
        unit="h", description="Per connector with [verify]; alert LienthongStoreUnverified when every "
        "check fails for a day.")
    l.row("Latency")
    l.panel("timeseries", "End-to-end latency p95 (event time → row committed)", [
        ("histogram_quantile(0.95, sum by (connector, le) (rate(lienthong_connector_end_to_end_latency_seconds_bucket[5m])))", "{{connector}}")],
        unit="s")
    l.panel("timeseries", "Batch apply latency p95", [
        ("histogram_quantile(0.95, sum by (connector, le) (rate(lienthong_connector_batch_duration_seconds_bucket[5m])))", "{{connector}}")],
        unit="s")
    l.panel("timeseries", "Mean batch size", [
        ("sum by (connector) (rate(lienthong_connector_batch_size_records_sum[5m])) / sum by (connector) (rate(lienthong_connector_batch_size_records_count[5m]))", "{{connector}}")])
    l.panel("timeseries", "Transient retries /s", [
        ("sum by (connector, class) (rate(lienthong_connector_retries_total[5m]))", "{{connector}} {{class}}")], unit="ops")
    l.row("Gateway and registry")
    l.panel("timeseries", "Gateway requests /s by status", [
        ("sum by (status) (rate(lienthong_gateway_requests_total[5m]))", "{{status}}")], unit="reqps")
    l.panel("timeseries", "Gateway 5xx share by route", [
        ('sum by (route) (rate(lienthong_gateway_requests_total{status=~"5.."}[5m])) / sum by (route) (rate(lienthong_gateway_requests_total[5m]))', "{{route}}")],
        unit="percentunit", description="Alert LienthongGatewayErrors above 1%.")
    l.panel("timeseries", "Gateway latency p95 by route", [
        ("histogram_quantile(0.95, sum by (route, le) (rate(lienthong_gateway_request_duration_seconds_bucket[5m])))", "{{route}}")],
        unit="s")
    l.panel("timeseries", "Gateway rejections and duplicates /s", [
        ("sum by (topic, reason) (rate(lienthong_gateway_events_rejected_total[5m]))", "{{topic}} {{reason}}"),
        ("sum by (topic) (rate(lienthong_gateway_duplicate_events_total[5m]))", "{{topic}} duplicate")], unit="ops")
    l.panel("timeseries", "Registry operations /s", [
        ("sum by (operation, outcome) (rate(lienthong_registry_operations_total[5m]))", "{{operation}} {{outcome}}")], unit="ops")
    l.panel("timeseries", "Kafka client errors /s", [
        ("sum by (component, code) (rate(lienthong_kafka_client_errors_total[5m]))", "{{component}} {{code}}")], unit="ops")
    l.row("Sources (agencies' outboxes)")
    l.panel("timeseries", "Outbox rows published /s", [
        ("sum by (source, topic) (rate(lienthong_source_rows_published_total[5m]))", "{{source}} {{topic}}")], unit="ops",
        w=6, description="Rows the gateway committed to Kafka and the source removed from the agency's outbox.")
    l.panel("timeseries", "Outbox lag", [
        ("max by (source) (lienthong_source_lag_seconds)", "{{source}}")], unit="s", w=6,
        description="Age of the oldest row waiting in each outbox. Alert LienthongSourceBehind above 5 minutes.")
    l.panel("timeseries", "Outbox row latency p95 (commit → Kafka)", [
        ("histogram_quantile(0.95, sum by (source, le) (rate(lienthong_source_latency_seconds_bucket[5m])))", "{{source}}")],
        unit="s", w=6)
    l.panel("timeseries", "Sources: dead letters, retries, up", [
        ("sum by (source, reason) (rate(lienthong_source_rows_dead_lettered_total[5m]))", "{{source}} dead {{reason}}"),
        ("sum by (source, kind) (rate(lienthong_source_errors_total[5m]))", "{{source}} retry {{kind}}"),
        ("max by (source) (lienthong_source_up)", "{{source}} up")], w=6,
        description="Refused rows wait in the agency's dead-letter table (alert LienthongSourceDeadLetters); "
                    "retries by cause; 1 while an instance publishes (alert LienthongSourceDown).")
    return dashboard("lienthong-bus-health", "lienthong — bus health",
                     "Flow, lag, dead letters, latency and errors of every lienthong component.", l, [])


def named(expr):
    """`expr` (by unit) with each unit's name joined from lienthong_kpi_unit_info; units without
    a name keep their code only."""
    return (f"sort_desc(({expr} * on (unit) group_left (name) lienthong_kpi_unit_info)"
            f" or {expr})")


def named_procedure(expr):
    """`expr` (by procedure) with each top procedure's name joined from
    lienthong_kpi_procedure_info; `other` and procedures without a name keep their code only."""
    return (f"({expr} * on (procedure) group_left (name) lienthong_kpi_procedure_info)"
            f" or {expr}")


def service_chain():
    u = 'unit=~"$unit"'
    l = Layout()
    l.row("Selected units ($unit)")
    l.panel("stat", "Open cases", [(f"sum(lienthong_kpi_unit_cases_open{{{u}}})", "open")], w=4, h=5)
    l.panel("stat", "Open past due", [(f"sum(lienthong_kpi_unit_cases_open_overdue{{{u}}})", "overdue")], w=4, h=5)
    l.panel("stat", "Overdue share of open", [
        (f"sum(lienthong_kpi_unit_cases_open_overdue{{{u}}}) / sum(lienthong_kpi_unit_cases_open{{{u}}})", "share")],
        unit="percentunit", w=4, h=5)
    l.panel("stat", "Completed on time", [
        (f'sum(lienthong_kpi_unit_cases_completed_total{{{u},timeliness=~"early|on_time"}}) / sum(lienthong_kpi_unit_cases_completed_total{{{u}}})', "on time")],
        unit="percentunit", w=4, h=5, description="Share of completed cases decided early or on the due date (working days, supplement pauses added).")
    l.panel("stat", "Handled end-to-end online", [
        (f"sum(lienthong_kpi_unit_cases_end_to_end_online_total{{{u}}}) / sum(lienthong_kpi_unit_cases_received_total{{{u}}})", "online")],
        unit="percentunit", w=4, h=5)
    l.panel("stat", "Feedback satisfaction (1–5)", [
        (f"sum(lienthong_kpi_unit_feedback_rating_points_total{{{u}}}) / sum(lienthong_kpi_unit_feedback_ratings_total{{{u}}})", "score")], w=4, h=5,
        description="Mean of every rating given to the selected units (each rating counts once, whatever its unit).")
    l.row("Flow of cases")
    l.panel("timeseries", "Received per day by channel", [
        (f"sum by (channel) (increase(lienthong_kpi_unit_cases_received_total{{{u}}}[1d]))", "{{channel}}")])
    l.panel("timeseries", "Accepted, completed and closed per day", [
        (f"sum(increase(lienthong_kpi_unit_cases_accepted_total{{{u}}}[1d]))", "accepted"),
        (f"sum by (timeliness) (increase(lienthong_kpi_unit_cases_completed_total{{{u}}}[1d]))", "completed {{timeliness}}"),
        (f"sum by (outcome) (increase(lienthong_kpi_unit_cases_ended_total{{{u}}}[1d]))", "{{outcome}}")])
    l.panel("timeseries", "Supplement requests per day", [
        (f"sum(increase(lienthong_kpi_unit_supplement_requests_total{{{u}}}[1d]))", "requests")])
    l.panel("timeseries", "Processing time (submission → completion), 7-day window", [
        (f"histogram_quantile(0.5, sum by (le) (rate(lienthong_kpi_unit_processing_duration_seconds_bucket{{{u}}}[7d])))", "median"),
        (f"histogram_quantile(0.9, sum by (le) (rate(lienthong_kpi_unit_processing_duration_seconds_bucket{{{u}}}[7d])))", "p90")],
        unit="s")
    l.panel("timeseries", "Service chain: filed outside the home ward, transfers per case", [
        (f"sum(lienthong_kpi_unit_cases_received_outside_home_total{{{u}}}) / sum(lienthong_kpi_unit_cases_received_total{{{u}}})", "outside home ward (share)"),
        (f"sum(lienthong_kpi_unit_case_transfers_total{{{u}}}) / sum(lienthong_kpi_unit_cases_received_total{{{u}}})", "transfers per case")],
        description="Cumulative over the log.")
    l.panel("timeseries", "Working days: processing and holding, 30-day window (median)", [
        (f"histogram_quantile(0.5, sum by (le) (rate(lienthong_kpi_unit_processing_working_days_bucket{{{u}}}[30d])))", "processing"),
        (f"histogram_quantile(0.5, sum by (le) (rate(lienthong_kpi_unit_holding_working_days_bucket{{{u}}}[30d])))", "held by a unit")],
        description="Processing: submission to completion, supplement pauses left out. Holding: how long one unit was responsible.")
    l.panel("table", "This month and last month, quarter and last quarter", [
        (f'sum by (period) (lienthong_kpi_unit_cases_received_in_period{{{u}}})', "received"),
        (f'sum by (period) (lienthong_kpi_unit_cases_completed_in_period{{{u},timeliness=~"early|on_time"}}) / sum by (period) (lienthong_kpi_unit_cases_completed_in_period{{{u}}})', "on time share"),
        (f'sum by (period) (lienthong_kpi_unit_feedback_received_in_period{{{u}}})', "feedback received"),
        (f'sum by (period) (lienthong_kpi_unit_feedback_resolved_in_period{{{u}}})', "feedback resolved")],
        description="Calendar months and quarters, by the events' own days (docs/kpi.md): cases received, "
                    "the on-time share of completions (early or on time), feedback received and resolved.")
    l.panel("timeseries", "Open and overdue", [
        (f"sum(lienthong_kpi_unit_cases_open{{{u}}})", "open"),
        (f"sum(lienthong_kpi_unit_cases_open_overdue{{{u}}})", "overdue")])
    l.panel("timeseries", "Feedback per day", [
        (f"sum(increase(lienthong_kpi_unit_feedback_received_total{{{u}}}[1d]))", "received"),
        (f"sum(increase(lienthong_kpi_unit_feedback_resolved_total{{{u}}}[1d]))", "resolved")])
    l.panel("timeseries", "Feedback open and past due", [
        (f"sum(lienthong_kpi_unit_feedback_open{{{u}}})", "open"),
        (f"sum(lienthong_kpi_unit_feedback_open_overdue{{{u}}})", "past due")],
        description="Unresolved feedback by the unit handling it; past due: after the due date of its latest assignment.")
    l.panel("timeseries", "Feedback handling time (working days), 30-day window", [
        (f"histogram_quantile(0.5, sum by (le) (rate(lienthong_kpi_unit_feedback_handling_working_days_bucket{{{u}}}[30d])))", "median"),
        (f"histogram_quantile(0.9, sum by (le) (rate(lienthong_kpi_unit_feedback_handling_working_days_bucket{{{u}}}[30d])))", "p90")],
        description="From submission to resolution, in working days of the civil-service calendar.")
    l.panel("table", "Units by overdue share", [
        (named(f"lienthong_kpi_unit_open_overdue_ratio{{{u}}}"), ""),
    ], w=12, h=10, description="With each unit's name (lienthong_kpi_unit_info). "
                                "Alert LienthongOverdueShareHigh above 20% with at least 10 open cases.")
    l.panel("table", "Units by end-to-end online share", [
        (named(f"lienthong_kpi_unit_end_to_end_online_ratio{{{u}}}"), ""),
    ], w=12, h=10, description="With each unit's name (lienthong_kpi_unit_info).")
    l.row("By procedure (top-N codes, the rest as other; not filtered by unit)")
    l.panel("timeseries", "Open and overdue by procedure", [
        (named_procedure("sum by (procedure, level) (lienthong_kpi_procedure_cases_open)"), "open {{procedure}} {{name}}"),
        (named_procedure("sum by (procedure, level) (lienthong_kpi_procedure_cases_open_overdue)"), "overdue {{procedure}} {{name}}")])
    l.panel("timeseries", "Received per day by online level", [
        ("sum by (level) (increase(lienthong_kpi_procedure_cases_received_total[1d]))", "{{level}}"),
        ("sum by (level) (increase(lienthong_kpi_procedure_cases_accepted_total[1d]))", "accepted {{level}}")])
    l.panel("timeseries", "Completed late share by procedure", [
        (named_procedure('(sum by (procedure) (lienthong_kpi_procedure_cases_completed_total{timeliness="late"}) / sum by (procedure) (lienthong_kpi_procedure_cases_completed_total))'), "{{procedure}} {{name}}")],
        unit="percentunit")
    l.panel("timeseries", "Processing time p90 by procedure, 7-day window", [
        (named_procedure("histogram_quantile(0.9, sum by (procedure, le) (rate(lienthong_kpi_procedure_processing_duration_seconds_bucket[7d])))"), "{{procedure}} {{name}}")],
        unit="s")
    l.panel("timeseries", "End-to-end online share by procedure", [
        (named_procedure("lienthong_kpi_procedure_end_to_end_online_ratio"), "{{procedure}} {{name}} ({{level}})")], unit="percentunit")
    l.panel("timeseries", "Supplement requests per day by procedure", [
        (named_procedure("sum by (procedure) (increase(lienthong_kpi_procedure_supplement_requests_total[1d]))"), "{{procedure}} {{name}}")])
    l.row("KPI engine")
    l.panel("stat", "Caught up with the log", [("min(lienthong_kpi_caught_up)", "caught up")], w=6, h=5,
            description="0 while the engine re-reads its topics after a start: indicators are partial.")
    l.panel("stat", "Cases in memory", [("sum(lienthong_kpi_cases_tracked)", "cases")], w=6, h=5)
    l.panel("timeseries", "Anomalies per hour by kind", [
        ("sum by (kind) (increase(lienthong_kpi_anomalies_total[1h]))", "{{kind}}")], w=6, h=5)
    l.panel("timeseries", "Records read /s by outcome", [
        ("sum by (topic, outcome) (rate(lienthong_kpi_events_total[5m]))", "{{topic}} {{outcome}}")], unit="ops", w=6, h=5)
    unit_var = {
        "name": "unit", "label": "Đơn vị · Unit", "type": "query", "datasource": DS,
        "query": {"query": "label_values(lienthong_kpi_unit_cases_open, unit)", "refId": "units"},
        "definition": "label_values(lienthong_kpi_unit_cases_open, unit)",
        "multi": True, "includeAll": True, "allValue": ".*", "refresh": 2, "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "hide": 0,
    }
    return dashboard("lienthong-service-chain", "lienthong — service-chain indicators",
                     "Cases received, accepted, completed on time or late, open and overdue (working days), "
                     "end-to-end online share, supplements, processing time and feedback, per unit and per procedure. "
                     "Definitions: docs/kpi.md.", l, [unit_var])


if __name__ == "__main__":
    out = HERE / "dashboards"
    out.mkdir(exist_ok=True)
    for name, d in [("bus-health.json", bus_health()), ("service-chain.json", service_chain())]:
        (out / name).write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {out / name}")
