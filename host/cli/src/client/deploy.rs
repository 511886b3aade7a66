//! Deploying a plugin: the multipart upload the server expects and what a deploy did, for
//! people. Shared by `plinth deploy`, `plinth apply` and `plinth dev`.

use super::output::{list, routes, short_sha};
use super::{Api, ClientError, plugin_files, seg};
use plinth_host::registry::Deployed;
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

/// Uploads the plugin at `path`; returns the server's answer.
pub(super) async fn deploy(
    api: &mut Api,
    path: &std::path::Path,
    manifest: Option<&std::path::Path>,
) -> Result<Value, ClientError> {
    let files = plugin_files(path, manifest)?;
    let component = std::fs::read(&files.wasm)
        .map_err(|e| ClientError::Local(format!("reading {}: {e}", files.wasm.display())))?;
    upload(api, &files.name, &files.manifest, &component).await
}

/// `PUT /admin/plugins/{name}` with the multipart parts `manifest` and `component`.
pub(super) async fn upload(
    api: &mut Api,
    name: &str,
    manifest: &str,
    component: &[u8],
) -> Result<Value, ClientError> {
    api.send(|api| {
        let form = reqwest::multipart::Form::new()
            .part(
                "manifest",
                reqwest::multipart::Part::text(manifest.to_string()),
            )
            .part(
                "component",
                reqwest::multipart::Part::bytes(component.to_vec()).file_name("plugin.wasm"),
            );
        // Compiling a large component takes a while; the server answers when it is active.
        api.request(Method::PUT, &format!("/admin/plugins/{}", seg(name)))
            .timeout(Duration::from_secs(300))
            .multipart(form)
    })
    .await
}

/// What a deploy did, for people.
pub(super) fn deployed_text(deployed: &Deployed) -> String {
    let info = &deployed.info;
    let name = &info.name;
    let mut lines = vec![if deployed.unchanged {
        format!(
            "{name} unchanged: version {} already has these bytes and manifest",
            info.version
        )
    } else {
        format!(
            "deployed {name} version {} (sha256 {})",
            info.version,
            short_sha(&info.sha256)
        )
    }];
    lines.extend(routes(&info.routes).into_iter().map(|r| format!("  {r}")));
    if !info.missing_config.is_empty() {
        lines.push(format!(
            "  waiting for config: {} (plinth config set {name} KEY VALUE)",
            list(&info.missing_config)
        ));
    }
    lines.join("\n")
}
