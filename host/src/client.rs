//! The operator CLI's side of the admin API: requests to a running server, one-line errors.

use crate::cli::{ClientArgs, KeysCommand};
use serde_json::Value;
use std::time::Duration;

/// A CLI command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached.
    #[error("cannot reach {server}: {message}")]
    Unreachable {
        /// The server URL.
        server: String,
        /// Why.
        message: String,
    },
    /// No credential was given.
    #[error("no credential: set PLINTH_TOKEN or pass --token")]
    NoToken,
    /// The server answered with an error.
    #[error("{status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's error message (or body).
        message: String,
    },
}

async fn call(
    client: &ClientArgs,
    method: reqwest::Method,
    path: &str,
) -> Result<Value, ClientError> {
    let token = client.token.as_deref().ok_or(ClientError::NoToken)?;
    let unreachable = |e: reqwest::Error| ClientError::Unreachable {
        server: client.server.clone(),
        message: e.to_string(),
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(unreachable)?;
    let url = format!("{}{path}", client.server.trim_end_matches('/'));
    let response = http
        .request(method, url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        Ok(body)
    } else {
        let message = body["error"]["message"]
            .as_str()
            .map_or_else(|| body.to_string(), str::to_string);
        Err(ClientError::Refused {
            status: status.as_u16(),
            message,
        })
    }
}

/// Runs `plinth keys ...`; returns what to print.
pub async fn keys(command: KeysCommand, client: &ClientArgs) -> Result<String, ClientError> {
    let body = match command {
        KeysCommand::Rotate => {
            call(client, reqwest::Method::POST, "/admin/signing-keys/rotate").await?
        }
        KeysCommand::List => call(client, reqwest::Method::GET, "/admin/signing-keys").await?,
    };
    let current = body["current"].as_str().unwrap_or("?");
    let verifying: Vec<&str> = body["verifying"]
        .as_array()
        .map(|ids| ids.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    Ok(format!(
        "signing key: {current}\nverifying:   {}",
        verifying.join(", ")
    ))
}
