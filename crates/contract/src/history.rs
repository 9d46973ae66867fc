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
    /// Per subject of the current catalog.
    pub subjects: Vec<SubjectHistory>,
}

impl HistoryReport {
    /// Every violation, as one line each naming the subject, the version, the field and the rule.
    pub fn failures(&self) -> Vec<String> {
        self.subjects
            .iter()
            .flat_map(|s| {
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
            })
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

    // subject -> distinct versions (by canonical form), oldest first.
    let mut history: BTreeMap<String, Vec<(String, Schema)>> = BTreeMap::new();
    for commit in &commits {
        let show = |rel: &str| git(repo, &["show", &format!("{commit}:{schemas_rel}/{rel}")]);
        let Ok(catalog_text) = show(CATALOG_FILE) else {
            continue;
        };
        let Ok(catalog) = toml::from_str::<LooseCatalog>(&catalog_text) else {
            eprintln!("note: commit {commit}: catalog does not parse; skipped");
            continue;
        };
        let common_list = git(
            repo,
            &[
                "ls-tree",
                "--name-only",
                &format!("{commit}:{schemas_rel}/{COMMON_DIR}"),
            ],
        )
        .unwrap_or_default();
        let mut common_files = Vec::new();
        for name in common_list.lines().filter(|n| n.ends_with(".avsc")) {
            if let Ok(text) = show(&format!("{COMMON_DIR}/{name}")) {
                common_files.push((name.to_string(), text));
            }
        }
        let common = match SharedTypes::from_files(
            Path::new(COMMON_DIR),
            common_files.iter().map(|(n, t)| (n.as_str(), t.as_str())),
        ) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("note: commit {commit}: shared types do not load ({e}); skipped");
                continue;
            }
        };
        for topic in catalog.topics {
            let Ok(text) = show(&topic.schema) else {
                continue;
            };
            let schema = match compose_schema(Path::new(&topic.schema), &text, &common) {
                Ok((_, s)) => s,
                Err(e) => {
                    eprintln!("note: commit {commit}: {e}; skipped");
                    continue;
                }
            };
            let versions = history.entry(topic.value_subject).or_default();
            let canonical = schema.canonical_form();
            if versions
                .last()
                .is_none_or(|(_, last)| last.canonical_form() != canonical)
            {
                versions.push((commit.to_string(), schema));
            }
        }
    }

    let subjects = current
        .topics()
        .iter()
        .map(|topic| {
            let versions = history.remove(&topic.value_subject).unwrap_or_default();
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
        subjects,
    })
}
