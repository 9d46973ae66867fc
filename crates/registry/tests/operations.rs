//! Registry calls are counted by operation and outcome: the operation from the Confluent API's
//! paths (a fixed set), the outcome from the status class.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::routing::{get, post};
use lienthong_registry::metrics::{count_operations, operation};
use lienthong_telemetry::Telemetry;
use tower::ServiceExt;

#[test]
fn every_call_of_the_api_has_its_operation() {
    let cases = [
        (
            Method::POST,
            "/subjects/hcm.case.events-value/versions",
            "register",
        ),
        (Method::POST, "/subjects/hcm.case.events-value", "lookup"),
        (
            Method::POST,
            "/compatibility/subjects/s/versions/latest",
            "compatibility",
        ),
        (Method::GET, "/config", "config"),
        (Method::PUT, "/config/s", "config"),
        (Method::GET, "/mode", "config"),
        (Method::DELETE, "/subjects/s", "delete"),
        (Method::DELETE, "/subjects/s/versions/2", "delete"),
        (Method::GET, "/schemas/ids/7", "get_schema"),
        (Method::GET, "/schemas/ids/7/schema", "get_schema"),
        (Method::GET, "/subjects/s/versions/latest", "get_schema"),
        (Method::GET, "/subjects/s/versions/1/schema", "get_schema"),
        (Method::GET, "/subjects", "list"),
        (Method::GET, "/subjects/s/versions", "list"),
        (Method::GET, "/no/such/call", "other"),
        (Method::PATCH, "/subjects", "other"),
    ];
    for (method, path, want) in cases {
        assert_eq!(operation(&method, path), want, "{method} {path}");
    }
}

#[tokio::test]
async fn calls_are_counted_by_operation_and_outcome() {
    let telemetry = Telemetry::new("test").unwrap();
    let api = Router::new()
        .route("/subjects", get(|| async { "[]" }))
        .route(
            "/subjects/{subject}/versions",
            post(|| async { (StatusCode::CONFLICT, "{}") }),
        )
        .route(
            "/schemas/ids/{id}",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "{}") }),
        );
    let app = count_operations(api, &telemetry);
    for (method, path) in [
        (Method::GET, "/subjects"),
        (Method::GET, "/subjects"),
        (Method::POST, "/subjects/s/versions"),
        (Method::GET, "/schemas/ids/1"),
        (Method::GET, "/nothing/here"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        app.clone().oneshot(request).await.unwrap();
    }
    let ops = &telemetry.registry_ops.operations;
    let count = |op: &str, outcome: &str| ops.with_label_values(&[op, outcome]).get();
    assert_eq!(count("list", "ok"), 2);
    assert_eq!(count("register", "client_error"), 1);
    assert_eq!(count("get_schema", "server_error"), 1);
    assert_eq!(count("other", "client_error"), 1);
    assert_eq!(count("register", "ok"), 0);
}
