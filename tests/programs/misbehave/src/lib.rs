//! A `wasi:http` component that misbehaves on request, for the sandbox-limit tests (paths after
//! the route's first segment, `/misbehave` in its manifest):
//!
//! - `/misbehave/loop`: spins forever; `/misbehave/loop-host`: spins calling a host function.
//! - `/misbehave/alloc`: allocates (and touches) memory without bound.
//! - `/misbehave/recurse`: recurses without bound.
//! - `/misbehave/handles`: creates resource handles without bound.
//! - `/misbehave/sleep/{ms}`: sleeps, then answers.
//! - `/misbehave/big/{mib}`: streams that many MiB.
//! - `POST /misbehave/body`: reads the whole body and answers its length.
//! - `/misbehave/ambient`: tries to read `/etc/passwd`, list `/`, read env vars and args, and
//!   open a socket, and reports what worked.
//! - any path ending in `/count`: how many requests this instance has served, this one
//!   included (state a reused instance carries from one request to the next).
//! - anything else: `ok`.

use std::hint::black_box;
use wasip2::clocks::monotonic_clock;
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};
use wasip2::io::streams::StreamError;

struct Misbehave;

/// Requests this instance has served: 1 on a fresh instance.
static SERVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn respond(out: ResponseOutparam, write: impl FnOnce(&wasip2::io::streams::OutputStream)) {
    let response = OutgoingResponse::new(Fields::new());
    let body = response.body().expect("body is available once");
    ResponseOutparam::set(out, Ok(response));
    {
        let stream = body.write().expect("stream is available once");
        write(&stream);
    }
    let _ = OutgoingBody::finish(body, None);
}

#[expect(unconditional_recursion, reason = "recursing without bound is the point")]
fn recurse(depth: u64) -> u64 {
    let local = black_box([depth; 16]);
    recurse(black_box(depth + 1)) + local[3]
}

impl Guest for Misbehave {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let served = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if path.ends_with("/count") {
            respond(out, |s| s.blocking_write_and_flush(served.to_string().as_bytes()).expect("write"));
            return;
        }
        // Whatever the route's first segment is (tests deploy it under other names too).
        let what = path
            .trim_start_matches('/')
            .split_once('/')
            .map_or("", |(_, rest)| rest);
        match what.split('/').collect::<Vec<_>>().as_slice() {
            ["loop"] => loop {
                black_box(0u64);
            },
            ["loop-host"] => loop {
                black_box(monotonic_clock::now());
            },
            ["alloc"] => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![7u8; 1 << 20]);
                    black_box(&hoard);
                }
            }
            ["recurse"] => {
                black_box(recurse(0));
            }
            ["handles"] => {
                let mut handles = Vec::new();
                loop {
                    handles.push(Fields::new());
                }
            }
            ["sleep", ms] => {
                let ms: u64 = ms.parse().unwrap_or(0);
                monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                respond(out, |s| s.blocking_write_and_flush(b"slept").expect("write"));
            }
            ["big", mib] => {
                let mib: usize = mib.parse().unwrap_or(1);
                // blocking-write-and-flush takes at most 4096 bytes a call.
                let chunk = [b'x'; 4096];
                respond(out, |s| {
                    for _ in 0..mib * 256 {
                        if s.blocking_write_and_flush(&chunk).is_err() {
                            return; // cut off by the host
                        }
                    }
                });
            }
            ["body"] => {
                let body = request.consume().expect("body is available once");
                let input = body.stream().expect("stream is available once");
                let mut total = 0usize;
                loop {
                    match input.blocking_read(64 * 1024) {
                        Ok(chunk) => total += chunk.len(),
                        Err(StreamError::Closed) => break,
                        Err(_) => break,
                    }
                }
                // The host may have answered 413 and closed the response meanwhile.
                respond(out, |s| {
                    let _ = s.blocking_write_and_flush(total.to_string().as_bytes());
                });
            }
            ["ambient"] => {
                // What an attacker would try with plain std: files, env, args, sockets.
                let passwd = std::fs::read_to_string("/etc/passwd").map(|t| t.len());
                let root = std::fs::read_dir("/").map(|d| d.count());
                let env = std::env::vars().count();
                let args = std::env::args().count();
                let socket = std::net::TcpStream::connect("127.0.0.1:80").map(|_| ());
                let report = format!(
                    "passwd {}\nroot {}\nenv {env}\nargs {args}\nsocket {}\n",
                    if passwd.is_ok() { "READ" } else { "denied" },
                    if root.is_ok() { "LISTED" } else { "denied" },
                    if socket.is_ok() { "CONNECTED" } else { "denied" },
                );
                respond(out, |s| s.blocking_write_and_flush(report.as_bytes()).expect("write"));
            }
            _ => respond(out, |s| s.blocking_write_and_flush(b"ok").expect("write")),
        }
    }
}

wasip2::http::proxy::export!(Misbehave);
