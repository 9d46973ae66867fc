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
use crate::json::Json;

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

mod direct;

/// The checker and encoder of one topic's schema.
#[derive(Debug)]
pub struct TopicEncoder {
    schema_id: u32,
    plan: Plan,
    key_field: Vec<String>,
    /// Whether [`TopicEncoder::encode_direct`] can serve this schema: its key, event id and
    /// producer unit are string fields reached through records alone, each record on the way
    /// named once in the schema (see [`Plan::mark_capture`]).
    direct: bool,
}

/// Fields whose text an [`Encoded`] keeps, as [`FieldPlan::capture`] flags.
const CAPTURE_KEY: u8 = 1;
const CAPTURE_EVENT_ID: u8 = 2;
const CAPTURE_PRODUCER: u8 = 4;

#[derive(Debug, Clone, Copy, Default)]
struct Attrs {
    format: Option<FieldFormat>,
    range: Option<(i64, i64)>,
}

/// A topic's schema compiled once for the walk: every named type resolved, and every field's
/// checks (`lienthong.format`, `lienthong.range`) and default found, so that checking an event
/// looks up no name, attribute or default.
#[derive(Debug)]
struct Plan {
    root: Node,
    /// Every record type, by the index a [`Node::Record`] names (records may refer to
    /// themselves, so they are referred to, not nested).
    records: Vec<RecordPlan>,
}

/// What the walk expects at one place of the schema.
#[derive(Debug, Clone)]
enum Node {
    Null,
    Boolean,
    /// `int`, `long` and the time types stored as them: a JSON integer within the bounds.
    Integer {
        min: i64,
        max: i64,
        what: &'static str,
    },
    Date,
    Timestamp {
        micros: bool,
    },
    Float,
    Double,
    Bytes,
    Fixed(usize),
    String,
    Uuid,
    Enum(Box<EnumPlan>),
    Array(Box<Node>),
    Map(Box<Node>),
    Union(Box<UnionPlan>),
    Record(usize),
    /// Decimal and duration, which the gateway does not take.
    Unsupported,
    /// A reference to a type the schema does not define (named here).
    Unknown(String),
}

#[derive(Debug, Clone)]
struct EnumPlan {
    symbols: Vec<String>,
    /// The symbols as messages list them.
    listed: String,
}

#[derive(Debug, Clone)]
struct UnionPlan {
    branches: Vec<Branch>,
    /// The `null` branch, if any.
    null: Option<usize>,
    /// The branch a bare value takes: the only one that is not `null`, if there is one.
    only_non_null: Option<usize>,
    /// The branches as the message about a value that fits none lists them.
    listed: String,
}

#[derive(Debug, Clone)]
struct Branch {
    node: Node,
    /// The tags that select it in `{"<branch>": value}`: a named type's short name and full
    /// name, or another type's name.
    short: String,
    full: Option<String>,
}

#[derive(Debug)]
struct RecordPlan {
    /// The short name, as messages say it.
    name: String,
    fields: Vec<FieldPlan>,
    /// The field names, as the message about an unknown field lists them.
    listed: String,
}

#[derive(Debug)]
struct FieldPlan {
    name: String,
    node: Node,
    attrs: Attrs,
    /// The schema default, as the walk reads JSON.
    default: Option<Json<'static>>,
    /// The same default, encoded (for the direct path), if it encodes.
    default_bytes: Option<Vec<u8>>,
    /// Which of the texts an [`Encoded`] keeps this field holds (`CAPTURE_*` flags).
    capture: u8,
}

impl Plan {
    /// How many times each record is named: by the root, and by every field (through arrays,
    /// maps and unions).
    fn record_references(&self) -> Vec<usize> {
        fn count(node: &Node, counts: &mut [usize]) {
            match node {
                Node::Record(id) => {
                    if let Some(c) = counts.get_mut(*id) {
                        *c += 1;
                    }
                }
                Node::Array(n) | Node::Map(n) => count(n, counts),
                Node::Union(u) => u.branches.iter().for_each(|b| count(&b.node, counts)),
                _ => {}
            }
        }
        let mut counts = vec![0; self.records.len()];
        count(&self.root, &mut counts);
        for r in &self.records {
            for f in &r.fields {
                count(&f.node, &mut counts);
            }
        }
        counts
    }

    /// Mark the string field at `path` (field names from the root record) as holding the text
    /// `flag` stands for; false if no such field is reached through records alone, or if a
    /// record on the way is named more than once in the schema (`references`): the direct path
    /// keeps a field's text by the field's record type, so the type must stand at that one
    /// place only, or a copy of it elsewhere in the event could stand in for it.
    fn mark_capture(&mut self, path: &[String], flag: u8, references: &[usize]) -> bool {
        let mut node = &self.root;
        let mut at = None;
        for name in path {
            let Node::Record(id) = node else {
                return false;
            };
            if references.get(*id) != Some(&1) {
                return false;
            }
            let Some(i) = self.records[*id]
                .fields
                .iter()
                .position(|f| f.name == *name)
            else {
                return false;
            };
            at = Some((*id, i));
            node = &self.records[*id].fields[i].node;
        }
        match (at, node) {
            (Some((id, i)), Node::String | Node::Uuid) => {
                self.records[id].fields[i].capture |= flag;
                true
            }
            _ => false,
        }
    }
}

#[derive(Clone, Copy)]
enum Seg<'a> {
    Field(&'a str),
    Index(usize),
    Key(&'a str),
}

struct Walk<'a> {
    records: &'a [RecordPlan],
    out: Vec<u8>,
    problems: Vec<Problem>,
    max_problems: usize,
    path: Vec<Seg<'a>>,
    prefix: Option<usize>,
    /// Where each field of the records being walked found its value in the JSON object (a
    /// stack: each record pushes its fields' and pops them when done).
    slots: Vec<Option<usize>>,
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

/// Compiles a schema into a [`Plan`].
struct Compiler<'s> {
    names: HashMap<String, &'s Schema>,
    records: Vec<RecordPlan>,
    /// Record full name → index in `records`, assigned before its fields are compiled, so a
    /// record that refers to itself finds its own index.
    record_ids: HashMap<String, usize>,
}

impl<'s> Compiler<'s> {
    fn node(&mut self, schema: &'s Schema) -> Node {
        match schema {
            Schema::Null => Node::Null,
            Schema::Boolean => Node::Boolean,
            Schema::Int | Schema::TimeMillis => Node::Integer {
                min: i32::MIN.into(),
                max: i32::MAX.into(),
                what: "an int (32-bit integer)",
            },
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => Node::Integer {
                min: i64::MIN,
                max: i64::MAX,
                what: "a long (64-bit integer)",
            },
            Schema::Date => Node::Date,
            Schema::TimestampMillis => Node::Timestamp { micros: false },
            Schema::TimestampMicros => Node::Timestamp { micros: true },
            Schema::Float => Node::Float,
            Schema::Double => Node::Double,
            Schema::Bytes => Node::Bytes,
            Schema::Fixed(f) => Node::Fixed(f.size),
            Schema::String => Node::String,
            Schema::Uuid => Node::Uuid,
            Schema::Enum(e) => Node::Enum(Box::new(EnumPlan {
                symbols: e.symbols.clone(),
                listed: e.symbols.join(", "),
            })),
            Schema::Array(a) => Node::Array(Box::new(self.node(&a.items))),
            Schema::Map(m) => Node::Map(Box::new(self.node(&m.types))),
            Schema::Union(u) => self.union(u),
            Schema::Record(r) => self.record(r),
            Schema::Ref { name } => {
                let full = name.fullname(None);
                if let Some(&id) = self.record_ids.get(&full) {
                    return Node::Record(id);
                }
                match self.names.get(&full) {
                    Some(named) => self.node(named),
                    None => Node::Unknown(full),
                }
            }
            Schema::Decimal(_) | Schema::BigDecimal | Schema::Duration => Node::Unsupported,
        }
    }

    fn union(&mut self, u: &'s UnionSchema) -> Node {
        let variants = u.variants();
        let names = |n: &Name| (n.name.clone(), Some(n.fullname(None)));
        let branches: Vec<Branch> = variants
            .iter()
            .map(|b| {
                let (short, full) = match b {
                    Schema::Record(r) => names(&r.name),
                    Schema::Enum(e) => names(&e.name),
                    Schema::Fixed(f) => names(&f.name),
                    Schema::Ref { name } => names(name),
                    other => (type_name(other), None),
                };
                Branch {
                    node: self.node(b),
                    short,
                    full,
                }
            })
            .collect();
        let null = variants.iter().position(|b| matches!(b, Schema::Null));
        let mut non_null = (0..variants.len()).filter(|&i| !matches!(variants[i], Schema::Null));
        let only_non_null = match (non_null.next(), non_null.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        };
        let listed = variants
            .iter()
            .map(|b| match b {
                Schema::Record(r) => r.name.name.clone(),
                Schema::Ref { name } => name.name.clone(),
                other => type_name(other),
            })
            .collect::<Vec<_>>()
            .join(", ");
        Node::Union(Box::new(UnionPlan {
            branches,
            null,
            only_non_null,
            listed,
        }))
    }

    fn record(&mut self, r: &'s RecordSchema) -> Node {
        let full = r.name.fullname(None);
        if let Some(&id) = self.record_ids.get(&full) {
            return Node::Record(id);
        }
        let id = self.records.len();
        self.record_ids.insert(full, id);
        self.records.push(RecordPlan {
            name: r.name.name.clone(),
            fields: Vec::new(),
            listed: r
                .fields
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
        let fields = r
            .fields
            .iter()
            .map(|f| FieldPlan {
                name: f.name.clone(),
                node: self.node(&f.schema),
                attrs: field_attrs(f),
                default: f.default.as_ref().map(|d| Json::from_value(d).into_owned()),
                default_bytes: None,
                capture: 0,
            })
            .collect();
        self.records[id].fields = fields;
        Node::Record(id)
    }
}

impl TopicEncoder {
    /// The encoder of a topic's value `schema`, which the registry knows as `schema_id`; the
    /// Kafka key is the string at `key_field`.
    pub fn new(schema_id: u32, schema: &Schema, key_field: &[String]) -> Result<Self, String> {
        let resolved = apache_avro::schema::ResolvedSchema::try_from(schema)
            .map_err(|e| format!("cannot resolve the schema's named types: {e}"))?;
        let mut compiler = Compiler {
            names: resolved
                .get_names()
                .iter()
                .map(|(n, s)| (n.fullname(None), *s))
                .collect(),
            records: Vec::new(),
            record_ids: HashMap::new(),
        };
        let root = compiler.node(schema);
        let mut plan = Plan {
            root,
            records: compiler.records,
        };
        // Each default encoded once, by the walk itself (as it encodes a missing field).
        let encoded_defaults: Vec<Vec<Option<Vec<u8>>>> = plan
            .records
            .iter()
            .map(|r| {
                r.fields
                    .iter()
                    .map(|f| {
                        let d = f.default.as_ref()?;
                        let mut walk = Walk::new(&plan.records, None, 1, Vec::new());
                        walk.value(&f.node, d, Attrs::default(), true);
                        walk.problems.is_empty().then_some(walk.out)
                    })
                    .collect()
            })
            .collect();
        for (r, defaults) in plan.records.iter_mut().zip(encoded_defaults) {
            for (f, d) in r.fields.iter_mut().zip(defaults) {
                f.default_bytes = d;
            }
        }
        let envelope = |field: &str| ["envelope".to_string(), field.to_string()];
        let references = plan.record_references();
        let direct = [
            (key_field.to_vec(), CAPTURE_KEY),
            (envelope("event_id").to_vec(), CAPTURE_EVENT_ID),
            (envelope("producer_unit").to_vec(), CAPTURE_PRODUCER),
        ]
        .into_iter()
        .all(|(path, flag)| plan.mark_capture(&path, flag, &references));
        Ok(TopicEncoder {
            schema_id,
            plan,
            key_field: key_field.to_vec(),
            direct,
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
        let mut value = Vec::with_capacity(512);
        write_header(self.schema_id, &mut value);
        self.write(json, index, max_problems, &mut value)?;
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
            value,
        })
    }

    /// Check `json` against the schema and append its Avro body to `out`, or say every
    /// problem (up to `max_problems`).
    fn write(
        &self,
        json: &Json<'_>,
        index: Option<usize>,
        max_problems: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Vec<Problem>> {
        let mut walk = Walk::new(&self.plan.records, index, max_problems, std::mem::take(out));
        walk.value(&self.plan.root, json, Attrs::default(), false);
        *out = walk.out;
        if walk.problems.is_empty() {
            Ok(())
        } else {
            Err(walk.problems)
        }
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
    fn new(
        records: &'a [RecordPlan],
        prefix: Option<usize>,
        max_problems: usize,
        out: Vec<u8>,
    ) -> Self {
        Walk {
            records,
            out,
            problems: Vec::new(),
            max_problems: max_problems.max(1),
            path: Vec::with_capacity(8),
            prefix,
            slots: Vec::with_capacity(32),
        }
    }

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

    /// Check `json` against `node` and append its encoding. `default` is set while encoding
    /// a schema default (unions then take their first branch, as Avro defines).
    fn value(&mut self, node: &'a Node, json: &'a Json<'a>, attrs: Attrs, default: bool) {
        if self.full() {
            return;
        }
        match node {
            Node::Null => {
                if !json.is_null() {
                    self.expected("null", json);
                }
            }
            Node::Boolean => match json {
                Json::Bool(b) => self.out.push(u8::from(*b)),
                _ => self.expected("a boolean", json),
            },
            Node::Integer { min, max, what } => self.int(json, attrs, *min, *max, what),
            Node::Date => match json {
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
            Node::Timestamp { micros } => {
                let micros = *micros;
                match json {
                    Json::String(s) => match parse_rfc3339(s) {
                        Some((secs, nanos)) => match timestamp_in_unit(secs, nanos, micros) {
                            Ok(v) => write_long(v, &mut self.out),
                            Err(TimestampRefusal::TooPrecise) => self.problem(format!("{s:?} has more precision than the field holds ({})", if micros { "microseconds" } else { "milliseconds" })),
                            Err(TimestampRefusal::OutOfRange) => self.problem(format!("{s:?} is out of range")),
                        },
                        None => self.problem(format!("{s:?} is not an RFC 3339 timestamp with an offset, e.g. 2025-07-01T08:30:00+07:00")),
                    },
                    _ => self.int(json, attrs, i64::MIN, i64::MAX, if micros { "a timestamp (RFC 3339 string or microseconds since the epoch)" } else { "a timestamp (RFC 3339 string or milliseconds since the epoch)" }),
                }
            }
            Node::Float | Node::Double => match json.as_f64() {
                Some(f) if json.is_number() => {
                    if matches!(node, Node::Float) {
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
            Node::Bytes => match json.as_str().and_then(latin1) {
                Some(b) => write_bytes(&b, &mut self.out),
                None => self.expected("bytes as a string of code points 0-255", json),
            },
            Node::Fixed(size) => match json.as_str().and_then(latin1) {
                Some(b) if b.len() == *size => self.out.extend_from_slice(&b),
                Some(b) => self.problem(format!("expected {size} bytes, got {}", b.len())),
                None => self.expected("fixed bytes as a string of code points 0-255", json),
            },
            Node::String => match json {
                Json::String(s) => {
                    self.format(s, attrs);
                    write_bytes(s.as_bytes(), &mut self.out);
                }
                _ => self.expected("a string", json),
            },
            Node::Uuid => match json {
                Json::String(s) if is_uuid(s) => write_bytes(s.as_bytes(), &mut self.out),
                Json::String(s) => self.problem(format!(
                    "{s:?} is not a UUID (8-4-4-4-12 hexadecimal digits)"
                )),
                _ => self.expected("a UUID string", json),
            },
            Node::Enum(e) => match json {
                Json::String(s) => match e.symbols.iter().position(|x| x == s) {
                    Some(i) => write_long(i as i64, &mut self.out),
                    None => self.problem(format!("{s:?} is not one of {}", e.listed)),
                },
                _ => self.expected(&format!("one of {}", e.listed), json),
            },
            Node::Array(items_node) => match json {
                Json::Array(items) => {
                    if !items.is_empty() {
                        write_long(items.len() as i64, &mut self.out);
                        for (i, item) in items.iter().enumerate() {
                            self.path.push(Seg::Index(i));
                            self.value(items_node, item, attrs, default);
                            self.path.pop();
                        }
                    }
                    self.out.push(0);
                }
                _ => self.expected("an array", json),
            },
            Node::Map(values) => match json {
                Json::Object(entries) => {
                    if !entries.is_empty() {
                        write_long(entries.len() as i64, &mut self.out);
                        for (k, v) in entries {
                            write_bytes(k.as_bytes(), &mut self.out);
                            self.path.push(Seg::Key(k));
                            self.value(values, v, Attrs::default(), default);
                            self.path.pop();
                        }
                    }
                    self.out.push(0);
                }
                _ => self.expected("an object (a map)", json),
            },
            Node::Union(u) => self.union(u, json, attrs, default),
            Node::Record(id) => self.record(*id, json, default),
            Node::Unknown(name) => {
                self.problem(format!("the schema refers to unknown type {name}"));
            }
            Node::Unsupported => {
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

    fn union(&mut self, u: &'a UnionPlan, json: &'a Json<'a>, attrs: Attrs, default: bool) {
        if default {
            if let Some(first) = u.branches.first() {
                write_long(0, &mut self.out);
                self.value(&first.node, json, attrs, true);
            }
            return;
        }
        if json.is_null()
            && let Some(i) = u.null
        {
            write_long(i as i64, &mut self.out);
            return;
        }
        // The Avro JSON form: {"<branch>": value}.
        if let Json::Object(obj) = json
            && let [(tag, inner)] = &obj[..]
            && let Some(i) = u
                .branches
                .iter()
                .position(|b| b.short == *tag || b.full.as_deref() == Some(tag.as_ref()))
        {
            write_long(i as i64, &mut self.out);
            self.path.push(Seg::Field(tag));
            self.value(&u.branches[i].node, inner, attrs, false);
            self.path.pop();
            return;
        }
        if let Some(only) = u.only_non_null {
            write_long(only as i64, &mut self.out);
            self.value(&u.branches[only].node, json, attrs, false);
            return;
        }
        self.problem(format!(
            "expected one of the union's branches as {{\"<branch>\": value}}, with <branch> one of {}; got {}",
            u.listed,
            describe(json)
        ));
    }

    fn record(&mut self, id: usize, json: &'a Json<'a>, default: bool) {
        let records = self.records;
        let Some(r) = records.get(id) else {
            self.problem("the schema refers to a record it does not define");
            return;
        };
        let Json::Object(obj) = json else {
            self.expected(&format!("an object ({})", r.name), json);
            return;
        };
        // Where each field's value is. Senders usually write the fields in schema order, so
        // the next key is tried first and a scan is the exception.
        let base = self.slots.len();
        let (mut next, mut found) = (0, 0);
        for field in &r.fields {
            let slot = match obj.get(next) {
                Some((k, _)) if *k == field.name => Some(next),
                _ => obj.iter().position(|(k, _)| *k == field.name),
            };
            if let Some(at) = slot {
                next = at + 1;
                found += 1;
            }
            self.slots.push(slot);
        }
        // Keys are unique (the parser refuses a key twice), so a key was not found for a
        // field exactly when some are left over: only then look for which.
        if !default && found < obj.len() {
            for (key, _) in obj {
                if !r.fields.iter().any(|f| *key == f.name) {
                    self.path.push(Seg::Field(key));
                    self.problem(format!("unknown field; {} has {}", r.name, r.listed));
                    self.path.pop();
                }
            }
        }
        for (i, field) in r.fields.iter().enumerate() {
            self.path.push(Seg::Field(&field.name));
            match (self.slots[base + i], &field.default) {
                (Some(at), _) => self.value(&field.node, &obj[at].1, field.attrs, default),
                (None, Some(d)) => self.value(&field.node, d, Attrs::default(), true),
                (None, None) => self.problem("required field is missing"),
            }
            self.path.pop();
        }
        self.slots.truncate(base);
    }
}

/// Why a parsed timestamp does not fit its field.
enum TimestampRefusal {
    /// It has digits below the field's unit (microseconds for a millisecond field).
    TooPrecise,
    /// It is too far from the epoch for 64 bits of the unit.
    OutOfRange,
}

/// A timestamp's seconds and nanoseconds since the epoch in the field's unit (microseconds or
/// milliseconds), refusing rather than truncating: the walk and the direct path both ask here.
fn timestamp_in_unit(secs: i64, nanos: u32, micros: bool) -> Result<i64, TimestampRefusal> {
    let (per_sec, unit) = if micros {
        (1_000_000i64, 1_000u32)
    } else {
        (1_000, 1_000_000)
    };
    if !nanos.is_multiple_of(unit) {
        return Err(TimestampRefusal::TooPrecise);
    }
    secs.checked_mul(per_sec)
        .and_then(|v| v.checked_add(i64::from(nanos / unit)))
        .ok_or(TimestampRefusal::OutOfRange)
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
    fn fields_in_any_order_encode_alike_and_unknown_ones_are_still_found() {
        let (enc, _) = encoder("hcm.case.events");
        let event = serde_json::to_value(samples::typical_case_submitted()).unwrap();
        let in_order = enc.encode(&mut Json::from_value(&event), None, 10).unwrap();
        // Every object's keys reversed: no field is where the schema has it.
        fn reversed(v: &serde_json::Value) -> serde_json::Value {
            match v {
                serde_json::Value::Object(o) => serde_json::Value::Object(
                    o.iter()
                        .rev()
                        .map(|(k, v)| (k.clone(), reversed(v)))
                        .collect(),
                ),
                serde_json::Value::Array(a) => a.iter().map(reversed).collect(),
                other => other.clone(),
            }
        }
        let backwards = reversed(&event);
        assert_ne!(backwards.to_string(), event.to_string());
        let out_of_order = enc
            .encode(&mut Json::from_value(&backwards), None, 10)
            .unwrap();
        assert_eq!(out_of_order.value, in_order.value);
        // An unknown key among fields out of order, and one in order, are both named.
        let mut extra = backwards.clone();
        extra["envelope"]["surplus"] = 1.into();
        let mut extra_in_order = event.clone();
        extra_in_order["event"]["CaseSubmitted"]["surplus"] = 1.into();
        for (json, path) in [
            (extra, "$.envelope.surplus"),
            (extra_in_order, "$.event.CaseSubmitted.surplus"),
        ] {
            let problems = enc
                .encode(&mut Json::from_value(&json), None, 10)
                .unwrap_err();
            assert_eq!(problems.len(), 1, "{problems:#?}");
            assert_eq!(problems[0].path, path);
            assert!(
                problems[0].problem.starts_with("unknown field; "),
                "{problems:#?}"
            );
        }
    }

    #[test]
    fn named_types_used_again_and_records_that_hold_themselves_encode_as_avro_does() {
        use apache_avro::types::Value;
        let schema = Schema::parse_str(
            r#"{"type": "record", "name": "Item", "namespace": "t", "fields": [
                {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
                {"name": "other_kind", "type": "Kind"},
                {"name": "next", "type": ["null", "Item"], "default": null}]}"#,
        )
        .unwrap();
        let enc = TopicEncoder::new(1, &schema, &["kind".into()]).unwrap();
        let json = serde_json::json!({"kind": "A", "other_kind": "B",
            "next": {"Item": {"other_kind": "A", "kind": "B"}}});
        let mut ours = Vec::new();
        enc.write(&Json::from_value(&json), None, 10, &mut ours)
            .unwrap();
        let inner = Value::Record(vec![
            ("kind".into(), Value::Enum(1, "B".into())),
            ("other_kind".into(), Value::Enum(0, "A".into())),
            ("next".into(), Value::Union(0, Box::new(Value::Null))),
        ]);
        let outer = Value::Record(vec![
            ("kind".into(), Value::Enum(0, "A".into())),
            ("other_kind".into(), Value::Enum(1, "B".into())),
            ("next".into(), Value::Union(1, Box::new(inner))),
        ]);
        assert_eq!(ours, apache_avro::to_avro_datum(&schema, outer).unwrap());
        let bad = serde_json::json!({"kind": "A", "other_kind": "C"});
        let problems = enc
            .write(&Json::from_value(&bad), None, 10, &mut Vec::new())
            .unwrap_err();
        assert_eq!(problems[0].path, "$.other_kind");
        assert_eq!(problems[0].problem, "\"C\" is not one of A, B");
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

    #[test]
    fn a_timestamp_finer_than_its_field_or_too_far_out_is_refused_not_cut() {
        assert!(matches!(
            timestamp_in_unit(1, 250_000_000, false),
            Ok(1_250)
        ));
        assert!(matches!(
            timestamp_in_unit(1, 250_001_000, true),
            Ok(1_250_001)
        ));
        assert!(matches!(
            timestamp_in_unit(1, 250_001_000, false),
            Err(TimestampRefusal::TooPrecise)
        ));
        assert!(matches!(
            timestamp_in_unit(1, 1, true),
            Err(TimestampRefusal::TooPrecise)
        ));
        assert!(matches!(
            timestamp_in_unit(i64::MAX / 1000 + 1, 0, false),
            Err(TimestampRefusal::OutOfRange)
        ));
        // Through the walk, with its wording and path.
        let (enc, _) = encoder("hcm.case.events");
        let mut json = serde_json::to_value(samples::typical_case_submitted()).unwrap();
        json["envelope"]["occurred_at"] = "2025-07-01T08:30:00.123456Z".into();
        let problems = enc
            .encode(&mut Json::from_value(&json), None, 10)
            .unwrap_err();
        assert_eq!(problems[0].path, "$.envelope.occurred_at");
        assert!(
            problems[0]
                .problem
                .ends_with("has more precision than the field holds (milliseconds)"),
            "{problems:#?}"
        );
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
