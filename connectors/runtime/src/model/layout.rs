//! How one writer schema's records become changes ([`Layout`]): columns named from the
//! schema, values flattened into cells, the delta's step and history row.

use lienthong_privacy::SEALED_FIELD;
use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::schema::{Name, ResolvedSchema, UnionSchema};
use apache_avro::types::Value;
use lienthong_contract::physical::Physical;
use sha2::Digest as _;

use super::*;

/// How one writer schema's records become changes.
#[derive(Debug)]
pub struct Layout {
    pub(super) entity: Entity,
    pub(super) schema: Schema,
    /// The schema's named types, resolved once (not for every record).
    pub(super) names: Names,
    /// Every body column this writer can produce, in schema order.
    pub columns: Vec<Column>,
}

/// Snake case of a record name: `CaseSubmitted` → `case_submitted`.
pub fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// A column name from a field path, cut to [`MAX_IDENT`] bytes with a hash suffix if longer.
pub fn column_name(path: &[&str]) -> String {
    let full = path.join("__");
    if full.len() <= MAX_IDENT {
        return full;
    }
    let hash = hex::encode(&sha2::Sha256::digest(full.as_bytes())[..4]);
    let mut cut = MAX_IDENT - 9;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash}", &full[..cut])
}

/// A schema's named types, by name.
pub(super) type Names = HashMap<Name, Schema>;

/// Why a record could not become a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

pub(super) struct Walker<'a> {
    pub(super) names: &'a Names,
}

impl<'a> Walker<'a> {
    pub(super) fn deref(&self, s: &'a Schema) -> &'a Schema {
        match s {
            Schema::Ref { name } => self.names.get(name).unwrap_or(s),
            _ => s,
        }
    }

    /// Emit the columns of `schema` at `path`, with values from `value` (None: all NULL).
    pub(super) fn walk(
        &self,
        schema: &'a Schema,
        value: Option<Value>,
        path: &mut Vec<String>,
        out: &mut Vec<(Column, Cell)>,
        depth: usize,
    ) -> Result<(), Invalid> {
        if depth > 32 {
            return Err(Invalid("record nests too deeply".into()));
        }
        let schema = self.deref(schema);
        let col = |path: &[String], ty| Column {
            name: Arc::from(column_name(
                &path.iter().map(String::as_str).collect::<Vec<_>>(),
            )),
            ty,
        };
        match schema {
            Schema::Record(r) => {
                let present = value.is_some();
                let mut fields: HashMap<String, Value> = match value {
                    Some(Value::Record(f)) => f.into_iter().collect(),
                    None => HashMap::new(),
                    Some(other) => {
                        return Err(Invalid(format!("expected a record, found {other:?}")));
                    }
                };
                for f in &r.fields {
                    path.push(f.name.clone());
                    let v = if present {
                        Some(fields.remove(&f.name).ok_or_else(|| {
                            Invalid(format!("field {} missing from the record", f.name))
                        })?)
                    } else {
                        None
                    };
                    self.walk(&f.schema, v, path, out, depth + 1)?;
                    path.pop();
                }
                Ok(())
            }
            Schema::Union(u) if nullable_single(u).is_some() => {
                let inner = nullable_single(u).unwrap_or(schema);
                let v = match value {
                    None | Some(Value::Null) => None,
                    Some(Value::Union(_, b)) if *b == Value::Null => None,
                    Some(Value::Union(_, b)) => Some(*b),
                    Some(other) => Some(other),
                };
                self.walk(inner, v, path, out, depth + 1)
            }
            Schema::Null => Ok(()),
            _ => {
                let ty = leaf_type(schema);
                let cell = match value {
                    None => Cell::Null,
                    Some(v) => leaf_cell(v, ty)?,
                };
                out.push((col(path, ty), cell));
                Ok(())
            }
        }
    }
}

/// `Some(T)` for `["null", T]` / `[T, "null"]`.
pub(super) fn nullable_single(u: &UnionSchema) -> Option<&Schema> {
    let v = u.variants();
    match v {
        [Schema::Null, t] | [t, Schema::Null] if !matches!(t, Schema::Null) => Some(t),
        _ => None,
    }
}

pub(super) fn leaf_type(schema: &Schema) -> SqlType {
    match Physical::of(schema) {
        Some(Physical::Boolean) => SqlType::Bool,
        Some(Physical::Int | Physical::Long) => SqlType::Int,
        Some(Physical::Float | Physical::Double) => SqlType::Double,
        _ => SqlType::Text,
    }
}

pub(super) fn leaf_cell(v: Value, ty: SqlType) -> Result<Cell, Invalid> {
    let v = match v {
        Value::Union(_, b) => *b,
        v => v,
    };
    if ty == SqlType::Int
        && let Some(i) = integer(&v)
    {
        return Ok(Cell::Int(i));
    }
    Ok(match (ty, v) {
        (_, Value::Null) => Cell::Null,
        (SqlType::Bool, Value::Boolean(b)) => Cell::Bool(b),
        (SqlType::Double, Value::Float(f)) => Cell::Double(f64::from(f)),
        (SqlType::Double, Value::Double(f)) => Cell::Double(f),
        (SqlType::Text, Value::String(s)) => Cell::Text(s),
        (SqlType::Text, Value::Enum(_, s)) => Cell::Text(s),
        (SqlType::Text, Value::Uuid(u)) => Cell::Text(u.to_string()),
        (SqlType::Text, Value::Bytes(b) | Value::Fixed(_, b)) => Cell::Text(hex::encode(b)),
        (SqlType::Text, v @ (Value::Array(_) | Value::Map(_) | Value::Record(_))) => {
            Cell::Text(canonical_json(&v).to_string())
        }
        (SqlType::Text, v) => Cell::Text(canonical_json(&v).to_string()),
        (ty, v) => {
            return Err(Invalid(format!(
                "a {v:?} value does not fit a {} column",
                ty.as_str()
            )));
        }
    })
}

/// An Avro value that is an integer (an `int` or a `long`, whatever its logical type).
fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => Some(i64::from(*i)),
        Value::Long(i)
        | Value::TimeMicros(i)
        | Value::TimestampMillis(i)
        | Value::TimestampMicros(i)
        | Value::TimestampNanos(i)
        | Value::LocalTimestampMillis(i)
        | Value::LocalTimestampMicros(i)
        | Value::LocalTimestampNanos(i) => Some(*i),
        _ => None,
    }
}

/// An Avro value as JSON, deterministically: records keep schema field order, unions show
/// their value, enums their symbol, bytes lower-case hex, non-finite floats as strings.
pub fn canonical_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    if let Some(i) = integer(v) {
        return J::from(i);
    }
    match v {
        Value::Null => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Float(f) => float_json(f64::from(*f)),
        Value::Double(f) => float_json(*f),
        Value::String(s) | Value::Enum(_, s) => J::String(s.clone()),
        Value::Bytes(b) | Value::Fixed(_, b) => J::String(hex::encode(b)),
        Value::Union(_, b) => canonical_json(b),
        Value::Array(items) => J::Array(items.iter().map(canonical_json).collect()),
        Value::Map(m) => {
            let mut entries: Vec<_> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            J::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), canonical_json(v)))
                    .collect(),
            )
        }
        Value::Record(fields) => J::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), canonical_json(v)))
                .collect(),
        ),
        Value::Uuid(u) => J::String(u.to_string()),
        other => J::String(format!("{other:?}")),
    }
}

pub(super) fn float_json(f: f64) -> serde_json::Value {
    serde_json::Number::from_f64(f)
        .map(serde_json::Value::Number)
        .unwrap_or_else(|| serde_json::Value::String(f.to_string()))
}

/// The named types of `schema`, by name.
pub(super) fn names_of(schema: &Schema) -> Result<Names, Invalid> {
    ResolvedSchema::try_from(schema)
        .map(|r| {
            r.get_names()
                .iter()
                .map(|(n, s)| (n.clone(), (*s).clone()))
                .collect()
        })
        .map_err(|e| Invalid(e.to_string()))
}

/// The full name of a top-level record schema.
pub fn record_name(schema: &Schema) -> Option<&Name> {
    match schema {
        Schema::Record(r) => Some(&r.name),
        _ => None,
    }
}

impl Layout {
    /// The layout of writer `schema` for `entity`. Fails when the schema is not a record with
    /// an `envelope` field, or (for deltas) has no union field.
    pub fn new(entity: Entity, schema: &Schema) -> Result<Layout, Invalid> {
        let Schema::Record(r) = schema else {
            return Err(Invalid("the value schema is not a record".into()));
        };
        if !r.fields.iter().any(|f| f.name == "envelope") {
            return Err(Invalid("the value schema has no envelope field".into()));
        }
        let names = names_of(schema)?;
        let walker = Walker { names: &names };
        let mut cells = Vec::new();
        // The sealed form of personal fields is opened (or dropped) before a change is made
        // of the record: no store holds it.
        for f in r
            .fields
            .iter()
            .filter(|f| f.name != "envelope" && f.name != SEALED_FIELD)
        {
            let fs = walker.deref(&f.schema);
            match (entity.is_delta(), fs) {
                (true, Schema::Union(u)) => {
                    for branch in u.variants() {
                        let b = walker.deref(branch);
                        let Some(name) = record_name(b) else {
                            return Err(Invalid(format!(
                                "union {} has a branch that is not a record",
                                f.name
                            )));
                        };
                        let mut path = vec![snake(&name.name)];
                        walker.walk(b, None, &mut path, &mut cells, 0)?;
                    }
                }
                (true, _) => {
                    return Err(Invalid(format!(
                        "field {} of a delta entity is not a union of steps",
                        f.name
                    )));
                }
                (false, Schema::Record(_)) => {
                    walker.walk(fs, None, &mut Vec::new(), &mut cells, 0)?
                }
                (false, _) => walker.walk(fs, None, &mut vec![f.name.clone()], &mut cells, 0)?,
            }
        }
        let mut columns: Vec<Column> = Vec::with_capacity(cells.len());
        for (c, _) in cells {
            if let Some(prev) = columns.iter().find(|p| p.name == c.name) {
                if prev.ty != c.ty {
                    return Err(Invalid(format!(
                        "two fields map to column {} with different types",
                        c.name
                    )));
                }
            } else {
                columns.push(c);
            }
        }
        Ok(Layout {
            entity,
            schema: schema.clone(),
            names,
            columns,
        })
    }

    /// The writer schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The entity.
    pub fn entity(&self) -> Entity {
        self.entity
    }

    /// Turn a decoded value (decoded with this layout's writer schema) into a change.
    pub fn change(
        &self,
        value: Value,
        relevance_units: Option<&[String]>,
    ) -> Result<Change, Invalid> {
        let Value::Record(fields) = value else {
            return Err(Invalid("the value is not a record".into()));
        };
        let Schema::Record(r) = &self.schema else {
            return Err(Invalid("the value schema is not a record".into()));
        };
        let walker = Walker { names: &self.names };
        let mut envelope = None;
        let mut cells: Vec<(Column, Cell)> = Vec::with_capacity(self.columns.len() + 5);
        let mut history_kind = None;
        let mut history_body = None;
        let mut body_cells = Vec::with_capacity(self.columns.len());
        for (name, v) in fields {
            if name == "envelope" {
                envelope = Some(v);
                continue;
            }
            if name == SEALED_FIELD {
                continue;
            }
            let Some(f) = r.fields.iter().find(|f| f.name == name) else {
                return Err(Invalid(format!("unexpected field {name}")));
            };
            let fs = walker.deref(&f.schema);
            match (self.entity.is_delta(), fs, v) {
                (true, Schema::Union(u), Value::Union(i, inner)) => {
                    let b = u
                        .variants()
                        .get(i as usize)
                        .map(|b| walker.deref(b))
                        .ok_or_else(|| Invalid(format!("union branch {i} out of range")))?;
                    let name = record_name(b)
                        .ok_or_else(|| Invalid("a union branch is not a record".into()))?;
                    let kind = snake(&name.name);
                    history_body = Some(canonical_json(&inner).to_string());
                    walker.walk(b, Some(*inner), &mut vec![kind.clone()], &mut body_cells, 0)?;
                    history_kind = Some(kind);
                }
                (true, _, _) => return Err(Invalid(format!("field {name} is not a union value"))),
                (false, Schema::Record(_), v) => {
                    walker.walk(fs, Some(v), &mut Vec::new(), &mut body_cells, 0)?
                }
                (false, _, v) => walker.walk(fs, Some(v), &mut vec![name], &mut body_cells, 0)?,
            }
        }
        let Some(Value::Record(env)) = envelope else {
            return Err(Invalid("the record has no envelope".into()));
        };
        let mut event_id = None;
        let mut occurred_at = None;
        let mut producer_unit = None;
        let mut aggregate_id = None;
        let mut version = None;
        let mut correlation_id = None;
        for (k, v) in env {
            let v = match v {
                Value::Union(_, b) => *b,
                v => v,
            };
            match (k.as_str(), v) {
                ("event_id", Value::String(s)) => event_id = Some(s),
                ("event_id", Value::Uuid(u)) => event_id = Some(u.to_string()),
                ("occurred_at", Value::Long(t) | Value::TimestampMillis(t)) => {
                    occurred_at = Some(t)
                }
                ("producer_unit", Value::String(s)) => producer_unit = Some(s),
                ("aggregate_id", Value::String(s)) => aggregate_id = Some(s),
                ("aggregate_version", Value::Long(n)) => version = Some(n),
                ("aggregate_version", Value::Int(n)) => version = Some(i64::from(n)),
                ("correlation_id", Value::String(s)) => correlation_id = Some(s),
                ("correlation_id", Value::Uuid(u)) => correlation_id = Some(u.to_string()),
                _ => {}
            }
        }
        let missing = |f: &str| Invalid(format!("envelope field {f} missing or mistyped"));
        let event_id = event_id.ok_or_else(|| missing("event_id"))?;
        let occurred_at = occurred_at.ok_or_else(|| missing("occurred_at"))?;
        let producer_unit = producer_unit.ok_or_else(|| missing("producer_unit"))?;
        let key = aggregate_id.ok_or_else(|| missing("aggregate_id"))?;
        let version = version.ok_or_else(|| missing("aggregate_version"))?;
        let correlation_id = correlation_id.ok_or_else(|| missing("correlation_id"))?;
        if key.is_empty() {
            return Err(Invalid("the aggregate id is empty".into()));
        }
        let relevance = match relevance_units {
            None => Relevance::Always,
            Some(units) => {
                let fields = self.entity.unit_fields();
                let matched = body_cells.iter().any(|(c, v)| {
                    let leaf = c.name.rsplit("__").next().unwrap_or(&c.name);
                    fields.contains(&leaf)
                        && matches!(v, Cell::Text(u) if units.iter().any(|w| w == u))
                });
                if matched {
                    Relevance::Always
                } else {
                    Relevance::IfHeld
                }
            }
        };
        let fixed = |name: &'static str, ty| Column {
            name: Arc::from(name),
            ty,
        };
        cells.push((
            fixed("event_id", SqlType::Text),
            Cell::Text(event_id.clone()),
        ));
        cells.push((fixed("occurred_at", SqlType::Int), Cell::Int(occurred_at)));
        cells.push((
            fixed("producer_unit", SqlType::Text),
            Cell::Text(producer_unit.clone()),
        ));
        cells.push((
            fixed("correlation_id", SqlType::Text),
            Cell::Text(correlation_id.clone()),
        ));
        let history = match (history_kind, history_body) {
            (Some(kind), Some(body)) => {
                cells.push((fixed("status", SqlType::Text), Cell::Text(kind.clone())));
                Some(HistoryRow {
                    event_id,
                    id: key.clone(),
                    version,
                    occurred_at,
                    producer_unit,
                    correlation_id,
                    kind,
                    body,
                })
            }
            _ if self.entity.is_delta() => {
                return Err(Invalid("a delta record without a step".into()));
            }
            _ => None,
        };
        cells.extend(body_cells);
        Ok(Change {
            entity: self.entity,
            key,
            version,
            cells,
            history,
            relevance,
        })
    }
}

/// Decoded case-event changes for benchmarks and tests: `n` events of cases with 2 to 7 steps
/// each (round-robin, so a case's steps are spread over the stream), decoded by the same path
/// the runner takes (Avro bytes → value → [`Change`]). Case ids start with `prefix`; event ids
/// derive from the prefix and the event's number, so two prefixes never share an event id (a
/// store's history would take the second as a duplicate).
pub fn sample_case_ops(n: usize, prefix: &str) -> Result<Vec<Op>, Invalid> {
    use lienthong_contract::events::CaseEvent;
    use lienthong_contract::samples;
    let catalog = lienthong_contract::Catalog::load(lienthong_contract::repo_schemas_dir())
        .map_err(|e| Invalid(e.to_string()))?;
    let codec =
        lienthong_contract::Codec::from_catalog(&catalog).map_err(|e| Invalid(e.to_string()))?;
    let id = catalog
        .local_id("hcm.case.events")
        .map_err(|e| Invalid(e.to_string()))?;
    let spec = catalog
        .topic("hcm.case.events")
        .map_err(|e| Invalid(e.to_string()))?;
    let layout = Layout::new(Entity::Cases, &spec.schema)?;
    let lifecycle = samples::case_lifecycle();
    let cases = n / 4 + 1;
    let mut out = Vec::with_capacity(n);
    // FNV-1a of the prefix, kept clear of the event numbers' bits.
    let salt = prefix.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    }) << 24;
    let mut seed = 0u64;
    'rounds: for (step, template) in lifecycle.iter().take(7).enumerate() {
        for c in 0..cases {
            if step >= 2 + c % 6 {
                continue;
            }
            if out.len() == n {
                break 'rounds;
            }
            seed += 1;
            let mut envelope =
                samples::envelope(seed, "26734", &format!("{prefix}-{c:07}"), step as i64 + 1);
            envelope.event_id = samples::uuid_like(seed ^ salt);
            let event = CaseEvent {
                envelope,
                event: template.event.clone(),
            };
            let bytes = codec
                .encode_to_vec(id, &event)
                .map_err(|e| Invalid(e.to_string()))?;
            let (_, value) = codec
                .decode_value(&bytes, None)
                .map_err(|e| Invalid(e.to_string()))?;
            out.push(Op::Upsert(layout.change(value, None)?));
        }
    }
    Ok(out)
}
