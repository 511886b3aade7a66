//! A `wasi:http` component that keeps data with the standard `wasi:keyvalue` interfaces only,
//! as a component written for Spin or wasmCloud would: the tests check it runs on Plinth, and
//! the bench uses it for its kv-get and kv-set routes. Paths, after the route's first segment
//! (`/kv-plain` in its manifest), with `%XX` escapes decoded in bucket and key:
//!
//! - `GET /{bucket}/{key}`: the value (404 when absent); `PUT` stores the body; `DELETE` removes.
//! - `POST /{bucket}/{key}/incr/{n}`: atomic increment, answers the new count.
//! - `GET /{bucket}`: every key, one per line, read page by page with `list-keys` cursors.
//! - `PUT /{bucket}?many=N&size=S`: `set-many` of keys `k0..kN` with S-byte values, 1,000 keys
//!   a call (the host's cap per batch call; each call is all or nothing).
//!
//! A keyvalue error answers 400 with the host's message (it starts with a stable code).

wit_bindgen::generate!({
    path: "../../../wit/deps/keyvalue",
    world: "wasi:keyvalue/imports",
    generate_all,
});

use wasi::keyvalue::{atomics, batch, store};
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::StreamError;

struct KvPlain;

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::from_list(&[("content-type".to_string(), b"application/octet-stream".to_vec())])
        .expect("content-type is allowed");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("valid status");
    let out_body = response.body().expect("body is available once");
    ResponseOutparam::set(out, Ok(response));
    {
        let stream = out_body.write().expect("stream is available once");
        for chunk in body.chunks(4096) {
            stream.blocking_write_and_flush(chunk).expect("write");
        }
    }
    OutgoingBody::finish(out_body, None).expect("body finishes");
}

fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let body = request.consume().expect("body is available once");
    let input = body.stream().expect("stream is available once");
    let mut data = Vec::new();
    loop {
        match input.blocking_read(64 * 1024) {
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => panic!("reading the body failed: {e:?}"),
        }
    }
    data
}

/// Decodes `%XX` escapes, so keys may hold `/`, NUL or any other byte of valid UTF-8.
fn percent_decode(part: &str) -> String {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn error_text(e: store::Error) -> Vec<u8> {
    match e {
        store::Error::NoSuchStore => b"no-such-store".to_vec(),
        store::Error::AccessDenied => b"access-denied".to_vec(),
        store::Error::Other(message) => message.into_bytes(),
    }
}

fn handle(request: &IncomingRequest) -> Result<(u16, Vec<u8>), store::Error> {
    let path_and_query = request.path_with_query().unwrap_or_default();
    let (path, query) = path_and_query.split_once('?').unwrap_or((&path_and_query, ""));
    // Everything after the route's first segment, so the component serves under any prefix.
    let rest = path.trim_start_matches('/').split_once('/').map_or("", |(_, r)| r);
    let decoded: Vec<String> = rest.split('/').map(percent_decode).collect();
    let parts: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let method = request.method();
    match (method, parts.as_slice()) {
        (Method::Get, [bucket]) => {
            let bucket = store::open(bucket)?;
            let mut keys = Vec::new();
            let mut cursor = None;
            loop {
                let page = bucket.list_keys(cursor)?;
                keys.extend(page.keys);
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            Ok((200, keys.join("\n").into_bytes()))
        }
        (Method::Put, [bucket]) => {
            let param = |name: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0)
            };
            let bucket = store::open(bucket)?;
            let entries: Vec<(String, Vec<u8>)> = (0..param("many"))
                .map(|i| (format!("k{i}"), vec![b'v'; param("size")]))
                .collect();
            for chunk in entries.chunks(1000) {
                batch::set_many(&bucket, chunk)?;
            }
            Ok((200, format!("stored {}", entries.len()).into_bytes()))
        }
        (Method::Get, [bucket, key]) => {
            let bucket = store::open(bucket)?;
            match bucket.get(key)? {
                Some(value) => Ok((200, value)),
                None => Ok((404, b"no such key".to_vec())),
            }
        }
        (Method::Put, [bucket, key]) => {
            let value = read_body(request);
            store::open(bucket)?.set(key, &value)?;
            Ok((200, b"stored".to_vec()))
        }
        (Method::Delete, [bucket, key]) => {
            store::open(bucket)?.delete(key)?;
            Ok((200, b"deleted".to_vec()))
        }
        (Method::Post, [bucket, key, "incr", n]) => {
            let delta = n.parse::<u64>().unwrap_or(1);
            let count = atomics::increment(&store::open(bucket)?, key, delta)?;
            Ok((200, count.to_string().into_bytes()))
        }
        _ => Ok((404, b"unknown kv-plain route".to_vec())),
    }
}

impl Guest for KvPlain {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        match handle(&request) {
            Ok((status, body)) => respond(out, status, &body),
            Err(e) => respond(out, 400, &error_text(e)),
        }
    }
}

wasip2::http::proxy::export!(KvPlain);
