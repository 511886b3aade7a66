//! __NAME__: an HTTP plugin. `GET /__NAME__/hello/{who}` greets, `POST /__NAME__/echo` answers
//! the JSON it is sent.

use plinth_sdk::{Plugin, Request, Response, Router, log};
use serde_json::{Value, json};

struct App;

impl Plugin for App {
    fn handle(request: Request) -> Response {
        Router::new()
            .get("/__NAME__/hello/{who}", hello)
            .post("/__NAME__/echo", echo)
            .handle(request)
    }
}

fn hello(request: Request) -> Response {
    let who = request.param("who").unwrap_or("world");
    log::info(format!("greeting {who}"));
    Response::json(&json!({ "message": format!("hello, {who}") }))
}

fn echo(request: Request) -> Response {
    match request.json::<Value>() {
        Ok(body) => Response::json(&json!({ "you_sent": body })),
        Err(error) => error,
    }
}

plinth_sdk::export!(App);
