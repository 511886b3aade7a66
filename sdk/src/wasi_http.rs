//! The only place that touches wasi:http: turning the incoming request into a [`Request`] and a
//! [`Response`] into the outgoing one.

use crate::bindings::plinth::host::{identity, route};
use crate::bindings::wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method as WasiMethod, OutgoingBody, OutgoingResponse,
    ResponseOutparam,
};
use crate::bindings::wasi::io::streams::StreamError;
use crate::{Method, Request, Response, User};
use std::cell::{Cell, OnceCell, RefCell};

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

/// Which host request a [`Request`] came from, so the parts read on demand are read from
/// that one and no other (a request kept past its handler reads nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Source(u64);

thread_local! {
    /// The request being handled, kept until its handler returns so headers and a GET body can
    /// be read only if the plugin asks. Wasm guests are single-threaded: one at a time.
    static CURRENT: RefCell<Option<(Source, IncomingRequest)>> = const { RefCell::new(None) };
    static SERVED: Cell<u64> = const { Cell::new(0) };
}

/// Runs `handle` on the request read from `incoming`, which stays readable (headers, a GET
/// body) until `handle` returns; a request that cannot be read is answered 400.
pub(crate) fn serve(
    incoming: IncomingRequest,
    handle: impl FnOnce(Request) -> Response,
) -> Response {
    let source = Source(SERVED.replace(SERVED.get() + 1));
    let request = read_request(&incoming, source);
    CURRENT.set(Some((source, incoming)));
    let response = match request {
        Ok(request) => handle(request),
        Err(message) => Response::error(400, "bad_request", &message),
    };
    // Drops the request: nothing reads it after its handler.
    CURRENT.set(None);
    response
}

/// The request's method, path and matched route; the body too, unless the method is GET or
/// HEAD (read on demand: most have none, and reading an empty stream costs several calls).
fn read_request(incoming: &IncomingRequest, source: Source) -> Result<Request, String> {
    let method = method(incoming.method());
    let body = if matches!(method, Method::Get | Method::Head) {
        OnceCell::new()
    } else {
        OnceCell::from(Ok(read_body(incoming)?))
    };
    let matched = route::current();
    Ok(Request {
        method,
        path_with_query: incoming.path_with_query().unwrap_or_else(|| "/".into()),
        headers: OnceCell::new(),
        body,
        route: matched.pattern,
        params: matched.params,
        // Asked of the host only if the plugin calls `Request::user`.
        user: OnceCell::new(),
        source: Some(source),
    })
}

/// Runs `read` on the host request `source` names, if it is the one being handled.
fn with_current<T>(source: Option<Source>, read: impl FnOnce(&IncomingRequest) -> T) -> Option<T> {
    let source = source?;
    CURRENT.with_borrow(|current| match current {
        Some((id, incoming)) if *id == source => Some(read(incoming)),
        _ => None,
    })
}

/// The headers of the request `source` names (none for a hand-built or finished request).
pub(crate) fn headers(source: Option<Source>) -> Vec<(String, Vec<u8>)> {
    with_current(source, |incoming| incoming.headers().entries()).unwrap_or_default()
}

/// The body of the request `source` names, read in full (empty for a hand-built or finished
/// request).
pub(crate) fn body(source: Option<Source>) -> Result<Vec<u8>, String> {
    with_current(source, read_body).unwrap_or(Ok(Vec::new()))
}

/// The authenticated caller of the current request, asked of the host.
pub(crate) fn caller() -> Option<User> {
    identity::caller().map(|u| User {
        id: u.id,
        email: u.email,
        roles: u.roles,
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
///
/// The common case is four host calls before the body: the headers in one `from-list` (with
/// `content-length` added), the response, its body, the outparam; the status is set only when
/// it is not WASI's default 200.
pub(crate) fn send_response(response: Response, out: ResponseOutparam) {
    let Response {
        status,
        mut headers,
        body: bytes,
    } = response;
    if !headers.iter().any(|(n, _)| n == "content-length") {
        headers.push((
            "content-length".to_string(),
            bytes.len().to_string().into_bytes(),
        ));
    }
    let Some(fields) = Fields::from_list(&headers)
        .ok()
        .or_else(|| accepted_fields(headers))
    else {
        // Not even an empty header list was accepted; the host answers 500 for a plugin
        // that sets no response.
        return;
    };
    let outgoing = OutgoingResponse::new(fields);
    if status != 200 && outgoing.set_status_code(status).is_err() {
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
        for chunk in bytes.chunks(WRITE_CHUNK) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                // The client went away; nothing more to do.
                return;
            }
        }
    }
    let _ = OutgoingBody::finish(body, None);
}

/// The fields of `headers` less those the host refuses (forbidden, malformed, or past its size
/// limit), as appending them one by one would give. Only for a rejected `from-list`, so it may
/// take a call per header; it uses no import but `from-list`, keeping components small.
fn accepted_fields(headers: Vec<(String, Vec<u8>)>) -> Option<Fields> {
    let mut kept: Vec<(String, Vec<u8>)> = Vec::with_capacity(headers.len());
    let mut fields = None;
    for header in headers {
        kept.push(header);
        match Fields::from_list(&kept) {
            Ok(accepted) => fields = Some(accepted),
            Err(_) => {
                kept.pop();
            }
        }
    }
    fields.or_else(|| Fields::from_list(&[]).ok())
}
