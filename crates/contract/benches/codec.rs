//! Codec throughput: lienthong's typed path (serde, and the SDK's direct writer) against
//! apache-avro's generic `Value` path and Python's fastavro, on the same typical case-submitted
//! event, in one run.
//!
//! Run: `cargo bench -p lienthong-contract --bench codec` (release build). Prints the median
//! of 9 rounds per measurement, as events/s on one core, and the ratios the goals are set in.
//! fastavro is measured when `LIENTHONG_PYTHON` names a Python with fastavro (`ops/python-env.sh
//! create` prints one); otherwise that column is skipped and says so.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use lienthong_contract::codec::split_frame;
use lienthong_contract::events::CaseEvent;
use lienthong_contract::{Catalog, Codec, repo_schemas_dir, samples};

const ROUNDS: usize = 9;

/// Median events/s of `ROUNDS` rounds of `n` calls each.
fn rate(n: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f(); // warm-up
    }
    let mut rates: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            n as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[ROUNDS / 2]
}

fn main() {
    let catalog = Catalog::load(repo_schemas_dir()).expect("catalog");
    let topic = catalog.topic("hcm.case.events").expect("case topic");
    let codec = Codec::new();
    let id = 1;
    let registered = codec.insert(id, &topic.schema_json).expect("schema");
    let schema = registered.schema().clone();
    let event = samples::typical_case_submitted();
    let framed = codec.encode_to_vec(id, &event).expect("encode");
    let (_, body) = split_frame(&framed).expect("frame");
    let body = body.to_vec();
    let value = apache_avro::from_avro_datum(&schema, &mut &body[..], None).expect("value");
    println!(
        "typical case-submitted event: {} bytes of Avro (+5 header)",
        body.len()
    );

    let n = 200_000;
    let mut buf = Vec::with_capacity(512);
    let ours_enc = rate(n, || {
        buf.clear();
        codec
            .encode(id, black_box(&event), &mut buf)
            .expect("encode");
        black_box(&buf);
    });
    // What the SDK does: the type writes its fields in schema order, checked once up front.
    registered
        .check_typed::<CaseEvent>()
        .expect("the type writes the schema");
    let direct_enc = rate(n, || {
        buf.clear();
        lienthong_contract::codec::encode_typed(id, black_box(&event), &mut buf);
        black_box(&buf);
    });
    let ours_dec = rate(n, || {
        let (_, e): (u32, CaseEvent) = codec.decode(black_box(&framed)).expect("decode");
        black_box(e);
    });
    // What a sink does: a view whose text borrows from the record, no string allocated.
    let ours_view = rate(n, || {
        let (_, e): (u32, CaseEvent<&str>) = codec.decode(black_box(&framed)).expect("decode");
        black_box(e);
    });
    let avro_enc = rate(n / 4, || {
        black_box(apache_avro::to_avro_datum(&schema, black_box(value.clone())).expect("encode"));
    });
    let avro_dec = rate(n / 4, || {
        black_box(
            apache_avro::from_avro_datum(&schema, &mut black_box(&body[..]), None).expect("decode"),
        );
    });

    let fastavro = std::env::var("LIENTHONG_PYTHON").ok().and_then(|py| {
        let here = lienthong_contract::repo_root().join("crates/contract");
        let script = here.join("benches/fastavro_bench.py");
        let golden = here.join("tests/golden/vectors.json");
        let out = Command::new(py)
            .arg(&script)
            .arg(&golden)
            .arg("case_0")
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "fastavro benchmark failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut it = text
            .split_whitespace()
            .filter_map(|w| w.parse::<f64>().ok());
        Some((it.next()?, it.next()?))
    });

    let row = |name: &str, enc: Option<f64>, dec: Option<f64>| {
        let [enc, dec] = [enc, dec].map(|r| r.map(|r| format!("{r:.0}")).unwrap_or_default());
        println!("{name:<36} {enc:>12} {dec:>12}");
    };
    println!();
    println!(
        "{:<36} {:>12} {:>12}",
        "events/s on one core (median of 9)", "encode", "decode"
    );
    row(
        "lienthong, owned event (serde path)",
        Some(ours_enc),
        Some(ours_dec),
    );
    row("lienthong, zero-copy view (sinks)", None, Some(ours_view));
    row("lienthong, direct writer (SDK)", Some(direct_enc), None);
    row("apache-avro Value path", Some(avro_enc), Some(avro_dec));
    match fastavro {
        Some((fe, fd)) => row("Python fastavro", Some(fe), Some(fd)),
        None => println!("Python fastavro: skipped, set LIENTHONG_PYTHON"),
    }
    println!();
    let ratios = |name: &str, goal: u32, enc: f64, dec: f64| {
        println!(
            "vs {name} (goal >= {goal}x): encode {:.1}x, decode {:.1}x owned, {:.1}x zero-copy",
            ours_enc / enc,
            ours_dec / dec,
            ours_view / dec
        );
    };
    println!(
        "direct writer vs the serde path: encode {:.1}x",
        direct_enc / ours_enc
    );
    ratios("apache-avro Value", 3, avro_enc, avro_dec);
    if let Some((fe, fd)) = fastavro {
        ratios("fastavro", 20, fe, fd);
    }
}
