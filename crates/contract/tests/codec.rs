//! The codec: every sample event round-trips through its catalog schema on both paths, schema
//! versions resolve, and bad bytes give typed errors — never a panic.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::LazyLock;

use apache_avro::types::Value;
use lienthong_contract::codec::{split_frame, write_header};
use lienthong_contract::events::*;
use lienthong_contract::{Catalog, Codec, ContractError, repo_schemas_dir, samples};
use proptest::prelude::*;
use serde::{Serialize, de::DeserializeOwned};

/// A codec holding every catalog schema, with ids 1..=5 in catalog order (loaded once).
fn catalog_codec() -> (Catalog, Codec) {
    static LOADED: LazyLock<(Catalog, Codec)> = LazyLock::new(|| {
        let catalog = Catalog::load(repo_schemas_dir()).unwrap();
        let codec = Codec::from_catalog(&catalog).unwrap();
        (catalog, codec)
    });
    LOADED.clone()
}

fn id_of(catalog: &Catalog, topic: &str) -> u32 {
    catalog.local_id(topic).unwrap()
}

/// Encode, then decode owned and generic.
fn round_trip<T>(codec: &Codec, id: u32, value: &T) -> Vec<u8>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = codec.encode_to_vec(id, value).unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, id as u8], "Confluent header");
    let (got_id, back): (u32, T) = codec.decode(&bytes).unwrap();
    assert_eq!(got_id, id);
    assert_eq!(&back, value);
    // The generic path reads the same bytes.
    let (_, generic) = codec.decode_value(&bytes, None).unwrap();
    assert!(matches!(generic, Value::Record(_)));
    bytes
}

/// Decode `bytes` as a zero-copy view `V` (an event type over `&str`): same values as `owned`.
fn assert_view<'a, V: serde::Deserialize<'a> + Serialize>(
    codec: &Codec,
    bytes: &'a [u8],
    owned: &impl Serialize,
) {
    let (_, view): (u32, V) = codec.decode(bytes).unwrap();
    assert_eq!(
        serde_json::to_value(&view).unwrap(),
        serde_json::to_value(owned).unwrap(),
        "zero-copy view"
    );
}

#[test]
fn events_match_schemas() {
    let (catalog, codec) = catalog_codec();
    for e in samples::case_lifecycle() {
        let b = round_trip(&codec, id_of(&catalog, "hcm.case.events"), &e);
        assert_view::<CaseEvent<&str>>(&codec, &b, &e);
    }
    let b = round_trip(
        &codec,
        id_of(&catalog, "hcm.citizen.records"),
        &samples::citizen_record(),
    );
    assert_view::<CitizenRecord<&str>>(&codec, &b, &samples::citizen_record());
    for e in samples::feedback_lifecycle() {
        let b = round_trip(&codec, id_of(&catalog, "hcm.feedback.events"), &e);
        assert_view::<FeedbackEvent<&str>>(&codec, &b, &e);
    }
    let b = round_trip(
        &codec,
        id_of(&catalog, "hcm.reference.units"),
        &samples::admin_unit(),
    );
    assert_view::<AdminUnitRecord<&str>>(&codec, &b, &samples::admin_unit());
    let b = round_trip(
        &codec,
        id_of(&catalog, "hcm.reference.procedures"),
        &samples::procedure(),
    );
    assert_view::<ProcedureRecord<&str>>(&codec, &b, &samples::procedure());
}

#[test]
fn the_typed_and_generic_paths_agree_on_values() {
    let (catalog, codec) = catalog_codec();
    let bytes = codec
        .encode_to_vec(
            id_of(&catalog, "hcm.case.events"),
            &samples::typical_case_submitted(),
        )
        .unwrap();
    let (_, value) = codec.decode_value(&bytes, None).unwrap();
    let Value::Record(fields) = value else {
        panic!("not a record")
    };
    let Value::Record(env) = &fields[0].1 else {
        panic!("no envelope")
    };
    assert_eq!(
        env[3],
        (
            "aggregate_id".to_string(),
            Value::String("HS-26734-2025-000123".into())
        )
    );
    let Value::Union(branch, inner) = &fields[1].1 else {
        panic!("event is not a union")
    };
    assert_eq!(*branch, 0, "CaseSubmitted is the first branch");
    let Value::Record(sub) = inner.as_ref() else {
        panic!()
    };
    assert_eq!(
        sub[5],
        (
            "applicant_id".to_string(),
            Value::String("079203001234".into())
        )
    );
}

const V1: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#;
const V2: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"b","type":["null","long"],"default":null}]}"#;

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct RV1 {
    a: String,
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct RV2 {
    a: String,
    #[serde(default)]
    b: Option<i64>,
}

#[test]
fn a_reader_on_another_schema_version_reads_correctly() {
    let codec = Codec::new();
    codec.insert(1, V1).unwrap();
    codec.insert(2, V2).unwrap();
    // Old writer, new reader: the added field takes its default.
    let old = codec.encode_to_vec(1, &RV1 { a: "x".into() }).unwrap();
    let (_, typed): (u32, RV2) = codec.decode(&old).unwrap();
    assert_eq!(
        typed,
        RV2 {
            a: "x".into(),
            b: None
        }
    );
    let reader = apache_avro::Schema::parse_str(V2).unwrap();
    let (_, v) = codec.decode_value(&old, Some(&reader)).unwrap();
    assert_eq!(
        v,
        Value::Record(vec![
            ("a".into(), Value::String("x".into())),
            ("b".into(), Value::Union(0, Box::new(Value::Null)))
        ])
    );
    // New writer, old reader: the unknown field is skipped.
    let new = codec
        .encode_to_vec(
            2,
            &RV2 {
                a: "y".into(),
                b: Some(7),
            },
        )
        .unwrap();
    let (_, typed): (u32, RV1) = codec.decode(&new).unwrap();
    assert_eq!(typed, RV1 { a: "y".into() });
    let reader = apache_avro::Schema::parse_str(V1).unwrap();
    let (_, v) = codec.decode_value(&new, Some(&reader)).unwrap();
    assert_eq!(
        v,
        Value::Record(vec![("a".into(), Value::String("y".into()))])
    );
}

#[test]
fn rebinding_an_id_to_another_schema_is_refused() {
    let codec = Codec::new();
    codec.insert(1, V1).unwrap();
    codec.insert(1, V1).unwrap();
    assert!(matches!(
        codec.insert(1, V2),
        Err(ContractError::ConflictingId { id: 1 })
    ));
}

// --- Bad input: one test per kind, each a typed error --------------------------------------

/// `{s: string, u: ["null", "string"]}`, for hand-made bodies.
const SMALL: &str = r#"{"type":"record","name":"S","fields":[{"name":"s","type":"string"},{"name":"u","type":["null","string"]}]}"#;

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Small {
    s: String,
    u: Option<String>,
}

fn small_codec() -> Codec {
    let c = Codec::new();
    c.insert(9, SMALL).unwrap();
    c
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    write_header(9, &mut v);
    v.extend_from_slice(body);
    v
}

fn decode_small(bytes: &[u8]) -> Result<Small, ContractError> {
    small_codec().decode::<Small>(bytes).map(|(_, v)| v)
}

#[test]
fn a_valid_small_body_decodes() {
    // "hi" = len 2 (zigzag 4), then union branch 1 (zigzag 2), "x" = len 1 (zigzag 2)
    let v = decode_small(&framed(&[4, b'h', b'i', 2, 2, b'x'])).unwrap();
    assert_eq!(
        v,
        Small {
            s: "hi".into(),
            u: Some("x".into())
        }
    );
}

#[test]
fn truncated_input_is_an_error() {
    assert!(matches!(
        decode_small(&[0, 0, 0]),
        Err(ContractError::Truncated { len: 3 })
    ));
    assert!(matches!(
        decode_small(&framed(&[4, b'h'])),
        Err(ContractError::Decode { id: 9, .. })
    ));
    assert!(matches!(
        decode_small(&framed(&[])),
        Err(ContractError::Decode { .. })
    ));
}

#[test]
fn the_wrong_magic_byte_is_an_error() {
    let mut b = framed(&[4, b'h', b'i', 0]);
    b[0] = 1;
    assert!(matches!(
        decode_small(&b),
        Err(ContractError::BadMagic { found: 1 })
    ));
    assert!(matches!(
        split_frame(b"{\"json\":1}"),
        Err(ContractError::BadMagic { found: b'{' })
    ));
}

#[test]
fn an_unknown_schema_id_is_an_error() {
    let mut b = framed(&[4, b'h', b'i', 0]);
    b[4] = 77;
    assert!(matches!(
        decode_small(&b),
        Err(ContractError::UnknownSchemaId { id: 77 })
    ));
}

#[test]
fn negative_and_huge_length_prefixes_are_errors() {
    // zigzag 9 = -5
    assert!(matches!(
        decode_small(&framed(&[9, b'h', b'i', 0])),
        Err(ContractError::Decode { .. })
    ));
    // 2^62 as a zigzag varint: a length no input could hold, and nothing is allocated for it.
    let huge = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
    assert!(matches!(
        decode_small(&framed(&huge)),
        Err(ContractError::Decode { .. })
    ));
    // A varint that never ends.
    assert!(matches!(
        decode_small(&framed(&[0xff; 16])),
        Err(ContractError::Decode { .. })
    ));
}

#[test]
fn invalid_utf8_is_an_error() {
    assert!(matches!(
        decode_small(&framed(&[4, 0xff, 0xfe, 0])),
        Err(ContractError::Decode { .. })
    ));
}

#[test]
fn a_union_index_out_of_range_is_an_error() {
    // branch 5 (zigzag 10) of a 2-branch union; and a negative branch (zigzag 1 = -1).
    assert!(matches!(
        decode_small(&framed(&[4, b'h', b'i', 10])),
        Err(ContractError::Decode { .. })
    ));
    assert!(matches!(
        decode_small(&framed(&[4, b'h', b'i', 1])),
        Err(ContractError::Decode { .. })
    ));
}

#[test]
fn trailing_garbage_is_an_error() {
    assert!(matches!(
        decode_small(&framed(&[4, b'h', b'i', 0, 0xde, 0xad])),
        Err(ContractError::TrailingBytes { id: 9, extra: 2 })
    ));
    let (catalog, codec) = catalog_codec();
    let mut b = codec
        .encode_to_vec(
            id_of(&catalog, "hcm.case.events"),
            &samples::typical_case_submitted(),
        )
        .unwrap();
    b.push(0);
    assert!(matches!(
        codec.decode::<CaseEvent>(&b),
        Err(ContractError::TrailingBytes { extra: 1, .. })
    ));
    assert!(matches!(
        codec.decode_value(&b, None),
        Err(ContractError::TrailingBytes { extra: 1, .. })
    ));
}

#[test]
fn encoding_a_value_the_schema_cannot_hold_is_an_error_and_leaves_the_buffer() {
    let codec = small_codec();
    let mut out = vec![1, 2, 3];
    let err = codec
        .encode(9, &RV1 { a: "x".into() }, &mut out)
        .unwrap_err();
    assert!(matches!(err, ContractError::Encode { id: 9, .. }), "{err}");
    assert_eq!(out, [1, 2, 3]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, .. ProptestConfig::default() })]

    /// Any bytes at all: an error or a value, never a panic, on both paths.
    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let (catalog, codec) = catalog_codec();
        for topic in catalog.topics() {
            let mut b = Vec::new();
            write_header(id_of(&catalog, &topic.name), &mut b);
            b.extend_from_slice(&body);
            let _ = codec.decode::<CaseEvent>(&b);
            let _ = codec.decode::<serde::de::IgnoredAny>(&b);
            let _ = codec.decode_value(&b, None);
        }
        let _ = decode_small(&body);
    }

    /// A real event with bytes flipped, cut or extended: never a panic, and a clean
    /// encoding still decodes to the same event.
    #[test]
    fn mutated_events_never_panic(pos in 0usize..400, byte in any::<u8>(), cut in 0usize..400) {
        let (catalog, codec) = catalog_codec();
        let event = samples::typical_case_submitted();
        let good = codec.encode_to_vec(id_of(&catalog, "hcm.case.events"), &event).unwrap();
        let mut flipped = good.clone();
        let i = pos % flipped.len();
        flipped[i] ^= byte;
        let _ = codec.decode::<CaseEvent>(&flipped);
        let _ = codec.decode_value(&flipped, None);
        let cut_at = cut % good.len();
        prop_assert!(codec.decode::<CaseEvent>(&good[..cut_at]).is_err());
        prop_assert_eq!(codec.decode::<CaseEvent>(&good).unwrap().1, event);
    }

    /// Strings of any Unicode round-trip exactly.
    #[test]
    fn any_string_round_trips(s in ".*", u in proptest::option::of(".*")) {
        let codec = small_codec();
        let v = Small { s, u };
        let b = codec.encode_to_vec(9, &v).unwrap();
        prop_assert_eq!(codec.decode::<Small>(&b).unwrap().1, v);
    }
}

#[test]
fn a_symbol_added_later_reads_as_unknown_on_both_paths() {
    // A newer writer added KIOSK to Channel; this code's types and schema predate it.
    let (catalog, _) = catalog_codec();
    let current = &catalog.topic("hcm.case.events").unwrap().schema_json;
    let newer = current.replace(r#""POSTAL","UNKNOWN"]"#, r#""POSTAL","UNKNOWN","KIOSK"]"#);
    assert_ne!(
        &newer, current,
        "the channel symbols are where the test expects them"
    );
    let codec = Codec::new();
    codec.insert(1, &newer).unwrap();
    let mut event = samples::case_lifecycle().pop().unwrap();
    event.event = CaseEventKind::ResultReturned(ResultReturned {
        channel: Channel::Online,
    });
    let mut bytes = codec.encode_to_vec(1, &event).unwrap();
    // Rewrite the channel's symbol index (the last byte: ONLINE = 0) to KIOSK = 4.
    let last = bytes.len() - 1;
    assert_eq!(bytes[last], 0);
    bytes[last] = 8; // zigzag(4)
    let (_, typed): (u32, CaseEvent) = codec.decode(&bytes).unwrap();
    assert_eq!(
        typed.event,
        CaseEventKind::ResultReturned(ResultReturned {
            channel: Channel::Unknown
        })
    );
    let reader = apache_avro::Schema::parse_str(current).unwrap();
    let (_, generic) = codec.decode_value(&bytes, Some(&reader)).unwrap();
    assert!(
        format!("{generic:?}").contains("Enum(3, \"UNKNOWN\")"),
        "{generic:?}"
    );
    // The union branch is found by name: ResultReturned is branch 8, not the first branch the
    // value happens to fit (apache-avro 0.21's own resolution picks SupplementReceived, 4).
    let Value::Record(fields) = generic else {
        panic!("not a record")
    };
    assert!(
        matches!(fields[1].1, Value::Union(8, _)),
        "{:?}",
        fields[1].1
    );
}

#[test]
fn a_new_field_whose_type_is_a_named_type_defined_earlier_resolves_its_default() {
    // v2 adds `previous: ["null", Doc]`, Doc being defined by an earlier field: old records
    // read with v2 get null there.
    let v1 = r#"{"type":"record","name":"R","fields":[{"name":"doc","type":{"type":"record","name":"Doc","fields":[{"name":"n","type":"int"}]}}]}"#;
    let v2 = r#"{"type":"record","name":"R","fields":[{"name":"doc","type":{"type":"record","name":"Doc","fields":[{"name":"n","type":"int"}]}},{"name":"previous","type":["null","Doc"],"default":null}]}"#;
    let codec = Codec::new();
    codec.insert(1, v1).unwrap();
    #[derive(serde::Serialize)]
    struct Doc {
        n: i32,
    }
    #[derive(serde::Serialize)]
    struct R {
        doc: Doc,
    }
    let bytes = codec.encode_to_vec(1, &R { doc: Doc { n: 7 } }).unwrap();
    let reader = apache_avro::Schema::parse_str(v2).unwrap();
    let (_, v) = codec.decode_value(&bytes, Some(&reader)).unwrap();
    let Value::Record(fields) = v else {
        panic!("not a record")
    };
    assert_eq!(
        fields[1],
        (
            "previous".to_string(),
            Value::Union(0, Box::new(Value::Null))
        )
    );
}
