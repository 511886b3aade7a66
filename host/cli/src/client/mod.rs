//! The operator CLI's side of the HTTP API: every `plinth` command but `serve` is a few requests
//! to a running server. Errors are one line; the binary prints them and exits non-zero.

mod build;
mod commands;
mod credentials;
mod deploy;
mod dev;
mod output;

pub(crate) use build::{BuildError, plugin_files};
pub(crate) use commands::run;
pub(crate) use credentials::Credentials;

use crate::cli::ClientArgs;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

/// A path segment, escaped.
fn seg(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// A CLI command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// The server could not be reached.
    #[error("cannot reach {server}: {message}")]
    Unreachable {
        /// The server URL.
        server: String,
        /// Why.
        message: String,
    },
    /// No credential was given or stored.
    #[error("not signed in to {0}: run `plinth login`, or set PLINTH_TOKEN")]
    NoToken(String),
    /// The server answered with an error.
    #[error("{message} ({status} {code})")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The error's stable code.
        code: String,
        /// The server's error message (or body).
        message: String,
    },
    /// The plugin could not be found, built or read.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Reading input or the stored credentials failed.
    #[error("{0}")]
    Local(String),
}

/// The server's answer read as the type the server answers with (`plinth_host`'s own).
fn typed<T: serde::de::DeserializeOwned>(answer: &Value) -> Result<T, ClientError> {
    T::deserialize(answer).map_err(|e| {
        ClientError::Local(format!(
            "the server's answer is not what this plinth expects ({e}); is it the same version?"
        ))
    })
}

/// One line: some messages (build output, server text) span several.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A connection to one server with one credential.
pub(crate) struct Api {
    server: String,
    token: Option<String>,
    /// Where the session came from, so an expired one can be refreshed and saved.
    stored: bool,
    http: reqwest::Client,
}

impl Api {
    /// The server and credential `args` name (a stored session when no token is given).
    pub(crate) fn new(args: &ClientArgs) -> Result<Self, ClientError> {
        let server = args.server.trim_end_matches('/').to_string();
        let (token, stored) = match &args.token {
            Some(token) => (Some(token.clone()), false),
            None => (
                Credentials::load()?
                    .session(&server)
                    .map(|s| s.access_token.clone()),
                true,
            ),
        };
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        // A server whose certificate no system CA signed (e.g. self-signed): trust its CA.
        if let Some(path) = std::env::var_os("PLINTH_CA_CERT") {
            let pem = std::fs::read(&path).map_err(|e| {
                ClientError::Local(format!("reading PLINTH_CA_CERT {}: {e}", path.display()))
            })?;
            let ca = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| ClientError::Local(format!("PLINTH_CA_CERT: {e}")))?;
            builder = builder.add_root_certificate(ca);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Local(e.to_string()))?;
        Ok(Self {
            server,
            token,
            stored,
            http,
        })
    }

    /// The server's base URL.
    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    fn unreachable(&self, e: reqwest::Error) -> ClientError {
        // reqwest's own text names the URL; the innermost cause says what happened.
        let mut cause: &dyn std::error::Error = &e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        let message = if e.is_timeout() {
            "no answer in time".to_string()
        } else {
            cause.to_string()
        };
        ClientError::Unreachable {
            server: self.server.clone(),
            message: one_line(&message),
        }
    }

    /// A request with the credential, if any.
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.server));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request built by `build` (called again after a refresh) and reads the JSON
    /// answer; an error status becomes [`ClientError::Refused`].
    pub(crate) async fn send(
        &mut self,
        build: impl Fn(&Self) -> reqwest::RequestBuilder,
    ) -> Result<Value, ClientError> {
        let response = self.send_raw(&build).await?;
        read_json(response).await
    }

    /// Like [`Api::send`] but returns the response as it is (for streams).
    pub(crate) async fn send_raw(
        &mut self,
        build: impl Fn(&Self) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        if self.token.is_none() {
            return Err(ClientError::NoToken(self.server.clone()));
        }
        let response = build(self).send().await.map_err(|e| self.unreachable(e))?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED
            && self.stored
            && self.refresh().await?
        {
            return build(self).send().await.map_err(|e| self.unreachable(e));
        }
        Ok(response)
    }

    /// Trades the stored refresh token for a new session; `false` when there is none or the
    /// server refuses it (the user must log in again).
    async fn refresh(&mut self) -> Result<bool, ClientError> {
        let mut credentials = Credentials::load()?;
        let Some(session) = credentials.session(&self.server).cloned() else {
            return Ok(false);
        };
        let Some(refresh_token) = session.refresh_token else {
            return Ok(false);
        };
        let response = self
            .http
            .post(format!("{}/auth/refresh", self.server))
            .json(&serde_json::json!({ "refresh_token": refresh_token }))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Ok(false);
        }
        let body = read_json(response).await?;
        let stored = credentials::Session::from_login(typed(&body)?);
        self.token = Some(stored.access_token.clone());
        credentials.set(&self.server, stored);
        credentials.save()?;
        Ok(true)
    }

    /// `GET path`.
    pub(crate) async fn get(&mut self, path: &str) -> Result<Value, ClientError> {
        self.send(|api| api.request(Method::GET, path).timeout(TIMEOUT))
            .await
    }

    /// `method path` with a JSON body (none when `Value::Null`).
    pub(crate) async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Value,
    ) -> Result<Value, ClientError> {
        self.send(|api| {
            let request = api.request(method.clone(), path).timeout(TIMEOUT);
            if body.is_null() {
                request
            } else {
                request.json(&body)
            }
        })
        .await
    }
}

/// Bound on every request but deploys (which compile) and log streams (which stay open).
const TIMEOUT: Duration = Duration::from_secs(30);

/// The JSON body of a response, or the server's error as one line.
async fn read_json(response: reqwest::Response) -> Result<Value, ClientError> {
    let status = response.status();
    let bytes = response.bytes().await.unwrap_or_default();
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    if status.is_success() {
        return Ok(body);
    }
    let message = body["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| match &body {
            Value::String(text) => text.clone(),
            Value::Null => status.canonical_reason().unwrap_or("error").to_string(),
            other => other.to_string(),
        });
    Err(ClientError::Refused {
        status: status.as_u16(),
        code: body["error"]["code"]
            .as_str()
            .unwrap_or("http_error")
            .to_string(),
        message: one_line(&message),
    })
}
