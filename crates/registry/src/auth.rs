//! Who is calling, and which subjects they may change.
//!
//! Each agency has a token; the registry's config holds only its SHA-256, so a leaked config
//! file leaks no credential. Clients send `Authorization: Bearer <token>`, or HTTP Basic with
//! the agency code as user name and the token as password (what Confluent clients' `basic.auth`
//! settings send). Any authenticated agency may read; changing a subject takes its owner.

use std::collections::HashMap;

use axum::http::HeaderValue;
use base64::Engine;
use lienthong_contract::{AgencyKind, Catalog};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::RegistryError;

/// One agency's credential, as configured.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgencyCredential {
    /// The agency's unit code, e.g. `STP` or `26734`.
    pub code: String,
    /// Department or ward.
    pub kind: AgencyKind,
    /// Hex SHA-256 of its token (`lienthong_registry::auth::hash_token`).
    pub token_sha256: String,
    /// May change global config and any subject (the city's digital-transformation centre).
    #[serde(default)]
    pub admin: bool,
}

impl std::fmt::Debug for AgencyCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgencyCredential")
            .field("code", &self.code)
            .field("kind", &self.kind)
            .field("token_sha256", &"<redacted>")
            .field("admin", &self.admin)
            .finish()
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agency {
    /// Unit code.
    pub code: String,
    /// Kind.
    pub kind: AgencyKind,
    /// Admin rights.
    pub admin: bool,
}

/// Hex SHA-256 of a token, as stored in config.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The configured agencies, by token hash.
#[derive(Debug, Clone, Default)]
pub struct Agencies {
    by_hash: HashMap<[u8; 32], Agency>,
}

impl Agencies {
    /// Build from config; refuses malformed hashes and duplicate codes or tokens.
    pub fn new(credentials: &[AgencyCredential]) -> Result<Self, String> {
        let mut by_hash = HashMap::new();
        let mut codes = std::collections::HashSet::new();
        for c in credentials {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(c.token_sha256.trim(), &mut hash).map_err(|_| {
                format!("agency {}: token_sha256 must be 64 hex characters", c.code)
            })?;
            if !codes.insert(c.code.clone()) {
                return Err(format!("agency {} is configured twice", c.code));
            }
            let agency = Agency {
                code: c.code.clone(),
                kind: c.kind,
                admin: c.admin,
            };
            if by_hash.insert(hash, agency).is_some() {
                return Err(format!(
                    "agency {}: the same token is configured for two agencies",
                    c.code
                ));
            }
        }
        Ok(Agencies { by_hash })
    }

    /// Who sent this `Authorization` header.
    pub fn authenticate(&self, header: Option<&HeaderValue>) -> Result<Agency, RegistryError> {
        let header = header
            .and_then(|h| h.to_str().ok())
            .ok_or(RegistryError::Unauthenticated)?;
        let (scheme, rest) = header
            .split_once(' ')
            .ok_or(RegistryError::Unauthenticated)?;
        let (claimed, token) = if scheme.eq_ignore_ascii_case("bearer") {
            (None, rest.trim().to_string())
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .map_err(|_| RegistryError::Unauthenticated)?;
            let text = String::from_utf8(decoded).map_err(|_| RegistryError::Unauthenticated)?;
            let (user, password) = text.split_once(':').ok_or(RegistryError::Unauthenticated)?;
            (Some(user.to_string()), password.to_string())
        } else {
            return Err(RegistryError::Unauthenticated);
        };
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let agency = self
            .by_hash
            .get(&hash)
            .ok_or(RegistryError::Unauthenticated)?;
        match claimed {
            Some(user) if user != agency.code => Err(RegistryError::Unauthenticated),
            _ => Ok(agency.clone()),
        }
    }
}

/// The agency that owns `subject`: the catalog's owner for catalog subjects; for any other
/// subject, the agency whose lower-case code prefixes it with a dot (`stp.internal-value` is
/// STP's). `None`: nobody but an admin may change it.
pub fn owner_of(catalog: &Catalog, subject: &str) -> Option<String> {
    if let Some(topic) = catalog.topic_by_subject(subject) {
        return Some(topic.owner.clone());
    }
    let (prefix, _) = subject.split_once('.')?;
    // The catalog's own prefixes (`hcm.`) belong to nobody but admins, even if an agency's
    // code happened to spell the same.
    if catalog
        .topics()
        .iter()
        .any(|t| t.name.split('.').next() == Some(prefix))
    {
        return None;
    }
    let code = prefix.to_ascii_uppercase();
    lienthong_contract::catalog::FieldFormat::UnitCode
        .accepts(&code)
        .then_some(code)
}

/// May `agency` change the compatibility mode of `subject`, or delete its versions? For a
/// catalog subject only an admin may: the catalog sets its mode, and its old versions must stay
/// readable. Otherwise, as for registering.
pub fn check_admin_of(
    catalog: &Catalog,
    agency: &Agency,
    subject: &str,
) -> Result<(), RegistryError> {
    if catalog.topic_by_subject(subject).is_some() && !agency.admin {
        return Err(RegistryError::Forbidden {
            agency: agency.code.clone(),
            subject: subject.to_string(),
            owner: "an admin agency (the catalog sets this subject's mode and keeps its versions)"
                .into(),
        });
    }
    check_owner(catalog, agency, subject)
}

/// May `agency` change `subject`?
pub fn check_owner(catalog: &Catalog, agency: &Agency, subject: &str) -> Result<(), RegistryError> {
    let owner = owner_of(catalog, subject);
    if agency.admin || owner.as_deref() == Some(agency.code.as_str()) {
        Ok(())
    } else {
        Err(RegistryError::Forbidden {
            agency: agency.code.clone(),
            subject: subject.to_string(),
            owner: owner.unwrap_or_else(|| "nobody (an admin only)".into()),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn agencies() -> Agencies {
        Agencies::new(&[
            AgencyCredential {
                code: "STP".into(),
                kind: AgencyKind::Department,
                token_sha256: hash_token("stp-secret"),
                admin: false,
            },
            AgencyCredential {
                code: "26734".into(),
                kind: AgencyKind::Ward,
                token_sha256: hash_token("ward-secret"),
                admin: false,
            },
        ])
        .unwrap()
    }

    #[test]
    fn bearer_and_basic_credentials_identify_the_agency() {
        let a = agencies();
        let bearer = HeaderValue::from_static("Bearer stp-secret");
        assert_eq!(a.authenticate(Some(&bearer)).unwrap().code, "STP");
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("26734:ward-secret")
        );
        assert_eq!(
            a.authenticate(Some(&HeaderValue::from_str(&basic).unwrap()))
                .unwrap()
                .code,
            "26734"
        );
    }

    #[test]
    fn missing_wrong_or_mismatched_credentials_are_401() {
        let a = agencies();
        for h in ["Bearer nope", "Token stp-secret", "Basic !!!", "Bearer", ""] {
            let v = HeaderValue::from_str(h).unwrap();
            assert!(
                matches!(
                    a.authenticate(Some(&v)),
                    Err(RegistryError::Unauthenticated)
                ),
                "{h}"
            );
        }
        assert!(matches!(
            a.authenticate(None),
            Err(RegistryError::Unauthenticated)
        ));
        // A ward's token presented under a department's name.
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("STP:ward-secret")
        );
        assert!(matches!(
            a.authenticate(Some(&HeaderValue::from_str(&basic).unwrap())),
            Err(RegistryError::Unauthenticated)
        ));
    }

    #[test]
    fn config_rejects_bad_hashes_and_duplicates() {
        let bad = AgencyCredential {
            code: "STP".into(),
            kind: AgencyKind::Department,
            token_sha256: "xyz".into(),
            admin: false,
        };
        assert!(Agencies::new(&[bad]).is_err());
        let one = AgencyCredential {
            code: "STP".into(),
            kind: AgencyKind::Department,
            token_sha256: hash_token("t"),
            admin: false,
        };
        assert!(Agencies::new(&[one.clone(), one]).is_err());
        assert!(
            !format!(
                "{:?}",
                AgencyCredential {
                    code: "X1".into(),
                    kind: AgencyKind::Ward,
                    token_sha256: hash_token("t"),
                    admin: false
                }
            )
            .contains(&hash_token("t"))
        );
    }
}
