//! The key service over HTTP, for readers outside `lienthong up` (a ward's own
//! `lienthong connect` beside its database): `GET /privacy/keys/{topic}/{pseudonym}?purpose=…`
//! with the agency's token, answered under the agency's live grant for that purpose, the
//! release recorded on the access log before the key leaves ([`router`]); and the client a
//! connector uses ([`HttpKeys`]).
//!
//! | Answer | Meaning |
//! | --- | --- |
//! | `200 {"key": base64, "classes": [...], "grant": id}` | released, recorded |
//! | `401` | the token is not an agency's |
//! | `403` | no live grant of the agency for that topic and purpose |
//! | `404` | the citizen has no key (erased, or never sealed) |
//! | `503` | the access log cannot be written: nothing released, retry |

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lienthong_contract::PersonalDataClass;
use lienthong_registry::Agencies;
use lienthong_registry::client::Credentials;
use rdkafka::consumer::ConsumerContext;
use serde::{Deserialize, Serialize};

use crate::error::PrivacyError;
use crate::seal::DataKey;
use crate::service::{KeyService, Release};
use crate::vault::{CitizenKeys, Opening};

/// A released key as the API answers it.
#[derive(Debug, Serialize, Deserialize)]
struct KeyAnswer {
    key: String,
    classes: BTreeSet<PersonalDataClass>,
    grant: String,
}

#[derive(Debug, Deserialize)]
struct KeyQuery {
    purpose: String,
}

struct Served<C: ConsumerContext + 'static> {
    service: Arc<KeyService<C>>,
    agencies: Agencies,
}

/// The key service's routes, for the agencies of `agencies`.
pub fn router<C: ConsumerContext + Clone + 'static>(
    service: Arc<KeyService<C>>,
    agencies: Agencies,
) -> axum::Router {
    axum::Router::new()
        .route("/privacy/keys/{topic}/{pseudonym}", get(key::<C>))
        .with_state(Arc::new(Served { service, agencies }))
}

fn answer(status: StatusCode, error: &str, message: String) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": error, "message": message})),
    )
        .into_response()
}

async fn key<C: ConsumerContext + Clone + 'static>(
    State(served): State<Arc<Served<C>>>,
    headers: HeaderMap,
    Path((topic, pseudonym)): Path<(String, String)>,
    query: Result<Query<KeyQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(agency) = served
        .agencies
        .authenticate(headers.get(header::AUTHORIZATION))
    else {
        return answer(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "an agency's token is needed".into(),
        );
    };
    let Ok(Query(query)) = query else {
        return answer(
            StatusCode::BAD_REQUEST,
            "malformed",
            "say the purpose: ?purpose=…".into(),
        );
    };
    match served
        .service
        .release(&agency.code, &topic, &pseudonym, &query.purpose)
    {
        Ok(Release {
            key: Some(key),
            classes,
            grant,
        }) => {
            // Recorded before the key leaves the service.
            if let Err(e) = served.service.flush().await {
                return answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("the access log: {e}; nothing was released"),
                );
            }
            axum::Json(KeyAnswer {
                key: STANDARD.encode(key.as_bytes()),
                classes,
                grant,
            })
            .into_response()
        }
        Ok(Release { key: None, .. }) => answer(
            StatusCode::NOT_FOUND,
            "no_key",
            format!("{pseudonym} has no data key (erased, or never sealed)"),
        ),
        Err(PrivacyError::NotGranted(m)) => answer(StatusCode::FORBIDDEN, "not_granted", m),
        Err(e) if e.is_transient() => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
        Err(e) => answer(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// How long a connector keeps a key the key service released (or its "no key"): a revocation
/// reaches a citizen already fetched within this time, a new citizen at once. Refusals are
/// not kept.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// At most this many answers are kept (then all are dropped and fetched again).
const CACHE_CAPACITY: usize = 100_000;

/// The key service's answers by (topic, pseudonym), and when they came.
type Answers = HashMap<(String, String), (Instant, Option<Opening>)>;

/// A reader's key source over HTTP: the key service at `base_url`, as the agency its
/// credential names, for one purpose. Answers are kept [`CACHE_TTL`].
pub struct HttpKeys {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
    purpose: String,
    cache: Mutex<Answers>,
    refused_once: std::sync::Once,
}

impl HttpKeys {
    /// Keys from the key service at `base_url` (`http://host:port`), sending `credentials`,
    /// stating `purpose`.
    pub fn new(
        base_url: &str,
        credentials: Credentials,
        purpose: String,
    ) -> Result<HttpKeys, PrivacyError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| PrivacyError::Invalid(format!("the key service's client: {e}")))?;
        Ok(HttpKeys {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            credentials,
            purpose,
            cache: Mutex::new(HashMap::new()),
            refused_once: std::sync::Once::new(),
        })
    }

    /// The answer, and whether to keep it: a refusal is not kept, so that a grant, or a case
    /// that makes the read need-to-know, takes effect at the next record.
    async fn fetch(
        &self,
        topic: &str,
        pseudonym: &str,
    ) -> Result<(Option<Opening>, bool), PrivacyError> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/privacy/keys/{topic}/{pseudonym}", self.base),
            [("purpose", &self.purpose)],
        )
        .map_err(|e| PrivacyError::Invalid(format!("the key service's address: {e}")))?;
        let mut request = self.http.get(url);
        request = match &self.credentials {
            Credentials::None => request,
            Credentials::Bearer(token) => request.bearer_auth(token),
            Credentials::Basic { user, password } => request.basic_auth(user, Some(password)),
        };
        let response = request
            .send()
            .await
            .map_err(|e| PrivacyError::Unreachable(format!("{}: {e}", self.base)))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| PrivacyError::Unreachable(format!("{}: {e}", self.base)))?;
        match status {
            StatusCode::OK => {
                let answer: KeyAnswer = serde_json::from_str(&body).map_err(|e| {
                    PrivacyError::Unreachable(format!("an answer that is not a key: {e}"))
                })?;
                let bytes: [u8; 32] = STANDARD
                    .decode(&answer.key)
                    .ok()
                    .and_then(|k| k.try_into().ok())
                    .ok_or_else(|| {
                        PrivacyError::Unreachable("an answer with a malformed key".into())
                    })?;
                Ok((
                    Some(Opening {
                        key: DataKey::from_bytes(bytes),
                        classes: answer.classes,
                    }),
                    true,
                ))
            }
            StatusCode::NOT_FOUND => Ok((None, true)),
            StatusCode::FORBIDDEN => {
                self.refused_once.call_once(|| {
                    tracing::warn!(purpose = %self.purpose, "the key service refused: {body}; citizen records are stored masked");
                });
                Ok((None, false))
            }
            StatusCode::UNAUTHORIZED => Err(PrivacyError::Refused(format!(
                "{} did not take the credential",
                self.base
            ))),
            other => Err(PrivacyError::Unreachable(format!(
                "{} answered {other}: {body}",
                self.base
            ))),
        }
    }
}

impl CitizenKeys for HttpKeys {
    fn opening<'a>(
        &'a self,
        topic: &'a str,
        pseudonym: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Option<Opening>, PrivacyError>> + Send + 'a>>
    {
        Box::pin(async move {
            let id = (topic.to_string(), pseudonym.to_string());
            if let Some((at, opening)) = self
                .cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                && at.elapsed() < CACHE_TTL
            {
                return Ok(opening.clone());
            }
            let (opening, keep) = self.fetch(topic, pseudonym).await?;
            if !keep {
                return Ok(opening);
            }
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(id, (Instant::now(), opening.clone()));
            Ok(opening)
        })
    }

    /// Nothing to wait for: the service records a release before it answers.
    fn flush(
        &self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), PrivacyError>> + Send + '_>> {
        Box::pin(std::future::ready(Ok(())))
    }
}
