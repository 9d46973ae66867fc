//! The gateway's JSON work per event, on one core, without Kafka or HTTP: a 500-event batch
//! body of typical case-submitted events, parsed (and dropped) by `serde_json::Value` — the
//! baseline, what the gateway used before — and by the borrowed tree it uses now
//! (`lienthong_gateway::json`), then parsed, NFC-normalised, validated and encoded by the walk
//! (what every body that is not valid and in the usual shape takes), and by the direct path
//! (bytes to records in one pass, what such a body takes). Prints the median of 5 repetitions
//! of 200 parses each.
//!
//! `cargo bench -p lienthong-gateway --bench json`

#![allow(clippy::unwrap_used)] // a benchmark: a failed unwrap is a failed run

/// The allocator of the `lienthong` binary, so that the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::Instant;

use lienthong_contract::{Catalog, repo_schemas_dir, samples};
use lienthong_encode::Json;
use lienthong_encode::TopicEncoder;
use lienthong_tests::bench::median;

const EVENTS: usize = 500;
const PARSES: u32 = 200;
const REPS: usize = 5;

/// Time `f` over `PARSES` calls, in µs per event.
fn per_event(mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..PARSES {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(PARSES * EVENTS as u32)
}

fn main() {
    let catalog = Catalog::load(repo_schemas_dir()).unwrap();
    let spec = catalog.topic("hcm.case.events").unwrap();
    let id = catalog.local_id("hcm.case.events").unwrap();
    let encoder = TopicEncoder::new(id, &spec.schema, &spec.key_field).unwrap();
    let events: Vec<serde_json::Value> = (0..EVENTS)
        .map(|i| {
            let mut e = samples::typical_case_submitted();
            e.envelope.event_id = uuid::Uuid::new_v4().to_string();
            e.envelope.aggregate_id = format!("HS-JSONBENCH-{i}");
            serde_json::to_value(e).unwrap()
        })
        .collect();
    let body = serde_json::Value::Array(events).to_string();
    let (mut value, mut tree, mut full, mut direct) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..REPS {
        value.push(per_event(|| {
            black_box(serde_json::from_slice::<serde_json::Value>(body.as_bytes()).unwrap());
        }));
        tree.push(per_event(|| {
            black_box(Json::parse(body.as_bytes()).unwrap());
        }));
        full.push(per_event(|| {
            let Json::Array(mut batch) = Json::parse(body.as_bytes()).unwrap() else {
                panic!("the body is an array");
            };
            for (i, e) in batch.iter_mut().enumerate() {
                black_box(encoder.encode(e, Some(i), 10).unwrap());
            }
        }));
        direct.push(per_event(|| {
            let records = encoder
                .encode_direct(body.as_bytes(), true, EVENTS)
                .unwrap();
            assert_eq!(records.len(), EVENTS);
            black_box(records);
        }));
    }
    let (value, tree, full, direct) = (median(value), median(tree), median(full), median(direct));
    println!(
        "gateway JSON work per event ({EVENTS}-event batch of {} bytes, median of {REPS}):",
        body.len()
    );
    println!("  parse + drop, serde_json::Value (baseline): {value:.2} µs");
    println!("  parse + drop, borrowed tree:                {tree:.2} µs");
    println!("  parse + NFC + validate + encode + drop:     {full:.2} µs");
    println!(
        "  the same by the direct path, bytes to records: {direct:.2} µs ({:.2}x)",
        full / direct
    );
    println!("  tree / Value parse speed: {:.2}x", value / tree);
}
