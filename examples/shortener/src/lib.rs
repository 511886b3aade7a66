//! A URL shortener: `POST /links` with `{"url": "https://...", "slug": "optional"}` creates a
//! short link (201, or 409 when the slug is taken), `GET /s/{slug}` redirects (302) and counts
//! the hit, `GET /links/{slug}` shows the link and its hits.
//!
//! Teaches: compare-and-swap to claim a key exactly once (two requests racing for one slug: one
//! wins, one gets 409), generated ids from an atomic counter, redirects, and reading optional
//! operator config (`base_url`, set with `PUT /admin/plugins/shortener/config`), and writing
//! to the plugin's log (`plinth logs shortener`).
//! Build with `cargo xtask build-guests`; deploy `target/guests/shortener.wasm` with `plinth.toml`.

use plinth_sdk::kv::Bucket;
use plinth_sdk::{Plugin, Request, Response, Router, config, log};
use serde::{Deserialize, Serialize};
use serde_json::json;

struct Shortener;

impl Plugin for Shortener {
    fn handle(request: Request) -> Response {
        Router::new()
            .post("/links", create)
            .get("/links/{slug}", show)
            .get("/s/{slug}", follow)
            .handle(request)
    }
}

#[derive(Serialize, Deserialize)]
struct Link {
    slug: String,
    url: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewLink {
    url: String,
    slug: Option<String>,
}

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// A short slug from a sequence number (base 62).
fn slug_from(mut n: u64) -> String {
    let mut out = Vec::new();
    loop {
        out.push(ALPHABET[(n % 62) as usize]);
        n /= 62;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn valid_slug(slug: &str) -> bool {
    (1..=64).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn short_url(slug: &str) -> String {
    // Optional operator config: without it the link is relative to this server.
    let base = config::get("base_url").ok().flatten().unwrap_or_default();
    format!("{}/s/{slug}", base.trim_end_matches('/'))
}

fn create(request: Request) -> Response {
    let attempt = || -> Result<Response, Response> {
        let new: NewLink = request.json()?;
        if !(new.url.starts_with("https://") || new.url.starts_with("http://")) {
            return Err(Response::error(
                400,
                "invalid_url",
                "`url` must start with http:// or https://",
            ));
        }
        let bucket = Bucket::open("links")?;
        let slug = match new.slug {
            Some(slug) if valid_slug(&slug) => slug,
            Some(_) => {
                return Err(Response::error(
                    400,
                    "invalid_slug",
                    "a slug is 1-64 characters of a-z, A-Z, 0-9, `-` and `_`",
                ));
            }
            // Generated slugs come from a counter; prefixed so they never take a chosen one.
            None => format!("_{}", slug_from(bucket.increment("seq", 1)?)),
        };
        let link = Link {
            slug: slug.clone(),
            url: new.url,
        };
        let bytes = serde_json::to_vec(&link).map_err(|e| Response::error(500, "json", &e.to_string()))?;
        // Claim the slug only if nobody has it: exactly one of several racing requests wins.
        if !bucket.compare_and_swap(&format!("link/{slug}"), None, &bytes)? {
            return Err(Response::error(
                409,
                "slug_taken",
                &format!("the slug {slug:?} is already taken"),
            ));
        }
        log::info(format!("created /s/{slug} -> {}", link.url));
        Ok(Response::json(&json!({
            "slug": slug,
            "url": link.url,
            "short_url": short_url(&slug),
        }))
        .with_status(201))
    };
    attempt().unwrap_or_else(|e| e)
}

fn lookup(slug: &str) -> Result<(Bucket, Link), Response> {
    let bucket = Bucket::open("links")?;
    match bucket.get::<Link>(&format!("link/{slug}"))? {
        Some(link) => Ok((bucket, link)),
        None => Err(Response::error(
            404,
            "link_not_found",
            &format!("no link {slug:?}"),
        )),
    }
}

fn follow(request: Request) -> Response {
    let slug = request.param("slug").unwrap_or_default();
    let attempt = || -> Result<Response, Response> {
        let (bucket, link) = lookup(slug)?;
        bucket.increment(&format!("hits/{slug}"), 1)?;
        Ok(Response::new(302).with_header("location", &link.url))
    };
    attempt().unwrap_or_else(|e| e)
}

fn show(request: Request) -> Response {
    let slug = request.param("slug").unwrap_or_default();
    let attempt = || -> Result<Response, Response> {
        let (bucket, link) = lookup(slug)?;
        let hits = bucket.get::<u64>(&format!("hits/{slug}"))?.unwrap_or(0);
        Ok(Response::json(&json!({
            "slug": link.slug,
            "url": link.url,
            "short_url": short_url(slug),
            "hits": hits,
        })))
    };
    attempt().unwrap_or_else(|e| e)
}

plinth_sdk::export!(Shortener);
