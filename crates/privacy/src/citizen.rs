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
use serde_json::{Map, Value as Json};

use crate::error::PrivacyError;
use crate::seal;
use crate::vault::{CitizenKey, Opening};

/// The record field that holds the sealed fields.
pub const SEALED_FIELD: &str = "sealed";

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
    let p = &mut record.profile;
    let fields = SealedProfile {
        personal_id: &p.personal_id,
        full_name: &p.full_name,
        birth_date: p.birth_date,
        sex: p.sex,
        permanent_unit: &p.permanent_unit,
        temporary_unit: p.temporary_unit.as_deref(),
        address_line: p.address_line.as_deref(),
        phone: p.phone.as_deref(),
        email: p.email.as_deref(),
    };
    let plaintext =
        serde_json::to_vec(&fields).map_err(|e| PrivacyError::Invalid(e.to_string()))?;
    let sealed = seal::seal(&key.key, &seal::aad(TOPIC, &key.pseudonym), &plaintext)?;
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

/// The plaintext of a sealed profile: the fields by their paths ([`sealed_paths`]), nulls
/// left out.
#[derive(serde::Serialize)]
struct SealedProfile<'a> {
    #[serde(rename = "profile.personal_id")]
    personal_id: &'a str,
    #[serde(rename = "profile.full_name")]
    full_name: &'a str,
    #[serde(rename = "profile.birth_date")]
    birth_date: i32,
    #[serde(rename = "profile.sex")]
    sex: Sex,
    #[serde(rename = "profile.permanent_unit")]
    permanent_unit: &'a str,
    #[serde(
        rename = "profile.temporary_unit",
        skip_serializing_if = "Option::is_none"
    )]
    temporary_unit: Option<&'a str>,
    #[serde(
        rename = "profile.address_line",
        skip_serializing_if = "Option::is_none"
    )]
    address_line: Option<&'a str>,
    #[serde(rename = "profile.phone", skip_serializing_if = "Option::is_none")]
    phone: Option<&'a str>,
    #[serde(rename = "profile.email", skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
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
    let clear: Map<String, Json> = serde_json::from_slice(&plaintext).map_err(|e| {
        PrivacyError::Unreadable(format!("sealed fields are not a JSON object: {e}"))
    })?;
    for (path, json) in clear {
        // A field without a class in the writer schema is not opened: nobody granted it.
        if class_at(schema, &path).is_some_and(|c| opening.classes.contains(&c)) {
            set_path(value, schema, &path, &json)?;
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
                    if let Some(class) = field
                        .custom_attributes
                        .get(PERSONAL_DATA_ATTR)
                        .and_then(Json::as_str)
                        .and_then(PersonalDataClass::parse)
                        .filter(|c| *c != PersonalDataClass::None)
                    {
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

/// The personal-data class of the field at the dotted `path` of `schema`.
fn class_at(schema: &Schema, path: &str) -> Option<PersonalDataClass> {
    let mut schema = schema;
    let mut class = None;
    for name in path.split('.') {
        let Schema::Record(record) = schema else {
            return None;
        };
        let field = record.fields.iter().find(|f| f.name == name)?;
        class = field
            .custom_attributes
            .get(PERSONAL_DATA_ATTR)
            .and_then(Json::as_str)
            .and_then(PersonalDataClass::parse);
        schema = &field.schema;
    }
    class
}

/// Put `json` at the dotted `path` of `value`, as the Avro value its schema says.
fn set_path(
    value: &mut Value,
    schema: &Schema,
    path: &str,
    json: &Json,
) -> Result<(), PrivacyError> {
    let mut value = value;
    let mut schema = schema;
    for name in path.split('.') {
        let (Value::Record(fields), Schema::Record(record)) = (value, schema) else {
            return Err(PrivacyError::Invalid(format!(
                "{path}: {name} is not inside a record"
            )));
        };
        let field = record
            .fields
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| PrivacyError::Invalid(format!("{path}: the schema has no {name}")))?;
        let (_, v) = fields
            .iter_mut()
            .find(|(n, _)| n == name)
            .ok_or_else(|| PrivacyError::Invalid(format!("{path}: the record has no {name}")))?;
        value = v;
        schema = &field.schema;
    }
    *value = avro_of(json, schema).ok_or_else(|| {
        PrivacyError::Invalid(format!("{path}: {json} is not a value of its schema"))
    })?;
    Ok(())
}

/// The Avro value of `json` (as [`seal_citizen`] wrote it) for `schema`.
fn avro_of(json: &Json, schema: &Schema) -> Option<Value> {
    Some(match schema {
        Schema::String => Value::String(json.as_str()?.to_string()),
        Schema::Int => Value::Int(i32::try_from(json.as_i64()?).ok()?),
        Schema::Date => Value::Date(i32::try_from(json.as_i64()?).ok()?),
        Schema::Long => Value::Long(json.as_i64()?),
        Schema::Boolean => Value::Boolean(json.as_bool()?),
        Schema::Enum(e) => {
            let symbol = json.as_str()?;
            let index = e.symbols.iter().position(|s| s == symbol)?;
            Value::Enum(u32::try_from(index).ok()?, symbol.to_string())
        }
        Schema::Union(u) => {
            let variants = u.variants();
            let pick = |null: bool| {
                variants
                    .iter()
                    .position(|v| matches!(v, Schema::Null) == null)
            };
            if json.is_null() {
                Value::Union(u32::try_from(pick(true)?).ok()?, Box::new(Value::Null))
            } else {
                let i = pick(false)?;
                Value::Union(
                    u32::try_from(i).ok()?,
                    Box::new(avro_of(json, &variants[i])?),
                )
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
