//! The Confluent Schema Registry REST API, as an axum router.
//!
//! Every route needs an agency's credential (401 without one); reads are open to any agency,
//! changes only to a subject's owner (403 otherwise). Bodies are JSON, sent as
//! `application/vnd.schemaregistry.v1+json` or plain `application/json`, at most
//! [`MAX_BODY_BYTES`]; every error is Confluent's `{"error_code": …, "message": …}`.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use lienthong_contract::CompatibilityMode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::auth::Agency;
use crate::error::RegistryError;
use crate::state::Reference;
use crate::{CONTENT_TYPE, Registry, VersionSpec, VersionView};

/// Largest accepted request body. A registration becomes one Kafka record holding the schema
/// JSON-escaped, which must stay under Kafka's default 1 MB record limit.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

type Shared = State<Arc<Registry>>;
type ApiResult = Result<Response, RegistryError>;

/// The router, with authentication on every route.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility),
        )
        .route("/config", get(get_global_config).put(put_global_config))
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route("/mode", get(mode))
        .fallback(no_such_route)
        .method_not_allowed_fallback(no_such_route)
        .layer(middleware::from_fn_with_state(
            registry.clone(),
            authenticate,
        ))
        .with_state(registry)
}

async fn authenticate(State(registry): Shared, mut request: Request, next: Next) -> Response {
    match registry
        .agencies()
        .authenticate(request.headers().get(header::AUTHORIZATION))
    {
        Ok(agency) => {
            request.extensions_mut().insert(agency);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

fn ok(body: Value) -> ApiResult {
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response())
}

/// An axum extractor whose rejection is a Confluent-style error instead of plain text.
macro_rules! confluent_extractor {
    ($(#[$doc:meta])* $name:ident wraps $inner:ident, $what:literal) => {
        $(#[$doc])*
        struct $name<T>(T);

        impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for $name<T> {
            type Rejection = RegistryError;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
                axum::extract::$inner::<T>::from_request_parts(parts, state)
                    .await
                    .map(|axum::extract::$inner(v)| $name(v))
                    .map_err(|e| RegistryError::InvalidRequest(format!(concat!("invalid ", $what, ": {}"), e.body_text())))
            }
        }
    };
}

confluent_extractor!(
    /// Path parameters.
    Path wraps Path, "path"
);
confluent_extractor!(
    /// Query flags.
    Query wraps Query, "query"
);

/// A JSON body in the Confluent media type or plain JSON, bounded in size, with
/// Confluent-style errors for every way it can be wrong.
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = RegistryError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        check_content_type(req.headers())?;
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| RegistryError::TooLarge {
                limit: MAX_BODY_BYTES,
            })?;
        serde_json::from_slice(&bytes).map(Body).map_err(|e| {
            RegistryError::InvalidSchema(format!(
                "request body is not valid JSON for this call: {e}"
            ))
        })
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), RegistryError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or_default();
    let essence = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/vnd.schemaregistry.v1+json"
        | "application/vnd.schemaregistry+json"
        | "application/json"
        | "application/octet-stream" => Ok(()),
        _ => Err(RegistryError::UnsupportedMediaType(ct.to_string())),
    }
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

impl SchemaBody {
    fn check_type(&self) -> Result<(), RegistryError> {
        match self.schema_type.as_deref() {
            None | Some("AVRO") => Ok(()),
            Some(other) => Err(RegistryError::InvalidSchema(format!(
                "schemaType {other} is not supported: lienthong speaks Avro"
            ))),
        }
    }
}

#[derive(Deserialize, Default)]
struct Flags {
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    permanent: bool,
    #[serde(default)]
    verbose: bool,
    #[serde(default, rename = "defaultToGlobal")]
    default_to_global: bool,
}

fn view_json(v: &VersionView) -> Value {
    let mut body =
        json!({"subject": v.subject, "version": v.version, "id": v.id, "schema": v.schema});
    if !v.references.is_empty() {
        body["references"] = json!(v.references);
    }
    body
}

fn parse_id(id: &str) -> Result<u32, RegistryError> {
    id.parse()
        .map_err(|_| RegistryError::SchemaNotFound(format!("Schema {id} not found")))
}

async fn list_subjects(State(r): Shared, Query(f): Query<Flags>) -> ApiResult {
    ok(json!(r.subjects(f.deleted)))
}

async fn register(
    State(r): Shared,
    Extension(agency): Extension<Agency>,
    Path(subject): Path<String>,
    Body(body): Body<SchemaBody>,
) -> ApiResult {
    body.check_type()?;
    let id = r
        .register(&agency, &subject, &body.schema, body.references)
        .await?;
    ok(json!({"id": id}))
}

async fn lookup(
    State(r): Shared,
    Path(subject): Path<String>,
    Body(body): Body<SchemaBody>,
) -> ApiResult {
    body.check_type()?;
    ok(view_json(
        &r.lookup(&subject, &body.schema, &body.references).await?,
    ))
}

async fn list_versions(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(f): Query<Flags>,
) -> ApiResult {
    ok(json!(r.versions(&subject, f.deleted).await?))
}

async fn get_version(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(f): Query<Flags>,
) -> ApiResult {
    ok(view_json(
        &r.version(&subject, VersionSpec::parse(&version)?, f.deleted)
            .await?,
    ))
}

async fn get_version_schema(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResult {
    let v = r
        .version(&subject, VersionSpec::parse(&version)?, false)
        .await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], v.schema).into_response())
}

async fn schema_by_id(State(r): Shared, Path(id): Path<String>) -> ApiResult {
    let (schema, references) = r.schema_by_id(parse_id(&id)?).await?;
    let mut body = json!({"schema": schema});
    if !references.is_empty() {
        body["references"] = json!(references);
    }
    ok(body)
}

async fn raw_schema_by_id(State(r): Shared, Path(id): Path<String>) -> ApiResult {
    let (schema, _) = r.schema_by_id(parse_id(&id)?).await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], schema).into_response())
}

async fn versions_of_id(State(r): Shared, Path(id): Path<String>) -> ApiResult {
    let list = r.subject_versions_of(parse_id(&id)?).await?;
    ok(json!(
        list.into_iter()
            .map(|(subject, version)| json!({"subject": subject, "version": version}))
            .collect::<Vec<_>>()
    ))
}

async fn delete_subject(
    State(r): Shared,
    Extension(agency): Extension<Agency>,
    Path(subject): Path<String>,
    Query(f): Query<Flags>,
) -> ApiResult {
    ok(json!(
        r.delete_subject(&agency, &subject, f.permanent).await?
    ))
}

async fn delete_version(
    State(r): Shared,
    Extension(agency): Extension<Agency>,
    Path((subject, version)): Path<(String, String)>,
    Query(f): Query<Flags>,
) -> ApiResult {
    ok(json!(
        r.delete_version(
            &agency,
            &subject,
            VersionSpec::parse(&version)?,
            f.permanent
        )
        .await?
    ))
}

async fn compatibility(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(f): Query<Flags>,
    Body(body): Body<SchemaBody>,
) -> ApiResult {
    body.check_type()?;
    let messages = r
        .test_compatibility(
            &subject,
            VersionSpec::parse(&version)?,
            &body.schema,
            &body.references,
        )
        .await?;
    let mut out = json!({"is_compatible": messages.is_empty()});
    if f.verbose {
        out["messages"] = json!(messages);
    }
    ok(out)
}

#[derive(Deserialize)]
struct ConfigBody {
    compatibility: String,
}

fn parse_mode(body: &ConfigBody) -> Result<CompatibilityMode, RegistryError> {
    CompatibilityMode::parse(&body.compatibility).ok_or_else(|| {
        RegistryError::InvalidRequest(format!(
            "Invalid compatibility level {:?}",
            body.compatibility
        ))
    })
}

async fn get_global_config(State(r): Shared) -> ApiResult {
    ok(json!({"compatibilityLevel": r.config(None).1}))
}

async fn put_global_config(
    State(r): Shared,
    Extension(agency): Extension<Agency>,
    Body(body): Body<ConfigBody>,
) -> ApiResult {
    let mode = parse_mode(&body)?;
    r.set_config(&agency, None, Some(mode)).await?;
    ok(json!({"compatibility": mode}))
}

async fn get_subject_config(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(f): Query<Flags>,
) -> ApiResult {
    match r.config(Some(&subject)) {
        (Some(mode), _) => ok(json!({"compatibilityLevel": mode})),
        (None, global) if f.default_to_global => ok(json!({"compatibilityLevel": global})),
        (None, _) => Err(RegistryError::SubjectConfigNotFound(subject)),
    }
}

async fn put_subject_config(
    State(r): Shared,
    Extension(agency): Extension<Agency>,
    Path(subject): Path<String>,
    Body(body): Body<ConfigBody>,
) -> ApiResult {
    let mode = parse_mode(&body)?;
    r.set_config(&agency, Some(&subject), Some(mode)).await?;
    ok(json!({"compatibility": mode}))
}

async fn delete_subject_config(
    State(r): Shared,
    Extension(agency): Extension<Agency>,
    Path(subject): Path<String>,
) -> ApiResult {
    let (previous, global) = r.config(Some(&subject));
    r.set_config(&agency, Some(&subject), None).await?;
    ok(json!({"compatibilityLevel": previous.unwrap_or(global)}))
}

async fn no_such_route(method: axum::http::Method, uri: axum::http::Uri) -> RegistryError {
    RegistryError::NoSuchRoute(format!("{method} {}", uri.path()))
}

async fn mode() -> ApiResult {
    ok(json!({"mode": "READWRITE"}))
}
