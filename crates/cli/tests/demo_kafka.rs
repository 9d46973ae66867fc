//! `lienthong demo --kafka` against a fresh real Apache Kafka broker, started for this test by
//! the project's own script: the demo creates the catalog topics and uses them at once, which
//! must wait for their leaders (a fresh broker answered `NotLeaderForPartition` to the demo's
//! first watermark read, 3 times out of 3).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;
use lienthong_tests::{OwnKafka, repo_root};

#[test]
fn demo_on_a_fresh_broker_creates_its_topics_and_proves_the_log() {
    let broker = OwnKafka::start("demo").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("lienthong")
        .unwrap()
        .current_dir(repo_root())
        .env_remove("RUST_LOG")
        .args([
            "demo",
            "--duration",
            "15",
            "--kafka",
            broker.kafka().bootstrap(),
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().join("demo").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "Kafka: the cluster at {}",
            broker.kafka().bootstrap()
        )),
        "{stdout}"
    );
    let summary = stdout.split("== summary ==").nth(1).expect("a summary");
    assert!(summary.contains("result: CONSISTENT"), "{summary}");
    assert_eq!(
        summary.lines().filter(|l| l.starts_with("store ")).count(),
        4,
        "{summary}"
    );
}
