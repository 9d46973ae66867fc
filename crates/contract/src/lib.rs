//! The data contract of the lienthong bus: the first and last thing every event touches.
//!
//! A department's or ward's event is checked against the topic [`catalog`] and its Avro schema,
//! encoded by the [`codec`] in the Confluent wire format (`0x00`, 4-byte schema id, Avro body)
//! on its way into Kafka, and decoded by the same codec in every sink on its way into an
//! agency's store. The [`compat`] checker decides how schemas may evolve, for the registry and
//! for CI. Vietnamese text is normalised to NFC by [`nfc`] where it enters the bus.
//!
//! ```text
//! schemas/catalog.toml + *.avsc ──► Catalog ──► Codec (schemas parsed once, cached by id)
//!                                       │            ├─ encode: Rust event → wire bytes (SDK, gateway)
//!                                       │            └─ decode: wire bytes → Rust event / Value (sinks)
//!                                       └──► compat: may this schema replace that one?
//! ```

pub mod catalog;
pub mod codec;
pub mod compat;
pub mod diff;
pub mod error;
pub mod events;
pub mod grant;
pub mod history;
pub mod json;
pub mod nfc;
pub mod physical;
pub mod resolve;
pub mod samples;
pub mod write;

pub use catalog::{AgencyKind, Catalog, CleanupPolicy, Grantee, PersonalDataClass, TopicSpec};
pub use codec::{Codec, RegisteredSchema};
pub use compat::{CompatibilityMode, check_compatibility};
pub use error::{ContractError, Result};

/// The root of this repository's checkout, for tests, benchmarks and tools run by cargo.
///
/// Found at run time, from the `CARGO_MANIFEST_DIR` cargo sets for the running test or bench,
/// walking up to the folder that holds `schemas/catalog.toml`: a build directory shared between
/// two clones (`ops/test` keeps one) must not point one clone's tests into the other.
pub fn repo_root() -> std::path::PathBuf {
    let compiled = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let running = std::env::var_os("CARGO_MANIFEST_DIR").map(std::path::PathBuf::from);
    running
        .iter()
        .flat_map(|d| d.ancestors())
        .chain(compiled.ancestors())
        .find(|d| d.join("schemas").join("catalog.toml").is_file())
        .map_or_else(|| compiled.join("../.."), std::path::Path::to_path_buf)
}

/// The `schemas/` folder of this repository, for tests, tools and the embedded demo.
pub fn repo_schemas_dir() -> std::path::PathBuf {
    repo_root().join("schemas")
}
