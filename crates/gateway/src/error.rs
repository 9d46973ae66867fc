//! The gateway's one error type, and the JSON body each error becomes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use lienthong_encode::Problem;

/// Everything a gateway call or its start can fail with.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No credential, or an unknown one (401).
    #[error("authentication required: send `Authorization: Bearer <token>`")]
    Unauthenticated,
    /// A known agency that may not publish this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The topic is not in the catalog, or the route does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request is not JSON (415).
    #[error("unsupported content type {0:?}: send application/json")]
    UnsupportedMediaType(String),
    /// The body or the batch is larger than allowed (413).
    #[error("{0}")]
    TooLarge(String),
    /// The body is not JSON, or not the right shape (400).
    #[error("{0}")]
    Malformed(String),
    /// One or more events do not fit their schema (400); every problem has its path.
    #[error("{count} problem(s) in the request")]
    Invalid {
        /// The problems listed (at most the configured bound).
        problems: Vec<Problem>,
        /// How many there were in all.
        count: usize,
    },
    /// An event id was already used for different content (409).
    #[error("{0}")]
    Conflict(String),
    /// Kafka is unreachable or did not acknowledge in time; nothing was produced (503).
    #[error("{message}")]
    Unavailable {
        /// Why.
        message: String,
        /// Seconds for `Retry-After`.
        retry_after_secs: u64,
    },
    /// Kafka went away between the commit and its confirmation: the events may or may not be
    /// on the log (503). Retry with the same event ids: a retry is answered with the original
    /// receipts once the gateway has read them back from the log.
    #[error("{message}")]
    OutcomeUnknown {
        /// Why.
        message: String,
        /// Seconds for `Retry-After`.
        retry_after_secs: u64,
    },
    /// The configuration is invalid (at start).
    #[error("invalid gateway configuration: {0}")]
    Config(String),
    /// Kafka could not be set up (at start).
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

impl GatewayError {
    /// Worth retrying the same request later: only when Kafka was unavailable.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GatewayError::Unavailable { .. } | GatewayError::Kafka(_)
        )
    }

    /// HTTP status and the short machine-readable code of the body.
    pub fn codes(&self) -> (StatusCode, &'static str) {
        match self {
            GatewayError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            GatewayError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            GatewayError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            GatewayError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            GatewayError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            GatewayError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed"),
            GatewayError::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid_event"),
            GatewayError::Conflict(_) => (StatusCode::CONFLICT, "event_id_conflict"),
            GatewayError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            GatewayError::OutcomeUnknown { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown")
            }
            GatewayError::Config(_) | GatewayError::Kafka(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code: `unauthenticated`, `forbidden`, `not_found`,
    /// `unsupported_media_type`, `too_large`, `malformed`, `invalid_event`,
    /// `event_id_conflict`, `unavailable` (nothing was produced), `outcome_unknown` (Kafka went
    /// away during the commit; retry with the same event ids).
    pub error: String,
    /// What went wrong, for a person.
    pub message: String,
    /// For `invalid_event`: each problem with its JSON path (bounded in number).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let (status, code) = self.codes();
        let message = self.to_string();
        let (problems, retry) = match self {
            GatewayError::Invalid { problems, .. } => (problems, None),
            GatewayError::Unavailable {
                retry_after_secs, ..
            }
            | GatewayError::OutcomeUnknown {
                retry_after_secs, ..
            } => (Vec::new(), Some(retry_after_secs)),
            GatewayError::Config(_) | GatewayError::Kafka(_) => (Vec::new(), Some(5)),
            _ => (Vec::new(), None),
        };
        let body = ErrorBody {
            error: code.into(),
            message,
            problems,
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"lienthong\""),
            );
        }
        response
    }
}
