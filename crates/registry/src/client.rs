//! One HTTP client for any Confluent-compatible registry: lienthong's own, or an external one
//! (Confluent, Apicurio's `ccompat` API, Karapace, Redpanda). The SDK, the gateway and the sinks
//! resolve schema ids through it.
//!
//! It caches both ways — id → parsed schema (inside the [`Codec`]) and (subject, schema) → id —
//! so once warm, encoding and decoding never make a network call per message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use lienthong_contract::{Codec, RegisteredSchema};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::RegistryError;

/// How to authenticate to the registry.
#[derive(Clone)]
pub enum Credentials {
    /// No credential.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// HTTP Basic: user name and password (for lienthong: agency code and token).
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
}

impl Credentials {
    /// `request` with this credential attached: what every lienthong HTTP client sends.
    pub fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Credentials::None => request,
            Credentials::Bearer(token) => request.bearer_auth(token),
            Credentials::Basic { user, password } => request.basic_auth(user, Some(password)),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credentials::Basic { user, .. } => write!(f, "Basic({user}:<redacted>)"),
        }
    }
}

impl Credentials {
    /// The credential a config names: the token given inline or read from `token_file`; sent
    /// as HTTP Basic with `agency` as the user name when one is given, else as a bearer token.
    /// No token at all is no credential (a registry open for reading). An agency without a
    /// token is refused. Nothing is read from the environment here: a token meant for one
    /// registry must not travel to another one a config names.
    pub fn from_config(
        agency: Option<&str>,
        token: Option<&str>,
        token_file: Option<&std::path::Path>,
    ) -> Result<Credentials, RegistryError> {
        let token = match (token, token_file) {
            (Some(_), Some(_)) => {
                return Err(RegistryError::InvalidRequest(
                    "give the registry token inline or in a file, not both".into(),
                ));
            }
            (Some(t), None) => Some(t.trim().to_string()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        RegistryError::InvalidRequest(format!(
                            "reading the registry token file {}: {e}",
                            path.display()
                        ))
                    })?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        }
        .filter(|t| !t.is_empty());
        match (agency, token) {
            (Some(user), Some(password)) => Ok(Credentials::Basic {
                user: user.to_string(),
                password,
            }),
            (None, Some(t)) => Ok(Credentials::Bearer(t)),
            (Some(user), None) => Err(RegistryError::InvalidRequest(format!(
                "the registry agency {user} has no token: set it inline or in a token file"
            ))),
            (None, None) => Ok(Credentials::None),
        }
    }
}

/// The environment variable from which the `lienthong` commands that talk to a registry named
/// on their command line (`schemas push`, `schemas diff`, `tail`, `publish`) take its token.
pub const TOKEN_ENV: &str = "LIENTHONG_REGISTRY_TOKEN";

/// A cached client of one registry.
pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
    codec: Codec,
    ids: RwLock<HashMap<(String, String), u32>>,
    requests: AtomicU64,
}

#[derive(Deserialize)]
struct IdBody {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
}

/// A subject's version as the registry holds it.
#[derive(Debug, Clone, Deserialize)]
pub struct SubjectVersion {
    /// Version number under the subject.
    pub version: u32,
    /// Global schema id.
    pub id: u32,
    /// The schema's JSON.
    pub schema: String,
}

impl RegistryClient {
    /// A client of the registry at `url` (e.g. `http://127.0.0.1:8081` or an Apicurio
    /// `…/apis/ccompat/v7`), filling `codec` as it learns schemas.
    pub fn new(url: &str, credentials: Credentials, codec: Codec) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| RegistryError::Store(format!("building the HTTP client: {e}")))?;
        Ok(RegistryClient {
            http,
            base: url.trim_end_matches('/').to_string(),
            credentials,
            codec,
            ids: RwLock::default(),
            requests: AtomicU64::new(0),
        })
    }

    /// The codec this client fills.
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// How many HTTP requests this client has made (for tests and metrics).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, RegistryError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method, &url)
            .header(reqwest::header::ACCEPT, crate::CONTENT_TYPE);
        req = self.credentials.authorize(req);
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, crate::CONTENT_TYPE)
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| {
            RegistryError::Store(format!("registry at {} unreachable: {e}", self.base))
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| RegistryError::Store(format!("reading the registry's answer: {e}")))?;
        if !status.is_success() {
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(RegistryError::Remote {
                url: self.base.clone(),
                status: status.as_u16(),
                error_code: body["error_code"]
                    .as_u64()
                    .and_then(|c| u32::try_from(c).ok())
                    .unwrap_or(0),
                message: body["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
            });
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| RegistryError::Store(format!("unexpected answer from the registry: {e}")))
    }

    /// The schema with `id`, from the cache or (once) from the registry.
    pub async fn schema(&self, id: u32) -> Result<Arc<RegisteredSchema>, RegistryError> {
        if let Ok(s) = self.codec.schema(id) {
            return Ok(s);
        }
        let body: SchemaBody = self
            .call(reqwest::Method::GET, &format!("/schemas/ids/{id}"), None)
            .await?;
        self.codec
            .insert(id, &body.schema)
            .map_err(|e| RegistryError::InvalidSchema(e.to_string()))
    }

    /// The id of `schema` under `subject`: cached, else looked up, else (with `register`)
    /// registered. The schema is cached in the codec too, ready to encode.
    pub async fn id_for(
        &self,
        subject: &str,
        schema: &str,
        register: bool,
    ) -> Result<u32, RegistryError> {
        let identity = lienthong_contract::codec::schema_identity(schema)
            .map_err(RegistryError::InvalidSchema)?;
        let key = (subject.to_string(), identity);
        if let Some(id) = self.ids.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(*id);
        }
        let path = encode_path(subject);
        let id = match self
            .call::<IdBody>(
                reqwest::Method::POST,
                &format!("/subjects/{path}"),
                Some(json!({"schema": schema})),
            )
            .await
        {
            Ok(found) => found.id,
            Err(RegistryError::Remote { status: 404, .. }) if register => {
                self.call::<IdBody>(
                    reqwest::Method::POST,
                    &format!("/subjects/{path}/versions"),
                    Some(json!({"schema": schema})),
                )
                .await?
                .id
            }
            Err(e) => return Err(e),
        };
        self.codec
            .insert(id, schema)
            .map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
        self.ids
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, id);
        Ok(id)
    }

    /// The latest version of `subject`, or `None` when the registry has no such subject.
    pub async fn latest(&self, subject: &str) -> Result<Option<SubjectVersion>, RegistryError> {
        let path = format!("/subjects/{}/versions/latest", encode_path(subject));
        match self.call(reqwest::Method::GET, &path, None).await {
            Ok(v) => Ok(Some(v)),
            Err(RegistryError::Remote { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Set a subject's compatibility mode.
    pub async fn set_compatibility(
        &self,
        subject: &str,
        mode: lienthong_contract::CompatibilityMode,
    ) -> Result<(), RegistryError> {
        let path = format!("/config/{}", encode_path(subject));
        self.call::<serde_json::Value>(
            reqwest::Method::PUT,
            &path,
            Some(json!({"compatibility": mode.as_str()})),
        )
        .await?;
        Ok(())
    }

    /// Decode a Confluent-framed record, fetching its writer schema on first sight only.
    pub async fn decode<'a, T: serde::Deserialize<'a>>(
        &self,
        bytes: &'a [u8],
    ) -> Result<(u32, T), RegistryError> {
        let (id, _) = lienthong_contract::codec::split_frame(bytes)
            .map_err(|e| RegistryError::InvalidRequest(e.to_string()))?;
        self.schema(id).await?;
        self.codec
            .decode(bytes)
            .map_err(|e| RegistryError::InvalidRequest(e.to_string()))
    }
}

/// Percent-encode a subject for a URL path segment.
fn encode_path(subject: &str) -> String {
    let mut out = String::with_capacity(subject.len());
    for b in subject.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
