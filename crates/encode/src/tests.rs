//! The encoder's own tests: every catalog topic's samples, and each kind of problem.

#![allow(clippy::unwrap_used)]

use crate::walk::*;
use crate::*;
use lienthong_contract::{Catalog, Codec, events::CaseEvent, repo_schemas_dir, samples};

fn encoder(topic: &str) -> (TopicEncoder, Codec) {
    let catalog = Catalog::load(repo_schemas_dir()).unwrap();
    let spec = catalog.topic(topic).unwrap();
    let id = catalog.local_id(topic).unwrap();
    (
        TopicEncoder::new(id, &spec.schema, &spec.key_field).unwrap(),
        Codec::from_catalog(&catalog).unwrap(),
    )
}

#[test]
fn sample_json_encodes_to_the_same_bytes_as_the_typed_codec() {
    let (enc, codec) = encoder("hcm.case.events");
    let id = enc.schema_id();
    for event in samples::case_lifecycle() {
        let value = serde_json::to_value(&event).unwrap();
        let encoded = enc.encode(&mut Json::from_value(&value), None, 10).unwrap();
        assert_eq!(encoded.value, codec.encode_to_vec(id, &event).unwrap());
        let (_, back): (u32, CaseEvent) = codec.decode(&encoded.value).unwrap();
        assert_eq!(back, event);
        assert_eq!(encoded.key, event.envelope.aggregate_id);
    }
}

#[test]
fn fields_in_any_order_encode_alike_and_unknown_ones_are_still_found() {
    let (enc, _) = encoder("hcm.case.events");
    let event = serde_json::to_value(samples::typical_case_submitted()).unwrap();
    let in_order = enc.encode(&mut Json::from_value(&event), None, 10).unwrap();
    // Every object's keys reversed: no field is where the schema has it.
    fn reversed(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(o) => serde_json::Value::Object(
                o.iter()
                    .rev()
                    .map(|(k, v)| (k.clone(), reversed(v)))
                    .collect(),
            ),
            serde_json::Value::Array(a) => a.iter().map(reversed).collect(),
            other => other.clone(),
        }
    }
    let backwards = reversed(&event);
    assert_ne!(backwards.to_string(), event.to_string());
    let out_of_order = enc
        .encode(&mut Json::from_value(&backwards), None, 10)
        .unwrap();
    assert_eq!(out_of_order.value, in_order.value);
    // An unknown key among fields out of order, and one in order, are both named.
    let mut extra = backwards.clone();
    extra["envelope"]["surplus"] = 1.into();
    let mut extra_in_order = event.clone();
    extra_in_order["event"]["CaseSubmitted"]["surplus"] = 1.into();
    for (json, path) in [
        (extra, "$.envelope.surplus"),
        (extra_in_order, "$.event.CaseSubmitted.surplus"),
    ] {
        let problems = enc
            .encode(&mut Json::from_value(&json), None, 10)
            .unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].path, path);
        assert!(
            problems[0].problem.starts_with("unknown field; "),
            "{problems:#?}"
        );
    }
}

#[test]
fn named_types_used_again_and_records_that_hold_themselves_encode_as_avro_does() {
    use apache_avro::types::Value;
    let schema = Schema::parse_str(
        r#"{"type": "record", "name": "Item", "namespace": "t", "fields": [
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
            {"name": "other_kind", "type": "Kind"},
            {"name": "next", "type": ["null", "Item"], "default": null}]}"#,
    )
    .unwrap();
    let enc = TopicEncoder::new(1, &schema, &["kind".into()]).unwrap();
    let json = serde_json::json!({"kind": "A", "other_kind": "B",
        "next": {"Item": {"other_kind": "A", "kind": "B"}}});
    let mut ours = Vec::new();
    enc.write(&Json::from_value(&json), None, 10, &mut ours)
        .unwrap();
    let inner = Value::Record(vec![
        ("kind".into(), Value::Enum(1, "B".into())),
        ("other_kind".into(), Value::Enum(0, "A".into())),
        ("next".into(), Value::Union(0, Box::new(Value::Null))),
    ]);
    let outer = Value::Record(vec![
        ("kind".into(), Value::Enum(0, "A".into())),
        ("other_kind".into(), Value::Enum(1, "B".into())),
        ("next".into(), Value::Union(1, Box::new(inner))),
    ]);
    assert_eq!(ours, apache_avro::to_avro_datum(&schema, outer).unwrap());
    let bad = serde_json::json!({"kind": "A", "other_kind": "C"});
    let problems = enc
        .write(&Json::from_value(&bad), None, 10, &mut Vec::new())
        .unwrap_err();
    assert_eq!(problems[0].path, "$.other_kind");
    assert_eq!(problems[0].problem, "\"C\" is not one of A, B");
}

#[test]
fn a_union_branch_may_be_named_by_its_full_name() {
    let (enc, _) = encoder("hcm.case.events");
    let short = serde_json::to_value(samples::typical_case_submitted()).unwrap();
    let mut full = short.clone();
    let body = full["event"]
        .as_object_mut()
        .unwrap()
        .remove("CaseSubmitted")
        .unwrap();
    full["event"]["vn.hcm.lienthong.case.CaseSubmitted"] = body;
    let mut wrong = full.clone();
    wrong["event"] = serde_json::json!({"vn.hcm.lienthong.CaseSubmitted": {}});
    let encode = |v: &serde_json::Value| enc.encode(&mut Json::from_value(v), None, 10);
    assert_eq!(encode(&full).unwrap().value, encode(&short).unwrap().value);
    assert!(encode(&wrong).is_err());
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let (enc, _) = encoder("hcm.case.events");
    let mut json = serde_json::to_value(samples::typical_case_submitted()).unwrap();
    json["envelope"]["event_id"] = "not-a-uuid".into();
    json["event"]["CaseSubmitted"]["home_unit"] = "phuong 1".into();
    json["event"]["CaseSubmitted"]["applicant_id"] = "12345".into();
    json["event"]["CaseSubmitted"]["channel"] = "FAX".into();
    json["event"]["CaseSubmitted"]["extra"] = 1.into();
    json["event"]["CaseSubmitted"]
        .as_object_mut()
        .unwrap()
        .remove("procedure_code");
    json["event"]["CaseSubmitted"]["documents"][0]["size_bytes"] = (-1).into();
    let problems = enc
        .encode(&mut Json::from_value(&json), Some(3), 50)
        .unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "$[3].envelope.event_id",
        "$[3].event.CaseSubmitted.home_unit",
        "$[3].event.CaseSubmitted.applicant_id",
        "$[3].event.CaseSubmitted.channel",
        "$[3].event.CaseSubmitted.extra",
        "$[3].event.CaseSubmitted.procedure_code",
        "$[3].event.CaseSubmitted.documents[0].size_bytes",
    ] {
        assert!(paths.contains(&want), "{want} not in {problems:#?}");
    }
    assert!(problems.iter().all(|p| p.index == Some(3)));
    let limited = enc
        .encode(&mut Json::from_value(&json), None, 2)
        .unwrap_err();
    assert_eq!(limited.len(), 2);
}

#[test]
fn dates_and_timestamps_take_strings_or_numbers() {
    assert_eq!(parse_date("1970-01-01"), Some(0));
    assert_eq!(parse_date("2025-07-01"), Some(20_270));
    assert_eq!(parse_date("2024-02-29"), Some(19_782));
    assert_eq!(parse_date("2025-02-29"), None);
    assert_eq!(parse_date("2025-13-01"), None);
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
    assert_eq!(
        parse_rfc3339("2025-07-01T08:30:00.123+07:00"),
        Some((20_270 * 86_400 + 3600 + 1800, 123_000_000))
    );
    for bad in [
        "2025-07-01",
        "2025-07-01T25:00:00Z",
        "2025-07-01T08:30:00",
        "x",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad}");
    }
    let (enc, codec) = encoder("hcm.case.events");
    let event = samples::typical_case_submitted();
    let mut json = serde_json::to_value(&event).unwrap();
    let ms = event.envelope.occurred_at;
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    json["envelope"]["occurred_at"] = format!("{}T00:00:00Z", civil(days)).into();
    let encoded = enc.encode(&mut Json::from_value(&json), None, 10).unwrap();
    let (_, back): (u32, CaseEvent) = codec.decode(&encoded.value).unwrap();
    assert_eq!(back.envelope.occurred_at, days * 86_400_000);
}

#[test]
fn a_timestamp_finer_than_its_field_or_too_far_out_is_refused_not_cut() {
    assert!(matches!(
        timestamp_in_unit(1, 250_000_000, false),
        Ok(1_250)
    ));
    assert!(matches!(
        timestamp_in_unit(1, 250_001_000, true),
        Ok(1_250_001)
    ));
    assert!(matches!(
        timestamp_in_unit(1, 250_001_000, false),
        Err(TimestampRefusal::TooPrecise)
    ));
    assert!(matches!(
        timestamp_in_unit(1, 1, true),
        Err(TimestampRefusal::TooPrecise)
    ));
    assert!(matches!(
        timestamp_in_unit(i64::MAX / 1000 + 1, 0, false),
        Err(TimestampRefusal::OutOfRange)
    ));
    // Through the walk, with its wording and path.
    let (enc, _) = encoder("hcm.case.events");
    let mut json = serde_json::to_value(samples::typical_case_submitted()).unwrap();
    json["envelope"]["occurred_at"] = "2025-07-01T08:30:00.123456Z".into();
    let problems = enc
        .encode(&mut Json::from_value(&json), None, 10)
        .unwrap_err();
    assert_eq!(problems[0].path, "$.envelope.occurred_at");
    assert!(
        problems[0]
            .problem
            .ends_with("has more precision than the field holds (milliseconds)"),
        "{problems:#?}"
    );
}

fn civil(days: i64) -> String {
    let (y, m, d) = lienthong_contract::json::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

#[test]
fn hostile_values_are_problems_not_panics() {
    let (enc, _) = encoder("hcm.feedback.events");
    for body in [
        "null",
        "[]",
        "1e999999",
        "{\"envelope\": 18446744073709551616}",
        "{\"envelope\": {\"aggregate_version\": 1e300}}",
        "{\"event\": {\"FeedbackResolved\": {\"resolution\": \"x\", \"satisfaction\": 9}}}",
        "{\"event\": {\"Nope\": {}}}",
        "{\"event\": {\"FeedbackResolved\": {}, \"FeedbackAssigned\": {}}}",
    ] {
        let Ok(mut json) = Json::parse(body.as_bytes()) else {
            continue;
        };
        assert!(enc.encode(&mut json, None, 50).is_err(), "{body}");
    }
}
