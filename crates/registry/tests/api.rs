//! The REST API against an in-memory registry: every call, every error code, ownership. The
//! same router runs against Kafka in `tests/tests/registry.rs`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use lienthong_contract::{AgencyKind, Catalog, repo_schemas_dir};
use lienthong_registry::auth::hash_token;
use lienthong_registry::{Agencies, AgencyCredential, Registry, api};
use serde_json::{Value, json};
use tower::ServiceExt;

const V1: &str = r#"{"type":"record","name":"Note","namespace":"stp","fields":[{"name":"text","type":"string"}]}"#;
const V2: &str = r#"{"type":"record","name":"Note","namespace":"stp","fields":[{"name":"text","type":"string"},{"name":"lang","type":["null","string"],"default":null}]}"#;
const V3_INCOMPATIBLE: &str = r#"{"type":"record","name":"Note","namespace":"stp","fields":[{"name":"text","type":"string"},{"name":"lang","type":"string"}]}"#;

fn registry() -> Arc<Registry> {
    let catalog = Arc::new(Catalog::load(repo_schemas_dir()).unwrap());
    let cred = |code: &str, kind, token: &str, admin| AgencyCredential {
        code: code.into(),
        kind,
        token_sha256: hash_token(token),
        admin,
    };
    let agencies = Agencies::new(&[
        cred("STP", AgencyKind::Department, "stp-token", false),
        cred("SKHCN", AgencyKind::Department, "skhcn-token", true),
        cred("26734", AgencyKind::Ward, "ward-token", false),
    ])
    .unwrap();
    Arc::new(Registry::in_memory(catalog, agencies))
}

struct Client {
    app: axum::Router,
}

impl Client {
    fn new(registry: Arc<Registry>) -> Self {
        Client {
            app: api::router(registry),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path).header(
            header::CONTENT_TYPE,
            "application/vnd.schemaregistry.v1+json",
        );
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = body
            .map(|b| Body::from(b.to_string()))
            .unwrap_or_else(Body::empty);
        self.send(req.body(body).unwrap()).await
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some("ward-token"), None).await
    }

    async fn register(&self, subject: &str, schema: &str, token: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            &format!("/subjects/{subject}/versions"),
            Some(token),
            Some(json!({"schema": schema})),
        )
        .await
    }
}

fn error_code(v: &Value) -> i64 {
    v["error_code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not a Confluent error body: {v}"))
}

#[tokio::test]
async fn register_read_and_look_up_a_schema() {
    let c = Client::new(registry());
    let (s, v) = c.register("stp.notes-value", V1, "stp-token").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id = v["id"].as_u64().unwrap();
    // The same schema again: same id, no new version.
    assert_eq!(
        c.register("stp.notes-value", V1, "stp-token").await.1["id"],
        id
    );
    let (_, v2) = c.register("stp.notes-value", V2, "stp-token").await;
    assert_ne!(v2["id"], id);

    assert_eq!(c.get("/subjects").await.1, json!(["stp.notes-value"]));
    assert_eq!(
        c.get("/subjects/stp.notes-value/versions").await.1,
        json!([1, 2])
    );
    let (_, latest) = c.get("/subjects/stp.notes-value/versions/latest").await;
    assert_eq!(
        (latest["version"].as_u64(), latest["subject"].as_str()),
        (Some(2), Some("stp.notes-value"))
    );
    assert_eq!(
        c.get("/subjects/stp.notes-value/versions/1/schema").await.1,
        serde_json::from_str::<Value>(V1).unwrap()
    );
    assert_eq!(c.get(&format!("/schemas/ids/{id}")).await.1["schema"], V1);
    assert_eq!(
        c.get(&format!("/schemas/ids/{id}/schema")).await.1,
        serde_json::from_str::<Value>(V1).unwrap()
    );
    assert_eq!(
        c.get(&format!("/schemas/ids/{id}/versions")).await.1,
        json!([{"subject": "stp.notes-value", "version": 1}])
    );

    let (s, found) = c
        .call(
            Method::POST,
            "/subjects/stp.notes-value",
            Some("ward-token"),
            Some(json!({"schema": V1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (found["id"].as_u64(), found["version"].as_u64()),
        (Some(id), Some(1))
    );
    assert_eq!(c.get("/mode").await.1, json!({"mode": "READWRITE"}));
}

#[tokio::test]
async fn an_incompatible_schema_is_409_and_compatibility_can_be_tested() {
    let c = Client::new(registry());
    c.register("stp.notes-value", V1, "stp-token").await;
    let (s, v) = c
        .register("stp.notes-value", V3_INCOMPATIBLE, "stp-token")
        .await;
    assert_eq!((s, error_code(&v)), (StatusCode::CONFLICT, 409));
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("READER_FIELD_MISSING_DEFAULT_VALUE"),
        "{v}"
    );

    let path = "/compatibility/subjects/stp.notes-value/versions/latest?verbose=true";
    let (_, ok) = c
        .call(
            Method::POST,
            path,
            Some("ward-token"),
            Some(json!({"schema": V2})),
        )
        .await;
    assert_eq!(ok["is_compatible"], true);
    let (_, bad) = c
        .call(
            Method::POST,
            path,
            Some("ward-token"),
            Some(json!({"schema": V3_INCOMPATIBLE})),
        )
        .await;
    assert_eq!(bad["is_compatible"], false);
    assert!(!bad["messages"].as_array().unwrap().is_empty());

    // NONE lets anything through.
    let (s, _) = c
        .call(
            Method::PUT,
            "/config/stp.notes-value",
            Some("stp-token"),
            Some(json!({"compatibility": "NONE"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        c.get("/config/stp.notes-value").await.1,
        json!({"compatibilityLevel": "NONE"})
    );
    assert_eq!(
        c.register("stp.notes-value", V3_INCOMPATIBLE, "stp-token")
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn credentials_401_and_ownership_403_never_500() {
    let c = Client::new(registry());
    assert_eq!(
        error_code(&c.call(Method::GET, "/subjects", None, None).await.1),
        40101
    );
    let (s, v) = c.call(Method::GET, "/subjects", Some("wrong"), None).await;
    assert_eq!((s, error_code(&v)), (StatusCode::UNAUTHORIZED, 40101));
    // A ward may read, but not write a department's subject, nor a catalog subject it does not own.
    let (s, v) = c.register("stp.notes-value", V1, "ward-token").await;
    assert_eq!((s, error_code(&v)), (StatusCode::FORBIDDEN, 40301));
    let (s, _) = c
        .register("hcm.citizen.records-value", V1, "stp-token")
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "citizen records belong to CATP");
    // Only an admin changes the global config.
    let (s, _) = c
        .call(
            Method::PUT,
            "/config",
            Some("stp-token"),
            Some(json!({"compatibility": "NONE"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = c
        .call(
            Method::PUT,
            "/config",
            Some("skhcn-token"),
            Some(json!({"compatibility": "FULL"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        c.get("/config").await.1,
        json!({"compatibilityLevel": "FULL"})
    );
    // Deleting someone else's subject.
    c.register("stp.notes-value", V1, "stp-token").await;
    let (s, _) = c
        .call(
            Method::DELETE,
            "/subjects/stp.notes-value",
            Some("ward-token"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn soft_deleted_ids_still_resolve_until_permanently_deleted() {
    let c = Client::new(registry());
    let id = c.register("stp.notes-value", V1, "stp-token").await.1["id"]
        .as_u64()
        .unwrap();
    let (s, _) = c
        .call(
            Method::DELETE,
            "/subjects/stp.notes-value/versions/1?permanent=true",
            Some("stp-token"),
            None,
        )
        .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "permanent needs a soft delete first"
    );
    let (s, v) = c
        .call(
            Method::DELETE,
            "/subjects/stp.notes-value/versions/1",
            Some("stp-token"),
            None,
        )
        .await;
    assert_eq!((s, v), (StatusCode::OK, json!(1)));
    assert_eq!(
        error_code(&c.get("/subjects/stp.notes-value/versions").await.1),
        40401
    );
    assert_eq!(
        c.get("/subjects?deleted=true").await.1,
        json!(["stp.notes-value"])
    );
    assert_eq!(
        c.get(&format!("/schemas/ids/{id}")).await.1["schema"],
        V1,
        "old messages still decode"
    );

    let (s, _) = c
        .call(
            Method::DELETE,
            "/subjects/stp.notes-value?permanent=true",
            Some("stp-token"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        error_code(&c.get(&format!("/schemas/ids/{id}")).await.1),
        40403
    );
    // The id is never reused.
    let new_id = c.register("stp.other-value", V2, "stp-token").await.1["id"]
        .as_u64()
        .unwrap();
    assert!(new_id > id);
}

#[tokio::test]
async fn bad_input_gets_confluent_errors() {
    let c = Client::new(registry());
    c.register("stp.notes-value", V1, "stp-token").await;
    // Invalid schema JSON, and valid JSON that is no Avro schema.
    for bad in [
        "{not json",
        r#"{"type":"record","name":"X"}"#,
        r#"{"type":"nope"}"#,
    ] {
        let (s, v) = c.register("stp.notes-value", bad, "stp-token").await;
        assert_eq!(
            (s, error_code(&v)),
            (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            "{bad}"
        );
    }
    // A body that is not even the request's JSON shape.
    let (s, v) = c
        .call(
            Method::POST,
            "/subjects/stp.notes-value/versions",
            Some("stp-token"),
            Some(json!([1, 2])),
        )
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42201)
    );
    // Unknown subject and version; non-numeric and out-of-range versions.
    assert_eq!(
        error_code(&c.get("/subjects/stp.missing/versions").await.1),
        40401
    );
    assert_eq!(
        error_code(&c.get("/subjects/stp.notes-value/versions/7").await.1),
        40402
    );
    for v in ["abc", "0", "-2", "99999999999", "1.5"] {
        let (s, body) = c
            .get(&format!("/subjects/stp.notes-value/versions/{v}"))
            .await;
        assert_eq!(
            (s, error_code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            "{v}"
        );
    }
    assert_eq!(error_code(&c.get("/schemas/ids/999").await.1), 40403);
    assert_eq!(
        error_code(&c.get("/schemas/ids/not-a-number").await.1),
        40403
    );
    assert_eq!(error_code(&c.get("/config/stp.notes-value").await.1), 40408);
    let (s, v) = c
        .call(
            Method::PUT,
            "/config/stp.notes-value",
            Some("stp-token"),
            Some(json!({"compatibility": "SIDEWAYS"})),
        )
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42203)
    );
    // References to schemas that do not exist.
    let with_ref = json!({"schema": r#"{"type":"record","name":"W","fields":[{"name":"n","type":"stp.Note"}]}"#,
                          "references": [{"name": "stp.Note", "subject": "stp.absent-value", "version": 1}]});
    let (s, v) = c
        .call(
            Method::POST,
            "/subjects/stp.w-value/versions",
            Some("stp-token"),
            Some(with_ref),
        )
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42201)
    );
    assert!(
        v["message"].as_str().unwrap().contains("stp.absent-value"),
        "{v}"
    );
    // Unsupported schema types.
    let (s, v) = c
        .call(
            Method::POST,
            "/subjects/stp.p-value/versions",
            Some("stp-token"),
            Some(json!({"schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF"})),
        )
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42201)
    );
}

#[tokio::test]
async fn references_to_existing_schemas_work() {
    let c = Client::new(registry());
    c.register("stp.notes-value", V1, "stp-token").await;
    let with_ref = json!({"schema": r#"{"type":"record","name":"W","namespace":"stp","fields":[{"name":"n","type":"stp.Note"}]}"#,
                          "references": [{"name": "stp.Note", "subject": "stp.notes-value", "version": 1}]});
    let (s, v) = c
        .call(
            Method::POST,
            "/subjects/stp.w-value/versions",
            Some("stp-token"),
            Some(with_ref),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, got) = c.get("/subjects/stp.w-value/versions/1").await;
    assert_eq!(got["references"][0]["subject"], "stp.notes-value");
}

#[tokio::test]
async fn oversized_bodies_are_413_and_wrong_media_types_415() {
    let c = Client::new(registry());
    let huge = json!({"schema": "x".repeat(api::MAX_BODY_BYTES + 10)});
    let (s, v) = c
        .register(
            "stp.notes-value",
            huge["schema"].as_str().unwrap(),
            "stp-token",
        )
        .await;
    assert_eq!((s, error_code(&v)), (StatusCode::PAYLOAD_TOO_LARGE, 413));
    let req = Request::builder()
        .method(Method::POST)
        .uri("/subjects/stp.notes-value/versions")
        .header(header::CONTENT_TYPE, "text/plain")
        .header(header::AUTHORIZATION, "Bearer stp-token")
        .body(Body::from(json!({"schema": V1}).to_string()))
        .unwrap();
    let (s, v) = c.send(req).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, 415)
    );
    // Plain JSON is accepted.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/subjects/stp.notes-value/versions")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, "Bearer stp-token")
        .body(Body::from(json!({"schema": V1}).to_string()))
        .unwrap();
    assert_eq!(c.send(req).await.0, StatusCode::OK);
}

#[tokio::test]
async fn unicode_subject_names_work_and_control_characters_do_not() {
    let c = Client::new(registry());
    let subject = "stp.hồ-sơ-khai-sinh-value";
    let encoded = "stp.h%E1%BB%93-s%C6%A1-khai-sinh-value";
    let (s, v) = c.register(encoded, V1, "stp-token").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(c.get("/subjects").await.1, json!([subject]));
    let (s, v) = c.register("stp.bad%07name", V1, "stp-token").await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42203)
    );
}

#[tokio::test]
async fn bootstrap_registers_the_catalog_once() {
    let r = registry();
    let first = r.bootstrap().await.unwrap();
    assert_eq!(first.len(), 5);
    let second = r.bootstrap().await.unwrap();
    assert_eq!(first, second, "idempotent: same ids");
    let c = Client::new(r);
    assert_eq!(
        c.get("/subjects/hcm.case.events-value/versions").await.1,
        json!([1])
    );
    assert_eq!(
        c.get("/config/hcm.case.events-value").await.1,
        json!({"compatibilityLevel": "FULL_TRANSITIVE"})
    );
}

#[tokio::test]
async fn schemas_that_differ_only_in_a_default_are_different_schemas() {
    let c = Client::new(registry());
    let (_, a) = c.register("stp.notes-value", V2, "stp-token").await;
    let with_default = V2.replace(
        r#"{"name":"text","type":"string"}"#,
        r#"{"name":"text","type":"string","default":"-"}"#,
    );
    assert_ne!(with_default, V2);
    let (s, b) = c
        .register("stp.notes-value", &with_default, "stp-token")
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_ne!(
        a["id"], b["id"],
        "a default changes what old records read as: a new id"
    );
    assert_eq!(
        c.get("/subjects/stp.notes-value/versions").await.1,
        json!([1, 2])
    );
    // Whitespace and key order do not make a new schema.
    let respaced = format!(
        " {} ",
        V2.replace(
            r#""type":"record","name":"Note""#,
            r#""name":"Note", "type":"record""#
        )
    );
    assert_eq!(
        c.register("stp.notes-value", &respaced, "stp-token")
            .await
            .1["id"],
        a["id"]
    );
}

#[tokio::test]
async fn schemas_that_trip_the_avro_library_get_an_answer_not_a_crash() {
    let c = Client::new(registry());
    for (i, weird) in [
        r#"{"type":"record","name":"W","fields":[{"name":"a","type":"int","size":"x"}]}"#,
        r#"{"type":"record","name":"W","fields":[{"name":"a","type":"bytes","logicalType":"decimal","precision":true}]}"#,
        r#"{"type":"record","name":"W","fields":1}"#,
    ]
    .into_iter()
    .enumerate()
    {
        let (s, v) = c.register(&format!("stp.weird{i}-value"), weird, "stp-token").await;
        assert!(
            s == StatusCode::OK || s == StatusCode::UNPROCESSABLE_ENTITY,
            "{weird}: {s} {v}"
        );
    }
    // And the registry still works.
    assert_eq!(
        c.register("stp.notes-value", V1, "stp-token").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn catalog_subjects_keep_their_mode_and_versions_and_their_prefix_is_reserved() {
    let r = registry();
    r.bootstrap().await.unwrap();
    let c = Client::new(r);
    // The owner of the case topic (SKHCN here is admin; STP is not the owner anyway): a
    // non-admin cannot loosen a catalog subject's mode or delete its versions.
    let (s, _) = c
        .call(
            Method::PUT,
            "/config/hcm.case.events-value",
            Some("stp-token"),
            Some(json!({"compatibility": "NONE"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = c
        .call(
            Method::DELETE,
            "/subjects/hcm.case.events-value/versions/1",
            Some("stp-token"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        c.get("/config/hcm.case.events-value").await.1,
        json!({"compatibilityLevel": "FULL_TRANSITIVE"})
    );
    // A subject under the catalog's prefix but outside the catalog belongs to no agency.
    let (s, _) = c.register("hcm.private-value", V1, "stp-token").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        c.register("hcm.private-value", V1, "skhcn-token").await.0,
        StatusCode::OK,
        "an admin may"
    );
}

#[tokio::test]
async fn bad_queries_paths_and_routes_get_confluent_errors_too() {
    let c = Client::new(registry());
    let (s, v) = c.get("/subjects?deleted=yes").await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42203)
    );
    let (s, v) = c.get("/subjects/%FF%FE/versions").await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42203),
        "invalid UTF-8 in the path"
    );
    let (s, v) = c.get("/no/such/call").await;
    assert_eq!((s, error_code(&v)), (StatusCode::NOT_FOUND, 404));
    let (s, v) = c
        .call(Method::PATCH, "/subjects", Some("ward-token"), None)
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::NOT_FOUND, 404),
        "a method the call lacks"
    );
}
