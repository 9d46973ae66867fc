//! Citizens' personal data on the bus, where it is decided what a reader can see of a citizen.
//!
//! A citizen record enters the bus already sealed: before it reaches Kafka, the publisher (the
//! SDK, the gateway) asks the key service for the citizen's **data key**, encrypts the record's
//! personal fields with it (AES-256-GCM) into one `sealed` field, and leaves masked values in
//! their places. The personal id, as the Kafka key and wherever a field holds one, is replaced
//! by the citizen's **pseudonym**, a keyed hash that links a citizen's records together without
//! revealing who it is. Each data key is kept only wrapped (encrypted) under the city's
//! key-encryption key, in a compacted topic ([`KeyVault`]). A sink that may read the citizen
//! gets the key and opens the record back to its clear form ([`open_record`]); one that may not
//! stores the masked values. Erasing a citizen deletes the data key, so every copy of the
//! sealed fields — on the log, compacted or not, in the dead-letter topic, in backups — can
//! never be read again (crypto-shredding).
//!
//! The wire format, which a consumer in any language can follow, is in `docs/personal-data.md`
//! and in [`seal`].

mod access;
mod cases;
mod citizen;
mod error;
mod grants;
pub mod http;
mod master;
mod pseudonym;
pub mod seal;
mod service;
mod vault;

pub use access::{ACCESS_TOPIC, AccessRecord, CitizenAccess};
pub use cases::OpenCases;
pub use citizen::{
    Opened, SEALED_FIELD, is_sealed, open_record, personal_paths, seal_citizen, sealed_paths,
};
pub use error::PrivacyError;
pub use grants::{GRANTS_TOPIC, Grant, grant_id};
pub use http::{HttpKeys, HttpSealKeys};
pub use master::{KeyWrap, LocalKek, MASTER_KEY_ENV, MasterKey};
pub use pseudonym::Pseudonyms;
pub use seal::DataKey;
pub use service::{
    GrantedKeys, KeyService, KeyServiceConfig, Release, SchemaLookup, now_ms, profile_classes,
};
pub use vault::{
    CitizenKey, CitizenKeyService, CitizenKeys, KEYS_TOPIC, KeySource, KeyVault, Opening,
    WrappedKeys, keys_topic_config,
};
