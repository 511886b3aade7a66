//! `GET /trap/panic` panics (the instance traps); `GET /trap/ok` answers normally. Used to check
//! that a trap becomes a 500 JSON error for that request only. `GET /trap/headers` answers 202
//! with a header the host forbids (`upgrade`) among allowed ones: the SDK drops only that one.

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
            .handle(request)
    }
}

plinth_sdk::export!(Trap);
