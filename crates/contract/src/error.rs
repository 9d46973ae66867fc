//! The one error type of the contract crate.

use std::path::PathBuf;

/// Everything that can go wrong loading the contract or encoding and decoding a record.
///
/// Every variant but [`ContractError::Io`] is **permanent**: retrying the same input gives the
/// same error. A sink sends a record that fails to decode to its dead-letter topic; a publisher
/// gets the message back. [`ContractError::is_transient`] tells them apart.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// A catalog or schema file could not be read.
    #[error("{}: cannot read: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The catalog is invalid; names the file and the entry.
    #[error("{}: {entry}: {message}", file.display())]
    Catalog {
        /// The catalog file.
        file: PathBuf,
        /// The entry, e.g. `topic "hcm.case.events"` or `topic #3`.
        entry: String,
        /// What is wrong.
        message: String,
    },
    /// A schema file is invalid.
    #[error("{}: {message}", file.display())]
    Schema {
        /// The schema file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The bytes are shorter than the 5-byte Confluent header.
    #[error(
        "record of {len} bytes is too short for the Confluent wire format (magic byte + 4-byte schema id)"
    )]
    Truncated {
        /// The length received.
        len: usize,
    },
    /// The first byte is not the Confluent magic byte 0.
    #[error("wrong magic byte {found:#04x}, expected 0x00: not a Confluent-framed Avro record")]
    BadMagic {
        /// The byte found.
        found: u8,
    },
    /// No schema with this id is known to the codec.
    #[error("unknown schema id {id}")]
    UnknownSchemaId {
        /// The id in the record's header.
        id: u32,
    },
    /// The Avro body does not match the writer schema.
    #[error("Avro body does not match writer schema {id}: {message}")]
    Decode {
        /// The writer schema id.
        id: u32,
        /// What the decoder said.
        message: String,
    },
    /// Bytes were left after a complete record was read.
    #[error("{extra} bytes of trailing data after the Avro record (writer schema {id})")]
    TrailingBytes {
        /// The writer schema id.
        id: u32,
        /// How many bytes were left.
        extra: usize,
    },
    /// A value could not be encoded with the schema.
    #[error("cannot encode with schema {id}: {message}")]
    Encode {
        /// The schema id.
        id: u32,
        /// What the encoder said.
        message: String,
    },
    /// A Rust event type does not write what a schema describes (see [`crate::write`]).
    #[error("the type {type_name} does not match schema {id} {message}")]
    TypeMismatch {
        /// The schema id.
        id: u32,
        /// The Rust type.
        type_name: &'static str,
        /// Where they differ, and how.
        message: String,
    },
    /// The topic is not in the catalog.
    #[error("unknown topic {0:?}: not in the catalog")]
    UnknownTopic(String),
    /// A schema id was registered twice with different schemas.
    #[error("schema id {id} is already bound to a different schema")]
    ConflictingId {
        /// The id.
        id: u32,
    },
}

impl ContractError {
    /// Whether retrying could succeed: only a failed file read. Everything else is about the input.
    pub fn is_transient(&self) -> bool {
        matches!(self, ContractError::Io { .. })
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = ContractError> = std::result::Result<T, E>;
