//! The HTTP client that the SDK, gateway and sinks use for any Confluent-compatible registry:
//! it caches both ways, so once warm no message costs a network call.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;

use lienthong_contract::events::CaseEvent;
use lienthong_contract::{AgencyKind, Catalog, Codec, repo_schemas_dir, samples};
use lienthong_registry::auth::hash_token;
use lienthong_registry::client::{Credentials, RegistryClient};
use lienthong_registry::{Agencies, AgencyCredential, Registry, RegistryError, api};

async fn served_registry() -> String {
    let catalog = Arc::new(Catalog::load(repo_schemas_dir()).unwrap());
    let agencies = Agencies::new(&[AgencyCredential {
        code: "SKHCN".into(),
        kind: AgencyKind::Department,
        token_sha256: hash_token("t0k"),
        admin: false,
    }])
    .unwrap();
    let registry = Arc::new(Registry::in_memory(catalog, agencies));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, api::router(registry)).await });
    format!("http://{addr}")
}

fn client(url: &str) -> RegistryClient {
    RegistryClient::new(
        url,
        Credentials::Basic {
            user: "SKHCN".into(),
            password: "t0k".into(),
        },
        Codec::new(),
    )
    .unwrap()
}

#[tokio::test]
async fn once_warm_no_message_costs_a_request() {
    let url = served_registry().await;
    let catalog = Catalog::load(repo_schemas_dir()).unwrap();
    let schema = &catalog.topic("hcm.case.events").unwrap().schema_json;

    // Producer side: look up (404), register, then cached.
    let producer = client(&url);
    let id = producer
        .id_for("hcm.case.events-value", schema, true)
        .await
        .unwrap();
    let after_register = producer.requests();
    assert_eq!(after_register, 2, "one lookup, one registration");
    let event = samples::typical_case_submitted();
    let mut records = Vec::new();
    for _ in 0..1000 {
        assert_eq!(
            producer
                .id_for("hcm.case.events-value", schema, true)
                .await
                .unwrap(),
            id
        );
        records.push(producer.codec().encode_to_vec(id, &event).unwrap());
    }
    assert_eq!(
        producer.requests(),
        after_register,
        "no request per message"
    );

    // Consumer side: one fetch of the writer schema, then none.
    let consumer = client(&url);
    for r in &records {
        let (got, decoded): (u32, CaseEvent<&str>) = consumer.decode(r).await.unwrap();
        assert_eq!(got, id);
        assert_eq!(decoded.envelope.aggregate_id, "HS-26734-2025-000123");
    }
    assert_eq!(consumer.requests(), 1);
}

#[tokio::test]
async fn registry_errors_come_back_typed() {
    let url = served_registry().await;
    let c = client(&url);
    match c.schema(4242).await {
        Err(RegistryError::Remote {
            status: 404,
            error_code: 40403,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let schema = r#"{"type":"record","name":"X","fields":[]}"#;
    match c.id_for("skhcn.x-value", schema, false).await {
        Err(RegistryError::Remote {
            status: 404,
            error_code: 40401,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let wrong =
        RegistryClient::new(&url, Credentials::Bearer("nope".into()), Codec::new()).unwrap();
    match wrong.schema(1).await {
        Err(RegistryError::Remote { status: 401, .. }) => {}
        other => panic!("{other:?}"),
    }
    let down = RegistryClient::new("http://127.0.0.1:9", Credentials::None, Codec::new()).unwrap();
    let err = down.schema(1).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(format!("{:?}", Credentials::Bearer("secret".into())).contains("redacted"));
}
