//! Entry points for fuzzing the parsers that untrusted bytes reach first: the manifest, the
//! multipart upload, the bearer header, access tokens (JWTs) and outbound origins. Each takes
//! arbitrary bytes and must neither panic nor hang, whatever they are.
//!
//! `fuzz/` (outside the workspace) runs them under libFuzzer with `cargo fuzz` for long runs;
//! the test below runs each for a moment on every `cargo xtask test`, on seeds and on random
//! mutations of them.

use std::sync::LazyLock;
use std::time::Duration;

/// `plinth.toml` text.
pub fn manifest(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::registry::manifest::Manifest::parse(text);
    }
}

/// An `[outbound] allow` entry, as a string and as TOML.
pub fn origin(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::runtime::outgoing_http::OutboundOrigin::parse(text);
        let _ = toml::from_str::<crate::runtime::outgoing_http::OutboundSpec>(&format!(
            "allow = [{text}]"
        ));
    }
}

/// An `Authorization` header value.
pub fn bearer(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::auth::bearer(Some(text));
    }
}

static TOKENS: LazyLock<Option<crate::auth::tokens::Tokens>> =
    LazyLock::new(|| crate::auth::tokens::Tokens::ephemeral(Duration::from_secs(900)).ok());

/// An access token presented by a client: only a token this host signed may verify.
pub fn jwt(data: &[u8]) {
    let (Ok(text), Some(tokens)) = (std::str::from_utf8(data), TOKENS.as_ref()) else {
        return;
    };
    assert!(
        tokens.verify(text).is_none(),
        "bytes nobody signed verified as a token"
    );
}

/// The body of a deploy upload (`multipart/form-data; boundary=plinth`).
pub fn multipart(data: &[u8]) {
    use axum::extract::FromRequest;
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    runtime.block_on(async {
        let request = http::Request::builder()
            .method("PUT")
            .header("content-type", "multipart/form-data; boundary=plinth")
            .body(axum::body::Body::from(data.to_vec()));
        let Ok(request) = request else { return };
        if let Ok(multipart) = axum::extract::Multipart::from_request(request, &()).await {
            let limit = crate::units::ByteSize(1 << 20);
            let _ = crate::api::admin::read_upload(multipart, limit).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// How long each target runs in the test command (`PLINTH_FUZZ_SMOKE_MS`, default 1500).
    fn budget() -> Duration {
        let ms = std::env::var("PLINTH_FUZZ_SMOKE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1500);
        Duration::from_millis(ms)
    }

    /// A random change to `input`: flipped bytes, a cut, a copy of a slice, or bytes inserted.
    fn mutate(input: &[u8], rng: &mut impl Rng) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..rng.random_range(1..=4) {
            let len = out.len();
            match rng.random_range(0..5) {
                0 if len > 0 => {
                    let i = rng.random_range(0..len);
                    out[i] ^= 1 << rng.random_range(0..8);
                }
                1 if len > 0 => {
                    let i = rng.random_range(0..len);
                    out.truncate(i);
                }
                2 if len > 1 => {
                    let a = rng.random_range(0..len);
                    let b = rng.random_range(a..len);
                    let slice = out[a..b].to_vec();
                    let at = rng.random_range(0..=out.len());
                    out.splice(at..at, slice);
                }
                3 => {
                    let at = rng.random_range(0..=len);
                    let interesting: &[&[u8]] = &[
                        b"\0", b"\xff", b"\"", b"}", b"]", b"\r\n", b"=", b".", b"{*", b"%",
                    ];
                    let pick = interesting[rng.random_range(0..interesting.len())];
                    out.splice(at..at, pick.iter().copied());
                }
                _ => {
                    let at = rng.random_range(0..=len);
                    let byte: u8 = rng.random();
                    out.insert(at, byte);
                }
            }
        }
        out
    }

    /// Runs `target` on `seeds`, then on random mutations of them, for the smoke budget.
    fn run(target: fn(&[u8]), seeds: &[&[u8]]) -> usize {
        let mut rng = rand::rng();
        for seed in seeds {
            target(seed);
        }
        let started = std::time::Instant::now();
        let mut runs = 0;
        let mut input = seeds[0].to_vec();
        while started.elapsed() < budget() {
            let base = if rng.random_bool(0.3) {
                seeds[rng.random_range(0..seeds.len())].to_vec()
            } else {
                input.clone()
            };
            input = mutate(&base, &mut rng);
            target(&input);
            runs += 1;
        }
        runs
    }

    #[test]
    fn the_manifest_parser_survives_arbitrary_input() {
        let seeds: &[&[u8]] = &[
            b"name = \"todo\"\n[[routes]]\npath = \"/todos/{id}\"\nmethods = [\"GET\", \"PUT\"]\nauth = \"user\"\n[limits]\nmemory = \"64MiB\"\ntimeout = \"2s\"\n[outbound]\nallow = [\"https://api.example.com\", { origin = \"http://10.0.0.1:80\", private = true }]\n[config]\nkeys = [\"a\"]\nsecrets = [\"b\"]\n",
            b"name = \"x\"\n[[routes]]\npath = \"/{*rest}\"\n",
        ];
        assert!(run(manifest, seeds) > 0);
    }

    #[test]
    fn the_origin_parser_survives_arbitrary_input() {
        let seeds: &[&[u8]] = &[
            b"https://*.example.com:8443/",
            b"http://[::1]:9000",
            b"{ origin = \"http://localhost:1\", private = true }",
        ];
        assert!(run(origin, seeds) > 0);
    }

    #[test]
    fn bearer_parsing_survives_arbitrary_input() {
        assert!(run(bearer, &[b"Bearer abc.def.ghi", b"bearer  x "]) > 0);
    }

    #[test]
    fn no_unsigned_bytes_verify_as_an_access_token() {
        let seeds: &[&[u8]] = &[
            b"eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiZXhwIjo5OTk5OTk5OTk5fQ.c2ln",
            b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1In0.",
        ];
        assert!(run(jwt, seeds) > 0);
    }

    #[test]
    fn the_upload_reader_survives_arbitrary_multipart_bodies() {
        let seeds: &[&[u8]] = &[
            b"--plinth\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\r\nname = \"x\"\r\n--plinth\r\nContent-Disposition: form-data; name=\"component\"; filename=\"p.wasm\"\r\n\r\n\0asm\r\n--plinth--\r\n",
        ];
        assert!(run(multipart, seeds) > 0);
    }
}
