//! Schema evolution against git history: every value schema in the working tree must be
//! compatible, under its subject's catalog mode, with every version of that subject committed
//! earlier. The test command runs this, so an incompatible edit fails CI with the subject, the
//! field and the rule it breaks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use apache_avro::Schema;
use serde::Deserialize;

use crate::catalog::{CATALOG_FILE, COMMON_DIR, Catalog, SharedTypes, compose_schema};
use crate::compat::{Violation, check_compatibility};
use crate::error::{ContractError, Result};

/// One subject's earlier versions found in history, oldest first, by the commit that introduced
/// each distinct version.
#[derive(Debug)]
pub struct SubjectHistory {
    /// The subject.
    pub subject: String,
    /// `(commit, schema)` of each distinct earlier version, oldest first.
    pub versions: Vec<(String, Schema)>,
    /// Every way the working tree's schema breaks the subject's mode against them.
    pub violations: Vec<Violation>,
}

/// What [`check_history`] found.
#[derive(Debug)]
pub struct HistoryReport {
    /// Commits that touched the schemas folder, oldest first.
    pub commits: usize,
    /// Committed versions that could not be loaded: each is a failure too, since a version
    /// that cannot be read cannot be checked.
    pub load_errors: Vec<String>,
    /// Per subject of the current catalog.
    pub subjects: Vec<SubjectHistory>,
}

impl HistoryReport {
    /// Every violation, as one line each naming the subject, the version, the field and the rule.
    pub fn failures(&self) -> Vec<String> {
        self.load_errors
            .iter()
            .cloned()
            .chain(self.subjects.iter().flat_map(|s| {
                s.violations.iter().map(move |v| {
                    let commit = s
                        .versions
                        .get(v.against)
                        .map(|(c, _)| &c[..c.len().min(12)])
                        .unwrap_or("?");
                    format!(
                        "subject {}: {v} (earlier version from commit {commit})",
                        s.subject
                    )
                })
            }))
            .collect()
    }
}

#[derive(Deserialize)]
struct LooseCatalog {
    #[serde(default)]
    topics: Vec<LooseTopic>,
}

#[derive(Deserialize)]
struct LooseTopic {
    value_subject: String,
    schema: String,
}

fn git(repo: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .map_err(|source| ContractError::Io {
            file: PathBuf::from("git"),
            source,
        })?;
    if !out.status.success() {
        return Err(ContractError::Schema {
            file: repo.to_path_buf(),
            message: format!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`check_history`] for a schemas folder wherever it is: `None` when it is not inside a git
/// checkout (nothing committed to compare with).
pub fn check_history_of(schemas_dir: &Path) -> Result<Option<HistoryReport>> {
    match checkout_of(schemas_dir)? {
        None => Ok(None),
        Some((top, rel)) => check_history(&top, &rel).map(Some),
    }
}

/// Check the working tree's schemas (in `<repo>/<schemas_rel>`) against every committed version.
pub fn check_history(repo: &Path, schemas_rel: &str) -> Result<HistoryReport> {
    let current = Catalog::load(repo.join(schemas_rel))?;
    // A repository without commits has no history to break.
    let has_commits = git(repo, &["rev-parse", "--verify", "-q", "HEAD"]).is_ok();
    let log = if has_commits {
        git(
            repo,
            &["log", "--reverse", "--format=%H", "--", schemas_rel],
        )?
    } else {
        String::new()
    };
    let commits: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();

    // subject -> distinct versions, oldest first. Distinct by the composed text, not by Avro's
    // canonical form, which drops defaults and aliases: a commit that only removed a default is
    // a version of its own and must be checked.
    let mut history: BTreeMap<String, Vec<(String, String, Schema)>> = BTreeMap::new();
    let mut load_errors = Vec::new();
    for commit in &commits {
        match schemas_at(repo, schemas_rel, commit) {
            Ok(None) => {} // no catalog yet then
            Ok(Some(at)) => {
                load_errors.extend(at.errors);
                for (subject, (json, schema)) in at.subjects {
                    let versions = history.entry(subject).or_default();
                    if versions.last().is_none_or(|(_, last, _)| *last != json) {
                        versions.push((commit.to_string(), json, schema));
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }

    let subjects = current
        .topics()
        .iter()
        .map(|topic| {
            let versions: Vec<(String, Schema)> = history
                .remove(&topic.value_subject)
                .unwrap_or_default()
                .into_iter()
                .map(|(c, _, s)| (c, s))
                .collect();
            let schemas: Vec<Schema> = versions.iter().map(|(_, s)| s.clone()).collect();
            let violations = check_compatibility(topic.compatibility, &topic.schema, &schemas);
            SubjectHistory {
                subject: topic.value_subject.clone(),
                versions,
                violations,
            }
        })
        .collect();
    Ok(HistoryReport {
        commits: commits.len(),
        load_errors,
        subjects,
    })
}

/// The value schemas of the catalog as committed at `rev`.
#[derive(Debug, Default)]
pub struct SchemasAt {
    /// subject → (composed JSON, parsed schema).
    pub subjects: BTreeMap<String, (String, Schema)>,
    /// Subjects (or the whole catalog) that did not load at that revision.
    pub errors: Vec<String>,
}

/// The catalog's value schemas at git revision `rev` of `repo`; `None` when the catalog did not
/// exist there yet.
pub fn schemas_at(repo: &Path, schemas_rel: &str, rev: &str) -> Result<Option<SchemasAt>> {
    // An unknown revision is an error, not "no catalog yet".
    git(
        repo,
        &["rev-parse", "--verify", "-q", &format!("{rev}^{{commit}}")],
    )?;
    let short: String = rev.chars().take(12).collect();
    let show = |rel: &str| git(repo, &["show", &format!("{rev}:{schemas_rel}/{rel}")]);
    let Ok(catalog_text) = show(CATALOG_FILE) else {
        return Ok(None);
    };
    let mut at = SchemasAt::default();
    let catalog = match toml::from_str::<LooseCatalog>(&catalog_text) {
        Ok(c) => c,
        Err(e) => {
            at.errors.push(format!(
                "commit {short}: {CATALOG_FILE} does not parse: {e}"
            ));
            return Ok(Some(at));
        }
    };
    let common_list = git(
        repo,
        &[
            "ls-tree",
            "--name-only",
            &format!("{rev}:{schemas_rel}/{COMMON_DIR}"),
        ],
    )
    .unwrap_or_default();
    let mut common_files = Vec::new();
    for name in common_list.lines().filter(|n| n.ends_with(".avsc")) {
        common_files.push((name.to_string(), show(&format!("{COMMON_DIR}/{name}"))?));
    }
    let common = match SharedTypes::from_files(
        Path::new(COMMON_DIR),
        common_files.iter().map(|(n, t)| (n.as_str(), t.as_str())),
    ) {
        Ok(c) => c,
        Err(e) => {
            at.errors
                .push(format!("commit {short}: shared types do not load: {e}"));
            return Ok(Some(at));
        }
    };
    for topic in catalog.topics {
        let loaded = show(&topic.schema)
            .and_then(|text| compose_schema(Path::new(&topic.schema), &text, &common));
        match loaded {
            Ok(loaded) => {
                at.subjects.insert(topic.value_subject, loaded);
            }
            Err(e) => at.errors.push(format!(
                "commit {short}: subject {}: {e}",
                topic.value_subject
            )),
        }
    }
    Ok(Some(at))
}

/// The git checkout that holds `schemas_dir`, and the folder's path inside it; `None` outside
/// a checkout.
pub fn checkout_of(schemas_dir: &Path) -> Result<Option<(PathBuf, String)>> {
    let dir = schemas_dir
        .canonicalize()
        .map_err(|source| ContractError::Io {
            file: schemas_dir.to_path_buf(),
            source,
        })?;
    let Ok(top) = git(&dir, &["rev-parse", "--show-toplevel"]) else {
        return Ok(None);
    };
    let top = PathBuf::from(top.trim());
    let rel = dir.strip_prefix(&top).map_err(|_| ContractError::Schema {
        file: dir.clone(),
        message: format!("not inside the git checkout {}", top.display()),
    })?;
    let rel = rel.to_string_lossy().into_owned();
    Ok(Some((top, if rel.is_empty() { ".".into() } else { rel })))
}
