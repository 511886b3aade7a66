//! The dashboard's session cookie: its names, and keeping it from plugins.
//!
//! Plugins share the host's origin, and under HTTPS the cookie is `__Host-` prefixed, which
//! forces `Path=/`: the browser sends it with every request, plugin routes included. It is a
//! credential, so the host takes it out of every request it hands a plugin, and drops any
//! `Set-Cookie` a plugin answers that names it (a plugin must not plant or clear a session).
//! Other cookies pass untouched.

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};

/// The cookie's name where the browser speaks HTTPS: the `__Host-` prefix makes the browser
/// refuse it unless it is Secure, for this host only, and for every path.
pub(crate) const SECURE_COOKIE: &str = "__Host-plinth_session";
/// The cookie's name over plain HTTP (a browser drops a Secure cookie there), scoped to the
/// dashboard's paths.
pub(crate) const PLAIN_COOKIE: &str = "plinth_session";

/// Whether a cookie named `name` is the session's under either name. Browsers compare the
/// `__Host-` prefix without regard to case, so this does too.
fn is_session(name: &str) -> bool {
    let name = name.trim();
    name.eq_ignore_ascii_case(SECURE_COOKIE) || name.eq_ignore_ascii_case(PLAIN_COOKIE)
}

/// Whether any line of `name` may mention the session cookie (a cheap test first: most plugin
/// requests carry no cookie, or none of ours).
fn mentions_session(headers: &HeaderMap, name: &http::HeaderName) -> bool {
    headers.get_all(name).iter().any(|line| {
        line.as_bytes()
            .windows(PLAIN_COOKIE.len())
            .any(|w| w.eq_ignore_ascii_case(PLAIN_COOKIE.as_bytes()))
    })
}

/// Takes the session cookie out of the `Cookie` lines of a request going to a plugin, keeping
/// every other cookie. A line that is not text and names it is dropped whole.
pub(crate) fn strip_from_request(headers: &mut HeaderMap) {
    if !mentions_session(headers, &COOKIE) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|line| {
            let others: Vec<&str> = line
                .to_str()
                .ok()?
                .split(';')
                .map(str::trim)
                .filter(|pair| !pair.is_empty())
                .filter(|pair| !is_session(pair.split('=').next().unwrap_or_default()))
                .collect();
            if others.is_empty() {
                return None;
            }
            HeaderValue::from_str(&others.join("; ")).ok()
        })
        .collect();
    headers.remove(COOKIE);
    for line in kept {
        headers.append(COOKIE, line);
    }
}

/// Drops every `Set-Cookie` of a plugin's response that names the session cookie.
pub(crate) fn strip_from_response(headers: &mut HeaderMap) {
    if !mentions_session(headers, &SET_COOKIE) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter(|line| {
            line.to_str().is_ok_and(|text| {
                let name = text.split(['=', ';']).next().unwrap_or_default();
                !is_session(name)
            })
        })
        .cloned()
        .collect();
    headers.remove(SET_COOKIE);
    for line in kept {
        headers.append(SET_COOKIE, line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(headers: &HeaderMap, name: &http::HeaderName) -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_request_keeps_every_cookie_but_the_session() {
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            "a=1; __Host-plinth_session=secret; b=2".parse().unwrap(),
        );
        headers.append(COOKIE, "plinth_session=secret".parse().unwrap());
        headers.append(
            COOKIE,
            "__HOST-Plinth_Session=secret;theme=dark".parse().unwrap(),
        );
        headers.append(
            COOKIE,
            HeaderValue::from_bytes(b"\xffplinth_session=x").unwrap(),
        );
        headers.append(COOKIE, "my_plinth_session=kept".parse().unwrap());
        strip_from_request(&mut headers);
        assert_eq!(
            lines(&headers, &COOKIE),
            ["a=1; b=2", "theme=dark", "my_plinth_session=kept"]
        );
        let mut untouched = HeaderMap::new();
        untouched.append(COOKIE, "a=1".parse().unwrap());
        strip_from_request(&mut untouched);
        assert_eq!(lines(&untouched, &COOKIE), ["a=1"]);
    }

    #[test]
    fn a_plugin_cannot_set_or_clear_the_session() {
        let mut headers = HeaderMap::new();
        headers.append(
            SET_COOKIE,
            "__Host-plinth_session=planted; Path=/; Secure"
                .parse()
                .unwrap(),
        );
        headers.append(
            SET_COOKIE,
            "plinth_session=; Max-Age=0; Path=/_/".parse().unwrap(),
        );
        headers.append(SET_COOKIE, " Plinth_Session =x".parse().unwrap());
        headers.append(SET_COOKIE, "cart=3; Path=/".parse().unwrap());
        strip_from_response(&mut headers);
        assert_eq!(lines(&headers, &SET_COOKIE), ["cart=3; Path=/"]);
    }
}
