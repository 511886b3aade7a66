//! Calls a third party: `GET /outbound?url=URL[&follow=1]` sends `GET URL` through
//! `wasi:http/outgoing-handler` and answers `status N` and the body, or `error E` with the
//! error the host gave. With `follow=1` it follows one redirect itself, as a plugin would.

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use wasip2::io::streams::StreamError;

struct Outbound;

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

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix(name)?.strip_prefix('=')?;
        Some(decode(value))
    })
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `(status, location header, body)` or the host's error.
fn get(url: &str) -> Result<(u16, Option<String>, String), ErrorCode> {
    let (scheme, rest) = url.split_once("://").ok_or(ErrorCode::HttpRequestUriInvalid)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let scheme = if scheme == "https" { Scheme::Https } else { Scheme::Http };
    request.set_scheme(Some(&scheme)).map_err(|_| ErrorCode::HttpRequestUriInvalid)?;
    request.set_authority(Some(authority)).map_err(|_| ErrorCode::HttpRequestUriInvalid)?;
    request.set_path_with_query(Some(path)).map_err(|_| ErrorCode::HttpRequestUriInvalid)?;
    let body = request.body().expect("request body");
    OutgoingBody::finish(body, None).expect("finish");
    let pending = outgoing_handler::handle(request, None)?;
    pending.subscribe().block();
    let response = pending
        .get()
        .expect("ready")
        .expect("first get")?;
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let incoming = response.consume().expect("body");
    let stream = incoming.stream().expect("stream");
    let mut data = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => data.extend(chunk),
            Err(StreamError::Closed) => break,
            Err(_) => break,
        }
    }
    Ok((status, location, String::from_utf8_lossy(&data).into_owned()))
}

impl Guest for Outbound {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let query = path.split_once('?').map_or("", |(_, q)| q);
        let Some(url) = query_param(query, "url") else {
            return respond(out, "missing url");
        };
        let follow = query_param(query, "follow").is_some();
        let answer = match get(&url) {
            Ok((status, Some(location), _)) if follow && (300..400).contains(&status) => {
                match get(&location) {
                    Ok((status, _, body)) => format!("status {status}\n{body}"),
                    Err(e) => format!("error {e:?}"),
                }
            }
            Ok((status, _, body)) => format!("status {status}\n{body}"),
            Err(e) => format!("error {e:?}"),
        };
        respond(out, &answer);
    }
}

wasip2::http::proxy::export!(Outbound);
