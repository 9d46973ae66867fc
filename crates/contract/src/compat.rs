//! Schema compatibility: can a reader with one schema read data written with another?
//!
//! The rules are Avro's schema-resolution rules, checked statically, and the modes are the ones
//! every Confluent-compatible registry uses (BACKWARD, FORWARD, FULL, each optionally
//! TRANSITIVE, and NONE). The registry uses this checker for `409` answers and the test command
//! uses it against every schema version committed earlier in git.
//!
//! Two choices are stricter than some registries, on purpose, because a city's records outlive
//! the software that wrote them:
//! - a change of logical type (`int` to `date`, `string` to `uuid`) is incompatible, even though
//!   the bytes would still decode;
//! - a reader field's default must be a valid value of the field's type (for a union, of its
//!   first branch), since a reader fills it in for every old record.
//!
//! Unions follow the specification exactly: every branch a writer may use must be readable by
//! some branch of the reader (so a branch may be added for BACKWARD, removed for FORWARD), and a
//! writer's non-union type must match at least one branch of a reader's union, promotions
//! included (`int` is read by `["null", "long"]`).

use std::collections::HashSet;
use std::fmt;

use apache_avro::Schema;
use apache_avro::schema::{Name, NamesRef, RecordSchema, ResolvedSchema};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::physical::Physical;

/// How a subject's schema may evolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityMode {
    /// Anything goes.
    None,
    /// The new schema reads data written with the latest version.
    Backward,
    /// The new schema reads data written with every earlier version.
    BackwardTransitive,
    /// The latest version reads data written with the new schema.
    Forward,
    /// Every earlier version reads data written with the new schema.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every earlier version.
    FullTransitive,
}

impl CompatibilityMode {
    /// The mode's name as registries spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityMode::None => "NONE",
            CompatibilityMode::Backward => "BACKWARD",
            CompatibilityMode::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatibilityMode::Forward => "FORWARD",
            CompatibilityMode::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatibilityMode::Full => "FULL",
            CompatibilityMode::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Parse a registry's spelling of a mode.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Json::String(s.to_string())).ok()
    }

    fn backward(self) -> bool {
        matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which rule of schema resolution a change breaks. Names follow Avro's Java
/// `SchemaIncompatibilityType`, so messages read the same as other registries'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Different types, and no promotion from the writer's to the reader's.
    TypeMismatch,
    /// Named types (record, enum, fixed) whose names differ, with no alias.
    NameMismatch,
    /// A field the reader has and the writer does not, without a default.
    ReaderFieldMissingDefaultValue,
    /// A default that is not a value of the field's type.
    InvalidDefaultValue,
    /// Enum symbols the writer may write that the reader lacks, and no reader default.
    MissingEnumSymbols,
    /// Fixed types of different sizes.
    FixedSizeMismatch,
    /// A union branch the writer may use that no reader branch can read.
    MissingUnionBranch,
    /// The logical type changed.
    LogicalTypeMismatch,
}

impl Rule {
    /// The rule's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::TypeMismatch => "TYPE_MISMATCH",
            Rule::NameMismatch => "NAME_MISMATCH",
            Rule::ReaderFieldMissingDefaultValue => "READER_FIELD_MISSING_DEFAULT_VALUE",
            Rule::InvalidDefaultValue => "INVALID_DEFAULT_VALUE",
            Rule::MissingEnumSymbols => "MISSING_ENUM_SYMBOLS",
            Rule::FixedSizeMismatch => "FIXED_SIZE_MISMATCH",
            Rule::MissingUnionBranch => "MISSING_UNION_BRANCH",
            Rule::LogicalTypeMismatch => "LOGICAL_TYPE_MISMATCH",
        }
    }
}

/// One way in which a reader cannot read a writer's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    /// Where, as a path of field names from the root (`/` is the root).
    pub path: String,
    /// The rule broken.
    pub rule: Rule,
    /// A sentence for a person.
    pub message: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {}: {}",
            self.rule.as_str(),
            self.path,
            self.message
        )
    }
}

/// A failed check of a new schema against one earlier version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Index of the earlier version in the list given (0 = oldest).
    pub against: usize,
    /// `true` when the new schema cannot read the old version's data (backward), `false` when
    /// the old version cannot read the new schema's data (forward).
    pub new_reads_old: bool,
    /// What breaks.
    pub problem: Incompatibility,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.new_reads_old {
            write!(
                f,
                "the new schema cannot read data written with earlier version #{}: {}",
                self.against + 1,
                self.problem
            )
        } else {
            write!(
                f,
                "earlier version #{} cannot read data written with the new schema: {}",
                self.against + 1,
                self.problem
            )
        }
    }
}

/// Check `candidate` against the `existing` versions of a subject (oldest first) under `mode`.
/// An empty result means compatible.
pub fn check_compatibility(
    mode: CompatibilityMode,
    candidate: &Schema,
    existing: &[Schema],
) -> Vec<Violation> {
    let mut out = Vec::new();
    if existing.is_empty() || mode == CompatibilityMode::None {
        return out;
    }
    let first = if mode.transitive() {
        0
    } else {
        existing.len() - 1
    };
    for (i, old) in existing.iter().enumerate().skip(first) {
        // Backward: the new schema reads the old data; forward: the old schema reads the new.
        for (applies, new_reads_old, writer, reader) in [
            (mode.backward(), true, old, candidate),
            (mode.forward(), false, candidate, old),
        ] {
            if applies {
                out.extend(
                    can_read(writer, reader)
                        .into_iter()
                        .map(|problem| Violation {
                            against: i,
                            new_reads_old,
                            problem,
                        }),
                );
            }
        }
    }
    out
}

/// Every reason a reader with schema `reader` cannot read data written with `writer`; empty
/// when it can.
pub fn can_read(writer: &Schema, reader: &Schema) -> Vec<Incompatibility> {
    let names = |s, side: &str| {
        ResolvedSchema::try_from(s)
            .map(|r| r.get_names().clone())
            .map_err(|e| Incompatibility {
                path: "/".into(),
                rule: Rule::TypeMismatch,
                message: format!("the {side} schema refers to a type it does not define: {e}"),
            })
    };
    // Fail closed: a schema whose names do not resolve cannot be judged compatible.
    let (writer_names, reader_names) = match (names(writer, "writer"), names(reader, "reader")) {
        (Ok(w), Ok(r)) => (w, r),
        (w, r) => return w.err().into_iter().chain(r.err()).collect(),
    };
    let mut checker = Checker {
        writer_names,
        reader_names,
        visiting: HashSet::new(),
        out: Vec::new(),
    };
    checker.check(writer, reader, "/");
    checker.out
}

struct Checker<'a> {
    writer_names: NamesRef<'a>,
    reader_names: NamesRef<'a>,
    visiting: HashSet<(String, String)>,
    out: Vec<Incompatibility>,
}

/// The Avro type a schema is stored as, and its logical type, if any.
fn base_and_logical(s: &Schema) -> (&'static str, Option<&'static str>) {
    match s {
        Schema::Null => ("null", None),
        Schema::Boolean => ("boolean", None),
        Schema::Int => ("int", None),
        Schema::Long => ("long", None),
        Schema::Float => ("float", None),
        Schema::Double => ("double", None),
        Schema::Bytes => ("bytes", None),
        Schema::String => ("string", None),
        Schema::Array(_) => ("array", None),
        Schema::Map(_) => ("map", None),
        Schema::Union(_) => ("union", None),
        Schema::Record(_) => ("record", None),
        Schema::Enum(_) => ("enum", None),
        Schema::Fixed(_) => ("fixed", None),
        Schema::Decimal(d) => (
            if matches!(*d.inner, Schema::Fixed(_)) {
                "fixed"
            } else {
                "bytes"
            },
            Some("decimal"),
        ),
        Schema::BigDecimal => ("bytes", Some("big-decimal")),
        Schema::Uuid => ("string", Some("uuid")),
        Schema::Date => ("int", Some("date")),
        Schema::TimeMillis => ("int", Some("time-millis")),
        Schema::TimeMicros => ("long", Some("time-micros")),
        Schema::TimestampMillis => ("long", Some("timestamp-millis")),
        Schema::TimestampMicros => ("long", Some("timestamp-micros")),
        Schema::TimestampNanos => ("long", Some("timestamp-nanos")),
        Schema::LocalTimestampMillis => ("long", Some("local-timestamp-millis")),
        Schema::LocalTimestampMicros => ("long", Some("local-timestamp-micros")),
        Schema::LocalTimestampNanos => ("long", Some("local-timestamp-nanos")),
        Schema::Duration => ("fixed", Some("duration")),
        Schema::Ref { .. } => ("ref", None),
    }
}

/// Avro's promotions: a writer's `int` is read as `long`, `float` or `double`, and so on.
fn promotes(writer: &str, reader: &str) -> bool {
    matches!(
        (writer, reader),
        ("int", "long" | "float" | "double")
            | ("long", "float" | "double")
            | ("float", "double")
            | ("string", "bytes")
            | ("bytes", "string")
    )
}

fn describe(s: &Schema) -> String {
    match s {
        Schema::Record(r) => format!("record {}", r.name.fullname(None)),
        Schema::Enum(e) => format!("enum {}", e.name.fullname(None)),
        Schema::Fixed(f) => format!("fixed {}", f.name.fullname(None)),
        Schema::Ref { name } => name.fullname(None),
        other => match base_and_logical(other) {
            (base, Some(logical)) => format!("{base} ({logical})"),
            (base, None) => base.to_string(),
        },
    }
}

/// Whether a reader's named type accepts a writer's name: same unqualified name, or an alias
/// equal to the writer's full or unqualified name.
fn names_match(
    writer: &Name,
    reader: &Name,
    reader_aliases: &Option<Vec<apache_avro::schema::Alias>>,
) -> bool {
    if writer.name == reader.name {
        return true;
    }
    let full = writer.fullname(None);
    reader_aliases
        .iter()
        .flatten()
        .any(|a| a.fullname(reader.namespace.clone()) == full)
}

/// Follow a named reference to its definition.
fn resolve<'a>(names: &NamesRef<'a>, s: &'a Schema) -> &'a Schema {
    match s {
        Schema::Ref { name } => names.get(name).copied().unwrap_or(s),
        _ => s,
    }
}

fn child(path: &str, segment: &str) -> String {
    if path == "/" {
        format!("/{segment}")
    } else {
        format!("{path}/{segment}")
    }
}

impl<'a> Checker<'a> {
    fn resolve_writer(&self, s: &'a Schema) -> &'a Schema {
        resolve(&self.writer_names, s)
    }

    fn resolve_reader(&self, s: &'a Schema) -> &'a Schema {
        resolve(&self.reader_names, s)
    }

    /// Record a NAME_MISMATCH unless the reader's named type accepts the writer's name.
    fn names_agree(
        &mut self,
        path: &str,
        kind: &str,
        writer: &Name,
        reader: &Name,
        reader_aliases: &Option<Vec<apache_avro::schema::Alias>>,
    ) -> bool {
        let ok = names_match(writer, reader, reader_aliases);
        if !ok {
            self.fail(
                path,
                Rule::NameMismatch,
                format!(
                    "{kind} {} is read as {kind} {} (add an alias to rename)",
                    writer.fullname(None),
                    reader.fullname(None)
                ),
            );
        }
        ok
    }

    /// Whether `writer` and `reader` are named types of the same kind that name-match.
    fn same_named_type(&self, writer: &Schema, reader: &'a Schema) -> bool {
        match (writer, self.resolve_reader(reader)) {
            (Schema::Record(w), Schema::Record(r)) => names_match(&w.name, &r.name, &r.aliases),
            (Schema::Enum(w), Schema::Enum(r)) => names_match(&w.name, &r.name, &r.aliases),
            (Schema::Fixed(w), Schema::Fixed(r)) => names_match(&w.name, &r.name, &r.aliases),
            _ => false,
        }
    }

    fn fail(&mut self, path: &str, rule: Rule, message: String) {
        self.out.push(Incompatibility {
            path: path.to_string(),
            rule,
            message,
        });
    }

    /// Check without recording: does any problem arise?
    fn compatible(&mut self, writer: &'a Schema, reader: &'a Schema, path: &str) -> bool {
        let saved = std::mem::take(&mut self.out);
        self.check(writer, reader, path);
        let ok = self.out.is_empty();
        self.out = saved;
        ok
    }

    fn check(&mut self, writer: &'a Schema, reader: &'a Schema, path: &str) {
        let writer = self.resolve_writer(writer);
        let reader = self.resolve_reader(reader);
        if let Schema::Union(wu) = writer {
            for (i, branch) in wu.variants().iter().enumerate() {
                match reader {
                    Schema::Union(_) => self.check(branch, reader, &child(path, &format!("[{i}]"))),
                    _ => self.check(branch, reader, path),
                }
            }
            return;
        }
        if let Schema::Union(ru) = reader {
            // A named writer type resolves to the reader branch of the same name (as Avro's
            // resolution does): check against it directly, so the real cause is reported.
            if let Some(branch) = ru
                .variants()
                .iter()
                .find(|b| self.same_named_type(writer, b))
            {
                self.check(writer, branch, path);
                return;
            }
            if !ru
                .variants()
                .iter()
                .any(|b| self.compatible(writer, b, path))
            {
                let branches: Vec<String> = ru
                    .variants()
                    .iter()
                    .map(|b| describe(self.resolve_reader(b)))
                    .collect();
                self.fail(path, Rule::MissingUnionBranch, format!("the writer may write {}, which no branch of the reader's union [{}] can read", describe(writer), branches.join(", ")));
            }
            return;
        }
        if matches!(writer, Schema::Ref { .. }) || matches!(reader, Schema::Ref { .. }) {
            self.fail(
                path,
                Rule::TypeMismatch,
                format!(
                    "unresolved type reference ({} / {})",
                    describe(writer),
                    describe(reader)
                ),
            );
            return;
        }
        let (wbase, wlogical) = base_and_logical(writer);
        let (rbase, rlogical) = base_and_logical(reader);
        if wbase != rbase {
            if !promotes(wbase, rbase) || wlogical.is_some() || rlogical.is_some() {
                self.fail(
                    path,
                    Rule::TypeMismatch,
                    format!(
                        "the writer writes {} but the reader expects {}",
                        describe(writer),
                        describe(reader)
                    ),
                );
            }
            return;
        }
        if wlogical != rlogical {
            self.fail(
                path,
                Rule::LogicalTypeMismatch,
                format!(
                    "logical type changed from {} to {}",
                    describe(writer),
                    describe(reader)
                ),
            );
            return;
        }
        match (writer, reader) {
            (Schema::Record(w), Schema::Record(r)) => self.check_record(w, r, path),
            (Schema::Enum(w), Schema::Enum(r)) => {
                if !self.names_agree(path, "enum", &w.name, &r.name, &r.aliases) {
                    return;
                }
                let missing: Vec<&str> = w
                    .symbols
                    .iter()
                    .filter(|s| !r.symbols.contains(s))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() && r.default.is_none() {
                    self.fail(
                        path,
                        Rule::MissingEnumSymbols,
                        format!(
                            "the reader's enum {} lacks symbols [{}] and has no default symbol",
                            r.name.fullname(None),
                            missing.join(", ")
                        ),
                    );
                }
            }
            (Schema::Fixed(w), Schema::Fixed(r)) => {
                let named = self.names_agree(path, "fixed", &w.name, &r.name, &r.aliases);
                if named && w.size != r.size {
                    self.fail(
                        path,
                        Rule::FixedSizeMismatch,
                        format!(
                            "fixed {} has {} bytes in the writer and {} in the reader",
                            r.name.fullname(None),
                            w.size,
                            r.size
                        ),
                    );
                }
            }
            (Schema::Decimal(w), Schema::Decimal(r)) => {
                if w.precision != r.precision || w.scale != r.scale {
                    self.fail(
                        path,
                        Rule::TypeMismatch,
                        format!(
                            "decimal({}, {}) is read as decimal({}, {})",
                            w.precision, w.scale, r.precision, r.scale
                        ),
                    );
                } else {
                    self.check(&w.inner, &r.inner, path);
                }
            }
            (Schema::Array(w), Schema::Array(r)) => {
                self.check(&w.items, &r.items, &child(path, "[]"))
            }
            (Schema::Map(w), Schema::Map(r)) => self.check(&w.types, &r.types, &child(path, "{}")),
            _ => {}
        }
    }

    fn check_record(&mut self, w: &'a RecordSchema, r: &'a RecordSchema, path: &str) {
        if !self.names_agree(path, "record", &w.name, &r.name, &r.aliases) {
            return;
        }
        // Recursive types: assume the pair compatible while checking it (coinduction).
        let key = (w.name.fullname(None), r.name.fullname(None));
        if !self.visiting.insert(key.clone()) {
            return;
        }
        for rf in &r.fields {
            let fpath = child(path, &rf.name);
            // By the writer's field *names* only (apache-avro's `lookup` also holds the
            // writer's aliases, which resolution must ignore), then by the reader's aliases.
            let by_name = |n: &str| w.fields.iter().find(|f| f.name == n);
            let found =
                by_name(&rf.name).or_else(|| rf.aliases.iter().flatten().find_map(|a| by_name(a)));
            match found {
                Some(wf) => self.check(&wf.schema, &rf.schema, &fpath),
                None => match &rf.default {
                    None => self.fail(&fpath, Rule::ReaderFieldMissingDefaultValue, format!("field {:?} is new to the reader and has no default, so old records cannot be read", rf.name)),
                    Some(d) => {
                        if !self.default_valid(&rf.schema, d, 0) {
                            self.fail(&fpath, Rule::InvalidDefaultValue, format!("default {d} of field {:?} is not a valid {}", rf.name, describe(self.resolve_reader(&rf.schema))));
                        }
                    }
                },
            }
        }
        self.visiting.remove(&key);
    }

    /// Is `value` a valid JSON default for `schema` (reader side)?
    fn default_valid(&self, schema: &'a Schema, value: &Json, depth: usize) -> bool {
        if depth > 64 {
            return false;
        }
        let schema = self.resolve_reader(schema);
        if let Some(physical) = Physical::of(schema) {
            return match physical {
                Physical::Null => value.is_null(),
                Physical::Boolean => value.is_boolean(),
                Physical::Int => value.as_i64().is_some_and(|v| i32::try_from(v).is_ok()),
                Physical::Long => value.is_i64(),
                Physical::Float | Physical::Double => value.is_number(),
                Physical::Bytes | Physical::String => value.is_string(),
                Physical::Fixed(size) => value.as_str().is_some_and(|s| s.chars().count() == size),
            };
        }
        match schema {
            Schema::Enum(e) => value
                .as_str()
                .is_some_and(|s| e.symbols.iter().any(|x| x == s)),
            Schema::Array(a) => value.as_array().is_some_and(|items| {
                items
                    .iter()
                    .all(|v| self.default_valid(&a.items, v, depth + 1))
            }),
            Schema::Map(m) => value.as_object().is_some_and(|o| {
                o.values()
                    .all(|v| self.default_valid(&m.types, v, depth + 1))
            }),
            Schema::Union(u) => u
                .variants()
                .first()
                .is_some_and(|first| self.default_valid(first, value, depth + 1)),
            Schema::Record(r) => value.as_object().is_some_and(|o| {
                r.fields.iter().all(|f| match o.get(&f.name) {
                    Some(v) => self.default_valid(&f.schema, v, depth + 1),
                    None => f.default.is_some(),
                })
            }),
            // A reference that did not resolve; the primitives were taken above.
            _ => false,
        }
    }
}
