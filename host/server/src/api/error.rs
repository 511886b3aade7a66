//! The one error type of the HTTP API: every variant maps to a status and a stable `code` in one
//! `match`, and every error a client sees is `{"error": {"code": "...", "message": "..."}}`.

use crate::auth::{AccountError, AuthError, CredentialError};
use crate::registry::DeployError;
use crate::registry::manifest::ManifestError;
use crate::registry::plugin_config::ConfigError;
use crate::router::RouteError;
use crate::runtime::{CompileError, HandleError};
use crate::store::{KvError, StoreError};
use axum::Json;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Everything that can go wrong in a request, as the client will see it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Authentication failed or was missing.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// An account operation failed.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// The JSON request body is missing or malformed.
    #[error("{0}")]
    InvalidBody(String),
    /// A deploy or delete failed.
    #[error(transparent)]
    Deploy(#[from] DeployError),
    /// A plugin request failed.
    #[error(transparent)]
    Plugin(#[from] HandleError),
    /// The deploy upload is malformed (not multipart, a missing or unknown part, ...).
    #[error("{0}")]
    BadUpload(String),
    /// The request body is larger than allowed.
    #[error("the request body is larger than the limit of {limit}")]
    PayloadTooLarge {
        /// The limit, human-readable.
        limit: String,
    },
    /// No route for this path.
    #[error("no route for {method} {path}")]
    NotFound {
        /// The request's method.
        method: Method,
        /// The request's path.
        path: String,
    },
    /// The path exists but not for this method.
    #[error("{method} is not allowed here; allowed: {}", allow_list(.allow))]
    MethodNotAllowed {
        /// The method used.
        method: Method,
        /// The methods that would be accepted.
        allow: Vec<Method>,
    },
    /// The server is still loading its plugins.
    #[error("the server is starting and has not loaded its plugins yet")]
    NotReady,
    /// A config change was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The plugin needs config keys the operator has not set.
    #[error("plugin {plugin:?} is waiting for its operator to set config: {}", .missing.join(", "))]
    ConfigMissing {
        /// The plugin whose config is incomplete.
        plugin: String,
        /// The keys not set.
        missing: Vec<String>,
    },
    /// A key-value operation of the admin API failed.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// A listing cursor that this server did not hand out.
    #[error("invalid cursor {0:?}: pass the `cursor` of the previous page unchanged")]
    InvalidCursor(String),
    /// The request body stalled.
    #[error(
        "the request body stopped arriving for more than {}",
        humantime::format_duration(*.timeout)
    )]
    BodyTimeout {
        /// The allowed pause.
        timeout: std::time::Duration,
    },
    /// Every request slot of the host is taken.
    #[error("the server is at its limit of requests in flight; try again")]
    Overloaded,
    /// Every instance slot of the plugin stayed taken for the queue timeout.
    #[error(
        "plugin {plugin:?} is busy: all {max_concurrency} of its instances are serving; try again"
    )]
    PluginBusy {
        /// The plugin whose instances are all busy.
        plugin: String,
        /// Its instances allowed at once.
        max_concurrency: u32,
    },
    /// No value at the (bucket, key) named.
    #[error("no value is stored at that bucket and key")]
    KvEntryNotFound,
    /// The value is not the one the edit was made against; nothing was written.
    #[error(
        "the value changed since it was read (or, for a create, exists); read it again and \
         retry; nothing was written"
    )]
    KvValueChanged,
    /// A line of a kv import is malformed; nothing was imported.
    #[error("line {line} of the import is invalid ({message}); nothing was imported")]
    InvalidImport {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl From<crate::kv_admin::BadLine> for ApiError {
    fn from(e: crate::kv_admin::BadLine) -> Self {
        ApiError::InvalidImport {
            line: e.line,
            message: e.message,
        }
    }
}

impl From<crate::audit::AuditError> for ApiError {
    fn from(e: crate::audit::AuditError) -> Self {
        match e {
            crate::audit::AuditError::InvalidCursor => ApiError::InvalidCursor(String::new()),
            crate::audit::AuditError::Store(e) => ApiError::Storage(e),
        }
    }
}

fn allow_list(allow: &[Method]) -> String {
    allow
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

impl ApiError {
    /// Status, stable code and optional details for this error.
    fn parts(&self) -> (StatusCode, &'static str, Option<Value>) {
        use StatusCode as S;
        match self {
            ApiError::Auth(AuthError::Missing) => (S::UNAUTHORIZED, "unauthenticated", None),
            ApiError::Auth(AuthError::Invalid) => (S::UNAUTHORIZED, "invalid_token", None),
            ApiError::Auth(AuthError::Forbidden(role)) => (
                S::FORBIDDEN,
                "forbidden",
                Some(json!({ "required_role": role })),
            ),
            ApiError::Account(e) => match e {
                AccountError::Credential(CredentialError::InvalidEmail(_)) => {
                    (S::BAD_REQUEST, "invalid_email", None)
                }
                AccountError::Credential(CredentialError::WeakPassword(_)) => {
                    (S::BAD_REQUEST, "weak_password", None)
                }
                AccountError::EmailTaken => (S::CONFLICT, "email_taken", None),
                AccountError::BadCredentials => (S::UNAUTHORIZED, "invalid_credentials", None),
                AccountError::RegistrationClosed => (S::FORBIDDEN, "registration_closed", None),
                AccountError::InvalidRefreshToken => {
                    (S::UNAUTHORIZED, "invalid_refresh_token", None)
                }
                AccountError::NotAnAccount => (S::FORBIDDEN, "not_an_account", None),
                AccountError::UserNotFound(_) => (S::NOT_FOUND, "user_not_found", None),
                AccountError::ApiKeyNotFound(_) => (S::NOT_FOUND, "api_key_not_found", None),
                AccountError::InviteNotFound(_) => (S::NOT_FOUND, "invite_not_found", None),
                AccountError::InvalidSetupToken => (S::UNAUTHORIZED, "invalid_setup_token", None),
                AccountError::InviteRequired => (S::FORBIDDEN, "invite_required", None),
                AccountError::InvalidInvite => (S::FORBIDDEN, "invalid_invite", None),
                AccountError::InvalidRole(_) => (S::BAD_REQUEST, "invalid_role", None),
                AccountError::InvalidKeyName => (S::BAD_REQUEST, "invalid_body", None),
                AccountError::SelfModification => (S::BAD_REQUEST, "cannot_modify_self", None),
                AccountError::Busy => (S::SERVICE_UNAVAILABLE, "busy", None),
                AccountError::RateLimited { .. } => (S::TOO_MANY_REQUESTS, "rate_limited", None),
                AccountError::AccountThrottled { .. } => {
                    (S::TOO_MANY_REQUESTS, "account_throttled", None)
                }
                AccountError::Store(e) => storage(e),
                AccountError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal_error", None),
            },
            ApiError::InvalidBody(_) => (S::BAD_REQUEST, "invalid_body", None),
            ApiError::Deploy(e) => match e {
                DeployError::InvalidName(_) => (S::BAD_REQUEST, "invalid_name", None),
                DeployError::NameMismatch { .. } => (S::BAD_REQUEST, "name_mismatch", None),
                DeployError::Manifest(ManifestError::Invalid(_)) => {
                    (S::BAD_REQUEST, "invalid_manifest", None)
                }
                DeployError::Manifest(ManifestError::Reserved { .. }) => {
                    (S::BAD_REQUEST, "reserved_route", None)
                }
                DeployError::Compile(CompileError::NotWasm) => (S::BAD_REQUEST, "not_wasm", None),
                DeployError::Compile(CompileError::CoreModule) => {
                    (S::BAD_REQUEST, "not_a_component", None)
                }
                DeployError::Compile(CompileError::Invalid(_)) => {
                    (S::BAD_REQUEST, "invalid_component", None)
                }
                DeployError::Compile(CompileError::UnsupportedImports(imports)) => (
                    S::BAD_REQUEST,
                    "unsupported_imports",
                    Some(json!({ "imports": imports })),
                ),
                DeployError::Compile(CompileError::OverInstanceLimits(_)) => {
                    (S::BAD_REQUEST, "component_over_limits", None)
                }
                DeployError::Compile(CompileError::MissingExport(_)) => {
                    (S::BAD_REQUEST, "missing_export", None)
                }
                DeployError::Route(RouteError::Conflict {
                    pattern,
                    other_pattern,
                    other_owner,
                    ..
                }) => (
                    S::BAD_REQUEST,
                    "route_conflict",
                    Some(json!({
                        "route": pattern,
                        "conflicts_with": { "plugin": other_owner, "route": other_pattern },
                    })),
                ),
                DeployError::Route(RouteError::InvalidPattern { .. })
                | DeployError::Route(RouteError::DuplicateMethod { .. }) => {
                    (S::BAD_REQUEST, "invalid_manifest", None)
                }
                DeployError::Limit(e) => (
                    S::BAD_REQUEST,
                    "limit_over_cap",
                    Some(json!({ "limit": e.name })),
                ),
                DeployError::NotFound(_) => (S::NOT_FOUND, "plugin_not_found", None),
                DeployError::VersionNotFound { .. } => (S::NOT_FOUND, "version_not_found", None),
                DeployError::Store(e) => storage(e),
                DeployError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal_error", None),
            },
            ApiError::Plugin(HandleError::Instantiate(_)) => {
                (S::SERVICE_UNAVAILABLE, "plugin_unavailable", None)
            }
            ApiError::Plugin(HandleError::Trap(_) | HandleError::NoResponse) => {
                (S::INTERNAL_SERVER_ERROR, "plugin_failed", None)
            }
            ApiError::Plugin(HandleError::Timeout(_)) => {
                (S::GATEWAY_TIMEOUT, "deadline_exceeded", None)
            }
            ApiError::Plugin(HandleError::MemoryLimit(_)) => {
                (S::INTERNAL_SERVER_ERROR, "memory_limit_exceeded", None)
            }
            ApiError::Overloaded => (S::SERVICE_UNAVAILABLE, "overloaded", None),
            ApiError::BodyTimeout { .. } => (S::REQUEST_TIMEOUT, "request_timeout", None),
            ApiError::PluginBusy { .. } => (S::SERVICE_UNAVAILABLE, "plugin_busy", None),
            ApiError::BadUpload(_) => (S::BAD_REQUEST, "invalid_upload", None),
            ApiError::PayloadTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "payload_too_large", None),
            ApiError::NotFound { .. } => (S::NOT_FOUND, "not_found", None),
            ApiError::MethodNotAllowed { .. } => {
                (S::METHOD_NOT_ALLOWED, "method_not_allowed", None)
            }
            ApiError::NotReady => (S::SERVICE_UNAVAILABLE, "not_ready", None),
            ApiError::Config(ConfigError::Invalid(_)) => (S::BAD_REQUEST, "invalid_config", None),
            ApiError::Config(ConfigError::NotSet { .. }) => {
                (S::NOT_FOUND, "config_key_not_found", None)
            }
            ApiError::ConfigMissing { missing, .. } => (
                S::SERVICE_UNAVAILABLE,
                "config_missing",
                Some(json!({ "missing": missing })),
            ),
            ApiError::Kv(e) => match e {
                KvError::InvalidKey(_) => (S::BAD_REQUEST, "invalid_key", None),
                KvError::ValueTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "value_too_large", None),
                KvError::QuotaExceeded { .. } => (S::INSUFFICIENT_STORAGE, "quota_exceeded", None),
                KvError::NotACounter(_) | KvError::Overflow(_) => {
                    (S::BAD_REQUEST, "invalid_value", None)
                }
                KvError::PluginRemoved(_) => (S::CONFLICT, "plugin_removed", None),
                KvError::Store(e) => storage(e),
            },
            ApiError::Config(ConfigError::Store(e)) | ApiError::Storage(e) => storage(e),
            ApiError::InvalidCursor(_) => (S::BAD_REQUEST, "invalid_cursor", None),
            ApiError::KvEntryNotFound => (S::NOT_FOUND, "kv_entry_not_found", None),
            ApiError::KvValueChanged => (S::PRECONDITION_FAILED, "kv_value_changed", None),
            ApiError::InvalidImport { line, .. } => (
                S::BAD_REQUEST,
                "invalid_import",
                Some(json!({ "line": line })),
            ),
        }
    }

    /// Whether this is the store being out of reach (its database down or cut off).
    fn store_unavailable(&self) -> bool {
        let store = match self {
            ApiError::Account(AccountError::Store(e))
            | ApiError::Deploy(DeployError::Store(e))
            | ApiError::Kv(KvError::Store(e))
            | ApiError::Config(ConfigError::Store(e))
            | ApiError::Storage(e) => e,
            _ => return false,
        };
        matches!(store, StoreError::Unavailable { .. })
    }

    /// Status, stable code and the message a client sees, for another surface (the
    /// dashboard) to show the same answer as the API; a server error is logged here.
    pub(crate) fn explain(&self) -> (StatusCode, &'static str, String) {
        let (status, code, _) = self.parts();
        if status.is_server_error() {
            tracing::error!(code, error = %self, "dashboard action failed");
        }
        (status, code, self.public_message())
    }

    /// The message a client sees. Internal details (trap backtraces, storage messages) go to
    /// the log, not to the client.
    fn public_message(&self) -> String {
        match self {
            ApiError::Plugin(HandleError::Trap(_) | HandleError::NoResponse) => {
                "the plugin failed while handling this request".into()
            }
            ApiError::Plugin(HandleError::Instantiate(_)) => {
                "the plugin could not be started for this request; try again".into()
            }
            _ if self.store_unavailable() => {
                "the store cannot be reached right now; try again".into()
            }
            ApiError::Deploy(DeployError::Store(_) | DeployError::Internal(_))
            | ApiError::Account(AccountError::Store(_) | AccountError::Internal(_))
            | ApiError::Config(ConfigError::Store(_))
            | ApiError::Kv(KvError::Store(_))
            | ApiError::Storage(_) => {
                "the server could not complete the operation; nothing was changed".into()
            }
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, details) = self.parts();
        // Expected states (starting up, waiting for config) are not failures worth a log line.
        let expected = matches!(self, ApiError::NotReady | ApiError::ConfigMissing { .. });
        if status.is_server_error() && !expected {
            tracing::error!(code, error = %self, "request failed");
        }
        let mut error = json!({ "code": code, "message": self.public_message() });
        if let (Some(details), Some(map)) = (details, error.as_object_mut()) {
            map.insert("details".into(), details);
        }
        let mut response = (status, Json(json!({ "error": error }))).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::MethodNotAllowed { allow, .. } => {
                if let Ok(value) = HeaderValue::from_str(&allow_list(allow)) {
                    headers.insert(header::ALLOW, value);
                }
            }
            // 401 says how to authenticate; a 403 caller is authenticated already.
            ApiError::Auth(AuthError::Missing | AuthError::Invalid) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Account(
                AccountError::RateLimited { retry_after }
                | AccountError::AccountThrottled { retry_after },
            ) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            ApiError::Plugin(HandleError::Instantiate(_))
            | ApiError::NotReady
            | ApiError::Overloaded
            | ApiError::PluginBusy { .. }
            | ApiError::Account(AccountError::Busy) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::ConfigMissing { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            }
            // The host retries the database every second.
            unavailable if unavailable.store_unavailable() => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// A storage failure's status and code: the store out of reach is a 503 a client may retry
/// (another host, or the same one once the database is back); anything else is a 500.
fn storage(error: &StoreError) -> (StatusCode, &'static str, Option<serde_json::Value>) {
    match error {
        StoreError::Unavailable { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", None)
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error", None),
    }
}
