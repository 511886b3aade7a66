//! The only place that touches wasi:http: turning the incoming request into a [`Request`] and a
//! [`Response`] into the outgoing one.

use crate::bindings::plinth::host::{identity, route};
use crate::bindings::wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method as WasiMethod, OutgoingBody, OutgoingResponse,
    ResponseOutparam,
};
use crate::bindings::wasi::io::streams::StreamError;
use crate::{Method, Request, Response, User};

/// Bytes per read from the body stream.
const READ_CHUNK: u64 = 64 * 1024;
/// `blocking-write-and-flush` accepts at most 4096 bytes per call.
const WRITE_CHUNK: usize = 4096;

fn method(m: WasiMethod) -> Method {
    match m {
        WasiMethod::Get => Method::Get,
        WasiMethod::Post => Method::Post,
        WasiMethod::Put => Method::Put,
        WasiMethod::Patch => Method::Patch,
        WasiMethod::Delete => Method::Delete,
        WasiMethod::Head => Method::Head,
        WasiMethod::Options => Method::Options,
        WasiMethod::Connect => Method::Other("CONNECT".into()),
        WasiMethod::Trace => Method::Other("TRACE".into()),
        WasiMethod::Other(other) => Method::Other(other),
    }
}

/// Reads the whole request, body included, plus the route the host matched.
pub(crate) fn read_request(incoming: IncomingRequest) -> Result<Request, String> {
    let headers = incoming.headers().entries();
    let body = read_body(&incoming)?;
    let matched = route::current();
    Ok(Request {
        method: method(incoming.method()),
        path_with_query: incoming.path_with_query().unwrap_or_else(|| "/".into()),
        headers,
        body,
        route: matched.pattern,
        params: matched.params,
        user: identity::caller().map(|u| User {
            id: u.id,
            email: u.email,
            roles: u.roles,
        }),
    })
}

fn read_body(incoming: &IncomingRequest) -> Result<Vec<u8>, String> {
    let body = incoming
        .consume()
        .map_err(|()| "the request body was already consumed".to_string())?;
    let mut bytes = Vec::new();
    {
        let stream = body
            .stream()
            .map_err(|()| "the request body stream is unavailable".to_string())?;
        loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(format!(
                        "reading the request body failed: {}",
                        e.to_debug_string()
                    ));
                }
            }
        }
    }
    let _trailers = IncomingBody::finish(body);
    Ok(bytes)
}

/// Sends `response` through `out`. Headers the host forbids (hop-by-hop ones) are skipped.
pub(crate) fn send_response(response: Response, out: ResponseOutparam) {
    let fields = Fields::new();
    for (name, value) in &response.headers {
        let _ = fields.append(name, value);
    }
    if !response.headers.iter().any(|(n, _)| n == "content-length") {
        let _ = fields.set(
            "content-length",
            &[response.body.len().to_string().into_bytes()],
        );
    }
    let outgoing = OutgoingResponse::new(fields);
    if outgoing.set_status_code(response.status).is_err() {
        let _ = outgoing.set_status_code(500);
    }
    let Ok(body) = outgoing.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(outgoing));
    {
        let Ok(stream) = body.write() else {
            return;
        };
        for chunk in response.body.chunks(WRITE_CHUNK) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                // The client went away; nothing more to do.
                return;
            }
        }
    }
    let _ = OutgoingBody::finish(body, None);
}
