//! The `lienthong` binary, run as a user runs it: help, config errors, `schemas check`,
//! `topics create` twice against real Kafka, and `up` serving the registry until Ctrl-C.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use lienthong_registry::auth::hash_token;
use lienthong_tests::{apicurio, kafka, repo_root, unique_suffix};

fn lienthong() -> Command {
    let mut c = Command::cargo_bin("lienthong").unwrap();
    c.current_dir(repo_root());
    c.env_remove("RUST_LOG");
    c
}

fn output(c: &mut Command) -> (i32, String, String) {
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        &["--help"][..],
        &["up", "--help"],
        &["schemas", "--help"],
        &["schemas", "check", "--help"],
        &["topics", "--help"],
        &["topics", "create", "--help"],
        &["demo", "--help"],
        &["publish", "--help"],
        &["replay", "--help"],
        &["connect", "--help"],
        &["tail", "--help"],
        &["schemas", "diff", "--help"],
        &["schemas", "push", "--help"],
    ] {
        let (code, out, _) = output(lienthong().args(args));
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains("Usage: lienthong"), "{args:?}: {out}");
    }
    let (code, _, err) = output(lienthong().arg("frobnicate"));
    assert_eq!(code, 2);
    assert!(err.contains("unrecognized subcommand"), "{err}");
}

#[test]
fn schemas_check_passes_on_the_repository() {
    let (code, out, err) = output(lienthong().args(["schemas", "check"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("5 topics, every schema valid"), "{out}");
    assert!(out.contains("compatible with"), "{out}");
}

/// A closed stdout (`lienthong schemas check | head -0`) is not a crash: the command still does
/// its work and exits 0, with no panic (before, `println!` panicked on the broken pipe).
#[test]
fn a_closed_stdout_does_not_make_a_command_panic() {
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("lienthong"))
        .current_dir(repo_root())
        .env_remove("RUST_LOG")
        .args(["schemas", "check"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before the command has written anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

#[test]
fn a_closed_stderr_does_not_make_a_failing_command_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("lienthong"))
        .current_dir(repo_root())
        .env_remove("RUST_LOG")
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .args(["schemas", "check"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end of stderr before the command writes its error there.
    drop(child.stderr.take());
    let out = child.wait_with_output().unwrap();
    // 101 is Rust's exit code for a panic; the configuration error's own code is 2.
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn config_errors_name_the_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[kafka]\nbootstrapp = \"x\"\n").unwrap();
    let (code, _, err) = output(
        lienthong()
            .arg("--config")
            .arg(&file)
            .args(["schemas", "check"]),
    );
    assert_eq!(code, 2);
    assert!(err.contains("bootstrapp"), "{err}");
    let (code, _, err) = output(
        lienthong()
            .env("LIENTHONG__KAFKA__NOPE", "1")
            .args(["schemas", "check"]),
    );
    assert_eq!(code, 2);
    assert!(err.to_lowercase().contains("nope"), "{err}");
    std::fs::write(&file, "[kafka\n").unwrap();
    let (code, _, err) = output(
        lienthong()
            .arg("--config")
            .arg(&file)
            .args(["schemas", "check"]),
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = output(
        lienthong()
            .env("LIENTHONG__SCHEMAS_DIR", "/nonexistent")
            .args(["schemas", "check"]),
    );
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent"), "{err}");
}

#[test]
fn topics_create_is_idempotent_on_real_kafka() {
    let kafka = kafka();
    let (code, out, err) = output(
        lienthong()
            .env("LIENTHONG__KAFKA__BOOTSTRAP", kafka.bootstrap())
            .args(["topics", "create"]),
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, again, err) = output(
        lienthong()
            .env("LIENTHONG__KAFKA__BOOTSTRAP", kafka.bootstrap())
            .args(["topics", "create"]),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        again
            .lines()
            .filter(|l| l.starts_with("exists  hcm."))
            .count(),
        5,
        "{again}"
    );
    assert!(!again.contains("created"), "{again}");
    // The topics are as the catalog says.
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = kafka.client_config().create().unwrap();
    let md = consumer
        .fetch_metadata(Some("hcm.case.events"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 12);
}

#[test]
fn topics_create_against_an_unreachable_broker_fails_clearly() {
    let (code, _, err) = output(
        lienthong()
            .env("LIENTHONG__KAFKA__BOOTSTRAP", "127.0.0.1:1")
            .args(["topics", "create"]),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

/// A raw HTTP GET (the test needs no HTTP client): status line and body.
fn http_get(addr: &str, path: &str, token: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn up_serves_the_registry_until_interrupted() {
    let kafka = kafka();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lienthong.toml");
    std::fs::write(
        &config,
        format!(
            "[registry]\nlisten = \"127.0.0.1:0\"\ntopic = \"_lienthong_schemas-{}\"\n[[registry.agencies]]\ncode = \"SKHCN\"\nkind = \"department\"\ntoken_sha256 = \"{}\"\n",
            unique_suffix(),
            hash_token("cli-token")
        ),
    )
    .unwrap();
    let bin = assert_cmd::cargo::cargo_bin("lienthong");
    let child = StdCommand::new(bin)
        .current_dir(repo_root())
        .env("LIENTHONG__KAFKA__BOOTSTRAP", kafka.bootstrap())
        .arg("--config")
        .arg(&config)
        .arg("up")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = lienthong_tests::ChildGuard(child);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        assert!(Instant::now() < deadline, "no 'listening' line");
        let line = lines.next().expect("the process ended").unwrap();
        if let Some(url) = line.strip_prefix("schema registry listening on http://") {
            break url.to_string();
        }
    };
    let answer = http_get(&addr, "/subjects", "cli-token");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("hcm.case.events-value"),
        "the catalog is bootstrapped: {answer}"
    );
    assert!(http_get(&addr, "/subjects", "wrong").starts_with("HTTP/1.1 401"));
    // The process's /metrics, beside the registry, counts those calls.
    let metrics = http_get(&addr, "/metrics", "");
    let count = |operation: &str, outcome: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("lienthong_registry_operations_total{")
                    && l.contains(&format!("operation=\"{operation}\""))
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(count("list", "ok"), 1.0, "{metrics}");
    assert_eq!(count("list", "client_error"), 1.0, "{metrics}");
    assert!(metrics.contains("lienthong_build_info{"), "{metrics}");
    // Health and readiness, as every component answers them (no credential needed).
    let health = http_get(&addr, "/healthz", "");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with(r#"{"status":"alive"}"#), "{health}");
    let ready = http_get(&addr, "/readyz", "");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.ends_with(r#"{"status":"ready"}"#), "{ready}");

    // Ctrl-C: a clean stop.
    let status = lienthong_tests::interrupt_and_wait(&mut child, Duration::from_secs(20));
    assert!(status.success(), "{status}");
    assert!(lines.any(|l| l.map(|l| l == "stopped").unwrap_or(false)));
}

/// A component of `up` that stops with an error stops the others, and the process exits 1
/// naming it: here a connector whose Kafka does not answer, beside a healthy registry.
#[test]
fn up_stops_every_component_when_one_fails() {
    let kafka = kafka();
    let dir = tempfile::tempdir().unwrap();
    let connector = dir.path().join("ward.toml");
    let dead = format!("127.0.0.1:{}", lienthong_tests::free_port());
    std::fs::write(
        &connector,
        format!(
            "name = \"up-broken-{s}\"\ndead_letter_topic = \"dlq\"\nstartup_timeout_secs = 2\n[kafka]\nbootstrap = \"{dead}\"\n[schemas]\ndir = \"{}\"\n[[topics]]\nname = \"hcm.case.events\"\n[store]\nkind = \"sqlite\"\npath = \"{}\"\n",
            lienthong_contract::repo_schemas_dir().display(),
            dir.path().join("ward.sqlite").display(),
            s = unique_suffix(),
        ),
    )
    .unwrap();
    let config = dir.path().join("lienthong.toml");
    std::fs::write(
        &config,
        format!(
            "connectors = [\"{}\"]\n[registry]\nlisten = \"127.0.0.1:0\"\ntopic = \"_lienthong_schemas-{}\"\n",
            connector.display(),
            unique_suffix(),
        ),
    )
    .unwrap();
    let started = Instant::now();
    let (code, out, err) = output(
        lienthong()
            .env("LIENTHONG__KAFKA__BOOTSTRAP", kafka.bootstrap())
            .arg("--config")
            .arg(&config)
            .arg("up")
            .timeout(Duration::from_secs(90)),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("schema registry listening"), "{out}");
    assert!(
        err.contains("up-broken-"),
        "the failure names the connector: {err}"
    );
    assert!(err.contains(&dead), "and says what failed: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "stopped promptly, not at the timeout"
    );
}

#[test]
fn schemas_push_to_an_external_registry_is_idempotent() {
    let url = apicurio();
    let push = || {
        output(
            lienthong()
                .env_remove("LIENTHONG_REGISTRY_TOKEN")
                .args(["schemas", "push", "--url", &url]),
        )
    };
    let (code, first, err) = push();
    assert_eq!(code, 0, "{first}{err}");
    assert_eq!(first.lines().count(), 5, "{first}");
    assert!(first.contains("hcm.case.events-value\tid "), "{first}");
    let (code, second, err) = push();
    assert_eq!(code, 0, "{err}");
    assert_eq!(first, second, "same ids the second time");
    // After a push, the registry holds exactly the working tree's schemas.
    let (code, diff, err) = output(
        lienthong()
            .env_remove("LIENTHONG_REGISTRY_TOKEN")
            .args(["schemas", "diff", "--url", &url]),
    );
    assert_eq!(code, 0, "{diff}{err}");
    assert_eq!(diff.matches(": unchanged").count(), 5, "{diff}");
    // A credential-less push with --agency is a usage error.
    let (code, _, err) = output(
        lienthong()
            .env_remove("LIENTHONG_REGISTRY_TOKEN")
            .args(["schemas", "push", "--url", &url, "--agency", "STP"]),
    );
    assert_eq!(code, 2, "{err}");
}

#[test]
fn up_runs_the_gateway_with_the_registry_mounted() {
    let kafka = kafka();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(kafka.ensure_catalog_topics()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lienthong.toml");
    // A ward store kept by a connector that `up` runs beside the gateway.
    let store = dir.path().join("ward-26734.sqlite");
    let connector = dir.path().join("ward.toml");
    let suffix = unique_suffix();
    let dlq = rt
        .block_on(kafka.create_topic("up-dlq", 1, 1, &[]))
        .unwrap();
    std::fs::write(
        &connector,
        format!(
            "name = \"up-ward-{suffix}\"\ndead_letter_topic = \"{dlq}\"\n[kafka]\nbootstrap = \"{}\"\n[schemas]\ndir = \"{}\"\n[[topics]]\nname = \"hcm.case.events\"\n[filter]\nunits = [\"26734\"]\n[store]\nkind = \"sqlite\"\npath = \"{}\"\n",
            kafka.bootstrap(),
            lienthong_contract::repo_schemas_dir().display(),
            store.display()
        ),
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "connectors = [\"{}\"]\n[registry]\nlisten = \"127.0.0.1:0\"\ntopic = \"_lienthong_schemas-{s}\"\n[[registry.agencies]]\ncode = \"26734\"\nkind = \"ward\"\ntoken_sha256 = \"{}\"\n[gateway]\nlisten = \"127.0.0.1:0\"\ntransactional_id = \"cli-gw-{s}\"\nidempotency_window_secs = 60\n",
            connector.display(),
            hash_token("ward-token"),
            s = suffix,
        ),
    )
    .unwrap();
    let bin = assert_cmd::cargo::cargo_bin("lienthong");
    let child = StdCommand::new(bin)
        .current_dir(repo_root())
        .env("LIENTHONG__KAFKA__BOOTSTRAP", kafka.bootstrap())
        .arg("--config")
        .arg(&config)
        .arg("up")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = lienthong_tests::ChildGuard(child);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        assert!(Instant::now() < deadline, "no 'gateway listening' line");
        let line = lines.next().expect("the process ended").unwrap();
        if let Some(rest) = line.strip_prefix("gateway listening on http://") {
            break rest.split(' ').next().unwrap().to_string();
        }
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ready = http_get(&addr, "/readyz", "");
        if ready.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "gateway not ready: {ready}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let registry = http_get(&addr, "/registry/subjects", "ward-token");
    assert!(registry.contains("hcm.case.events-value"), "{registry}");
    let mut event =
        serde_json::to_value(lienthong_contract::samples::typical_case_submitted()).unwrap();
    event["envelope"]["event_id"] = uuid_text().into();
    event["envelope"]["aggregate_id"] = format!("HS-CLI-{}", unique_suffix()).into();
    let body = event.to_string();
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "POST /topics/hcm.case.events/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer ward-token\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    // The connector `up` runs puts the case in the ward's store.
    let case = event["envelope"]["aggregate_id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rows = rt.block_on(async {
            use lienthong_connect::Sink;
            let mut sink = lienthong_store::AnyStore::sqlite(&store).await.unwrap();
            sink.rows().await.unwrap()
        });
        if rows.iter().any(|r| r.table == "cases" && r.key == case) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "case {case} not in the ward's store within 120 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    let status = lienthong_tests::interrupt_and_wait(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}");
}

fn uuid_text() -> String {
    let hex = format!("{}{}{}", unique_suffix(), unique_suffix(), unique_suffix());
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..15],
        &hex[15..18],
        &hex[18..30]
    )
}

/// The README's main command, shortened to 20 s: its summary proves the log holds what was
/// published.
#[test]
fn demo_plays_a_day_and_proves_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = output(lienthong().args([
        "demo",
        "--duration",
        "20",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().join("demo").to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("embedded in-memory broker"), "{out}");
    let summary = out.split("== summary ==").nth(1).expect("a summary");
    let mut topics = 0;
    for line in summary.lines().filter(|l| l.starts_with("log ")) {
        // log <topic>: published <n> on_log <m> MATCH
        let words: Vec<&str> = line.split_whitespace().collect();
        let published: u64 = words[3].parse().unwrap();
        let on_log: u64 = words[5].parse().unwrap();
        assert_eq!(published, on_log, "{line}");
        assert_eq!(words[6], "MATCH", "{line}");
        if words[1] == "hcm.case.events:" {
            // 20 s at 500 steps/s plus the backlog.
            assert!(published > 5_000, "{line}");
        }
        topics += 1;
    }
    assert_eq!(topics, 4, "{summary}");
    // kpi open cases: simulation <n> kpi <m> MATCH (overdue <k>)
    let kpi = summary
        .lines()
        .find(|l| l.starts_with("kpi open cases:"))
        .expect("a KPI line");
    let words: Vec<&str> = kpi.split_whitespace().collect();
    let (simulated, counted): (u64, u64) = (words[4].parse().unwrap(), words[6].parse().unwrap());
    assert_eq!(simulated, counted, "{kpi}");
    assert!(simulated > 100, "{kpi}");
    // gateway: <n> of those events came in over HTTP
    let gateway = summary
        .lines()
        .find(|l| l.starts_with("gateway:"))
        .expect("a gateway line");
    let via_http: u64 = gateway.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(via_http > 100, "{gateway}");
    // store <code>: rows <n> log_rows <m> digest <hex> log_digest <hex> MATCH (<path>)
    let mut stores = Vec::new();
    for line in summary.lines().filter(|l| l.starts_with("store ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (rows, log_rows): (u64, u64) = (words[3].parse().unwrap(), words[5].parse().unwrap());
        assert!(rows > 100, "{line}");
        assert_eq!(rows, log_rows, "{line}");
        assert_eq!(words[7], words[9], "digests differ: {line}");
        assert_eq!(words[10], "MATCH", "{line}");
        let path = words[11].trim_matches(|c| c == '(' || c == ')');
        assert!(std::path::Path::new(path).is_file(), "{line}");
        stores.push(words[1].trim_end_matches(':').to_string());
    }
    assert_eq!(stores, ["STP", "26734", "26740", "27259"], "{summary}");
    // drift <code>: edited <n> shown <g> page <p> repaired <r> MATCH: the one row edited by hand in
    // 26734's store mid-run, shown by the scheduled check, and repaired; nothing elsewhere.
    let drift: Vec<&str> = summary
        .lines()
        .filter(|l| l.starts_with("drift "))
        .collect();
    assert_eq!(
        drift,
        [
            "drift STP: edited 0 shown 0 page 0 repaired 0 MATCH",
            "drift 26734: edited 1 shown 1 page 1 repaired 1 MATCH",
            "drift 26740: edited 0 shown 0 page 0 repaired 0 MATCH",
            "drift 27259: edited 0 shown 0 page 0 repaired 0 MATCH",
        ],
        "{summary}"
    );
    // (The progress line shows it too once a check has run after the edit; on a loaded
    // machine that may be after the day ended, so only the summary's `shown` is asserted.)
    assert!(
        out.contains("hand edit: an operator changes a row"),
        "{out}"
    );
    assert!(summary.contains("result: CONSISTENT"), "{summary}");
    // Progress lines were printed while it ran, with rows applied per store. The loop prints
    // at most one a second and skips seconds when a shared CI machine stalls it (a 2-core
    // runner printed 12 in 20 s), so the count only has to show it kept reporting, in order.
    let progress: Vec<&str> = out.lines().filter(|l| l.starts_with('[')).collect();
    assert!(progress.len() >= 5, "{out}");
    let seconds: Vec<u64> = progress
        .iter()
        .map(|l| {
            l.trim_start_matches('[')
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("a progress line without seconds: {l}"))
        })
        .collect();
    assert!(seconds.windows(2).all(|w| w[0] <= w[1]), "{out}");
    assert!(seconds.last().is_some_and(|&s| s >= 10), "{out}");
    assert!(
        progress.iter().all(|l| l.contains("rows applied: STP ")),
        "{out}"
    );
}

#[test]
fn demo_refuses_bad_options_and_an_unreachable_broker() {
    let (code, _, err) = output(lienthong().args(["demo", "--duration", "0"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--duration"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = output(lienthong().args([
        "demo",
        "--kafka",
        "127.0.0.1:1",
        "--duration",
        "1",
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
    ]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `tail` prints decoded records as JSON lines, from the beginning, an offset or a time, for
/// one key, and shows a record it cannot decode instead of stopping.
#[test]
fn tail_prints_decoded_json_from_where_asked() {
    use lienthong_contract::{Catalog, Codec, repo_schemas_dir, samples};
    use rdkafka::producer::FutureRecord;
    let kafka = kafka();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let topic = rt.block_on(kafka.create_topic("tail", 1, 1, &[])).unwrap();
    let catalog = Catalog::load(repo_schemas_dir()).unwrap();
    let codec = Codec::from_catalog(&catalog).unwrap();
    let id = catalog.local_id("hcm.case.events").unwrap();
    let producer = kafka.idempotent_producer().unwrap();
    let t0 = 1_762_070_400_000i64;
    rt.block_on(async {
        for (i, event) in samples::case_lifecycle().into_iter().enumerate() {
            let bytes = codec.encode_to_vec(id, &event).unwrap();
            let key = if i % 2 == 0 { "HS-A" } else { "HS-B" };
            producer
                .send(
                    FutureRecord::to(&topic)
                        .key(key)
                        .payload(&bytes)
                        .timestamp(t0 + i as i64 * 60_000),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
        // Not Avro, then a tombstone.
        for payload in [Some(&b"not avro"[..]), None] {
            let mut record = FutureRecord::<str, [u8]>::to(&topic)
                .key("HS-A")
                .timestamp(t0 + 3_600_000);
            if let Some(p) = payload {
                record = record.payload(p);
            }
            producer
                .send(record, Duration::from_secs(10))
                .await
                .unwrap();
        }
    });
    let events = samples::case_lifecycle().len();
    let tail = |args: &[&str]| {
        let (code, out, err) = output(
            lienthong()
                .env("LIENTHONG__KAFKA__BOOTSTRAP", kafka.bootstrap())
                .args(["tail", topic.as_str(), "--until-end"])
                .args(args),
        );
        assert_eq!(code, 0, "{err}");
        out.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let all = tail(&["--from", "beginning"]);
    assert_eq!(all.len(), events + 2);
    assert_eq!(
        all[0]["value"]["event"]["CaseSubmitted"]["receiving_unit"],
        "26734"
    );
    assert_eq!(all[0]["value"]["envelope"]["aggregate_version"], 1);
    assert_eq!(all[0]["schema_id"], id);
    assert!(
        all[events]["error"]
            .as_str()
            .unwrap()
            .contains("magic byte"),
        "{:?}",
        all[events]
    );
    assert!(all[events + 1]["value"].is_null());
    // One key.
    let only_b = tail(&["--from", "beginning", "--key", "HS-B"]);
    assert_eq!(only_b.len(), events / 2);
    assert!(only_b.iter().all(|l| l["key"] == "HS-B"));
    // From an offset, and from a time (the third event's timestamp).
    assert_eq!(tail(&["--from", "offset:3"])[0]["offset"], 3);
    let from_time = tail(&["--from", "time:2025-11-02T08:02:00Z"]);
    assert_eq!(from_time[0]["offset"], 2);
    assert_eq!(from_time[0]["timestamp"], "2025-11-02T08:02:00.000Z");
    // --max stops early; from the end with --until-end prints nothing.
    assert_eq!(tail(&["--from", "beginning", "--max", "2"]).len(), 2);
    assert!(tail(&["--from", "end"]).is_empty());
}

#[test]
fn tail_refuses_an_unknown_topic_a_bad_start_and_an_unreachable_broker() {
    let kafka = kafka();
    let (code, _, err) = output(
        lienthong()
            .env("LIENTHONG__KAFKA__BOOTSTRAP", kafka.bootstrap())
            .args(["tail", &format!("no-such-topic-{}", unique_suffix())]),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown topic"), "{err}");
    let (code, _, err) = output(lienthong().args(["tail", "hcm.case.events", "--from", "middle"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--from"), "{err}");
    let (code, _, err) = output(
        lienthong()
            .env("LIENTHONG__KAFKA__BOOTSTRAP", "127.0.0.1:1")
            .args(["tail", "hcm.case.events"]),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Kafka"), "{err}");
}

/// `schemas diff` against git: a new optional field is a compatible change named by its path;
/// removing a required field is not, and exits 1.
#[test]
fn schemas_diff_against_git_names_each_change() {
    let (code, out, err) = output(lienthong().args(["schemas", "diff"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("differ from git HEAD"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let schemas = dir.path().join("schemas");
    let copy = StdCommand::new("cp")
        .args([
            "-r",
            repo_root().join("schemas").to_str().unwrap(),
            schemas.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(copy.success());
    let git = |args: &[&str]| {
        let ok = StdCommand::new("git")
            .current_dir(dir.path())
            .args(["-c", "user.name=t", "-c", "user.email=t@t.invalid"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "schemas"]);
    let file = schemas.join("procedure.avsc");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let diff = |json: &serde_json::Value| {
        std::fs::write(&file, serde_json::to_string_pretty(json).unwrap()).unwrap();
        output(
            lienthong()
                .env("LIENTHONG__SCHEMAS_DIR", schemas.to_str().unwrap())
                .args(["schemas", "diff", "--against", "HEAD"]),
        )
    };
    // A new optional field in the procedure record.
    let procedure_fields = json["fields"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["name"] == "procedure")
        .unwrap()["type"]["fields"]
        .as_array_mut()
        .unwrap();
    procedure_fields.push(serde_json::json!({
        "name": "fee_vnd", "type": ["null", "long"], "default": null,
        "lienthong.personal_data": "none"
    }));
    let (code, out, err) = diff(&json);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("hcm.reference.procedures-value: changed, compatible"),
        "{out}"
    );
    assert!(
        out.contains("+ procedure.fee_vnd: union [null, long] = null"),
        "{out}"
    );
    assert!(out.contains("hcm.case.events-value: unchanged"), "{out}");
    // Removing a required field breaks FULL_TRANSITIVE.
    let procedure_fields = json["fields"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["name"] == "procedure")
        .unwrap()["type"]["fields"]
        .as_array_mut()
        .unwrap();
    procedure_fields.retain(|f| f["name"] != "processing_days");
    let (code, out, err) = diff(&json);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("INCOMPATIBLE (FULL_TRANSITIVE)"), "{out}");
    assert!(out.contains("- procedure.processing_days: int"), "{out}");
    assert!(err.contains("incompatible"), "{err}");
    // A revision that does not exist is a clear error.
    let (code, _, err) = output(
        lienthong()
            .env("LIENTHONG__SCHEMAS_DIR", schemas.to_str().unwrap())
            .args(["schemas", "diff", "--against", "no-such-rev"]),
    );
    assert_ne!(code, 0);
    assert!(!err.contains("panicked"), "{err}");
}

/// The gateway's JSON form of typed sample events (what `tail` prints as `value`).
fn gateway_json<T: serde::Serialize>(
    catalog: &lienthong_contract::Catalog,
    topic: &str,
    event: &T,
) -> serde_json::Value {
    let codec = lienthong_contract::Codec::from_catalog(catalog).unwrap();
    let bytes = codec
        .encode_to_vec(catalog.local_id(topic).unwrap(), event)
        .unwrap();
    let (_, value) = codec.decode_value(&bytes, None).unwrap();
    lienthong_contract::json::to_json(&value, &catalog.topic(topic).unwrap().schema)
}

/// `publish` sends JSON events through the SDK and prints a receipt per event; Kafka has each
/// at its receipt, keyed by the case. A bad event, an event published as another unit, an
/// unknown topic or an unreachable broker is a clear error, and a bad event publishes nothing.
#[test]
fn publish_sends_json_events_and_prints_receipts() {
    use lienthong_contract::{Catalog, Codec, repo_schemas_dir, samples};
    let kafka = kafka();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(kafka.ensure_catalog_topics()).unwrap();
    let catalog = Catalog::load(repo_schemas_dir()).unwrap();
    let topic = "hcm.case.events";
    let case = format!("HS-PUB-{}", unique_suffix());
    let events: Vec<_> = samples::case_lifecycle()
        .into_iter()
        .map(|mut e| {
            e.envelope.aggregate_id = case.clone();
            e.envelope.event_id = uuid::Uuid::new_v4().to_string();
            e.envelope.producer_unit = "26734".into();
            e
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = events
        .iter()
        .map(|e| gateway_json(&catalog, topic, e).to_string())
        .collect();
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let publish = |args: &[&str], stdin: Option<&str>| {
        let mut c = lienthong();
        c.env("LIENTHONG__KAFKA__BOOTSTRAP", kafka.bootstrap())
            .args(["publish", "--topic"])
            .args(args);
        if let Some(input) = stdin {
            c.write_stdin(input.to_string());
        }
        output(&mut c)
    };

    let (code, out, err) = publish(&[topic, "--as", "26734", file.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}\n{err}");
    let receipts: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(receipts.len(), events.len(), "{out}");
    let codec = Codec::from_catalog(&catalog).unwrap();
    for (receipt, event) in receipts.iter().zip(&events) {
        assert_eq!(receipt["topic"], topic);
        assert_eq!(receipt["event_id"], event.envelope.event_id);
        let record = rt
            .block_on(kafka.read_at(
                topic,
                receipt["partition"].as_i64().unwrap() as i32,
                receipt["offset"].as_i64().unwrap(),
            ))
            .unwrap();
        assert_eq!(record.key.as_deref(), Some(case.as_bytes()));
        let (_, on_log): (u32, lienthong_contract::events::CaseEvent) =
            codec.decode(record.payload.as_deref().unwrap()).unwrap();
        assert_eq!(&on_log, event);
    }
    // The same events as one JSON array on stdin (new ids: the SDK does not deduplicate).
    let again: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["envelope"]["event_id"] = uuid::Uuid::new_v4().to_string().into();
            v
        })
        .collect();
    let (code, out, err) = publish(
        &[topic, "--as", "26734", "-"],
        Some(&serde_json::Value::Array(again.clone()).to_string()),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), events.len(), "{out}");

    // One bad event among good ones: every problem named, nothing published.
    let bad_case = format!("HS-BAD-{}", unique_suffix());
    let mut bad: Vec<serde_json::Value> = again
        .iter()
        .map(|v| {
            let mut v = v.clone();
            v["envelope"]["aggregate_id"] = bad_case.clone().into();
            v["envelope"]["event_id"] = uuid::Uuid::new_v4().to_string().into();
            v
        })
        .collect();
    bad[1]["envelope"]["producer_unit"] = "not a unit".into();
    let (code, out, err) = publish(
        &[topic, "--as", "26734"],
        Some(&serde_json::Value::Array(bad).to_string()),
    );
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("event 1: $.envelope.producer_unit"), "{err}");
    assert!(err.contains("nothing was published"), "{err}");
    assert!(out.is_empty(), "{out}");
    let (code, on_log, err) = output(
        lienthong()
            .env("LIENTHONG__KAFKA__BOOTSTRAP", kafka.bootstrap())
            .args(["tail", topic, "--from", "beginning", "--until-end"])
            .args(["--key", bad_case.as_str()]),
    );
    assert_eq!(code, 0, "{err}");
    assert!(on_log.is_empty(), "{on_log}");

    // Publishing as another unit, to an unknown topic, malformed JSON, an unreachable broker.
    let (code, _, err) = publish(&[topic, "--as", "26737", file.to_str().unwrap()], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("publishes only as itself"), "{err}");
    let (code, _, err) = publish(&["hcm.no.such", "--as", "26734"], Some("{}"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown topic"), "{err}");
    let (code, _, err) = publish(&[topic, "--as", "26734"], Some("{\"envelope\": \n{oops"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("line 1"), "{err}");
    let (code, _, err) = output(
        lienthong()
            .env("LIENTHONG__KAFKA__BOOTSTRAP", "127.0.0.1:1")
            .args(["publish", "--topic", topic, "--as", "26734"])
            .arg(&file)
            .timeout(Duration::from_secs(90)),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Start `lienthong <args>`, let it run for `after`, send SIGINT, and return its exit status,
/// stdout and stderr once it stopped (at most `within` later).
fn interrupt(
    args: &[&str],
    env: &[(&str, &str)],
    after: Duration,
    within: Duration,
) -> (std::process::ExitStatus, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut command = StdCommand::new(assert_cmd::cargo::cargo_bin("lienthong"));
    command.current_dir(repo_root());
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command
        .args(args)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let mut child = lienthong_tests::ChildGuard(child);
    std::thread::sleep(after);
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "{args:?} ended before the interrupt: {}",
        read(&err_path)
    );
    StdCommand::new("kill")
        .arg("-INT")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            panic!(
                "{args:?} did not stop within {within:?} of SIGINT: {}",
                read(&err_path)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status, read(&out_path), read(&err_path))
}

/// Ctrl-C stops the long-running subcommands cleanly: `tail` following a topic, `connect`
/// applying one, and `demo` in the middle of its day, which still ends with its summary.
#[test]
fn ctrl_c_stops_tail_connect_and_demo_cleanly() {
    let kafka = kafka();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(kafka.ensure_catalog_topics()).unwrap();
    let bootstrap = [("LIENTHONG__KAFKA__BOOTSTRAP", kafka.bootstrap())];

    let (status, _, err) = interrupt(
        &["tail", "hcm.case.events", "--from", "end"],
        &bootstrap,
        Duration::from_secs(3),
        Duration::from_secs(15),
    );
    assert!(status.success(), "tail: {status}\n{err}");

    let dir = tempfile::tempdir().unwrap();
    let topic = rt
        .block_on(kafka.create_topic("ctrl-c", 2, 1, &[]))
        .unwrap();
    let dlq = rt
        .block_on(kafka.create_topic("ctrl-c-dlq", 1, 1, &[]))
        .unwrap();
    let config = dir.path().join("connector.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"ctrl-c-{}\"\ndead_letter_topic = \"{dlq}\"\n[kafka]\nbootstrap = \"{}\"\n\
             [schemas]\ndir = \"{}\"\n[[topics]]\nname = \"{topic}\"\nentity = \"cases\"\n\
             [store]\nkind = \"sqlite\"\npath = \"{}\"\n",
            unique_suffix(),
            kafka.bootstrap(),
            lienthong_contract::repo_schemas_dir().display(),
            dir.path().join("ward.db").display()
        ),
    )
    .unwrap();
    let (status, _, err) = interrupt(
        &["connect", config.to_str().unwrap()],
        &[],
        Duration::from_secs(4),
        Duration::from_secs(20),
    );
    assert!(status.success(), "connect: {status}\n{err}");
    assert!(dir.path().join("ward.db").is_file(), "{err}");

    let data = dir.path().join("demo");
    let (status, out, err) = interrupt(
        &[
            "demo",
            "--duration",
            "600",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
        Duration::from_secs(8),
        Duration::from_secs(90),
    );
    assert!(status.success(), "demo: {status}\n{out}\n{err}");
    assert!(out.contains("result: CONSISTENT"), "{out}\n{err}");
}

/// `connect` refuses a malformed config (naming the problem) with exit code 2, and reports a
/// broker that does not answer, a missing topic and a metrics port in use with exit code 1
/// (the job failed, the input was fine), without a panic.
#[test]
fn connect_refuses_a_bad_config_and_an_unreachable_broker() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("connector.toml");
    std::fs::write(&config, "name = \"x\"\n[store\nkind = \"sqlite\"\n").unwrap();
    let (code, _, err) = output(lienthong().arg("connect").arg(&config));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("connector.toml"), "{err}");
    let (code, _, err) = output(lienthong().args(["connect", "/no/such/connector.toml"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/no/such/connector.toml"), "{err}");
    let toml = |bootstrap: &str, topic: &str| {
        format!(
            "name = \"unreachable\"\ndead_letter_topic = \"dlq\"\nstartup_timeout_secs = 3\n\
             [kafka]\nbootstrap = \"{bootstrap}\"\n\
             [schemas]\ndir = \"{}\"\n[[topics]]\nname = \"{topic}\"\nentity = \"cases\"\n\
             [store]\nkind = \"sqlite\"\npath = \"{}\"\n",
            lienthong_contract::repo_schemas_dir().display(),
            dir.path().join("ward.db").display()
        )
    };
    let connect = |bootstrap: &str, topic: &str| {
        std::fs::write(&config, toml(bootstrap, topic)).unwrap();
        output(
            lienthong()
                .arg("connect")
                .arg(&config)
                .timeout(Duration::from_secs(60)),
        )
    };
    let (code, _, err) = connect("127.0.0.1:1", "hcm.case.events");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("error: Kafka at 127.0.0.1:1 did not answer within 3 s"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let missing = format!("no-such-topic-{}", unique_suffix());
    let (code, _, err) = connect(kafka().bootstrap(), &missing);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("error: topic {missing} does not exist")),
        "{err}"
    );
    // A metrics address that is malformed is bad input (2); one that is taken is not (1).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    for (listen, expected) in [("not-an-address", 2), (&*format!("127.0.0.1:{port}"), 1)] {
        std::fs::write(
            &config,
            toml(kafka().bootstrap(), "hcm.case.events").replace(
                "[kafka]",
                &format!("metrics_listen = \"{listen}\"\n[kafka]"),
            ),
        )
        .unwrap();
        let (code, _, err) = output(lienthong().arg("connect").arg(&config));
        assert_eq!(code, expected, "{listen}: {err}");
        assert!(err.contains(listen), "{err}");
    }
}

/// `tail --until-end` stops after the last record even when a transaction's commit marker,
/// which takes an offset but is never delivered, ends the partition.
#[test]
fn tail_until_end_stops_after_a_transaction() {
    use lienthong_contract::{Catalog, Codec, samples};
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    let kafka = kafka();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let topic = rt
        .block_on(kafka.create_topic("tail-txn", 1, 1, &[]))
        .unwrap();
    let catalog = Catalog::load(lienthong_contract::repo_schemas_dir()).unwrap();
    let codec = Codec::from_catalog(&catalog).unwrap();
    let id = catalog.local_id("hcm.case.events").unwrap();
    let producer: FutureProducer = kafka
        .client_config()
        .set("transactional.id", format!("tail-txn-{}", unique_suffix()))
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    producer.begin_transaction().unwrap();
    let events = samples::case_lifecycle();
    rt.block_on(async {
        for event in events.iter().take(3) {
            let bytes = codec.encode_to_vec(id, event).unwrap();
            producer
                .send(
                    FutureRecord::to(&topic).key("HS-TXN").payload(&bytes),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    });
    producer
        .commit_transaction(Duration::from_secs(30))
        .unwrap();
    let high = kafka.end_offsets(&topic).unwrap()[0].1;
    assert_eq!(high, 4, "three records and the commit marker");
    let (code, out, err) = output(
        lienthong()
            .env("LIENTHONG__KAFKA__BOOTSTRAP", kafka.bootstrap())
            .args(["tail", &topic, "--from", "beginning", "--until-end"])
            .timeout(Duration::from_secs(60)),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
}

/// `[gateway] check_document_signatures = true` takes the certificate log of `[signing]`:
/// without that section `up` refuses to start (exit 2, naming both); with it the gateway says
/// it checks documents (what it then refuses: `crates/gateway/tests/gateway.rs`).
#[test]
fn up_checks_document_signatures_with_the_signing_sections_log() {
    let kafka = kafka();
    let suffix = unique_suffix();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lienthong.toml");
    let base = format!(
        "[registry]\nlisten = \"127.0.0.1:0\"\ntopic = \"_lienthong_schemas-{suffix}\"\n[[registry.agencies]]\ncode = \"26734\"\nkind = \"ward\"\ntoken_sha256 = \"{}\"\n[gateway]\nlisten = \"127.0.0.1:0\"\ntransactional_id = \"docs-gw-{suffix}\"\ncheck_document_signatures = true\n",
        hash_token("ward-token"),
    );
    let up = || {
        let mut command =
            lienthong_tests::up_command(assert_cmd::cargo::cargo_bin("lienthong"), &config, &kafka);
        command.stderr(Stdio::piped());
        command
    };
    std::fs::write(&config, &base).unwrap();
    let out = up().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("check_document_signatures") && stderr.contains("[signing]"),
        "{stderr}"
    );

    let ca = lienthong_signing::CityCa::generate("HCMC City CA (test)", 30).unwrap();
    let (_, ca_crt) = ca.save(&dir.path().join("ca")).unwrap();
    std::fs::write(
        &config,
        format!(
            "{base}[signing]\ntrusted_cas = [\"{}\"]\ntopic = \"certificates-{suffix}\"\n",
            ca_crt.display()
        ),
    )
    .unwrap();
    let mut child = lienthong_tests::ChildGuard(up().stderr(Stdio::inherit()).spawn().unwrap());
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no document-check line");
        let line = lines.next().expect("the process ended").unwrap();
        if line.starts_with("gateway: document signatures in case events are checked") {
            break;
        }
    }
    let status = lienthong_tests::interrupt_and_wait(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}");
}

/// `publish --sign-key --sign-certificate` signs every record with the agency's key: each
/// record read back from Kafka verifies against the certificate log and names the ward. A
/// certificate of another agency than `--as`, or a key that is not the certificate's, is a
/// usage error before anything is published; one of the two options alone is refused by the
/// command line.
#[test]
fn publish_signs_every_record_with_the_agencys_key() {
    use lienthong_contract::{Catalog, repo_schemas_dir, samples};
    let kafka = kafka();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(kafka.ensure_catalog_topics()).unwrap();
    let catalog = Catalog::load(repo_schemas_dir()).unwrap();
    let topic = "hcm.case.events";
    let case = format!("HS-SIGNPUB-{}", unique_suffix());
    let lines: Vec<String> = samples::case_lifecycle()
        .into_iter()
        .take(3)
        .map(|mut e| {
            e.envelope.aggregate_id = case.clone();
            e.envelope.event_id = uuid::Uuid::new_v4().to_string();
            e.envelope.producer_unit = "26734".into();
            gateway_json(&catalog, topic, &e).to_string()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let ca = lienthong_signing::CityCa::generate("HCMC City CA (test)", 30).unwrap();
    let ward = ca.issue("26734", 7).unwrap();
    let stp = ca.issue("STP", 7).unwrap();
    for (name, text) in [
        ("26734.key", ward.key_pem.clone()),
        ("26734.crt", ward.certificate.pem().to_string()),
        ("STP.key", stp.key_pem.clone()),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let publish = |extra: &[&str]| {
        output(
            lienthong()
                .env("LIENTHONG__KAFKA__BOOTSTRAP", kafka.bootstrap())
                .args(["publish", "--topic", topic])
                .args(extra)
                .arg(&file),
        )
    };
    let (code, out, err) = publish(&[
        "--as",
        "26734",
        "--sign-key",
        &path("26734.key"),
        "--sign-certificate",
        &path("26734.crt"),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let receipts: Vec<(i32, i64)> = out
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                r["partition"].as_i64().unwrap() as i32,
                r["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(receipts.len(), 3, "{out}");
    let log =
        lienthong_signing::CertificateLog::<rdkafka::consumer::DefaultConsumerContext>::in_memory(
            vec![ca.certificate().clone()],
        );
    rt.block_on(log.publish(&ward.certificate, "admin"))
        .unwrap();
    let verifier = lienthong_signing::RecordVerifier::new();
    for (partition, offset) in receipts {
        let m = rt
            .block_on(kafka.message_at(topic, partition, offset))
            .unwrap();
        let signer = verifier
            .verify_message(&log.read(), &m)
            .map(|c| c.agency().to_string());
        assert_eq!(signer.as_deref(), Ok("26734"), "record at {offset}");
    }

    // The ward's certificate for STP's events, another agency's key: usage errors.
    let (code, _, err) = publish(&[
        "--as",
        "STP",
        "--sign-key",
        &path("26734.key"),
        "--sign-certificate",
        &path("26734.crt"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("26734") && err.contains("STP"), "{err}");
    let (code, _, err) = publish(&[
        "--as",
        "26734",
        "--sign-key",
        &path("STP.key"),
        "--sign-certificate",
        &path("26734.crt"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("STP.key"), "{err}");
    let (code, _, err) = publish(&["--as", "26734", "--sign-key", &path("26734.key")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--sign-certificate"), "{err}");
}
