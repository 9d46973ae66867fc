//! Schema evolution is checked against every version committed in git: the repository's own
//! history passes, and an incompatible edit in a scratch repository fails with the subject, the
//! field and the rule.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;

use lienthong_contract::history::check_history;
use lienthong_contract::repo_schemas_dir;

#[test]
fn the_working_tree_is_compatible_with_every_committed_schema_version() {
    let schemas = repo_schemas_dir().canonicalize().unwrap();
    let repo = schemas.parent().unwrap();
    let report = check_history(repo, "schemas").expect("the repository is a git checkout");
    for s in &report.subjects {
        eprintln!(
            "{}: {} earlier version(s) in {} commit(s) touching schemas/",
            s.subject,
            s.versions.len(),
            report.commits
        );
    }
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "incompatible schema changes:\n{}",
        failures.join("\n")
    );
}

fn git(dir: &Path, args: &[&str]) {
    let st = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.email=ci@lienthong.invalid",
            "-c",
            "user.name=ci",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

fn scratch_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let out = Command::new("cp")
        .arg("-r")
        .arg(repo_schemas_dir())
        .arg(root.join("schemas"))
        .status()
        .unwrap();
    assert!(out.success());
    git(root, &["init", "-q"]);
    git(root, &["add", "."]);
    git(root, &["commit", "-q", "-m", "v1"]);
    dir
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn a_compatible_edit_passes() {
    let dir = scratch_repo();
    // A new optional field with a default: FULL_TRANSITIVE allows it.
    edit(
        &dir.path().join("schemas/procedure.avsc"),
        r#"{"name": "code", "type": "string", "lienthong.personal_data": "none"},"#,
        r#"{"name": "code", "type": "string", "lienthong.personal_data": "none"},
      {"name": "legal_basis", "type": ["null", "string"], "default": null, "lienthong.personal_data": "none"},"#,
    );
    let report = check_history(dir.path(), "schemas").unwrap();
    assert_eq!(report.commits, 1);
    assert!(report.failures().is_empty(), "{:?}", report.failures());
}

#[test]
fn an_incompatible_edit_fails_naming_subject_field_and_rule() {
    let dir = scratch_repo();
    // A new required field: old records cannot be read (backward), under FULL_TRANSITIVE.
    edit(
        &dir.path().join("schemas/procedure.avsc"),
        r#"{"name": "code", "type": "string", "lienthong.personal_data": "none"},"#,
        r#"{"name": "code", "type": "string", "lienthong.personal_data": "none"},
      {"name": "legal_basis", "type": "string", "lienthong.personal_data": "none"},"#,
    );
    let failures = check_history(dir.path(), "schemas").unwrap().failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    let f = &failures[0];
    assert!(f.contains("hcm.reference.procedures-value"), "{f}");
    assert!(f.contains("/procedure/legal_basis"), "{f}");
    assert!(f.contains("READER_FIELD_MISSING_DEFAULT_VALUE"), "{f}");

    // Committing the bad edit does not make it pass: the earlier commit is still in history.
    git(dir.path(), &["commit", "-q", "-am", "v2"]);
    let failures = check_history(dir.path(), "schemas").unwrap().failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
}

#[test]
fn a_version_that_only_removed_a_default_is_still_checked() {
    // v1: legal_basis with a default; v2 (committed): the default removed; working tree: the
    // field dropped. v2 cannot read the new data (no value, no default) under FULL_TRANSITIVE,
    // even though v1 and v2 have the same canonical form.
    let dir = scratch_repo();
    let file = dir.path().join("schemas/procedure.avsc");
    let anchor = r#"{"name": "code", "type": "string", "lienthong.personal_data": "none"},"#;
    edit(
        &file,
        anchor,
        &format!(
            "{anchor}\n      {{\"name\": \"legal_basis\", \"type\": \"string\", \"default\": \"\", \"lienthong.personal_data\": \"none\"}},"
        ),
    );
    git(
        dir.path(),
        &["commit", "-q", "-am", "v1b: field with default"],
    );
    edit(
        &file,
        r#""type": "string", "default": "", "lienthong"#,
        r#""type": "string", "lienthong"#,
    );
    git(dir.path(), &["commit", "-q", "-am", "v2: default removed"]);
    edit(
        &file,
        r#"{"name": "legal_basis", "type": "string", "lienthong.personal_data": "none"},"#,
        "",
    );
    let failures = check_history(dir.path(), "schemas").unwrap().failures();
    assert!(
        failures.iter().any(|f| f.contains("/procedure/legal_basis")
            && f.contains("READER_FIELD_MISSING_DEFAULT_VALUE")),
        "{failures:?}"
    );
}

#[test]
fn a_committed_version_that_does_not_load_is_a_failure() {
    let dir = scratch_repo();
    let file = dir.path().join("schemas/procedure.avsc");
    edit(
        &file,
        r#""type": "record",
  "name": "ProcedureRecord""#,
        r#""type": "recrod",
  "name": "ProcedureRecord""#,
    );
    git(dir.path(), &["commit", "-q", "-am", "broken"]);
    // Repair the working tree; the broken commit stays in history.
    edit(&file, r#""type": "recrod""#, r#""type": "record""#);
    let failures = check_history(dir.path(), "schemas").unwrap().failures();
    assert!(
        failures
            .iter()
            .any(|f| f.contains("hcm.reference.procedures-value") && f.contains("commit")),
        "{failures:?}"
    );
}

#[test]
fn adding_a_channel_is_compatible_thanks_to_the_enum_default() {
    let dir = scratch_repo();
    edit(
        &dir.path().join("schemas/common/channel.avsc"),
        r#""POSTAL", "UNKNOWN"]"#,
        r#""POSTAL", "UNKNOWN", "KIOSK"]"#,
    );
    let failures = check_history(dir.path(), "schemas").unwrap().failures();
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn removing_an_enum_symbol_and_its_default_from_a_shared_type_fails_every_subject_using_it() {
    // With its default, Channel may lose a symbol (old data reads as UNKNOWN); without the
    // default, data written with POSTAL can no longer be read.
    let dir = scratch_repo();
    edit(
        &dir.path().join("schemas/common/channel.avsc"),
        r#""symbols": ["ONLINE", "COUNTER", "POSTAL", "UNKNOWN"],
  "default": "UNKNOWN""#,
        r#""symbols": ["ONLINE", "COUNTER", "UNKNOWN"]"#,
    );
    let failures = check_history(dir.path(), "schemas").unwrap().failures();
    assert!(
        failures
            .iter()
            .any(|f| f.contains("hcm.case.events-value") && f.contains("MISSING_ENUM_SYMBOLS")),
        "{failures:?}"
    );
    assert!(
        failures
            .iter()
            .any(|f| f.contains("hcm.feedback.events-value")),
        "{failures:?}"
    );
}
