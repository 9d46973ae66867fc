//! The key service over HTTP, for processes outside `lienthong up`: a ward's own
//! `lienthong connect` beside its database, which reads ([`HttpKeys`]), and a department's own
//! SDK process, which seals ([`HttpSealKeys`]). [`router`] serves, with the agency's token:
//!
//! - `GET /privacy/keys/{topic}/{pseudonym}?purpose=…`: a citizen's key for reading, under the
//!   agency's live grant for that purpose, the release recorded on the access log before the
//!   key leaves;
//! - `POST /privacy/seal-keys` `{"personal_id": "…"}`: a citizen's pseudonym and key for
//!   sealing (created on first use), only for an agency the catalog lets publish citizen
//!   records, recorded as a sealing;
//! - `DELETE /privacy/seal-keys/{pseudonym}`: erase the citizen (destroy the data key), for
//!   the same publishers, recorded as their erasure; `200 {"erased": bool}`;
//! - `POST /privacy/pseudonyms` `{"personal_ids": ["…", …]}` (at most
//!   [`MAX_PSEUDONYMS`]): the pseudonyms, for the applicant of a case event; for any agency
//!   (the pseudonym key never leaves the service).
//!
//! | Answer | Meaning |
//! | --- | --- |
//! | `200 {"key": base64, "classes": [...], "grant": id}` | released for reading, recorded |
//! | `200 {"pseudonym": "pn1_…", "key": base64}` | released for sealing, recorded |
//! | `200 {"pseudonyms": ["pn1_…", …]}` | pseudonyms, in the order asked |
//! | `400` | a body or personal id that is not one |
//! | `401` | the token is not an agency's |
//! | `403` | no live grant of the agency for that topic and purpose; or not a publisher of citizen records |
//! | `404` | the citizen has no key (erased, or never sealed) |
//! | `503` | the key or access log cannot be written: nothing released, retry |

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lienthong_contract::{PersonalDataClass, TopicSpec};
use lienthong_registry::Agencies;
use lienthong_registry::client::Credentials;
use rdkafka::consumer::ConsumerContext;
use serde::{Deserialize, Serialize};

use crate::error::PrivacyError;
use crate::seal::DataKey;
use crate::service::{KeyService, Release};
use crate::vault::{CitizenKey, CitizenKeyService, CitizenKeys, Opening};

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

/// A key released for sealing as the API answers it.
#[derive(Debug, Serialize, Deserialize)]
struct SealKeyAnswer {
    pseudonym: String,
    key: String,
}

#[derive(Debug, Deserialize)]
struct SealKeyRequest {
    personal_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct PseudonymsRequest {
    personal_ids: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PseudonymsAnswer {
    pseudonyms: Vec<String>,
}

/// At most this many personal ids in one `POST /privacy/pseudonyms`.
pub const MAX_PSEUDONYMS: usize = 1000;

struct Served<C: ConsumerContext + 'static> {
    service: Arc<KeyService<C>>,
    agencies: Agencies,
    citizen_topic: TopicSpec,
}

/// The key service's routes, for the agencies of `agencies`; `citizen_topic` (the catalog's
/// citizen topic) says who may seal.
pub fn router<C: ConsumerContext + Clone + 'static>(
    service: Arc<KeyService<C>>,
    agencies: Agencies,
    citizen_topic: TopicSpec,
) -> axum::Router {
    axum::Router::new()
        .route("/privacy/keys/{topic}/{pseudonym}", get(key::<C>))
        .route("/privacy/seal-keys", post(seal_key::<C>))
        .route("/privacy/pseudonyms", post(pseudonyms::<C>))
        .route(
            "/privacy/seal-keys/{pseudonym}",
            axum::routing::delete(erase::<C>),
        )
        .with_state(Arc::new(Served {
            service,
            agencies,
            citizen_topic,
        }))
}

fn unauthenticated() -> Response {
    answer(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "an agency's token is needed".into(),
    )
}

fn unavailable(e: &PrivacyError) -> Response {
    answer(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("{e}; nothing was released"),
    )
}

async fn seal_key<C: ConsumerContext + Clone + 'static>(
    State(served): State<Arc<Served<C>>>,
    headers: HeaderMap,
    body: Result<axum::Json<SealKeyRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let agency = match publisher(&served, &headers) {
        Ok(agency) => agency,
        Err(refused) => return *refused,
    };
    let Ok(axum::Json(request)) = body else {
        return answer(
            StatusCode::BAD_REQUEST,
            "malformed",
            "send {\"personal_id\": \"…\"}".into(),
        );
    };
    if !lienthong_contract::catalog::FieldFormat::PersonalId.accepts(&request.personal_id) {
        return answer(
            StatusCode::BAD_REQUEST,
            "malformed",
            "personal_id is not a 12-digit personal id".into(),
        );
    }
    let key = match served
        .service
        .seal_key(
            &agency.code,
            &served.citizen_topic.name,
            &request.personal_id,
        )
        .await
    {
        Ok(key) => key,
        Err(e) if e.is_transient() => return unavailable(&e),
        Err(e) => return answer(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    };
    // Recorded before the key leaves the service.
    if let Err(e) = served.service.flush().await {
        return unavailable(&e);
    }
    axum::Json(SealKeyAnswer {
        pseudonym: key.pseudonym,
        key: STANDARD.encode(key.key.as_bytes()),
    })
    .into_response()
}

/// Whether the request's agency may seal (and so erase) citizen records: `Err` is the answer.
fn publisher<C: ConsumerContext + 'static>(
    served: &Served<C>,
    headers: &HeaderMap,
) -> Result<lienthong_registry::auth::Agency, Box<Response>> {
    let Ok(agency) = served
        .agencies
        .authenticate(headers.get(header::AUTHORIZATION))
    else {
        return Err(Box::new(unauthenticated()));
    };
    if !served.citizen_topic.may_publish(&agency.code, agency.kind) {
        return Err(Box::new(answer(
            StatusCode::FORBIDDEN,
            "not_a_publisher",
            format!(
                "{} does not publish {}: only its publishers seal and erase citizen records",
                agency.code, served.citizen_topic.name
            ),
        )));
    }
    Ok(agency)
}

async fn erase<C: ConsumerContext + Clone + 'static>(
    State(served): State<Arc<Served<C>>>,
    headers: HeaderMap,
    Path(pseudonym): Path<String>,
) -> Response {
    let agency = match publisher(&served, &headers) {
        Ok(agency) => agency,
        Err(refused) => return *refused,
    };
    if !crate::Pseudonyms::is_pseudonym(&pseudonym) {
        return answer(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("{pseudonym:?} is not a pseudonym"),
        );
    }
    match served.service.erase(&agency.code, &pseudonym).await {
        Ok(erased) => axum::Json(serde_json::json!({ "erased": erased })).into_response(),
        Err(e) if e.is_transient() => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{e}; retry"),
        ),
        Err(e) => answer(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn pseudonyms<C: ConsumerContext + Clone + 'static>(
    State(served): State<Arc<Served<C>>>,
    headers: HeaderMap,
    body: Result<axum::Json<PseudonymsRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if served
        .agencies
        .authenticate(headers.get(header::AUTHORIZATION))
        .is_err()
    {
        return unauthenticated();
    }
    let Ok(axum::Json(request)) = body else {
        return answer(
            StatusCode::BAD_REQUEST,
            "malformed",
            "send {\"personal_ids\": [\"…\", …]}".into(),
        );
    };
    if request.personal_ids.len() > MAX_PSEUDONYMS {
        return answer(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("at most {MAX_PSEUDONYMS} personal ids at a time"),
        );
    }
    let vault = served.service.vault();
    axum::Json(PseudonymsAnswer {
        pseudonyms: request
            .personal_ids
            .iter()
            .map(|id| vault.pseudonym(id))
            .collect(),
    })
    .into_response()
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
        return unauthenticated();
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
                return unavailable(&e);
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

/// The key service as its HTTP clients reach it: the address, the agency's credential, and
/// one way to send a request and read its answer.
struct KeyServiceClient {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
}

impl KeyServiceClient {
    fn new(base_url: &str, credentials: Credentials) -> Result<Self, PrivacyError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| PrivacyError::Invalid(format!("the key service's client: {e}")))?;
        Ok(KeyServiceClient {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            credentials,
        })
    }

    /// Send `request` with the credential: the answer's status and body.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, String), PrivacyError> {
        let unreachable =
            |e: reqwest::Error| PrivacyError::Unreachable(format!("{}: {e}", self.base));
        let response = self
            .credentials
            .authorize(request)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let body = response.text().await.map_err(unreachable)?;
        Ok((status, body))
    }
}

/// A data key as the API answers it (base64 of 32 bytes).
fn answered_key(key: &str) -> Result<DataKey, PrivacyError> {
    STANDARD
        .decode(key)
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .map(DataKey::from_bytes)
        .ok_or_else(|| PrivacyError::Unreachable("an answer with a malformed key".into()))
}

/// The key service's answers by (topic, pseudonym), and when they came.
type Answers = HashMap<(String, String), (Instant, Option<Opening>)>;

/// A reader's key source over HTTP: the key service at `base_url`, as the agency its
/// credential names, for one purpose. Answers are kept [`CACHE_TTL`].
pub struct HttpKeys {
    client: KeyServiceClient,
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
        Ok(HttpKeys {
            client: KeyServiceClient::new(base_url, credentials)?,
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
        let base = &self.client.base;
        let url = reqwest::Url::parse_with_params(
            &format!("{base}/privacy/keys/{topic}/{pseudonym}"),
            [("purpose", &self.purpose)],
        )
        .map_err(|e| PrivacyError::Invalid(format!("the key service's address: {e}")))?;
        let (status, body) = self.client.send(self.client.http.get(url)).await?;
        match status {
            StatusCode::OK => {
                let answer: KeyAnswer = serde_json::from_str(&body).map_err(|e| {
                    PrivacyError::Unreachable(format!("an answer that is not a key: {e}"))
                })?;
                Ok((
                    Some(Opening {
                        key: answered_key(&answer.key)?,
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
                "{base} did not take the credential"
            ))),
            other => Err(PrivacyError::Unreachable(format!(
                "{base} answered {other}: {body}"
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

/// A publisher's key service over HTTP: the key service at `base_url`, as the agency its
/// credential names (a publisher of citizen records). Sealing keys are kept [`CACHE_TTL`]
/// (so a record sealed just after an erasure elsewhere may be sealed under the destroyed key:
/// nobody can read it, which is what the erasure asked), pseudonyms for as long as the
/// process runs (they never change), at most [`CACHE_CAPACITY`] of each.
pub struct HttpSealKeys {
    client: KeyServiceClient,
    keys: Mutex<HashMap<String, (Instant, CitizenKey)>>,
    pseudonyms: Mutex<HashMap<String, String>>,
}

impl HttpSealKeys {
    /// Sealing keys from the key service at `base_url` (`http://host:port`), sending
    /// `credentials`.
    pub fn new(base_url: &str, credentials: Credentials) -> Result<HttpSealKeys, PrivacyError> {
        Ok(HttpSealKeys {
            client: KeyServiceClient::new(base_url, credentials)?,
            keys: Mutex::new(HashMap::new()),
            pseudonyms: Mutex::new(HashMap::new()),
        })
    }

    /// Send `request` with the credential; the body of a `200`, or the error it means.
    async fn call(&self, request: reqwest::RequestBuilder) -> Result<String, PrivacyError> {
        let (status, body) = self.client.send(request).await?;
        let base = &self.client.base;
        match status {
            StatusCode::OK => Ok(body),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST => Err(
                PrivacyError::Refused(format!("{base} answered {status}: {body}")),
            ),
            other => Err(PrivacyError::Unreachable(format!(
                "{base} answered {other}: {body}"
            ))),
        }
    }

    fn remember(&self, personal_id: &str, pseudonym: &str) {
        let mut known = self.pseudonyms.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= CACHE_CAPACITY {
            known.clear();
        }
        known.insert(personal_id.to_string(), pseudonym.to_string());
    }

    async fn fetch_seal_key(&self, personal_id: &str) -> Result<CitizenKey, PrivacyError> {
        let body = self
            .call(
                self.client
                    .http
                    .post(format!("{}/privacy/seal-keys", self.client.base))
                    .json(&serde_json::json!({ "personal_id": personal_id })),
            )
            .await?;
        let answer: SealKeyAnswer = serde_json::from_str(&body)
            .map_err(|e| PrivacyError::Unreachable(format!("an answer that is not a key: {e}")))?;
        if !crate::Pseudonyms::is_pseudonym(&answer.pseudonym) {
            return Err(PrivacyError::Unreachable(
                "an answer with a malformed pseudonym".into(),
            ));
        }
        Ok(CitizenKey {
            pseudonym: answer.pseudonym,
            key: answered_key(&answer.key)?,
        })
    }
}

impl CitizenKeyService for HttpSealKeys {
    fn seal_key<'a>(
        &'a self,
        _agency: &'a str,
        personal_id: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<CitizenKey, PrivacyError>> + Send + 'a>> {
        Box::pin(async move {
            if let Some((at, key)) = self
                .keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(personal_id)
                && at.elapsed() < CACHE_TTL
            {
                return Ok(key.clone());
            }
            let key = self.fetch_seal_key(personal_id).await?;
            self.remember(personal_id, &key.pseudonym);
            let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            if keys.len() >= CACHE_CAPACITY {
                keys.clear();
            }
            keys.insert(personal_id.to_string(), (Instant::now(), key.clone()));
            Ok(key)
        })
    }

    fn known_pseudonym(&self, personal_id: &str) -> Option<String> {
        if crate::Pseudonyms::is_pseudonym(personal_id) {
            return Some(personal_id.to_string());
        }
        self.pseudonyms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(personal_id)
            .cloned()
    }

    fn pseudonyms<'a>(
        &'a self,
        personal_ids: &'a [String],
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<String>, PrivacyError>> + Send + 'a>>
    {
        Box::pin(async move {
            let mut out = Vec::with_capacity(personal_ids.len());
            for chunk in personal_ids.chunks(MAX_PSEUDONYMS) {
                let body = self
                    .call(
                        self.client
                            .http
                            .post(format!("{}/privacy/pseudonyms", self.client.base))
                            .json(&PseudonymsRequest {
                                personal_ids: chunk.to_vec(),
                            }),
                    )
                    .await?;
                let answer: PseudonymsAnswer = serde_json::from_str(&body).map_err(|e| {
                    PrivacyError::Unreachable(format!("an answer that is not pseudonyms: {e}"))
                })?;
                if answer.pseudonyms.len() != chunk.len()
                    || !answer
                        .pseudonyms
                        .iter()
                        .all(|p| crate::Pseudonyms::is_pseudonym(p))
                {
                    return Err(PrivacyError::Unreachable(
                        "an answer with other pseudonyms than asked".into(),
                    ));
                }
                for (id, pseudonym) in chunk.iter().zip(&answer.pseudonyms) {
                    self.remember(id, pseudonym);
                }
                out.extend(answer.pseudonyms);
            }
            Ok(out)
        })
    }

    fn erase<'a>(
        &'a self,
        _agency: &'a str,
        pseudonym: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<bool, PrivacyError>> + Send + 'a>> {
        Box::pin(async move {
            let body = self
                .call(self.client.http.delete(format!(
                    "{}/privacy/seal-keys/{pseudonym}",
                    self.client.base
                )))
                .await?;
            // Whoever asked, no key of this citizen stays here.
            self.keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, (_, k)| k.pseudonym != pseudonym);
            let answer: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
                PrivacyError::Unreachable(format!("an answer that is not an erasure: {e}"))
            })?;
            Ok(answer["erased"].as_bool().unwrap_or(false))
        })
    }
}
