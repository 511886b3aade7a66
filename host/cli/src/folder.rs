//! A folder of plugins, the desired state of `plinth apply` and `plinth serve --apply`: each
//! subfolder holding a `plinth.toml` (a crate, built here, or a `.wasm` beside it).

use crate::client::{BuildError, plugin_files};
use plinth_host::apply::Desired;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why the folder cannot be applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    /// The folder cannot be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The folder.
        path: String,
        /// Why.
        message: String,
    },
    /// A plugin in it cannot be built or read.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Two entries name the same plugin.
    #[error("{first} and {second} both deploy plugin {name:?}")]
    Duplicate {
        /// The plugin.
        name: String,
        /// One entry.
        first: String,
        /// The other.
        second: String,
    },
}

/// The plugins in `dir`: each subfolder holding a `plinth.toml` (a crate, built first, or a
/// `.wasm` beside it), plus `dir` itself when it holds one. Sorted by name.
pub(crate) fn desired(dir: &Path) -> Result<Vec<Desired>, ApplyError> {
    let read_error = |e: std::io::Error| ApplyError::Read {
        path: dir.display().to_string(),
        message: e.to_string(),
    };
    let mut sources = Vec::new();
    if dir.join("plinth.toml").is_file() {
        sources.push(dir.to_path_buf());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_error)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.join("plinth.toml").is_file())
        .collect();
    entries.sort();
    sources.extend(entries);
    let mut plugins: BTreeMap<String, Desired> = BTreeMap::new();
    for source in sources {
        let files = plugin_files(&source, None)?;
        let component = std::fs::read(&files.wasm).map_err(|e| ApplyError::Read {
            path: files.wasm.display().to_string(),
            message: e.to_string(),
        })?;
        if let Some(first) = plugins.get(&files.name) {
            return Err(ApplyError::Duplicate {
                name: files.name,
                first: first.source.display().to_string(),
                second: source.display().to_string(),
            });
        }
        plugins.insert(
            files.name.clone(),
            Desired {
                sha256: hex::encode(Sha256::digest(&component)),
                name: files.name,
                manifest: files.manifest,
                component,
                source,
            },
        );
    }
    Ok(plugins.into_values().collect())
}
