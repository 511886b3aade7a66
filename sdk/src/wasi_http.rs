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
    let method = method(incoming.method());
    let body = if surely_empty(&method, &headers) {
        Vec::new()
    } else {
        read_body(&incoming)?
    };
    let matched = route::current();
    Ok(Request {
        method,
        path_with_query: incoming.path_with_query().unwrap_or_else(|| "/".into()),
        headers,
        body,
        route: matched.pattern,
        params: matched.params,
        // Asked of the host only if the plugin calls `Request::user`.
        user: std::cell::OnceCell::new(),
    })
}

/// The authenticated caller of the current request, asked of the host.
pub(crate) fn caller() -> Option<User> {
    identity::caller().map(|u| User {
        id: u.id,
        email: u.email,
        roles: u.roles,
    })
}

/// A GET or HEAD without `content-length` or `transfer-encoding` has no body (RFC 9112 §6.3;
/// RFC 9110 gives a GET body no meaning), so the several host calls of reading an empty body
/// stream are skipped on the most common request.
fn surely_empty(method: &Method, headers: &[(String, Vec<u8>)]) -> bool {
    matches!(method, Method::Get | Method::Head)
        && !headers.iter().any(|(name, _)| {
            name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("transfer-encoding")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, value: &str) -> (String, Vec<u8>) {
        (name.to_string(), value.as_bytes().to_vec())
    }

    #[test]
    fn only_a_get_or_head_without_framing_headers_skips_the_body() {
        let plain = [header("host", "example.com")];
        assert!(surely_empty(&Method::Get, &plain));
        assert!(surely_empty(&Method::Head, &plain));
        // A body is announced, or the method carries one: read it.
        assert!(!surely_empty(
            &Method::Get,
            &[header("Content-Length", "3")]
        ));
        assert!(!surely_empty(
            &Method::Get,
            &[header("transfer-encoding", "chunked")]
        ));
        assert!(!surely_empty(&Method::Post, &plain));
        assert!(!surely_empty(&Method::Delete, &plain));
    }
}
