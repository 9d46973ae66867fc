//! The `[kafka] options` reach every Kafka client of every command. The broker started here
//! (real Apache Kafka, by `ops/kafka.sh`) has a second listener that requires SASL/PLAIN; the
//! commands are pointed at it with the SASL settings in `[kafka] options` only. A client built
//! without them cannot even read metadata there, so a command that dropped them on any client
//! fails or hangs (every step here is bounded): `topics create`, `publish`, `tail`, `up` (the
//! registry's Kafka log, the gateway's transactional producer and probes, the KPI engine and a
//! connector with its dead-letter producer and lag client), `connect` and `replay`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lienthong_bus::KafkaConfig;
use lienthong_registry::auth::hash_token;
use lienthong_tests::{ChildGuard, OwnKafka, repo_root, unique_suffix};

const USER: &str = "lienthong";
const PASSWORD: &str = "s3cret-sasl";

/// A broker whose `SASL_PLAINTEXT` listener (the returned address) takes user `USER`.
fn sasl_broker() -> (OwnKafka, String) {
    // The script puts the controller on the client port + 1: both must be free.
    let port = loop {
        let p = lienthong_tests::free_port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    let sasl = lienthong_tests::free_port();
    let broker = OwnKafka::start_with(
        "sasl",
        &[
            "--port",
            &port.to_string(),
            "--config",
            &format!(
                "listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{},SASL_PLAINTEXT://127.0.0.1:{sasl}",
                port + 1
            ),
            "--config",
            &format!(
                "advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl}"
            ),
            "--config",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "--config",
            "sasl.enabled.mechanisms=PLAIN",
            "--config",
            &format!(
                "listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_{USER}=\"{PASSWORD}\";"
            ),
        ],
    )
    .unwrap();
    (broker, format!("127.0.0.1:{sasl}"))
}

fn sasl_config(bootstrap: &str) -> KafkaConfig {
    KafkaConfig::new(bootstrap)
        .with_option("security.protocol", "SASL_PLAINTEXT")
        .with_option("sasl.mechanism", "PLAIN")
        .with_option("sasl.username", USER)
        .with_option("sasl.password", PASSWORD)
}

/// The `[kafka]` section for the SASL listener.
fn kafka_section(bootstrap: &str) -> String {
    format!(
        "[kafka]\nbootstrap = \"{bootstrap}\"\noptions = {{ \"security.protocol\" = \"SASL_PLAINTEXT\", \"sasl.mechanism\" = \"PLAIN\", \"sasl.username\" = \"{USER}\", \"sasl.password\" = \"{PASSWORD}\" }}\n"
    )
}

fn lienthong() -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("lienthong"));
    c.current_dir(repo_root()).env_remove("RUST_LOG");
    c
}

/// Run `cmd` to its end, killing it after `secs`.
fn run_bounded(cmd: &mut Command, secs: u64, what: &str) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(child);
    let deadline = Instant::now() + Duration::from_secs(secs);
    while guard.0.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = guard.0.kill();
            let out = guard.0.wait_with_output_taken();
            panic!(
                "{what} did not finish within {secs} s (a client without the SASL options?)\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = guard.0.wait_with_output_taken();
    assert!(
        out.status.success(),
        "{what}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

trait TakeOutput {
    fn wait_with_output_taken(&mut self) -> Output;
}

impl TakeOutput for std::process::Child {
    fn wait_with_output_taken(&mut self) -> Output {
        let status = self.wait().unwrap();
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let Some(mut o) = self.stdout.take() {
            o.read_to_end(&mut stdout).unwrap();
        }
        if let Some(mut e) = self.stderr.take() {
            e.read_to_end(&mut stderr).unwrap();
        }
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

fn http(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn get(addr: &str, path: &str, token: &str) -> String {
    http(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    )
}

/// A case event of ward 26734 as the gateway's JSON takes it.
fn case_json(case: &str) -> serde_json::Value {
    let mut event =
        serde_json::to_value(lienthong_contract::samples::typical_case_submitted()).unwrap();
    event["envelope"]["aggregate_id"] = case.into();
    event["envelope"]["event_id"] = uuid::Uuid::new_v4().to_string().into();
    event
}

/// A connector TOML for a SQLite store at `store`.
fn connector_toml(name: &str, bootstrap: &str, store: &Path, dlq: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\ndead_letter_topic = \"{dlq}\"\n{extra}\n{}[schemas]\ndir = \"{}\"\n[[topics]]\nname = \"hcm.case.events\"\n[batch]\nmax_wait_ms = 50\n[store]\nkind = \"sqlite\"\npath = \"{}\"\n",
        kafka_section(bootstrap),
        lienthong_contract::repo_schemas_dir().display(),
        store.display()
    )
}

fn cases_in(store: &Path) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use lienthong_connect::Sink;
        let mut sink = lienthong_store::AnyStore::sqlite(store).await.unwrap();
        sink.rows()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.table == "cases")
            .map(|r| r.key)
            .collect()
    })
}

fn wait_for_cases(store: &Path, cases: &[String], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let held = cases_in(store);
        if cases.iter().all(|c| held.contains(c)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {cases:?} not all in the store within 90 s: {held:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn every_client_of_every_command_carries_the_kafka_options() {
    let (_broker, bootstrap) = sasl_broker();
    let dir = tempfile::tempdir().unwrap();
    let kafka = sasl_config(&bootstrap);
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Without the options nothing can be read there: the listener really is closed.
    let probe: rdkafka::consumer::BaseConsumer =
        KafkaConfig::new(&bootstrap).watermarks().create().unwrap();
    assert!(
        rdkafka::consumer::Consumer::fetch_metadata(&probe, None, Duration::from_secs(3)).is_err(),
        "the SASL listener answered a client without credentials"
    );
    drop(probe);

    let suffix = unique_suffix();
    let config = dir.path().join("lienthong.toml");
    let ward = dir.path().join("ward.toml");
    let ward_store = dir.path().join("ward.sqlite");
    let ward_metrics = lienthong_tests::free_port();
    let dlq = format!("secured-dlq-{suffix}");
    std::fs::write(
        &ward,
        connector_toml(
            &format!("secured-ward-{suffix}"),
            &bootstrap,
            &ward_store,
            &dlq,
            &format!("metrics_listen = \"127.0.0.1:{ward_metrics}\""),
        ),
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "connectors = [\"{}\"]\n{}[registry]\nlisten = \"127.0.0.1:0\"\ntopic = \"_lienthong_schemas\"\n[[registry.agencies]]\ncode = \"26734\"\nkind = \"ward\"\ntoken_sha256 = \"{}\"\n[gateway]\nlisten = \"127.0.0.1:0\"\ntransactional_id = \"secured-gw-{suffix}\"\nidempotency_window_secs = 60\n[kpi]\nlisten = \"127.0.0.1:0\"\nunits = [\"26734\", \"27004\"]\ntop_procedures = [\"1.001193\"]\n[[kpi.procedures]]\ncode = \"1.001193\"\nlevel = \"FULL_ONLINE\"\n",
            ward.display(),
            kafka_section(&bootstrap),
            hash_token("ward-token"),
        ),
    )
    .unwrap();

    // `topics create`: the admin client, then the wait for leaders.
    run_bounded(
        lienthong()
            .arg("--config")
            .arg(&config)
            .args(["topics", "create"]),
        90,
        "topics create",
    );
    rt.block_on(async {
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            kafka.admin().create().unwrap();
        admin
            .create_topics(
                [&rdkafka::admin::NewTopic::new(
                    &dlq,
                    1,
                    rdkafka::admin::TopicReplication::Fixed(1),
                )],
                &rdkafka::admin::AdminOptions::new(),
            )
            .await
            .unwrap();
    });

    // `publish`: the SDK's producer.
    let published: Vec<String> = (0..3).map(|i| format!("HS-SASL-{suffix}-{i}")).collect();
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        published
            .iter()
            .map(|c| case_json(c).to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    run_bounded(
        lienthong()
            .arg("--config")
            .arg(&config)
            .args(["publish", "--topic", "hcm.case.events", "--as", "26734"])
            .arg(&events),
        60,
        "publish",
    );
    // A record that is not Avro: the connector's dead-letter producer must write it.
    rt.block_on(async {
        let producer: rdkafka::producer::FutureProducer = kafka.producer().create().unwrap();
        producer
            .send(
                rdkafka::producer::FutureRecord::to("hcm.case.events")
                    .key("POISON")
                    .payload("not avro"),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    });

    // `tail`: its consumer and the read-back of the log's ends.
    let out = run_bounded(
        lienthong().arg("--config").arg(&config).args([
            "tail",
            "hcm.case.events",
            "--from",
            "beginning",
            "--until-end",
        ]),
        60,
        "tail",
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    for c in &published {
        assert!(printed.contains(c.as_str()), "tail printed {printed}");
    }

    // `up`: registry (its Kafka log), gateway, KPI engine and the ward connector.
    let child = lienthong()
        .arg("--config")
        .arg(&config)
        .arg("up")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut up = ChildGuard(child);
    let mut lines = BufReader::new(up.0.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut gateway, mut kpi) = (None, None);
    while gateway.is_none() || kpi.is_none() {
        assert!(
            Instant::now() < deadline,
            "`up` did not start its gateway and KPI engine"
        );
        let line = lines.next().expect("`up` ended").unwrap();
        if let Some(rest) = line.strip_prefix("gateway listening on http://") {
            gateway = Some(rest.split(' ').next().unwrap().to_string());
        }
        if let Some(rest) = line.strip_prefix("KPI engine metrics on http://") {
            kpi = Some(rest.trim_end_matches("/metrics").to_string());
        }
    }
    let (gateway, kpi) = (gateway.unwrap(), kpi.unwrap());
    std::thread::spawn(move || for _ in lines {});
    let deadline = Instant::now() + Duration::from_secs(90);
    while !get(&gateway, "/readyz", "").starts_with("HTTP/1.1 200") {
        assert!(Instant::now() < deadline, "the gateway never got ready");
        std::thread::sleep(Duration::from_millis(300));
    }
    let subjects = get(&gateway, "/registry/subjects", "ward-token");
    assert!(subjects.contains("hcm.case.events-value"), "{subjects}");
    let via_gateway = format!("HS-SASL-{suffix}-gw");
    let body = case_json(&via_gateway).to_string();
    let answer = http(
        &gateway,
        &format!(
            "POST /topics/hcm.case.events/events HTTP/1.1\r\nHost: {gateway}\r\nAuthorization: Bearer ward-token\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let mut all = published.clone();
    all.push(via_gateway);
    wait_for_cases(&ward_store, &all, "the connector under `up`");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = get(&kpi, "/metrics", "");
        let ward = get(&format!("127.0.0.1:{ward_metrics}"), "/metrics", "");
        let kpi_caught_up = metrics.lines().any(|l| l == "lienthong_kpi_caught_up 1");
        let dead_lettered = ward.lines().any(|l| {
            l.starts_with("lienthong_connector_events_dead_lettered_total{") && l.ends_with(" 1")
        });
        let lag = ward
            .lines()
            .any(|l| l.starts_with("lienthong_connector_consumer_lag_records{"));
        if kpi_caught_up && dead_lettered && lag {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "KPI caught up {kpi_caught_up}, poison record dead-lettered {dead_lettered}, lag measured {lag}\n{ward}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let status = lienthong_tests::interrupt_and_wait(&mut up, Duration::from_secs(30));
    assert!(status.success(), "up: {status}");

    // `connect` and `replay`, each on a store of its own.
    let connect_store = dir.path().join("connect.sqlite");
    let connect_toml = dir.path().join("connect.toml");
    std::fs::write(
        &connect_toml,
        connector_toml(
            &format!("secured-connect-{suffix}"),
            &bootstrap,
            &connect_store,
            &dlq,
            "",
        ),
    )
    .unwrap();
    let child = lienthong()
        .arg("connect")
        .arg(&connect_toml)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let connect = ChildGuard(child);
    wait_for_cases(&connect_store, &all, "`connect`");
    Command::new("kill")
        .arg("-TERM")
        .arg(connect.0.id().to_string())
        .status()
        .unwrap();
    drop(connect);

    let replay_store = dir.path().join("replay.sqlite");
    let replay_toml = dir.path().join("replay.toml");
    std::fs::write(
        &replay_toml,
        connector_toml(
            &format!("secured-replay-{suffix}"),
            &bootstrap,
            &replay_store,
            &dlq,
            "",
        ),
    )
    .unwrap();
    run_bounded(lienthong().arg("replay").arg(&replay_toml), 90, "replay");
    let replayed = cases_in(&replay_store);
    for c in &all {
        assert!(replayed.contains(c), "{c} not replayed: {replayed:?}");
    }
}
