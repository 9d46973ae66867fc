//! Writer-to-reader schema resolution of generic Avro values, by the specification's rules.
//!
//! apache-avro 0.21 resolves a union value by taking the first reader branch the value happens
//! to fit, not the branch of the same name: a `ResultReturned` case event read with the case
//! schema came back as a `SupplementReceived` (whose fields all have defaults). That silently
//! corrupts data, so the contract resolves values itself: named types by name (or the reader's
//! aliases), record fields by name with the reader's defaults, enum symbols by name with the
//! reader's default symbol, and Avro's promotions.

use apache_avro::Schema;
use apache_avro::schema::{Name, NamesRef, ResolvedSchema};
use apache_avro::types::Value;

/// Resolve `value`, decoded with `writer`, to `reader`.
pub fn resolve(value: Value, writer: &Schema, reader: &Schema) -> Result<Value, String> {
    let r = Resolver {
        reader_root: reader,
        writer_names: names_of(writer)?,
        reader_names: names_of(reader)?,
    };
    r.resolve(value, writer, reader, 0)
}

fn names_of(schema: &Schema) -> Result<NamesRef<'_>, String> {
    ResolvedSchema::try_from(schema)
        .map(|r| r.get_names().clone())
        .map_err(|e| e.to_string())
}

struct Resolver<'a> {
    reader_root: &'a Schema,
    writer_names: NamesRef<'a>,
    reader_names: NamesRef<'a>,
}

fn deref<'a>(names: &NamesRef<'a>, s: &'a Schema) -> &'a Schema {
    match s {
        Schema::Ref { name } => names.get(name).copied().unwrap_or(s),
        _ => s,
    }
}

fn name_of(s: &Schema) -> Option<(&Name, &Option<Vec<apache_avro::schema::Alias>>)> {
    match s {
        Schema::Record(r) => Some((&r.name, &r.aliases)),
        Schema::Enum(e) => Some((&e.name, &e.aliases)),
        Schema::Fixed(f) => Some((&f.name, &f.aliases)),
        _ => None,
    }
}

impl<'a> Resolver<'a> {
    /// Does `reader` take values of `writer` (by name for named types, by kind otherwise)?
    fn matches(&self, writer: &'a Schema, reader: &'a Schema) -> bool {
        let (w, r) = (
            deref(&self.writer_names, writer),
            deref(&self.reader_names, reader),
        );
        match (name_of(w), name_of(r)) {
            (Some((wn, _)), Some((rn, raliases))) => {
                std::mem::discriminant(w) == std::mem::discriminant(r)
                    && (wn.name == rn.name
                        || raliases
                            .iter()
                            .flatten()
                            .any(|a| a.fullname(rn.namespace.clone()) == wn.fullname(None)))
            }
            (None, None) => {
                std::mem::discriminant(w) == std::mem::discriminant(r)
                    || matches!(
                        (w, r),
                        (Schema::Int, Schema::Long | Schema::Float | Schema::Double)
                            | (Schema::Long, Schema::Float | Schema::Double)
                            | (Schema::Float, Schema::Double)
                            | (Schema::String, Schema::Bytes)
                            | (Schema::Bytes, Schema::String)
                    )
            }
            _ => false,
        }
    }

    fn resolve(
        &self,
        value: Value,
        writer: &'a Schema,
        reader: &'a Schema,
        depth: usize,
    ) -> Result<Value, String> {
        if depth > 64 {
            return Err("value nests deeper than 64 levels".into());
        }
        let (writer, reader) = (
            deref(&self.writer_names, writer),
            deref(&self.reader_names, reader),
        );
        // Unwrap the writer's union: its branch is known by index.
        let (value, writer) = match (value, writer) {
            (Value::Union(i, inner), Schema::Union(u)) => {
                let branch = u
                    .variants()
                    .get(i as usize)
                    .ok_or_else(|| format!("union branch {i} out of range"))?;
                (*inner, deref(&self.writer_names, branch))
            }
            (v, w) => (v, w),
        };
        if let Schema::Union(ru) = reader {
            let (idx, branch) = ru
                .variants()
                .iter()
                .enumerate()
                .find(|(_, b)| self.matches(writer, b))
                .ok_or_else(|| {
                    "no branch of the reader's union reads the writer's value".to_string()
                })?;
            let resolved = self.resolve(value, writer, branch, depth + 1)?;
            return Ok(Value::Union(idx as u32, Box::new(resolved)));
        }
        match (value, writer, reader) {
            (Value::Record(fields), Schema::Record(w), Schema::Record(r)) => {
                let mut by_name: std::collections::HashMap<String, Value> =
                    fields.into_iter().collect();
                let mut out = Vec::with_capacity(r.fields.len());
                for rf in &r.fields {
                    let source = std::iter::once(&rf.name)
                        .chain(rf.aliases.iter().flatten())
                        .find_map(|n| {
                            let wf = w.fields.iter().find(|f| &f.name == n)?;
                            Some((by_name.remove(n)?, &wf.schema))
                        });
                    let v = match source {
                        Some((v, ws)) => self.resolve(v, ws, &rf.schema, depth + 1)?,
                        None => {
                            let default = rf.default.clone().ok_or_else(|| {
                                format!("field {:?} is missing and has no default", rf.name)
                            })?;
                            // With the whole reader schema at hand, so a default may use a
                            // named type defined elsewhere in it.
                            Value::from(default)
                                .resolve_schemata(
                                    deref(&self.reader_names, &rf.schema),
                                    vec![self.reader_root],
                                )
                                .map_err(|e| format!("default of {:?}: {e}", rf.name))?
                        }
                    };
                    out.push((rf.name.clone(), v));
                }
                Ok(Value::Record(out))
            }
            (Value::Enum(_, symbol), Schema::Enum(_), Schema::Enum(r)) => {
                let symbol = if r.symbols.contains(&symbol) {
                    symbol
                } else {
                    r.default.clone().ok_or_else(|| {
                        format!("symbol {symbol} unknown to the reader, which has no default")
                    })?
                };
                let idx = r
                    .symbols
                    .iter()
                    .position(|s| *s == symbol)
                    .ok_or_else(|| format!("default symbol {symbol} is not a symbol"))?;
                Ok(Value::Enum(idx as u32, symbol))
            }
            (Value::Array(items), Schema::Array(w), Schema::Array(r)) => items
                .into_iter()
                .map(|v| self.resolve(v, &w.items, &r.items, depth + 1))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            (Value::Map(m), Schema::Map(w), Schema::Map(r)) => m
                .into_iter()
                .map(|(k, v)| {
                    self.resolve(v, &w.types, &r.types, depth + 1)
                        .map(|v| (k, v))
                })
                .collect::<Result<_, _>>()
                .map(Value::Map),
            (Value::Int(i), _, Schema::Long) => Ok(Value::Long(i64::from(i))),
            (Value::Int(i), _, Schema::Float) => Ok(Value::Float(i as f32)),
            (Value::Int(i), _, Schema::Double) => Ok(Value::Double(f64::from(i))),
            (Value::Long(l), _, Schema::Float) => Ok(Value::Float(l as f32)),
            (Value::Long(l), _, Schema::Double) => Ok(Value::Double(l as f64)),
            (Value::Float(f), _, Schema::Double) => Ok(Value::Double(f64::from(f))),
            (Value::String(s), _, Schema::Bytes) => Ok(Value::Bytes(s.into_bytes())),
            (Value::Bytes(b), _, Schema::String) => String::from_utf8(b)
                .map(Value::String)
                .map_err(|e| e.to_string()),
            (v, w, r)
                if self.matches(w, r) || std::mem::discriminant(w) == std::mem::discriminant(r) =>
            {
                Ok(v)
            }
            (_, w, r) => Err(format!("a {w:?} value cannot be read as {r:?}")),
        }
    }
}
