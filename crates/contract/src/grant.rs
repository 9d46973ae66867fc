//! Who may publish and read a topic: agencies of a kind, or one agency by its code
//! ([`Grantee`], the words of `schemas/catalog.toml`'s `publishers` and `readers`), and why a
//! publish is refused ([`PublishRefusal`]). `TopicSpec::may_publish` applies it for the SDK
//! and the gateway; `lienthong_bus::acl` turns the same words into the broker's ACLs.

use std::fmt;

use serde::Deserialize;

use crate::catalog::FieldFormat;

/// Kind of agency, which decides what it may publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgencyKind {
    /// A city department or agency ("sở, ngành").
    Department,
    /// A commune-level unit: ward, commune or special zone.
    Ward,
}

/// Who a catalog grant names: every agency of a kind, or one agency by its code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Grantee {
    /// Every agency of this kind (`"department"`, `"ward"`).
    Kind(AgencyKind),
    /// The agency with this code (`"CATP"`).
    Agency(String),
}

impl Grantee {
    /// Whether agency `code` of `kind` is named.
    pub fn names(&self, code: &str, kind: AgencyKind) -> bool {
        match self {
            Grantee::Kind(k) => *k == kind,
            Grantee::Agency(c) => c == code,
        }
    }
}

impl<'de> Deserialize<'de> for Grantee {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Grantee, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "department" => Ok(Grantee::Kind(AgencyKind::Department)),
            "ward" => Ok(Grantee::Kind(AgencyKind::Ward)),
            code if FieldFormat::UnitCode.accepts(code) => Ok(Grantee::Agency(code.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "{other:?} is neither a kind of agency (\"department\", \"ward\") nor an agency code ({})",
                FieldFormat::UnitCode.describe()
            ))),
        }
    }
}

impl fmt::Display for Grantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grantee::Kind(k) => write!(f, "every {k}"),
            Grantee::Agency(c) => f.write_str(c),
        }
    }
}

impl fmt::Display for AgencyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AgencyKind::Department => "department",
            AgencyKind::Ward => "ward",
        })
    }
}

/// Why an agency may not publish an event. Permanent: nothing reaches Kafka.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishRefusal {
    /// The agency may not write the topic.
    #[error("agency {agency} ({kind}) may not publish to {topic}: only {allowed}")]
    TopicNotAllowed {
        /// The agency's code.
        agency: String,
        /// Its kind.
        kind: AgencyKind,
        /// The topic.
        topic: String,
        /// Who may, comma-separated.
        allowed: String,
    },
    /// The event names another unit as its producer.
    #[error("agency {agency} may publish only as itself, not as {claimed:?}")]
    PosingAs {
        /// The agency's code.
        agency: String,
        /// The envelope's `producer_unit`.
        claimed: String,
    },
}

/// An agency publishes only as itself: the envelope's `producer_unit` must be its own code, so
/// a ward cannot publish as another ward or as a department.
pub fn check_publishes_as_itself(agency: &str, producer_unit: &str) -> Result<(), PublishRefusal> {
    if producer_unit == agency {
        Ok(())
    } else {
        Err(PublishRefusal::PosingAs {
            agency: agency.to_string(),
            claimed: producer_unit.to_string(),
        })
    }
}
