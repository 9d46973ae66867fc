//! The JSON of a request body, as the encoder reads it: a tree that borrows its strings from
//! the body instead of copying them, with objects as lists of fields.
//!
//! `serde_json::Value` would do, at about twice the cost: every string copied, every object an
//! ordered hash map (the workspace enables `preserve_order`) built only to look up a handful
//! of fields once. An event's objects are small, so a field is found by a linear scan.
//!
//! Parsing is serde_json's (with its recursion limit); on top of it, an object that names a
//! key twice is refused: which of the two a reader takes differs between JSON libraries, so
//! such an event is ambiguous.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// One JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as serde_json reads it.
    Number(serde_json::Number),
    /// A string, borrowed from the body unless it had escapes (or was normalised).
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Json<'a>>),
    /// An object, its fields in the body's order (no key twice).
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// Parse `bytes` (one JSON document).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The same value, borrowing from `value` (schema defaults, tests).
    pub fn from_value(value: &'a serde_json::Value) -> Self {
        match value {
            serde_json::Value::Null => Json::Null,
            serde_json::Value::Bool(b) => Json::Bool(*b),
            serde_json::Value::Number(n) => Json::Number(n.clone()),
            serde_json::Value::String(s) => Json::String(Cow::Borrowed(s)),
            serde_json::Value::Array(a) => Json::Array(a.iter().map(Json::from_value).collect()),
            serde_json::Value::Object(o) => Json::Object(
                o.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Json::from_value(v)))
                    .collect(),
            ),
        }
    }

    /// The same value, owning its strings.
    pub fn into_owned(self) -> Json<'static> {
        match self {
            Json::Null => Json::Null,
            Json::Bool(b) => Json::Bool(b),
            Json::Number(n) => Json::Number(n),
            Json::String(s) => Json::String(Cow::Owned(s.into_owned())),
            Json::Array(a) => Json::Array(a.into_iter().map(Json::into_owned).collect()),
            Json::Object(o) => Json::Object(
                o.into_iter()
                    .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                    .collect(),
            ),
        }
    }

    /// What kind of value it is, for messages: "null", "a boolean", "a number", "a string",
    /// "an array", "an object".
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }

    /// Is it `null`?
    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// Is it a number?
    pub fn is_number(&self) -> bool {
        matches!(self, Json::Number(_))
    }

    /// The number as an `i64`, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    /// The number as an `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    /// The string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// The field `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(fields) => get_field(fields, key),
            _ => None,
        }
    }

    /// NFC-normalise every string inside (keys stay as they are: they are schema field
    /// names, ASCII by the catalog's rules, or map keys, which are not checked against NFC
    /// anywhere either). Already-normal strings stay borrowed.
    pub fn normalize(&mut self) {
        match self {
            Json::String(s) => {
                if let Cow::Owned(n) = lienthong_contract::nfc::normalize(s) {
                    *s = Cow::Owned(n);
                }
            }
            Json::Array(a) => a.iter_mut().for_each(Json::normalize),
            Json::Object(o) => o.iter_mut().for_each(|(_, v)| v.normalize()),
            Json::Null | Json::Bool(_) | Json::Number(_) => {}
        }
    }
}

/// The value of `key` among an object's fields.
pub fn get_field<'j, 'a>(
    fields: &'j [(Cow<'a, str>, Json<'a>)],
    key: &str,
) -> Option<&'j Json<'a>> {
    fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// As JSON text (used in messages about a value).
impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Number(n) => write!(f, "{n}"),
            Json::String(s) => write!(f, "{}", serde_json::Value::String(s.to_string())),
            Json::Array(a) => {
                f.write_str("[")?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Json::Object(o) => {
                f.write_str("{")?;
                for (i, (k, v)) in o.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}:{v}", serde_json::Value::String(k.to_string()))?;
                }
                f.write_str("}")
            }
        }
    }
}

/// An object key, borrowed from the body when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Objects up to this many fields are checked for a repeated key pair by pair; larger ones
/// (an Avro map can be large) through a sorted copy of their keys.
const SMALL_OBJECT: usize = 16;

fn repeated_key<'j>(fields: &'j [(Cow<'_, str>, Json<'_>)]) -> Option<&'j str> {
    if fields.len() <= SMALL_OBJECT {
        for (i, (k, _)) in fields.iter().enumerate() {
            if fields[..i].iter().any(|(seen, _)| seen == k) {
                return Some(k);
            }
        }
        return None;
    }
    let mut keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_ref()).collect();
    keys.sort_unstable();
    keys.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct JsonVisitor;
        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Json<'de>, E> {
                Ok(Json::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Json<'de>, E> {
                Ok(Json::Null)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Json<'de>, D2::Error> {
                Json::deserialize(d)
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Json<'de>, E> {
                Ok(Json::Bool(b))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json<'de>, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json<'de>, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json<'de>, E> {
                serde_json::Number::from_f64(v)
                    .map(Json::Number)
                    .ok_or_else(|| E::custom(format!("{v} is not a finite number")))
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Json<'de>, E> {
                Ok(Json::String(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Json<'de>, E> {
                Ok(Json::String(Cow::Owned(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Json<'de>, E> {
                Ok(Json::String(Cow::Owned(s)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
                let mut fields: Vec<(Cow<'de, str>, Json<'de>)> = Vec::new();
                while let Some(Key(k)) = map.next_key()? {
                    let v = map.next_value()?;
                    fields.push((k, v));
                }
                if let Some(k) = repeated_key(&fields) {
                    return Err(de::Error::custom(format!(
                        "the key {} appears twice in one object",
                        serde_json::Value::String(k.to_string())
                    )));
                }
                Ok(Json::Object(fields))
            }
        }
        d.deserialize_any(JsonVisitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn strings_without_escapes_are_borrowed_from_the_body() {
        let body = br#"{"a": "plain", "b": "esc\"aped", "c": [1, -2, 3.5, true, null]}"#;
        let j = Json::parse(body).unwrap();
        assert!(matches!(
            j.get("a"),
            Some(Json::String(Cow::Borrowed("plain")))
        ));
        assert!(matches!(j.get("b"), Some(Json::String(Cow::Owned(s))) if s == "esc\"aped"));
        let back: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(j, Json::from_value(&back));
        assert_eq!(j.to_string(), back.to_string());
    }

    #[test]
    fn a_key_named_twice_is_refused_in_small_and_large_objects() {
        let err = Json::parse(br#"{"a": 1, "b": 2, "a": 3}"#).unwrap_err();
        assert!(err.to_string().contains("\"a\" appears twice"), "{err}");
        let mut large: Vec<String> = (0..100).map(|i| format!("\"k{i}\": {i}")).collect();
        large.push("\"k42\": 0".into());
        let body = format!("{{{}}}", large.join(","));
        let err = Json::parse(body.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("\"k42\" appears twice"), "{err}");
        large.pop();
        let body = format!("{{{}}}", large.join(","));
        assert!(Json::parse(body.as_bytes()).is_ok());
    }

    #[test]
    fn normalising_replaces_only_the_strings_that_change() {
        let nfd = "Phu\u{31b}o\u{31b}\u{300}ng";
        let body = serde_json::json!({"x": nfd, "y": ["Phường"]}).to_string();
        let mut j = Json::parse(body.as_bytes()).unwrap();
        j.normalize();
        assert_eq!(j.get("x").and_then(Json::as_str), Some("Phường"));
        assert!(matches!(j.get("x"), Some(Json::String(Cow::Owned(_)))));
        let Some(Json::Array(y)) = j.get("y") else {
            panic!("y is an array")
        };
        assert!(matches!(&y[0], Json::String(Cow::Borrowed("Phường"))));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let body = "[".repeat(100_000);
        assert!(Json::parse(body.as_bytes()).is_err());
    }
}
