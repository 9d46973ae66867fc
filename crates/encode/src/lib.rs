//! JSON → Avro: the encoder that the HTTP gateway, `lienthong publish` and the demo's portal
//! share. An event's JSON is checked against its topic's schema in one generic walk.
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

mod direct;
pub mod json;
mod key;
mod plan;
mod walk;

use std::collections::HashMap;

use apache_avro::Schema;
use lienthong_contract::codec::write_header;
use serde::Serialize;

pub use json::Json;
pub use key::EventKey;
use plan::*;
use walk::*;

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

#[cfg(test)]
mod tests;
