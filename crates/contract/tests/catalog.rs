//! The catalog loads the repository's schemas, and refuses bad catalogs with an error that names
//! the file and the entry.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use lienthong_contract::catalog::{ENVELOPE, FieldFormat, field_at};
use lienthong_contract::{
    AgencyKind, Catalog, CleanupPolicy, CompatibilityMode, ContractError, Grantee,
    PersonalDataClass, repo_schemas_dir,
};

#[test]
fn the_repository_catalog_loads_and_says_what_each_topic_is() {
    let catalog = Catalog::load(repo_schemas_dir()).expect("schemas/catalog.toml is valid");
    let names: Vec<&str> = catalog.topics().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "hcm.case.events",
            "hcm.citizen.records",
            "hcm.feedback.events",
            "hcm.reference.units",
            "hcm.reference.procedures"
        ]
    );

    let cases = catalog.topic("hcm.case.events").unwrap();
    assert_eq!(cases.value_subject, "hcm.case.events-value");
    assert_eq!(cases.cleanup_policy, CleanupPolicy::Delete);
    assert!(
        cases.may_publish("26734", AgencyKind::Ward)
            && cases.may_publish("STP", AgencyKind::Department)
    );
    assert!(cases.may_read("26734", AgencyKind::Ward));
    assert_eq!(cases.compatibility, CompatibilityMode::FullTransitive);
    // The shared envelope is inlined, so the registered schema stands alone for any client.
    assert!(cases.schema_json.contains("\"name\":\"Envelope\""));
    assert!(
        !cases
            .schema_json
            .contains(&format!("\"type\":\"{ENVELOPE}\""))
    );
    assert!(matches!(
        field_at(&cases.schema, &cases.key_field),
        Some(apache_avro::Schema::String)
    ));

    let citizens = catalog.topic("hcm.citizen.records").unwrap();
    assert_eq!(citizens.cleanup_policy, CleanupPolicy::Compact);
    // Citizen records: only the owning agency (the police, CATP) may write or erase them.
    assert_eq!(citizens.publishers, [Grantee::Agency("CATP".into())]);
    assert!(citizens.may_publish("CATP", AgencyKind::Department));
    assert!(!citizens.may_publish("STP", AgencyKind::Department));
    assert!(!citizens.may_publish("26734", AgencyKind::Ward));
    let refusal = citizens
        .check_publisher("STP", AgencyKind::Department)
        .unwrap_err()
        .to_string();
    assert!(refusal.contains("only CATP"), "{refusal}");
    assert_eq!(citizens.key_personal_data, PersonalDataClass::Identifier);

    assert!(matches!(
        catalog.topic("nope"),
        Err(ContractError::UnknownTopic(_))
    ));
}

#[test]
fn every_citizen_field_is_tagged_with_a_personal_data_class() {
    let catalog = Catalog::load(repo_schemas_dir()).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&catalog.topic("hcm.citizen.records").unwrap().schema_json).unwrap();
    let profile = &json["fields"][1]["type"]["fields"];
    let classes: Vec<(&str, &str)> = profile
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap(),
                f["lienthong.personal_data"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(classes.contains(&("personal_id", "identifier")));
    assert!(classes.contains(&("full_name", "name")));
    assert!(classes.contains(&("phone", "contact")));
    assert_eq!(classes.len(), 9);
}

#[test]
fn field_formats_accept_and_refuse() {
    assert!(FieldFormat::UnitCode.accepts("26734"));
    assert!(FieldFormat::UnitCode.accepts("STP"));
    assert!(!FieldFormat::UnitCode.accepts("2673"));
    assert!(!FieldFormat::UnitCode.accepts("stp"));
    assert!(!FieldFormat::UnitCode.accepts("S"));
    assert!(FieldFormat::PersonalId.accepts("079203001234"));
    assert!(!FieldFormat::PersonalId.accepts("07920300123"));
    assert!(!FieldFormat::PersonalId.accepts("07920300123x"));
    assert!(FieldFormat::Sha256Hex.accepts(&"ab".repeat(32)));
    assert!(!FieldFormat::Sha256Hex.accepts(&"AB".repeat(32)));
}

/// A copy of the repository's schemas folder in a temporary directory, to break on purpose.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&repo_schemas_dir(), dir.path());
        Scratch { dir }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn edit(&self, rel: &str, f: impl FnOnce(String) -> String) {
        let p = self.path(rel);
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, f(text)).unwrap();
    }
    fn load_err(&self) -> String {
        match Catalog::load(self.dir.path()) {
            Ok(_) => panic!("the broken catalog loaded"),
            Err(e) => e.to_string(),
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn an_unknown_schema_file_is_named_with_its_topic() {
    let s = Scratch::new();
    s.edit("catalog.toml", |t| {
        t.replacen(
            "schema = \"procedure.avsc\"",
            "schema = \"procedures.avsc\"",
            1,
        )
    });
    let e = s.load_err();
    assert!(
        e.contains("catalog.toml")
            && e.contains("hcm.reference.procedures")
            && e.contains("unknown schema file \"procedures.avsc\""),
        "{e}"
    );
}

#[test]
fn a_key_field_missing_from_the_schema_is_refused() {
    let s = Scratch::new();
    s.edit("catalog.toml", |t| {
        t.replacen(
            "key_field = \"envelope.aggregate_id\"",
            "key_field = \"envelope.case_id\"",
            1,
        )
    });
    let e = s.load_err();
    assert!(
        e.contains("catalog.toml")
            && e.contains("hcm.case.events")
            && e.contains("key field \"envelope.case_id\" is missing"),
        "{e}"
    );
}

#[test]
fn a_duplicate_topic_is_refused() {
    let s = Scratch::new();
    s.edit("catalog.toml", |t| {
        t.replace(
            "name = \"hcm.reference.procedures\"",
            "name = \"hcm.reference.units\"",
        )
    });
    let e = s.load_err();
    assert!(
        e.contains("topic \"hcm.reference.units\": duplicate topic"),
        "{e}"
    );
}

#[test]
fn an_invalid_topic_name_is_refused() {
    let s = Scratch::new();
    s.edit("catalog.toml", |t| {
        t.replace(
            "name = \"hcm.feedback.events\"",
            "name = \"hcm feedback/events\"",
        )
    });
    let e = s.load_err();
    assert!(
        e.contains("catalog.toml")
            && e.contains("hcm feedback/events")
            && e.contains("invalid topic name"),
        "{e}"
    );
}

#[test]
fn a_grantee_that_is_neither_a_kind_nor_an_agency_code_is_refused() {
    let s = Scratch::new();
    s.edit("catalog.toml", |t| {
        t.replacen("publishers = [\"CATP\"]", "publishers = [\"police\"]", 1)
    });
    let e = s.load_err();
    assert!(
        e.contains("catalog.toml")
            && e.contains("\"police\" is neither a kind of agency")
            && e.contains("nor an agency code"),
        "{e}"
    );
}

#[test]
fn an_unknown_catalog_key_is_refused_by_name() {
    let s = Scratch::new();
    s.edit("catalog.toml", |t| {
        t.replacen("partitions = 12", "partitions = 12\nreplicas = 3", 1)
    });
    let e = s.load_err();
    assert!(e.contains("catalog.toml") && e.contains("replicas"), "{e}");
}

#[test]
fn a_field_without_personal_data_class_is_refused() {
    let s = Scratch::new();
    s.edit("citizen_record.avsc", |t| {
        t.replacen(", \"lienthong.personal_data\": \"contact\"", "", 1)
    });
    let e = s.load_err();
    assert!(
        e.contains("citizen_record.avsc")
            && e.contains("profile.phone")
            && e.contains("personal_data"),
        "{e}"
    );
}

#[test]
fn invalid_schema_json_names_the_file() {
    let s = Scratch::new();
    s.edit("admin_unit.avsc", |t| t.replacen('{', "{{", 1));
    let e = s.load_err();
    assert!(
        e.contains("admin_unit.avsc") && e.contains("invalid JSON"),
        "{e}"
    );
}

#[test]
fn a_schema_without_the_envelope_first_is_refused() {
    let s = Scratch::new();
    s.edit("procedure.avsc", |t| {
        t.replacen(
            "{\"name\": \"envelope\"",
            "{\"name\": \"x\", \"type\": \"int\", \"lienthong.personal_data\": \"none\"},\n    {\"name\": \"envelope\"",
            1,
        )
    });
    let e = s.load_err();
    assert!(
        e.contains("procedure.avsc") && e.contains("first field must be `envelope`"),
        "{e}"
    );
}

#[test]
fn the_key_class_is_only_for_the_aggregate_id() {
    let s = Scratch::new();
    s.edit("procedure.avsc", |t| {
        t.replacen(
            "{\"name\": \"code\", \"type\": \"string\", \"lienthong.personal_data\": \"none\"}",
            "{\"name\": \"code\", \"type\": \"string\", \"lienthong.personal_data\": \"key\"}",
            1,
        )
    });
    let e = s.load_err();
    assert!(
        e.contains("procedure.avsc")
            && e.contains("procedure.code")
            && e.contains("only for the envelope"),
        "{e}"
    );
}

#[test]
fn a_schema_path_outside_the_folder_is_refused() {
    let s = Scratch::new();
    s.edit("catalog.toml", |t| {
        t.replacen(
            "schema = \"procedure.avsc\"",
            "schema = \"../etc/passwd\"",
            1,
        )
    });
    let e = s.load_err();
    assert!(e.contains("must be a file in"), "{e}");
}
