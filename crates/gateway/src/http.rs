//! The HTTP API: routes, authentication, body limits, and the OpenAPI document generated from
//! the handlers' annotations (so it cannot drift from the routes).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use lienthong_contract::catalog::check_publishes_as_itself;
use serde::Serialize;
use serde_json::Value as Json;
use tokio::sync::oneshot;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ErrorBody, GatewayError};
use crate::idem::{EventKey, Receipt, Reservation, content_hash};
use crate::producer::{Job, OutRecord, ProducerState};
use crate::{Gateway, Route};
use lienthong_encode::Json as BodyJson;
use lienthong_encode::{Encoded, Problem};

type Shared = State<Arc<Gateway>>;

/// The receipts of a batch, in the order of its events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchReceipts {
    /// One receipt per event.
    pub receipts: Vec<Receipt>,
}

/// `/readyz`'s body (as every component answers it).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// What is missing, when not ready.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "lienthong gateway",
        description = "Publish events to Ho Chi Minh City's data exchange bus as JSON. Each event is checked against its topic's Avro schema, converted to Avro and produced to Kafka; the answer comes only after Kafka acknowledged. See docs/gateway.md."
    ),
    paths(healthz, readyz),
    components(schemas(ErrorBody, Problem, Receipt, BatchReceipts, Readiness)),
    modifiers(&Security)
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "agency_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The agency's token (only its SHA-256 is configured)."))
                    .build(),
            ),
        );
    }
}

/// The gateway's router: the publish routes and `/openapi.json` around `common`, the routes
/// every component serves (`/metrics`, `/healthz`, `/readyz`: `lienthong_telemetry::component`),
/// so that requests to all of them are counted and refused alike while stopping.
pub fn router(gateway: Arc<Gateway>, common: Router) -> Router {
    let (router, mut api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(publish_event))
        .routes(routes!(publish_batch))
        .split_for_parts();
    api.info.version = env!("CARGO_PKG_VERSION").into();
    let mut doc = serde_json::to_value(&api).unwrap_or(Json::Null);
    add_topic_schemas(&mut doc, &gateway);
    let doc = Arc::new(doc.to_string());
    router
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], (*doc).clone()) }
            }),
        )
        .with_state(gateway.clone())
        .merge(common)
        .fallback(no_such_route)
        .method_not_allowed_fallback(no_such_route)
        .layer(middleware::from_fn_with_state(
            gateway.clone(),
            refuse_when_stopping,
        ))
        .layer(middleware::from_fn_with_state(gateway, record))
}

/// Requests and their duration, by route template (bounded labels).
async fn record(State(gw): Shared, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let m = &gw.telemetry.gateway;
    m.requests
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .inc();
    m.request_duration
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Count refused events by topic (catalog topics only) and reason.
fn count_rejected(gw: &Gateway, topic: &str, events: usize, e: &GatewayError) {
    let reason = match e {
        GatewayError::Invalid { .. }
        | GatewayError::Malformed(_)
        | GatewayError::UnsupportedMediaType(_) => "invalid",
        GatewayError::Unauthenticated => "unauthorized",
        GatewayError::Forbidden(_) => "forbidden",
        GatewayError::TooLarge(_) => "too_large",
        GatewayError::Conflict(_) => "conflict",
        GatewayError::Unavailable { .. }
        | GatewayError::OutcomeUnknown { .. }
        | GatewayError::Config(_)
        | GatewayError::Kafka(_) => "unavailable",
        GatewayError::NotFound(_) => return,
    };
    if gw.routes.contains_key(topic) {
        gw.telemetry
            .gateway
            .events_rejected
            .with_label_values(&[topic, reason])
            .inc_by(events.max(1) as u64);
    }
}

/// The gateway's router with the schema registry's (Confluent API) mounted under `/registry`:
/// one server for both. Point registry clients at `http://host:port/registry`.
pub fn with_registry(gateway: Router, registry: Router) -> Router {
    gateway.nest("/registry", registry)
}

/// Per-topic request schemas (`event.<topic>`), generated from the Avro schemas at start.
fn add_topic_schemas(doc: &mut Json, gw: &Gateway) {
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Json::as_object_mut)
    else {
        return;
    };
    for topic in gw.catalog.topics() {
        if gw.routes.contains_key(&topic.name) {
            schemas.insert(
                format!("event.{}", topic.name),
                schema_json(&topic.schema, &mut Vec::new()),
            );
        }
    }
}

/// A JSON Schema (OpenAPI 3.1) of what the gateway accepts for an Avro schema.
pub fn schema_json(schema: &apache_avro::Schema, seen: &mut Vec<String>) -> Json {
    use apache_avro::Schema as S;
    use serde_json::json;
    match schema {
        S::Null => json!({"type": "null"}),
        S::Boolean => json!({"type": "boolean"}),
        S::Int | S::TimeMillis => json!({"type": "integer", "format": "int32"}),
        S::Long
        | S::TimeMicros
        | S::TimestampNanos
        | S::LocalTimestampMillis
        | S::LocalTimestampMicros
        | S::LocalTimestampNanos => {
            json!({"type": "integer", "format": "int64"})
        }
        S::Date => {
            json!({"oneOf": [{"type": "string", "format": "date"}, {"type": "integer", "description": "days since 1970-01-01"}]})
        }
        S::TimestampMillis | S::TimestampMicros => {
            json!({"oneOf": [{"type": "string", "format": "date-time"}, {"type": "integer", "description": "since the Unix epoch"}]})
        }
        S::Float | S::Double => json!({"type": "number"}),
        S::Bytes | S::Fixed(_) | S::Decimal(_) | S::BigDecimal | S::Duration => {
            json!({"type": "string"})
        }
        S::String => json!({"type": "string"}),
        S::Uuid => json!({"type": "string", "format": "uuid"}),
        S::Enum(e) => json!({"type": "string", "enum": e.symbols}),
        S::Array(a) => json!({"type": "array", "items": schema_json(&a.items, seen)}),
        S::Map(m) => json!({"type": "object", "additionalProperties": schema_json(&m.types, seen)}),
        S::Union(u) => {
            let branches = u.variants();
            let non_null: Vec<_> = branches.iter().filter(|b| !matches!(b, S::Null)).collect();
            if let [only] = non_null[..] {
                let inner = schema_json(only, seen);
                if non_null.len() < branches.len() {
                    json!({"oneOf": [{"type": "null"}, inner]})
                } else {
                    inner
                }
            } else {
                let tagged: Vec<Json> = branches
                    .iter()
                    .map(|b| match b {
                        S::Null => json!({"type": "null"}),
                        other => {
                            let name = match other {
                                S::Record(r) => r.name.name.clone(),
                                S::Ref { name } => name.name.clone(),
                                S::Enum(e) => e.name.name.clone(),
                                _ => "value".into(),
                            };
                            json!({"type": "object", "required": [name.clone()], "additionalProperties": false, "properties": {name: schema_json(other, seen)}})
                        }
                    })
                    .collect();
                json!({"oneOf": tagged})
            }
        }
        S::Record(r) => {
            let full = r.name.fullname(None);
            if seen.contains(&full) {
                return json!({"type": "object", "description": format!("{full} (recursive)")});
            }
            seen.push(full);
            let mut props = serde_json::Map::new();
            let mut required = Vec::new();
            for f in &r.fields {
                let mut s = schema_json(&f.schema, seen);
                if let (Some(doc), Json::Object(o)) = (&f.doc, &mut s) {
                    o.insert("description".into(), doc.clone().into());
                }
                if let (Some(fmt), Json::Object(o)) = (
                    f.custom_attributes
                        .get(lienthong_contract::catalog::FORMAT_ATTR),
                    &mut s,
                ) {
                    o.insert("x-lienthong-format".into(), fmt.clone());
                }
                if f.default.is_none() {
                    required.push(f.name.clone());
                }
                props.insert(f.name.clone(), s);
            }
            seen.pop();
            json!({"type": "object", "title": r.name.name, "additionalProperties": false, "required": required, "properties": props})
        }
        S::Ref { name } => json!({"description": format!("an {} (defined above)", name.name)}),
    }
}

async fn refuse_when_stopping(State(gw): Shared, request: Request, next: Next) -> Response {
    if gw.shutdown.is_cancelled() {
        return GatewayError::Unavailable {
            message: "the gateway is shutting down; retry on another instance".into(),
            retry_after_secs: gw.config.retry_after_secs,
        }
        .into_response();
    }
    next.run(request).await
}

async fn no_such_route(method: axum::http::Method, uri: axum::http::Uri) -> GatewayError {
    GatewayError::NotFound(format!("no such route: {method} {}", uri.path()))
}

/// Is the gateway alive? Always 200 while the process serves. (Documented here, served by
/// `lienthong_telemetry::component` as on every component.)
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
#[allow(dead_code)]
fn healthz() {}

/// Can it take events? Kafka reachable, producer initialised, idempotency index rebuilt, and
/// the schema registry reachable ([`Gateway::problems`]). (Documented here, served by
/// `lienthong_telemetry::component`.)
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, body = Readiness, description = "ready"),
    (status = 503, body = Readiness, description = "not ready; the problems say why")
))]
#[allow(dead_code)]
fn readyz() {}

/// The refusals both publish routes answer alike (for the OpenAPI document).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum Refusals {
    /// No or unknown token
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The agency may not publish to this topic, or not as this unit
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Unknown topic
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// Not application/json
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// Kafka unavailable; nothing was produced. Retry after Retry-After seconds
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// Publish one event to a topic.
///
/// The body is one event as JSON (see the `event.<topic>` schemas). 201 with the receipt once
/// Kafka committed it; 200 with the original receipt (`duplicate: true`) if this event id was
/// already published with the same content.
#[utoipa::path(
    post,
    path = "/topics/{topic}/events",
    params(("topic" = String, Path, description = "Catalog topic, e.g. hcm.case.events")),
    request_body(content = Object, content_type = "application/json", description = "One event"),
    responses(
        (status = 201, body = Receipt, description = "Committed to Kafka"),
        (status = 200, body = Receipt, description = "Already published (same event id, same content): the original receipt"),
        (status = 400, body = ErrorBody, description = "Malformed JSON or an invalid event; each problem names its path"),
        (status = 409, body = ErrorBody, description = "The event id was used for different content"),
        (status = 413, body = ErrorBody, description = "Body too large"),
        Refusals,
    ),
    security(("agency_token" = []))
)]
async fn publish_event(
    State(gw): Shared,
    topic: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    respond(
        gw,
        topic,
        headers,
        body,
        false,
        |status, mut receipts| match receipts.pop() {
            Some(r) => (status, axum::Json(r)).into_response(),
            None => GatewayError::Malformed("no event".into()).into_response(),
        },
    )
    .await
}

/// Accept one event or a batch, answer with `ok` once committed, and count a refusal.
async fn respond(
    gw: Arc<Gateway>,
    topic: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
    batch: bool,
    ok: impl FnOnce(StatusCode, Vec<Receipt>) -> Response,
) -> Response {
    let name = topic.as_ref().map(|Path(t)| t.clone()).unwrap_or_default();
    let mut events = 1;
    match accept(gw.clone(), topic, &headers, body, batch, &mut events).await {
        Ok((status, receipts)) => ok(status, receipts),
        Err(e) => {
            count_rejected(&gw, &name, events, &e);
            e.into_response()
        }
    }
}

/// Publish a batch of events to a topic, all or nothing.
///
/// The body is a JSON array of events. If any event is invalid, nothing is produced and every
/// problem is listed with the event's index. 201 with one receipt per event (in order) once
/// Kafka committed them all; 200 if every one was a duplicate.
#[utoipa::path(
    post,
    path = "/topics/{topic}/events:batch",
    params(("topic" = String, Path, description = "Catalog topic, e.g. hcm.case.events")),
    request_body(content = Vec<Object>, content_type = "application/json", description = "A JSON array of events"),
    responses(
        (status = 201, body = BatchReceipts, description = "Committed to Kafka, all of them"),
        (status = 200, body = BatchReceipts, description = "Every event was already published"),
        (status = 400, body = ErrorBody, description = "Malformed JSON or invalid events; nothing was produced"),
        (status = 409, body = ErrorBody, description = "An event id was used for different content; nothing was produced"),
        (status = 413, body = ErrorBody, description = "Body or batch too large"),
        Refusals,
    ),
    security(("agency_token" = []))
)]
async fn publish_batch(
    State(gw): Shared,
    topic: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    respond(gw, topic, headers, body, true, |status, receipts| {
        (status, axum::Json(BatchReceipts { receipts })).into_response()
    })
    .await
}

fn check_content_type(headers: &HeaderMap) -> Result<(), GatewayError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("<not text>"))
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(GatewayError::UnsupportedMediaType(ct.to_string()))
    }
}

async fn accept(
    gw: Arc<Gateway>,
    topic: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    body: Body,
    batch: bool,
    n_events: &mut usize,
) -> Result<(StatusCode, Vec<Receipt>), GatewayError> {
    let agency = gw
        .agencies
        .authenticate(headers.get(header::AUTHORIZATION))
        .map_err(|_| GatewayError::Unauthenticated)?;
    let Path(topic) = topic.map_err(|e| GatewayError::Malformed(e.body_text()))?;
    let spec = gw
        .catalog
        .topic(&topic)
        .map_err(|e| GatewayError::NotFound(e.to_string()))?;
    let route = gw
        .routes
        .get(&topic)
        .ok_or_else(|| GatewayError::NotFound(format!("topic {topic:?} is not served here")))?;
    spec.check_publisher(&agency.code, agency.kind)
        .map_err(|e| GatewayError::Forbidden(e.to_string()))?;
    if let Some(signers) = &gw.signers
        && !signers.contains_key(&agency.code)
    {
        return Err(GatewayError::Forbidden(format!(
            "this gateway signs what it publishes and holds no signing key for {}",
            agency.code
        )));
    }
    check_content_type(headers)?;
    let limit = gw.config.max_body_bytes;
    let too_large = || GatewayError::TooLarge(format!("request body larger than {limit} bytes"));
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    // Valid bodies in the usual shape are encoded straight from their bytes; any other goes
    // through the tree and the walk, which find every problem.
    let encoded = match route
        .encoder
        .encode_direct(&bytes, batch, gw.config.max_batch_events)
    {
        Some(encoded) => {
            *n_events = encoded.len();
            encoded
        }
        None => walk_all(&gw, route, &topic, &bytes, batch, n_events)?,
    };
    for (i, e) in encoded.iter().enumerate() {
        check_publishes_as_itself(&agency.code, &e.producer_unit).map_err(|r| {
            GatewayError::Forbidden(if batch {
                format!("event [{i}]: {r}")
            } else {
                r.to_string()
            })
        })?;
    }
    if &*route.name == crate::CASE_TOPIC
        && let Some(documents) = gw.documents.get()
    {
        let refused: Vec<Problem> = encoded
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let problem = documents.refusal(&e.value)?;
                Some(Problem {
                    index: batch.then_some(i),
                    path: if batch {
                        format!("$[{i}].event")
                    } else {
                        "$.event".into()
                    },
                    problem: format!("a document signature does not verify: {problem}"),
                })
            })
            .collect();
        if !refused.is_empty() {
            let count = refused.len();
            let problems = refused.into_iter().take(gw.config.max_problems).collect();
            return Err(GatewayError::Invalid { problems, count });
        }
    }
    let mut encoded = encoded;
    if let Some(sealer) = gw.sealer.get() {
        for e in encoded.iter_mut() {
            match &*route.name {
                crate::CITIZEN_TOPIC => {
                    seal(sealer, &agency.code, e, gw.config.retry_after_secs).await?
                }
                crate::CASE_TOPIC | crate::FEEDBACK_TOPIC => pseudonymise(sealer, &route.name, e)?,
                _ => {}
            }
        }
    }
    if let Err(why) = fast_unavailable(&gw) {
        return Err(GatewayError::Unavailable {
            message: format!("{why}; nothing was produced"),
            retry_after_secs: gw.config.retry_after_secs,
        });
    }
    // From here on the work runs in its own task: if the client goes away, reservations are
    // still completed or released, never left dangling.
    let name = route.name.clone();
    let signer = agency.code.clone();
    tokio::spawn(async move { publish(gw, name, encoded, &signer).await })
        .await
        .map_err(|e| GatewayError::Unavailable {
            message: format!("publishing task failed: {e}"),
            retry_after_secs: 1,
        })?
}

/// Seal one encoded citizen record in place (`crate::Gateway::seal_citizen_records`): the
/// citizen's key from the key service, as the posting agency; the record decoded, sealed and
/// written back; the Kafka key now the pseudonym. No key, no publish: `503`.
async fn seal(
    sealer: &crate::Sealer,
    agency: &str,
    e: &mut Encoded,
    retry_after_secs: u64,
) -> Result<(), GatewayError> {
    use lienthong_contract::events::CitizenRecord;
    let (_, mut record): (u32, CitizenRecord) = sealer
        .codec
        .decode(&e.value)
        .map_err(|err| GatewayError::Malformed(format!("the citizen record: {err}")))?;
    let key = sealer
        .keys
        .seal_key(agency, &record.profile.personal_id)
        .await
        .map_err(|err| GatewayError::Unavailable {
            message: format!("the key service: {err}; nothing was produced"),
            retry_after_secs,
        })?;
    lienthong_privacy::seal_citizen(&mut record, &key)
        .map_err(|err| GatewayError::Malformed(format!("sealing the citizen record: {err}")))?;
    let (id, _) = lienthong_contract::codec::split_frame(&e.value)
        .map_err(|err| GatewayError::Malformed(format!("the citizen record: {err}")))?;
    let mut value = Vec::with_capacity(e.value.len() + 64);
    lienthong_contract::codec::encode_typed(id, &record, &mut value);
    e.value = value;
    e.key = key.pseudonym;
    Ok(())
}

/// Replace the personal ids of a case or feedback event by the citizen's pseudonym
/// (`applicant_id`, `citizen_id`), so that no clear personal id reaches the log when the bus
/// seals personal data.
fn pseudonymise(sealer: &crate::Sealer, topic: &str, e: &mut Encoded) -> Result<(), GatewayError> {
    use lienthong_contract::events::{CaseEvent, CaseEventKind, FeedbackEvent, FeedbackEventKind};
    let malformed = |err: lienthong_contract::ContractError| {
        GatewayError::Malformed(format!("the event: {err}"))
    };
    let (id, _) = lienthong_contract::codec::split_frame(&e.value).map_err(malformed)?;
    let mut value = Vec::with_capacity(e.value.len() + 32);
    if topic == crate::CASE_TOPIC {
        let (_, mut event): (u32, CaseEvent) = sealer.codec.decode(&e.value).map_err(malformed)?;
        let CaseEventKind::CaseSubmitted(s) = &mut event.event else {
            return Ok(());
        };
        s.applicant_id = known_pseudonym(sealer, &s.applicant_id)?;
        lienthong_contract::codec::encode_typed(id, &event, &mut value);
    } else {
        let (_, mut event): (u32, FeedbackEvent) =
            sealer.codec.decode(&e.value).map_err(malformed)?;
        let FeedbackEventKind::FeedbackSubmitted(s) = &mut event.event else {
            return Ok(());
        };
        let Some(citizen) = &mut s.citizen_id else {
            return Ok(());
        };
        *citizen = known_pseudonym(sealer, citizen)?;
        lienthong_contract::codec::encode_typed(id, &event, &mut value);
    }
    e.value = value;
    Ok(())
}

/// The pseudonym of `personal_id` from the gateway's key service (in process: always known).
fn known_pseudonym(sealer: &crate::Sealer, personal_id: &str) -> Result<String, GatewayError> {
    sealer
        .keys
        .known_pseudonym(personal_id)
        .ok_or_else(|| GatewayError::Unavailable {
            message: "the key service cannot tell a pseudonym in place; nothing was produced"
                .into(),
            retry_after_secs: 1,
        })
}

/// Parse the body into the JSON tree, check its shape and size, and encode every event with
/// the walk, which reports every problem.
fn walk_all(
    gw: &Gateway,
    route: &Route,
    topic: &str,
    bytes: &[u8],
    batch: bool,
    n_events: &mut usize,
) -> Result<Vec<Encoded>, GatewayError> {
    let json = BodyJson::parse(bytes)
        .map_err(|e| GatewayError::Malformed(format!("the body is not valid JSON: {e}")))?;
    let mut events: Vec<BodyJson<'_>> = match (batch, json) {
        (true, BodyJson::Array(a)) => a,
        (true, other) => {
            return Err(GatewayError::Malformed(format!(
                "a batch is a JSON array of events, not {}",
                other.kind()
            )));
        }
        (false, obj @ BodyJson::Object(_)) => vec![obj],
        (false, other) => {
            return Err(GatewayError::Malformed(format!(
                "an event is a JSON object, not {} (use /topics/{topic}/events:batch for arrays)",
                other.kind()
            )));
        }
    };
    *n_events = events.len();
    if events.is_empty() {
        return Err(GatewayError::Malformed("the batch is empty".into()));
    }
    if events.len() > gw.config.max_batch_events {
        return Err(GatewayError::TooLarge(format!(
            "{} events in the batch; at most {}",
            events.len(),
            gw.config.max_batch_events
        )));
    }
    encode_all(gw, route, &mut events, batch)
}

fn fast_unavailable(gw: &Gateway) -> Result<(), String> {
    if gw.health.producer() == ProducerState::Fenced {
        return Err("this instance was fenced by another using the same transactional.id".into());
    }
    if !gw.health.kafka_reachable() {
        return Err("Kafka is unreachable".into());
    }
    if !gw.index_ready.load(Ordering::Relaxed) {
        return Err("the idempotency index is being rebuilt from the log".into());
    }
    Ok(())
}

fn encode_all(
    gw: &Gateway,
    route: &Route,
    events: &mut [BodyJson<'_>],
    batch: bool,
) -> Result<Vec<Encoded>, GatewayError> {
    let max = gw.config.max_problems.max(1);
    let mut problems = Vec::new();
    let mut count = 0usize;
    let mut out = Vec::with_capacity(events.len());
    let mut seen: HashMap<EventKey, usize, foldhash::fast::RandomState> = HashMap::default();
    for (i, event) in events.iter_mut().enumerate() {
        let index = batch.then_some(i);
        match route.encoder.encode(event, index, max) {
            Ok(e) => {
                if let Some(first) = seen.insert(e.event_key, i) {
                    count += 1;
                    if problems.len() < max {
                        problems.push(Problem {
                            index,
                            path: format!("$[{i}].envelope.event_id"),
                            problem: format!("the same event id as event [{first}] of this batch"),
                        });
                    }
                }
                out.push(e);
            }
            Err(p) => {
                count += p.len();
                let room = max.saturating_sub(problems.len());
                problems.extend(p.into_iter().take(room));
            }
        }
    }
    if count > 0 {
        return Err(GatewayError::Invalid { problems, count });
    }
    Ok(out)
}

/// Reserve the event ids, produce the new ones in one transaction, and answer.
async fn publish(
    gw: Arc<Gateway>,
    topic: Arc<str>,
    mut encoded: Vec<Encoded>,
    agency: &str,
) -> Result<(StatusCode, Vec<Receipt>), GatewayError> {
    let wait_limit = Duration::from_millis(gw.config.kafka_timeout_ms.saturating_mul(3).max(1000));
    let unavailable = |message: String| GatewayError::Unavailable {
        message,
        retry_after_secs: gw.config.retry_after_secs,
    };
    let ids: Vec<(EventKey, [u8; 32])> = encoded
        .iter()
        .map(|e| {
            (
                e.event_key,
                content_hash(&topic, e.key.as_bytes(), &e.value),
            )
        })
        .collect();
    // All of the request's ids at once: either every new one is held, or (an id in flight in
    // another request) none is, and this request waits and tries again.
    let (fresh, duplicates) = loop {
        match gw.index.reserve(&ids) {
            Reservation::Held { fresh, duplicates } => break (fresh, duplicates),
            Reservation::Conflict(conflicts) => {
                let which: Vec<String> = conflicts
                    .iter()
                    .map(|&i| format!("{:?}", encoded[i].event_id))
                    .collect();
                return Err(GatewayError::Conflict(format!(
                    "event id(s) {} already published with different content; nothing was produced",
                    which.join(", ")
                )));
            }
            Reservation::Wait(mut rx) => {
                // Settled (or its sender gone): reserve again.
                if tokio::time::timeout(wait_limit, rx.wait_for(|settled| *settled))
                    .await
                    .is_err()
                {
                    return Err(unavailable(
                        "an earlier request with the same event id is still in flight".into(),
                    ));
                }
            }
        }
    };
    drop(ids);
    let mut receipts: Vec<Option<Receipt>> = vec![None; encoded.len()];
    if !duplicates.is_empty() {
        gw.telemetry
            .gateway
            .duplicates
            .with_label_values(&[&*topic])
            .inc_by(duplicates.len() as u64);
        for (i, place) in duplicates {
            receipts[i] = Some(place.receipt(encoded[i].event_id.clone(), true));
        }
    }
    if fresh.is_empty() {
        return Ok((StatusCode::OK, receipts.into_iter().flatten().collect()));
    }
    let release_all = |gw: &Gateway, encoded: &[Encoded]| {
        gw.index
            .release(fresh.iter().map(|&i| encoded[i].event_key));
    };
    // The records take the key and value; the event ids stay for the receipts.
    let mut records: Vec<OutRecord> = fresh
        .iter()
        .map(|&i| OutRecord {
            topic: topic.clone(),
            key: std::mem::take(&mut encoded[i].key),
            value: std::mem::take(&mut encoded[i].value),
            signature: None,
        })
        .collect();
    // One signature over the request's records (a Merkle root), each with its path.
    if let Some(signer) = gw.signers.as_ref().and_then(|s| s.get(agency)) {
        let leaves: Vec<_> = records
            .iter()
            .map(|r| lienthong_signing::leaf(&r.topic, Some(r.key.as_bytes()), Some(&r.value)))
            .collect();
        match lienthong_signing::SignedBatch::sign(signer, &leaves) {
            Ok(batch) => {
                for (i, r) in records.iter_mut().enumerate() {
                    r.signature = Some(batch.header_value(i));
                }
            }
            Err(e) => {
                release_all(&gw, &encoded);
                return Err(unavailable(format!("signing failed: {e}")));
            }
        }
    }
    let (reply, answer) = oneshot::channel();
    let Some(sender) = gw.sender() else {
        release_all(&gw, &encoded);
        return Err(unavailable("the gateway is shutting down".into()));
    };
    if sender.send(Job { records, reply }).await.is_err() {
        release_all(&gw, &encoded);
        return Err(unavailable("the gateway is shutting down".into()));
    }
    drop(sender);
    match answer.await {
        Ok(Ok(placed)) => {
            gw.telemetry
                .bus
                .events_produced
                .with_label_values(&[&*topic, "gateway"])
                .inc_by(fresh.len() as u64);
            gw.index.complete(
                &topic,
                fresh
                    .iter()
                    .zip(&placed)
                    .map(|(&i, p)| (encoded[i].event_key, p.partition, p.offset)),
            );
            for (&i, p) in fresh.iter().zip(placed) {
                receipts[i] = Some(Receipt {
                    topic: topic.clone(),
                    partition: p.partition,
                    offset: p.offset,
                    event_id: std::mem::take(&mut encoded[i].event_id),
                    duplicate: false,
                });
            }
            Ok((
                StatusCode::CREATED,
                receipts.into_iter().flatten().collect(),
            ))
        }
        Ok(Err(f)) if f.maybe_committed => {
            release_all(&gw, &encoded);
            Err(GatewayError::OutcomeUnknown {
                message: format!(
                    "Kafka went away during the commit ({}); the events may or may not be on the log: retry with the same event ids",
                    f.message
                ),
                retry_after_secs: gw.config.retry_after_secs,
            })
        }
        Ok(Err(f)) => {
            release_all(&gw, &encoded);
            Err(unavailable(format!(
                "Kafka did not take the events: {}",
                f.message
            )))
        }
        Err(_) => {
            release_all(&gw, &encoded);
            Err(unavailable("the committer stopped".into()))
        }
    }
}
