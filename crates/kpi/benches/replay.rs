//! How fast the KPI engine rebuilds its state: decode + apply of a case-event log, against the
//! baseline of decoding alone (what any consumer of the topic pays), and the cost of one
//! gauge export pass over every case. Release build; prints the median of several rounds.
//!
//!     cargo bench -p lienthong-kpi --bench replay

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use lienthong_contract::events::*;
use lienthong_contract::{Catalog, Codec};
use lienthong_kpi::calendar::{Calendar, parse_date};
use lienthong_kpi::engine::Engine;
use lienthong_kpi::reference::{Level, ProcedureRef, Reference, ReferenceFile};

const CASES: usize = 40_000;
const ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let catalog = Catalog::load(lienthong_contract::repo_schemas_dir()).unwrap();
    let codec = Codec::from_catalog(&catalog).unwrap();
    let id = catalog.local_id("hcm.case.events").unwrap();
    let units: Vec<String> = (0..170).map(|i| format!("{}", 26_000 + i)).collect();
    let procedures: Vec<ProcedureRef> = (0..2_400)
        .map(|i| ProcedureRef {
            code: format!("1.{i:06}"),
            level: [Level::Offline, Level::PartialOnline, Level::FullOnline][i % 3],
        })
        .collect();
    let top: Vec<String> = procedures.iter().take(50).map(|p| p.code.clone()).collect();
    let reference = || {
        Reference::new(
            [ReferenceFile {
                units: units.clone(),
                procedures: procedures.clone(),
            }],
            &top,
        )
        .unwrap()
    };
    let day = parse_date("2026-03-02").unwrap();
    let t0 = i64::from(day) * 86_400_000;
    let mut log: Vec<Vec<u8>> = Vec::with_capacity(CASES * 5);
    for c in 0..CASES {
        let case = format!("HS-{c:08}");
        let unit = &units[c % units.len()];
        let steps = vec![
            CaseEventKind::CaseSubmitted(CaseSubmitted {
                procedure_code: procedures[(c * 7) % procedures.len()].code.clone(),
                receiving_unit: unit.clone(),
                home_unit: unit.clone(),
                channel: [Channel::Online, Channel::Counter, Channel::Postal][c % 3],
                end_to_end_online: c % 2 == 0,
                applicant_id: "079203001234".into(),
                due_date: day + 5 + (c % 10) as i32,
                documents: vec![],
            }),
            CaseEventKind::CaseAccepted(CaseAccepted {
                processing_unit: units[(c + 1) % units.len()].clone(),
            }),
            CaseEventKind::SupplementRequested(SupplementRequested {
                reason: "thiếu".into(),
                requested_documents: vec![],
            }),
            CaseEventKind::SupplementReceived(SupplementReceived { documents: vec![] }),
            CaseEventKind::CaseCompleted(CaseCompleted {
                result: "ok".into(),
                result_document: None,
            }),
        ];
        // A quarter of the cases stay open.
        let keep = if c % 4 == 0 { 4 } else { 5 };
        for (v, event) in steps.into_iter().take(keep).enumerate() {
            let e = CaseEvent {
                envelope: Envelope {
                    event_id: lienthong_contract::samples::uuid_like((c * 5 + v) as u64),
                    occurred_at: t0 + (v as i64) * 86_400_000 * 2,
                    producer_unit: unit.clone(),
                    aggregate_id: case.clone(),
                    aggregate_version: v as i64 + 1,
                    correlation_id: lienthong_contract::samples::uuid_like(c as u64),
                },
                event,
            };
            log.push(codec.encode_to_vec(id, &e).unwrap());
        }
    }
    let events = log.len() as f64;

    let mut decode_only = Vec::new();
    let mut rebuild = Vec::new();
    let mut gauges = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let mut n = 0usize;
        for bytes in &log {
            let (_, e): (u32, CaseEvent<&str>) = codec.decode(bytes).unwrap();
            n += e.envelope.aggregate_id.len();
        }
        std::hint::black_box(n);
        decode_only.push(start.elapsed().as_secs_f64());

        let mut engine = Engine::new(Calendar::vietnam_2026(), reference());
        let start = Instant::now();
        for bytes in &log {
            let (_, e): (u32, CaseEvent<&str>) = codec.decode(bytes).unwrap();
            engine.apply_case(&e);
        }
        rebuild.push(start.elapsed().as_secs_f64());
        assert_eq!(engine.tallies().anomalies.len(), 0);

        let start = Instant::now();
        std::hint::black_box(engine.gauges(day + 30));
        gauges.push(start.elapsed().as_secs_f64());
    }
    let (d, r, g) = (median(decode_only), median(rebuild), median(gauges));
    println!("case-event log: {CASES} cases, {events} events, median of {ROUNDS} rounds");
    println!(
        "baseline decode only    {:>8.1} ms  {:>10.0} events/s",
        d * 1e3,
        events / d
    );
    println!(
        "decode + engine apply   {:>8.1} ms  {:>10.0} events/s  ({:.2}x baseline time)",
        r * 1e3,
        events / r,
        r / d
    );
    println!(
        "gauges (open cases)     {:>8.1} ms  ({} open of {CASES} cases, once per export)",
        g * 1e3,
        CASES / 4
    );
}
