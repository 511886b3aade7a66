//! `GET /whoami` → the caller's id, email and roles; `GET /whoami/staff` → the same, for staff.
//!
//! Teaches: guarding routes in `plinth.toml` (`auth = "user"`, `auth = "role:NAME"`) and reading
//! the caller with `Request::user`. The host checks credentials before this code runs, and the
//! bearer token itself never reaches the plugin.

use plinth_sdk::{Plugin, Request, Response, Router};

struct WhoAmI;

impl Plugin for WhoAmI {
    fn handle(request: Request) -> Response {
        Router::new()
            .get("/whoami", describe)
            .get("/whoami/staff", describe)
            .handle(request)
    }
}

fn describe(request: Request) -> Response {
    // Guarded routes always have a caller; stay defensive anyway.
    let Some(user) = request.user() else {
        return Response::error(401, "unauthenticated", "sign in first");
    };
    Response::json(&serde_json::json!({
        "id": user.id,
        "email": user.email,
        "roles": user.roles,
        "saw_authorization_header": request.header("authorization").is_some(),
    }))
}

plinth_sdk::export!(WhoAmI);
