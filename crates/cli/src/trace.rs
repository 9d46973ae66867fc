//! `lienthong trace ID`: every event of a case across the case and feedback topics, and which
//! agencies applied each and when, from the KPI engine's trace index (`GET /trace/{id}` on its
//! listen address; docs/signatures.md).

use lienthong_kpi::trace::Trace;
use lienthong_telemetry::say;

use crate::{CliError, Config};

/// `lienthong trace` options.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// A case id, or a correlation id.
    pub id: String,
    /// The KPI engine's address (`http://host:port`); default: `[kpi] listen` of the config.
    #[arg(long, value_name = "URL")]
    pub kpi: Option<String>,
}

/// Ask the engine for `args.id`'s trace and print it; exit 1 if the engine knows no such case.
pub async fn run(config: &Config, args: &TraceArgs) -> Result<(), CliError> {
    let base = match &args.kpi {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let listen = config
                .kpi
                .as_ref()
                .map(|k| k.listen.clone())
                .ok_or_else(|| CliError::Usage("no --kpi URL and no [kpi] section".into()))?;
            format!("http://{listen}")
        }
    };
    let url = format!("{base}/trace/{}", urlencoding(&args.id));
    let response = reqwest::Client::new()
        .get(&url)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| CliError::Failed(format!("{url}: {e}")))?;
    match response.status() {
        reqwest::StatusCode::NOT_FOUND => {
            return Err(CliError::Failed(format!(
                "{}: no event of this case or correlation id has been read",
                args.id
            )));
        }
        reqwest::StatusCode::SERVICE_UNAVAILABLE => {
            return Err(CliError::Failed(format!(
                "{url}: the engine is still reading the log from the beginning; try again"
            )));
        }
        s if !s.is_success() => {
            let body = response.text().await.unwrap_or_default();
            return Err(CliError::Failed(format!("{url}: {s}: {body}")));
        }
        _ => {}
    }
    let trace: Trace = response
        .json()
        .await
        .map_err(|e| CliError::Failed(format!("{url}: not a trace: {e}")))?;
    print(&trace);
    Ok(())
}

fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `2026-12-07 09:14:02.311 UTC`.
fn time(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{} {:02}:{:02}:{:02}.{:03} UTC",
            t.date(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => format!("{ms} ms"),
    }
}

fn print(trace: &Trace) {
    say!("case {}: {} event(s)", trace.case_id, trace.events.len());
    for e in &trace.events {
        let moved = match e.to_unit.as_deref() {
            Some(to) if to != e.producer_unit => format!(" → {to}"),
            _ => String::new(),
        };
        say!(
            "{}  {:<20} by {:<6}{moved} {}[{}]@{}  event {}",
            time(e.published_ms),
            e.kind,
            e.producer_unit,
            e.topic,
            e.partition,
            e.offset,
            e.event_id
        );
        if e.applied.is_empty() {
            say!("    applied by: no receipt yet");
        } else {
            let by: Vec<String> = e
                .applied
                .iter()
                .map(|a| {
                    format!(
                        "{} ({}) +{} ms",
                        a.connector,
                        a.agency,
                        (a.committed_ms - e.published_ms).max(0)
                    )
                })
                .collect();
            say!("    applied by {}", by.join(", "));
        }
    }
}
