//! The OpenAPI 3 document of the operator and auth APIs, served at `/admin/openapi.json`. It is
//! generated (utoipa) from the handlers' `#[utoipa::path]` attributes and the types they take
//! and return; the same `routes!` calls register the axum routes, so a route cannot exist
//! without its description.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Plinth's error shape: `{"error": {"code", "message", "details"?}}`.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "only its schema is used: the fields document the JSON"
)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// The error itself.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "only its schema is used: the fields document the JSON"
)]
pub struct ErrorDetail {
    /// Stable code, e.g. `plugin_not_found`.
    code: String,
    /// What went wrong, for people (the `code` is for programs).
    message: String,
    /// Extra facts for some codes (e.g. the route a conflict is with).
    #[schema(value_type = Option<Object>)]
    details: Option<serde_json::Value>,
}

/// Adds the bearer scheme every `/admin/` endpoint uses.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An account's access token, an API key, or the admin token",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document's frame; paths come from the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Plinth operator and auth API",
        description = "Deploy and operate plugins (/admin/), accounts and tokens (/auth/), health and metrics."
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth),
    tags(
        (name = "plugins", description = "Deploy, list, version, roll back and delete plugins"),
        (name = "config", description = "Plugins' config and secrets"),
        (name = "kv", description = "Plugins' key-value data"),
        (name = "logs", description = "Plugins' log lines"),
        (name = "audit", description = "Who changed what"),
        (name = "users", description = "Accounts and invitations (admins)"),
        (name = "keys", description = "API keys and JWT signing keys (admins)"),
        (name = "auth", description = "Registration, login, tokens"),
        (name = "health", description = "Liveness, readiness, metrics"),
    )
)]
pub struct ApiDoc;
