//! __NAME__: notes kept in the plugin's key-value store. `GET /__NAME__/notes` lists them,
//! `PUT /__NAME__/notes/{id}` with `{"text": "..."}` saves one, `GET` and `DELETE` on
//! `/__NAME__/notes/{id}` read and remove it.

use plinth_sdk::kv::Bucket;
use plinth_sdk::{Plugin, Request, Response, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Serialize, Deserialize)]
struct Note {
    text: String,
}

struct App;

impl Plugin for App {
    fn handle(request: Request) -> Response {
        Router::new()
            .get("/__NAME__/notes", list)
            .get("/__NAME__/notes/{id}", read)
            .put("/__NAME__/notes/{id}", save)
            .delete("/__NAME__/notes/{id}", remove)
            .handle(request)
    }
}

fn key(request: &Request) -> String {
    format!("note/{}", request.param("id").unwrap_or_default())
}

fn list(_: Request) -> Response {
    let listed = Bucket::open("notes").and_then(|bucket| {
        bucket
            .keys("note/")
            .map(|key| key.map(|k| k.trim_start_matches("note/").to_string()))
            .collect::<Result<Vec<_>, _>>()
    });
    match listed {
        Ok(ids) => Response::json(&json!({ "notes": ids })),
        Err(e) => e.into(),
    }
}

fn read(request: Request) -> Response {
    match Bucket::open("notes").and_then(|b| b.get::<Note>(&key(&request))) {
        Ok(Some(note)) => Response::json(&note),
        Ok(None) => Response::error(404, "not_found", "no such note"),
        Err(e) => e.into(),
    }
}

fn save(request: Request) -> Response {
    let note: Note = match request.json() {
        Ok(note) => note,
        Err(error) => return error,
    };
    match Bucket::open("notes").and_then(|b| b.set(&key(&request), &note)) {
        Ok(()) => Response::json(&note),
        Err(e) => e.into(),
    }
}

fn remove(request: Request) -> Response {
    match Bucket::open("notes").and_then(|b| b.delete(&key(&request))) {
        Ok(()) => Response::new(204),
        Err(e) => e.into(),
    }
}

plinth_sdk::export!(App);
