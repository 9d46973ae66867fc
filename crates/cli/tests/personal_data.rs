//! Citizens' personal data, the hard way (issue #28): records sealed under per-citizen keys
//! kept on real Kafka, opened by a granted connector into a real store, then the citizen erased
//! by destroying the key; afterwards the broker's log directories and the store (PostgreSQL's
//! dump, SQLite's file) are searched byte by byte for the citizen's name and personal id.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lienthong_bus::KafkaConfig;
use lienthong_bus::state_log::{StateLog, StateLogConfig};
use lienthong_connect::model::Cell;
use lienthong_privacy::{
    CitizenAccess, Grant, GrantedKeys, KeyService, KeyServiceConfig, KeySource, KeyVault,
    MasterKey, now_ms, seal_citizen,
};
use lienthong_tests::{kafka, unique_suffix};
use rdkafka::consumer::DefaultConsumerContext;
use rdkafka::producer::FutureProducer;
use support::*;
use tokio_util::sync::CancellationToken;

fn personal_id() -> String {
    format!("0792{:08}", fastrand::u64(..100_000_000))
}

fn has_text(rows: &[lienthong_connect::Row], text: &str) -> bool {
    rows.iter().any(|r| {
        r.cells
            .values()
            .any(|c| matches!(c, Cell::Text(t) if t.contains(text)))
    })
}

/// How many times `needle` occurs in the files under `dir` (recursively).
fn occurrences(dir: &Path, needle: &str) -> usize {
    let mut n = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            n += occurrences(&path, needle);
        } else if let Ok(bytes) = std::fs::read(&path) {
            n += bytes
                .windows(needle.len())
                .filter(|w| *w == needle.as_bytes())
                .count();
        }
    }
    n
}

/// The partition directories of `topics` in every broker's log directory of the suite cluster.
fn log_dirs(kafka: &lienthong_tests::Kafka, topics: &[&str]) -> Vec<std::path::PathBuf> {
    let state = std::env::var_os("LIENTHONG_STATE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| lienthong_contract::repo_root().join(".lienthong"));
    let mut dirs = Vec::new();
    for cluster in std::fs::read_dir(state.join("kafka")).unwrap().flatten() {
        let bootstrap =
            std::fs::read_to_string(cluster.path().join("bootstrap")).unwrap_or_default();
        if bootstrap.trim() != kafka.bootstrap() {
            continue;
        }
        for broker in std::fs::read_dir(cluster.path()).unwrap().flatten() {
            let data = broker.path().join("data");
            for part in std::fs::read_dir(&data).into_iter().flatten().flatten() {
                let name = part.file_name().to_string_lossy().to_string();
                if topics.iter().any(|t| {
                    name.strip_prefix(t)
                        .and_then(|rest| rest.strip_prefix('-'))
                        .is_some_and(|p| p.parse::<u32>().is_ok())
                }) {
                    dirs.push(part.path());
                }
            }
        }
    }
    dirs
}

async fn erasure_leaves_no_clear_trace(store: Store) {
    let kafka = kafka();
    let citizens = kafka.create_topic("pii-citizens", 1, 1, &[]).await.unwrap();
    let dlq = kafka.create_topic("pii-dlq", 1, 1, &[]).await.unwrap();
    let master = MasterKey::parse(&MasterKey::generate().unwrap()).unwrap();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let suffix = unique_suffix();
    let mut service_config = KeyServiceConfig::new(KafkaConfig::new(kafka.bootstrap()));
    service_config.keys_topic = format!("pii-keys-{suffix}");
    service_config.grants_topic = format!("pii-grants-{suffix}");
    service_config.access_topic = format!("pii-access-{suffix}");
    let keys_topic = service_config.keys_topic.clone();
    let service = Arc::new(
        KeyService::open(
            &service_config,
            &master,
            DefaultConsumerContext,
            shutdown.child_token(),
        )
        .await
        .unwrap(),
    );
    let (ward, purpose) = ("26734", "giải quyết thủ tục hành chính");
    let mut grant = Grant {
        agency: ward.into(),
        topic: "hcm.citizen.records".into(),
        classes: lienthong_privacy::profile_classes(),
        purpose: purpose.into(),
        legal_basis: "Luật 91/2025/QH15, điều 19".into(),
        expires_at_ms: now_ms() + 3_600_000,
        granted_by: "SKHCN".into(),
        granted_at_ms: now_ms(),
    };
    service.grant(&grant).await.unwrap();

    let catalog = catalog();
    let codec = lienthong_contract::Codec::from_catalog(&catalog).unwrap();
    let schema_id = catalog.local_id("hcm.citizen.records").unwrap();
    let marker = unique_suffix();
    let (erased_id, kept_id, control_id) = (personal_id(), personal_id(), personal_id());
    let erased_name = format!("Trần Thị Xoá {marker}");
    let kept_name = format!("Lê Văn Giữ {marker}");
    // Published in clear on purpose: it proves that the search below finds clear text where
    // it is, so that its zero hits for the erased citizen mean something.
    let control_name = format!("Control {marker}");
    let mut records = Vec::new();
    let mut pseudonyms = Vec::new();
    for (pid, name, sealed) in [
        (&erased_id, &erased_name, true),
        (&kept_id, &kept_name, true),
        (&control_id, &control_name, false),
    ] {
        let mut c = lienthong_contract::samples::citizen_record();
        c.envelope.aggregate_id = pid.clone();
        c.envelope.event_id = lienthong_contract::samples::uuid_like(fastrand::u64(..));
        c.profile.personal_id = pid.clone();
        c.profile.full_name = name.clone();
        if sealed {
            let key = service
                .seal_key("CATP", "hcm.citizen.records", pid)
                .await
                .unwrap();
            seal_citizen(&mut c, &key).unwrap();
            pseudonyms.push(key.pseudonym.clone());
        }
        let key = c.envelope.aggregate_id.clone();
        records.push((key, Some(codec.encode_to_vec(schema_id, &c).unwrap())));
    }
    let (erased, kept) = (pseudonyms[0].clone(), pseudonyms[1].clone());
    // Uncompressed, so that a clear value would be on disk as it is.
    let producer: FutureProducer = kafka
        .client_config()
        .set("compression.type", "none")
        .set("acks", "all")
        .create()
        .unwrap();
    produce_with(&producer, &citizens, &records).await;

    // A granted connector that has the key service opens them.
    let name = format!("pii-{}", unique_suffix());
    let toml = config_toml(&name, &kafka, &[(&citizens, "citizens")], &store, &dlq, "")
        .replace("[batch]", "[filter]\ncitizen_records = true\n[batch]")
        + &format!("[privacy]\nagency = \"{ward}\"\npurpose = \"{purpose}\"\n");
    let granted = |toml: &str| {
        let mut config = config(toml);
        let who = config.privacy.clone().expect("[privacy]");
        config.keys = KeySource(Some(Arc::new(GrantedKeys::new(
            service.clone(),
            who.agency,
            who.purpose,
        ))));
        config
    };
    run_until_caught_up(granted(&toml), &kafka, &store, &citizens).await;
    let rows = store.rows().await;
    let citizen_rows: Vec<_> = rows.iter().filter(|r| r.table == "citizens").collect();
    assert_eq!(citizen_rows.len(), 3, "{rows:?}");
    assert!(citizen_rows.iter().any(|r| r.key == erased));
    assert!(
        has_text(&rows, &erased_name) && has_text(&rows, &erased_id),
        "opened: {rows:?}"
    );
    assert!(
        !has_text(&rows, "lt1."),
        "the ciphertext is not stored: {rows:?}"
    );

    // A connector without the key service stores them masked, or as NULL if its store says so.
    for unreadable in ["masked", "null"] {
        let masked_store = sqlite_store().await;
        let masked = format!("pii-masked-{}", unique_suffix());
        let masked_toml = config_toml(
            &masked,
            &kafka,
            &[(&citizens, "citizens")],
            &masked_store,
            &dlq,
            "",
        )
        .replace(
            "[batch]",
            &format!(
                "[filter]\ncitizen_records = true\nunreadable_fields = \"{unreadable}\"\n[batch]"
            ),
        );
        run_until_caught_up(config(&masked_toml), &kafka, &masked_store, &citizens).await;
        let masked_rows = masked_store.rows().await;
        let row = masked_rows
            .iter()
            .find(|r| r.key == kept)
            .unwrap_or_else(|| panic!("{masked_rows:?}"));
        assert!(!has_text(&masked_rows, &kept_name) && !has_text(&masked_rows, &kept_id));
        let cell = |c: &str| row.cells.get(c).filter(|v| !matches!(v, Cell::Null));
        if unreadable == "masked" {
            assert!(
                matches!(cell("full_name"), Some(Cell::Text(t)) if t.is_empty()),
                "{row:?}"
            );
            assert!(
                matches!(cell("personal_id"), Some(Cell::Text(t)) if *t == kept),
                "{row:?}"
            );
        } else {
            for column in ["full_name", "personal_id", "birth_date", "permanent_unit"] {
                assert!(cell(column).is_none(), "{column} is NULL: {row:?}");
            }
        }
        assert!(
            has_text(&masked_rows, &control_name),
            "the clear record is stored as it is"
        );
    }

    // Erase: the key is destroyed, then the tombstone removes the rows.
    assert!(service.erase("SKHCN", &erased).await.unwrap());
    assert!(service.vault().key(&erased).unwrap().is_none());
    produce_with(&producer, &citizens, &[(erased.clone(), None)]).await;
    run_until_caught_up(granted(&toml), &kafka, &store, &citizens).await;
    let rows = store.rows().await;
    assert!(rows.iter().all(|r| r.key != erased), "{rows:?}");
    assert!(
        has_text(&rows, &kept_name),
        "the other citizen is still readable"
    );

    // A key service restarted from its topics knows the kept citizen's key, not the erased
    // one's, and still has the grant; revoking it masks the next records at once.
    let reopened: KeyService<DefaultConsumerContext> = KeyService::open(
        &service_config,
        &master,
        DefaultConsumerContext,
        shutdown.child_token(),
    )
    .await
    .unwrap();
    assert!(reopened.vault().key(&kept).unwrap().is_some());
    assert!(reopened.vault().key(&erased).unwrap().is_none());
    assert!(
        reopened
            .release(ward, "hcm.citizen.records", &kept, purpose)
            .is_ok()
    );
    assert!(service.revoke(&grant.id()).await.unwrap());
    assert!(
        service
            .release(ward, "hcm.citizen.records", &kept, purpose)
            .is_err()
    );
    grant.purpose = "another purpose".into();
    assert!(
        service
            .release(ward, "hcm.citizen.records", &kept, &grant.purpose)
            .is_err()
    );

    // The access log says who got whose key, when and why; it outlives the erasure.
    let report = StateLog::open(
        "access log",
        &StateLogConfig {
            kafka: KafkaConfig::new(kafka.bootstrap()),
            topic: service_config.access_topic.clone(),
            replication: 1,
            topic_config: Vec::new(),
            group: format!("pii-report-{}", unique_suffix()),
        },
        CitizenAccess::new(erased.clone()),
        DefaultConsumerContext,
        shutdown.child_token(),
    )
    .await
    .unwrap();
    let actions: Vec<(String, String)> = report
        .read()
        .records
        .iter()
        .map(|r| (r.agency.clone(), r.action.clone()))
        .collect();
    assert!(
        actions.contains(&("CATP".into(), "sealed".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&(ward.into(), "released".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("SKHCN".into(), "erased".into())),
        "{actions:?}"
    );

    // Every copy, searched byte by byte.
    let dirs = log_dirs(
        &kafka,
        &[
            &citizens,
            &dlq,
            &keys_topic,
            &service_config.grants_topic,
            &service_config.access_topic,
        ],
    );
    assert!(!dirs.is_empty(), "no log directory found for {citizens}");
    let on_broker = |needle: &str| dirs.iter().map(|d| occurrences(d, needle)).sum::<usize>();
    assert!(
        on_broker(&control_name) > 0,
        "the search finds clear text on the broker"
    );
    assert!(on_broker(&control_id) > 0);
    for needle in [&erased_name, &erased_id, &kept_name, &kept_id] {
        assert_eq!(
            on_broker(needle),
            0,
            "{needle} in clear on the broker: {dirs:?}"
        );
    }
    let in_store = match &store {
        Store::Postgres { url } => {
            let out = std::process::Command::new("pg_dump")
                .args(["--data-only", url])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).to_string()
        }
        Store::Sqlite { path, .. } => {
            let dir = path.parent().unwrap();
            let mut all = Vec::new();
            for f in std::fs::read_dir(dir).unwrap().flatten() {
                all.extend(std::fs::read(f.path()).unwrap());
            }
            String::from_utf8_lossy(&all).to_string()
        }
    };
    assert!(
        in_store.contains(&kept_name),
        "the search finds what the store holds"
    );
    assert!(
        !in_store.contains(&erased_name),
        "the erased name is in the {} store",
        store.kind()
    );
    assert!(
        !in_store.contains(&erased_id),
        "the erased id is in the {} store",
        store.kind()
    );
}

#[tokio::test]
async fn erasure_leaves_no_clear_trace_in_postgres() {
    erasure_leaves_no_clear_trace(postgres_store().await).await;
}

#[tokio::test]
async fn erasure_leaves_no_clear_trace_in_sqlite() {
    erasure_leaves_no_clear_trace(sqlite_store().await).await;
}

/// Need-to-know on real Kafka: the key service follows `hcm.case.events`, and a case written
/// under a schema id it did not know at its start (registered later) is learned from the
/// registry's lookup, once; from then on the receiving ward reads the applicant's record.
#[tokio::test]
async fn need_to_know_follows_cases_under_schemas_registered_later() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let kafka = kafka();
    kafka.ensure_catalog_topics().await.unwrap();
    let master = MasterKey::parse(&MasterKey::generate().unwrap()).unwrap();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let suffix = unique_suffix();
    let mut config = KeyServiceConfig::new(KafkaConfig::new(kafka.bootstrap()));
    config.keys_topic = format!("ntk-keys-{suffix}");
    config.grants_topic = format!("ntk-grants-{suffix}");
    config.access_topic = format!("ntk-access-{suffix}");
    let service = Arc::new(
        KeyService::open(
            &config,
            &master,
            DefaultConsumerContext,
            shutdown.child_token(),
        )
        .await
        .unwrap(),
    );
    let catalog =
        lienthong_contract::Catalog::load(lienthong_contract::repo_schemas_dir()).unwrap();
    let case_schema = catalog
        .topic("hcm.case.events")
        .unwrap()
        .schema_json
        .clone();
    // An id nobody told the follower: as if registered after `up` started.
    let later_id = 0x00C0_FFEE_u32 ^ fastrand::u32(..0xFFFF);
    let lookups = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&lookups);
    let lookup: lienthong_privacy::SchemaLookup = Arc::new(move |id| {
        counted.fetch_add(1, Ordering::SeqCst);
        let json = (id == later_id).then(|| case_schema.clone());
        Box::pin(async move { json })
    });
    service
        .follow_cases(
            &KafkaConfig::new(kafka.bootstrap()),
            lienthong_contract::Codec::new(),
            Some(lookup),
            shutdown.child_token(),
        )
        .unwrap();

    let pid = personal_id();
    let citizen = service
        .seal_key("CATP", "hcm.citizen.records", &pid)
        .await
        .unwrap();
    let ward = "26740";
    assert!(
        service
            .release(ward, "hcm.citizen.records", &citizen.pseudonym, "x")
            .is_err(),
        "no grant, no case: no key"
    );
    let mut case = lienthong_contract::samples::typical_case_submitted();
    let case_id = format!("HS-NTK-{suffix}");
    case.envelope.aggregate_id = case_id.clone();
    if let lienthong_contract::events::CaseEventKind::CaseSubmitted(s) = &mut case.event {
        s.applicant_id = citizen.pseudonym.clone();
        s.receiving_unit = ward.into();
    }
    let mut value = Vec::new();
    lienthong_contract::codec::encode_typed(later_id, &case, &mut value);
    let producer: FutureProducer = KafkaConfig::new(kafka.bootstrap())
        .producer()
        .create()
        .unwrap();
    producer
        .send(
            rdkafka::producer::FutureRecord::to("hcm.case.events")
                .key(&case_id)
                .payload(&value),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let released = loop {
        match service.release(ward, "hcm.citizen.records", &citizen.pseudonym, "x") {
            Ok(released) => break released,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "the follower never learned the case: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(released.grant, format!("case:{case_id}"));
    assert!(released.key.is_some());
    assert!(lookups.load(Ordering::SeqCst) >= 1);
}

/// A consumer nobody here wrote (confluent-kafka, fastavro, `cryptography`) opens a sealed
/// record with the citizen's key, from the documented wire format alone; with another key it
/// cannot.
#[tokio::test]
async fn a_python_consumer_opens_a_sealed_record_with_its_granted_key() {
    use base64::Engine;
    let kafka = kafka();
    let topic = kafka.create_topic("pii-python", 1, 1, &[]).await.unwrap();
    let master = MasterKey::parse(&MasterKey::generate().unwrap()).unwrap();
    let vault: KeyVault<DefaultConsumerContext> = KeyVault::in_memory(&master);
    let catalog = catalog();
    let codec = lienthong_contract::Codec::from_catalog(&catalog).unwrap();
    let spec = catalog.topic("hcm.citizen.records").unwrap();
    let schema_id = catalog.local_id(&spec.name).unwrap();
    let mut c = lienthong_contract::samples::citizen_record();
    let pid = personal_id();
    c.envelope.aggregate_id = pid.clone();
    c.profile.personal_id = pid.clone();
    let key = vault.for_citizen(&pid).await.unwrap();
    seal_citizen(&mut c, &key).unwrap();
    produce(
        &kafka,
        &topic,
        &[(
            key.pseudonym.clone(),
            Some(codec.encode_to_vec(schema_id, &c).unwrap()),
        )],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let schema_file = dir.path().join("citizen.avsc");
    std::fs::write(&schema_file, &spec.schema_json).unwrap();
    let open_with = |data_key: &[u8; 32]| {
        std::process::Command::new(lienthong_tests::python())
            .arg(lienthong_contract::repo_root().join("tests/interop/open_sealed.py"))
            .env("BOOTSTRAP", kafka.bootstrap())
            .env("TOPIC", &topic)
            .env("SCHEMA", &schema_file)
            .env("AAD_TOPIC", "hcm.citizen.records")
            .env(
                "KEY",
                base64::engine::general_purpose::STANDARD.encode(data_key),
            )
            .output()
            .unwrap()
    };
    let out = open_with(key.key.as_bytes());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let profile: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(profile["personal_id"], pid.as_str());
    assert_eq!(profile["full_name"], "Nguyễn Văn Hùng");
    assert_eq!(profile["birth_date"], 12_345);
    assert_eq!(profile["sex"], "MALE");
    let other = vault.for_citizen(&personal_id()).await.unwrap();
    let out = open_with(other.key.as_bytes());
    assert!(!out.status.success(), "another citizen's key opened it");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("InvalidTag"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn http(addr: &str, method: &str, path: &str, token: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `lienthong up` with `[privacy]`, as a city would run it: an admin grants a ward with
/// `pii grant`; a citizen record posted to the gateway by the police reaches Kafka sealed; the
/// ward's connector, run by `up`, opens it under the grant; `pii report` shows who got the
/// key; after `pii revoke` the next record is stored masked, without a restart; `pii erase`
/// removes the row.
#[test]
fn up_seals_at_the_gateway_opens_under_grants_and_erases() {
    use lienthong_registry::auth::hash_token;
    use std::io::BufRead;
    let kafka = kafka();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(kafka.ensure_catalog_topics()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let suffix = unique_suffix();
    let bin = assert_cmd::cargo::cargo_bin("lienthong");
    let lienthong = |args: &[&str]| {
        let out = std::process::Command::new(&bin)
            .current_dir(lienthong_contract::repo_root())
            .env("LIENTHONG__KAFKA__BOOTSTRAP", kafka.bootstrap())
            .env("LIENTHONG_REGISTRY_TOKEN", "police-token")
            .arg("--config")
            .arg(dir.path().join("lienthong.toml"))
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            text,
        )
    };

    // The master secret, from the command made for it.
    let master_file = dir.path().join("master.key");
    std::fs::write(dir.path().join("lienthong.toml"), "").unwrap();
    let (code, secret, all) = lienthong(&["pii", "new-master-key"]);
    assert_eq!(code, Some(0), "{all}");
    std::fs::write(&master_file, secret.trim()).unwrap();
    let master = MasterKey::from_file(&master_file).unwrap();

    let store = dir.path().join("ward-26734.sqlite");
    let connector = dir.path().join("ward.toml");
    let dlq = rt
        .block_on(kafka.create_topic("pii-up-dlq", 1, 1, &[]))
        .unwrap();
    let purpose = "giải quyết hồ sơ phi địa giới";
    std::fs::write(
        &connector,
        format!(
            "name = \"pii-up-ward-{suffix}\"\ndead_letter_topic = \"{dlq}\"\n[kafka]\nbootstrap = \"{}\"\n[schemas]\ndir = \"{}\"\n[[topics]]\nname = \"hcm.citizen.records\"\n[filter]\ncitizen_records = true\n[privacy]\nagency = \"26734\"\npurpose = \"{purpose}\"\n[store]\nkind = \"sqlite\"\npath = \"{}\"\n",
            kafka.bootstrap(),
            lienthong_contract::repo_schemas_dir().display(),
            store.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("lienthong.toml"),
        format!(
            "connectors = [\"{}\"]\n[registry]\nlisten = \"127.0.0.1:0\"\ntopic = \"_lienthong_schemas-{suffix}\"\n[[registry.agencies]]\ncode = \"CATP\"\nkind = \"department\"\ntoken_sha256 = \"{}\"\n[gateway]\nlisten = \"127.0.0.1:0\"\ntransactional_id = \"pii-gw-{suffix}\"\nidempotency_window_secs = 60\n[privacy]\nmaster_key_file = \"{}\"\nkeys_topic = \"pii-up-keys-{suffix}\"\ngrants_topic = \"pii-up-grants-{suffix}\"\naccess_topic = \"pii-up-access-{suffix}\"\nlisten = \"127.0.0.1:0\"\n[[registry.agencies]]\ncode = \"26740\"\nkind = \"ward\"\ntoken_sha256 = \"{}\"\n",
            connector.display(),
            hash_token("police-token"),
            master_file.display(),
            hash_token("ward-26740-token"),
        ),
    )
    .unwrap();

    // An admin grants the ward, before or while `up` runs.
    let (code, grant_out, all) = lienthong(&[
        "pii",
        "grant",
        "--agency",
        "26734",
        "--classes",
        "identifier,name,demographic,residence,contact",
        "--purpose",
        purpose,
        "--legal-basis",
        "Luật 91/2025/QH15",
        "--until",
        "2099-12-31",
        "--by",
        "SKHCN",
    ]);
    assert_eq!(code, Some(0), "{all}");
    let grant_id = grant_out
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert!(grant_id.starts_with("g-"), "{all}");
    let (code, _, all) = lienthong(&[
        "pii",
        "grant",
        "--agency",
        "26734",
        "--classes",
        "name,bogus",
        "--purpose",
        "x",
        "--legal-basis",
        "y",
        "--until",
        "2099-12-31",
        "--by",
        "SKHCN",
    ]);
    assert_eq!(code, Some(2), "an unknown class is a usage error: {all}");
    let (code, listed, all) = lienthong(&["pii", "grants"]);
    assert_eq!(code, Some(0), "{all}");
    assert!(
        listed.contains(&grant_id) && listed.contains("live"),
        "{listed}"
    );

    let child = std::process::Command::new(&bin)
        .current_dir(lienthong_contract::repo_root())
        .env("LIENTHONG__KAFKA__BOOTSTRAP", kafka.bootstrap())
        .arg("--config")
        .arg(dir.path().join("lienthong.toml"))
        .arg("up")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = lienthong_tests::ChildGuard(child);
    let mut lines = std::io::BufReader::new(child.0.stdout.take().unwrap()).lines();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut sealing = false;
    let mut keys_addr = String::new();
    let addr = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no 'gateway listening' line"
        );
        let line = lines.next().expect("the process ended").unwrap();
        sealing |= line.starts_with("key service:") && line.contains("sealed");
        if let Some(rest) = line.strip_prefix("key service listening on http://") {
            keys_addr = rest.trim().to_string();
        }
        if let Some(rest) = line.strip_prefix("gateway listening on http://") {
            break rest.split(' ').next().unwrap().to_string();
        }
    };
    assert!(sealing, "up says it seals");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !http(&addr, "GET", "/readyz", "", "").starts_with("HTTP/1.1 200") {
        assert!(std::time::Instant::now() < deadline, "gateway not ready");
        std::thread::sleep(Duration::from_millis(300));
    }

    let post = |pid: &str, name: &str, version: i64| {
        let mut c = lienthong_contract::samples::citizen_record();
        c.envelope.aggregate_id = pid.into();
        c.envelope.aggregate_version = version;
        c.envelope.event_id = format!("{}-4000-8000-000000000000", &uuid_hex()[..13]);
        c.profile.personal_id = pid.into();
        c.profile.full_name = name.into();
        let answer = http(
            &addr,
            "POST",
            "/topics/hcm.citizen.records/events",
            "police-token",
            &serde_json::to_string(&c).unwrap(),
        );
        assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    };
    // The citizen's rows in a ward's SQLite store (none while the connector has not made it).
    let rows = |store: &Path, pseudonym: &str| {
        rt.block_on(async {
            use lienthong_connect::Sink;
            let Ok(mut sink) = lienthong_store::AnyStore::sqlite(store).await else {
                return Vec::new();
            };
            sink.rows()
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r.table == "citizens" && r.key == pseudonym)
                .collect::<Vec<_>>()
        })
    };
    let wait_in =
        |store: &Path, pseudonym: &str, what: &dyn Fn(&[lienthong_connect::Row]) -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(90);
            loop {
                let found = rows(store, pseudonym);
                if what(&found) {
                    return found;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{}, {pseudonym}: {found:?}",
                    store.display()
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        };
    let wait_for = |pseudonym: &str, what: &dyn Fn(&[lienthong_connect::Row]) -> bool| {
        wait_in(&store, pseudonym, what)
    };

    assert!(
        !keys_addr.is_empty(),
        "up says where the key service listens"
    );

    // Another ward runs its own connector, outside `up`, and asks the key service over HTTP
    // under a grant of its own.
    let (code, out, all) = lienthong(&[
        "pii",
        "grant",
        "--agency",
        "26740",
        "--classes",
        "name,identifier",
        "--purpose",
        purpose,
        "--legal-basis",
        "Luật 91/2025/QH15",
        "--until",
        "2099-12-31",
        "--by",
        "SKHCN",
    ]);
    assert_eq!(code, Some(0), "{all}");
    let other_grant = out.lines().last().unwrap_or_default().trim().to_string();
    let other_store = dir.path().join("ward-26740.sqlite");
    let other_connector = dir.path().join("ward-26740.toml");
    std::fs::write(
        &other_connector,
        format!(
            "name = \"pii-other-ward-{suffix}\"\ndead_letter_topic = \"{dlq}\"\n[kafka]\nbootstrap = \"{}\"\n[schemas]\ndir = \"{}\"\n[[topics]]\nname = \"hcm.citizen.records\"\n[filter]\ncitizen_records = true\n[privacy]\nagency = \"26740\"\npurpose = \"{purpose}\"\nkey_service_url = \"http://{keys_addr}\"\ntoken = \"ward-26740-token\"\n[store]\nkind = \"sqlite\"\npath = \"{}\"\n",
            kafka.bootstrap(),
            lienthong_contract::repo_schemas_dir().display(),
            other_store.display()
        ),
    )
    .unwrap();
    let other = std::process::Command::new(&bin)
        .current_dir(lienthong_contract::repo_root())
        .arg("connect")
        .arg(&other_connector)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let _other = lienthong_tests::ChildGuard(other);
    let other_rows = |pseudonym: &str| wait_in(&other_store, pseudonym, &|r| !r.is_empty());

    let (pid, name) = (personal_id(), format!("Phạm Thị Cấp {suffix}"));
    post(&pid, &name, 1);
    let pseudonym = master.pseudonyms().of(&pid);
    let opened = wait_for(&pseudonym, &|r| !r.is_empty());
    assert!(
        has_text(&opened, &name) && has_text(&opened, &pid),
        "opened under the grant: {opened:?}"
    );

    // The other ward's own connector got the key over HTTP: its grant's classes only.
    let from_http = other_rows(&pseudonym);
    assert!(
        has_text(&from_http, &name) && has_text(&from_http, &pid),
        "{from_http:?}"
    );
    assert!(
        !has_text(&from_http, "12 Lê Lợi"),
        "residence is not in its grant: {from_http:?}"
    );

    // A department's own SDK process, outside `up`, seals with keys from the key service
    // over HTTP; what it publishes opens in the ward's store like the gateway's.
    let remote = rt.block_on(async {
        let keys = lienthong_privacy::HttpSealKeys::new(
            &format!("http://{keys_addr}"),
            lienthong_registry::client::Credentials::Bearer("police-token".into()),
        )
        .unwrap();
        let catalog = Arc::new(
            lienthong_contract::Catalog::load(lienthong_contract::repo_schemas_dir()).unwrap(),
        );
        let config = lienthong_sdk::PublisherConfig::new(
            "CATP",
            lienthong_contract::AgencyKind::Department,
            KafkaConfig::new(kafka.bootstrap()),
        );
        lienthong_sdk::Publisher::connect(config, catalog, lienthong_sdk::SchemaIds::Local)
            .await
            .unwrap()
            .with_keys(Arc::new(keys))
    });
    let (pid_r, name_r) = (personal_id(), format!("Lý Thị Từ Xa {suffix}"));
    let mut c = lienthong_contract::samples::citizen_record();
    c.envelope.aggregate_id = pid_r.clone();
    c.envelope.event_id = format!("{}-4000-8000-000000000000", &uuid_hex()[..13]);
    c.profile.personal_id = pid_r.clone();
    c.profile.full_name = name_r.clone();
    rt.block_on(remote.publish_citizen(c)).unwrap();
    let pseudonym_r = master.pseudonyms().of(&pid_r);
    let opened = wait_for(&pseudonym_r, &|r| !r.is_empty());
    assert!(
        has_text(&opened, &name_r) && has_text(&opened, &pid_r),
        "sealed by a remote SDK, opened under the grant: {opened:?}"
    );
    // A case event naming a citizen whose pseudonym it was not told is refused; once told,
    // the same event goes out with the pseudonym.
    let applicant = personal_id();
    let mut case = lienthong_contract::samples::typical_case_submitted();
    if let lienthong_contract::events::CaseEventKind::CaseSubmitted(s) = &mut case.event {
        s.applicant_id = applicant.clone();
    }
    case.envelope.producer_unit = "CATP".into();
    assert!(matches!(
        rt.block_on(remote.publish(case.clone())),
        Err(lienthong_sdk::SdkError::Invalid(_))
    ));
    assert_eq!(
        rt.block_on(remote.pseudonyms(std::slice::from_ref(&applicant)))
            .unwrap(),
        vec![master.pseudonyms().of(&applicant)]
    );
    // A ward, not a publisher of citizen records, gets no sealing key.
    let refused = http(
        &keys_addr,
        "POST",
        "/privacy/seal-keys",
        "ward-26740-token",
        &format!("{{\"personal_id\": \"{pid_r}\"}}"),
    );
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    // The department erases its citizen from its own process: the key is destroyed at the
    // key service, and the tombstone removes the ward's row.
    rt.block_on(remote.erase_citizen(&pid_r)).unwrap();
    wait_for(&pseudonym_r, &|r| r.is_empty());
    let erased = http(
        &keys_addr,
        "DELETE",
        &format!("/privacy/seal-keys/{pseudonym_r}"),
        "police-token",
        "",
    );
    assert!(
        erased.starts_with("HTTP/1.1 200") && erased.contains("\"erased\":false"),
        "the key was gone already: {erased}"
    );

    let (code, report, all) = lienthong(&["pii", "report", "--citizen", &pid]);
    assert_eq!(code, Some(0), "{all}");
    assert!(report.contains("26740\treleased"), "{report}");
    assert!(report.contains("CATP\tsealed"), "{report}");
    assert!(
        report.contains(&format!(
            "26734\treleased\thcm.citizen.records\t{purpose:?}\t{grant_id}"
        )),
        "{report}"
    );

    // Revoked: the next citizen's record is stored masked, by the same running connector.
    let (code, _, all) = lienthong(&["pii", "revoke", &grant_id]);
    assert_eq!(code, Some(0), "{all}");
    let (code, _, all) = lienthong(&["pii", "revoke", &other_grant]);
    assert_eq!(code, Some(0), "{all}");
    let (pid2, name2) = (personal_id(), format!("Võ Văn Thu Hồi {suffix}"));
    post(&pid2, &name2, 1);
    let masked = wait_for(&master.pseudonyms().of(&pid2), &|r| !r.is_empty());
    assert!(
        !has_text(&masked, &name2) && !has_text(&masked, &pid2),
        "masked after the revocation: {masked:?}"
    );
    let other_masked = other_rows(&master.pseudonyms().of(&pid2));
    assert!(
        !has_text(&other_masked, &name2),
        "masked over HTTP too: {other_masked:?}"
    );

    // Need-to-know: no grant any more, but ward 26740 files a case for a citizen from
    // elsewhere; while the case is open there it may read the citizen's record.
    let (pid3, name3) = (personal_id(), format!("Đặng Thị Phi Địa Giới {suffix}"));
    post(&pid3, &name3, 1);
    let pseudonym3 = master.pseudonyms().of(&pid3);
    let before = other_rows(&pseudonym3);
    assert!(
        !has_text(&before, &name3),
        "no grant, no case: masked {before:?}"
    );
    let mut case = lienthong_contract::samples::typical_case_submitted();
    case.envelope.event_id = format!("{}-4000-8000-000000000001", &uuid_hex()[..13]);
    case.envelope.aggregate_id = format!("HS-NTK-{suffix}");
    case.envelope.producer_unit = "26740".into();
    if let lienthong_contract::events::CaseEventKind::CaseSubmitted(s) = &mut case.event {
        s.applicant_id = pid3.clone();
        s.receiving_unit = "26740".into();
    }
    let answer = http(
        &addr,
        "POST",
        "/topics/hcm.case.events/events",
        "ward-26740-token",
        &serde_json::to_string(&case).unwrap(),
    );
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    // On the log, the case names the applicant by pseudonym only.
    let (code, tailed, all) = lienthong(&[
        "tail",
        "hcm.case.events",
        "--from",
        "beginning",
        "--key",
        &format!("HS-NTK-{suffix}"),
        "--until-end",
        "--registry",
        &format!("http://{addr}/registry"),
    ]);
    assert_eq!(code, Some(0), "{all}");
    assert!(
        tailed.contains(&pseudonym3) && !tailed.contains(&pid3),
        "{tailed}"
    );
    let key_path = format!("/privacy/keys/hcm.citizen.records/{pseudonym3}?purpose=x");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answer = http(&keys_addr, "GET", &key_path, "ward-26740-token", "");
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "need-to-know: {answer}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Another ward, handling no case of this citizen, is still refused.
    let answer = http(&keys_addr, "GET", &key_path, "police-token", "");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // The police update the record; the ward's own connector now opens it.
    post(&pid3, &name3, 2);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        if has_text(&other_rows(&pseudonym3), &name3) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "opened by need-to-know"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (_, report, _) = lienthong(&["pii", "report", "--citizen", &pid3]);
    assert!(
        report.contains(&format!(
            "26740\treleased\thcm.citizen.records\t{purpose:?}\tcase:HS-NTK-{suffix}"
        )),
        "{report}"
    );

    // Erased: the key is gone and the row with it.
    let (code, _, all) = lienthong(&["pii", "erase", &pid, "--by", "SKHCN"]);
    assert_eq!(code, Some(0), "{all}");
    wait_for(&pseudonym, &|r| r.is_empty());
    let (_, report, _) = lienthong(&["pii", "report", "--citizen", &pid]);
    assert!(report.contains("SKHCN\terased"), "{report}");
}

fn uuid_hex() -> String {
    format!("{:08x}-{:04x}", fastrand::u32(..), fastrand::u16(..))
}
