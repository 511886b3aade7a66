//! A small router over the routes the host already matched.
//!
//! The host matches method and path against the plugin's `plinth.toml` before the plugin runs,
//! so the SDK router only has to pick the handler registered for that same route pattern.

use crate::{Method, Request, Response};

type Handler = Box<dyn Fn(Request) -> Response>;

/// Maps (method, manifest route pattern) to handlers.
#[derive(Default)]
pub struct Router {
    routes: Vec<(Method, String, Handler)>,
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for `method` on `pattern`, written exactly as in `plinth.toml`.
    pub fn route(
        mut self,
        method: Method,
        pattern: &str,
        handler: impl Fn(Request) -> Response + 'static,
    ) -> Self {
        self.routes
            .push((method, pattern.to_string(), Box::new(handler)));
        self
    }

    /// Shorthand for `route(Method::Get, ...)`.
    pub fn get(self, pattern: &str, handler: impl Fn(Request) -> Response + 'static) -> Self {
        self.route(Method::Get, pattern, handler)
    }

    /// Shorthand for `route(Method::Post, ...)`.
    pub fn post(self, pattern: &str, handler: impl Fn(Request) -> Response + 'static) -> Self {
        self.route(Method::Post, pattern, handler)
    }

    /// Shorthand for `route(Method::Put, ...)`.
    pub fn put(self, pattern: &str, handler: impl Fn(Request) -> Response + 'static) -> Self {
        self.route(Method::Put, pattern, handler)
    }

    /// Shorthand for `route(Method::Delete, ...)`.
    pub fn delete(self, pattern: &str, handler: impl Fn(Request) -> Response + 'static) -> Self {
        self.route(Method::Delete, pattern, handler)
    }

    /// Runs the handler for the request's route and method: 405 JSON when the route is known
    /// but not for this method, 404 JSON when the plugin registered nothing for the route.
    pub fn handle(&self, request: Request) -> Response {
        let for_route: Vec<&(Method, String, Handler)> = self
            .routes
            .iter()
            .filter(|(_, pattern, _)| pattern == request.route())
            .collect();
        let wanted = match request.method() {
            // HEAD is answered by the GET handler when there is no HEAD handler.
            Method::Head if !for_route.iter().any(|(m, _, _)| *m == Method::Head) => &Method::Get,
            other => other,
        };
        if let Some((_, _, handler)) = for_route.iter().find(|(m, _, _)| m == wanted) {
            return handler(request);
        }
        if for_route.is_empty() {
            return Response::error(
                404,
                "not_found",
                &format!("this plugin has no handler for {}", request.route()),
            );
        }
        let allow: Vec<&str> = for_route.iter().map(|(m, _, _)| m.as_str()).collect();
        Response::error(
            405,
            "method_not_allowed",
            &format!("{} is not allowed here", request.method()),
        )
        .with_header("allow", &allow.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new()
            .get("/items/{id}", |req| {
                Response::text(format!("item {}", req.param("id").unwrap_or("?")))
            })
            .delete("/items/{id}", |_| Response::new(204))
    }

    #[test]
    fn dispatches_on_route_and_method() {
        let r = router();
        let req =
            Request::new(Method::Get, "/items/7?x=1").with_route("/items/{id}", &[("id", "7")]);
        let resp = r.handle(req);
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.body(), b"item 7");
        let head = Request::new(Method::Head, "/items/7").with_route("/items/{id}", &[("id", "7")]);
        assert_eq!(r.handle(head).status(), 200);
        let del = Request::new(Method::Delete, "/items/7").with_route("/items/{id}", &[]);
        assert_eq!(r.handle(del).status(), 204);
    }

    #[test]
    fn unknown_routes_and_methods_get_json_errors() {
        let r = router();
        let put = Request::new(Method::Put, "/items/7").with_route("/items/{id}", &[]);
        let resp = r.handle(put);
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.header("allow"), Some("GET, DELETE"));
        let other = Request::new(Method::Get, "/x").with_route("/x", &[]);
        assert_eq!(r.handle(other).status(), 404);
    }

    #[test]
    fn request_helpers() {
        let req = Request::new(Method::Post, "/a/b?q=1")
            .with_header("Content-Type", "application/json")
            .with_body(r#"{"n": 3}"#);
        assert_eq!(req.path(), "/a/b");
        assert_eq!(req.query(), Some("q=1"));
        assert_eq!(req.header("content-type"), Some("application/json"));
        let value: serde_json::Value = req.json().unwrap();
        assert_eq!(value["n"], 3);
        let bad = Request::new(Method::Post, "/").with_body("{");
        let err = bad.json::<serde_json::Value>().unwrap_err();
        assert_eq!(err.status(), 400);
    }
}
