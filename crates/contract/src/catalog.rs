//! The topic catalog (`schemas/catalog.toml`) and the value schemas it names.
//!
//! Loading validates everything a publisher or a sink relies on, and names the file and entry of
//! the first problem: an unknown schema file, a key field missing from the schema, a duplicate
//! topic, an invalid name, a field without a personal-data class. Schemas are parsed once here;
//! nothing downstream parses a schema per message.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::compat::CompatibilityMode;
use crate::error::{ContractError, Result};
pub use crate::grant::{AgencyKind, Grantee, PublishRefusal, check_publishes_as_itself};

/// The full name of the shared envelope record that every value schema starts with.
pub const ENVELOPE: &str = "vn.hcm.lienthong.Envelope";
/// The schema attribute that holds a field's personal-data class.
pub const PERSONAL_DATA_ATTR: &str = "lienthong.personal_data";
/// The schema attribute that holds a string field's format (see [`FieldFormat`]).
pub const FORMAT_ATTR: &str = "lienthong.format";
/// The schema attribute that holds a numeric field's inclusive `[min, max]` range.
pub const RANGE_ATTR: &str = "lienthong.range";

/// Kafka cleanup policy of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupPolicy {
    /// Keep records for the retention time.
    Delete,
    /// Keep the latest record per key; a null value (tombstone) deletes the key.
    Compact,
}

impl CleanupPolicy {
    /// The value of Kafka's `cleanup.policy` topic config.
    pub fn as_kafka(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
        }
    }
}

/// How sensitive a field is, from the city's personal-data rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PersonalDataClass {
    /// Not personal data.
    None,
    /// Demographic facts: birth date, sex.
    Demographic,
    /// Where a person lives.
    Residence,
    /// Phone number, e-mail address.
    Contact,
    /// A person's name.
    Name,
    /// A citizen's own words, which may hold anything.
    FreeText,
    /// The 12-digit personal identification number, or anything that identifies a person.
    Identifier,
}

impl PersonalDataClass {
    /// The class named `s` (`name`, `free_text`, …).
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Json::String(s.to_string())).ok()
    }
}

/// The format a string field must follow, from its `lienthong.format` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldFormat {
    /// An official unit code: 5 digits for a commune-level unit, or 2–12 capital letters and
    /// digits starting with a letter for a department (e.g. `STP`, `CATP`).
    UnitCode,
    /// The 12-digit personal identification number.
    PersonalId,
    /// Lower-case hexadecimal SHA-256 (64 characters).
    Sha256Hex,
}

impl FieldFormat {
    /// The format named by a `lienthong.format` attribute value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "unit_code" => Some(FieldFormat::UnitCode),
            "personal_id" => Some(FieldFormat::PersonalId),
            "sha256_hex" => Some(FieldFormat::Sha256Hex),
            _ => None,
        }
    }

    /// Whether `s` follows this format.
    pub fn accepts(self, s: &str) -> bool {
        let b = s.as_bytes();
        match self {
            FieldFormat::UnitCode => {
                (b.len() == 5 && b.iter().all(u8::is_ascii_digit))
                    || ((2..=12).contains(&b.len())
                        && b[0].is_ascii_uppercase()
                        && b.iter()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()))
            }
            FieldFormat::PersonalId => b.len() == 12 && b.iter().all(u8::is_ascii_digit),
            FieldFormat::Sha256Hex => {
                b.len() == 64
                    && b.iter()
                        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
            }
        }
    }

    /// What the format expects, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            FieldFormat::UnitCode => {
                "a unit code: 5 digits (ward, commune, special zone) or 2-12 capital letters and digits (department)"
            }
            FieldFormat::PersonalId => "a 12-digit personal identification number",
            FieldFormat::Sha256Hex => "64 lower-case hexadecimal characters (SHA-256)",
        }
    }
}

/// One topic of the catalog, validated, with its value schema parsed.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    /// Kafka topic name.
    pub name: String,
    /// Schema file name, relative to the catalog's folder.
    pub schema_file: String,
    /// Path of the key field inside the value, e.g. `["envelope", "aggregate_id"]`.
    pub key_field: Vec<String>,
    /// Personal-data class of the key.
    pub key_personal_data: PersonalDataClass,
    /// Registry subject of the value schema.
    pub value_subject: String,
    /// Number of partitions.
    pub partitions: i32,
    /// Cleanup policy.
    pub cleanup_policy: CleanupPolicy,
    /// Retention in milliseconds, -1 for forever.
    pub retention_ms: i64,
    /// `min.insync.replicas` on a replicated cluster.
    pub min_insync_replicas: i32,
    /// Compatibility mode of the value subject.
    pub compatibility: CompatibilityMode,
    /// Who may publish: kinds of agency, or agencies by code.
    pub publishers: Vec<Grantee>,
    /// Who may read (consume): kinds of agency, or agencies by code. The bus's own components
    /// (gateway, KPI engine) read what they need whatever this says.
    pub readers: Vec<Grantee>,
    /// Code of the agency that owns the value subject.
    pub owner: String,
    /// Most sensitive personal-data class on the topic.
    pub personal_data: PersonalDataClass,
    /// The value schema, self-contained (shared named types inlined), as registered.
    pub schema_json: String,
    /// The value schema, parsed once.
    pub schema: Schema,
}

impl TopicSpec {
    /// Whether agency `agency` of `kind` may publish to this topic: the rule the SDK and the
    /// gateway apply, and the one `lienthong acl sync` has the broker enforce.
    pub fn may_publish(&self, agency: &str, kind: AgencyKind) -> bool {
        self.publishers.iter().any(|g| g.names(agency, kind))
    }

    /// Whether agency `agency` of `kind` may read this topic (the broker's READ grant).
    pub fn may_read(&self, agency: &str, kind: AgencyKind) -> bool {
        self.readers.iter().any(|g| g.names(agency, kind))
    }

    /// May agency `agency` (of `kind`) publish to this topic at all? The one rule every
    /// publishing path (SDK, gateway) applies before anything reaches Kafka.
    pub fn check_publisher(&self, agency: &str, kind: AgencyKind) -> Result<(), PublishRefusal> {
        if self.may_publish(agency, kind) {
            Ok(())
        } else {
            Err(PublishRefusal::TopicNotAllowed {
                agency: agency.to_string(),
                kind,
                topic: self.name.clone(),
                allowed: self
                    .publishers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }
}

/// The loaded catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    file: PathBuf,
    topics: Vec<TopicSpec>,
}

/// The catalog file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    topics: Vec<RawTopic>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopic {
    name: String,
    schema: String,
    key_field: String,
    key_personal_data: PersonalDataClass,
    value_subject: String,
    partitions: i32,
    cleanup_policy: CleanupPolicy,
    retention_ms: i64,
    min_insync_replicas: i32,
    compatibility: CompatibilityMode,
    publishers: Vec<Grantee>,
    #[serde(default)]
    readers: Vec<Grantee>,
    owner: String,
    personal_data: PersonalDataClass,
}

/// The file name of the catalog inside the schemas folder.
pub const CATALOG_FILE: &str = "catalog.toml";
/// The folder, inside the schemas folder, of named types shared by several schemas.
pub const COMMON_DIR: &str = "common";

impl Catalog {
    /// Load `dir/catalog.toml` and every schema it names.
    pub fn load(dir: impl AsRef<Path>) -> Result<Catalog> {
        let dir = dir.as_ref();
        let common = load_common(&dir.join(COMMON_DIR))?;
        Catalog::load_with(dir, &dir.join(CATALOG_FILE), &common, |name| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map_err(|source| ContractError::Io { file: path, source })
        })
    }

    /// Load a catalog from its text, reading schema files through `read_schema`. Used for the
    /// tree on disk and for versions of it from git history.
    pub fn load_with(
        dir: &Path,
        file: &Path,
        common: &SharedTypes,
        mut read_schema: impl FnMut(&str) -> Result<String>,
    ) -> Result<Catalog> {
        let text = std::fs::read_to_string(file).map_err(|source| ContractError::Io {
            file: file.to_path_buf(),
            source,
        })?;
        Catalog::from_toml(dir, file, &text, common, &mut read_schema)
    }

    fn from_toml(
        dir: &Path,
        file: &Path,
        text: &str,
        common: &SharedTypes,
        read_schema: &mut dyn FnMut(&str) -> Result<String>,
    ) -> Result<Catalog> {
        let err = |entry: String, message: String| ContractError::Catalog {
            file: file.to_path_buf(),
            entry,
            message,
        };
        let raw: RawCatalog =
            toml::from_str(text).map_err(|e| err("catalog".into(), e.to_string()))?;
        let mut seen = HashSet::new();
        let mut subjects = HashSet::new();
        let mut topics = Vec::with_capacity(raw.topics.len());
        for (i, t) in raw.topics.into_iter().enumerate() {
            let entry = if t.name.is_empty() {
                format!("topic #{}", i + 1)
            } else {
                format!("topic {:?}", t.name)
            };
            if let Some(why) = invalid_topic_name(&t.name) {
                return Err(err(entry, format!("invalid topic name: {why}")));
            }
            if !seen.insert(t.name.clone()) {
                return Err(err(entry, "duplicate topic".into()));
            }
            if t.value_subject.trim().is_empty() || t.value_subject.chars().any(char::is_control) {
                return Err(err(
                    entry,
                    format!("invalid value subject {:?}", t.value_subject),
                ));
            }
            if !subjects.insert(t.value_subject.clone()) {
                return Err(err(
                    entry,
                    format!("value subject {:?} used twice", t.value_subject),
                ));
            }
            if t.partitions < 1 {
                return Err(err(
                    entry,
                    format!("partitions must be at least 1, not {}", t.partitions),
                ));
            }
            if t.retention_ms < -1 || t.retention_ms == 0 {
                return Err(err(
                    entry,
                    "retention_ms must be positive, or -1 for forever".into(),
                ));
            }
            if t.min_insync_replicas < 1 {
                return Err(err(entry, "min_insync_replicas must be at least 1".into()));
            }
            if t.publishers.is_empty() {
                return Err(err(
                    entry,
                    "publishers is empty: nobody could publish".into(),
                ));
            }
            if !FieldFormat::UnitCode.accepts(&t.owner) {
                return Err(err(
                    entry,
                    format!(
                        "owner {:?} is not {}",
                        t.owner,
                        FieldFormat::UnitCode.describe()
                    ),
                ));
            }
            if t.schema.contains("..") || Path::new(&t.schema).is_absolute() {
                return Err(err(
                    entry,
                    format!("schema {:?} must be a file in {}", t.schema, dir.display()),
                ));
            }
            let text = read_schema(&t.schema).map_err(|e| match e {
                ContractError::Io { source, .. } => err(
                    entry.clone(),
                    format!("unknown schema file {:?}: {source}", t.schema),
                ),
                other => other,
            })?;
            let schema_path = dir.join(&t.schema);
            let (schema_json, schema) = compose_schema(&schema_path, &text, common)?;
            let key_field: Vec<String> = t.key_field.split('.').map(str::to_string).collect();
            match field_at(&schema, &key_field) {
                Some(Schema::String) => {}
                Some(other) => {
                    return Err(err(
                        entry,
                        format!("key field {:?} is {other:?}, not a string", t.key_field),
                    ));
                }
                None => {
                    return Err(err(
                        entry,
                        format!(
                            "key field {:?} is missing from schema {}",
                            t.key_field, t.schema
                        ),
                    ));
                }
            }
            check_envelope(&schema_path, &schema)?;
            topics.push(TopicSpec {
                name: t.name,
                schema_file: t.schema,
                key_field,
                key_personal_data: t.key_personal_data,
                value_subject: t.value_subject,
                partitions: t.partitions,
                cleanup_policy: t.cleanup_policy,
                retention_ms: t.retention_ms,
                min_insync_replicas: t.min_insync_replicas,
                compatibility: t.compatibility,
                publishers: t.publishers,
                readers: t.readers,
                owner: t.owner,
                personal_data: t.personal_data,
                schema_json,
                schema,
            });
        }
        Ok(Catalog {
            file: file.to_path_buf(),
            topics,
        })
    }

    /// The catalog file this was loaded from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Every topic, in catalog order.
    pub fn topics(&self) -> &[TopicSpec] {
        &self.topics
    }

    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Result<&TopicSpec> {
        self.topics
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ContractError::UnknownTopic(name.to_string()))
    }

    /// The id [`crate::Codec::from_catalog`] gives `topic`'s value schema.
    pub fn local_id(&self, topic: &str) -> Result<u32> {
        self.topics
            .iter()
            .position(|t| t.name == topic)
            .map(crate::codec::local_id)
            .ok_or_else(|| ContractError::UnknownTopic(topic.to_string()))
    }

    /// The topic whose value subject is `subject`, if any.
    pub fn topic_by_subject(&self, subject: &str) -> Option<&TopicSpec> {
        self.topics.iter().find(|t| t.value_subject == subject)
    }
}

/// Why `name` is not a valid Kafka topic name, if it is not.
pub fn invalid_topic_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are reserved")
    } else if name.len() > 249 {
        Some("it is longer than 249 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    }
}

/// Named types shared by several schemas (the `common/` folder), by full name.
#[derive(Debug, Clone, Default)]
pub struct SharedTypes {
    by_name: BTreeMap<String, Json>,
}

impl SharedTypes {
    /// Parse shared named types from `(file name, text)` pairs.
    pub fn from_files<'a>(
        dir: &Path,
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self> {
        let mut by_name = BTreeMap::new();
        for (name, text) in files {
            let file = dir.join(name);
            let json: Json = serde_json::from_str(text).map_err(|e| ContractError::Schema {
                file: file.clone(),
                message: format!("invalid JSON: {e}"),
            })?;
            let full = full_name(&json, None).ok_or_else(|| ContractError::Schema {
                file: file.clone(),
                message: "a shared type must be a named record, enum or fixed".into(),
            })?;
            check_personal_data_tags(&file, &json)?;
            if by_name.insert(full.clone(), json).is_some() {
                return Err(ContractError::Schema {
                    file,
                    message: format!("type {full} defined twice"),
                });
            }
        }
        Ok(SharedTypes { by_name })
    }
}

fn load_common(dir: &Path) -> Result<SharedTypes> {
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SharedTypes::default()),
        Err(source) => {
            return Err(ContractError::Io {
                file: dir.to_path_buf(),
                source,
            });
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| ContractError::Io {
            file: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "avsc") {
            let text = std::fs::read_to_string(&path).map_err(|source| ContractError::Io {
                file: path.clone(),
                source,
            })?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push((name, text));
        }
    }
    files.sort();
    SharedTypes::from_files(dir, files.iter().map(|(n, t)| (n.as_str(), t.as_str())))
}

/// The full name of a named schema object (`namespace.name`), if it is one.
fn full_name(json: &Json, enclosing_ns: Option<&str>) -> Option<String> {
    let obj = json.as_object()?;
    let kind = obj.get("type")?.as_str()?;
    if !matches!(kind, "record" | "enum" | "fixed" | "error") {
        return None;
    }
    let name = obj.get("name")?.as_str()?;
    if name.contains('.') {
        return Some(name.to_string());
    }
    match obj.get("namespace").and_then(Json::as_str).or(enclosing_ns) {
        Some(ns) if !ns.is_empty() => Some(format!("{ns}.{name}")),
        _ => Some(name.to_string()),
    }
}

/// Inline the shared named types a schema refers to by full name (each defined at its first use,
/// as Avro requires), check its personal-data tags, and parse it.
pub fn compose_schema(file: &Path, text: &str, common: &SharedTypes) -> Result<(String, Schema)> {
    let mut json: Json = serde_json::from_str(text).map_err(|e| ContractError::Schema {
        file: file.to_path_buf(),
        message: format!("invalid JSON: {e}"),
    })?;
    let mut defined = HashSet::new();
    inline_shared(&mut json, common, &mut defined, 0).map_err(|message| ContractError::Schema {
        file: file.to_path_buf(),
        message,
    })?;
    check_personal_data_tags(file, &json)?;
    let composed = json.to_string();
    let schema = Schema::parse_str(&composed).map_err(|e| ContractError::Schema {
        file: file.to_path_buf(),
        message: format!("invalid Avro schema: {e}"),
    })?;
    Ok((composed, schema))
}

fn inline_shared(
    json: &mut Json,
    common: &SharedTypes,
    defined: &mut HashSet<String>,
    depth: usize,
) -> std::result::Result<(), String> {
    if depth > 64 {
        return Err("schema nests deeper than 64 levels".into());
    }
    match json {
        Json::String(name) => {
            if let Some(def) = common.by_name.get(name.as_str())
                && defined.insert(name.clone())
            {
                *json = def.clone();
                inline_shared(json, common, defined, depth + 1)?;
            }
        }
        Json::Array(union) => {
            for branch in union {
                inline_shared(branch, common, defined, depth + 1)?;
            }
        }
        Json::Object(obj) => {
            for key in ["type", "items", "values"] {
                if let Some(v) = obj.get_mut(key) {
                    inline_shared(v, common, defined, depth + 1)?;
                }
            }
            if let Some(Json::Array(fields)) = obj.get_mut("fields") {
                for field in fields {
                    if let Some(t) = field.get_mut("type") {
                        inline_shared(t, common, defined, depth + 1)?;
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Every record field carries a valid `lienthong.personal_data` class, and every
/// `lienthong.format` / `lienthong.range` attribute is well-formed.
fn check_personal_data_tags(file: &Path, json: &Json) -> Result<()> {
    let mut problems = Vec::new();
    walk_fields(json, "", &mut |path, field| {
        match field.get(PERSONAL_DATA_ATTR).and_then(Json::as_str) {
            None => problems.push(format!(
                "field {path} has no \"{PERSONAL_DATA_ATTR}\" class"
            )),
            Some("key") if path == "envelope.aggregate_id" || path == "aggregate_id" => {}
            Some("key") => problems.push(format!(
                "field {path}: class \"key\" is only for the envelope's aggregate_id"
            )),
            Some(c) if PersonalDataClass::parse(c).is_none() => {
                problems.push(format!("field {path}: unknown personal-data class {c:?}"))
            }
            Some(_) => {}
        }
        if let Some(f) = field.get(FORMAT_ATTR)
            && f.as_str().and_then(FieldFormat::parse).is_none()
        {
            problems.push(format!("field {path}: unknown format {f}"));
        }
        if let Some(r) = field.get(RANGE_ATTR) {
            let ok = r.as_array().is_some_and(|a| {
                a.len() == 2 && a[0].is_i64() && a[1].is_i64() && a[0].as_i64() <= a[1].as_i64()
            });
            if !ok {
                problems.push(format!(
                    "field {path}: range must be [min, max] integers, not {r}"
                ));
            }
        }
    });
    match problems.into_iter().next() {
        None => Ok(()),
        Some(message) => Err(ContractError::Schema {
            file: file.to_path_buf(),
            message,
        }),
    }
}

/// Call `f(path, field)` for every field of every record in `json`.
fn walk_fields(json: &Json, prefix: &str, f: &mut dyn FnMut(&str, &serde_json::Map<String, Json>)) {
    match json {
        Json::Array(union) => union.iter().for_each(|b| walk_fields(b, prefix, f)),
        Json::Object(obj) => {
            if let Some(Json::Array(fields)) = obj.get("fields") {
                for field in fields.iter().filter_map(Json::as_object) {
                    let name = field.get("name").and_then(Json::as_str).unwrap_or("?");
                    let path = if prefix.is_empty() {
                        name.to_string()
                    } else {
                        format!("{prefix}.{name}")
                    };
                    f(&path, field);
                    if let Some(t) = field.get("type") {
                        walk_fields(t, &path, f);
                    }
                }
            }
            for key in ["items", "values"] {
                if let Some(v) = obj.get(key) {
                    walk_fields(v, prefix, f);
                }
            }
            if let Some(t @ (Json::Object(_) | Json::Array(_))) = obj.get("type") {
                walk_fields(t, prefix, f);
            }
        }
        _ => {}
    }
}

/// The schema of the field at `path` in a record schema.
pub fn field_at<'a>(schema: &'a Schema, path: &[String]) -> Option<&'a Schema> {
    let mut current = schema;
    for name in path {
        let Schema::Record(record) = current else {
            return None;
        };
        current = &record.fields.iter().find(|f| &f.name == name)?.schema;
    }
    Some(current)
}

/// The first field of every value schema is the shared envelope.
fn check_envelope(file: &Path, schema: &Schema) -> Result<()> {
    let ok = match schema {
        Schema::Record(r) => r.fields.first().is_some_and(|f| {
            f.name == "envelope"
                && matches!(&f.schema, Schema::Record(e) if e.name.fullname(None) == ENVELOPE)
        }),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ContractError::Schema {
            file: file.to_path_buf(),
            message: format!("the first field must be `envelope` of type {ENVELOPE}"),
        })
    }
}
