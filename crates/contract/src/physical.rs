//! What a value of an Avro schema is written as, under its logical type: `date` is an `int`,
//! `timestamp-micros` a `long`, `uuid` a `string`, `decimal` its bytes or fixed. The one type
//! switch that the JSON encoder (type names in its messages), the compatibility checker (which
//! defaults a schema may declare) and the sinks' table model (column types) share.

use apache_avro::Schema;

/// The physical type of a primitive, logical or fixed schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Physical {
    /// `null`.
    Null,
    /// `boolean`.
    Boolean,
    /// `int` (also `date`, `time-millis`).
    Int,
    /// `long` (also `time-micros` and every timestamp).
    Long,
    /// `float`.
    Float,
    /// `double`.
    Double,
    /// `bytes` (also a bytes-backed `decimal`, `big-decimal`).
    Bytes,
    /// `string` (also `uuid`).
    String,
    /// `fixed` of this many bytes (also `duration`, 12, and a fixed-backed `decimal`).
    Fixed(usize),
}

impl Physical {
    /// The physical type of `schema`, or `None` for a complex one (record, enum, array, map,
    /// union, a reference to a named type).
    pub fn of(schema: &Schema) -> Option<Physical> {
        Some(match schema {
            Schema::Null => Physical::Null,
            Schema::Boolean => Physical::Boolean,
            Schema::Int | Schema::Date | Schema::TimeMillis => Physical::Int,
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => Physical::Long,
            Schema::Float => Physical::Float,
            Schema::Double => Physical::Double,
            Schema::Bytes | Schema::BigDecimal => Physical::Bytes,
            Schema::String | Schema::Uuid => Physical::String,
            Schema::Fixed(f) => Physical::Fixed(f.size),
            Schema::Duration => Physical::Fixed(12),
            Schema::Decimal(d) => return Physical::of(&d.inner),
            Schema::Array(_)
            | Schema::Map(_)
            | Schema::Union(_)
            | Schema::Record(_)
            | Schema::Enum(_)
            | Schema::Ref { .. } => return None,
        })
    }

    /// Its name in Avro (`fixed` for every fixed size).
    pub fn name(self) -> &'static str {
        match self {
            Physical::Null => "null",
            Physical::Boolean => "boolean",
            Physical::Int => "int",
            Physical::Long => "long",
            Physical::Float => "float",
            Physical::Double => "double",
            Physical::Bytes => "bytes",
            Physical::String => "string",
            Physical::Fixed(_) => "fixed",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn logical_types_are_their_physical_type() {
        let of = |json: &str| Physical::of(&Schema::parse_str(json).unwrap());
        assert_eq!(
            of(r#"{"type":"int","logicalType":"date"}"#),
            Some(Physical::Int)
        );
        assert_eq!(
            of(r#"{"type":"long","logicalType":"timestamp-micros"}"#),
            Some(Physical::Long)
        );
        assert_eq!(
            of(r#"{"type":"string","logicalType":"uuid"}"#),
            Some(Physical::String)
        );
        assert_eq!(
            of(r#"{"type":"fixed","name":"F","size":16,"logicalType":"decimal","precision":4}"#),
            Some(Physical::Fixed(16))
        );
        assert_eq!(
            of(r#"{"type":"bytes","logicalType":"decimal","precision":4}"#),
            Some(Physical::Bytes)
        );
        assert_eq!(of(r#"{"type":"array","items":"int"}"#), None);
        assert_eq!(Physical::Fixed(3).name(), "fixed");
    }
}
