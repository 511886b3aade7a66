//! A plain `wasi:http/proxy` component written against the standard WASI bindings only: it
//! runs unchanged under `wasmtime serve`, and the tests check it runs unchanged on Plinth.
//!
//! - `POST .../echo` streams the request body back, chunk by chunk.
//! - `GET .../sleep/{ms}` waits that long (a request that stays in flight).
//! - `GET .../headers` lists the request headers it received, one `name: value` per line.
//! - `GET .../set-cookie` answers a `set-cookie` line for each `x-set-cookie` request header.
//! - any other request answers `plain METHOD PATH` and prints a line on stdout.

use wasip2::clocks::monotonic_clock;
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::StreamError;

struct PlainHttp;

fn respond(out: ResponseOutparam, status: u16, content_type: &[u8], write: impl FnOnce(&wasip2::io::streams::OutputStream)) {
    let headers = Fields::from_list(&[("content-type".to_string(), content_type.to_vec())])
        .expect("content-type is allowed");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("valid status");
    let body = response.body().expect("body is available once");
    ResponseOutparam::set(out, Ok(response));
    {
        let stream = body.write().expect("stream is available once");
        write(&stream);
    }
    OutgoingBody::finish(body, None).expect("body finishes");
}

impl Guest for PlainHttp {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let method = request.method();
        if matches!(method, Method::Post) && path.ends_with("/echo") {
            let body = request.consume().expect("body is available once");
            let input = body.stream().expect("stream is available once");
            respond(out, 200, b"application/octet-stream", |output| loop {
                match input.blocking_read(16 * 1024) {
                    Ok(chunk) => {
                        for piece in chunk.chunks(4096) {
                            output.blocking_write_and_flush(piece).expect("write");
                        }
                    }
                    Err(StreamError::Closed) => break,
                    Err(e) => panic!("reading the body failed: {e:?}"),
                }
            });
            return;
        }
        if let Some(ms) = path.rsplit_once("/sleep/").and_then(|(_, ms)| ms.parse::<u64>().ok()) {
            monotonic_clock::subscribe_duration(ms * 1_000_000).block();
            respond(out, 200, b"text/plain", |s| {
                s.blocking_write_and_flush(format!("slept {ms}").as_bytes()).expect("write");
            });
            return;
        }
        if path.ends_with("/set-cookie") {
            let mut lines = vec![("content-type".to_string(), b"text/plain".to_vec())];
            for value in request.headers().get("x-set-cookie") {
                lines.push(("set-cookie".to_string(), value));
            }
            let headers = Fields::from_list(&lines).expect("set-cookie is allowed");
            let response = OutgoingResponse::new(headers);
            let body = response.body().expect("body is available once");
            ResponseOutparam::set(out, Ok(response));
            OutgoingBody::finish(body, None).expect("body finishes");
            return;
        }
        if path.ends_with("/headers") {
            let lines: String = request
                .headers()
                .entries()
                .into_iter()
                .map(|(name, value)| format!("{name}: {}\n", String::from_utf8_lossy(&value)))
                .collect();
            respond(out, 200, b"text/plain", |s| {
                for chunk in lines.as_bytes().chunks(4096) {
                    s.blocking_write_and_flush(chunk).expect("write");
                }
            });
            return;
        }
        let method = match method {
            Method::Get => "GET".to_string(),
            Method::Post => "POST".to_string(),
            Method::Put => "PUT".to_string(),
            Method::Delete => "DELETE".to_string(),
            other => format!("{other:?}"),
        };
        println!("plain-http served {method} {path}");
        respond(out, 200, b"text/plain", |s| {
            s.blocking_write_and_flush(format!("plain {method} {path}").as_bytes())
                .expect("write");
        });
    }
}

wasip2::http::proxy::export!(PlainHttp);
