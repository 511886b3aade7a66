//! What every dashboard response and request goes through: security headers on the way out,
//! and on the way in a refusal of any state-changing request another origin sent (the CSRF
//! token of each form is checked by its handler, see `session::SignedIn::check_csrf`).

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Only this origin's files, no inline script or style, no framing, forms posting here only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the dashboard's security headers to every response; pages are never cached.
pub(super) async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let mut set = |name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(header::CONTENT_SECURITY_POLICY, CSP);
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "same-origin");
    set(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Refuses (403) a request that may change something when the browser says it comes from
/// another site (`Sec-Fetch-Site`) or names another origin (`Origin`). Browsers send one or
/// both on every form post; a client sending neither is not a browser another site can drive.
pub(super) async fn same_origin_only(request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) || from_here(&request) {
        next.run(request).await
    } else {
        (
            StatusCode::FORBIDDEN,
            "refused: this request came from another site",
        )
            .into_response()
    }
}

fn from_here(request: &Request) -> bool {
    let headers = request.headers();
    let site_ok = headers
        .get("sec-fetch-site")
        .is_none_or(|site| site == "same-origin" || site == "none");
    let origin_ok = match headers.get(header::ORIGIN) {
        None => true,
        Some(origin) => {
            // HTTP/2 names the host in the request's authority, not in a Host header.
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| request.uri().authority().map(|a| a.as_str()));
            let origin = origin.to_str().ok();
            // `scheme://host[:port]` must name the host the request was sent to.
            match (origin.and_then(|o| o.split_once("://")), host) {
                (Some((_, origin_host)), Some(host)) => origin_host.eq_ignore_ascii_case(host),
                _ => false,
            }
        }
    };
    site_ok && origin_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri("/_/sign-out")
            .header(header::HOST, "plinth.example:8080");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn only_requests_from_this_origin_may_change_things() {
        assert!(from_here(&post(&[])));
        assert!(from_here(&post(&[
            ("origin", "http://plinth.example:8080"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(!from_here(&post(&[("origin", "https://evil.example")])));
        assert!(!from_here(&post(&[(
            "origin",
            "http://plinth.example:9999"
        )])));
        assert!(!from_here(&post(&[("sec-fetch-site", "cross-site")])));
        assert!(!from_here(&post(&[("sec-fetch-site", "same-site")])));
        assert!(!from_here(&post(&[("origin", "null")])));
        // Over HTTP/2 the host is the request's authority.
        let h2 = Request::builder()
            .method(Method::POST)
            .uri("https://plinth.example/_/sign-out")
            .header("origin", "https://plinth.example")
            .body(axum::body::Body::empty())
            .unwrap();
        assert!(from_here(&h2));
    }
}
