//! JSON → Avro, checked against the topic's schema in one generic walk.
//!
//! The walk follows the Avro schema, not Rust types, so it works for every topic of the catalog
//! and for every future schema version without code changes. While it checks it also writes the
//! Avro binary encoding, so a valid event is encoded in the same pass. Every problem is recorded
//! with its JSON path (`$.event.CaseSubmitted.home_unit`), up to a bound, instead of stopping at
//! the first one.
//!
//! JSON representation (documented in `docs/gateway.md`):
//! - records are objects; unknown fields are refused; a missing field takes its schema default,
//!   or is an error if it has none;
//! - a union with one non-null branch (`["null", T]`) takes `null` or a bare `T`; any other union
//!   takes `{"<branch name>": value}` (Avro's JSON encoding: the record's short or full name, or
//!   the primitive type's name), which the bare form also accepts;
//! - enums are their symbol; `int`/`long` are JSON integers in range; `bytes`/`fixed` are strings
//!   of code points 0–255 (Avro's JSON encoding);
//! - `date` is days since 1970-01-01 or `"YYYY-MM-DD"`; `timestamp-millis`/`-micros` are
//!   milliseconds/microseconds since the epoch or an RFC 3339 string with an offset
//!   (`2025-07-01T08:30:00+07:00`); `uuid` is the 36-character hyphenated form;
//! - `lienthong.format` (unit code, 12-digit personal id, SHA-256 hex) and `lienthong.range` are
//!   checked on the field's value (through unions and array items).
//!
//! Text is NFC-normalised before any check ([`Json::normalize`]). The walk reads the body's own
//! bytes ([`crate::json`]), so a valid event's strings are not copied before they are encoded.

use std::collections::HashMap;
use std::fmt::Write as _;

use apache_avro::Schema;
use apache_avro::schema::{Name, RecordSchema, UnionSchema};
use lienthong_contract::catalog::{FORMAT_ATTR, FieldFormat, RANGE_ATTR};
use lienthong_contract::codec::write_header;
use lienthong_contract::write::{write_bytes, write_long};
use serde::Serialize;

use crate::idem::EventKey;
use crate::json::{Json, get_field};

/// One thing wrong with an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Index of the event in a batch (absent for a single event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// JSON path of the value, e.g. `$.event.CaseSubmitted.home_unit` (`$[3]…` in a batch).
    pub path: String,
    /// What is wrong with it.
    pub problem: String,
}

/// A valid event, encoded.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The Kafka key (the catalog's key field).
    pub key: String,
    /// The envelope's event id.
    pub event_id: String,
    /// The same id as the idempotency index keys it.
    pub event_key: EventKey,
    /// The envelope's producer unit.
    pub producer_unit: String,
    /// The record value: Confluent header + Avro body.
    pub value: Vec<u8>,
}

/// The checker and encoder of one topic's schema.
#[derive(Debug)]
pub struct TopicEncoder {
    schema_id: u32,
    schema: Schema,
    names: HashMap<String, Schema>,
    /// Each record field's default, by (record full name, field name), as the walk reads JSON.
    defaults: HashMap<(String, String), Json<'static>>,
    key_field: Vec<String>,
}

#[derive(Clone, Copy, Default)]
struct Attrs {
    format: Option<FieldFormat>,
    range: Option<(i64, i64)>,
}

#[derive(Clone, Copy)]
enum Seg<'a> {
    Field(&'a str),
    Index(usize),
    Key(&'a str),
}

struct Walk<'a> {
    defaults: &'a HashMap<(String, String), Json<'static>>,
    out: Vec<u8>,
    problems: Vec<Problem>,
    max_problems: usize,
    path: Vec<Seg<'a>>,
    prefix: Option<usize>,
    names: &'a HashMap<String, Schema>,
}

fn type_name(schema: &Schema) -> String {
    match schema {
        Schema::Null => "null".into(),
        Schema::Boolean => "boolean".into(),
        Schema::Int | Schema::Date | Schema::TimeMillis => "int".into(),
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => "long".into(),
        Schema::Float => "float".into(),
        Schema::Double => "double".into(),
        Schema::Bytes | Schema::BigDecimal => "bytes".into(),
        Schema::String | Schema::Uuid => "string".into(),
        Schema::Array(_) => "array".into(),
        Schema::Map(_) => "map".into(),
        Schema::Union(_) => "union".into(),
        Schema::Record(r) => r.name.fullname(None),
        Schema::Enum(e) => e.name.fullname(None),
        Schema::Fixed(f) => f.name.fullname(None),
        Schema::Decimal(_) => "decimal".into(),
        Schema::Duration => "fixed".into(),
        Schema::Ref { name } => name.fullname(None),
    }
}

/// Does `tag` name this union branch (full name, short name, or primitive type name)?
fn branch_named(schema: &Schema, tag: &str) -> bool {
    // `namespace.name`, compared without building it.
    let full = |n: &Name| match &n.namespace {
        Some(ns) => tag
            .strip_prefix(ns.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|rest| rest == n.name),
        None => false,
    };
    let short = |n: &Name| n.name == tag || full(n);
    match schema {
        Schema::Record(r) => short(&r.name),
        Schema::Enum(e) => short(&e.name),
        Schema::Fixed(f) => short(&f.name),
        Schema::Ref { name } => short(name),
        other => type_name(other) == tag,
    }
}

fn field_attrs(field: &apache_avro::schema::RecordField) -> Attrs {
    let format = field
        .custom_attributes
        .get(FORMAT_ATTR)
        .and_then(serde_json::Value::as_str)
        .and_then(FieldFormat::parse);
    let range = field
        .custom_attributes
        .get(RANGE_ATTR)
        .and_then(serde_json::Value::as_array)
        .and_then(|a| Some((a.first()?.as_i64()?, a.get(1)?.as_i64()?)));
    Attrs { format, range }
}

impl TopicEncoder {
    /// The encoder of a topic's value `schema`, which the registry knows as `schema_id`; the
    /// Kafka key is the string at `key_field`.
    pub fn new(schema_id: u32, schema: &Schema, key_field: &[String]) -> Result<Self, String> {
        let resolved = apache_avro::schema::ResolvedSchema::try_from(schema)
            .map_err(|e| format!("cannot resolve the schema's named types: {e}"))?;
        let names: HashMap<String, Schema> = resolved
            .get_names()
            .iter()
            .map(|(n, s)| (n.fullname(None), (*s).clone()))
            .collect();
        // Every named record is among the names, so their fields cover every default.
        let mut defaults = HashMap::new();
        for (name, s) in &names {
            if let Schema::Record(r) = s {
                for f in &r.fields {
                    if let Some(d) = &f.default {
                        defaults.insert(
                            (name.clone(), f.name.clone()),
                            Json::from_value(d).into_owned(),
                        );
                    }
                }
            }
        }
        Ok(TopicEncoder {
            schema_id,
            schema: schema.clone(),
            names,
            defaults,
            key_field: key_field.to_vec(),
        })
    }

    /// The registry id written in each record's header.
    pub fn schema_id(&self) -> u32 {
        self.schema_id
    }

    /// NFC-normalise `json`, check it against the schema and encode it. `index` is the
    /// event's place in a batch; at most `max_problems` problems are reported.
    pub fn encode(
        &self,
        json: &mut Json<'_>,
        index: Option<usize>,
        max_problems: usize,
    ) -> Result<Encoded, Vec<Problem>> {
        json.normalize();
        let json = &*json;
        let mut walk = Walk {
            defaults: &self.defaults,
            out: Vec::with_capacity(512),
            problems: Vec::new(),
            max_problems: max_problems.max(1),
            path: Vec::with_capacity(8),
            prefix: index,
            names: &self.names,
        };
        write_header(self.schema_id, &mut walk.out);
        walk.value(&self.schema, json, Attrs::default(), false);
        if !walk.problems.is_empty() {
            return Err(walk.problems);
        }
        let text_at = |path: &[&str]| -> Option<String> {
            let mut v = json;
            for p in path {
                v = v.get(p)?;
            }
            v.as_str().map(str::to_string)
        };
        let key_path: Vec<&str> = self.key_field.iter().map(String::as_str).collect();
        let problem = |path: &str, problem: &str| {
            vec![Problem {
                index,
                path: format!("{}.{path}", root(index)),
                problem: problem.to_string(),
            }]
        };
        let key = text_at(&key_path).unwrap_or_default();
        if key.is_empty() {
            return Err(problem(
                &self.key_field.join("."),
                "the Kafka key (the catalog's key field) must not be empty",
            ));
        }
        let event_id = text_at(&["envelope", "event_id"])
            .ok_or_else(|| problem("envelope.event_id", "missing"))?;
        // The schema's `uuid` type checked this already; a schema without it is refused here
        // rather than by the index.
        let event_key = EventKey::parse(&event_id).ok_or_else(|| {
            problem(
                "envelope.event_id",
                "is not a UUID (8-4-4-4-12 hexadecimal digits)",
            )
        })?;
        let producer_unit = text_at(&["envelope", "producer_unit"])
            .ok_or_else(|| problem("envelope.producer_unit", "missing"))?;
        Ok(Encoded {
            key,
            event_id,
            event_key,
            producer_unit,
            value: walk.out,
        })
    }
}

fn root(index: Option<usize>) -> String {
    match index {
        Some(i) => format!("$[{i}]"),
        None => "$".into(),
    }
}

/// [`Json::kind`], telling integers from other numbers.
fn describe(json: &Json<'_>) -> &'static str {
    match json {
        Json::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        other => other.kind(),
    }
}

impl<'a> Walk<'a> {
    fn full(&self) -> bool {
        self.problems.len() >= self.max_problems
    }

    fn problem(&mut self, problem: impl Into<String>) {
        if self.full() {
            return;
        }
        let mut path = root(self.prefix);
        for seg in &self.path {
            match seg {
                Seg::Field(f) => {
                    let _ = write!(path, ".{f}");
                }
                Seg::Index(i) => {
                    let _ = write!(path, "[{i}]");
                }
                Seg::Key(k) => {
                    let _ = write!(path, "[{}]", serde_json::Value::String((*k).to_string()));
                }
            }
        }
        self.problems.push(Problem {
            index: self.prefix,
            path,
            problem: problem.into(),
        });
    }

    fn expected(&mut self, what: &str, json: &Json<'_>) {
        self.problem(format!("expected {what}, got {}", describe(json)));
    }

    /// Check `json` against `schema` and append its encoding. `default` is set while encoding
    /// a schema default (unions then take their first branch, as Avro defines).
    fn value(&mut self, schema: &'a Schema, json: &'a Json<'a>, attrs: Attrs, default: bool) {
        if self.full() {
            return;
        }
        match schema {
            Schema::Null => {
                if !json.is_null() {
                    self.expected("null", json);
                }
            }
            Schema::Boolean => match json {
                Json::Bool(b) => self.out.push(u8::from(*b)),
                _ => self.expected("a boolean", json),
            },
            Schema::Int | Schema::TimeMillis => self.int(
                json,
                attrs,
                i32::MIN.into(),
                i32::MAX.into(),
                "an int (32-bit integer)",
            ),
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => {
                self.int(json, attrs, i64::MIN, i64::MAX, "a long (64-bit integer)")
            }
            Schema::Date => match json {
                Json::String(s) => match parse_date(s) {
                    Some(days) => write_long(days, &mut self.out),
                    None => self.problem(format!(
                        "{s:?} is not a date: send \"YYYY-MM-DD\" or days since 1970-01-01"
                    )),
                },
                _ => self.int(
                    json,
                    attrs,
                    i32::MIN.into(),
                    i32::MAX.into(),
                    "a date (\"YYYY-MM-DD\" or days since 1970-01-01)",
                ),
            },
            Schema::TimestampMillis | Schema::TimestampMicros => {
                let micros = matches!(schema, Schema::TimestampMicros);
                match json {
                    Json::String(s) => match parse_rfc3339(s) {
                        Some((secs, nanos)) => {
                            let (per_sec, unit) = if micros { (1_000_000i64, 1_000u32) } else { (1_000, 1_000_000) };
                            if nanos % unit != 0 {
                                self.problem(format!("{s:?} has more precision than the field holds ({})", if micros { "microseconds" } else { "milliseconds" }));
                            } else {
                                match secs.checked_mul(per_sec).and_then(|v| v.checked_add(i64::from(nanos / unit))) {
                                    Some(v) => write_long(v, &mut self.out),
                                    None => self.problem(format!("{s:?} is out of range")),
                                }
                            }
                        }
                        None => self.problem(format!("{s:?} is not an RFC 3339 timestamp with an offset, e.g. 2025-07-01T08:30:00+07:00")),
                    },
                    _ => self.int(json, attrs, i64::MIN, i64::MAX, if micros { "a timestamp (RFC 3339 string or microseconds since the epoch)" } else { "a timestamp (RFC 3339 string or milliseconds since the epoch)" }),
                }
            }
            Schema::Float | Schema::Double => match json.as_f64() {
                Some(f) if json.is_number() => {
                    if matches!(schema, Schema::Float) {
                        if f.is_finite() && (f as f32).is_infinite() {
                            self.problem(format!("{f} is out of range for a float"));
                        } else {
                            self.out.extend_from_slice(&(f as f32).to_le_bytes());
                        }
                    } else {
                        self.out.extend_from_slice(&f.to_le_bytes());
                    }
                }
                _ => self.expected("a number", json),
            },
            Schema::Bytes => match json.as_str().and_then(latin1) {
                Some(b) => write_bytes(&b, &mut self.out),
                None => self.expected("bytes as a string of code points 0-255", json),
            },
            Schema::Fixed(f) => match json.as_str().and_then(latin1) {
                Some(b) if b.len() == f.size => self.out.extend_from_slice(&b),
                Some(b) => self.problem(format!("expected {} bytes, got {}", f.size, b.len())),
                None => self.expected("fixed bytes as a string of code points 0-255", json),
            },
            Schema::String => match json {
                Json::String(s) => {
                    self.format(s, attrs);
                    write_bytes(s.as_bytes(), &mut self.out);
                }
                _ => self.expected("a string", json),
            },
            Schema::Uuid => match json {
                Json::String(s) if is_uuid(s) => write_bytes(s.as_bytes(), &mut self.out),
                Json::String(s) => self.problem(format!(
                    "{s:?} is not a UUID (8-4-4-4-12 hexadecimal digits)"
                )),
                _ => self.expected("a UUID string", json),
            },
            Schema::Enum(e) => match json {
                Json::String(s) => match e.symbols.iter().position(|x| x == s) {
                    Some(i) => write_long(i as i64, &mut self.out),
                    None => self.problem(format!("{s:?} is not one of {}", e.symbols.join(", "))),
                },
                _ => self.expected(&format!("one of {}", e.symbols.join(", ")), json),
            },
            Schema::Array(a) => match json {
                Json::Array(items) => {
                    if !items.is_empty() {
                        write_long(items.len() as i64, &mut self.out);
                        for (i, item) in items.iter().enumerate() {
                            self.path.push(Seg::Index(i));
                            self.value(&a.items, item, attrs, default);
                            self.path.pop();
                        }
                    }
                    self.out.push(0);
                }
                _ => self.expected("an array", json),
            },
            Schema::Map(m) => match json {
                Json::Object(entries) => {
                    if !entries.is_empty() {
                        write_long(entries.len() as i64, &mut self.out);
                        for (k, v) in entries {
                            write_bytes(k.as_bytes(), &mut self.out);
                            self.path.push(Seg::Key(k));
                            self.value(&m.types, v, Attrs::default(), default);
                            self.path.pop();
                        }
                    }
                    self.out.push(0);
                }
                _ => self.expected("an object (a map)", json),
            },
            Schema::Union(u) => self.union(u, json, attrs, default),
            Schema::Record(r) => self.record(r, json, default),
            Schema::Ref { name } => match self.names.get(&name.fullname(None)) {
                Some(s) => self.value(s, json, attrs, default),
                None => self.problem(format!(
                    "the schema refers to unknown type {}",
                    name.fullname(None)
                )),
            },
            Schema::Decimal(_) | Schema::BigDecimal | Schema::Duration => {
                self.problem("decimal and duration fields are not supported by the gateway")
            }
        }
    }

    fn int(&mut self, json: &Json<'_>, attrs: Attrs, min: i64, max: i64, what: &str) {
        match json.as_i64() {
            Some(v) if v >= min && v <= max => {
                if let Some((lo, hi)) = attrs.range
                    && (v < lo || v > hi)
                {
                    self.problem(format!("{v} is out of the range [{lo}, {hi}]"));
                    return;
                }
                write_long(v, &mut self.out);
            }
            Some(v) => self.problem(format!("{v} does not fit {what}")),
            None if json.is_number() => self.problem(format!("{json} is not {what}")),
            None => self.expected(what, json),
        }
    }

    fn format(&mut self, s: &str, attrs: Attrs) {
        if let Some(f) = attrs.format
            && !f.accepts(s)
        {
            self.problem(format!("{s:?} is not {}", f.describe()));
        }
    }

    fn union(&mut self, u: &'a UnionSchema, json: &'a Json<'a>, attrs: Attrs, default: bool) {
        let branches = u.variants();
        if default {
            if let Some(first) = branches.first() {
                write_long(0, &mut self.out);
                self.value(first, json, attrs, true);
            }
            return;
        }
        if json.is_null()
            && let Some(i) = branches.iter().position(|b| matches!(b, Schema::Null))
        {
            write_long(i as i64, &mut self.out);
            return;
        }
        // The Avro JSON form: {"<branch>": value}.
        if let Json::Object(obj) = json
            && let [(tag, inner)] = &obj[..]
            && let Some(i) = branches.iter().position(|b| branch_named(b, tag))
        {
            write_long(i as i64, &mut self.out);
            self.path.push(Seg::Field(tag));
            self.value(&branches[i], inner, attrs, false);
            self.path.pop();
            return;
        }
        let mut non_null = (0..branches.len()).filter(|&i| !matches!(branches[i], Schema::Null));
        if let (Some(only), None) = (non_null.next(), non_null.next()) {
            write_long(only as i64, &mut self.out);
            self.value(&branches[only], json, attrs, false);
            return;
        }
        let names: Vec<String> = branches
            .iter()
            .map(|b| match b {
                Schema::Record(r) => r.name.name.clone(),
                Schema::Ref { name } => name.name.clone(),
                other => type_name(other),
            })
            .collect();
        self.problem(format!(
            "expected one of the union's branches as {{\"<branch>\": value}}, with <branch> one of {}; got {}",
            names.join(", "),
            describe(json)
        ));
    }

    fn record(&mut self, r: &'a RecordSchema, json: &'a Json<'a>, default: bool) {
        let Json::Object(obj) = json else {
            self.expected(&format!("an object ({})", r.name.name), json);
            return;
        };
        if !default {
            for (key, _) in obj {
                if !r.lookup.contains_key(key.as_ref()) {
                    self.path.push(Seg::Field(key));
                    self.problem(format!(
                        "unknown field; {} has {}",
                        r.name.name,
                        r.fields
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                    self.path.pop();
                }
            }
        }
        for field in &r.fields {
            let attrs = field_attrs(field);
            self.path.push(Seg::Field(&field.name));
            match (get_field(obj, &field.name), &field.default) {
                (Some(v), _) => self.value(&field.schema, v, attrs, default),
                (None, Some(_)) => {
                    let defaults = self.defaults;
                    match defaults.get(&(r.name.fullname(None), field.name.clone())) {
                        Some(d) => self.value(&field.schema, d, Attrs::default(), true),
                        None => self.problem("missing, and its schema default was not found"),
                    }
                }
                (None, None) => self.problem("required field is missing"),
            }
            self.path.pop();
        }
    }
}

/// A string of code points 0–255 as bytes (Avro's JSON encoding of bytes).
fn latin1(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Dates and timestamps are read by the contract, the same code that writes them for `tail`.
pub use lienthong_contract::json::{parse_date, parse_rfc3339};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use lienthong_contract::{Catalog, Codec, events::CaseEvent, repo_schemas_dir, samples};

    fn encoder(topic: &str) -> (TopicEncoder, Codec) {
        let catalog = Catalog::load(repo_schemas_dir()).unwrap();
        let spec = catalog.topic(topic).unwrap();
        let id = catalog.local_id(topic).unwrap();
        (
            TopicEncoder::new(id, &spec.schema, &spec.key_field).unwrap(),
            Codec::from_catalog(&catalog).unwrap(),
        )
    }

    #[test]
    fn sample_json_encodes_to_the_same_bytes_as_the_typed_codec() {
        let (enc, codec) = encoder("hcm.case.events");
        let id = enc.schema_id();
        for event in samples::case_lifecycle() {
            let value = serde_json::to_value(&event).unwrap();
            let encoded = enc.encode(&mut Json::from_value(&value), None, 10).unwrap();
            assert_eq!(encoded.value, codec.encode_to_vec(id, &event).unwrap());
            let (_, back): (u32, CaseEvent) = codec.decode(&encoded.value).unwrap();
            assert_eq!(back, event);
            assert_eq!(encoded.key, event.envelope.aggregate_id);
        }
    }

    #[test]
    fn a_union_branch_may_be_named_by_its_full_name() {
        let (enc, _) = encoder("hcm.case.events");
        let short = serde_json::to_value(samples::typical_case_submitted()).unwrap();
        let mut full = short.clone();
        let body = full["event"]
            .as_object_mut()
            .unwrap()
            .remove("CaseSubmitted")
            .unwrap();
        full["event"]["vn.hcm.lienthong.case.CaseSubmitted"] = body;
        let mut wrong = full.clone();
        wrong["event"] = serde_json::json!({"vn.hcm.lienthong.CaseSubmitted": {}});
        let encode = |v: &serde_json::Value| enc.encode(&mut Json::from_value(v), None, 10);
        assert_eq!(encode(&full).unwrap().value, encode(&short).unwrap().value);
        assert!(encode(&wrong).is_err());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let (enc, _) = encoder("hcm.case.events");
        let mut json = serde_json::to_value(samples::typical_case_submitted()).unwrap();
        json["envelope"]["event_id"] = "not-a-uuid".into();
        json["event"]["CaseSubmitted"]["home_unit"] = "phuong 1".into();
        json["event"]["CaseSubmitted"]["applicant_id"] = "12345".into();
        json["event"]["CaseSubmitted"]["channel"] = "FAX".into();
        json["event"]["CaseSubmitted"]["extra"] = 1.into();
        json["event"]["CaseSubmitted"]
            .as_object_mut()
            .unwrap()
            .remove("procedure_code");
        json["event"]["CaseSubmitted"]["documents"][0]["size_bytes"] = (-1).into();
        let problems = enc
            .encode(&mut Json::from_value(&json), Some(3), 50)
            .unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "$[3].envelope.event_id",
            "$[3].event.CaseSubmitted.home_unit",
            "$[3].event.CaseSubmitted.applicant_id",
            "$[3].event.CaseSubmitted.channel",
            "$[3].event.CaseSubmitted.extra",
            "$[3].event.CaseSubmitted.procedure_code",
            "$[3].event.CaseSubmitted.documents[0].size_bytes",
        ] {
            assert!(paths.contains(&want), "{want} not in {problems:#?}");
        }
        assert!(problems.iter().all(|p| p.index == Some(3)));
        let limited = enc
            .encode(&mut Json::from_value(&json), None, 2)
            .unwrap_err();
        assert_eq!(limited.len(), 2);
    }

    #[test]
    fn dates_and_timestamps_take_strings_or_numbers() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2025-07-01"), Some(20_270));
        assert_eq!(parse_date("2024-02-29"), Some(19_782));
        assert_eq!(parse_date("2025-02-29"), None);
        assert_eq!(parse_date("2025-13-01"), None);
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_rfc3339("2025-07-01T08:30:00.123+07:00"),
            Some((20_270 * 86_400 + 3600 + 1800, 123_000_000))
        );
        for bad in [
            "2025-07-01",
            "2025-07-01T25:00:00Z",
            "2025-07-01T08:30:00",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        let (enc, codec) = encoder("hcm.case.events");
        let event = samples::typical_case_submitted();
        let mut json = serde_json::to_value(&event).unwrap();
        let ms = event.envelope.occurred_at;
        let secs = ms.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        json["envelope"]["occurred_at"] = format!("{}T00:00:00Z", civil(days)).into();
        let encoded = enc.encode(&mut Json::from_value(&json), None, 10).unwrap();
        let (_, back): (u32, CaseEvent) = codec.decode(&encoded.value).unwrap();
        assert_eq!(back.envelope.occurred_at, days * 86_400_000);
    }

    fn civil(days: i64) -> String {
        let (y, m, d) = lienthong_contract::json::civil_from_days(days);
        format!("{y:04}-{m:02}-{d:02}")
    }

    #[test]
    fn hostile_values_are_problems_not_panics() {
        let (enc, _) = encoder("hcm.feedback.events");
        for body in [
            "null",
            "[]",
            "1e999999",
            "{\"envelope\": 18446744073709551616}",
            "{\"envelope\": {\"aggregate_version\": 1e300}}",
            "{\"event\": {\"FeedbackResolved\": {\"resolution\": \"x\", \"satisfaction\": 9}}}",
            "{\"event\": {\"Nope\": {}}}",
            "{\"event\": {\"FeedbackResolved\": {}, \"FeedbackAssigned\": {}}}",
        ] {
            let Ok(mut json) = Json::parse(body.as_bytes()) else {
                continue;
            };
            assert!(enc.encode(&mut json, None, 50).is_err(), "{body}");
        }
    }
}
