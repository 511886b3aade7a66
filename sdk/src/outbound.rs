//! Calls to third parties (`wasi:http/outgoing-handler`): payment gateways, CRMs, webhooks.
//! The host lets a plugin reach only the origins its manifest's `[outbound] allow` names;
//! anything else fails with the code `HttpRequestDenied`.
//!
//! ```ignore
//! use plinth_sdk::outbound::{self, OutgoingRequest};
//! use plinth_sdk::Method;
//!
//! let response = outbound::send(
//!     OutgoingRequest::new(Method::Post, "https://api.crm.example/v1/contacts")
//!         .with_header("authorization", &format!("Bearer {key}"))
//!         .with_json(&contact),
//! )?;
//! if response.status() >= 500 { /* retry later */ }
//! ```

use crate::Method;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, Method as WasiMethod, OutgoingBody, OutgoingRequest as WasiRequest,
    RequestOptions, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// `blocking-write-and-flush` accepts at most 4096 bytes per call.
const WRITE_CHUNK: usize = 4096;

/// A request to a third party.
#[derive(Debug, Clone)]
pub struct OutgoingRequest {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

impl OutgoingRequest {
    /// A request without body to `url` (`https://host[:port]/path?query`).
    pub fn new(method: Method, url: &str) -> Self {
        Self {
            method,
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and its content type.
    pub fn with_json<T: Serialize + ?Sized>(self, value: &T) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_default();
        self.with_header("content-type", "application/json")
            .with_body(body)
    }

    /// Gives up waiting for the response after `timeout` (the host's own limits still apply).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// A third party's response, body fully read.
#[derive(Debug, Clone)]
pub struct IncomingResponse {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl IncomingResponse {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of a header, if valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::request::find_header(&self.headers, name)
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body decoded from JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error {
            code: "invalid_json".into(),
            message: e.to_string(),
        })
    }
}

/// Why a call failed: `code` is the `wasi:http` error (`HttpRequestDenied`, `ConnectionRefused`,
/// `ConnectionTimeout`, `DestinationNotFound`, ...) or `invalid_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// A stable code.
    pub code: String,
    /// What happened.
    pub message: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl From<ErrorCode> for Error {
    fn from(e: ErrorCode) -> Self {
        let debug = format!("{e:?}");
        let code = debug
            .trim_start_matches("ErrorCode::")
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or("Internal")
            .to_string();
        Self {
            code,
            message: debug,
        }
    }
}

fn invalid(message: &str) -> Error {
    Error {
        code: "invalid_url".into(),
        message: message.into(),
    }
}

fn wasi_method(method: &Method) -> WasiMethod {
    match method {
        Method::Get => WasiMethod::Get,
        Method::Post => WasiMethod::Post,
        Method::Put => WasiMethod::Put,
        Method::Patch => WasiMethod::Patch,
        Method::Delete => WasiMethod::Delete,
        Method::Head => WasiMethod::Head,
        Method::Options => WasiMethod::Options,
        Method::Other(other) => WasiMethod::Other(other.clone()),
    }
}

/// Sends `request` and reads the whole response. Blocks the plugin (not the host) meanwhile.
pub fn send(request: OutgoingRequest) -> Result<IncomingResponse, Error> {
    let (scheme, rest) = request
        .url
        .split_once("://")
        .ok_or_else(|| invalid("the URL needs a scheme: https://host/path"))?;
    let scheme = match scheme {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => return Err(invalid(&format!("unsupported scheme {other:?}"))),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let headers = Fields::new();
    for (name, value) in &request.headers {
        let _ = headers.append(name, value);
    }
    let outgoing = WasiRequest::new(headers);
    let bad = |()| invalid("the host refused the method, authority or path");
    outgoing
        .set_method(&wasi_method(&request.method))
        .map_err(bad)?;
    outgoing.set_scheme(Some(&scheme)).map_err(bad)?;
    outgoing.set_authority(Some(authority)).map_err(bad)?;
    outgoing.set_path_with_query(Some(path)).map_err(bad)?;
    let body = outgoing.body().map_err(bad)?;
    {
        let stream = body.write().map_err(bad)?;
        for chunk in request.body.chunks(WRITE_CHUNK) {
            stream.blocking_write_and_flush(chunk).map_err(|e| Error {
                code: "write_failed".into(),
                message: format!("{e:?}"),
            })?;
        }
    }
    let options = request.timeout.map(|timeout| {
        let options = RequestOptions::new();
        let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let _ = options.set_first_byte_timeout(Some(nanos));
        let _ = options.set_between_bytes_timeout(Some(nanos));
        options
    });
    let pending = outgoing_handler::handle(outgoing, options)?;
    OutgoingBody::finish(body, None)?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(result)) => result?,
        _ => {
            return Err(Error {
                code: "Internal".into(),
                message: "the response was not ready".into(),
            });
        }
    };
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response.consume().map_err(|()| Error {
        code: "Internal".into(),
        message: "the response body was already taken".into(),
    })?;
    let mut data = Vec::new();
    {
        let stream = incoming.stream().map_err(|()| Error {
            code: "Internal".into(),
            message: "the response body stream is unavailable".into(),
        })?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(Error {
                        code: "read_failed".into(),
                        message: e.to_debug_string(),
                    });
                }
            }
        }
    }
    Ok(IncomingResponse {
        status,
        headers,
        body: data,
    })
}
