//! `GET /trap/panic` panics (the instance traps); `GET /trap/ok` answers normally. Used to check
//! that a trap becomes a 500 JSON error for that request only.

use plinth_sdk::{Plugin, Request, Response, Router};

struct Trap;

impl Plugin for Trap {
    fn handle(request: Request) -> Response {
        Router::new()
            .get("/trap/panic", |_| panic!("this plugin panics on purpose"))
            .get("/trap/ok", |_| Response::text("still fine"))
            .handle(request)
    }
}

plinth_sdk::export!(Trap);
