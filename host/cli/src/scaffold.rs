//! `plinth new`: writes a plugin crate that builds and deploys as it is, from one of three
//! templates (`http`, `kv`, `webhook`) kept as files under `host/templates/`.

use plinth_host::registry::manifest::PluginName;
use std::path::{Path, PathBuf};

/// What the new plugin starts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Template {
    /// Two public routes: a greeting with a path parameter, and a JSON echo.
    Http,
    /// Notes saved, read, listed and deleted in the plugin's key-value store.
    Kv,
    /// Signed webhooks verified with an operator-set secret and stored once per event id.
    Webhook,
}

const CARGO_TOML: &str = include_str!("../templates/common/Cargo.toml");
const README: &str = include_str!("../templates/common/README.md");
const GITIGNORE: &str = include_str!("../templates/common/gitignore");

impl Template {
    fn name(self) -> &'static str {
        match self {
            Template::Http => "http",
            Template::Kv => "kv",
            Template::Webhook => "webhook",
        }
    }

    fn lib_rs(self) -> &'static str {
        match self {
            Template::Http => include_str!("../templates/http/lib.rs"),
            Template::Kv => include_str!("../templates/kv/lib.rs"),
            Template::Webhook => include_str!("../templates/webhook/lib.rs"),
        }
    }

    fn manifest(self) -> &'static str {
        match self {
            Template::Http => include_str!("../templates/http/plinth.toml"),
            Template::Kv => include_str!("../templates/kv/plinth.toml"),
            Template::Webhook => include_str!("../templates/webhook/plinth.toml"),
        }
    }

    fn extra_deps(self) -> &'static str {
        match self {
            Template::Webhook => "hmac = \"0.12\"\nsha2 = \"0.10\"\nhex = \"0.4\"\n",
            _ => "",
        }
    }

    fn try_line(self, name: &str) -> String {
        match self {
            Template::Http => format!("curl http://127.0.0.1:8080/{name}/hello/you"),
            Template::Kv => format!(
                "curl -X PUT http://127.0.0.1:8080/{name}/notes/first -d '{{\"text\": \"hi\"}}'"
            ),
            Template::Webhook => {
                format!(
                    "plinth config set {name} signing_secret \"$(openssl rand -hex 32)\" --secret"
                )
            }
        }
    }

    fn notes(self, name: &str) -> String {
        match self {
            Template::Webhook => format!(
                "\nTo send a test event:\n\n```sh\nbody='{{\"id\": \"evt_1\", \"type\": \"test\"}}'\n\
                 sig=$(printf %s \"$body\" | openssl dgst -sha256 -hmac \"$SECRET\" | cut -d' ' -f2)\n\
                 curl http://127.0.0.1:8080/{name}/webhook -H \"webhook-signature: $sig\" -d \"$body\"\n```\n"
            ),
            _ => String::new(),
        }
    }
}

/// Why a crate could not be created.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScaffoldError {
    /// The name is not a valid plugin name.
    #[error("{0}")]
    InvalidName(String),
    /// The folder exists already.
    #[error("{0} exists already; pick another name or --dir")]
    Exists(String),
    /// The SDK is not where the crate would point.
    #[error(
        "the plinth-sdk crate is not at {0}: pass --sdk-path to your checkout's sdk folder \
         (plinth-sdk is not on crates.io yet)"
    )]
    NoSdk(String),
    /// Writing failed.
    #[error("writing {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

/// The SDK this binary was built with, when its source is still there.
pub(crate) fn default_sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk")
}

/// Writes the crate for plugin `name` into `dir`; returns the files written.
pub(crate) fn create(
    name: &str,
    template: Template,
    dir: &Path,
    sdk: &Path,
) -> Result<Vec<PathBuf>, ScaffoldError> {
    let name = PluginName::parse(name).map_err(ScaffoldError::InvalidName)?;
    let name = name.as_str();
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir.display().to_string()));
    }
    let sdk = sdk
        .canonicalize()
        .ok()
        .filter(|p| p.join("Cargo.toml").is_file())
        .ok_or_else(|| ScaffoldError::NoSdk(sdk.display().to_string()))?;
    let fill = |text: &str| {
        text.replace("__NAME__", name)
            .replace("__TEMPLATE__", template.name())
            .replace("__SDK__", &sdk.display().to_string().replace('\\', "/"))
            .replace("__EXTRA_DEPS__", template.extra_deps())
            .replace("__TRY__", &template.try_line(name))
            .replace("__NOTES__", &template.notes(name))
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("plinth.toml", fill(template.manifest())),
        ("src/lib.rs", fill(template.lib_rs())),
        ("README.md", fill(README)),
        (".gitignore", GITIGNORE.to_string()),
    ];
    let mut written = Vec::new();
    for (file, text) in files {
        let path = dir.join(file);
        let io = |e: std::io::Error| ScaffoldError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, text).map_err(io)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_fills_every_placeholder_and_names_the_plugin() {
        for template in [Template::Http, Template::Kv, Template::Webhook] {
            let dir = std::env::temp_dir().join(format!("plinth-new-{}", rand::random::<u64>()));
            let files = create("my-plugin", template, &dir, &default_sdk_path()).unwrap();
            for file in &files {
                let text = std::fs::read_to_string(file).unwrap();
                assert!(
                    !text.contains("__"),
                    "{} keeps a placeholder",
                    file.display()
                );
            }
            let manifest = std::fs::read_to_string(dir.join("plinth.toml")).unwrap();
            plinth_host::registry::manifest::Manifest::parse(&manifest).unwrap();
            assert!(manifest.contains("name = \"my-plugin\""));
            assert!(matches!(
                create("my-plugin", template, &dir, &default_sdk_path()),
                Err(ScaffoldError::Exists(_))
            ));
            std::fs::remove_dir_all(dir).unwrap();
        }
        assert!(matches!(
            create(
                "Bad Name",
                Template::Http,
                Path::new("x"),
                &default_sdk_path()
            ),
            Err(ScaffoldError::InvalidName(_))
        ));
    }
}
