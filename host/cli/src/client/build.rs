//! Finding what to deploy: a plugin crate (built with `cargo build --release --target
//! wasm32-wasip2`), a folder with `plinth.toml` and one `.wasm`, or a `.wasm` file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The target plugins are built for.
pub(super) const TARGET: &str = "wasm32-wasip2";

/// Why the plugin's files could not be found or built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    /// A path or file is missing or unreadable.
    #[error("{0}")]
    Missing(String),
    /// `cargo build` failed (its own output says why).
    #[error("building {crate_dir} failed: {message}")]
    Build {
        /// The crate.
        crate_dir: String,
        /// What went wrong.
        message: String,
    },
    /// The manifest cannot be read as TOML with a `name`.
    #[error("{path}: {message}")]
    Manifest {
        /// The manifest file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// A plugin ready to upload.
#[derive(Debug, Clone)]
pub(crate) struct PluginFiles {
    /// The plugin's name, from its manifest.
    pub name: String,
    /// The manifest text.
    pub manifest: String,
    /// The component.
    pub wasm: PathBuf,
}

fn missing(what: impl Into<String>) -> BuildError {
    BuildError::Missing(what.into())
}

/// The plugin at `path` (a crate folder, a folder with `plinth.toml` and one `.wasm`, or a
/// `.wasm`), building a crate first. `manifest` overrides the `plinth.toml` found beside it.
pub(crate) fn plugin_files(
    path: &Path,
    manifest: Option<&Path>,
) -> Result<PluginFiles, BuildError> {
    let (wasm, beside) = if path.is_file() {
        if path.extension().is_none_or(|e| e != "wasm") {
            return Err(missing(format!(
                "{} is not a .wasm file or a folder",
                path.display()
            )));
        }
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        (path.to_path_buf(), dir)
    } else if path.join("Cargo.toml").is_file() {
        (build_crate(path)?, path.to_path_buf())
    } else if path.is_dir() {
        (only_wasm_in(path)?, path.to_path_buf())
    } else {
        return Err(missing(format!("{} does not exist", path.display())));
    };
    let manifest_path = manifest.map_or_else(|| beside.join("plinth.toml"), Path::to_path_buf);
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
        missing(format!(
            "cannot read the manifest {}: {e} (pass --manifest FILE)",
            manifest_path.display()
        ))
    })?;
    let name = manifest_name(&text).map_err(|message| BuildError::Manifest {
        path: manifest_path.display().to_string(),
        message,
    })?;
    Ok(PluginFiles {
        name,
        manifest: text,
        wasm,
    })
}

/// The `name` of a manifest (the server checks the rest).
pub(super) fn manifest_name(text: &str) -> Result<String, String> {
    let value: toml::Table = toml::from_str(text).map_err(|e| e.message().to_string())?;
    value
        .get("name")
        .and_then(toml::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| "the manifest has no `name`".to_string())
}

fn only_wasm_in(dir: &Path) -> Result<PathBuf, BuildError> {
    let read = std::fs::read_dir(dir).map_err(|e| missing(format!("{}: {e}", dir.display())))?;
    let wasm: Vec<PathBuf> = read
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    match wasm.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(missing(format!(
            "{} holds no Cargo.toml and no .wasm to deploy",
            dir.display()
        ))),
        _ => Err(missing(format!(
            "{} holds several .wasm files; name one",
            dir.display()
        ))),
    }
}

/// Installs the wasm32-wasip2 target through rustup when it is missing (a no-op otherwise).
fn ensure_target() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .stderr(Stdio::null())
        .output();
    if let Ok(output) = installed
        && output.status.success()
        && !String::from_utf8_lossy(&output.stdout)
            .lines()
            .any(|l| l.trim() == TARGET)
    {
        eprintln!("installing the {TARGET} target (rustup target add {TARGET})");
        let _ = Command::new("rustup")
            .args(["target", "add", TARGET])
            .status();
    }
}

/// Builds the crate in `dir` for wasm32-wasip2 in release mode; returns the component.
/// Cargo's progress and errors go to the terminal (stderr).
pub(super) fn build_crate(dir: &Path) -> Result<PathBuf, BuildError> {
    ensure_target();
    let failed = |message: String| BuildError::Build {
        crate_dir: dir.display().to_string(),
        message,
    };
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| failed(format!("cannot run cargo: {e}")))?;
    if !output.status.success() {
        return Err(failed("cargo build reported errors (above)".into()));
    }
    let mut wasm = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let is_cdylib = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        let Some(files) = message["filenames"].as_array() else {
            continue;
        };
        if let Some(file) = files
            .iter()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".wasm"))
            && is_cdylib
        {
            wasm = Some(PathBuf::from(file));
        }
    }
    wasm.ok_or_else(|| {
        failed(
            "the build produced no .wasm: the crate needs `crate-type = [\"cdylib\"]` in [lib]"
                .into(),
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_manifest_name_is_read_and_its_absence_explained() {
        assert_eq!(
            super::manifest_name("name = \"hello\"\n[[routes]]\npath = \"/h\"\n"),
            Ok("hello".to_string())
        );
        assert!(super::manifest_name("[[routes]]\n").is_err());
        assert!(super::manifest_name("name = ").is_err());
    }
}
