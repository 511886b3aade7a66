//! `GET /trap/panic` panics (the instance traps); `GET /trap/ok` answers normally. Used to check
//! that a trap becomes a 500 JSON error for that request only. `GET /trap/headers` answers 202
//! with a header the host forbids (`upgrade`) among allowed ones: the SDK drops only that one.
//! `/trap/echo` (GET and POST) answers what the SDK read of the request on demand: a header and
//! the body, with the body asked for before the header so neither depends on the other.

use plinth_sdk::{Plugin, Request, Response, Router};

struct Trap;

impl Plugin for Trap {
    fn handle(request: Request) -> Response {
        Router::new()
            .get("/trap/panic", |_| panic!("this plugin panics on purpose"))
            .get("/trap/ok", |_| Response::text("still fine"))
            .get("/trap/headers", |_| {
                Response::text("accepted")
                    .with_status(202)
                    .with_header("x-before", "1")
                    .with_header("upgrade", "h2c")
                    .with_header("x-after", "2")
            })
            .get("/trap/echo", echo)
            .post("/trap/echo", echo)
            .handle(request)
    }
}

fn echo(request: Request) -> Response {
    let body = match request.text() {
        Ok(text) => text.to_string(),
        Err(response) => return response,
    };
    Response::json(&serde_json::json!({
        "method": request.method().as_str(),
        "body": body,
        "probe": request.header("x-probe"),
        "headers": request.headers().len(),
    }))
}

plinth_sdk::export!(Trap);
