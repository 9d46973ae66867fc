//! The walk: an event's JSON checked against a [`crate::plan::Plan`], every problem recorded
//! with its JSON path, and the Avro binary written in the same pass.

use std::fmt::Write as _;

use lienthong_contract::write::{write_bytes, write_long};

use crate::plan::*;
use crate::*;

#[derive(Clone, Copy)]
pub(crate) enum Seg<'a> {
    Field(&'a str),
    Index(usize),
    Key(&'a str),
}

pub(crate) struct Walk<'a> {
    pub(crate) records: &'a [RecordPlan],
    pub(crate) out: Vec<u8>,
    pub(crate) problems: Vec<Problem>,
    pub(crate) max_problems: usize,
    pub(crate) path: Vec<Seg<'a>>,
    pub(crate) prefix: Option<usize>,
    /// Where each field of the records being walked found its value in the JSON object (a
    /// stack: each record pushes its fields' and pops them when done).
    pub(crate) slots: Vec<Option<usize>>,
}

impl<'a> Walk<'a> {
    pub(crate) fn new(
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

    pub(crate) fn full(&self) -> bool {
        self.problems.len() >= self.max_problems
    }

    pub(crate) fn problem(&mut self, problem: impl Into<String>) {
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

    pub(crate) fn expected(&mut self, what: &str, json: &Json<'_>) {
        self.problem(format!("expected {what}, got {}", describe(json)));
    }

    /// Check `json` against `node` and append its encoding. `default` is set while encoding
    /// a schema default (unions then take their first branch, as Avro defines).
    pub(crate) fn value(
        &mut self,
        node: &'a Node,
        json: &'a Json<'a>,
        attrs: Attrs,
        default: bool,
    ) {
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

    pub(crate) fn int(&mut self, json: &Json<'_>, attrs: Attrs, min: i64, max: i64, what: &str) {
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

    pub(crate) fn format(&mut self, s: &str, attrs: Attrs) {
        if let Some(f) = attrs.format
            && !f.accepts(s)
        {
            self.problem(format!("{s:?} is not {}", f.describe()));
        }
    }

    pub(crate) fn union(
        &mut self,
        u: &'a UnionPlan,
        json: &'a Json<'a>,
        attrs: Attrs,
        default: bool,
    ) {
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

    pub(crate) fn record(&mut self, id: usize, json: &'a Json<'a>, default: bool) {
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
pub(crate) enum TimestampRefusal {
    /// It has digits below the field's unit (microseconds for a millisecond field).
    TooPrecise,
    /// It is too far from the epoch for 64 bits of the unit.
    OutOfRange,
}

/// A timestamp's seconds and nanoseconds since the epoch in the field's unit (microseconds or
/// milliseconds), refusing rather than truncating: the walk and the direct path both ask here.
pub(crate) fn timestamp_in_unit(
    secs: i64,
    nanos: u32,
    micros: bool,
) -> Result<i64, TimestampRefusal> {
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
pub(crate) fn latin1(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

pub(crate) fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Dates and timestamps are read by the contract, the same code that writes them for `tail`.
pub use lienthong_contract::json::{parse_date, parse_rfc3339};
