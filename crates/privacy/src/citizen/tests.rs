use lienthong_contract::{Catalog, Codec, repo_schemas_dir, samples};

use super::*;
use crate::seal::DataKey;
use crate::{KeyVault, MasterKey};

type Vault = KeyVault<rdkafka::consumer::DefaultConsumerContext>;

fn master() -> MasterKey {
    MasterKey::parse(&MasterKey::generate().unwrap()).unwrap()
}

fn every_class(key: DataKey) -> Opening {
    use PersonalDataClass::*;
    Opening {
        key,
        classes: [Identifier, Name, Demographic, Residence, Contact, FreeText]
            .into_iter()
            .collect(),
    }
}

fn codec() -> (Codec, u32) {
    let catalog = Catalog::load(repo_schemas_dir()).unwrap();
    let codec = Codec::from_catalog(&catalog).unwrap();
    (codec, catalog.local_id(TOPIC).unwrap())
}

#[test]
fn sealed_paths_are_the_profiles_personal_fields() {
    let text = std::fs::read_to_string(repo_schemas_dir().join("citizen_record.avsc")).unwrap();
    let schema: Json = serde_json::from_str(&text).unwrap();
    let profile = schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "profile")
        .unwrap();
    let personal: Vec<String> = profile["type"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["lienthong.personal_data"] != "none")
        .map(|f| format!("profile.{}", f["name"].as_str().unwrap()))
        .collect();
    assert_eq!(personal, sealed_paths());
}

#[tokio::test]
async fn a_sealed_record_opens_back_to_its_clear_values_and_only_with_its_key() {
    let master = master();
    let vault = Vault::in_memory(&master);
    let (codec, id) = codec();
    let clear = samples::citizen_record();
    let key = vault.for_citizen(&clear.profile.personal_id).await.unwrap();
    assert!(crate::Pseudonyms::is_pseudonym(&key.pseudonym));
    assert_eq!(vault.citizens(), 1);

    let mut sealed = clear.clone();
    seal_citizen(&mut sealed, &key).unwrap();
    // Sealing twice changes nothing.
    let again = sealed.clone();
    seal_citizen(&mut sealed, &key).unwrap();
    assert_eq!(sealed, again);
    let bytes = codec.encode_to_vec(id, &sealed).unwrap();
    for secret in [
        "Nguyễn Văn Hùng",
        "079203001234",
        "12 Lê Lợi",
        "+84901234567",
        "27004",
        "26734",
    ] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} is in the sealed record's bytes"
        );
    }
    let schema = codec.schema(id).unwrap();

    // Opened with the key: the clear record, keyed by the pseudonym.
    let (_, mut value) = codec.decode_value(&bytes, None).unwrap();
    let k = every_class(vault.key(&key.pseudonym).unwrap().unwrap());
    assert_eq!(
        open_record(&mut value, schema.schema(), TOPIC, Some(&k)).unwrap(),
        Opened::Opened
    );
    let mut expected = clear.clone();
    expected.envelope.aggregate_id = key.pseudonym.clone();
    let (_, expected) = codec
        .decode_value(&codec.encode_to_vec(id, &expected).unwrap(), None)
        .unwrap();
    assert_eq!(value, expected);

    // Without a key: masked, and the ciphertext gone too.
    let (_, mut value) = codec.decode_value(&bytes, None).unwrap();
    assert_eq!(
        open_record(&mut value, schema.schema(), TOPIC, None).unwrap(),
        Opened::Masked
    );
    let text = format!("{value:?}");
    assert!(!text.contains("Hùng") && !text.contains("lt1."), "{text}");

    // Another citizen's key, or the record moved to another topic: it does not open.
    let other = vault.for_citizen("079203009999").await.unwrap();
    let (_, mut value) = codec.decode_value(&bytes, None).unwrap();
    assert!(matches!(
        open_record(
            &mut value,
            schema.schema(),
            TOPIC,
            Some(&every_class(other.key.clone()))
        ),
        Err(PrivacyError::Unreadable(_))
    ));
    let (_, mut value) = codec.decode_value(&bytes, None).unwrap();
    assert!(open_record(&mut value, schema.schema(), "elsewhere", Some(&k)).is_err());

    // A record published in clear is left as it is.
    let (_, mut value) = codec
        .decode_value(&codec.encode_to_vec(id, &clear).unwrap(), None)
        .unwrap();
    assert_eq!(
        open_record(&mut value, schema.schema(), TOPIC, Some(&k)).unwrap(),
        Opened::Clear
    );
}

#[tokio::test]
async fn erasing_destroys_the_key_and_a_new_key_is_another() {
    let master = master();
    let vault = Vault::in_memory(&master);
    let first = vault.for_citizen("079203001234").await.unwrap();
    // The same citizen gets the same key and pseudonym while it exists.
    let same = vault.for_citizen("079203001234").await.unwrap();
    assert_eq!(first.pseudonym, same.pseudonym);
    assert_eq!(first.key.as_bytes(), same.key.as_bytes());
    assert!(vault.erase(&first.pseudonym).await.unwrap());
    assert!(vault.key(&first.pseudonym).unwrap().is_none());
    assert!(!vault.erase(&first.pseudonym).await.unwrap());
    let after = vault.for_citizen("079203001234").await.unwrap();
    assert_eq!(after.pseudonym, first.pseudonym);
    assert_ne!(after.key.as_bytes(), first.key.as_bytes());
}

#[test]
fn the_master_key_is_checked_and_its_keys_depend_on_it() {
    assert!(matches!(
        MasterKey::parse("not base64!"),
        Err(PrivacyError::MasterKey(_))
    ));
    assert!(MasterKey::parse("c2hvcnQ=").is_err());
    let (a, b) = (master(), master());
    assert_ne!(
        a.pseudonyms().of("079203001234"),
        b.pseudonyms().of("079203001234")
    );
    // A pseudonym is stable, and a pseudonym stays itself.
    let p = a.pseudonyms().of("079203001234");
    assert_eq!(a.pseudonyms().of("079203001234"), p);
    assert_eq!(a.pseudonyms().of(&p), p);
    // A key wrapped under one master does not unwrap under another, nor for another citizen.
    use crate::KeyWrap;
    let dk = DataKey::generate().unwrap();
    let wrapped = a.kek().wrap(&dk, b"pn1_a").unwrap();
    assert_eq!(
        a.kek().unwrap(&wrapped, b"pn1_a").unwrap().as_bytes(),
        dk.as_bytes()
    );
    assert!(b.kek().unwrap(&wrapped, b"pn1_a").is_err());
    assert!(a.kek().unwrap(&wrapped, b"pn1_b").is_err());
    assert!(a.kek().unwrap(&wrapped[..5], b"pn1_a").is_err());
}

/// The sample citizen record sealed under its key, and the key.
async fn sealed_sample() -> (lienthong_contract::events::CitizenRecord, crate::CitizenKey) {
    let vault = Vault::in_memory(&master());
    let mut record = samples::citizen_record();
    let key = vault
        .for_citizen(&record.profile.personal_id)
        .await
        .unwrap();
    seal_citizen(&mut record, &key).unwrap();
    (record, key)
}

/// A reader granted some classes sees those, and the others stay masked.
#[tokio::test]
async fn only_the_granted_classes_are_opened() {
    let (codec, id) = codec();
    let (record, key) = sealed_sample().await;
    let bytes = codec.encode_to_vec(id, &record).unwrap();
    let schema = codec.schema(id).unwrap();
    let (_, mut value) = codec.decode_value(&bytes, None).unwrap();
    let opening = Opening {
        key: key.key.clone(),
        classes: [PersonalDataClass::Name].into_iter().collect(),
    };
    open_record(&mut value, schema.schema(), TOPIC, Some(&opening)).unwrap();
    let text = format!("{value:?}");
    assert!(
        text.contains("Nguyễn Văn Hùng"),
        "the name is granted: {text}"
    );
    for hidden in ["079203001234", "12 Lê Lợi", "+84901234567", "27004"] {
        assert!(!text.contains(hidden), "{hidden} is not granted: {text}");
    }
}

/// A sealer with a key is still outside input: a plaintext whose lengths run past its end, or
/// that is not exactly a profile, is refused with a clear error before anything allocates by
/// its lengths.
#[tokio::test]
async fn a_malformed_sealed_profile_is_refused_not_decoded() {
    let (codec, id) = codec();
    let (record, key) = sealed_sample().await;
    let schema = codec.schema(id).unwrap();
    let aad = seal::aad(TOPIC, &key.pseudonym);
    let mut good = Vec::new();
    samples::citizen_record().profile.write_avro(&mut good);
    let mut trailing = good.clone();
    trailing.push(0);
    // A personal id "of" 2 GB in a 5-byte plaintext; a cut profile; bytes after it.
    for (plaintext, what) in [
        (vec![0xfe, 0xff, 0xff, 0xff, 0x0f], "announced"),
        (good[..good.len() - 3].to_vec(), ""),
        (trailing, "after the value"),
    ] {
        let mut forged = record.clone();
        forged.sealed = Some(seal::seal(&key.key, &aad, &plaintext).unwrap());
        let bytes = codec.encode_to_vec(id, &forged).unwrap();
        let (_, mut value) = codec.decode_value(&bytes, None).unwrap();
        let err = open_record(
            &mut value,
            schema.schema(),
            TOPIC,
            Some(&every_class(key.key.clone())),
        )
        .unwrap_err();
        assert!(
            matches!(&err, PrivacyError::Unreadable(m) if m.contains(what)),
            "{err}"
        );
    }
}
