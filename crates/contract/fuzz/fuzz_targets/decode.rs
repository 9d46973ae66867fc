//! Feed arbitrary bytes to the contract decoder, on every catalog schema and on both paths.
//! Any panic, hang or oversized allocation is a bug: bad bytes must give a typed error.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use lienthong_contract::codec::write_header;
use lienthong_contract::events::{AdminUnitRecord, CaseEvent, CitizenRecord, FeedbackEvent, ProcedureRecord};
use lienthong_contract::{Catalog, Codec, repo_schemas_dir};

static CODEC: LazyLock<Codec> = LazyLock::new(|| {
    let catalog = Catalog::load(repo_schemas_dir()).expect("catalog");
    Codec::from_catalog(&catalog).expect("schemas")
});

fuzz_target!(|data: &[u8]| {
    let codec = &*CODEC;
    // As given (exercises the header checks), and framed for each schema id.
    let _ = codec.decode_value(data, None);
    for id in 1..=5u32 {
        let mut framed = Vec::with_capacity(data.len() + 5);
        write_header(id, &mut framed);
        framed.extend_from_slice(data);
        let _ = codec.decode_value(&framed, None);
        let _ = codec.decode::<serde::de::IgnoredAny>(&framed);
        match id {
            1 => drop(codec.decode::<CaseEvent>(&framed)),
            2 => drop(codec.decode::<CitizenRecord>(&framed)),
            3 => drop(codec.decode::<FeedbackEvent>(&framed)),
            4 => drop(codec.decode::<AdminUnitRecord>(&framed)),
            _ => drop(codec.decode::<ProcedureRecord>(&framed)),
        }
    }
});
