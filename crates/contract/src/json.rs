//! Avro → JSON, for people reading the log (`lienthong tail`) and for tools that take JSON.
//!
//! The output is the JSON the gateway and `lienthong publish` accept, so a tailed event can be
//! sent again as it is: records are objects; a union with one non-null branch is `null` or the
//! bare value; any other union is `{"<branch name>": value}` (Avro's JSON encoding, short
//! names); enums are their symbol; `date` is `"YYYY-MM-DD"`; `timestamp-millis` and
//! `timestamp-micros` are RFC 3339 in UTC (`2026-11-28T04:03:46.123Z`); `uuid` is its text;
//! `bytes` and `fixed` are strings of code points 0–255 (Avro's JSON encoding).

use apache_avro::Schema;
use apache_avro::schema::{NamesRef, UnionSchema};
use apache_avro::types::Value;
use serde_json::{Map, Value as Json};

/// `value`, written by (or resolved to) `schema`, as JSON.
pub fn to_json(value: &Value, schema: &Schema) -> Json {
    let names = match apache_avro::schema::ResolvedSchema::try_from(schema) {
        Ok(r) => r.get_names().clone(),
        Err(_) => NamesRef::default(),
    };
    Writer { names: &names }.value(value, schema)
}

struct Writer<'a, 'n> {
    names: &'n NamesRef<'a>,
}

impl<'a> Writer<'a, '_> {
    fn deref<'s>(&self, schema: &'s Schema) -> &'s Schema
    where
        'a: 's,
    {
        match schema {
            Schema::Ref { name } => self.names.get(name).copied().unwrap_or(schema),
            s => s,
        }
    }

    fn value(&self, value: &Value, schema: &'a Schema) -> Json {
        let schema = self.deref(schema);
        match (value, schema) {
            (Value::Union(index, inner), Schema::Union(union)) => self.union(*index, inner, union),
            // A value already resolved out of its union.
            (v, Schema::Union(union)) => match union
                .variants()
                .iter()
                .position(|s| !matches!(s, Schema::Null))
            {
                Some(i) if !matches!(v, Value::Null) => self.union(i as u32, v, union),
                _ => Json::Null,
            },
            (Value::Record(fields), Schema::Record(record)) => {
                let mut out = Map::new();
                for (name, v) in fields {
                    let field_schema = record
                        .lookup
                        .get(name)
                        .and_then(|i| record.fields.get(*i))
                        .map(|f| &f.schema);
                    let json = match field_schema {
                        Some(s) => self.value(v, s),
                        None => plain(v),
                    };
                    out.insert(name.clone(), json);
                }
                Json::Object(out)
            }
            (Value::Array(items), Schema::Array(array)) => {
                Json::Array(items.iter().map(|v| self.value(v, &array.items)).collect())
            }
            (Value::Map(entries), Schema::Map(map)) => Json::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), self.value(v, &map.types)))
                    .collect(),
            ),
            (v, _) => plain(v),
        }
    }

    fn union(&self, index: u32, inner: &Value, union: &'a UnionSchema) -> Json {
        let variants = union.variants();
        let Some(branch) = variants.get(index as usize) else {
            return plain(inner);
        };
        let non_null = variants
            .iter()
            .filter(|s| !matches!(s, Schema::Null))
            .count();
        if matches!(branch, Schema::Null) || matches!(inner, Value::Null) {
            return Json::Null;
        }
        let json = self.value(inner, branch);
        if non_null == 1 {
            return json;
        }
        let mut out = Map::new();
        out.insert(branch_name(self.deref(branch)), json);
        Json::Object(out)
    }
}

/// The name a union branch goes by in Avro's JSON encoding (short names for named types).
fn branch_name(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => r.name.name.clone(),
        Schema::Enum(e) => e.name.name.clone(),
        Schema::Fixed(f) => f.name.name.clone(),
        Schema::Ref { name } => name.name.clone(),
        Schema::Array(_) => "array".into(),
        Schema::Map(_) => "map".into(),
        other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
    }
}

/// A value that needs no schema to be written.
fn plain(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Long(l) => Json::from(*l),
        Value::Float(f) => serde_json::Number::from_f64(f64::from(*f))
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Value::Double(d) => serde_json::Number::from_f64(*d)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Value::Bytes(b) | Value::Fixed(_, b) => {
            Json::String(b.iter().map(|&c| c as char).collect())
        }
        Value::String(s) => Json::String(s.clone()),
        Value::Enum(_, symbol) => Json::String(symbol.clone()),
        Value::Union(_, inner) => plain(inner),
        Value::Array(items) => Json::Array(items.iter().map(plain).collect()),
        Value::Map(entries) => {
            Json::Object(entries.iter().map(|(k, v)| (k.clone(), plain(v))).collect())
        }
        Value::Record(fields) => {
            Json::Object(fields.iter().map(|(k, v)| (k.clone(), plain(v))).collect())
        }
        Value::Date(days) => Json::String(format_date(*days)),
        Value::TimestampMillis(ms) | Value::LocalTimestampMillis(ms) => {
            Json::String(format_timestamp_micros(ms.saturating_mul(1_000), 3))
        }
        Value::TimestampMicros(us) | Value::LocalTimestampMicros(us) => {
            Json::String(format_timestamp_micros(*us, 6))
        }
        Value::Uuid(u) => Json::String(u.to_string()),
        Value::TimeMillis(ms) => Json::from(*ms),
        Value::TimeMicros(us) => Json::from(*us),
        other => Json::String(format!("{other:?}")),
    }
}

/// Civil date of a day number (days since 1970-01-01), proleptic Gregorian.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DD` of a day number.
pub fn format_date(days: i32) -> String {
    let (y, m, d) = civil_from_days(i64::from(days));
    format!("{y:04}-{m:02}-{d:02}")
}

/// RFC 3339 in UTC of microseconds since the epoch, with `digits` (3 or 6) fractional digits.
pub fn format_timestamp_micros(micros: i64, digits: u32) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let fraction = if digits == 3 {
        format!("{:03}", frac / 1_000)
    } else {
        format!("{frac:06}")
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{fraction}Z",
        s / 3_600,
        s % 3_600 / 60,
        s % 60
    )
}

// --- reading dates and times (the inverse, for JSON that comes in) ------------------------

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
/// Day number (days since 1970-01-01) of a civil date, proleptic Gregorian.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `YYYY-MM-DD` as days since the epoch.
pub fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (digits(&s[0..4])?, digits(&s[5..7])?, digits(&s[8..10])?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// An RFC 3339 timestamp with an offset as (seconds since the epoch, nanoseconds).
pub fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
    if !s.is_ascii() || s.len() < 20 {
        return None;
    }
    let days = parse_date(&s[..10])?;
    let b = s.as_bytes();
    if !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (
        digits(&s[11..13])?,
        digits(&s[14..16])?,
        digits(&s[17..19])?,
    );
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 9 {
            return None;
        }
        let mut v: u32 = frac[..n].parse().ok()?;
        for _ in n..9 {
            v *= 10;
        }
        nanos = v;
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || rb[3] != b':' {
                return None;
            }
            let (oh, om) = (digits(&rest[1..3])?, digits(&rest[4..6])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            match rb[0] {
                b'+' => o,
                b'-' => -o,
                _ => return None,
            }
        }
    };
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - offset, nanos))
}

/// An RFC 3339 timestamp with an offset, or a plain integer, as milliseconds since the epoch.
pub fn parse_time_millis(s: &str) -> Option<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    let (secs, nanos) = parse_rfc3339(s)?;
    secs.checked_mul(1_000)?
        .checked_add(i64::from(nanos / 1_000_000))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Codec;
    use crate::samples;

    #[test]
    fn dates_and_times() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(20_784), "2026-11-27");
        assert_eq!(format_date(-1), "1969-12-31");
        assert_eq!(format_date(11_016), "2000-02-29");
        assert_eq!(
            format_timestamp_micros(1_762_070_400_123_000, 3),
            "2025-11-02T08:00:00.123Z"
        );
        assert_eq!(
            format_timestamp_micros(-1, 6),
            "1969-12-31T23:59:59.999999Z"
        );
        // Written and read back.
        for days in [-1, 0, 11_016, 20_784] {
            assert_eq!(parse_date(&format_date(days)), Some(i64::from(days)));
        }
        assert_eq!(
            parse_time_millis("2025-11-02T15:00:00.123+07:00"),
            Some(1_762_070_400_123)
        );
        assert_eq!(parse_time_millis("1762070400123"), Some(1_762_070_400_123));
        assert_eq!(parse_time_millis("2025-02-29T00:00:00Z"), None);
        assert_eq!(parse_time_millis("yesterday"), None);
    }

    #[test]
    fn a_case_event_reads_as_the_gateway_json() {
        let catalog = crate::Catalog::load(crate::repo_schemas_dir()).unwrap();
        let codec = Codec::from_catalog(&catalog).unwrap();
        let id = catalog.local_id("hcm.case.events").unwrap();
        let bytes = codec
            .encode_to_vec(id, &samples::typical_case_submitted())
            .unwrap();
        let (id, value) = codec.decode_value(&bytes, None).unwrap();
        let schema = codec.schema(id).unwrap();
        let json = to_json(&value, schema.schema());
        assert_eq!(json["envelope"]["occurred_at"], "2025-11-02T08:00:01.000Z");
        assert_eq!(json["envelope"]["aggregate_id"], "HS-26734-2025-000123");
        let submitted = &json["event"]["CaseSubmitted"];
        assert_eq!(submitted["channel"], "ONLINE");
        assert_eq!(submitted["due_date"], "2025-11-07");
        assert_eq!(submitted["home_unit"], "27004");
        // ["null", Signature]: bare record or null.
        assert_eq!(
            submitted["documents"][0]["signature"]["signer_name"],
            "Trần Thị Bích Ngọc"
        );
        assert_eq!(submitted["documents"][1]["signature"], Json::Null);
        assert_eq!(submitted["documents"][0]["size_bytes"], 180_001);
    }
}
