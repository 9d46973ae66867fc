//! The compatibility checker, one test per rule, including the union cases that registries
//! have got wrong, and the modes.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use apache_avro::Schema;
use lienthong_contract::compat::{Rule, can_read};
use lienthong_contract::{CompatibilityMode, check_compatibility};

fn s(json: &str) -> Schema {
    Schema::parse_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn record(fields: &str) -> Schema {
    s(&format!(
        r#"{{"type":"record","name":"R","namespace":"t","fields":[{fields}]}}"#
    ))
}

/// The rules broken when `reader` reads `writer`'s data.
fn rules(writer: &Schema, reader: &Schema) -> Vec<Rule> {
    can_read(writer, reader)
        .into_iter()
        .map(|i| i.rule)
        .collect()
}

#[test]
fn identical_schemas_are_compatible() {
    let v = record(
        r#"{"name":"a","type":"string"},{"name":"b","type":{"type":"array","items":"long"}}"#,
    );
    assert!(can_read(&v, &v).is_empty());
}

#[test]
fn promotions_follow_the_spec_and_only_one_way() {
    for (w, r) in [
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    ] {
        assert!(
            can_read(&s(&format!("\"{w}\"")), &s(&format!("\"{r}\""))).is_empty(),
            "{w} -> {r}"
        );
    }
    for (w, r) in [
        ("long", "int"),
        ("double", "float"),
        ("float", "long"),
        ("boolean", "int"),
        ("string", "int"),
    ] {
        assert_eq!(
            rules(&s(&format!("\"{w}\"")), &s(&format!("\"{r}\""))),
            [Rule::TypeMismatch],
            "{w} -> {r}"
        );
    }
}

#[test]
fn a_new_reader_field_needs_a_default() {
    let old = record(r#"{"name":"a","type":"string"}"#);
    let with_default =
        record(r#"{"name":"a","type":"string"},{"name":"b","type":"int","default":0}"#);
    let without = record(r#"{"name":"a","type":"string"},{"name":"b","type":"int"}"#);
    assert!(can_read(&old, &with_default).is_empty());
    let problems = can_read(&old, &without);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].rule, Rule::ReaderFieldMissingDefaultValue);
    assert_eq!(problems[0].path, "/b", "the message names the field");
    // A field the writer has and the reader dropped is simply skipped.
    assert!(can_read(&with_default, &old).is_empty());
}

#[test]
fn a_default_must_be_a_value_of_the_field_type() {
    let old = record(r#"{"name":"a","type":"string"}"#);
    let bad = [
        r#"{"name":"b","type":"int","default":"zero"}"#,
        r#"{"name":"b","type":"int","default":3000000000}"#,
        r#"{"name":"b","type":["null","string"],"default":"x"}"#,
        r#"{"name":"b","type":{"type":"enum","name":"E","symbols":["A"]},"default":"B"}"#,
        r#"{"name":"b","type":{"type":"array","items":"int"},"default":[1,"2"]}"#,
    ];
    let mut checked_here = 0;
    for field in bad {
        // apache-avro refuses some of these at parse time already; both are a refusal.
        let Ok(reader) = Schema::parse_str(&format!(
            r#"{{"type":"record","name":"R","namespace":"t","fields":[{{"name":"a","type":"string"}},{field}]}}"#
        )) else {
            continue;
        };
        assert_eq!(rules(&old, &reader), [Rule::InvalidDefaultValue], "{field}");
        checked_here += 1;
    }
    eprintln!(
        "{checked_here} of {} bad defaults got past the parser and were caught here",
        bad.len()
    );
    assert!(checked_here >= 2, "the checker itself must be exercised");
    let good = record(
        r#"{"name":"a","type":"string"},{"name":"b","type":["null","string"],"default":null},{"name":"c","type":{"type":"array","items":"int"},"default":[1,2]}"#,
    );
    assert!(can_read(&old, &good).is_empty());
}

#[test]
fn renamed_fields_need_an_alias() {
    let old = record(r#"{"name":"applicant","type":"string"}"#);
    let renamed = record(r#"{"name":"applicant_id","type":"string"}"#);
    let aliased = record(r#"{"name":"applicant_id","type":"string","aliases":["applicant"]}"#);
    assert_eq!(
        rules(&old, &renamed),
        [Rule::ReaderFieldMissingDefaultValue]
    );
    assert!(can_read(&old, &aliased).is_empty());
}

#[test]
fn writer_aliases_play_no_part_in_resolution() {
    // The writer's alias "a" on field b must not make b's int look like field a.
    let writer =
        record(r#"{"name":"a","type":"string"},{"name":"b","type":"int","aliases":["a"]}"#);
    let reader = record(r#"{"name":"a","type":"int"}"#);
    assert_eq!(rules(&writer, &reader), [Rule::TypeMismatch]);
    // Only the reader's aliases rename: a writer-side alias does not.
    let writer = record(r#"{"name":"applicant","type":"string","aliases":["applicant_id"]}"#);
    let reader = record(r#"{"name":"applicant_id","type":"string"}"#);
    assert_eq!(
        rules(&writer, &reader),
        [Rule::ReaderFieldMissingDefaultValue]
    );
}

#[test]
fn an_alias_must_match_the_full_name() {
    let writer = s(r#"{"type":"record","name":"Case","namespace":"y","fields":[]}"#);
    let reader =
        s(r#"{"type":"record","name":"Dossier","namespace":"b","aliases":["x.Case"],"fields":[]}"#);
    assert_eq!(rules(&writer, &reader), [Rule::NameMismatch]);
}

#[test]
fn renamed_enums_and_fixed_need_an_alias() {
    let old = s(r#"{"type":"enum","name":"Kind","namespace":"a","symbols":["X"]}"#);
    let renamed = s(r#"{"type":"enum","name":"Sort","namespace":"a","symbols":["X"]}"#);
    let aliased =
        s(r#"{"type":"enum","name":"Sort","namespace":"a","aliases":["a.Kind"],"symbols":["X"]}"#);
    assert_eq!(rules(&old, &renamed), [Rule::NameMismatch]);
    assert!(can_read(&old, &aliased).is_empty());
    let f_old = s(r#"{"type":"fixed","name":"H","namespace":"a","size":4}"#);
    let f_aliased = s(r#"{"type":"fixed","name":"G","namespace":"a","aliases":["a.H"],"size":4}"#);
    assert!(can_read(&f_old, &f_aliased).is_empty());
}

#[test]
fn decimal_precision_and_scale_must_match() {
    let d = |p: u32, sc: u32| {
        s(&format!(
            r#"{{"type":"bytes","logicalType":"decimal","precision":{p},"scale":{sc}}}"#
        ))
    };
    assert!(can_read(&d(10, 2), &d(10, 2)).is_empty());
    assert_eq!(rules(&d(10, 2), &d(12, 2)), [Rule::TypeMismatch]);
    assert_eq!(rules(&d(10, 2), &d(10, 3)), [Rule::TypeMismatch]);
}

#[test]
fn renamed_records_need_an_alias() {
    let old = s(r#"{"type":"record","name":"Case","namespace":"a","fields":[]}"#);
    let renamed = s(r#"{"type":"record","name":"Dossier","namespace":"a","fields":[]}"#);
    let aliased =
        s(r#"{"type":"record","name":"Dossier","namespace":"a","aliases":["a.Case"],"fields":[]}"#);
    assert_eq!(rules(&old, &renamed), [Rule::NameMismatch]);
    assert!(can_read(&old, &aliased).is_empty());
}

#[test]
fn enum_symbols_removed_need_a_reader_default() {
    let old = s(r#"{"type":"enum","name":"C","symbols":["ONLINE","COUNTER","POSTAL"]}"#);
    let fewer = s(r#"{"type":"enum","name":"C","symbols":["ONLINE","COUNTER"]}"#);
    let fewer_with_default =
        s(r#"{"type":"enum","name":"C","symbols":["ONLINE","COUNTER"],"default":"COUNTER"}"#);
    assert_eq!(rules(&old, &fewer), [Rule::MissingEnumSymbols]);
    assert!(can_read(&old, &fewer_with_default).is_empty());
    // Adding a symbol: new readers read old data; old readers cannot read the new symbol.
    assert!(can_read(&fewer, &old).is_empty());
    let msg = can_read(&old, &fewer)[0].message.clone();
    assert!(msg.contains("POSTAL"), "{msg}");
}

#[test]
fn fixed_sizes_and_names_must_match() {
    let a = s(r#"{"type":"fixed","name":"H","size":32}"#);
    let b = s(r#"{"type":"fixed","name":"H","size":16}"#);
    let c = s(r#"{"type":"fixed","name":"G","size":32}"#);
    assert_eq!(rules(&a, &b), [Rule::FixedSizeMismatch]);
    assert_eq!(rules(&a, &c), [Rule::NameMismatch]);
}

#[test]
fn nested_records_are_checked_with_their_path() {
    let old = record(
        r#"{"name":"doc","type":{"type":"record","name":"D","fields":[{"name":"size","type":"long"}]}}"#,
    );
    let new = record(
        r#"{"name":"doc","type":{"type":"record","name":"D","fields":[{"name":"size","type":"int"}]}}"#,
    );
    let p = can_read(&old, &new);
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].rule, p[0].path.as_str()),
        (Rule::TypeMismatch, "/doc/size")
    );
    // Arrays and maps recurse into their items and values.
    let arr_old = s(r#"{"type":"array","items":"long"}"#);
    let arr_new = s(r#"{"type":"array","items":"int"}"#);
    assert_eq!(can_read(&arr_old, &arr_new)[0].path, "/[]");
    let map_old = s(r#"{"type":"map","values":"long"}"#);
    let map_new = s(r#"{"type":"map","values":"int"}"#);
    assert_eq!(can_read(&map_old, &map_new)[0].path, "/{}");
}

#[test]
fn logical_type_changes_are_refused() {
    assert_eq!(
        rules(&s(r#""int""#), &s(r#"{"type":"int","logicalType":"date"}"#)),
        [Rule::LogicalTypeMismatch]
    );
    assert_eq!(
        rules(
            &s(r#"{"type":"long","logicalType":"timestamp-millis"}"#),
            &s(r#"{"type":"long","logicalType":"timestamp-micros"}"#)
        ),
        [Rule::LogicalTypeMismatch]
    );
    assert!(
        can_read(
            &s(r#"{"type":"int","logicalType":"date"}"#),
            &s(r#"{"type":"int","logicalType":"date"}"#)
        )
        .is_empty()
    );
}

// --- Unions: the cases registries get wrong ------------------------------------------------

#[test]
fn adding_a_union_branch_is_backward_but_not_forward() {
    let old = s(r#"["null","string"]"#);
    let new = s(r#"["null","string","long"]"#);
    assert!(can_read(&old, &new).is_empty(), "new reader reads old data");
    assert_eq!(
        rules(&new, &old),
        [Rule::MissingUnionBranch],
        "old reader cannot read a long"
    );
}

#[test]
fn making_a_nullable_field_required_breaks_backward() {
    // A writer that may write null cannot be read by a reader that has no null branch.
    assert_eq!(
        rules(&s(r#"["null","string"]"#), &s(r#""string""#)),
        [Rule::TypeMismatch]
    );
    // The other way is fine: a plain string is read by the union's string branch.
    assert!(can_read(&s(r#""string""#), &s(r#"["null","string"]"#)).is_empty());
}

#[test]
fn a_writer_type_promotes_into_a_reader_union_branch() {
    assert!(can_read(&s(r#""int""#), &s(r#"["null","long"]"#)).is_empty());
    assert!(can_read(&s(r#"["null","int"]"#), &s(r#"["null","double"]"#)).is_empty());
    assert_eq!(
        rules(&s(r#""long""#), &s(r#"["null","int"]"#)),
        [Rule::MissingUnionBranch]
    );
}

#[test]
fn union_branches_may_be_reordered() {
    assert!(
        can_read(
            &s(r#"["null","string","long"]"#),
            &s(r#"["long","null","string"]"#)
        )
        .is_empty()
    );
}

#[test]
fn records_in_unions_are_matched_by_name_not_position() {
    let w = s(
        r#"[{"type":"record","name":"A","fields":[{"name":"x","type":"int"}]},{"type":"record","name":"B","fields":[{"name":"y","type":"string"}]}]"#,
    );
    let swapped = s(
        r#"[{"type":"record","name":"B","fields":[{"name":"y","type":"string"}]},{"type":"record","name":"A","fields":[{"name":"x","type":"int"}]}]"#,
    );
    assert!(can_read(&w, &swapped).is_empty());
    // Removing record B from the union: B's data has nowhere to go, even though A "looks" like
    // a record too.
    let only_a = s(r#"[{"type":"record","name":"A","fields":[{"name":"x","type":"int"}]}]"#);
    let p = can_read(&w, &only_a);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].rule, Rule::MissingUnionBranch);
    assert!(p[0].message.contains("record B"), "{}", p[0].message);
    // A record that changed incompatibly inside a union is reported with the real cause, at
    // its path, not as a vague missing branch.
    let a_changed = s(
        r#"[{"type":"record","name":"A","fields":[{"name":"x","type":"int"},{"name":"z","type":"int"}]},{"type":"record","name":"B","fields":[{"name":"y","type":"string"}]}]"#,
    );
    let p = can_read(&w, &a_changed);
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].rule, p[0].path.as_str()),
        (Rule::ReaderFieldMissingDefaultValue, "/[0]/z")
    );
}

#[test]
fn a_union_writer_is_checked_branch_by_branch_against_a_non_union_reader() {
    assert!(can_read(&s(r#"["int","long"]"#), &s(r#""long""#)).is_empty());
    assert_eq!(
        rules(&s(r#"["int","string"]"#), &s(r#""long""#)),
        [Rule::TypeMismatch]
    );
}

#[test]
fn recursive_types_terminate() {
    let list = s(
        r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","Node"],"default":null}]}"#,
    );
    let list2 = s(
        r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"long"},{"name":"next","type":["null","Node"],"default":null}]}"#,
    );
    assert!(can_read(&list, &list2).is_empty());
    assert!(!can_read(&list2, &list).is_empty());
}

// --- Modes ------------------------------------------------------------------------------------

fn versions() -> (Schema, Schema, Schema) {
    let v1 = record(r#"{"name":"a","type":"string"}"#);
    // v2 adds an optional field: fully compatible with v1.
    let v2 =
        record(r#"{"name":"a","type":"string"},{"name":"b","type":["null","int"],"default":null}"#);
    // v3 drops `a`, which had no default: v2 readers cannot read v3 data, v3 reads v2.
    let v3 = record(r#"{"name":"b","type":["null","int"],"default":null}"#);
    (v1, v2, v3)
}

#[test]
fn modes_check_the_right_direction() {
    let (v1, v2, v3) = versions();
    let hist = [v1.clone(), v2.clone()];
    assert!(
        check_compatibility(CompatibilityMode::Full, &v2, std::slice::from_ref(&v1)).is_empty()
    );
    assert!(check_compatibility(CompatibilityMode::Backward, &v3, &hist).is_empty());
    let f = check_compatibility(CompatibilityMode::Forward, &v3, &hist);
    assert_eq!(f.len(), 1);
    assert!(!f[0].new_reads_old);
    assert_eq!(f[0].problem.rule, Rule::ReaderFieldMissingDefaultValue);
    assert_eq!(f[0].problem.path, "/a");
    assert!(f[0].to_string().contains("earlier version #2"), "{}", f[0]);
    assert_eq!(
        check_compatibility(CompatibilityMode::Full, &v3, &hist).len(),
        1
    );
    assert!(check_compatibility(CompatibilityMode::None, &v3, &hist).is_empty());
}

#[test]
fn transitive_modes_check_every_earlier_version() {
    // Each step is backward compatible with the one before, but the last is not with the first.
    let w1 = record(r#"{"name":"x","type":"int"}"#);
    let w2 = record(r#"{"name":"y","type":"int","default":0}"#); // reads w1: x skipped, y defaulted
    let w3 = record(r#"{"name":"y","type":"int"}"#); // reads w2 (it has y), not w1 (no y, no default)
    assert!(
        check_compatibility(CompatibilityMode::Backward, &w3, &[w1.clone(), w2.clone()]).is_empty()
    );
    let t = check_compatibility(CompatibilityMode::BackwardTransitive, &w3, &[w1, w2]);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].against, 0);
    assert!(t[0].new_reads_old);
    assert_eq!(t[0].problem.rule, Rule::ReaderFieldMissingDefaultValue);
}

#[test]
fn mode_names_round_trip() {
    for m in [
        "NONE",
        "BACKWARD",
        "BACKWARD_TRANSITIVE",
        "FORWARD",
        "FORWARD_TRANSITIVE",
        "FULL",
        "FULL_TRANSITIVE",
    ] {
        assert_eq!(CompatibilityMode::parse(m).unwrap().as_str(), m);
    }
    assert!(CompatibilityMode::parse("SIDEWAYS").is_none());
}
