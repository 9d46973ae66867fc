//! Python's fastavro, a codec nobody here wrote, decodes the contract crate's golden vectors to
//! the same values and encodes the same values to identical bytes (tests/interop/).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;

use anyhow::{Context, Result, ensure};
use lienthong_tests::{python, repo_root};

#[test]
fn fastavro_agrees_with_the_contract_codec_both_ways() -> Result<()> {
    let root = repo_root();
    let out = Command::new(python())
        .arg(root.join("tests/interop/fastavro_golden.py"))
        .arg(root.join("crates/contract/tests/golden/vectors.json"))
        .output()
        .context("running the fastavro cross-check")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    ensure!(
        out.status.success(),
        "fastavro disagrees:\n{}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    // "fastavro X: N of M vectors identical both ways": every vector, and not a vacuous run.
    let counts: Vec<usize> = stdout
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    ensure!(
        stdout.contains("vectors identical both ways")
            && counts.len() == 2
            && counts[0] == counts[1]
            && counts[1] >= 15,
        "unexpected report: {stdout}"
    );
    Ok(())
}
