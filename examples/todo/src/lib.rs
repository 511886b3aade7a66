//! A JSON CRUD API of per-user todo lists:
//!
//! - `GET /todos` lists the caller's todos (oldest first), `POST /todos` with
//!   `{"title": "..."}` adds one (201).
//! - `GET /todos/{id}`, `PUT /todos/{id}` with `{"title"?: "...", "done"?: true}`,
//!   `DELETE /todos/{id}` (204).
//!
//! Teaches: keys scoped by the caller's account id (`todo/USER/ID`), so no user reaches
//! another's items; typed JSON values; ids from an atomic counter; listing by key prefix; and
//! updates with compare-and-swap so two concurrent edits never lose each other.
//! The routes are `auth = "user"`: the host checks the token and tells the plugin who calls.
//! Build with `cargo xtask build-guests`; deploy `target/guests/todo.wasm` with `plinth.toml`.

use plinth_sdk::kv::Bucket;
use plinth_sdk::{Plugin, Request, Response, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

struct Todo;

impl Plugin for Todo {
    fn handle(request: Request) -> Response {
        Router::new()
            .get("/todos", |r| run(r, list))
            .post("/todos", |r| run(r, create))
            .get("/todos/{id}", |r| run(r, show))
            .put("/todos/{id}", |r| run(r, update))
            .delete("/todos/{id}", |r| run(r, remove))
            .handle(request)
    }
}

#[derive(Serialize, Deserialize, Clone)]
struct Item {
    id: u64,
    title: String,
    done: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewItem {
    title: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    title: Option<String>,
    done: Option<bool>,
}

/// What a handler sees: the caller's id and the bucket.
struct Ctx {
    user: String,
    bucket: Bucket,
}

impl Ctx {
    fn prefix(&self) -> String {
        format!("todo/{}/", self.user)
    }

    /// Zero-padded ids keep the key order the creation order.
    fn key(&self, id: u64) -> String {
        format!("{}{id:020}", self.prefix())
    }
}

fn run(request: Request, handler: fn(&Ctx, &Request) -> Result<Response, Response>) -> Response {
    // The host enforces `auth = "user"`, so a caller is always present here.
    let Some(user) = request.user() else {
        return Response::error(401, "unauthenticated", "sign in first");
    };
    let ctx = match Bucket::open("todos") {
        Ok(bucket) => Ctx {
            user: user.id.clone(),
            bucket,
        },
        Err(e) => return e.into(),
    };
    handler(&ctx, &request).unwrap_or_else(|e| e)
}

fn check_title(title: &str) -> Result<(), Response> {
    if title.trim().is_empty() || title.len() > 500 {
        return Err(Response::error(
            400,
            "invalid_title",
            "`title` must be 1-500 characters",
        ));
    }
    Ok(())
}

fn item_id(request: &Request) -> Result<u64, Response> {
    request
        .param("id")
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| Response::error(404, "todo_not_found", "no such todo"))
}

fn not_found(id: u64) -> Response {
    Response::error(404, "todo_not_found", &format!("no todo {id}"))
}

fn list(ctx: &Ctx, _: &Request) -> Result<Response, Response> {
    let mut items = Vec::new();
    for key in ctx.bucket.keys(&ctx.prefix()) {
        if let Some(item) = ctx.bucket.get::<Item>(&key?)? {
            items.push(item);
        }
    }
    Ok(Response::json(&json!({ "todos": items })))
}

fn create(ctx: &Ctx, request: &Request) -> Result<Response, Response> {
    let new: NewItem = request.json()?;
    check_title(&new.title)?;
    let id = ctx.bucket.increment(&format!("seq/{}", ctx.user), 1)?;
    let item = Item {
        id,
        title: new.title.trim().to_string(),
        done: false,
    };
    ctx.bucket.set(&ctx.key(id), &item)?;
    Ok(Response::json(&item).with_status(201))
}

fn show(ctx: &Ctx, request: &Request) -> Result<Response, Response> {
    let id = item_id(request)?;
    match ctx.bucket.get::<Item>(&ctx.key(id))? {
        Some(item) => Ok(Response::json(&item)),
        None => Err(not_found(id)),
    }
}

fn update(ctx: &Ctx, request: &Request) -> Result<Response, Response> {
    let id = item_id(request)?;
    let change: Change = request.json()?;
    if let Some(title) = &change.title {
        check_title(title)?;
    }
    // Compare-and-swap underneath: a concurrent edit is re-read and kept, never overwritten.
    let updated = ctx.bucket.update::<Item, _>(&ctx.key(id), 5, |current| {
        let mut item = current?;
        if let Some(title) = &change.title {
            item.title = title.trim().to_string();
        }
        if let Some(done) = change.done {
            item.done = done;
        }
        Some(item)
    })?;
    updated.map(|item| Response::json(&item)).ok_or_else(|| not_found(id))
}

fn remove(ctx: &Ctx, request: &Request) -> Result<Response, Response> {
    let id = item_id(request)?;
    let key = ctx.key(id);
    if !ctx.bucket.exists(&key)? {
        return Err(not_found(id));
    }
    ctx.bucket.delete(&key)?;
    Ok(Response::new(204))
}

plinth_sdk::export!(Todo);
