//! The registry's error type, and how each error looks to a Confluent client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Everything a registry call can fail with. Each maps to Confluent's HTTP status and
/// `error_code`, so standard clients understand it.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No credential, or an unknown one.
    #[error(
        "authentication required: send `Authorization: Bearer <token>` or Basic <agency>:<token>"
    )]
    Unauthenticated,
    /// A known agency that may not change this subject.
    #[error("agency {agency} may not change subject {subject:?}: it is owned by {owner}")]
    Forbidden {
        /// Who asked.
        agency: String,
        /// What.
        subject: String,
        /// Who owns it.
        owner: String,
    },
    /// Subject not found.
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// Version not found.
    #[error("Version {version} not found for subject '{subject}'.")]
    VersionNotFound {
        /// Subject.
        subject: String,
        /// Version asked for.
        version: String,
    },
    /// Schema not found.
    #[error("{0}")]
    SchemaNotFound(String),
    /// Not compatible with earlier versions.
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\": {details}"
    )]
    Incompatible {
        /// Subject.
        subject: String,
        /// Every violation, one per line.
        details: String,
    },
    /// Invalid schema text or references.
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    /// A version that is not a positive number or `latest`.
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    /// Invalid compatibility level or request body.
    #[error("{0}")]
    InvalidRequest(String),
    /// No such call in the API.
    #[error("no such call: {0}")]
    NoSuchRoute(String),
    /// A subject with no subject-level config.
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    /// Permanent delete of a version that was not soft-deleted first.
    #[error(
        "Subject '{subject}' Version {version} was not deleted first before being permanently deleted"
    )]
    NotSoftDeleted {
        /// Subject.
        subject: String,
        /// Version.
        version: u32,
    },
    /// The body is larger than allowed.
    #[error("request body larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The content type is not JSON.
    #[error(
        "unsupported content type {0:?}: send application/vnd.schemaregistry.v1+json or application/json"
    )]
    UnsupportedMediaType(String),
    /// Kafka, the store, did not answer (transient).
    #[error("Error in the backend data store: {0}")]
    Store(String),
    /// A remote registry answered with an error.
    #[error("registry at {url} answered {status} (error_code {error_code}): {message}")]
    Remote {
        /// The registry's base URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Confluent error code, 0 if the body had none.
        error_code: u32,
        /// The message.
        message: String,
    },
    /// A registration kept losing races (transient).
    #[error("registration did not settle after {0} attempts under concurrent writes; retry")]
    Contended(u32),
}

impl RegistryError {
    /// Transient errors are worth retrying: the store, or contention.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Store(_) | RegistryError::Contended(_) => true,
            RegistryError::Remote { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// Whether a remote registry said positively that it does not know the schema id asked
    /// for (Confluent's 40403). For a reader resolving an id, this is the one answer that is a
    /// property of the record; any other failure (unreachable, 401/403, 5xx, a wrong URL's
    /// plain 404) is the reader's condition, to wait out or to fix, never to blame on a record.
    pub fn is_unknown_schema_id(&self) -> bool {
        matches!(
            self,
            RegistryError::Remote {
                error_code: 40403,
                ..
            }
        )
    }

    /// HTTP status and Confluent `error_code`.
    pub fn codes(&self) -> (StatusCode, u32) {
        use RegistryError::*;
        match self {
            Unauthenticated => (StatusCode::UNAUTHORIZED, 40101),
            Forbidden { .. } => (StatusCode::FORBIDDEN, 40301),
            SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            NoSuchRoute(_) => (StatusCode::NOT_FOUND, 404),
            VersionNotFound { .. } => (StatusCode::NOT_FOUND, 40402),
            SchemaNotFound(_) => (StatusCode::NOT_FOUND, 40403),
            NotSoftDeleted { .. } => (StatusCode::NOT_FOUND, 40407),
            SubjectConfigNotFound(_) => (StatusCode::NOT_FOUND, 40408),
            Incompatible { .. } => (StatusCode::CONFLICT, 409),
            TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, 413),
            UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, 415),
            InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            InvalidVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            InvalidRequest(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42203),
            Store(_) | Contended(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50001),
            Remote {
                status, error_code, ..
            } => (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
                *error_code,
            ),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code) = self.codes();
        let body = serde_json::json!({"error_code": code, "message": self.to_string()});
        let mut response = (status, body.to_string()).into_response();
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static(crate::CONTENT_TYPE),
        );
        response
    }
}
