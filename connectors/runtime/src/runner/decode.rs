//! Decoding one record: its writer schema (from the catalog's ids, or fetched once from the
//! registry, waiting while the registry cannot be read), checked against the connector's
//! reader schema, and the record folded into a change for the store.

use std::sync::Arc;

use lienthong_contract::ContractError;
use lienthong_contract::codec::split_frame;
use lienthong_registry::client::RegistryClient;

use crate::error::ConnectError;
use crate::model::{Entity, Layout, Op};
use crate::sink::Sink;

use super::{Decoded, Runner};

impl<S: Sink> Runner<S> {
    /// The writer schema's layout, fetched and checked once per id.
    pub(super) async fn layout(
        &mut self,
        topic: &str,
        entity: Entity,
        id: u32,
    ) -> Result<Result<Arc<Layout>, Decoded>, ConnectError> {
        if let Some(l) = self.layouts.get(&id) {
            return Ok(l
                .clone()
                .map_err(|m| Decoded::Fail("incompatible_schema", m)));
        }
        let writer = match self.codec.schema(id) {
            Ok(s) => s,
            Err(_) => {
                let Some(client) = self.registry.clone() else {
                    return Ok(Err(Decoded::Fail(
                        "unknown_schema",
                        format!("unknown schema id {id} (no registry configured)"),
                    )));
                };
                match self.fetch_writer(&client, id).await? {
                    Ok(s) => s,
                    Err(not) => return Ok(Err(not)),
                }
            }
        };
        let reader = self
            .readers
            .get(&entity)
            .ok_or_else(|| ConnectError::Internal(format!("no reader schema for {entity:?}")))?;
        let (wn, rn) = (
            crate::model::record_name(writer.schema()).map(|n| n.fullname(None)),
            crate::model::record_name(reader).map(|n| n.fullname(None)),
        );
        if wn != rn {
            let m = format!(
                "schema {id} writes {} records, this topic carries {}",
                wn.unwrap_or_else(|| "non-record".into()),
                rn.unwrap_or_default()
            );
            self.layouts.insert(id, Err(m.clone()));
            return Ok(Err(Decoded::Fail("incompatible_schema", m)));
        }
        let problems = lienthong_contract::compat::can_read(writer.schema(), reader);
        if let Some(p) = problems.first() {
            return Err(ConnectError::IncompatibleSchema {
                topic: topic.to_string(),
                id,
                message: format!(
                    "the connector's {} schema cannot read it: {} at {}",
                    entity.table(),
                    p.message,
                    p.path
                ),
            });
        }
        let layout =
            Layout::new(entity, writer.schema()).map_err(|e| ConnectError::IncompatibleSchema {
                topic: topic.to_string(),
                id,
                message: e.0,
            })?;
        let layout = Arc::new(layout);
        self.layouts.insert(id, Ok(layout.clone()));
        Ok(Ok(layout))
    }

    /// The writer schema `id` from the registry. Only two answers are the record's fault (it
    /// goes to the dead-letter topic): the registry does not know the id (40403), or what it
    /// holds under it cannot be parsed as Avro. Any other failure (unreachable, a refused
    /// credential, 5xx) is the connector's condition: consumption pauses and the fetch is
    /// retried with backoff until it succeeds, dead-lettering nothing and moving no offset; if
    /// the connector is stopped meanwhile, the record is left for the next start
    /// ([`Decoded::Interrupted`]).
    pub(super) async fn fetch_writer(
        &mut self,
        client: &RegistryClient,
        id: u32,
    ) -> Result<Result<Arc<lienthong_contract::RegisteredSchema>, Decoded>, ConnectError> {
        let mut attempt = 0;
        let found = loop {
            match client.schema(id).await {
                Ok(s) => break Ok(s),
                Err(e) if e.is_unknown_schema_id() => {
                    break Err(Decoded::Fail(
                        "unknown_schema",
                        format!("schema id {id} is not in the registry"),
                    ));
                }
                Err(lienthong_registry::RegistryError::InvalidSchema(m)) => {
                    break Err(Decoded::Fail(
                        "incompatible_schema",
                        format!("schema id {id} in the registry is not a usable Avro schema: {m}"),
                    ));
                }
                Err(e) => {
                    attempt += 1;
                    if !self.back_off("registry", &e, attempt).await? {
                        tracing::warn!(connector = %self.name(), id, "stopped while waiting for the registry; the record is read again at the next start");
                        break Err(Decoded::Interrupted);
                    }
                }
            }
        };
        if attempt > 0 {
            self.recovered();
            if found.is_ok() {
                tracing::info!(connector = %self.name(), id, attempts = attempt + 1, "the registry answered again; consumption resumed");
            }
        }
        Ok(found)
    }

    pub(super) async fn decode(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        signer: Option<&str>,
    ) -> Result<Decoded, ConnectError> {
        let entity = *self.entities.get(topic).ok_or_else(|| {
            ConnectError::Internal(format!("record from unexpected topic {topic}"))
        })?;
        if entity == Entity::Citizens && !self.config.filter.citizen_records {
            return Ok(Decoded::Skip);
        }
        let key_str = match key.map(std::str::from_utf8) {
            None => None,
            Some(Ok(k)) => Some(k),
            Some(Err(_)) => return Ok(Decoded::Fail("invalid", "the key is not UTF-8".into())),
        };
        let Some(payload) = payload else {
            if entity.is_delta() {
                return Ok(Decoded::Fail(
                    "invalid",
                    format!("a tombstone on {topic}, whose records are events"),
                ));
            }
            return Ok(match key_str {
                Some(k) if !k.is_empty() => Decoded::Op(
                    Op::Delete {
                        entity,
                        key: k.to_string(),
                    },
                    None,
                ),
                _ => Decoded::Fail("invalid", "a tombstone without a key".into()),
            });
        };
        let id = match split_frame(payload) {
            Ok((id, _)) => id,
            Err(e) => return Ok(Decoded::Fail("not_avro", e.to_string())),
        };
        let layout = match self.layout(topic, entity, id).await? {
            Ok(l) => l,
            Err(not) => return Ok(not),
        };
        let mut value = match self.codec.decode_value(payload, None) {
            Ok((_, v)) => v,
            Err(e @ (ContractError::Truncated { .. } | ContractError::BadMagic { .. })) => {
                return Ok(Decoded::Fail("not_avro", e.to_string()));
            }
            Err(e @ ContractError::UnknownSchemaId { .. }) => {
                return Ok(Decoded::Fail("unknown_schema", e.to_string()));
            }
            Err(e) => return Ok(Decoded::Fail("invalid", e.to_string())),
        };
        // A signed record's producer unit must be its signer's agency.
        if let Some(signer) = signer {
            let unit = producer_unit(&value).unwrap_or_default();
            if unit != signer {
                return Ok(Decoded::Fail(
                    "signature",
                    lienthong_signing::Refusal::NotTheProducer {
                        signer: signer.to_string(),
                        producer: unit.to_string(),
                    }
                    .to_string(),
                ));
            }
            // The documents a case event carries, where signed on the bus, verify too.
            if entity == Entity::Cases
                && let Some(log) = &self.certificates
            {
                let refused = match self
                    .codec
                    .decode::<lienthong_contract::events::CaseEvent<&str>>(payload)
                {
                    Ok((_, event)) => {
                        lienthong_signing::verify_case_documents(&log.read(), &event).err()
                    }
                    Err(e) => return Ok(Decoded::Fail("invalid", e.to_string())),
                };
                if let Some(refusal) = refused {
                    return Ok(Decoded::Fail("signature", refusal.to_string()));
                }
            }
        }
        let unreadable = match self
            .open_sealed(entity, key_str, &layout, &mut value)
            .await?
        {
            Ok(unreadable) => unreadable,
            Err(Some(m)) => return Ok(Decoded::Fail("invalid", m)),
            Err(None) => return Ok(Decoded::Interrupted),
        };
        let units = (!self.config.filter.units.is_empty() && !entity.unit_fields().is_empty())
            .then_some(self.config.filter.units.as_slice());
        let mut change = match layout.change(value, units) {
            Ok(c) => c,
            Err(e) => return Ok(Decoded::Fail("invalid", e.0)),
        };
        if !unreadable.is_empty() {
            for (column, cell) in change.cells.iter_mut() {
                if unreadable.iter().any(|c| *c == *column.name) {
                    *cell = crate::model::Cell::Null;
                }
            }
        }
        if let Some(k) = key_str
            && k != change.key
        {
            return Ok(Decoded::Fail(
                "invalid",
                format!(
                    "the Kafka key {k:?} is not the aggregate id {:?}",
                    change.key
                ),
            ));
        }
        let at = change.history.as_ref().map(|h| h.occurred_at).or_else(|| {
            change.cells.iter().find_map(|(c, v)| match (&*c.name, v) {
                ("occurred_at", crate::model::Cell::Int(t)) => Some(*t),
                _ => None,
            })
        });
        Ok(Decoded::Op(Op::Upsert(change), at))
    }

    /// Open a sealed record's personal fields with the citizen's key from the connector's key
    /// source (only the classes its grant covers), or leave them masked when it has none (no
    /// key service, no live grant, or the citizen is erased). Either way the ciphertext itself is dropped. A sealed value that does not open
    /// (altered, or sealed for another citizen) is the record's fault: it is dead-lettered as
    /// it came, sealed, so the dead-letter topic never holds clear personal data.
    ///
    /// A key service that does not answer is the connector's condition, not the record's:
    /// consumption pauses and the request is retried with backoff (`Err(None)` if stopped
    /// meanwhile: the record is read again at the next start). A credential it refuses stops
    /// the connector.
    async fn open_sealed(
        &mut self,
        entity: Entity,
        key: Option<&str>,
        layout: &Layout,
        value: &mut apache_avro::types::Value,
    ) -> Result<Result<Vec<String>, Option<String>>, ConnectError> {
        if !lienthong_privacy::is_sealed(value) {
            return Ok(Ok(Vec::new()));
        }
        let opening = match (self.config.keys.0.clone(), key) {
            (Some(keys), Some(pseudonym)) => {
                let mut attempt = 0;
                let found = loop {
                    match keys.opening(entity.catalog_topic(), pseudonym).await {
                        Ok(found) => break found,
                        Err(e) if e.is_transient() => {
                            attempt += 1;
                            if !self.back_off("key_service", &e, attempt).await? {
                                return Ok(Err(None));
                            }
                        }
                        Err(e) => return Err(ConnectError::Config(e.to_string())),
                    }
                };
                if attempt > 0 {
                    self.recovered();
                }
                found
            }
            _ => None,
        };
        if let Err(e) = lienthong_privacy::open_record(
            value,
            layout.schema(),
            entity.catalog_topic(),
            opening.as_ref(),
        ) {
            return Ok(Err(Some(format!("sealed personal fields: {e}"))));
        }
        // The columns of the fields left masked, when the store keeps them as NULL: a
        // top-level record's fields are columns of their own name, deeper ones joined by `__`
        // (the layout's naming).
        if self.config.filter.unreadable_fields != crate::config::Unreadable::Null {
            return Ok(Ok(Vec::new()));
        }
        Ok(Ok(lienthong_privacy::personal_paths(layout.schema())
            .into_iter()
            .filter(|(_, class)| !opening.as_ref().is_some_and(|o| o.classes.contains(class)))
            .map(|(path, _)| {
                let parts: Vec<&str> = path.split('.').collect();
                parts[1.min(parts.len() - 1)..].join("__")
            })
            .collect()))
    }
}

/// The envelope's producer unit of a decoded event or record.
fn producer_unit(value: &apache_avro::types::Value) -> Option<&str> {
    use apache_avro::types::Value;
    let Value::Record(fields) = value else {
        return None;
    };
    let envelope = fields
        .iter()
        .find(|(n, _)| n == "envelope")
        .map(|(_, v)| v)?;
    let Value::Record(envelope) = envelope else {
        return None;
    };
    match envelope
        .iter()
        .find(|(n, _)| n == "producer_unit")
        .map(|(_, v)| v)?
    {
        Value::String(unit) => Some(unit),
        _ => None,
    }
}
