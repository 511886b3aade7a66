//! Deploying from the dashboard: a `.wasm` and its `plinth.toml` (a file, or pasted), handed to
//! the same registry call as `PUT /admin/plugins/{name}`; a refusal is shown on the form with
//! its code.

use super::layout;
use super::session::{SignedIn, multipart_csrf};
use crate::api::{ApiError, AppState};
use crate::registry::DeployError;
use crate::registry::manifest::{MAX_MANIFEST_BYTES, Manifest};
use axum::extract::{ConnectInfo, Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use maud::html;
use std::net::SocketAddr;

/// Room for the form's framing and small fields on top of the component.
pub(super) const UPLOAD_OVERHEAD: usize = 256 * 1024;

/// `GET /_/deploy`.
pub(super) async fn page(signed_in: SignedIn) -> Response {
    form(&signed_in, StatusCode::OK, None, "")
}

/// The deploy form, with the refusal of the last attempt if any and the manifest it had.
fn form(
    signed_in: &SignedIn,
    status: StatusCode,
    error: Option<(&str, String)>,
    manifest: &str,
) -> Response {
    let content = html! {
        @if let Some((code, message)) = &error {
            p.error role="alert" { (message) " " code { (code) } }
        }
        form.deploy method="post" action="/_/deploy" enctype="multipart/form-data" {
            input type="hidden" name="_csrf" value=(signed_in.session.csrf);
            label { "Component (.wasm)" input type="file" name="component" accept=".wasm,application/wasm" required; }
            label { "Manifest file (plinth.toml)" input type="file" name="manifest_file" accept=".toml,text/plain"; }
            label { "Or paste the manifest"
                textarea name="manifest" rows="10" spellcheck="false" { (manifest) }
            }
            button type="submit" { "Deploy" }
        }
    };
    (
        status,
        layout::page(signed_in, "Deploy", "Deploy a plugin", content),
    )
        .into_response()
}

/// The form's parts as read.
#[derive(Default)]
struct Upload {
    manifest: Option<String>,
    component: Option<Bytes>,
}

/// Reads the rest of the form, once its CSRF token has been checked.
async fn read(
    mut multipart: Multipart,
    max_component: u64,
) -> Result<Upload, (StatusCode, &'static str, String)> {
    let bad =
        |e: axum::extract::multipart::MultipartError| (e.status(), "invalid_upload", e.body_text());
    let mut upload = Upload::default();
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field.bytes().await.map_err(bad)?;
        match name.as_str() {
            "manifest" | "manifest_file" if !bytes.is_empty() => {
                if bytes.len() > MAX_MANIFEST_BYTES {
                    return Err((
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "invalid_manifest",
                        format!("a manifest is at most {MAX_MANIFEST_BYTES} bytes"),
                    ));
                }
                let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                    (
                        StatusCode::BAD_REQUEST,
                        "invalid_manifest",
                        "the manifest is not UTF-8 text".to_string(),
                    )
                })?;
                // A chosen file wins over the pasted text.
                if name == "manifest_file" || upload.manifest.is_none() {
                    upload.manifest = Some(text);
                }
            }
            "component" => {
                if bytes.len() as u64 > max_component {
                    return Err((
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!("a component is at most {max_component} bytes on this server"),
                    ));
                }
                upload.component = Some(bytes);
            }
            _ => {}
        }
    }
    Ok(upload)
}

/// `POST /_/deploy`: deploys, then shows the plugin's page.
pub(super) async fn deploy(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    signed_in: SignedIn,
    mut multipart: Multipart,
) -> Response {
    if let Err(refused) = multipart_csrf(&signed_in, &mut multipart).await {
        return refused;
    }
    let upload = match read(multipart, state.max_component_size.0).await {
        Ok(upload) => upload,
        Err((status, code, message)) => return form(&signed_in, status, Some((code, message)), ""),
    };
    let (Some(manifest), Some(component)) =
        (upload.manifest, upload.component.filter(|c| !c.is_empty()))
    else {
        return form(
            &signed_in,
            StatusCode::BAD_REQUEST,
            Some((
                "invalid_upload",
                "Choose a component and give its manifest.".into(),
            )),
            "",
        );
    };
    let name = match Manifest::parse(&manifest) {
        Ok(parsed) => parsed.name.to_string(),
        Err(e) => {
            let (status, code, message) = ApiError::from(DeployError::from(e)).explain();
            return form(&signed_in, status, Some((code, message)), &manifest);
        }
    };
    let actor = signed_in.session.principal.actor(Some(addr));
    let deployed =
        crate::api::deploy_plugin(state, name.clone(), manifest.clone(), component, actor).await;
    match deployed {
        Ok(_) => Redirect::to(&format!("/_/plugins/{name}")).into_response(),
        Err(e) => {
            let (status, code, message) = e.explain();
            form(&signed_in, status, Some((code, message)), &manifest)
        }
    }
}
