//! The registry's calls counted in `lienthong_registry_operations_total`, by operation (read
//! from the Confluent API's own paths, a fixed set) and outcome (the status class). The router
//! that `lienthong up` and the demo serve is wrapped with [`count_operations`].

use axum::Router;
use lienthong_telemetry::Telemetry;

/// Count every call answered by a schema registry router in
/// [`lienthong_telemetry::catalog::REGISTRY_OPERATIONS`], by operation and outcome (from the status class). Wrap
/// the registry's router before nesting it anywhere: the operation is read from its own paths.
pub fn count_operations(router: Router, telemetry: &Telemetry) -> Router {
    let operations = telemetry.registry_ops.operations.clone();
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let operations = operations.clone();
            async move {
                let operation = operation(request.method(), request.uri().path());
                let response = next.run(request).await;
                let status = response.status();
                let outcome = if status.is_server_error() {
                    "server_error"
                } else if status.is_client_error() {
                    "client_error"
                } else {
                    "ok"
                };
                operations.with_label_values(&[operation, outcome]).inc();
                response
            }
        },
    ))
}

/// The operation of a Confluent-compatible registry call (a fixed set: the label's values).
pub fn operation(method: &axum::http::Method, path: &str) -> &'static str {
    use axum::http::Method;
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segments.as_slice()) {
        (&Method::POST, ["subjects", _, "versions"]) => "register",
        (&Method::POST, ["subjects", _]) => "lookup",
        (&Method::POST, ["compatibility", ..]) => "compatibility",
        (_, ["config" | "mode", ..]) => "config",
        (&Method::DELETE, ["subjects", ..]) => "delete",
        (&Method::GET, ["schemas", "ids", _, ..]) => "get_schema",
        (&Method::GET, ["subjects", _, "versions", _, ..]) => "get_schema",
        (&Method::GET, ["subjects"] | ["subjects", _, "versions"] | ["schemas", "types"]) => "list",
        _ => "other",
    }
}
