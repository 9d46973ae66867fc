//! Sealing a citizen record before it is published, and opening it back in a sink.
//!
//! Sealed, a record's profile fields are in its `sealed` field (see [`crate::seal`] for the
//! format), and the fields themselves hold masked values: the personal id and the envelope's
//! aggregate id (the Kafka key) hold the citizen's pseudonym, text is empty, the birth date is
//! 0, the sex `UNSPECIFIED`, optional fields null. A reader without the key sees exactly that.

use apache_avro::Schema;
use apache_avro::types::Value;
use lienthong_contract::PersonalDataClass;
use lienthong_contract::catalog::PERSONAL_DATA_ATTR;
use lienthong_contract::events::{CitizenRecord, Sex};
use lienthong_contract::write::WriteAvro;
use serde_json::Value as Json;

use crate::error::PrivacyError;
use crate::seal;
use crate::vault::{CitizenKey, Opening};

/// The record field that holds the sealed fields.
pub const SEALED_FIELD: &str = "sealed";

/// The record field whose value is sealed: the citizen's profile.
pub const PROFILE_FIELD: &str = "profile";

/// The citizen topic.
pub(crate) const TOPIC: &str = "hcm.citizen.records";

/// The paths of the fields a citizen record seals: every personal field of the profile. The
/// test `sealed_paths_are_the_profiles_personal_fields` holds this list to the schema.
pub fn sealed_paths() -> &'static [&'static str] {
    &[
        "profile.personal_id",
        "profile.full_name",
        "profile.birth_date",
        "profile.sex",
        "profile.permanent_unit",
        "profile.temporary_unit",
        "profile.address_line",
        "profile.phone",
        "profile.email",
    ]
}

/// Seal `record`'s profile under the citizen's key (from [`crate::KeyVault::for_citizen`] of
/// its personal id), in place. A record already sealed is left as it is.
pub fn seal_citizen(record: &mut CitizenRecord, key: &CitizenKey) -> Result<(), PrivacyError> {
    if record.sealed.is_some() {
        return Ok(());
    }
    let mut plaintext = Vec::with_capacity(192);
    record.profile.write_avro(&mut plaintext);
    let sealed = seal::seal(&key.key, &seal::aad(TOPIC, &key.pseudonym), &plaintext)?;
    let p = &mut record.profile;
    p.personal_id = key.pseudonym.clone();
    p.full_name = String::new();
    p.birth_date = 0;
    p.sex = Sex::Unspecified;
    p.permanent_unit = String::new();
    p.temporary_unit = None;
    p.address_line = None;
    p.phone = None;
    p.email = None;
    record.envelope.aggregate_id = key.pseudonym.clone();
    record.sealed = Some(sealed);
    Ok(())
}

/// Whether a decoded record carries sealed fields (a non-null [`SEALED_FIELD`]).
pub fn is_sealed(value: &Value) -> bool {
    let Value::Record(fields) = value else {
        return false;
    };
    fields.iter().any(|(n, v)| {
        n == SEALED_FIELD
            && match v {
                Value::Union(_, inner) => matches!(**inner, Value::String(_)),
                Value::String(_) => true,
                _ => false,
            }
    })
}

/// What [`open_record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// The record was not sealed; nothing changed.
    Clear,
    /// Opened: the fields hold their clear values again.
    Opened,
    /// No key (not granted, or the citizen is erased): the fields keep their masked values.
    Masked,
}

/// Open a decoded record (`value`, written with `schema`) of `topic` in place with what the
/// key service released (`opening`: the citizen's key and the classes the reader's grant
/// covers), or leave it masked when there is nothing. Only fields whose schema class the grant
/// covers are opened; the others stay masked. Either way its `sealed` field is emptied, so no
/// store keeps the ciphertext.
pub fn open_record(
    value: &mut Value,
    schema: &Schema,
    topic: &str,
    opening: Option<&Opening>,
) -> Result<Opened, PrivacyError> {
    let Value::Record(fields) = value else {
        return Err(PrivacyError::Invalid("not a record".into()));
    };
    let Some(slot) = fields.iter_mut().find(|(n, _)| n == SEALED_FIELD) else {
        return Ok(Opened::Clear);
    };
    let sealed = match std::mem::replace(&mut slot.1, Value::Union(0, Box::new(Value::Null))) {
        Value::Union(_, inner) => match *inner {
            Value::String(s) => s,
            _ => return Ok(Opened::Clear),
        },
        Value::String(s) => s,
        _ => return Ok(Opened::Clear),
    };
    let Some(opening) = opening else {
        return Ok(Opened::Masked);
    };
    let pseudonym = aggregate_id(fields)
        .ok_or_else(|| PrivacyError::Invalid("a sealed record without an aggregate id".into()))?;
    let plaintext = seal::open(&opening.key, &seal::aad(topic, &pseudonym), &sealed)?;
    let Some((profile_schema, Value::Record(masked))) = record_field(schema, value, PROFILE_FIELD)
    else {
        return Err(PrivacyError::Invalid(format!(
            "a sealed record without a {PROFILE_FIELD} record"
        )));
    };
    // The plaintext is authenticated, but its sealer is still outside input: its lengths are
    // checked against its size before the decoder allocates by them.
    check_bounded(profile_schema, &plaintext).map_err(|e| {
        PrivacyError::Unreadable(format!(
            "the sealed fields are not its {PROFILE_FIELD}: {e}"
        ))
    })?;
    let mut reader = plaintext.as_slice();
    let clear =
        apache_avro::from_avro_datum_schemata(profile_schema, vec![schema], &mut reader, None)
            .map_err(|e| {
                PrivacyError::Unreadable(format!(
                    "the sealed fields are not its {PROFILE_FIELD}: {e}"
                ))
            })?;
    let (Value::Record(clear), true) = (clear, reader.is_empty()) else {
        return Err(PrivacyError::Unreadable(format!(
            "the sealed fields are not exactly its {PROFILE_FIELD}"
        )));
    };
    let Schema::Record(profile_record) = profile_schema else {
        return Err(PrivacyError::Invalid(format!(
            "{PROFILE_FIELD} is not a record"
        )));
    };
    for ((name, clear), field) in clear.into_iter().zip(&profile_record.fields) {
        // A field without a class in the writer schema is not opened: nobody granted it.
        let granted = class_of(field).is_some_and(|c| opening.classes.contains(&c));
        if let Some((_, slot)) = masked.iter_mut().find(|(n, _)| *n == name)
            && granted
        {
            *slot = clear;
        }
    }
    Ok(Opened::Opened)
}

fn aggregate_id(fields: &[(String, Value)]) -> Option<String> {
    let (_, envelope) = fields.iter().find(|(n, _)| n == "envelope")?;
    let Value::Record(envelope) = envelope else {
        return None;
    };
    match envelope.iter().find(|(n, _)| n == "aggregate_id")? {
        (_, Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

/// Every field of a record `schema` that carries personal data, by dotted path, with its class:
/// the leaves under its top-level fields, outside the envelope and the sealed field (what a
/// reader without a key sees masked).
pub fn personal_paths(schema: &Schema) -> Vec<(String, PersonalDataClass)> {
    fn walk(schema: &Schema, prefix: &str, out: &mut Vec<(String, PersonalDataClass)>) {
        let Schema::Record(record) = schema else {
            return;
        };
        for field in &record.fields {
            if prefix.is_empty() && (field.name == "envelope" || field.name == SEALED_FIELD) {
                continue;
            }
            let path = if prefix.is_empty() {
                field.name.clone()
            } else {
                format!("{prefix}.{}", field.name)
            };
            match &field.schema {
                Schema::Record(_) => walk(&field.schema, &path, out),
                _ => {
                    if let Some(class) = class_of(field) {
                        out.push((path, class));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(schema, "", &mut out);
    out
}

/// Whether `bytes` is exactly one value of `schema` in Avro binary, every length and count no
/// larger than what is left: what makes decoding it safe (a decoder allocates by the lengths it
/// reads). Named references are not followed (a sealed profile defines its types inline).
fn check_bounded(schema: &Schema, bytes: &[u8]) -> Result<(), String> {
    fn long(input: &mut &[u8]) -> Result<i64, String> {
        lienthong_contract::write::read_long(input)
            .ok_or_else(|| "a number cut short or longer than 10 bytes".into())
    }
    fn skip(input: &mut &[u8], n: usize) -> Result<(), String> {
        if n > input.len() {
            return Err(format!("{n} bytes announced, {} left", input.len()));
        }
        *input = &input[n..];
        Ok(())
    }
    fn value(schema: &Schema, input: &mut &[u8]) -> Result<(), String> {
        match schema {
            Schema::Null => Ok(()),
            Schema::Boolean => skip(input, 1),
            Schema::Float => skip(input, 4),
            Schema::Double => skip(input, 8),
            Schema::Int
            | Schema::Long
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => long(input).map(|_| ()),
            Schema::String | Schema::Bytes | Schema::Uuid => {
                let n = long(input)?;
                skip(input, usize::try_from(n).map_err(|_| "a negative length")?)
            }
            Schema::Fixed(f) => skip(input, f.size),
            Schema::Enum(e) => {
                let i = long(input)?;
                usize::try_from(i)
                    .ok()
                    .filter(|i| *i < e.symbols.len())
                    .map(|_| ())
                    .ok_or_else(|| format!("enum index {i} out of range"))
            }
            Schema::Union(u) => {
                let i = long(input)?;
                let branch = usize::try_from(i)
                    .ok()
                    .and_then(|i| u.variants().get(i))
                    .ok_or_else(|| format!("union branch {i} out of range"))?;
                value(branch, input)
            }
            Schema::Record(r) => r.fields.iter().try_for_each(|f| value(&f.schema, input)),
            other => Err(format!("a {other:?} is not expected in a sealed profile")),
        }
    }
    let mut input = bytes;
    value(schema, &mut input)?;
    if input.is_empty() {
        Ok(())
    } else {
        Err(format!("{} bytes after the value", input.len()))
    }
}

/// The personal-data class a field carries, if any.
fn class_of(field: &apache_avro::schema::RecordField) -> Option<PersonalDataClass> {
    field
        .custom_attributes
        .get(PERSONAL_DATA_ATTR)
        .and_then(Json::as_str)
        .and_then(PersonalDataClass::parse)
        .filter(|c| *c != PersonalDataClass::None)
}

/// The top-level field `name` of a decoded record `value` and its schema in `schema`.
fn record_field<'s, 'v>(
    schema: &'s Schema,
    value: &'v mut Value,
    name: &str,
) -> Option<(&'s Schema, &'v mut Value)> {
    let (Schema::Record(record), Value::Record(fields)) = (schema, value) else {
        return None;
    };
    let field = record.fields.iter().find(|f| f.name == name)?;
    let (_, v) = fields.iter_mut().find(|(n, _)| n == name)?;
    Some((&field.schema, v))
}

#[cfg(test)]
mod tests;
