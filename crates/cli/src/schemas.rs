//! `lienthong schemas diff`: what would change, field by field, if the working tree's schemas
//! replaced those in a registry or at a git revision, and whether each change is compatible.

use apache_avro::Schema;
use lienthong_contract::Catalog;
use lienthong_contract::codec::schema_identity;
use lienthong_contract::diff::diff_schemas;
use lienthong_registry::client::RegistryClient;
use lienthong_telemetry::{say, say_err};

use crate::CliError;

/// Where the schemas to compare with come from.
pub enum Baseline<'a> {
    /// The latest version of each subject in a registry.
    Registry(&'a RegistryClient),
    /// The catalog committed at a git revision.
    Git(String),
}

/// Print the differences; fails (exit 1) when a change is incompatible.
pub async fn diff(
    schemas_dir: &std::path::Path,
    catalog: &Catalog,
    baseline: Baseline<'_>,
) -> Result<(), CliError> {
    let failed = |e: String| CliError::Failed(e);
    let (label, mut old) = match &baseline {
        Baseline::Registry(client) => {
            let mut old = std::collections::BTreeMap::new();
            for topic in catalog.topics() {
                if let Some(v) = client
                    .latest(&topic.value_subject)
                    .await
                    .map_err(|e| failed(format!("{}: {e}", topic.value_subject)))?
                {
                    let schema = Schema::parse_str(&v.schema).map_err(|e| {
                        failed(format!(
                            "{} version {} in the registry does not parse: {e}",
                            topic.value_subject, v.version
                        ))
                    })?;
                    old.insert(topic.value_subject.clone(), (v.schema, schema));
                }
            }
            ("the registry's latest version".to_string(), old)
        }
        Baseline::Git(rev) => {
            let (repo, rel) = lienthong_contract::history::checkout_of(schemas_dir)
                .map_err(|e| failed(e.to_string()))?
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "{} is not in a git checkout; use --url to compare with a registry",
                        schemas_dir.display()
                    ))
                })?;
            let at = lienthong_contract::history::schemas_at(&repo, &rel, rev)
                .map_err(|e| CliError::Usage(format!("--against {rev}: {e}")))?;
            let at = at.unwrap_or_default();
            for e in &at.errors {
                say_err!("warning: {e}");
            }
            (format!("git {rev}"), at.subjects)
        }
    };
    let (mut changed, mut incompatible) = (0, 0);
    for topic in catalog.topics() {
        let subject = &topic.value_subject;
        let Some((old_json, old_schema)) = old.remove(subject) else {
            say!("{subject}: new (not in {label})");
            changed += 1;
            continue;
        };
        let same = schema_identity(&old_json).ok() == schema_identity(&topic.schema_json).ok();
        if same {
            say!("{subject}: unchanged");
            continue;
        }
        changed += 1;
        let violations = lienthong_contract::check_compatibility(
            topic.compatibility,
            &topic.schema,
            std::slice::from_ref(&old_schema),
        );
        let verdict = if violations.is_empty() {
            format!("compatible ({})", topic.compatibility)
        } else {
            incompatible += 1;
            format!("INCOMPATIBLE ({})", topic.compatibility)
        };
        say!("{subject}: changed, {verdict}");
        let changes = diff_schemas(&old_schema, &topic.schema);
        if changes.is_empty() {
            say!("  (docs, defaults of records or attributes only)");
        }
        for change in changes {
            say!("  {change}");
        }
        for v in violations {
            say!("  ! {v}");
        }
    }
    say!("{changed} subject(s) differ from {label}; {incompatible} incompatible");
    if incompatible > 0 {
        Err(CliError::Failed(format!(
            "{incompatible} incompatible schema change(s) against {label}"
        )))
    } else {
        Ok(())
    }
}
