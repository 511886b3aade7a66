//! The dashboard's browser tests (`tests/browser/`): Debian's Chromium driven by playwright-core
//! from npm, against the `plinth` binary the Rust tests just built. Installs what is missing:
//! Chromium, Node.js and npm from Debian's packages, the npm packages from the lock file.

use crate::{run, target_dir};
use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;

/// Where Debian's package puts the browser.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs the browser tests; each main screen's screenshots land in `target/browser-screenshots`.
pub(crate) fn test(root: &Path, guests: &Path) -> Result<()> {
    ensure_packages()?;
    let dir = root.join("tests/browser");
    run(Command::new("npm")
        .current_dir(&dir)
        .args(["ci", "--no-audit", "--no-fund"]))?;
    let target = target_dir(root);
    let plinth = target.join("debug/plinth");
    anyhow::ensure!(
        plinth.exists(),
        "{} is missing: the Rust tests build it",
        plinth.display()
    );
    run(Command::new("npm")
        .current_dir(&dir)
        .arg("test")
        .env("PLINTH_BIN", &plinth)
        .env("PLINTH_GUEST_DIR", guests)
        .env("PLINTH_SCREENSHOT_DIR", target.join("browser-screenshots"))
        .env("CHROMIUM", CHROMIUM))
}

/// Installs Chromium, Node.js and npm with apt-get when any is missing.
fn ensure_packages() -> Result<()> {
    let has = |program: &str| {
        Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push("chromium");
    }
    if !has("node") {
        missing.push("nodejs");
    }
    if !has("npm") {
        missing.push("npm");
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {} with apt-get", missing.join(", "));
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("installing the browser tests' packages")
}
