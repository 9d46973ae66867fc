//! Golden vectors: the Avro bytes of every sample event, checked in. This test holds the Rust
//! codec to them; `tests/tests/fastavro_interop.rs` holds Python's fastavro (a codec nobody here
//! wrote) to the same bytes and values, both ways. Regenerate after a deliberate schema or
//! sample change with `LIENTHONG_BLESS=1 cargo test -p lienthong-contract --test golden`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::PathBuf;

use lienthong_contract::codec::split_frame;
use lienthong_contract::{Catalog, Codec, repo_schemas_dir, samples};
use serde::Serialize;
use serde_json::{Value, json};

fn golden_file() -> PathBuf {
    lienthong_contract::repo_root().join("crates/contract/tests/golden/vectors.json")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `(name, topic, value as serde JSON, Avro body)` for every sample.
fn current_vectors() -> Value {
    let catalog = Catalog::load(repo_schemas_dir()).unwrap();
    let codec = Codec::from_catalog(&catalog).unwrap();
    let mut vectors = Vec::new();
    let mut add = |name: String, topic: &str, value: &dyn erased::Encode| {
        let spec = catalog.topic(topic).unwrap();
        let id = catalog.local_id(topic).unwrap();
        let framed = value.encode(&codec, id);
        let (_, body) = split_frame(&framed).unwrap();
        vectors.push(json!({"name": name, "topic": topic, "schema": spec.schema_json, "value": value.json(), "avro_hex": hex(body)}));
    };
    for (i, e) in samples::case_lifecycle().iter().enumerate() {
        add(format!("case_{i}"), "hcm.case.events", e);
    }
    add(
        "citizen".into(),
        "hcm.citizen.records",
        &samples::citizen_record(),
    );
    for (i, e) in samples::feedback_lifecycle().iter().enumerate() {
        add(format!("feedback_{i}"), "hcm.feedback.events", e);
    }
    add("unit".into(), "hcm.reference.units", &samples::admin_unit());
    add(
        "procedure".into(),
        "hcm.reference.procedures",
        &samples::procedure(),
    );
    Value::Array(vectors)
}

mod erased {
    use super::*;
    pub trait Encode {
        fn encode(&self, codec: &Codec, id: u32) -> Vec<u8>;
        fn json(&self) -> Value;
    }
    impl<T: Serialize> Encode for T {
        fn encode(&self, codec: &Codec, id: u32) -> Vec<u8> {
            codec.encode_to_vec(id, self).unwrap()
        }
        fn json(&self) -> Value {
            serde_json::to_value(self).unwrap()
        }
    }
}

#[test]
fn the_codec_reproduces_the_golden_vectors() {
    let current = current_vectors();
    let path = golden_file();
    if std::env::var_os("LIENTHONG_BLESS").is_some() {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&current).unwrap() + "\n",
        )
        .unwrap();
        eprintln!("wrote {}", path.display());
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; bless with LIENTHONG_BLESS=1", path.display()));
    let golden: Value = serde_json::from_str(&text).unwrap();
    let (golden, current) = (golden.as_array().unwrap(), current.as_array().unwrap());
    assert_eq!(golden.len(), current.len(), "number of vectors");
    assert!(golden.len() >= 15);
    for (g, c) in golden.iter().zip(current) {
        assert_eq!(g["name"], c["name"]);
        assert_eq!(
            g["value"], c["value"],
            "{}: sample value changed",
            g["name"]
        );
        assert_eq!(
            g["avro_hex"], c["avro_hex"],
            "{}: encoding changed",
            g["name"]
        );
    }
}
