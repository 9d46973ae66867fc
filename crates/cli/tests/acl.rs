//! Identity at the broker, on the real secured node (`ops/kafka.sh start --secured`: SASL_SSL
//! with SCRAM-SHA-512, mutual TLS, the StandardAuthorizer with no ACL meaning no access).
//!
//! `lienthong topics create`, `acl sync` and `agency add` run as the bus's admin; then each
//! agency connects as itself and the broker, not lienthong, refuses what the catalog does not
//! grant: a ward writing citizen records, reading the registry's log, joining a group outside
//! its namespace, creating or deleting topics, changing ACLs; a wrong secret; a client without
//! TLS. Each refusal is an authorization (or authentication) error and nothing is written.
//! A Python client (confluent-kafka) works with the same credentials.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command as StdCommand;
use std::time::Duration;

use assert_cmd::Command;
use lienthong_bus::KafkaConfig;
use lienthong_bus::acl::{Acl, Operation, Pattern, Permission, Resource, SecurityAdmin};
use lienthong_contract::repo_schemas_dir;
use lienthong_registry::auth::hash_token;
use lienthong_tests::{ADMIN_USER, SecuredKafka, repo_root, secured_kafka, unique_suffix};
use std::sync::{Arc, Mutex};

use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

const SCHEMA_LOG: &str = "_lienthong_schemas";

fn lienthong(config: &Path) -> Command {
    let mut c = Command::cargo_bin("lienthong").unwrap();
    c.current_dir(repo_root())
        .env_remove("RUST_LOG")
        .arg("--config")
        .arg(config);
    c
}

fn run(c: &mut Command) -> (i32, String, String) {
    let out = c.timeout(Duration::from_secs(120)).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `[table]` Kafka section for `user`'s SCRAM credential over TLS.
fn kafka_section(kafka: &SecuredKafka, table: &str, user: &str, secret: &str) -> String {
    format!(
        "[{table}]\nbootstrap = \"{}\"\n[{table}.options]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"{user}\"\n\"sasl.password\" = \"{secret}\"\n\"ssl.ca.location\" = \"{}\"\n",
        kafka.bootstrap,
        kafka.ca.display()
    )
}

/// The operator's config: the admin's credential, and the agencies.
fn admin_config(kafka: &SecuredKafka, dir: &Path) -> std::path::PathBuf {
    let path = dir.join("lienthong.toml");
    let agencies = [
        ("26734", "ward"),
        ("CATP", "department"),
        ("SGTVT", "department"),
        ("27004", "ward"),
    ]
    .iter()
    .map(|(code, kind)| {
        format!(
            "[[registry.agencies]]\ncode = \"{code}\"\nkind = \"{kind}\"\ntoken_sha256 = \"{}\"\n",
            hash_token(&format!("{code}-http"))
        )
    })
    .collect::<String>();
    std::fs::write(
        &path,
        format!(
            "schemas_dir = \"{}\"\n{}[registry]\ntopic = \"{SCHEMA_LOG}\"\n{agencies}",
            repo_schemas_dir().display(),
            kafka_section(kafka, "kafka", ADMIN_USER, kafka.admin_secret()),
        ),
    )
    .unwrap();
    path
}

/// `agency add`: the secret it prints once.
fn add_agency(config: &Path, code: &str, kind: &str) -> String {
    let (code_, out, err) = run(lienthong(config).args(["agency", "add", code, "--kind", kind]));
    assert_eq!(code_, 0, "{out}{err}");
    out.lines()
        .find_map(|l| l.split("over a trusted channel): ").nth(1))
        .unwrap_or_else(|| panic!("no secret in: {out}"))
        .trim()
        .to_string()
}

/// What the client reported that is not about one record (authentication, transport).
#[derive(Clone, Default)]
struct Reported(Arc<Mutex<Vec<String>>>);

impl ClientContext for Reported {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0.lock().unwrap().push(format!("{error}: {reason}"));
    }
}

impl Reported {
    fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

/// Produce one record and wait for the broker's answer (bounded: 8 s).
fn produce_reporting(kafka: &KafkaConfig, topic: &str) -> (Result<(), KafkaError>, Reported) {
    let reported = Reported::default();
    let producer: FutureProducer<Reported> = match kafka
        .producer()
        .set("message.timeout.ms", "8000")
        .create_with_context(reported.clone())
    {
        Ok(p) => p,
        Err(e) => return (Err(e), reported),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sent = rt
        .block_on(
            producer.send(
                FutureRecord::to(topic)
                    .key("k")
                    .payload("refused before any check"),
                Duration::from_secs(10),
            ),
        )
        .map(|_| ())
        .map_err(|(e, _)| e);
    (sent, reported)
}

fn produce(kafka: &KafkaConfig, topic: &str) -> Result<(), KafkaError> {
    produce_reporting(kafka, topic).0
}

fn authorization_error(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
        )
    )
}

/// The end offset of every partition of `topic`, read as the admin.
fn ends(kafka: &SecuredKafka, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer = kafka.admin().watermarks().create().unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap()
                .1
        })
        .collect()
}

/// Subscribe with `group` and poll until a record or an error.
fn consume(kafka: &KafkaConfig, topic: &str, group: &str) -> Result<bool, KafkaError> {
    let consumer: BaseConsumer = kafka
        .consumer(group)
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(_)) => return Ok(true),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    Ok(false)
}

/// Check `done` every 300 ms until it holds; the test fails after `within` with its last word.
fn eventually(within: Duration, mut done: impl FnMut() -> Result<(), String>) {
    let deadline = std::time::Instant::now() + within;
    loop {
        match done() {
            Ok(()) => return,
            Err(why) => assert!(std::time::Instant::now() < deadline, "{why}"),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The tests share the node's ACLs and rotate the same agencies' secrets: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A test's turn on the secured node, the operator's config, and the catalog's topics created
/// by the admin (`lienthong topics create`).
struct Setup {
    _turn: std::sync::MutexGuard<'static, ()>,
    kafka: SecuredKafka,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let kafka = secured_kafka();
        let dir = tempfile::tempdir().unwrap();
        let config = admin_config(&kafka, dir.path());
        let (code, out, err) = run(lienthong(&config).args(["topics", "create"]));
        assert_eq!(code, 0, "topics create as the admin: {out}{err}");
        Setup {
            _turn: turn,
            kafka,
            dir,
            config,
        }
    }

    /// The same, and the ACLs synced (`lienthong acl sync`; drift left as it is).
    fn synced() -> Setup {
        let setup = Setup::new();
        let (code, out, err) = run(lienthong(&setup.config).args(["acl", "sync"]));
        assert!(code == 0 || code == 1, "{out}{err}");
        setup
    }
}

#[test]
fn the_broker_refuses_what_the_catalog_does_not_grant() {
    // The admin creates the catalog's topics (Setup), and the registry's log topic.
    let Setup {
        _turn,
        kafka,
        dir: _dir,
        config,
    } = Setup::new();
    let admin_client: AdminClient<DefaultClientContext> = kafka.admin().admin().create().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(
        admin_client.create_topics(
            &[NewTopic::new(SCHEMA_LOG, 1, TopicReplication::Fixed(1))
                .set("cleanup.policy", "compact")],
            &AdminOptions::new(),
        ),
    )
    .unwrap();

    // A dry run changes nothing; a sync creates; a second sync finds everything in place.
    let mut admin = SecurityAdmin::connect(&kafka.admin(), Duration::from_secs(15)).unwrap();
    let held =
        |admin: &mut SecurityAdmin| admin.acls().unwrap().into_iter().collect::<BTreeSet<_>>();
    let before_dry_run = held(&mut admin);
    let (code, dry, err) = run(lienthong(&config).args(["acl", "sync", "--dry-run"]));
    assert!(code == 0 || code == 1, "{dry}{err}");
    assert_eq!(
        held(&mut admin),
        before_dry_run,
        "a dry run changes nothing"
    );
    let (code, first, err) = run(lienthong(&config).args(["acl", "sync", "--prune"]));
    assert_eq!(code, 0, "{first}{err}");
    let (code, again, err) = run(lienthong(&config).args(["acl", "sync"]));
    assert_eq!(code, 0, "{again}{err}");
    assert!(again.contains(" 0 created, 0 drift"), "idempotent: {again}");
    assert!(
        held(&mut admin)
            .iter()
            .any(|a| a.principal == "User:lienthong-kpi"
                && a.name == "hcm.case.events"
                && a.operation == Operation::Read),
        "the components' grants are on the cluster"
    );

    let ward_secret = add_agency(&config, "26734", "ward");
    let police_secret = add_agency(&config, "CATP", "department");
    let transport_secret = add_agency(&config, "SGTVT", "department");
    let ward = kafka.scram("26734", &ward_secret);
    let police = kafka.scram("CATP", &police_secret);
    let transport = kafka.scram("SGTVT", &transport_secret);

    // What the catalog grants works.
    produce(&ward, "hcm.case.events").unwrap();
    produce(&police, "hcm.citizen.records").unwrap();
    assert!(
        consume(
            &ward,
            "hcm.case.events",
            &format!("26734.store-{}", unique_suffix())
        )
        .unwrap()
    );

    // Only the police write citizen records: a ward and another department are refused by
    // the broker, and nothing is written.
    let before = ends(&kafka, "hcm.citizen.records");
    for (who, client) in [("ward 26734", &ward), ("department SGTVT", &transport)] {
        let e = produce(client, "hcm.citizen.records").unwrap_err();
        assert!(
            authorization_error(&e),
            "{who} writing citizen records: {e}"
        );
    }
    assert_eq!(
        ends(&kafka, "hcm.citizen.records"),
        before,
        "nothing written"
    );

    // A topic it has no grant for (the registry's log), and a group outside its namespace.
    let e = consume(&ward, SCHEMA_LOG, "26734.peek").unwrap_err();
    assert!(authorization_error(&e), "reading the schema log: {e}");
    let e = consume(&ward, "hcm.case.events", "SGTVT.store").unwrap_err();
    assert!(
        authorization_error(&e),
        "joining another agency's group: {e}"
    );

    // No topic administration, no ACL changes.
    let ward_admin: AdminClient<DefaultClientContext> = ward.admin().create().unwrap();
    let created = rt
        .block_on(ward_admin.create_topics(
            &[NewTopic::new("hcm.rogue", 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(
        matches!(&created[0], Err((_, c)) if matches!(c, RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::ClusterAuthorizationFailed)),
        "creating a topic: {created:?}"
    );
    let deleted = rt
        .block_on(ward_admin.delete_topics(&["hcm.case.events"], &AdminOptions::new()))
        .unwrap();
    assert!(
        matches!(
            &deleted[0],
            Err((_, RDKafkaErrorCode::TopicAuthorizationFailed))
        ),
        "deleting a topic: {deleted:?}"
    );
    let mut as_ward = SecurityAdmin::connect(&ward, Duration::from_secs(15)).unwrap();
    let grab = Acl {
        principal: "User:26734".into(),
        resource: Resource::Topic,
        name: "hcm.citizen.records".into(),
        pattern: Pattern::Literal,
        operation: Operation::Write,
        permission: Permission::Allow,
        host: "*".into(),
    };
    let e = as_ward.grant(&BTreeSet::from([grab.clone()])).unwrap_err();
    assert!(
        e.to_string().contains("refused by Kafka"),
        "granting itself: {e}"
    );
    // Nor see them (the broker answers a ward's DescribeAcls with nothing it may see).
    let listed = as_ward.acls();
    assert!(
        listed.as_ref().map_or(true, Vec::is_empty),
        "a ward sees no ACL: {listed:?}"
    );

    // A wrong secret, and a client without TLS, do not get in.
    let before = ends(&kafka, "hcm.case.events");
    let wrong = kafka.scram("26734", "not-the-secret");
    let (sent, reported) = produce_reporting(&wrong, "hcm.case.events");
    assert!(sent.is_err(), "a wrong secret");
    assert!(
        reported.text().contains("SASL authentication error"),
        "refused as an authentication failure: {}",
        reported.text()
    );
    let plaintext = KafkaConfig::new(&kafka.bootstrap)
        .with_option("security.protocol", "SASL_PLAINTEXT")
        .with_option("sasl.mechanism", "SCRAM-SHA-512")
        .with_option("sasl.username", "26734")
        .with_option("sasl.password", &ward_secret)
        .with_option("socket.timeout.ms", "5000");
    let (sent, reported) = produce_reporting(&plaintext, "hcm.case.events");
    assert!(sent.is_err(), "a client without TLS: {}", reported.text());
    assert_eq!(ends(&kafka, "hcm.case.events"), before, "nothing written");

    // Mutual TLS: the certificate's common name is the principal, with the same grants.
    let _ = add_agency(&config, "27004", "ward");
    let cert = kafka.issue_certificate("27004").unwrap();
    let by_certificate = kafka.mtls(&cert, "27004");
    produce(&by_certificate, "hcm.case.events").unwrap();
    let e = produce(&by_certificate, "hcm.citizen.records").unwrap_err();
    assert!(
        authorization_error(&e),
        "mTLS ward writing citizen records: {e}"
    );

    // Drift: an ACL nobody declared is reported (exit 1), and removed with --prune.
    admin.grant(&BTreeSet::from([grab])).unwrap();
    let (code, drift, _) = run(lienthong(&config).args(["acl", "sync"]));
    assert_eq!(code, 1, "{drift}");
    assert!(
        drift.contains("! Allow User:26734 Write on Topic hcm.citizen.records"),
        "{drift}"
    );
    let (code, pruned, err) = run(lienthong(&config).args(["acl", "sync", "--prune"]));
    assert_eq!(code, 0, "{pruned}{err}");
    assert!(
        pruned.contains("- Allow User:26734 Write on Topic hcm.citizen.records"),
        "{pruned}"
    );
    let e = produce(&ward, "hcm.citizen.records").unwrap_err();
    assert!(authorization_error(&e), "the pruned grant is gone: {e}");

    // Revoked: the secret no longer works.
    let (code, out, err) = run(lienthong(&config).args(["agency", "revoke", "SGTVT"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        produce(&transport, "hcm.case.events").is_err(),
        "a revoked agency"
    );

    // A client nobody here wrote, with the same credentials.
    let python = lienthong_tests::python();
    let out = StdCommand::new(python)
        .arg(repo_root().join("tests/interop/secured_scram.py"))
        .env("BOOTSTRAP", &kafka.bootstrap)
        .env("CA", &kafka.ca)
        .env("USER", "26734")
        .env("SECRET", &ward_secret)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "confluent-kafka over SASL_SSL: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("produced hcm.case.events"), "{stdout}");
    assert!(
        stdout.contains("refused hcm.citizen.records: TOPIC_AUTHORIZATION_FAILED"),
        "{stdout}"
    );
}

/// `lienthong up` on the secured node, each component as its own principal (its SCRAM secret
/// from `component add`, its ACLs from `acl sync`), and `[kafka]` with no credential at all:
/// the registry keeps its log, the key service creates and reads its topics and follows the
/// cases, the gateway publishes a ward's case with the applicant pseudonymised (and refuses
/// its citizen record, by the catalog's rule), and the KPI engine reads the case.
#[test]
fn up_runs_every_component_as_its_own_principal() {
    use std::io::{BufRead, BufReader, Read, Write};
    let setup = Setup::new();
    let (kafka, dir, config) = (&setup.kafka, &setup.dir, &setup.config);
    // The operator's config names the key service's topics, so that `acl sync` grants them.
    let suffix = unique_suffix();
    let privacy = format!(
        "[privacy]\nkeys_topic = \"acl-keys-{suffix}\"\ngrants_topic = \"acl-grants-{suffix}\"\naccess_topic = \"acl-access-{suffix}\"\n"
    );
    let mut admin = std::fs::read_to_string(config).unwrap();
    admin.push_str(&privacy);
    std::fs::write(config, admin).unwrap();
    let (code, out, err) = run(lienthong(config).args(["acl", "sync"]));
    assert!(code == 0 || code == 1, "{out}{err}");
    let master_file = dir.path().join("master.key");
    std::fs::write(
        &master_file,
        lienthong_privacy::MasterKey::generate().unwrap(),
    )
    .unwrap();
    let secret_of = |name: &str| {
        let (code, out, err) = run(lienthong(config).args(["component", "add", name]));
        assert_eq!(code, 0, "{out}{err}");
        out.lines()
            .find_map(|l| l.split("as sasl.password): ").nth(1))
            .unwrap_or_else(|| panic!("no secret in: {out}"))
            .trim()
            .to_string()
    };
    let section = |table: &str, user: &str, secret: &str| kafka_section(kafka, table, user, secret);
    let registry = section(
        "registry.kafka",
        "lienthong-registry",
        &secret_of("registry"),
    );
    let gateway = section("gateway.kafka", "lienthong-gateway", &secret_of("gateway"));
    let kpi = section("kpi.kafka", "lienthong-kpi", &secret_of("kpi"));
    let keys = section("privacy.kafka", "lienthong-keys", &secret_of("keys"));
    let ward_secret = add_agency(config, "26734", "ward");
    let _ = ward_secret;
    let up_config = dir.path().join("up.toml");
    std::fs::write(
        &up_config,
        format!(
            "schemas_dir = \"{}\"\n[kafka]\nbootstrap = \"{}\"\n[registry]\nlisten = \"127.0.0.1:0\"\ntopic = \"{SCHEMA_LOG}\"\n[[registry.agencies]]\ncode = \"26734\"\nkind = \"ward\"\ntoken_sha256 = \"{}\"\n[gateway]\nlisten = \"127.0.0.1:0\"\ntransactional_id = \"lienthong-gateway-acl-{}\"\nidempotency_window_secs = 60\n[kpi]\nlisten = \"127.0.0.1:0\"\nunits = [\"26734\"]\n[[kpi.procedures]]\ncode = \"1.001193\"\nlevel = \"FULL_ONLINE\"\n{privacy}master_key_file = \"{}\"\n{registry}{gateway}{kpi}{keys}",
            repo_schemas_dir().display(),
            kafka.bootstrap,
            hash_token("ward-http-token"),
            unique_suffix(),
            master_file.display(),
        ),
    )
    .unwrap();
    let child = StdCommand::new(assert_cmd::cargo::cargo_bin("lienthong"))
        .current_dir(repo_root())
        .arg("--config")
        .arg(&up_config)
        .arg("up")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = lienthong_tests::ChildGuard(child);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let (mut gateway_addr, mut kpi_addr, mut sealing) = (None, None, false);
    while gateway_addr.is_none() || kpi_addr.is_none() {
        let line = lines.next().expect("up ended early").unwrap();
        sealing |= line.starts_with("key service:") && line.contains("sealed");
        if let Some(rest) = line.strip_prefix("gateway listening on http://") {
            gateway_addr = rest.split(' ').next().map(str::to_string);
        }
        if let Some(rest) = line.strip_prefix("KPI engine metrics on http://") {
            kpi_addr = rest.strip_suffix("/metrics").map(str::to_string);
        }
    }
    let (gateway_addr, kpi_addr) = (gateway_addr.unwrap(), kpi_addr.unwrap());
    assert!(sealing, "the key service runs, as lienthong-keys");
    let http = |addr: &str, request: String| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    };
    let get = |addr: &str, path: &str| {
        http(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
    };
    eventually(Duration::from_secs(90), || {
        let ready = get(&gateway_addr, "/readyz");
        ready
            .starts_with("HTTP/1.1 200")
            .then_some(())
            .ok_or(format!("gateway not ready: {ready}"))
    });
    let post = |topic: &str, body: &serde_json::Value| {
        let body = body.to_string();
        http(
            &gateway_addr,
            format!(
                "POST /topics/{topic}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ward-http-token\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let before = ends(kafka, "hcm.case.events");
    let mut case =
        serde_json::to_value(lienthong_contract::samples::typical_case_submitted()).unwrap();
    case["envelope"]["event_id"] = uuid::Uuid::new_v4().to_string().into();
    case["envelope"]["aggregate_id"] = format!("HS-ACL-{}", unique_suffix()).into();
    let answer = post("hcm.case.events", &case);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    // The gateway answers once its transaction is committed; the commit markers that make the
    // record visible to read_committed readers (and move the end offsets this reads, the last
    // stable offsets) are written by the broker just after.
    eventually(Duration::from_secs(10), || {
        let after = ends(kafka, "hcm.case.events");
        (after.iter().sum::<i64>() > before.iter().sum::<i64>())
            .then_some(())
            .ok_or(format!("the case is on the log: {before:?} -> {after:?}"))
    });
    let mut citizen = serde_json::to_value(lienthong_contract::samples::citizen_record()).unwrap();
    citizen["envelope"]["producer_unit"] = "26734".into();
    let answer = post("hcm.citizen.records", &citizen);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // The KPI engine, as lienthong-kpi, read the case events.
    eventually(Duration::from_secs(60), || {
        let metrics = get(&kpi_addr, "/metrics");
        let read: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("lienthong_kpi_events_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        (metrics.contains("lienthong_kpi_caught_up 1") && read >= 1.0)
            .then_some(())
            .ok_or(format!("the KPI engine read nothing: {metrics}"))
    });
    let status = lienthong_tests::interrupt_and_wait(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}");
}

/// A ward's connector, as the ward, keeps its store from what its ACLs let it read, with its
/// consumer group and dead-letter topic in its namespace; the same connector in a group outside
/// its namespace is refused by the broker and stops saying so (exit 1), instead of waiting.
#[test]
fn a_ward_connector_reads_only_what_its_acls_allow() {
    let setup = Setup::synced();
    let (kafka, dir, config) = (&setup.kafka, &setup.dir, &setup.config);
    let secret = add_agency(config, "26734", "ward");
    let dead_letters = "26734.dead-letters";
    let admin_client: AdminClient<DefaultClientContext> = kafka.admin().admin().create().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(admin_client.create_topics(
        &[NewTopic::new(dead_letters, 1, TopicReplication::Fixed(1))],
        &AdminOptions::new(),
    ))
    .unwrap();

    // The ward publishes a case with `lienthong publish`, as itself.
    let ward_kafka = |table: &str| kafka_section(kafka, table, "26734", &secret);
    let ward_config = dir.path().join("ward.toml");
    std::fs::write(
        &ward_config,
        format!(
            "schemas_dir = \"{}\"\n{}",
            repo_schemas_dir().display(),
            ward_kafka("kafka")
        ),
    )
    .unwrap();
    let case_id = format!("HS-ACL-{}", unique_suffix());
    let mut case =
        serde_json::to_value(lienthong_contract::samples::typical_case_submitted()).unwrap();
    case["envelope"]["event_id"] = uuid::Uuid::new_v4().to_string().into();
    case["envelope"]["aggregate_id"] = case_id.clone().into();
    case["envelope"]["producer_unit"] = "26734".into();
    case["event"]["CaseSubmitted"]["receiving_unit"] = "26734".into();
    let events = dir.path().join("case.json");
    std::fs::write(&events, case.to_string()).unwrap();
    let (code, out, err) = run(lienthong(&ward_config).args([
        "publish",
        "--topic",
        "hcm.case.events",
        "--as",
        "26734",
        events.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "publish as the ward: {out}{err}");

    let connector = |name: &str, store: &Path| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "name = \"{name}\"\ndead_letter_topic = \"{dead_letters}\"\nstartup_timeout_secs = 20\n{}[schemas]\ndir = \"{}\"\n[[topics]]\nname = \"hcm.case.events\"\n[filter]\nunits = [\"26734\"]\n[batch]\nmax_wait_ms = 50\n[store]\nkind = \"sqlite\"\npath = \"{}\"\n",
                ward_kafka("kafka"),
                repo_schemas_dir().display(),
                store.display()
            ),
        )
        .unwrap();
        path
    };
    let store = dir.path().join("ward.sqlite");
    let own = connector("26734.store", &store);
    let child = StdCommand::new(assert_cmd::cargo::cargo_bin("lienthong"))
        .current_dir(repo_root())
        .args(["connect", own.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = lienthong_tests::ChildGuard(child);
    eventually(Duration::from_secs(90), || {
        let rows = rt.block_on(async {
            use lienthong_connect::Sink;
            match lienthong_store::AnyStore::sqlite(&store).await {
                Ok(mut sink) => sink.rows().await.unwrap_or_default(),
                Err(_) => Vec::new(),
            }
        });
        rows.iter()
            .any(|r| r.table == "cases" && r.key == case_id)
            .then_some(())
            .ok_or(format!("case {case_id} not in the ward's store"))
    });
    let status = lienthong_tests::interrupt_and_wait(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}");

    // The same ward in another agency's group: the broker refuses, the connector stops.
    let foreign = connector("SGTVT.store", &dir.path().join("foreign.sqlite"));
    let (code, out, err) = run(lienthong(config).args(["connect", foreign.to_str().unwrap()]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("Group authorization failed") && err.contains("acl sync"),
        "says what the broker refused and what to do: {err}"
    );
}

/// The secured mode with three brokers: they replicate to each other over mutual TLS as
/// `User:kafka-broker`, and the authorizer refuses a principal without ACLs there too.
#[test]
fn three_secured_brokers_replicate_over_mtls_and_refuse_the_ungranted() {
    let own = lienthong_tests::OwnKafka::start_with("secured3", &["--brokers", "3", "--secured"])
        .unwrap();
    let ca = secured_kafka().ca;
    let secret = std::fs::read_to_string(own.state_dir().join("admin.secret")).unwrap();
    let scram = |user: &str, secret: &str| {
        lienthong_tests::scram_config(own.kafka().bootstrap(), &ca, user, secret)
    };
    let admin = scram(ADMIN_USER, secret.trim());
    let topic = "hcm.case.events";
    let client: AdminClient<DefaultClientContext> = admin.admin().create().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let created = rt
        .block_on(client.create_topics(
            &[NewTopic::new(topic, 3, TopicReplication::Fixed(3))],
            &AdminOptions::new(),
        ))
        .unwrap();
    assert!(created[0].is_ok(), "{created:?}");
    produce(&admin, topic).unwrap();
    let consumer: BaseConsumer = admin.watermarks().create().unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    for p in metadata.topics()[0].partitions() {
        assert_eq!(
            p.isr().len(),
            3,
            "partition {} in sync on all three",
            p.id()
        );
    }
    // A principal with a credential and no ACL: refused.
    let mut security = SecurityAdmin::connect(&admin, Duration::from_secs(15)).unwrap();
    security
        .set_scram_secret("26734", "a-secret-of-this-test")
        .unwrap();
    let e = produce(&scram("26734", "a-secret-of-this-test"), topic).unwrap_err();
    assert!(authorization_error(&e), "no ACL, no write: {e}");
}
