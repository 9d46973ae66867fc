//! Avro binary for the typed events, written field after field in schema order with no lookup
//! on the way: the encoder the producer SDK publishes with.
//!
//! The general typed path ([`crate::Codec::encode`], through `serde_avro_fast`) finds each field
//! of the writer schema by name as serde hands it over; for a typical case event that is about a
//! quarter of its time (`perf`). A type here knows its own fields in schema order, so writing is
//! only varints and copies. What makes that safe is [`WriteAvro::check_schema`]: before a type is
//! written with a schema, the schema is walked once ([`crate::RegisteredSchema::check_typed`])
//! and every record, field name and order, union branch, enum symbol and primitive must be what
//! the type writes; otherwise the type is refused for that schema with the path of the first
//! difference. The implementations come from the same field lists as
//! [`crate::nfc::NormalizeText`] (in [`crate::events`]), and tests hold the bytes equal to the
//! serde path's for every sample and for generated events (`tests/write.rs`).

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::Name;

/// The named types of a schema, to follow references while checking.
pub type Names<'s> = HashMap<Name, &'s Schema>;

/// Where a type and a schema differ: the field path, and what differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    path: Vec<&'static str>,
    what: String,
}

impl Mismatch {
    /// A difference at the current place.
    pub fn new(what: impl Into<String>) -> Self {
        Mismatch {
            path: Vec::new(),
            what: what.into(),
        }
    }

    /// The same difference, seen from the record that holds `field`.
    pub fn within(mut self, field: &'static str) -> Self {
        self.path.push(field);
        self
    }
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "at the root: {}", self.what)
        } else {
            let path: Vec<&str> = self.path.iter().rev().copied().collect();
            write!(f, "at {}: {}", path.join("."), self.what)
        }
    }
}

/// A value that writes itself as Avro binary, and can tell whether a schema describes it.
pub trait WriteAvro {
    /// Append the Avro binary encoding of `self` (no header). Only meaningful for a schema
    /// that [`WriteAvro::check_schema`] accepted.
    fn write_avro(&self, out: &mut Vec<u8>);

    /// Whether `schema` (whose named types are `names`) is exactly what
    /// [`WriteAvro::write_avro`] writes.
    fn check_schema(schema: &Schema, names: &Names<'_>) -> Result<(), Mismatch>;
}

/// Append an Avro `long` or `int` (zig-zag, then variable length).
#[inline]
pub fn write_long(v: i64, out: &mut Vec<u8>) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Read an Avro `long` or `int` (the inverse of [`write_long`]) from the front of `input`,
/// advancing it; `None` if it is cut short or longer than 10 bytes.
pub fn read_long(input: &mut &[u8]) -> Option<i64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    None
}

/// Append Avro `bytes` or `string`: the length, then the bytes.
#[inline]
pub fn write_bytes(b: &[u8], out: &mut Vec<u8>) {
    write_long(b.len() as i64, out);
    out.extend_from_slice(b);
}

/// `schema`, with a reference followed to the type it names.
pub fn resolve<'s>(schema: &'s Schema, names: &Names<'s>) -> Result<&'s Schema, Mismatch> {
    match schema {
        Schema::Ref { name } => names.get(name).copied().ok_or_else(|| {
            Mismatch::new(format!("the schema names {name}, which it never defines"))
        }),
        other => Ok(other),
    }
}

/// How a schema type reads in a message.
pub fn describe(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => format!("the record {}", r.name),
        Schema::Enum(e) => format!("the enum {}", e.name),
        Schema::Fixed(f) => format!("the fixed {}", f.name),
        Schema::Ref { name } => name.to_string(),
        Schema::Union(_) => "a union".into(),
        Schema::Array(_) => "an array".into(),
        Schema::Map(_) => "a map".into(),
        other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
    }
}

/// The difference "the schema has `schema`, the type writes `writes`".
pub fn differs(schema: &Schema, writes: &str) -> Mismatch {
    Mismatch::new(format!(
        "the schema has {}, the type writes {writes}",
        describe(schema)
    ))
}

/// `Ok` if `ok`, else [`differs`].
fn require(ok: bool, schema: &Schema, writes: &str) -> Result<(), Mismatch> {
    if ok {
        Ok(())
    } else {
        Err(differs(schema, writes))
    }
}

impl WriteAvro for String {
    #[inline]
    fn write_avro(&self, out: &mut Vec<u8>) {
        write_bytes(self.as_bytes(), out);
    }

    fn check_schema(schema: &Schema, _: &Names<'_>) -> Result<(), Mismatch> {
        require(
            matches!(schema, Schema::String | Schema::Uuid),
            schema,
            "a string",
        )
    }
}

impl WriteAvro for i64 {
    #[inline]
    fn write_avro(&self, out: &mut Vec<u8>) {
        write_long(*self, out);
    }

    /// A plain `long`, or milliseconds since the epoch (the unit the event types document).
    fn check_schema(schema: &Schema, _: &Names<'_>) -> Result<(), Mismatch> {
        require(
            matches!(schema, Schema::Long | Schema::TimestampMillis),
            schema,
            "a long (or timestamp-millis)",
        )
    }
}

impl WriteAvro for i32 {
    #[inline]
    fn write_avro(&self, out: &mut Vec<u8>) {
        write_long(i64::from(*self), out);
    }

    /// A plain `int`, or days since the epoch.
    fn check_schema(schema: &Schema, _: &Names<'_>) -> Result<(), Mismatch> {
        require(
            matches!(schema, Schema::Int | Schema::Date),
            schema,
            "an int (or date)",
        )
    }
}

impl WriteAvro for bool {
    #[inline]
    fn write_avro(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }

    fn check_schema(schema: &Schema, _: &Names<'_>) -> Result<(), Mismatch> {
        require(matches!(schema, Schema::Boolean), schema, "a boolean")
    }
}

/// The union `["null", T]`, null first (the only order in which `null` can be the default).
impl<T: WriteAvro> WriteAvro for Option<T> {
    #[inline]
    fn write_avro(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(2); // branch 1, zig-zag encoded
                v.write_avro(out);
            }
        }
    }

    fn check_schema(schema: &Schema, names: &Names<'_>) -> Result<(), Mismatch> {
        match resolve(schema, names)? {
            Schema::Union(u) => match u.variants() {
                [Schema::Null, inner] => T::check_schema(inner, names),
                _ => Err(Mismatch::new(
                    "the schema has a union other than [\"null\", T], the type writes an optional value",
                )),
            },
            other => Err(differs(
                other,
                "an optional value (the union [\"null\", T])",
            )),
        }
    }
}

/// An array, in one block.
impl<T: WriteAvro> WriteAvro for Vec<T> {
    #[inline]
    fn write_avro(&self, out: &mut Vec<u8>) {
        if !self.is_empty() {
            write_long(self.len() as i64, out);
            for item in self {
                item.write_avro(out);
            }
        }
        out.push(0);
    }

    fn check_schema(schema: &Schema, names: &Names<'_>) -> Result<(), Mismatch> {
        match resolve(schema, names)? {
            Schema::Array(a) => T::check_schema(&a.items, names).map_err(|e| e.within("[]")),
            other => Err(differs(other, "an array")),
        }
    }
}

/// The schema check of the type a getter returns: lets the macros below check a field or a
/// union branch by naming it, without spelling its type.
pub fn check_of<S, T: WriteAvro>(
    _getter: impl Fn(&S) -> Option<&T>,
) -> fn(&Schema, &Names<'_>) -> Result<(), Mismatch> {
    T::check_schema
}

/// The record `schema`, if it is one named `name`.
pub fn record_named<'s>(
    schema: &'s Schema,
    names: &Names<'s>,
    name: &str,
) -> Result<&'s apache_avro::schema::RecordSchema, Mismatch> {
    match resolve(schema, names)? {
        Schema::Record(r) if r.name.name == name => Ok(r),
        other => Err(differs(other, &format!("the record {name}"))),
    }
}

/// [`WriteAvro`] for records: the struct's fields, listed in schema order. Also writes the
/// check that the schema's record has exactly these fields, in this order.
macro_rules! write_fields {
    ($($t:ident { $($f:ident),* $(,)? })*) => {$(
        impl $crate::write::WriteAvro for $t {
            #[inline]
            fn write_avro(&self, out: &mut Vec<u8>) {
                let $t { $($f),* } = self;
                $($crate::write::WriteAvro::write_avro($f, out);)*
            }

            fn check_schema(
                schema: &apache_avro::Schema,
                names: &$crate::write::Names<'_>,
            ) -> Result<(), $crate::write::Mismatch> {
                let record = $crate::write::record_named(schema, names, stringify!($t))?;
                let listed: &[&'static str] = &[$(stringify!($f)),*];
                let found: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
                if found != listed {
                    return Err($crate::write::Mismatch::new(format!(
                        "the schema's record {} has the fields {found:?}, the type writes {listed:?}",
                        record.name
                    )));
                }
                let mut fields = record.fields.iter();
                $(
                    if let Some(field) = fields.next() {
                        $crate::write::check_of(|v: &$t| Some(&v.$f))(&field.schema, names)
                            .map_err(|e| e.within(stringify!($f)))?;
                    }
                )*
                Ok(())
            }
        }
    )*};
}
pub(crate) use write_fields;

/// [`WriteAvro`] for a union of records: an enum whose variants each hold one record, listed
/// in the order of the union's branches.
macro_rules! write_variants {
    ($($t:ident { $($v:ident),* $(,)? })*) => {$(
        impl $crate::write::WriteAvro for $t {
            #[inline]
            fn write_avro(&self, out: &mut Vec<u8>) {
                // Every variant is listed: this match fails to compile otherwise.
                match self {
                    $($t::$v(_) => {})*
                }
                let mut _branch = 0;
                $(
                    if let $t::$v(inner) = self {
                        $crate::write::write_long(_branch, out);
                        return $crate::write::WriteAvro::write_avro(inner, out);
                    }
                    _branch += 1;
                )*
            }

            fn check_schema(
                schema: &apache_avro::Schema,
                names: &$crate::write::Names<'_>,
            ) -> Result<(), $crate::write::Mismatch> {
                let apache_avro::Schema::Union(union) = $crate::write::resolve(schema, names)? else {
                    return Err($crate::write::differs(schema, "a union"));
                };
                let mut branches = union.variants().iter();
                $(
                    let Some(branch) = branches.next() else {
                        return Err($crate::write::Mismatch::new(format!(
                            "the schema's union has no branch for {}",
                            stringify!($v)
                        )));
                    };
                    $crate::write::check_of(|v: &$t| match v {
                        $t::$v(inner) => Some(inner),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    })(branch, names)
                    .map_err(|e| e.within(stringify!($v)))?;
                )*
                Ok(())
            }
        }
    )*};
}
pub(crate) use write_variants;

/// [`WriteAvro`] for an Avro enum: a fieldless Rust enum, its variants listed in declaration
/// order with their symbols. The schema's symbols must start with these, in this order.
macro_rules! write_symbols {
    ($($t:ident { $($v:ident = $symbol:literal),* $(,)? })*) => {$(
        // The index written is the declaration index: the list must be in that order.
        const _: () = {
            let mut _i = 0;
            $(
                assert!($t::$v as usize == _i, "list the variants in declaration order");
                _i += 1;
            )*
        };

        impl $crate::write::WriteAvro for $t {
            #[inline]
            fn write_avro(&self, out: &mut Vec<u8>) {
                $crate::write::write_long(*self as i64, out);
            }

            fn check_schema(
                schema: &apache_avro::Schema,
                names: &$crate::write::Names<'_>,
            ) -> Result<(), $crate::write::Mismatch> {
                let listed: &[&str] = &[$($symbol),*];
                match $crate::write::resolve(schema, names)? {
                    apache_avro::Schema::Enum(e)
                        if e.symbols.len() >= listed.len()
                            && e.symbols.iter().zip(listed).all(|(s, l)| s == l) =>
                    {
                        Ok(())
                    }
                    apache_avro::Schema::Enum(e) => Err($crate::write::Mismatch::new(format!(
                        "the schema's enum {} has the symbols {:?}, the type writes {listed:?}",
                        e.name, e.symbols
                    ))),
                    other => Err($crate::write::differs(
                        other,
                        concat!("the enum ", stringify!($t)),
                    )),
                }
            }
        }
    )*};
}
pub(crate) use write_symbols;

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut out);
        out
    }

    #[test]
    fn longs_are_zig_zag_varints() {
        assert_eq!(bytes(|o| write_long(0, o)), [0]);
        assert_eq!(bytes(|o| write_long(-1, o)), [1]);
        assert_eq!(bytes(|o| write_long(1, o)), [2]);
        assert_eq!(bytes(|o| write_long(-64, o)), [0x7f]);
        assert_eq!(bytes(|o| write_long(64, o)), [0x80, 0x01]);
        assert_eq!(
            bytes(|o| write_long(i64::MIN, o)),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }

    #[test]
    fn primitives_are_checked_against_the_schema() {
        let names = Names::new();
        assert!(String::check_schema(&Schema::String, &names).is_ok());
        assert!(String::check_schema(&Schema::Uuid, &names).is_ok());
        assert!(i64::check_schema(&Schema::TimestampMillis, &names).is_ok());
        assert!(i32::check_schema(&Schema::Date, &names).is_ok());
        let e = i64::check_schema(&Schema::TimestampMicros, &names).unwrap_err();
        assert_eq!(
            e.to_string(),
            "at the root: the schema has timestampmicros, the type writes a long (or timestamp-millis)"
        );
        let e = Option::<String>::check_schema(&Schema::String, &names).unwrap_err();
        assert!(e.to_string().contains("optional"), "{e}");
        let e = Vec::<i32>::check_schema(&Schema::array(Schema::Long), &names).unwrap_err();
        assert_eq!(
            e.to_string(),
            "at []: the schema has long, the type writes an int (or date)"
        );
    }
}
