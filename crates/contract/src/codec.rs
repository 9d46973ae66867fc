//! The Confluent wire format and the Avro codec.
//!
//! A record on the bus is `0x00`, then the writer schema's registry id as 4 big-endian bytes,
//! then the Avro binary encoding of the value. The [`Codec`] holds every schema it has seen,
//! parsed once, by id; encoding and decoding never parse a schema.
//!
//! Two paths share the cache:
//! - the **typed path** ([`Codec::encode`], [`Codec::decode`]) uses `serde_avro_fast` straight
//!   between Rust types (see [`crate::events`]) and bytes — this is the hot path of the SDK and
//!   the sinks;
//! - the **generic path** ([`Codec::decode_value`]) uses `apache-avro`'s `Value` with
//!   writer/reader schema resolution, for tools that handle any schema.
//!
//! Decoding never trusts a length from the input for an allocation: strings and bytes are
//! borrowed or bounded by the input's own length, sequences are capped, nesting is capped, and
//! trailing bytes are an error.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::{Arc, OnceLock, RwLock};

use apache_avro::GenericSingleObjectReader;
use apache_avro::Schema;
use apache_avro::headers::HeaderBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{ContractError, Result};
use crate::write::WriteAvro;

/// The Confluent wire format's magic byte.
pub const MAGIC: u8 = 0;
/// Length of the Confluent header: the magic byte and the 4-byte schema id.
pub const HEADER_LEN: usize = 5;
/// Largest number of items in one array or map the decoder accepts.
pub const MAX_SEQUENCE_ITEMS: usize = 1 << 20;
/// Deepest nesting of records, arrays, maps and unions the decoder accepts.
pub const MAX_DEPTH: usize = 32;

/// Split a Confluent-framed record into its writer schema id and its Avro body.
pub fn split_frame(bytes: &[u8]) -> Result<(u32, &[u8])> {
    let Some((header, body)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(ContractError::Truncated { len: bytes.len() });
    };
    if header[0] != MAGIC {
        return Err(ContractError::BadMagic { found: header[0] });
    }
    let id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    Ok((id, body))
}

/// Append the Confluent header for schema `id` to `out`.
pub fn write_header(id: u32, out: &mut Vec<u8>) {
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
}

/// One schema known to the codec, parsed once for each decoder.
pub struct RegisteredSchema {
    id: u32,
    json: String,
    identity: String,
    avro: Schema,
    fast: serde_avro_fast::Schema,
    /// `avro` with its named types resolved, built at the first generic decode: resolving
    /// them for every record was most of a connector's decoding time.
    values: OnceLock<Option<GenericSingleObjectReader>>,
}

/// The framing [`GenericSingleObjectReader`] expects before a value: none (the Confluent
/// frame is split off before).
struct NoHeader;

impl HeaderBuilder for NoHeader {
    fn build_header(&self) -> Vec<u8> {
        Vec::new()
    }
}

impl std::fmt::Debug for RegisteredSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredSchema")
            .field("id", &self.id)
            .field("identity", &self.identity)
            .finish()
    }
}

impl RegisteredSchema {
    /// Parse a schema for id `id`.
    pub fn parse(id: u32, json: &str) -> Result<Self> {
        let schema_err = |message: String| ContractError::Encode { id, message };
        let avro =
            Schema::parse_str(json).map_err(|e| schema_err(format!("invalid schema: {e}")))?;
        let fast: serde_avro_fast::Schema = json
            .parse()
            .map_err(|e| schema_err(format!("invalid schema: {e}")))?;
        Ok(RegisteredSchema {
            id,
            json: json.to_string(),
            identity: schema_identity(json).map_err(schema_err)?,
            avro,
            fast,
            values: OnceLock::new(),
        })
    }

    /// Decode `body` (the Avro binary of one value, without a frame) into a generic value.
    fn decode_generic(
        &self,
        body: &[u8],
    ) -> std::result::Result<apache_avro::types::Value, String> {
        let reader = self.values.get_or_init(|| {
            GenericSingleObjectReader::new_with_header_builder(self.avro.clone(), NoHeader).ok()
        });
        let mut bytes = body;
        match reader {
            Some(reader) => reader.read_value(&mut bytes),
            // Named types that do not resolve: apache-avro says why.
            None => apache_avro::from_avro_datum(&self.avro, &mut bytes, None),
        }
        .map_err(|e| e.to_string())
    }

    /// The registry id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The schema as registered.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The schema's identity: its JSON with keys sorted and no whitespace (see
    /// [`schema_identity`]).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The parsed schema.
    pub fn schema(&self) -> &Schema {
        &self.avro
    }

    /// Whether `T` writes exactly this schema, so that [`encode_typed`] may write `T` with this
    /// id. Walks the schema once; the SDK checks each topic's event type when it connects.
    pub fn check_typed<T: WriteAvro>(&self) -> Result<()> {
        let mismatch = |message: String| ContractError::TypeMismatch {
            id: self.id,
            type_name: std::any::type_name::<T>(),
            message,
        };
        let resolved = apache_avro::schema::ResolvedSchema::try_from(&self.avro)
            .map_err(|e| mismatch(format!("(its named types do not resolve: {e})")))?;
        T::check_schema(&self.avro, resolved.get_names()).map_err(|m| mismatch(m.to_string()))
    }
}

/// Append `value` in the Confluent wire format with schema `id`, by the type's own writer: no
/// field is looked up, so this is several times as fast as [`Codec::encode`]. Only for an id
/// whose schema accepted `T` in [`RegisteredSchema::check_typed`]; with another schema the bytes
/// would not mean what the schema says.
pub fn encode_typed<T: WriteAvro>(id: u32, value: &T, out: &mut Vec<u8>) {
    write_header(id, out);
    value.write_avro(out);
}

/// Encodes and decodes Confluent-framed Avro with schemas cached by registry id.
///
/// Cloning is cheap and clones share the cache. Fill it with [`Codec::insert`] (the registry
/// client does this as ids are learned).
#[derive(Clone, Default)]
pub struct Codec {
    by_id: Arc<RwLock<HashMap<u32, Arc<RegisteredSchema>>>>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.by_id.read().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("Codec").field("schemas", &n).finish()
    }
}

impl Codec {
    /// An empty codec.
    pub fn new() -> Self {
        Self::default()
    }

    /// A codec holding every value schema of `catalog` under local ids 1, 2, … in catalog
    /// order: for tests, tools and the embedded demo, where no registry assigns ids.
    pub fn from_catalog(catalog: &crate::Catalog) -> Result<Self> {
        let codec = Codec::new();
        for (i, topic) in catalog.topics().iter().enumerate() {
            codec.insert(local_id(i), &topic.schema_json)?;
        }
        Ok(codec)
    }

    /// Bind `id` to the schema `json`, parsing it once. Binding an id again to the same schema
    /// (by [`schema_identity`]) is a no-op; to a different one, an error.
    pub fn insert(&self, id: u32, json: &str) -> Result<Arc<RegisteredSchema>> {
        // Parse outside the lock; decide under it, so two threads binding one id to different
        // schemas cannot both succeed.
        let parsed = Arc::new(RegisteredSchema::parse(id, json)?);
        let mut map = self.by_id.write().unwrap_or_else(|p| p.into_inner());
        match map.get(&id) {
            Some(existing) if existing.identity == parsed.identity => Ok(existing.clone()),
            Some(_) => Err(ContractError::ConflictingId { id }),
            None => {
                map.insert(id, parsed.clone());
                Ok(parsed)
            }
        }
    }

    fn get(&self, id: u32) -> Option<Arc<RegisteredSchema>> {
        self.by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// The schema bound to `id`.
    pub fn schema(&self, id: u32) -> Result<Arc<RegisteredSchema>> {
        self.get(id).ok_or(ContractError::UnknownSchemaId { id })
    }

    /// Encode `value` with schema `id` in the Confluent wire format, appending to `out`.
    /// On error, `out` is left as it was.
    pub fn encode<T: Serialize + ?Sized>(
        &self,
        id: u32,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let schema = self.schema(id)?;
        encode_with(&schema, value, out)
    }

    /// Encode `value` with schema `id` into a new buffer.
    pub fn encode_to_vec<T: Serialize + ?Sized>(&self, id: u32, value: &T) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(256);
        self.encode(id, value, &mut out)?;
        Ok(out)
    }

    /// Decode a Confluent-framed record into `T`, returning the writer schema id too. Fields of
    /// `T` are matched by name, so a `T` written for an older or newer schema version reads
    /// correctly as long as added fields are optional (`#[serde(default)]`).
    pub fn decode<'a, T: Deserialize<'a>>(&self, bytes: &'a [u8]) -> Result<(u32, T)> {
        let (id, body) = split_frame(bytes)?;
        let schema = self.schema(id)?;
        decode_with(&schema, body).map(|v| (id, v))
    }

    /// Decode a Confluent-framed record into a generic Avro value. With `reader`, the value is
    /// resolved from the writer's schema to the reader's (Avro schema resolution).
    pub fn decode_value(
        &self,
        bytes: &[u8],
        reader: Option<&Schema>,
    ) -> Result<(u32, apache_avro::types::Value)> {
        let (id, body) = split_frame(bytes)?;
        let schema = self.schema(id)?;
        let decode_err = |message: String| ContractError::Decode { id, message };
        // Validate the body first with the bounded, allocation-safe decoder: apache-avro would
        // pre-allocate from untrusted lengths.
        decode_with::<serde::de::IgnoredAny>(&schema, body)?;
        let value = schema.decode_generic(body).map_err(decode_err)?;
        // Resolution by the contract's own resolver: apache-avro 0.21 picks union branches by
        // shape, not by name (see `crate::resolve`).
        match reader {
            None => Ok((id, value)),
            Some(reader) => crate::resolve::resolve(value, &schema.avro, reader)
                .map(|v| (id, v))
                .map_err(decode_err),
        }
    }
}

/// A schema's identity: its JSON, keys sorted, no insignificant whitespace.
///
/// Not Avro's Parsing Canonical Form, which drops defaults, aliases, docs and logical types: two
/// schemas that differ only there are different contracts (a default decides what old records
/// read as) and must not share an id. This depends on JSON alone, so it is the same for every
/// Avro library version that ever replays the registry's log.
pub fn schema_identity(json: &str) -> std::result::Result<String, String> {
    fn sorted(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut entries: Vec<_> = m.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(
                    entries.into_iter().map(|(k, v)| (k, sorted(v))).collect(),
                )
            }
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(sorted).collect())
            }
            other => other,
        }
    }
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("invalid schema JSON: {e}"))?;
    Ok(sorted(value).to_string())
}

/// The id [`Codec::from_catalog`] gives the catalog's topic at `index`.
pub fn local_id(index: usize) -> u32 {
    u32::try_from(index).map_or(u32::MAX, |i| i.saturating_add(1))
}

/// Encode with an already looked-up schema.
pub fn encode_with<T: Serialize + ?Sized>(
    schema: &RegisteredSchema,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<()> {
    let start = out.len();
    write_header(schema.id, out);
    let mut config = serde_avro_fast::ser::SerializerConfig::new(&schema.fast);
    match serde_avro_fast::to_datum(value, &mut *out, &mut config) {
        Ok(_) => Ok(()),
        Err(e) => {
            out.truncate(start);
            Err(ContractError::Encode {
                id: schema.id,
                message: e.to_string(),
            })
        }
    }
}

/// Decode an Avro body (no header) with an already looked-up writer schema.
pub fn decode_with<'a, T: Deserialize<'a>>(schema: &RegisteredSchema, body: &'a [u8]) -> Result<T> {
    let mut config = serde_avro_fast::de::DeserializerConfig::new(&schema.fast);
    config.max_seq_size = MAX_SEQUENCE_ITEMS;
    config.allowed_depth = MAX_DEPTH;
    let mut state = serde_avro_fast::de::DeserializerState::with_config(
        serde_avro_fast::de::read::SliceRead::new(body),
        config,
    );
    let value = T::deserialize(state.deserializer()).map_err(|e| ContractError::Decode {
        id: schema.id,
        message: e.to_string(),
    })?;
    let mut rest = state.into_reader();
    let mut probe = [0u8; 64];
    let mut extra = 0usize;
    loop {
        match rest.read(&mut probe) {
            Ok(0) | Err(_) => break,
            Ok(n) => extra += n,
        }
    }
    if extra > 0 {
        return Err(ContractError::TrailingBytes {
            id: schema.id,
            extra,
        });
    }
    Ok(value)
}
