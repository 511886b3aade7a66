//! The request a plugin receives.

use serde::de::DeserializeOwned;
use std::cell::OnceCell;
use std::fmt;

/// An HTTP method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
    /// HEAD
    Head,
    /// OPTIONS
    Options,
    /// Any other method, as sent.
    Other(String),
}

impl Method {
    /// The method as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
            Method::Other(m) => m,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first value of header `name` (case-insensitive) in `headers`, if valid UTF-8.
pub(crate) fn find_header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The account's stable id (`admin-token` for the operator's admin token).
    pub id: String,
    /// The account's email (empty for the admin token).
    pub email: String,
    /// The account's roles.
    pub roles: Vec<String>,
}

impl User {
    /// Whether the caller holds `role` (`admin` holds every role).
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role || r == "admin")
    }
}

/// An incoming HTTP request.
///
/// Headers, and the body of a GET or HEAD, are read from the host the first time the plugin
/// asks for them, so a handler that never looks pays no host calls for them. Other methods'
/// bodies are read in full before the handler runs.
#[derive(Debug, Clone)]
pub struct Request {
    pub(crate) method: Method,
    pub(crate) path_with_query: String,
    pub(crate) headers: OnceCell<Vec<(String, Vec<u8>)>>,
    pub(crate) body: OnceCell<Result<Vec<u8>, String>>,
    pub(crate) route: String,
    pub(crate) params: Vec<(String, String)>,
    /// The caller. Left empty only in a request the host built, and then asked of the host on
    /// the first [`Request::user`] call: a plugin that never looks pays no host call, and does
    /// not import `plinth:host/identity`.
    pub(crate) user: OnceCell<Option<User>>,
    /// The host request the parts not read yet come from; `None` when built by hand.
    pub(crate) source: Option<crate::wasi_http::Source>,
}

impl Request {
    /// Builds a request by hand, e.g. to unit-test a handler natively.
    pub fn new(method: Method, path_with_query: &str) -> Self {
        Self {
            method,
            path_with_query: path_with_query.to_string(),
            headers: OnceCell::from(Vec::new()),
            body: OnceCell::from(Ok(Vec::new())),
            route: String::new(),
            params: Vec::new(),
            // Built by hand (a native test): no caller unless `with_user` gives one.
            user: OnceCell::from(None),
            source: None,
        }
    }

    /// Sets the caller (what the host supplies), for tests.
    pub fn with_user(mut self, user: User) -> Self {
        self.user = OnceCell::from(Some(user));
        self
    }

    /// Who is calling: the account the host authenticated, or `None` when anonymous. Routes
    /// with `auth = "user"` or `"role:NAME"` in `plinth.toml` always have a caller.
    pub fn user(&self) -> Option<&User> {
        self.user.get_or_init(crate::wasi_http::caller).as_ref()
    }

    /// Sets the matched route and its parameters (what the host supplies), for tests.
    pub fn with_route(mut self, pattern: &str, params: &[(&str, &str)]) -> Self {
        self.route = pattern.to_string();
        self.params = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }

    /// Adds a header, for tests.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        let source = self.source;
        let mut headers = self
            .headers
            .take()
            .unwrap_or_else(|| crate::wasi_http::headers(source));
        headers.push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        self.headers = OnceCell::from(headers);
        self
    }

    /// Sets the body, for tests.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = OnceCell::from(Ok(body.into()));
        self
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path, without the query string.
    pub fn path(&self) -> &str {
        self.path_with_query
            .split_once('?')
            .map_or(self.path_with_query.as_str(), |(path, _)| path)
    }

    /// The raw query string, if any (without the `?`).
    pub fn query(&self) -> Option<&str> {
        self.path_with_query.split_once('?').map(|(_, q)| q)
    }

    /// The first value of a header (names are case-insensitive), if it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(self.headers(), name)
    }

    /// Every header as (lower-case name, raw value).
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        self.headers
            .get_or_init(|| crate::wasi_http::headers(self.source))
    }

    /// The route pattern the host matched, as written in `plinth.toml` (e.g. `/hello/{name}`).
    pub fn route(&self) -> &str {
        &self.route
    }

    /// A path parameter of the matched route, percent-decoded.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every path parameter, in pattern order.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// The body bytes (empty if reading a GET or HEAD body failed; [`Request::text`] and
    /// [`Request::json`] answer that with a 400).
    pub fn body(&self) -> &[u8] {
        self.read_body().map_or(&[], Vec::as_slice)
    }

    /// The body, or why reading it failed.
    fn read_body(&self) -> Result<&Vec<u8>, crate::Response> {
        self.body
            .get_or_init(|| crate::wasi_http::body(self.source))
            .as_ref()
            .map_err(|message| crate::Response::error(400, "bad_request", message))
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, crate::Response> {
        std::str::from_utf8(self.read_body()?).map_err(|_| {
            crate::Response::error(400, "invalid_body", "the request body is not UTF-8 text")
        })
    }

    /// The body parsed as JSON. The error is a ready 400 response naming the problem.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, crate::Response> {
        serde_json::from_slice(self.read_body()?).map_err(|e| {
            crate::Response::error(400, "invalid_json", &format!("invalid JSON body: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_built_request_has_only_the_caller_it_was_given() {
        // Not built by the host, so `user()` must not ask the host (natively that would panic).
        let anonymous = Request::new(Method::Get, "/");
        assert_eq!(anonymous.user(), None);
        let user = User {
            id: "u1".into(),
            email: "a@example.com".into(),
            roles: vec!["user".into()],
        };
        let signed_in = Request::new(Method::Get, "/").with_user(user.clone());
        assert_eq!(signed_in.user(), Some(&user));
        // A clone keeps the caller already known.
        assert_eq!(signed_in.clone().user(), Some(&user));
    }

    #[test]
    fn a_hand_built_request_has_only_the_headers_and_body_it_was_given() {
        // Not built by the host, so nothing is read from it (natively that would panic).
        let bare = Request::new(Method::Get, "/");
        assert!(bare.headers().is_empty());
        assert!(bare.body().is_empty());
        let request = Request::new(Method::Post, "/items?x=1")
            .with_header("X-Probe", "p-1")
            .with_header("x-other", "2")
            .with_body("{\"a\": 1}");
        assert_eq!(request.header("x-probe"), Some("p-1"));
        assert_eq!(request.headers().len(), 2);
        assert_eq!(request.body(), b"{\"a\": 1}");
        let value: serde_json::Value = request.json().ok().unwrap_or_default();
        assert_eq!(value["a"], 1);
        assert_eq!(request.clone().header("x-other"), Some("2"));
    }

    #[test]
    fn a_body_that_could_not_be_read_is_empty_and_a_400_for_text_and_json() {
        let mut request = Request::new(Method::Get, "/");
        request.body = OnceCell::from(Err("reading the request body failed: reset".into()));
        assert!(request.body().is_empty());
        let Err(response) = request.text() else {
            panic!("text() read a body that failed");
        };
        assert_eq!(response.status, 400);
        assert!(String::from_utf8_lossy(&response.body).contains("reset"));
        assert!(request.json::<serde_json::Value>().is_err());
    }
}
