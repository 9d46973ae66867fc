//! The direct writer (`lienthong_contract::write`): it writes the same bytes as the serde path
//! for every event type and any values, and a schema that is not exactly what a type writes is
//! refused with the place where they differ.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::LazyLock;

use lienthong_contract::codec::encode_typed;
use lienthong_contract::events::*;
use lienthong_contract::write::WriteAvro;
use lienthong_contract::{
    Catalog, Codec, ContractError, RegisteredSchema, repo_schemas_dir, samples,
};
use proptest::prelude::*;
use serde::Serialize;
use serde_json::Value;

fn catalog() -> &'static Catalog {
    static CATALOG: LazyLock<Catalog> =
        LazyLock::new(|| Catalog::load(repo_schemas_dir()).unwrap());
    &CATALOG
}

/// The schema of `topic` as the catalog has it, parsed under `id`.
fn topic_schema(catalog: &Catalog, topic: &str, id: u32) -> RegisteredSchema {
    RegisteredSchema::parse(id, &catalog.topic(topic).unwrap().schema_json).unwrap()
}

/// Both writers, on one schema: the direct one must be accepted and write the serde path's bytes.
fn assert_same_bytes<T: WriteAvro + Serialize>(schema: &RegisteredSchema, value: &T) {
    schema.check_typed::<T>().unwrap();
    let codec = Codec::new();
    codec.insert(schema.id(), schema.json()).unwrap();
    let serde_bytes = codec.encode_to_vec(schema.id(), value).unwrap();
    let mut direct = Vec::new();
    encode_typed(schema.id(), value, &mut direct);
    assert_eq!(direct, serde_bytes);
}

#[test]
fn every_sample_is_written_as_the_serde_path_writes_it() {
    let catalog = catalog();
    let case = topic_schema(catalog, "hcm.case.events", 1);
    let mut kinds = std::collections::BTreeSet::new();
    for e in samples::case_lifecycle() {
        kinds.insert(format!("{:?}", std::mem::discriminant(&e.event)));
        assert_same_bytes(&case, &e);
    }
    assert_eq!(kinds.len(), 9, "the samples hold every kind of case event");
    assert_same_bytes(&case, &samples::typical_case_submitted());
    let citizen = topic_schema(catalog, "hcm.citizen.records", 2);
    assert_same_bytes(&citizen, &samples::citizen_record());
    let feedback = topic_schema(catalog, "hcm.feedback.events", 3);
    for e in samples::feedback_lifecycle() {
        assert_same_bytes(&feedback, &e);
    }
    assert_same_bytes(
        &topic_schema(catalog, "hcm.reference.units", 4),
        &samples::admin_unit(),
    );
    assert_same_bytes(
        &topic_schema(catalog, "hcm.reference.procedures", 5),
        &samples::procedure(),
    );
}

fn text() -> impl Strategy<Value = String> {
    ".{0,24}"
}

fn signature() -> impl Strategy<Value = Signature> {
    (
        text(),
        proptest::option::of(text()),
        text(),
        any::<i64>(),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(text()),
    )
        .prop_map(
            |(
                signer_name,
                signer_unit,
                issuer,
                signed_at,
                value,
                signed_digest,
                certificate_id,
            )| {
                Signature {
                    signer_name,
                    signer_unit,
                    certificate_serial: "0A1B".into(),
                    issuer,
                    algorithm: "RSA-SHA256".into(),
                    signed_at,
                    value,
                    signed_digest,
                    certificate_id,
                }
            },
        )
}

fn document() -> impl Strategy<Value = Document> {
    (text(), any::<i64>(), proptest::option::of(signature())).prop_map(
        |(sha256, size_bytes, signature)| Document {
            sha256,
            media_type: "application/pdf".into(),
            size_bytes,
            signature,
        },
    )
}

fn channel() -> impl Strategy<Value = Channel> {
    prop_oneof![
        Just(Channel::Online),
        Just(Channel::Counter),
        Just(Channel::Postal),
        Just(Channel::Unknown)
    ]
}

fn case_kind() -> impl Strategy<Value = CaseEventKind> {
    let documents = || proptest::collection::vec(document(), 0..4);
    prop_oneof![
        (text(), channel(), any::<bool>(), any::<i32>(), documents()).prop_map(
            |(home_unit, channel, end_to_end_online, due_date, documents)| {
                CaseEventKind::CaseSubmitted(CaseSubmitted {
                    procedure_code: "1.004227".into(),
                    receiving_unit: "26734".into(),
                    home_unit,
                    channel,
                    end_to_end_online,
                    applicant_id: "079203001234".into(),
                    due_date,
                    documents,
                })
            }
        ),
        text().prop_map(|processing_unit| CaseEventKind::CaseAccepted(CaseAccepted {
            processing_unit
        })),
        (text(), proptest::option::of(text()), any::<bool>()).prop_map(|(to_unit, note, t)| {
            CaseEventKind::CaseAssigned(CaseAssigned {
                from_unit: "26734".into(),
                to_unit,
                kind: if t {
                    AssignmentKind::Transferred
                } else {
                    AssignmentKind::Assigned
                },
                note,
            })
        }),
        (text(), proptest::collection::vec(text(), 0..4)).prop_map(|(reason, requested)| {
            CaseEventKind::SupplementRequested(SupplementRequested {
                reason,
                requested_documents: requested,
            })
        }),
        documents().prop_map(
            |documents| CaseEventKind::SupplementReceived(SupplementReceived { documents })
        ),
        (text(), proptest::option::of(document())).prop_map(|(result, result_document)| {
            CaseEventKind::CaseCompleted(CaseCompleted {
                result,
                result_document,
            })
        }),
        text().prop_map(|reason| CaseEventKind::CaseRejected(CaseRejected { reason })),
        proptest::option::of(text())
            .prop_map(|reason| CaseEventKind::CaseWithdrawn(CaseWithdrawn { reason })),
        channel().prop_map(|channel| CaseEventKind::ResultReturned(ResultReturned { channel })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, .. ProptestConfig::default() })]

    /// Any case event, with any text, numbers at their extremes, and options and arrays of every
    /// length: the same bytes on both paths.
    #[test]
    fn any_case_event_is_written_as_the_serde_path_writes_it(
        seed in 0u64..1_000_000,
        occurred_at in any::<i64>(),
        version in any::<i64>(),
        aggregate_id in text(),
        event in case_kind(),
    ) {
        let schema = topic_schema(catalog(), "hcm.case.events", 7);
        let e = CaseEvent { envelope: samples::envelope(seed, "26734", &aggregate_id, version), event };
        let e = CaseEvent { envelope: Envelope { occurred_at, ..e.envelope }, ..e };
        assert_same_bytes(&schema, &e);
    }

    /// Citizen records, with every optional field present or not.
    #[test]
    fn any_citizen_record_is_written_as_the_serde_path_writes_it(
        full_name in text(),
        birth_date in any::<i32>(),
        options in proptest::collection::vec(proptest::option::of(text()), 4),
        sex in prop_oneof![Just(Sex::Female), Just(Sex::Male), Just(Sex::Unspecified)],
    ) {
        let schema = topic_schema(catalog(), "hcm.citizen.records", 2);
        let mut r = samples::citizen_record();
        r.profile.full_name = full_name;
        r.profile.birth_date = birth_date;
        r.profile.sex = sex;
        let mut options = options.into_iter();
        r.profile.temporary_unit = options.next().flatten();
        r.profile.address_line = options.next().flatten();
        r.profile.phone = options.next().flatten();
        r.profile.email = options.next().flatten();
        assert_same_bytes(&schema, &r);
    }
}

/// The case schema, changed by `edit`, checked against `CaseEvent`: the refusal's message.
fn refusal(edit: impl FnOnce(&mut Value)) -> String {
    let catalog = catalog();
    let mut json: Value =
        serde_json::from_str(&catalog.topic("hcm.case.events").unwrap().schema_json).unwrap();
    edit(&mut json);
    let schema = RegisteredSchema::parse(42, &json.to_string()).unwrap();
    match schema.check_typed::<CaseEvent>() {
        Err(e @ ContractError::TypeMismatch { id: 42, .. }) => e.to_string(),
        other => panic!("expected a type mismatch, got {other:?}"),
    }
}

/// The fields of the record at `path` (field names from the root) in the schema JSON.
fn fields_at<'v>(json: &'v mut Value, path: &[&str]) -> &'v mut Vec<Value> {
    let mut record = json;
    for name in path {
        let fields = record["fields"].as_array_mut().unwrap();
        let field = fields.iter_mut().find(|f| f["name"] == *name).unwrap();
        record = &mut field["type"];
    }
    record["fields"].as_array_mut().unwrap()
}

#[test]
fn the_unchanged_schema_is_accepted() {
    let catalog = catalog();
    topic_schema(catalog, "hcm.case.events", 1)
        .check_typed::<CaseEvent>()
        .unwrap();
    topic_schema(catalog, "hcm.citizen.records", 2)
        .check_typed::<CitizenRecord>()
        .unwrap();
    topic_schema(catalog, "hcm.feedback.events", 3)
        .check_typed::<FeedbackEvent>()
        .unwrap();
    topic_schema(catalog, "hcm.reference.units", 4)
        .check_typed::<AdminUnitRecord>()
        .unwrap();
    topic_schema(catalog, "hcm.reference.procedures", 5)
        .check_typed::<ProcedureRecord>()
        .unwrap();
    // A type is not accepted for another topic's schema.
    let e = topic_schema(catalog, "hcm.citizen.records", 2)
        .check_typed::<CaseEvent>()
        .unwrap_err();
    assert!(
        e.to_string().ends_with(
            "at the root: the schema has the record vn.hcm.lienthong.citizen.CitizenRecord, \
             the type writes the record CaseEvent"
        ),
        "{e}"
    );
}

#[test]
fn a_schema_that_is_not_what_the_type_writes_is_refused_with_where() {
    // Two fields of the envelope swapped.
    let m = refusal(|j| fields_at(j, &["envelope"]).swap(2, 3));
    assert!(
        m.contains("at envelope: the schema's record vn.hcm.lienthong.Envelope has the fields"),
        "{m}"
    );
    // A field added (even an optional one: the type would leave it out of the bytes).
    let m = refusal(|j| {
        fields_at(j, &["envelope"]).push(serde_json::json!(
            {"name": "trace", "type": ["null", "string"], "default": null}
        ))
    });
    assert!(m.contains("\"trace\""), "{m}");
    // A field's type changed.
    let m = refusal(|j| fields_at(j, &["envelope"])[4]["type"] = "int".into());
    assert!(
        m.contains("at envelope.aggregate_version: the schema has int, the type writes a long"),
        "{m}"
    );
    // Union branches reordered.
    let m = refusal(|j| {
        let fields = j["fields"].as_array_mut().unwrap();
        fields[1]["type"].as_array_mut().unwrap().swap(0, 1);
    });
    assert!(m.contains("at event.CaseSubmitted:"), "{m}");
    // Enum symbols reordered (Channel is defined inside CaseSubmitted).
    let m = refusal(|j| {
        let fields = j["fields"].as_array_mut().unwrap();
        let submitted = &mut fields[1]["type"][0]["fields"];
        let channel = submitted
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|f| f["name"] == "channel")
            .unwrap();
        channel["type"]["symbols"]
            .as_array_mut()
            .unwrap()
            .swap(0, 1);
    });
    assert!(
        m.contains("at event.CaseSubmitted.channel: the schema's enum"),
        "{m}"
    );
}

/// `read_long` reads back what `write_long` wrote, and refuses a cut or overlong number.
#[test]
fn a_long_reads_back_and_a_malformed_one_is_refused() {
    use lienthong_contract::write::{read_long, write_long};
    for v in [
        0,
        1,
        -1,
        63,
        -64,
        64,
        300,
        i64::from(i32::MAX),
        i64::MIN,
        i64::MAX,
    ] {
        let mut bytes = Vec::new();
        write_long(v, &mut bytes);
        bytes.push(0xAA);
        let mut input = bytes.as_slice();
        assert_eq!(read_long(&mut input), Some(v));
        assert_eq!(input, [0xAA], "{v}: exactly its bytes are taken");
    }
    assert_eq!(read_long(&mut [0x80u8, 0x80].as_slice()), None);
    assert_eq!(read_long(&mut [].as_slice()), None);
    assert_eq!(read_long(&mut [0xFFu8; 11].as_slice()), None);
}
