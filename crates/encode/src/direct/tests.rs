//! The direct path against the walk: the same bytes, or the walk's judgement.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::json::Json;
use lienthong_contract::{Catalog, repo_schemas_dir, samples};

fn encoders() -> Vec<(String, TopicEncoder, Vec<serde_json::Value>)> {
    let catalog = Catalog::load(repo_schemas_dir()).unwrap();
    let json = |v: &dyn erased::Ser| v.value();
    let by_topic: Vec<(&str, Vec<serde_json::Value>)> = vec![
        (
            "hcm.case.events",
            samples::case_lifecycle().iter().map(|e| json(e)).collect(),
        ),
        (
            "hcm.citizen.records",
            vec![json(&samples::citizen_record())],
        ),
        (
            "hcm.feedback.events",
            samples::feedback_lifecycle()
                .iter()
                .map(|e| json(e))
                .collect(),
        ),
        ("hcm.reference.units", vec![json(&samples::admin_unit())]),
        (
            "hcm.reference.procedures",
            vec![json(&samples::procedure())],
        ),
    ];
    by_topic
        .into_iter()
        .map(|(topic, events)| {
            let spec = catalog.topic(topic).unwrap();
            let id = catalog.local_id(topic).unwrap();
            let enc = TopicEncoder::new(id, &spec.schema, &spec.key_field).unwrap();
            (topic.to_string(), enc, events)
        })
        .collect()
}

mod erased {
    pub trait Ser {
        fn value(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn value(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap()
        }
    }
}

/// What the gateway does without the direct path: the tree, then the walk of each event,
/// and no event id twice in a batch.
fn walk(enc: &TopicEncoder, body: &[u8], batch: bool) -> Option<Vec<Encoded>> {
    let events = match (batch, Json::parse(body).ok()?) {
        (true, Json::Array(a)) if !a.is_empty() => a,
        (false, obj @ Json::Object(_)) => vec![obj],
        _ => return None,
    };
    let mut out: Vec<Encoded> = Vec::new();
    for (i, mut e) in events.into_iter().enumerate() {
        let e = enc.encode(&mut e, batch.then_some(i), 10).ok()?;
        if out.iter().any(|o| o.event_key == e.event_key) {
            return None;
        }
        out.push(e);
    }
    Some(out)
}

/// The property the direct path lives by: what it accepts, the walk accepts, with the same
/// records. Returns whether the direct path took the body.
fn agrees(enc: &TopicEncoder, body: &[u8], batch: bool) -> bool {
    let Some(direct) = enc.encode_direct(body, batch, 1000) else {
        return false;
    };
    let walked = walk(enc, body, batch).unwrap_or_else(|| {
        panic!(
            "the direct path took a body the walk refuses: {}",
            String::from_utf8_lossy(body)
        )
    });
    assert_eq!(direct.len(), walked.len());
    for (d, w) in direct.iter().zip(&walked) {
        assert_eq!(
            (&d.key, &d.event_id, d.event_key, &d.producer_unit, &d.value),
            (&w.key, &w.event_id, w.event_key, &w.producer_unit, &w.value),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    true
}

#[test]
fn every_sample_of_every_topic_is_encoded_directly_as_the_walk_does() {
    for (topic, enc, events) in encoders() {
        assert!(enc.direct, "{topic}");
        for e in &events {
            for body in [e.to_string(), serde_json::to_string_pretty(e).unwrap()] {
                assert!(agrees(&enc, body.as_bytes(), false), "{topic}: {body}");
            }
        }
        let batch = serde_json::Value::Array(events.clone()).to_string();
        assert!(agrees(&enc, batch.as_bytes(), true), "{topic}");
    }
}

/// Every string and number of `v`, by its place, replaced in turn by each of `with`.
fn variants(v: &serde_json::Value, with: &[serde_json::Value]) -> Vec<serde_json::Value> {
    fn places(v: &serde_json::Value, at: &mut Vec<String>, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| {
                at.push(k.replace('~', "~0").replace('/', "~1"));
                places(x, at, out);
                at.pop();
            }),
            serde_json::Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| {
                at.push(i.to_string());
                places(x, at, out);
                at.pop();
            }),
            _ => out.push(format!("/{}", at.join("/"))),
        }
    }
    let mut pointers = Vec::new();
    places(v, &mut Vec::new(), &mut pointers);
    let mut out = Vec::new();
    for p in &pointers {
        for w in with {
            let mut changed = v.clone();
            *changed.pointer_mut(p).unwrap() = w.clone();
            out.push(changed);
        }
    }
    out
}

#[test]
fn changed_values_are_taken_only_when_the_walk_takes_them_too() {
    use serde_json::json;
    let tricky = [
        json!(""),
        json!("Phường Bến Nghé"),
        json!("Phu\u{31b}o\u{31b}\u{300}ng"),
        json!("quote \" backslash \\ newline \n tab \t"),
        json!("\u{212a}"),
        json!("emoji 🏙️"),
        json!("2025-07-01"),
        json!("2025-07-01T08:30:00.123+07:00"),
        json!("2025-07-01T08:30:00.123456Z"),
        json!("6f0c2a5e-1d2b-4c7e-9a51-0e6b1b0f7a43"),
        json!("6F0C2A5E-1D2B-4C7E-9A51-0E6B1B0F7A43"),
        json!("079123456789"),
        json!("26734"),
        json!("STP"),
        json!("ONLINE"),
        json!(0),
        json!(-1),
        json!(1),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(i32::MAX),
        json!(i64::from(i32::MAX) + 1),
        json!(1.5),
        json!(1e3),
        json!(true),
        json!(null),
        json!([]),
        json!({}),
    ];
    let (mut taken, mut tried) = (0, 0);
    for (_, enc, events) in encoders() {
        for e in &events {
            for v in variants(e, &tricky) {
                tried += 1;
                taken += usize::from(agrees(&enc, v.to_string().as_bytes(), false));
            }
        }
    }
    // Most changes make an event invalid or leave it to the walk; many do not.
    assert!(
        taken > tried / 10 && taken < tried,
        "{taken} of {tried} taken directly"
    );
}

#[test]
fn damaged_bodies_are_taken_only_when_the_walk_takes_them_too() {
    // A fixed xorshift, so that a failure can be replayed.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let bytes = b" \t\n\r\"\\,:[]{}0123456789-+.eEtrufalsn/\x00\x1f\x7f\xc3\xa9\xff";
    for (topic, enc, events) in encoders() {
        let body = serde_json::Value::Array(events).to_string().into_bytes();
        assert!(agrees(&enc, &body, true));
        let mut taken = 0;
        for _ in 0..5_000 {
            let mut damaged = body.clone();
            let at = (next() % damaged.len() as u64) as usize;
            let b = bytes[(next() % bytes.len() as u64) as usize];
            match next() % 4 {
                0 => damaged[at] = b,
                1 => damaged.insert(at, b),
                2 => {
                    damaged.remove(at);
                }
                _ => damaged.truncate(at),
            }
            taken += usize::from(agrees(&enc, &damaged, true));
        }
        // Whitespace and the like leave a body valid: some damage must still be taken.
        assert!(taken > 0, "{topic}");
    }
}

/// An encoder of `schema` (JSON text) keyed by `envelope.aggregate_id`.
fn encoder_of(schema: &str) -> TopicEncoder {
    let schema = apache_avro::Schema::parse_str(schema).unwrap();
    TopicEncoder::new(1, &schema, &["envelope".into(), "aggregate_id".into()]).unwrap()
}

const ENVELOPE: &str = r#"{"type": "record", "name": "Env", "fields": [
    {"name": "event_id", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "producer_unit", "type": "string"},
    {"name": "aggregate_id", "type": "string"}]}"#;

#[test]
fn an_envelope_type_used_again_elsewhere_is_left_to_the_walk() {
    // The direct path keeps the key, id and producer unit by their record type: with the
    // envelope's type also under `previous`, that copy could stand in for the envelope.
    let enc = encoder_of(&format!(
        r#"{{"type": "record", "name": "E", "fields": [
            {{"name": "envelope", "type": {ENVELOPE}}},
            {{"name": "previous", "type": ["null", "Env"], "default": null}}]}}"#
    ));
    assert!(!enc.direct);
    let body = br#"{"envelope": {"event_id": "6f0c2a5e-1d2b-4c7e-9a51-0e6b1b0f7a43", "producer_unit": "P1", "aggregate_id": "k1"},
        "previous": {"event_id": "00000000-0000-0000-0000-000000000000", "producer_unit": "P2", "aggregate_id": "k2"}}"#;
    assert!(enc.encode_direct(body, false, 10).is_none());
    let walked = walk(&enc, body, false).unwrap();
    assert_eq!(
        (walked[0].key.as_str(), walked[0].producer_unit.as_str()),
        ("k1", "P1")
    );
    // Once, it is served.
    let once = encoder_of(&format!(
        r#"{{"type": "record", "name": "E", "fields": [{{"name": "envelope", "type": {ENVELOPE}}}]}}"#
    ));
    assert!(once.direct);
}

#[test]
fn nesting_is_bounded_below_the_walks_parser_limit() {
    // A record that holds itself through four arrays: five levels of JSON a node.
    let kids = r#"{"type": "array", "items": {"type": "array", "items": {"type": "array", "items": {"type": "array", "items": "Node"}}}}"#;
    let node = format!(
        r#"{{"type": "record", "name": "Node", "fields": [{{"name": "kids", "type": {kids}}}]}}"#
    );
    let enc = encoder_of(&format!(
        r#"{{"type": "record", "name": "Root", "fields": [{{"name": "envelope", "type": {ENVELOPE}}}, {{"name": "tree", "type": {node}}}]}}"#
    ));
    assert!(enc.direct);
    let envelope = r#"{"event_id": "6f0c2a5e-1d2b-4c7e-9a51-0e6b1b0f7a43", "producer_unit": "P", "aggregate_id": "k"}"#;
    let mut taken = 0;
    for nodes in 1..40 {
        let tree = (0..nodes).fold(String::from(r#"{"kids": []}"#), |inner, _| {
            format!(r#"{{"kids": [[[[{inner}]]]]}}"#)
        });
        let body = format!(r#"{{"envelope": {envelope}, "tree": {tree}}}"#);
        let batch = format!("[{body}]");
        taken += usize::from(agrees(&enc, body.as_bytes(), false));
        taken += usize::from(agrees(&enc, batch.as_bytes(), true));
    }
    assert!(taken > 0, "shallow trees are taken directly");
}

#[test]
fn what_the_direct_path_leaves_to_the_walk() {
    let (_, enc, events) = encoders().into_iter().next().unwrap();
    let typical = serde_json::to_value(samples::typical_case_submitted()).unwrap();
    let direct = |v: &serde_json::Value| enc.encode_direct(v.to_string().as_bytes(), false, 10);
    assert!(direct(&typical).is_some());
    let nfd = {
        let mut v = typical.clone();
        v["event"]["CaseSubmitted"]["documents"][0]["media_type"] =
            "Phu\u{31b}o\u{31b}\u{300}ng".into();
        v
    };
    let escaped = {
        let mut v = typical.clone();
        v["event"]["CaseSubmitted"]["documents"][0]["media_type"] = "a \"quoted\" type".into();
        v
    };
    let out_of_order = {
        let serde_json::Value::Object(o) = &typical else {
            panic!("an object")
        };
        serde_json::Value::Object(
            o.iter()
                .rev()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    };
    for (what, v) in [
        ("NFD text", &nfd),
        ("an escape", &escaped),
        ("keys out of order", &out_of_order),
    ] {
        assert!(direct(v).is_none(), "{what}");
        assert!(
            walk(&enc, v.to_string().as_bytes(), false).is_some(),
            "{what}: the walk takes it"
        );
    }
    // A batch naming one event id twice, and one over the size limit.
    let twice = serde_json::Value::Array(vec![typical.clone(), typical.clone()]).to_string();
    assert!(enc.encode_direct(twice.as_bytes(), true, 10).is_none());
    let all = serde_json::Value::Array(events.clone()).to_string();
    assert!(
        enc.encode_direct(all.as_bytes(), true, events.len())
            .is_some()
    );
    assert!(
        enc.encode_direct(all.as_bytes(), true, events.len() - 1)
            .is_none()
    );
    // Deep nesting is refused before the stack is.
    assert!(
        enc.encode_direct("[".repeat(100_000).as_bytes(), true, 10)
            .is_none()
    );
}
