//! A `wasi:http` component that tries to exhaust the host through what it imports, for the
//! host-resource tests. Each route answers `ok ...` or `error <the host's message>`:
//!
//! - `/hostile/get-many/{n}`: stores one 1 MiB value, then asks `get-many` for that key `n`
//!   times (the host would copy the value once per key).
//! - `/hostile/set-many/{n}`: `set-many` of `n` one-byte entries; `/hostile/delete-many/{n}`
//!   likewise.
//! - `/hostile/aliased-set-many/{n}`: `set-many` of `n` entries that all point at the same
//!   1 MiB of guest memory, built by hand at the canonical ABI: 1 MiB for the guest, `n` MiB
//!   for a host that lifted every entry.
//! - `/hostile/log/{n}`: `n` log lines that each try to forge a second server log line, then
//!   one line of 1 MiB.
//! - `/hostile/outbound/{n}?url=URL`: starts `n` outbound requests without waiting for any and
//!   answers how many the host accepted and refused.
//! - `/hostile/slow-write/{ms}`: sleeps, then writes a key (a write racing an operator's purge).
//! - `/hostile/markup`: logs a line of HTML that would run script if a page showed it as markup,
//!   and stores the same HTML under the key `markup` (the dashboard's escaping tests).

wit_bindgen::generate!({
    path: "../../../wit",
    world: "plinth:host/host-imports",
    generate_all,
});

use plinth::host::log::{self, Level};
use wasi::keyvalue::{batch, store};
use wasip2::clocks::monotonic_clock;
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::outgoing_handler;
use wasip2::io::poll;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

struct Hostile;

fn respond(out: ResponseOutparam, text: &str) {
    let response = OutgoingResponse::new(Fields::new());
    let body = response.body().expect("body");
    ResponseOutparam::set(out, Ok(response));
    {
        let stream = body.write().expect("stream");
        for chunk in text.as_bytes().chunks(4096) {
            let _ = stream.blocking_write_and_flush(chunk);
        }
    }
    let _ = OutgoingBody::finish(body, None);
}

fn kv_error(e: store::Error) -> String {
    match e {
        store::Error::Other(message) => format!("error {message}"),
        other => format!("error {other:?}"),
    }
}

fn bucket() -> Result<store::Bucket, String> {
    store::open("hostile").map_err(kv_error)
}

fn get_many(n: usize) -> Result<String, String> {
    let bucket = bucket()?;
    bucket.set("big", &vec![b'x'; 1 << 20]).map_err(kv_error)?;
    let keys = vec!["big".to_string(); n];
    let values = batch::get_many(&bucket, &keys).map_err(kv_error)?;
    Ok(format!("ok {}", values.iter().flatten().count()))
}

fn set_many(n: usize) -> Result<String, String> {
    let bucket = bucket()?;
    let entries: Vec<(String, Vec<u8>)> = (0..n).map(|i| (format!("k{i}"), vec![1])).collect();
    batch::set_many(&bucket, &entries).map_err(kv_error)?;
    Ok(format!("ok {n}"))
}

#[link(wasm_import_module = "wasi:keyvalue/batch@0.2.0-draft")]
unsafe extern "C" {
    /// `set-many` as the component model lowers it: the bucket handle, the list as (pointer,
    /// length), and where to write the result.
    #[link_name = "set-many"]
    fn raw_set_many(bucket: i32, entries: *const u32, count: usize, result: *mut u32);
}

fn aliased_set_many(n: usize) -> Result<String, String> {
    let bucket = bucket()?;
    let value = vec![b'v'; 1 << 20];
    let key = b"aliased";
    // Each entry is a (string, list<u8>) tuple: four 32-bit words, key then value, and every
    // entry names the same key bytes and the same value bytes.
    let mut entries = Vec::with_capacity(4 * n);
    for _ in 0..n {
        entries.extend([
            key.as_ptr() as u32,
            key.len() as u32,
            value.as_ptr() as u32,
            value.len() as u32,
        ]);
    }
    // Words, so the area has the 4-byte alignment the canonical ABI checks.
    let mut result = [0u32; 4];
    // SAFETY: the list and everything it points at live until the call returns; the result
    // area is large enough for `result<_, error>` and aligned for it.
    unsafe {
        raw_set_many(
            bucket.handle() as i32,
            entries.as_ptr(),
            n,
            result.as_mut_ptr(),
        )
    };
    // The discriminant is the area's first byte (little-endian).
    Ok(match result[0] & 0xff {
        0 => format!("ok {n}"),
        _ => "error set-many refused".to_string(),
    })
}

fn delete_many(n: usize) -> Result<String, String> {
    let bucket = bucket()?;
    let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    batch::delete_many(&bucket, &keys).map_err(kv_error)?;
    Ok(format!("ok {n}"))
}

fn slow_write(ms: usize) -> Result<String, String> {
    monotonic_clock::subscribe_duration(ms as u64 * 1_000_000).block();
    bucket()?.set("late", b"written after the wait").map_err(kv_error)?;
    Ok("ok written".into())
}

/// HTML that runs script wherever it is taken as markup.
const MARKUP: &str = "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=1</script>";

fn markup() -> Result<String, String> {
    log::write(Level::Warn, MARKUP);
    bucket()?.set("markup", MARKUP.as_bytes()).map_err(kv_error)?;
    Ok("ok markup".into())
}

fn flood_log(n: usize) -> String {
    for i in 0..n {
        log::write(
            Level::Info,
            &format!("line {i}\n2026-12-03T00:00:00.000000Z ERROR plinth: FORGED by a plugin"),
        );
    }
    log::write(Level::Info, &"y".repeat(1 << 20));
    format!("ok {n}")
}

fn fire_outbound(n: usize, url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "error no scheme".into();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut pending = Vec::new();
    let mut refused = 0;
    for _ in 0..n {
        let request = OutgoingRequest::new(Fields::new());
        let _ = request.set_scheme(Some(&if scheme == "https" { Scheme::Https } else { Scheme::Http }));
        let _ = request.set_authority(Some(authority));
        let _ = request.set_path_with_query(Some(if path.is_empty() { "/" } else { path }));
        match outgoing_handler::handle(request, None) {
            Ok(future) => pending.push(future),
            Err(ErrorCode::ConnectionLimitReached) => refused += 1,
            Err(e) => return format!("error {e:?}"),
        }
    }
    // A refused call's future is ready at once; an accepted one waits on the silent server.
    let mut accepted = 0;
    for future in &pending {
        let ready = future.subscribe();
        let timer = monotonic_clock::subscribe_duration(50_000_000);
        poll::poll(&[&ready, &timer]);
        match future.get() {
            Some(Ok(Err(ErrorCode::ConnectionLimitReached))) => refused += 1,
            _ => accepted += 1,
        }
    }
    format!("ok accepted {accepted} refused {refused}")
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix(name)?.strip_prefix('=')?;
        Some(value.replace("%3A", ":").replace("%2F", "/"))
    })
}

impl Guest for Hostile {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let full = request.path_with_query().unwrap_or_default();
        let (path, query) = full.split_once('?').unwrap_or((&full, ""));
        let parts: Vec<&str> = path.trim_start_matches("/hostile/").split('/').collect();
        let n = |i: usize| parts.get(i).and_then(|p| p.parse::<usize>().ok()).unwrap_or(1);
        let answer = match parts.first().copied() {
            Some("get-many") => get_many(n(1)).unwrap_or_else(|e| e),
            Some("set-many") => set_many(n(1)).unwrap_or_else(|e| e),
            Some("delete-many") => delete_many(n(1)).unwrap_or_else(|e| e),
            Some("aliased-set-many") => aliased_set_many(n(1)).unwrap_or_else(|e| e),
            Some("log") => flood_log(n(1)),
            Some("slow-write") => slow_write(n(1)).unwrap_or_else(|e| e),
            Some("markup") => markup().unwrap_or_else(|e| e),
            Some("outbound") => match query_param(query, "url") {
                Some(url) => fire_outbound(n(1), &url),
                None => "error no url".into(),
            },
            _ => "ok".into(),
        };
        respond(out, &answer);
    }
}

wasip2::http::proxy::export!(Hostile);
