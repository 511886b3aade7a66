//! Signing in and out of the dashboard, and the [`SignedIn`] extractor every page takes: the
//! session cookie, its session read through `auth`, and the role the dashboard needs.

use super::layout;
use crate::api::AppState;
use crate::auth::{AccountError, ROLE_ADMIN, ROLE_OPERATOR, WebSession};
use axum::extract::{ConnectInfo, Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use cookie::{Cookie, SameSite};
use maud::html;
use serde::Deserialize;
use std::net::SocketAddr;

use crate::auth::web_cookie::{PLAIN_COOKIE, SECURE_COOKIE};

/// The session cookie's value, if the request carries exactly one under the name this server
/// sets. Under HTTPS only the `__Host-` name counts: another service on this host or a sibling
/// domain can set a plain cookie, but not that one; and two session cookies (one planted) mean
/// no session rather than a guess at which is ours.
fn session_token(headers: &HeaderMap, secure: bool) -> Option<String> {
    let name = if secure { SECURE_COOKIE } else { PLAIN_COOKIE };
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|c| c.name() == name);
    let first = found.next()?;
    found.next().is_none().then(|| first.value().to_string())
}

/// Whether the browser speaks HTTPS to this server: through its TLS, or through a trusted proxy
/// that terminates TLS and says so. The session cookie is then Secure and `__Host-` named.
fn https(parts: &Parts, state: &AppState) -> bool {
    state.secure_cookies
        || parts
            .extensions
            .get::<crate::front_door::ForwardedHttps>()
            .is_some()
}

/// [`https`] for a handler.
pub(super) struct Https(bool);

impl FromRequestParts<AppState> for Https {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Https(https(parts, state)))
    }
}

/// The `Set-Cookie` value holding `token` (`None`: removing the cookie), for a browser speaking
/// HTTPS or not.
fn session_cookie(secure: bool, token: Option<&str>) -> HeaderValue {
    let (name, path) = if secure {
        (SECURE_COOKIE, "/")
    } else {
        (PLAIN_COOKIE, "/_/")
    };
    let mut cookie = Cookie::build((name, token.unwrap_or_default()))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .path(path);
    if token.is_none() {
        cookie = cookie.max_age(cookie::time::Duration::ZERO);
    }
    // A cookie built from these parts is always a valid header value.
    HeaderValue::from_str(&cookie.build().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A browser signed in as an operator or admin, for the pages.
pub(super) struct SignedIn {
    pub(super) session: WebSession,
    token: String,
}

impl SignedIn {
    /// Whether the signed-in caller is an admin (users, keys and signing keys are theirs).
    pub(super) fn is_admin(&self) -> bool {
        self.session.principal.has_role(ROLE_ADMIN)
    }

    /// Who is signed in, as the page header shows it.
    pub(super) fn who(&self) -> String {
        match &self.session.principal {
            crate::auth::Principal::User(user) => user.email.clone(),
            crate::auth::Principal::ApiKey(key) => format!("API key {}", key.name),
            crate::auth::Principal::AdminToken => "admin token".into(),
        }
    }

    /// Whether a form's CSRF token is the session's (compared in constant time).
    pub(super) fn csrf_ok(&self, sent: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(sent.as_bytes().ct_eq(self.session.csrf.as_bytes()))
    }
}

/// The answer to a form without its session's CSRF token.
pub(super) fn csrf_refused() -> Response {
    layout::error_page(
        StatusCode::FORBIDDEN,
        "csrf_failed",
        "This form has expired or did not come from this dashboard. Reload the page and try again.",
    )
}

/// Longest CSRF field read from a multipart form (a token is 43 characters).
const MAX_TOKEN_BYTES: usize = 256;

/// Reads a multipart form's first field, which must be this session's CSRF token (browsers send
/// fields in form order), so nothing larger is read for a form that is not this session's.
pub(super) async fn multipart_csrf(
    signed_in: &SignedIn,
    multipart: &mut axum::extract::Multipart,
) -> Result<(), Response> {
    let field = multipart
        .next_field()
        .await
        .map_err(|e| layout::error_page(e.status(), "invalid_upload", &e.body_text()))?;
    let Some(field) = field.filter(|f| f.name() == Some("_csrf")) else {
        return Err(csrf_refused());
    };
    // Read a chunk at a time, and no further than a token can be long.
    let mut field = field;
    let mut token = Vec::new();
    while let Ok(Some(chunk)) = field.chunk().await {
        token.extend_from_slice(&chunk);
        if token.len() > MAX_TOKEN_BYTES {
            return Err(csrf_refused());
        }
    }
    if !signed_in.csrf_ok(&String::from_utf8_lossy(&token)) {
        return Err(csrf_refused());
    }
    Ok(())
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let secure = https(parts, state);
        let Some(token) = session_token(&parts.headers, secure) else {
            return Err(Redirect::to("/_/sign-in").into_response());
        };
        let session = match state.auth.web_session(&token).await {
            Ok(Some(session)) => session,
            Ok(None) => {
                let mut response = Redirect::to("/_/sign-in").into_response();
                response
                    .headers_mut()
                    .insert(header::SET_COOKIE, session_cookie(secure, None));
                return Err(response);
            }
            Err(e) => {
                tracing::error!(error = %e, "reading a dashboard session failed");
                return Err(layout::error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "The server cannot read its store right now. Try again shortly.",
                ));
            }
        };
        if !session.principal.has_role(ROLE_OPERATOR) {
            return Err(not_allowed());
        }
        Ok(SignedIn { session, token })
    }
}

impl layout::Viewer for SignedIn {
    fn who(&self) -> String {
        SignedIn::who(self)
    }

    fn is_admin(&self) -> bool {
        SignedIn::is_admin(self)
    }

    fn csrf(&self) -> &str {
        &self.session.csrf
    }
}

/// The signed-in browser an extractor found ([`SignedIn`] or [`Admin`]).
pub(super) trait Session {
    fn signed_in(&self) -> &SignedIn;
}

impl Session for SignedIn {
    fn signed_in(&self) -> &SignedIn {
        self
    }
}

impl Session for Admin {
    fn signed_in(&self) -> &SignedIn {
        &self.0
    }
}

/// A form a signed-in browser posted, read only once its `_csrf` field is this session's
/// token: the fields (`T` need not name `_csrf`), the session `S` ([`SignedIn`], or [`Admin`]
/// for an admin's form), and who acts, for the audit log. Every state-changing dashboard form
/// but the multipart ones ([`multipart_csrf`]) is read through this, so none can skip the check.
pub(super) struct Posted<T, S = SignedIn> {
    pub(super) form: T,
    pub(super) by: S,
    pub(super) actor: crate::audit::Actor,
}

impl<T, S> axum::extract::FromRequest<AppState> for Posted<T, S>
where
    T: serde::de::DeserializeOwned,
    S: FromRequestParts<AppState, Rejection = Response> + Session + Send,
{
    type Rejection = Response;

    async fn from_request(
        request: axum::extract::Request,
        state: &AppState,
    ) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let by = S::from_request_parts(&mut parts, state).await?;
        let address = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| *addr);
        // Within the route's body limit, like any extractor.
        let request = axum::extract::Request::from_parts(parts, body);
        let bytes = bytes::Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let token = form_urlencoded::parse(&bytes)
            .find(|(name, _)| name == "_csrf")
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
        if !by.signed_in().csrf_ok(&token) {
            return Err(csrf_refused());
        }
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            layout::error_page(StatusCode::BAD_REQUEST, "invalid_body", &e.to_string())
        })?;
        let actor = by.signed_in().session.principal.actor(address);
        Ok(Posted { form, by, actor })
    }
}

/// A browser signed in as an admin: accounts, invitations, API keys, signing keys and the audit
/// log (which names every account) are theirs; an operator gets 403.
pub(super) struct Admin(pub(super) SignedIn);

impl FromRequestParts<AppState> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let signed_in = SignedIn::from_request_parts(parts, state).await?;
        if !signed_in.is_admin() {
            return Err(layout::error_page(
                StatusCode::FORBIDDEN,
                "forbidden",
                "This page is for admins: it shows accounts and keys.",
            ));
        }
        Ok(Admin(signed_in))
    }
}

/// The page for a caller without the operator or admin role.
fn not_allowed() -> Response {
    layout::error_page(
        StatusCode::FORBIDDEN,
        "forbidden",
        "The dashboard is for operators and admins; this account has neither role.",
    )
}

/// `GET /_/sign-in`.
pub(super) async fn sign_in_page() -> Response {
    sign_in_form(StatusCode::OK, None)
}

/// The sign-in page, with an error from the last attempt if any.
fn sign_in_form(status: StatusCode, error: Option<(&str, String)>) -> Response {
    let body = html! {
        main.sign-in {
            h1 { "Plinth" }
            @if let Some((code, message)) = &error {
                p.error role="alert" { (message) " " code { (code) } }
            }
            form method="post" action="/_/sign-in" {
                h2 { "Sign in with your account" }
                label { "Email" input type="email" name="email" autocomplete="username" required; }
                label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                button type="submit" { "Sign in" }
            }
            form method="post" action="/_/sign-in" {
                h2 { "Or with an API key" }
                label { "API key" input type="password" name="api_key" autocomplete="off" required; }
                button type="submit" { "Sign in with the key" }
            }
        }
    };
    (status, layout::bare("Sign in", body)).into_response()
}

/// The sign-in form's fields: an email and password, or an API key.
#[derive(Deserialize)]
pub(super) struct SignInForm {
    email: Option<String>,
    password: Option<String>,
    api_key: Option<String>,
}

/// `POST /_/sign-in`: checks the credentials (under the same per-address limit and account
/// throttles as `/auth/login`), then starts a session for an operator or admin.
pub(super) async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Https(secure): Https,
    Form(form): Form<SignInForm>,
) -> Response {
    if let Err(e) = state.auth.check_ip(addr.ip()).await {
        return account_error(e);
    }
    let started = match (form.email, form.password, form.api_key) {
        (Some(email), Some(password), None) => state.auth.web_sign_in(&email, password).await,
        (None, None, Some(key)) => match state.auth.web_sign_in_with_key(key.trim()).await {
            Ok(Some(started)) => Ok(started),
            Ok(None) => {
                return sign_in_form(
                    StatusCode::UNAUTHORIZED,
                    Some(("invalid_api_key", "That API key is not valid.".into())),
                );
            }
            Err(e) => Err(AccountError::Store(e)),
        },
        _ => {
            return sign_in_form(
                StatusCode::BAD_REQUEST,
                Some((
                    "invalid_form",
                    "Give an email and password, or an API key.".into(),
                )),
            );
        }
    };
    let (token, session) = match started {
        Ok(started) => started,
        Err(e) => return account_error(e),
    };
    if !session.principal.has_role(ROLE_OPERATOR) {
        // No session for a caller the dashboard would refuse on every page.
        if let Err(e) = state.auth.end_web_session(&token).await {
            tracing::warn!(error = %e, "ending a refused dashboard session failed");
        }
        return not_allowed();
    }
    let mut response = Redirect::to("/_/").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(secure, Some(&token)));
    response
}

/// A failed sign-in, on the sign-in page with the API's code for it.
fn account_error(e: AccountError) -> Response {
    let (status, code) = match &e {
        AccountError::BadCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
        AccountError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        AccountError::AccountThrottled { .. } => {
            (StatusCode::TOO_MANY_REQUESTS, "account_throttled")
        }
        AccountError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        AccountError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        AccountError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        _ => (StatusCode::BAD_REQUEST, "sign_in_failed"),
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "dashboard sign-in failed");
    }
    let message = match &e {
        AccountError::Store(_) => "The server cannot read its store right now.".to_string(),
        AccountError::Internal(_) => "The server could not sign you in; try again.".to_string(),
        other => other.to_string(),
    };
    sign_in_form(status, Some((code, message)))
}

/// A form with no field but its CSRF token ([`Posted`] checks that): sign-out, enable,
/// disable, revoke.
#[derive(Deserialize)]
pub(super) struct NoFields {}

/// A destructive form's field: the box ticked to confirm.
#[derive(Deserialize)]
pub(super) struct ConfirmForm {
    /// `yes` once the box is ticked.
    #[serde(default)]
    pub(super) confirm: String,
}

impl ConfirmForm {
    pub(super) fn confirmed(&self) -> bool {
        self.confirm == "yes"
    }
}

/// The answer to a destructive form sent without its box ticked (the box is `required`, so only
/// a client that is not a browser, or a scripted one, gets here).
pub(super) fn unconfirmed() -> Response {
    layout::error_page(
        StatusCode::BAD_REQUEST,
        "confirmation_required",
        "Tick the box to confirm; nothing was changed.",
    )
}

/// `POST /_/sign-out`: ends the session and removes the cookie.
pub(super) async fn sign_out(
    State(state): State<AppState>,
    Https(secure): Https,
    Posted { by: signed_in, .. }: Posted<NoFields>,
) -> Response {
    if let Err(e) = state.auth.end_web_session(&signed_in.token).await {
        tracing::error!(error = %e, "ending a dashboard session failed");
        return layout::error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "The server cannot reach its store; you are still signed in. Try again shortly.",
        );
    }
    let mut response = Redirect::to("/_/sign-in").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(secure, None));
    response
}
