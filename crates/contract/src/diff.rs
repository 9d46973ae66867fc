//! What changed between two versions of a schema, field by field, for people deciding whether
//! to push it (`lienthong schemas diff`). Whether the change is allowed is the [`crate::compat`]
//! checker's job; this says what the change is.
//!
//! Every field is named by its path: record fields by name, union branches by their short name
//! (`event.CaseSubmitted.home_unit`), array items with `[]`, map values with `{}`.

use std::collections::{BTreeMap, BTreeSet};

use apache_avro::Schema;
use apache_avro::schema::NamesRef;

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldChange {
    /// A field that only the new schema has.
    Added {
        /// Its path.
        path: String,
        /// Its type.
        new: String,
    },
    /// A field that only the old schema has.
    Removed {
        /// Its path.
        path: String,
        /// Its type.
        old: String,
    },
    /// A field whose type, default or symbols differ.
    Changed {
        /// Its path.
        path: String,
        /// Before.
        old: String,
        /// After.
        new: String,
    },
}

impl std::fmt::Display for FieldChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldChange::Added { path, new } => write!(f, "+ {path}: {new}"),
            FieldChange::Removed { path, old } => write!(f, "- {path}: {old}"),
            FieldChange::Changed { path, old, new } => write!(f, "~ {path}: {old} -> {new}"),
        }
    }
}

/// The differences from `old` to `new`, in path order.
pub fn diff_schemas(old: &Schema, new: &Schema) -> Vec<FieldChange> {
    let (old, new) = (flatten(old), flatten(new));
    let paths: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let mut out = Vec::new();
    for path in paths {
        match (old.get(path), new.get(path)) {
            (None, Some(n)) => out.push(FieldChange::Added {
                path: path.clone(),
                new: n.clone(),
            }),
            (Some(o), None) => out.push(FieldChange::Removed {
                path: path.clone(),
                old: o.clone(),
            }),
            (Some(o), Some(n)) if o != n => out.push(FieldChange::Changed {
                path: path.clone(),
                old: o.clone(),
                new: n.clone(),
            }),
            _ => {}
        }
    }
    out
}

/// path → description of every field and leaf of `schema`.
fn flatten(schema: &Schema) -> BTreeMap<String, String> {
    let names = match apache_avro::schema::ResolvedSchema::try_from(schema) {
        Ok(r) => r.get_names().clone(),
        Err(_) => NamesRef::default(),
    };
    let mut out = BTreeMap::new();
    let mut walker = Walker {
        names: &names,
        out: &mut out,
        open: Vec::new(),
    };
    walker.walk("", schema);
    out
}

struct Walker<'a, 'n, 'o> {
    names: &'n NamesRef<'a>,
    out: &'o mut BTreeMap<String, String>,
    /// Named types being walked (a recursive type is described, not walked again).
    open: Vec<String>,
}

impl<'a> Walker<'a, '_, '_> {
    fn deref(&self, schema: &'a Schema) -> &'a Schema {
        match schema {
            Schema::Ref { name } => self.names.get(name).copied().unwrap_or(schema),
            s => s,
        }
    }

    fn walk(&mut self, path: &str, schema: &'a Schema) {
        let schema = self.deref(schema);
        let join = |segment: &str| {
            if path.is_empty() {
                segment.to_string()
            } else {
                format!("{path}.{segment}")
            }
        };
        match schema {
            Schema::Record(record) => {
                let full = record.name.fullname(None);
                if self.open.contains(&full) {
                    return;
                }
                self.open.push(full);
                for field in &record.fields {
                    let p = join(&field.name);
                    let mut description = describe(self.deref(&field.schema));
                    if let Some(default) = &field.default {
                        description.push_str(&format!(" = {default}"));
                    }
                    self.out.insert(p.clone(), description);
                    self.walk(&p, &field.schema);
                }
                self.open.pop();
            }
            Schema::Union(union) => {
                for branch in union.variants() {
                    let branch = self.deref(branch);
                    if let Schema::Record(r) = branch {
                        self.walk(&join(&r.name.name), branch);
                    } else {
                        self.walk(path, branch);
                    }
                }
            }
            Schema::Array(array) => self.walk(&format!("{path}[]"), &array.items),
            Schema::Map(map) => self.walk(&format!("{path}{{}}"), &map.types),
            _ => {}
        }
    }
}

/// A short description of a type: `string`, `long (timestamp-millis)`, `enum Channel {…}`.
fn describe(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => format!("record {}", r.name.name),
        Schema::Enum(e) => format!("enum {} {{{}}}", e.name.name, e.symbols.join(", ")),
        Schema::Fixed(f) => format!("fixed {}({})", f.name.name, f.size),
        Schema::Ref { name } => name.name.clone(),
        Schema::Array(a) => format!("array<{}>", describe(&a.items)),
        Schema::Map(m) => format!("map<{}>", describe(&m.types)),
        Schema::Union(u) => format!(
            "union [{}]",
            u.variants()
                .iter()
                .map(describe)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Schema::Date => "int (date)".into(),
        Schema::TimestampMillis => "long (timestamp-millis)".into(),
        Schema::TimestampMicros => "long (timestamp-micros)".into(),
        Schema::Uuid => "string (uuid)".into(),
        other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(json: &str) -> Schema {
        Schema::parse_str(json).unwrap()
    }

    #[test]
    fn added_removed_and_changed_fields_are_named_by_path() {
        let old = parse(
            r#"{"type":"record","name":"R","fields":[
                {"name":"a","type":"string"},
                {"name":"e","type":{"type":"enum","name":"E","symbols":["X","Y"]}},
                {"name":"u","type":[{"type":"record","name":"V","fields":[{"name":"x","type":"int"}]},"null"]},
                {"name":"gone","type":"long"}]}"#,
        );
        let new = parse(
            r#"{"type":"record","name":"R","fields":[
                {"name":"a","type":"string"},
                {"name":"e","type":{"type":"enum","name":"E","symbols":["X","Y","Z"]}},
                {"name":"u","type":[{"type":"record","name":"V","fields":[{"name":"x","type":"long"},{"name":"y","type":["null","string"],"default":null}]},"null"]},
                {"name":"t","type":{"type":"long","logicalType":"timestamp-millis"},"default":0}]}"#,
        );
        let changes: Vec<String> = diff_schemas(&old, &new)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            changes,
            vec![
                "~ e: enum E {X, Y} -> enum E {X, Y, Z}",
                "- gone: long",
                "+ t: long (timestamp-millis) = 0",
                "~ u.V.x: int -> long",
                "+ u.V.y: union [null, string] = null",
            ]
        );
        assert!(diff_schemas(&new, &new).is_empty());
    }

    #[test]
    fn recursive_types_end() {
        let s = parse(
            r#"{"type":"record","name":"Node","fields":[{"name":"next","type":["null","Node"]}]}"#,
        );
        assert!(diff_schemas(&s, &s).is_empty());
        assert_eq!(flatten(&s).len(), 1);
    }
}
