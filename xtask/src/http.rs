//! The few HTTP calls the demo and the bench make to a running Plinth (ureq: small and blocking).

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// A random admin token for a demo or bench run.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .expect("reading /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits until `GET /readyz` answers 200, failing if the server exits or 60 s pass.
pub(crate) fn wait_ready(base: &str, server: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let agent = agent();
    while Instant::now() < deadline {
        if let Some(status) = server.try_wait()? {
            bail!("plinth exited during start-up with {status}");
        }
        if let Ok(resp) = agent.get(format!("{base}/readyz")).call()
            && resp.status() == 200
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("plinth did not become ready within 60 s")
}

/// Uploads a plugin with `PUT /admin/plugins/{name}` (multipart parts `manifest`, `component`).
pub(crate) fn deploy(base: &str, token: &str, manifest: &Path, wasm: &Path) -> Result<String> {
    let manifest_text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let component = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
    deploy_bytes(base, token, &manifest_text, &component)
}

/// Uploads a plugin given as manifest text and component bytes.
pub(crate) fn deploy_bytes(
    base: &str,
    token: &str,
    manifest_text: &str,
    component: &[u8],
) -> Result<String> {
    let name = manifest_text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string())
        })
        .context("the manifest has no name")?;
    let boundary = format!("plinth-{}", random_token());
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\
             Content-Type: application/toml\r\n\r\n{manifest_text}\r\n--{boundary}\r\n\
             Content-Disposition: form-data; name=\"component\"; filename=\"plugin.wasm\"\r\n\
             Content-Type: application/wasm\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(component);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut resp = agent()
        .put(format!("{base}/admin/plugins/{name}"))
        .header("Authorization", format!("Bearer {token}"))
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .send(&body[..])?;
    let status = resp.status();
    let text = resp.body_mut().read_to_string()?;
    if !status.is_success() {
        bail!("deploying {name} failed with {status}: {text}");
    }
    Ok(text)
}

/// `GET` a path and return status and body.
pub(crate) fn get(base: &str, path: &str) -> Result<(u16, String)> {
    let mut resp = agent().get(format!("{base}{path}")).call()?;
    Ok((resp.status().as_u16(), resp.body_mut().read_to_string()?))
}

/// Signs in with `POST /auth/login`; returns the access token.
pub(crate) fn login(base: &str, email: &str, password: &str) -> Result<String> {
    let body = format!(r#"{{"email": "{email}", "password": "{password}"}}"#);
    let mut resp = agent()
        .post(format!("{base}/auth/login"))
        .header("Content-Type", "application/json")
        .send(body.as_bytes())?;
    let text = resp.body_mut().read_to_string()?;
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    answer["access_token"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("login failed: {text}"))
}

/// `PUT` a body to a path and return the status.
pub(crate) fn put(base: &str, path: &str, body: &[u8]) -> Result<u16> {
    let resp = agent().put(format!("{base}{path}")).send(body)?;
    Ok(resp.status().as_u16())
}
