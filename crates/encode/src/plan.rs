//! A topic's schema compiled once ([`Plan`]): every named type resolved, every field's checks
//! and default found.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::{Name, RecordSchema, UnionSchema};
use lienthong_contract::catalog::{FORMAT_ATTR, FieldFormat, RANGE_ATTR};
use lienthong_contract::physical::Physical;

use crate::*;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Attrs {
    pub(crate) format: Option<FieldFormat>,
    pub(crate) range: Option<(i64, i64)>,
}

/// A topic's schema compiled once for the walk: every named type resolved, and every field's
/// checks (`lienthong.format`, `lienthong.range`) and default found, so that checking an event
/// looks up no name, attribute or default.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) root: Node,
    /// Every record type, by the index a [`Node::Record`] names (records may refer to
    /// themselves, so they are referred to, not nested).
    pub(crate) records: Vec<RecordPlan>,
}

/// What the walk expects at one place of the schema.
#[derive(Debug, Clone)]
pub(crate) enum Node {
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
pub(crate) struct EnumPlan {
    pub(crate) symbols: Vec<String>,
    /// The symbols as messages list them.
    pub(crate) listed: String,
}

#[derive(Debug, Clone)]
pub(crate) struct UnionPlan {
    pub(crate) branches: Vec<Branch>,
    /// The `null` branch, if any.
    pub(crate) null: Option<usize>,
    /// The branch a bare value takes: the only one that is not `null`, if there is one.
    pub(crate) only_non_null: Option<usize>,
    /// The branches as the message about a value that fits none lists them.
    pub(crate) listed: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Branch {
    pub(crate) node: Node,
    /// The tags that select it in `{"<branch>": value}`: a named type's short name and full
    /// name, or another type's name.
    pub(crate) short: String,
    pub(crate) full: Option<String>,
}

#[derive(Debug)]
pub(crate) struct RecordPlan {
    /// The short name, as messages say it.
    pub(crate) name: String,
    pub(crate) fields: Vec<FieldPlan>,
    /// The field names, as the message about an unknown field lists them.
    pub(crate) listed: String,
}

#[derive(Debug)]
pub(crate) struct FieldPlan {
    pub(crate) name: String,
    pub(crate) node: Node,
    pub(crate) attrs: Attrs,
    /// The schema default, as the walk reads JSON.
    pub(crate) default: Option<Json<'static>>,
    /// The same default, encoded (for the direct path), if it encodes.
    pub(crate) default_bytes: Option<Vec<u8>>,
    /// Which of the texts an [`Encoded`] keeps this field holds (`CAPTURE_*` flags).
    pub(crate) capture: u8,
}

impl Plan {
    /// How many times each record is named: by the root, and by every field (through arrays,
    /// maps and unions).
    pub(crate) fn record_references(&self) -> Vec<usize> {
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
    pub(crate) fn mark_capture(&mut self, path: &[String], flag: u8, references: &[usize]) -> bool {
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

pub(crate) fn type_name(schema: &Schema) -> String {
    match schema {
        Schema::Array(_) => "array".into(),
        Schema::Map(_) => "map".into(),
        Schema::Union(_) => "union".into(),
        Schema::Record(r) => r.name.fullname(None),
        Schema::Enum(e) => e.name.fullname(None),
        Schema::Fixed(f) => f.name.fullname(None),
        Schema::Decimal(_) => "decimal".into(),
        Schema::Ref { name } => name.fullname(None),
        other => Physical::of(other).map_or("unknown", Physical::name).into(),
    }
}

pub(crate) fn field_attrs(field: &apache_avro::schema::RecordField) -> Attrs {
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
pub(crate) struct Compiler<'s> {
    pub(crate) names: HashMap<String, &'s Schema>,
    pub(crate) records: Vec<RecordPlan>,
    /// Record full name → index in `records`, assigned before its fields are compiled, so a
    /// record that refers to itself finds its own index.
    pub(crate) record_ids: HashMap<String, usize>,
}

impl<'s> Compiler<'s> {
    pub(crate) fn node(&mut self, schema: &'s Schema) -> Node {
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

    pub(crate) fn union(&mut self, u: &'s UnionSchema) -> Node {
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

    pub(crate) fn record(&mut self, r: &'s RecordSchema) -> Node {
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
