//! `lienthong up` with a `[kpi]` section: configuration errors exit 2 before anything starts;
//! a good section runs the engine beside the registry and serves its `/metrics`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use lienthong_tests::{kafka, repo_root, unique_suffix};

#[test]
fn a_kpi_section_without_reference_lists_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kpi.toml");
    std::fs::write(&file, "[kpi]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let out = StdCommand::new(assert_cmd::cargo::cargo_bin("lienthong"))
        .current_dir(repo_root())
        .arg("--config")
        .arg(&file)
        .arg("up")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("[kpi]") && err.contains("no known units"),
        "{err}"
    );
    std::fs::write(&file, "[kpi]\ntop_procedure = []\n").unwrap();
    let out = StdCommand::new(assert_cmd::cargo::cargo_bin("lienthong"))
        .current_dir(repo_root())
        .arg("--config")
        .arg(&file)
        .arg("up")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("top_procedure"));
}

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_the_kpi_engine_and_serves_its_metrics() {
    let kafka = kafka();
    let suffix = unique_suffix();
    let case_topic = kafka.create_topic("kpi-cli-case", 2, 1, &[]).await.unwrap();
    let feedback_topic = kafka
        .create_topic("kpi-cli-feedback", 1, 1, &[])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lienthong.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[registry]
listen = "127.0.0.1:0"
topic = "_lienthong_schemas-{suffix}"

[kpi]
listen = "127.0.0.1:0"
case_topic = "{case_topic}"
feedback_topic = "{feedback_topic}"
units = ["26734"]
top_procedures = ["1.001193"]
[[kpi.procedures]]
code = "1.001193"
level = "FULL_ONLINE"
"#
        ),
    )
    .unwrap();
    let child =
        lienthong_tests::up_command(assert_cmd::cargo::cargo_bin("lienthong"), &config, &kafka)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
    let mut child = lienthong_tests::ChildGuard(child);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    // Both components start: the engine first (its config is checked before anything
    // connects), then the registry.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut addr = None;
    let mut registry = false;
    while addr.is_none() || !registry {
        assert!(Instant::now() < deadline, "no KPI or registry line");
        let line = lines.next().expect("the process ended").unwrap();
        if let Some(rest) = line.strip_prefix("KPI engine metrics on http://") {
            addr = Some(rest.trim_end_matches("/metrics").to_string());
        }
        registry |= line.starts_with("schema registry listening on");
    }
    let addr = addr.unwrap();
    // The engine serves the process's /metrics at once (one registry for all of `up`), and
    // reports when it has read its (empty) topics.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = get(&addr, "/metrics");
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(
            body.contains("lienthong_build_info{component=\"up\""),
            "{body}"
        );
        if body.contains("lienthong_kpi_caught_up 1") {
            break;
        }
        assert!(Instant::now() < deadline, "never caught up:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = lienthong_tests::interrupt_and_wait(&mut child, Duration::from_secs(20));
    assert!(status.success(), "{status}");
    assert!(lines.any(|l| l.map(|l| l == "stopped").unwrap_or(false)));
}
