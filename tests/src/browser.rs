//! Headless Chromium for tests (Debian's `chromium`, `$LIENTHONG_CHROMIUM`, installed by
//! `ops/services.sh`): load a page as a browser does and read back the DOM it built, or save
//! a screenshot of it. Each call runs its own browser with an empty profile, and without the
//! background connections that a closed network refuses.

#![allow(clippy::unwrap_used)] // test harness: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The Chromium binary, from `$LIENTHONG_CHROMIUM` (set by `ops/services.sh up`).
pub fn chromium_binary() -> PathBuf {
    match std::env::var_os("LIENTHONG_CHROMIUM") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "LIENTHONG_CHROMIUM is not set: this test loads pages in headless Chromium (Debian \
             package chromium). Run it under ops/test, or `eval \"$(ops/services.sh up)\"` first"
        ),
    }
}

fn run(args: &[&str]) -> Result<Vec<u8>> {
    let profile = tempfile::tempdir()?;
    let out = Command::new(chromium_binary())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--lang=vi",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()
        .context("starting chromium")?;
    if !out.status.success() {
        bail!(
            "chromium {args:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// The DOM Chromium built from `url`, serialised (`--dump-dom`).
pub fn dump_dom(url: &str) -> Result<String> {
    let dom = run(&["--virtual-time-budget=2000", "--dump-dom", url])?;
    Ok(String::from_utf8(dom)?)
}

/// Save a PNG screenshot of `url`, `width` × `height` pixels, to `path`; check it is a PNG.
pub fn screenshot(url: &str, path: &Path, width: u32, height: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    run(&[
        &format!("--screenshot={}", path.display()),
        &format!("--window-size={width},{height}"),
        url,
    ])?;
    let png =
        std::fs::read(path).with_context(|| format!("no screenshot at {}", path.display()))?;
    if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
        bail!("{} is not a PNG", path.display());
    }
    Ok(())
}
