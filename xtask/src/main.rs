//! Project automation, run as `cargo xtask <command>`.
//!
//! Every command installs what it needs (the `wasm32-wasip2` target, `wrk` for the bench,
//! PostgreSQL for the tests), so a
//! fresh machine with rustup is enough. Tests, the demo, CI and the bench all build guest
//! components through [`build_guests`], so there is one way to build them.

mod bench;
mod browser;
mod guests;
mod http;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test          install what is needed, build the guest components, check formatting and
                lints, start a throwaway PostgreSQL, run every test (the dashboard's in
                Chromium too), and smoke-run the bench
                (this is what CI runs)
  demo          build the examples, start Plinth on 127.0.0.1:8080 with them deployed, and
                print curl lines to try (Ctrl-C stops it)
  bench         build release binaries and measure plinth against a native axum hello server
  build-guests  build every guest component (examples/, tests/programs/) into target/guests/
  vendor-wit    copy the standard WASI WIT packages wasmtime ships into wit/deps/";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = project_root();
    match args.first().map(String::as_str) {
        Some("test") => test(&root),
        Some("demo") => demo(&root),
        Some("bench") => bench::measure(&root, &args[1..]),
        Some("build-guests") => guests::build_guests(&root).map(|_| ()),
        Some("vendor-wit") => vendor_wit(&root),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

/// The repository root: xtask lives one level below it.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// The workspace target directory (honours `CARGO_TARGET_DIR`).
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Runs a command to completion, failing with its command line if it fails.
fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("$ {shown}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(cargo_path())
}

/// The cargo that runs this xtask.
fn cargo_path() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Installs rustfmt and clippy when the toolchain lacks them (minimal rustup profiles do).
fn ensure_components() -> Result<()> {
    for (component, probe) in [("rustfmt", "fmt"), ("clippy", "clippy")] {
        let present = cargo()
            .args([probe, "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !present {
            run(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    Ok(())
}

/// `cargo xtask test`: everything CI checks, in the order that fails fastest.
fn test(root: &Path) -> Result<()> {
    ensure_components()?;
    let guests = guests::build_guests(root)?;
    run(cargo().current_dir(root).args(["fmt", "--all", "--check"]))?;
    run(cargo().current_dir(root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The PostgreSQL store's tests run on every test run, never skipped: a throwaway server
    // for this run (or the one PLINTH_TEST_DATABASE_URL names), stopped when the tests end.
    let postgres = plinth_test_postgres::TestPostgres::start()?;
    run(cargo()
        .current_dir(root)
        .args(["test", "--workspace"])
        // Benchmarks and tests must not pay for a backtrace on every store drop.
        .env_remove("RUST_BACKTRACE")
        .env("PLINTH_GUEST_DIR", &guests)
        .env("PLINTH_TEST_DATABASE_URL", &postgres.url)
        .env("PLINTH_TEST_REQUIRE_POSTGRES", "1"))?;
    drop(postgres);
    // The dashboard in a real browser, on the binary the tests just built.
    browser::test(root, &guests)?;
    // The bench harness end to end, as a 2-second smoke on the dev binaries just tested (no
    // second build in another profile): it fails if a row answers errors, never on speed.
    bench::measure(root, &["--quick".into(), "--debug-build".into()])
}

/// `cargo xtask demo`: Plinth on 127.0.0.1:8080 (or `PLINTH_LISTEN`) with the examples deployed
/// by `plinth serve --apply` from a folder of their manifests and components.
fn demo(root: &Path) -> Result<()> {
    let guests = guests::build_guests(root)?;
    run(cargo().current_dir(root).args(["build", "-p", "plinth"]))?;
    let examples = guests::examples(root)?;
    let folder = target_dir(root).join("demo-plugins");
    if folder.exists() {
        std::fs::remove_dir_all(&folder)?;
    }
    for example in &examples {
        let dir = folder.join(&example.crate_name);
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(&example.manifest, dir.join("plinth.toml"))?;
        let wasm = format!("{}.wasm", example.crate_name);
        std::fs::copy(guests.join(&wasm), dir.join(&wasm))?;
    }
    let listen = std::env::var("PLINTH_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let token = std::env::var("PLINTH_ADMIN_TOKEN").unwrap_or_else(|_| http::random_token());
    let mut server = Command::new(target_dir(root).join("debug/plinth"))
        .current_dir(root)
        .args(["serve", "--listen", &listen, "--apply"])
        .arg(&folder)
        .env("PLINTH_ADMIN_TOKEN", &token)
        .spawn()
        .context("starting plinth")?;
    let base = format!("http://{listen}");
    if let Err(e) = http::wait_ready(&base, &mut server) {
        let _ = server.kill();
        return Err(e);
    }
    println!(
        "\nPlinth is serving on {base} with the examples deployed from {}. Try:\n",
        folder.display()
    );
    for line in examples.iter().flat_map(|e| &e.try_lines) {
        println!("  {}", curl_line(&base, line));
    }
    println!("  curl -s -H 'Authorization: Bearer {token}' {base}/admin/plugins");
    println!("  PLINTH_SERVER={base} PLINTH_TOKEN={token} target/debug/plinth plugins list");
    println!("\nAdmin token for this run: {token}\nCtrl-C stops the server.");
    let status = server.wait()?;
    if !status.success() {
        bail!("plinth exited with {status}");
    }
    Ok(())
}

/// A curl command for a manifest's `# try:` line: `/path` (a GET), `METHOD /path`, or
/// `METHOD /path {json body}`.
fn curl_line(base: &str, line: &str) -> String {
    let (method, rest) = match line.split_once(' ') {
        Some((method, rest)) if method.chars().all(|c| c.is_ascii_uppercase()) => (method, rest),
        _ => ("GET", line),
    };
    let (path, body) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut cmd = String::from("curl -s");
    if method != "GET" {
        cmd.push_str(&format!(" -X {method}"));
    }
    cmd.push_str(&format!(" '{base}{path}'"));
    if !body.is_empty() {
        cmd.push_str(&format!(" -H 'content-type: application/json' -d '{body}'"));
    }
    cmd
}

/// The crates whose `wit/deps` hold the standard WASI packages Plinth's WIT uses, and the
/// packages to take from each (`*` for the loose files at the top of `wit/deps`).
const WIT_SOURCES: [(&str, &str); 3] = [
    ("wasmtime-wasi-http", "*"),
    ("wasmtime-wasi-keyvalue", "keyvalue"),
    ("wasmtime-wasi-config", "config"),
];

/// Copies the WASI WIT packages, exactly as the pinned wasmtime release ships them, into
/// `wit/deps`. The crates are resolved through a scratch manifest (so `cargo metadata`
/// downloads them) at the wasmtime version in the workspace's lock file.
fn vendor_wit(root: &Path) -> Result<()> {
    let version = workspace_package_version(root, "wasmtime")?;
    let scratch = target_dir(root).join("vendor-wit");
    std::fs::create_dir_all(scratch.join("src"))?;
    std::fs::write(scratch.join("src/lib.rs"), "")?;
    let mut manifest = String::from(
        "[package]\nname = \"vendor-wit\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\
         [workspace]\n[dependencies]\n",
    );
    for (krate, _) in WIT_SOURCES {
        manifest.push_str(&format!("{krate} = \"={version}\"\n"));
    }
    std::fs::write(scratch.join("Cargo.toml"), manifest)?;
    let meta = cargo_metadata(&scratch)?;
    let dst = root.join("wit/deps");
    if dst.exists() {
        std::fs::remove_dir_all(&dst)?;
    }
    std::fs::create_dir_all(&dst)?;
    let mut copied = Vec::new();
    for (krate, package) in WIT_SOURCES {
        let src = package_dir(&meta, krate)?.join("wit/deps");
        if package == "*" {
            for entry in
                std::fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))?
            {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    std::fs::copy(entry.path(), dst.join(entry.file_name()))?;
                    copied.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        } else {
            let target = dst.join(package);
            std::fs::create_dir_all(&target)?;
            for entry in std::fs::read_dir(src.join(package))? {
                let entry = entry?;
                std::fs::copy(entry.path(), target.join(entry.file_name()))?;
            }
            copied.push(format!("{package}/"));
        }
    }
    copied.sort();
    eprintln!(
        "vendored from wasmtime {version} into wit/deps: {}",
        copied.join(", ")
    );
    Ok(())
}

fn cargo_metadata(dir: &Path) -> Result<serde_json::Value> {
    let out = cargo()
        .current_dir(dir)
        .args(["metadata", "--format-version", "1"])
        .output()
        .context("cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn find_package<'a>(meta: &'a serde_json::Value, name: &str) -> Result<&'a serde_json::Value> {
    meta["packages"]
        .as_array()
        .and_then(|pkgs| pkgs.iter().find(|p| p["name"] == name))
        .with_context(|| format!("{name} is not in the dependency graph"))
}

fn package_dir(meta: &serde_json::Value, name: &str) -> Result<PathBuf> {
    let manifest = find_package(meta, name)?["manifest_path"]
        .as_str()
        .context("manifest_path")?;
    Ok(Path::new(manifest)
        .parent()
        .context("manifest has a parent")?
        .to_path_buf())
}

fn workspace_package_version(root: &Path, name: &str) -> Result<String> {
    let meta = cargo_metadata(root)?;
    Ok(find_package(&meta, name)?["version"]
        .as_str()
        .context("version")?
        .to_string())
}
