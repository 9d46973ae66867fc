//! External-registry mode: lienthong's registry client and codec against Apicurio Registry, a
//! Confluent-compatible registry nobody here wrote, started by `ops/apicurio.sh`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use lienthong_contract::events::CaseEvent;
use lienthong_contract::{Catalog, Codec, repo_schemas_dir, samples};
use lienthong_registry::RegistryError;
use lienthong_registry::client::{Credentials, RegistryClient};
use lienthong_tests::{apicurio, unique_suffix};

#[tokio::test]
async fn the_codec_works_through_apicurio_and_is_silent_once_warm() {
    let url = apicurio();
    let catalog = Catalog::load(repo_schemas_dir()).unwrap();
    let schema = &catalog.topic("hcm.case.events").unwrap().schema_json;
    let subject = format!("hcm.case.events-{}-value", unique_suffix());

    let producer = RegistryClient::new(&url, Credentials::None, Codec::new()).unwrap();
    let id = producer.id_for(&subject, schema, true).await.unwrap();
    let warm = producer.requests();
    let event = samples::typical_case_submitted();
    let mut records = Vec::new();
    for _ in 0..500 {
        assert_eq!(producer.id_for(&subject, schema, true).await.unwrap(), id);
        records.push(producer.codec().encode_to_vec(id, &event).unwrap());
    }
    assert_eq!(
        producer.requests(),
        warm,
        "no request per message once warm"
    );

    // A fresh consumer learns the writer schema from Apicurio once, then decodes locally.
    let consumer = RegistryClient::new(&url, Credentials::None, Codec::new()).unwrap();
    for r in &records {
        let (got, decoded): (u32, CaseEvent) = consumer.decode(r).await.unwrap();
        assert_eq!((got, &decoded), (id, &event));
    }
    assert_eq!(consumer.requests(), 1);

    // Without auto-registration, an unknown subject is Apicurio's 404, typed.
    let other = format!("hcm.missing-{}-value", unique_suffix());
    match producer.id_for(&other, schema, false).await {
        Err(RegistryError::Remote { status: 404, .. }) => {}
        other => panic!("{other:?}"),
    }
}
