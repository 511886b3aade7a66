//! The plugin route table: method + path matching with `{param}` and a trailing `{*rest}`
//! (matchit, the matcher axum uses), with conflict detection that names both owners.
//!
//! **Invariant:** a [`RouteTable`] is immutable once built. Deploys build a new one and swap it in
//! whole, so no request ever sees a half-built table.

use http::Method;

/// Why a route cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The pattern is not valid route syntax.
    #[error("invalid route {pattern:?}: {reason}")]
    InvalidPattern {
        /// The pattern as its owner wrote it, e.g. `/hello/{name}`.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two owners claim overlapping routes.
    #[error("route {pattern:?} of {owner} clashes with route {other_pattern:?} of {other_owner}")]
    Conflict {
        /// The route being added.
        pattern: String,
        /// Who adds it.
        owner: String,
        /// The route already there.
        other_pattern: String,
        /// Who owns that one.
        other_owner: String,
    },
    /// The same owner lists one method twice for one pattern.
    #[error("route {pattern:?} lists {method} more than once")]
    DuplicateMethod {
        /// The pattern as its owner wrote it.
        pattern: String,
        /// The repeated method.
        method: Method,
    },
}

/// One pattern and what each of its methods leads to.
#[derive(Debug, Clone)]
struct Route<T> {
    pattern: String,
    owner: String,
    methods: Vec<(Method, T)>,
}

/// The result of looking up a request.
#[derive(Debug)]
pub enum Lookup<'a, T> {
    /// A route matched the path and the method.
    Found {
        /// The pattern as written by its owner.
        pattern: &'a str,
        /// What the route leads to.
        target: &'a T,
        /// Path parameters in pattern order, percent-decoded.
        params: Vec<(String, String)>,
    },
    /// The path matched but not the method; `allow` lists the methods that would.
    MethodNotAllowed {
        /// Methods the path accepts.
        allow: Vec<Method>,
    },
    /// No route matches the path.
    NotFound,
}

/// An immutable route table.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    matcher: matchit::Router<usize>,
    routes: Vec<Route<T>>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self {
            matcher: matchit::Router::new(),
            routes: Vec::new(),
        }
    }
}

/// Checks that a pattern is valid route syntax on its own (no other routes involved).
pub fn validate_pattern(pattern: &str) -> Result<(), RouteError> {
    let invalid = |reason: &str| RouteError::InvalidPattern {
        pattern: pattern.to_string(),
        reason: reason.to_string(),
    };
    if !pattern.starts_with('/') {
        return Err(invalid("a route must start with `/`"));
    }
    if pattern.len() > 1024 {
        return Err(invalid("a route may be at most 1024 characters"));
    }
    if pattern
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
    {
        return Err(invalid(
            "a route may not contain whitespace, control characters, `?` or `#`",
        ));
    }
    matchit::Router::new()
        .insert(pattern, ())
        .map_err(|e| invalid(&e.to_string()))
}

impl<T> RouteTable<T> {
    /// Adds `methods` of `pattern` for `owner`. Patterns of different owners must not overlap.
    pub fn add(
        &mut self,
        owner: &str,
        pattern: &str,
        methods: impl IntoIterator<Item = (Method, T)>,
    ) -> Result<(), RouteError> {
        validate_pattern(pattern)?;
        let index = match self.routes.iter().position(|r| r.pattern == pattern) {
            Some(i) if self.routes[i].owner == owner => i,
            Some(i) => {
                return Err(RouteError::Conflict {
                    pattern: pattern.into(),
                    owner: owner.into(),
                    other_pattern: pattern.into(),
                    other_owner: self.routes[i].owner.clone(),
                });
            }
            None => {
                let index = self.routes.len();
                self.matcher.insert(pattern, index).map_err(|e| match e {
                    matchit::InsertError::Conflict { with } => {
                        let other_owner = self
                            .routes
                            .iter()
                            .find(|r| r.pattern == with)
                            .map(|r| r.owner.clone())
                            .unwrap_or_default();
                        RouteError::Conflict {
                            pattern: pattern.into(),
                            owner: owner.into(),
                            other_pattern: with,
                            other_owner,
                        }
                    }
                    other => RouteError::InvalidPattern {
                        pattern: pattern.into(),
                        reason: other.to_string(),
                    },
                })?;
                self.routes.push(Route {
                    pattern: pattern.into(),
                    owner: owner.into(),
                    methods: Vec::new(),
                });
                index
            }
        };
        let route = &mut self.routes[index];
        for (method, target) in methods {
            if route.methods.iter().any(|(m, _)| *m == method) {
                return Err(RouteError::DuplicateMethod {
                    pattern: pattern.into(),
                    method,
                });
            }
            route.methods.push((method, target));
        }
        Ok(())
    }

    /// Finds the route for a request. `HEAD` falls back to `GET` when the route has no `HEAD`.
    pub fn lookup(&self, method: &Method, path: &str) -> Lookup<'_, T> {
        let Ok(matched) = self.matcher.at(path) else {
            return Lookup::NotFound;
        };
        let Some(route) = self.routes.get(*matched.value) else {
            return Lookup::NotFound;
        };
        let target = route.methods.iter().find(|(m, _)| m == method).or_else(|| {
            (*method == Method::HEAD)
                .then(|| route.methods.iter().find(|(m, _)| *m == Method::GET))
                .flatten()
        });
        match target {
            Some((_, target)) => Lookup::Found {
                pattern: &route.pattern,
                target,
                params: matched
                    .params
                    .iter()
                    .map(|(k, v)| {
                        let decoded = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
                        (k.to_string(), decoded.into_owned())
                    })
                    .collect(),
            },
            None => Lookup::MethodNotAllowed {
                allow: route.methods.iter().map(|(m, _)| m.clone()).collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable<&'static str> {
        let mut t = RouteTable::default();
        t.add("hello", "/hello/{name}", [(Method::GET, "greet")])
            .unwrap();
        t.add(
            "files",
            "/files/{*rest}",
            [(Method::GET, "read"), (Method::PUT, "write")],
        )
        .unwrap();
        t
    }

    #[test]
    fn matches_params_and_catch_all() {
        let t = table();
        match t.lookup(&Method::GET, "/hello/w%C3%B6rld") {
            Lookup::Found {
                pattern,
                target,
                params,
            } => {
                assert_eq!(pattern, "/hello/{name}");
                assert_eq!(*target, "greet");
                assert_eq!(params, vec![("name".to_string(), "wörld".to_string())]);
            }
            other => panic!("unexpected {other:?}"),
        }
        match t.lookup(&Method::PUT, "/files/a/b.txt") {
            Lookup::Found { target, params, .. } => {
                assert_eq!(*target, "write");
                assert_eq!(params[0].1, "a/b.txt");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            t.lookup(&Method::HEAD, "/hello/x"),
            Lookup::Found {
                target: &"greet",
                ..
            }
        ));
        assert!(matches!(t.lookup(&Method::GET, "/nope"), Lookup::NotFound));
        match t.lookup(&Method::DELETE, "/files/x") {
            Lookup::MethodNotAllowed { allow } => assert_eq!(allow, vec![Method::GET, Method::PUT]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn conflicts_name_both_owners() {
        let mut t = table();
        let err = t
            .add("other", "/hello/{who}", [(Method::GET, "x")])
            .unwrap_err();
        assert_eq!(
            err,
            RouteError::Conflict {
                pattern: "/hello/{who}".into(),
                owner: "other".into(),
                other_pattern: "/hello/{name}".into(),
                other_owner: "hello".into(),
            }
        );
        let err = t
            .add("other", "/hello/{name}", [(Method::POST, "x")])
            .unwrap_err();
        assert!(matches!(err, RouteError::Conflict { other_owner, .. } if other_owner == "hello"));
        // The same owner may add methods to its own pattern, but not repeat one.
        t.add("hello", "/hello/{name}", [(Method::POST, "post")])
            .unwrap();
        assert!(matches!(
            t.add("hello", "/hello/{name}", [(Method::GET, "again")]),
            Err(RouteError::DuplicateMethod { .. })
        ));
    }

    #[test]
    fn bad_patterns_are_rejected() {
        for bad in ["hello", "/a/{", "/a/{*rest}/b", "/a b", "/a?x=1", "/{a}{b}"] {
            assert!(validate_pattern(bad).is_err(), "{bad} should be rejected");
        }
        assert!(validate_pattern("/").is_ok());
        assert!(validate_pattern("/v1/items/{id}/tags/{*rest}").is_ok());
    }
}
