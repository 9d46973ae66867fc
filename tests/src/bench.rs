//! Helpers shared by the benchmarks (which print medians of several rounds and ratios).

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The median of `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The median of the per-round ratios `a[i] / b[i]`. Two variants timed seconds apart in
/// the same round share that moment's load, so on a shared machine this is steadier than
/// the ratio of the two medians.
pub fn median_ratio(a: &[f64], b: &[f64]) -> f64 {
    median(a.iter().zip(b).map(|(a, b)| a / b).collect())
}

/// CPU time (user + system) of a `/proc/<pid>/stat` line, in seconds; 0 if unreadable.
/// Fields 14 and 15 (clock ticks of 1/100 s) are counted after the command name, which ends
/// with the last ')'.
fn stat_cpu_secs(stat: &str) -> f64 {
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: f64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// CPU time this process has used, in seconds (0 where there is no `/proc`).
pub fn process_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat").map_or(0.0, |s| stat_cpu_secs(&s))
}

/// CPU time used so far by every running process whose command name is `comm` (for
/// example all of PostgreSQL's: backends, WAL writer, checkpointer), in seconds. Take the
/// difference around a timed section whose processes outlive it.
pub fn processes_cpu_secs(comm: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let named = |stat: &str| {
        stat.split_once(" (")
            .and_then(|(_, rest)| rest.rsplit_once(") "))
            .is_some_and(|(name, _)| name == comm)
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|s| named(s))
        .map(|s| stat_cpu_secs(&s))
        .sum()
}

/// The `q` quantile (0..=1) of `v`.
pub fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i.min(v.len() - 1)]
}

/// The baseline: a raw rdkafka producer (idempotent, `acks=all`, lz4, linger 5 ms), as the
/// SDK and gateway benchmarks compare against.
pub fn raw_producer(bootstrap: &str) -> anyhow::Result<FutureProducer> {
    Ok(lienthong_bus::KafkaConfig::new(bootstrap)
        .producer()
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .create()?)
}

/// Produce pre-encoded `(key, value)` records to `topic` with at most `in_flight` awaiting
/// acknowledgement; returns events/s.
pub async fn raw_rate(
    producer: &FutureProducer,
    topic: &str,
    records: &[(String, Vec<u8>)],
    in_flight: usize,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut pending = FuturesUnordered::new();
    for (key, payload) in records {
        let record: FutureRecord<'_, String, Vec<u8>> =
            FutureRecord::to(topic).key(key).payload(payload);
        pending.push(producer.send(record, Duration::from_secs(30)));
        if pending.len() >= in_flight
            && let Some(Err((e, _))) = pending.next().await
        {
            anyhow::bail!("raw produce failed: {e}");
        }
    }
    while let Some(r) = pending.next().await {
        if let Err((e, _)) = r {
            anyhow::bail!("raw produce failed: {e}");
        }
    }
    Ok(records.len() as f64 / t.elapsed().as_secs_f64())
}

/// POST `bodies` (JSON event batches holding `events` events in all) to `url` with the bearer
/// `token` from `clients` concurrent clients, each with one request outstanding; every answer
/// must be 201. Returns events/s and the process's CPU time per event in µs (the gateway in
/// the same process, its Kafka clients and the load generator).
pub async fn post_batches(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    bodies: Vec<String>,
    events: usize,
    clients: usize,
) -> (f64, f64) {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(bodies));
    let cpu = process_cpu_secs();
    let t = Instant::now();
    let clients: Vec<_> = (0..clients)
        .map(|_| {
            let (queue, http, url, token) = (
                queue.clone(),
                http.clone(),
                url.to_string(),
                token.to_string(),
            );
            tokio::spawn(async move {
                loop {
                    let Some(body) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop() else {
                        break;
                    };
                    let r = http
                        .post(&url)
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .expect("the gateway answers");
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    assert_eq!(status, reqwest::StatusCode::CREATED, "{text}");
                }
            })
        })
        .collect();
    for c in clients {
        c.await.expect("a load-generator client panicked");
    }
    let rate = events as f64 / t.elapsed().as_secs_f64();
    (rate, (process_cpu_secs() - cpu) * 1e6 / events as f64)
}
