//! Building guest components: the one place that knows how `examples/` and `tests/programs/`
//! become `.wasm` files.

use crate::{cargo, run, target_dir};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guest-only workspaces, each built for `wasm32-wasip2`.
const GUEST_WORKSPACES: &[&str] = &["examples", "plugins", "tests/programs"];
const WASM_TARGET: &str = "wasm32-wasip2";

/// One example plugin: its manifest, the name of its `.wasm`, and what to try against it.
pub(crate) struct Example {
    pub manifest: PathBuf,
    pub crate_name: String,
    /// Paths to curl, from `# try: /path` lines in the manifest.
    pub try_lines: Vec<String>,
}

/// Installs the wasm target if missing (rustup makes this a no-op when present).
fn ensure_wasm_target() -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup (Plinth's guests need a rustup toolchain)")?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == WASM_TARGET)
    {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
}

/// Builds every guest workspace in release mode (small, fast components) into one shared target
/// dir, then copies the components into `target/guests/`. Returns that directory.
pub(crate) fn build_guests(root: &Path) -> Result<PathBuf> {
    ensure_wasm_target()?;
    let target = target_dir(root);
    let wasm_target_dir = target.join("wasm");
    for ws in GUEST_WORKSPACES {
        run(cargo()
            .current_dir(root.join(ws))
            .args([
                "build",
                "--release",
                "--target",
                WASM_TARGET,
                "--target-dir",
            ])
            .arg(&wasm_target_dir)
            // The guest workspaces have their own lock files; keep them honest.
            .arg("--locked"))?;
    }
    let built = wasm_target_dir.join(WASM_TARGET).join("release");
    let guests = target.join("guests");
    std::fs::create_dir_all(&guests)?;
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&built)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wasm") {
            let name = path.file_name().context("file name")?.to_owned();
            std::fs::copy(&path, guests.join(&name))?;
            names.push(name.to_string_lossy().into_owned());
        }
    }
    names.sort();
    eprintln!(
        "guest components in {}: {}",
        guests.display(),
        names.join(", ")
    );
    Ok(guests)
}

/// The example plugins, each a directory under `examples/` with a `plinth.toml`.
pub(crate) fn examples(root: &Path) -> Result<Vec<Example>> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("plinth.toml").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        let manifest = dir.join("plinth.toml");
        let text = std::fs::read_to_string(&manifest)?;
        let try_lines = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("# try:"))
            .map(|l| l.trim().to_string())
            .collect();
        let crate_name = dir
            .file_name()
            .context("example dir name")?
            .to_string_lossy()
            .replace('-', "_");
        out.push(Example {
            manifest,
            crate_name,
            try_lines,
        });
    }
    Ok(out)
}
