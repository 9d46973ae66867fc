//! Unicode normalisation of Vietnamese text.
//!
//! Vietnamese has many letters with two diacritics ("ệ", "ở"), which keyboards and old systems
//! produce in different Unicode forms: one precomposed code point (NFC) or a base letter with
//! combining marks (NFD). The same name in two forms compares unequal, hashes differently and
//! breaks digests and lookups. The bus stores **NFC** only.
//!
//! Where it happens: at the edge, before encoding, once per event — [`NormalizeText`] for the
//! typed events of [`crate::events`] (what the producer SDK publishes) and [`normalize_json`]
//! for JSON input (what the HTTP gateway and the CLI receive). Sinks and digests never
//! normalise: what is on the log is already NFC, and a sink must store exactly what the log
//! says.

use std::borrow::Cow;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// `s` in NFC; borrows when it already is (the common case, checked without allocating).
pub fn normalize(s: &str) -> Cow<'_, str> {
    // ASCII is NFC: codes, ids and hashes, most of an event, skip the table lookups.
    if s.is_ascii() {
        return Cow::Borrowed(s);
    }
    match is_nfc_quick(s.chars()) {
        IsNormalized::Yes => Cow::Borrowed(s),
        _ => {
            let n: String = s.nfc().collect();
            if n == s {
                Cow::Borrowed(s)
            } else {
                Cow::Owned(n)
            }
        }
    }
}

/// Normalise a string in place.
pub fn normalize_in_place(s: &mut String) {
    if let Cow::Owned(n) = normalize(s) {
        *s = n;
    }
}

/// Normalise every string inside a JSON value in place (keys stay as they are: they are
/// schema field names, ASCII by the catalog's rules).
pub fn normalize_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => normalize_in_place(s),
        serde_json::Value::Array(a) => a.iter_mut().for_each(normalize_json),
        serde_json::Value::Object(o) => o.values_mut().for_each(normalize_json),
        _ => {}
    }
}

/// Values whose text can be normalised to NFC in place. Implemented for every event type in
/// [`crate::events`]; each implementation names every field, so a field added later without
/// being considered does not compile.
pub trait NormalizeText {
    /// Normalise every string inside to NFC.
    fn normalize_text(&mut self);
}

impl NormalizeText for String {
    fn normalize_text(&mut self) {
        normalize_in_place(self);
    }
}

impl<T: NormalizeText> NormalizeText for Option<T> {
    fn normalize_text(&mut self) {
        if let Some(v) = self {
            v.normalize_text();
        }
    }
}

impl<T: NormalizeText> NormalizeText for Vec<T> {
    fn normalize_text(&mut self) {
        self.iter_mut().for_each(NormalizeText::normalize_text);
    }
}

/// `NormalizeText` for types without text.
macro_rules! no_text {
    ($($t:ty),*) => {$(
        impl $crate::nfc::NormalizeText for $t {
            fn normalize_text(&mut self) {}
        }
    )*};
}
pub(crate) use no_text;
no_text!(bool, i32, i64);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nfd_vietnamese_becomes_nfc_and_nfc_is_borrowed() {
        let nfd = "Nguye\u{302}\u{303}n Thi\u{323} Hu\u{31b}\u{300}ng"; // Nguyễn Thị Hừng, decomposed
        let nfc = normalize(nfd);
        assert!(matches!(nfc, Cow::Owned(_)));
        assert_eq!(nfc, "Nguyễn Thị Hừng");
        assert_ne!(nfd.len(), nfc.len());
        assert!(matches!(normalize("Phường Bến Thành"), Cow::Borrowed(_)));
    }

    #[test]
    fn typed_events_are_normalised_in_every_text_field() {
        use crate::samples;
        let nfc = samples::case_lifecycle();
        let mut nfd = nfc.clone();
        // Decompose every string of every event, then normalise back.
        for e in &mut nfd {
            let mut json = serde_json::to_value(&*e).unwrap();
            decompose(&mut json);
            *e = serde_json::from_value(json).unwrap();
        }
        assert_ne!(
            nfd, nfc,
            "the samples hold Vietnamese text, which NFD changes"
        );
        for e in &mut nfd {
            e.normalize_text();
        }
        assert_eq!(nfd, nfc);
        let mut citizen = samples::citizen_record();
        citizen.profile.full_name = "Nguye\u{302}\u{303}n Va\u{306}n Hu\u{300}ng".into();
        citizen.normalize_text();
        assert_eq!(citizen, samples::citizen_record());
    }

    fn decompose(v: &mut serde_json::Value) {
        use unicode_normalization::UnicodeNormalization;
        match v {
            serde_json::Value::String(s) => *s = s.nfd().collect(),
            serde_json::Value::Array(a) => a.iter_mut().for_each(decompose),
            serde_json::Value::Object(o) => o.values_mut().for_each(decompose),
            _ => {}
        }
    }

    #[test]
    fn json_strings_are_normalised_deeply() {
        let mut v =
            serde_json::json!({"a": ["Thi\u{323}"], "b": {"c": "Hu\u{31b}\u{300}ng"}, "n": 1});
        normalize_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a": ["Thị"], "b": {"c": "Hừng"}, "n": 1})
        );
    }
}
