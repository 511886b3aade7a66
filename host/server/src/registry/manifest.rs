//! The plugin manifest (`plinth.toml`), parsed into checked types so every error points at the
//! field that caused it.

use super::plugin_config::ConfigKey;
use crate::auth::AuthPolicy;
use crate::router::validate_pattern;
use http::Method;
use serde::Deserialize;
use std::fmt;

/// Path prefixes the host keeps for itself; no plugin route may use them, and no request under
/// them reaches a plugin, whatever its routes' parameters would match.
pub const RESERVED_PREFIXES: &[&str] =
    &["/admin", "/auth", "/_", "/healthz", "/readyz", "/metrics"];
/// Largest manifest, in bytes: a real one is a few hundred.
pub const MAX_MANIFEST_BYTES: usize = 64 << 10;
/// Most `[[routes]]` one manifest may declare: the route table is rebuilt from every plugin's
/// routes on each deploy, so its size (and build time) must stay bounded.
pub const MAX_ROUTES: usize = 256;

/// Why a manifest was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not valid TOML, a missing or unknown key, or a value of the wrong form.
    #[error("invalid manifest: {0}")]
    Invalid(String),
    /// A route uses a path the host reserves.
    #[error(
        "route {path:?} uses the reserved prefix {prefix:?} (reserved: /admin/, /auth/, /_/, /healthz, /readyz, /metrics)"
    )]
    Reserved {
        /// The route.
        path: String,
        /// The reserved prefix it hits.
        prefix: &'static str,
    },
}

/// A plugin name: 1–63 of `[a-z0-9-]`, starting with a letter or digit, not ending in `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PluginName(String);

impl PluginName {
    /// Checks and wraps a name.
    pub fn parse(name: &str) -> Result<Self, String> {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if ok {
            Ok(Self(name.to_string()))
        } else {
            Err(format!(
                "plugin name {name:?} must be 1-63 characters of a-z, 0-9 and `-`, \
                 not starting or ending with `-`"
            ))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PluginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PluginName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A route pattern with valid syntax outside the reserved prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePath(String);

impl RoutePath {
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The reserved prefix a path falls under, if any (`/admin` and everything below it).
pub fn reserved_prefix(path: &str) -> Option<&'static str> {
    RESERVED_PREFIXES.iter().copied().find(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

impl<'de> Deserialize<'de> for RoutePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        validate_pattern(&s).map_err(serde::de::Error::custom)?;
        Ok(Self(s))
    }
}

/// An HTTP method a route accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMethod(pub Method);

impl<'de> Deserialize<'de> for RouteMethod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let method = match s.as_str() {
            "GET" => Method::GET,
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "PATCH" => Method::PATCH,
            "DELETE" => Method::DELETE,
            "HEAD" => Method::HEAD,
            "OPTIONS" => Method::OPTIONS,
            other => {
                return Err(serde::de::Error::custom(format!(
                    "unknown method {other:?} (expected GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS)"
                )));
            }
        };
        Ok(Self(method))
    }
}

fn deserialize_policy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<AuthPolicy, D::Error> {
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

fn default_methods() -> Vec<RouteMethod> {
    vec![RouteMethod(Method::GET)]
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// The path pattern: `/literal`, `{param}` segments, an optional trailing `{*rest}`.
    pub path: RoutePath,
    /// Accepted methods (default `["GET"]`).
    #[serde(default = "default_methods")]
    pub methods: Vec<RouteMethod>,
    /// Who may call: `public` (default), `user` or `role:NAME`.
    #[serde(default, deserialize_with = "deserialize_policy")]
    pub auth: AuthPolicy,
    /// Pass the caller's `Authorization` header to the plugin (default: removed, so credentials
    /// never reach plugin code; a plugin doing its own auth opts in here).
    #[serde(default)]
    pub forward_authorization: bool,
}

/// The `[config]` table: keys the plugin needs the operator to set. Until every one is set, the
/// plugin's routes answer 503 `config_missing`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    /// Required plain values.
    #[serde(default)]
    pub keys: Vec<ConfigKey>,
    /// Required secrets (masked in the admin API even if set without `secret`).
    #[serde(default)]
    pub secrets: Vec<ConfigKey>,
}

impl ConfigSpec {
    /// Every required key.
    pub fn required(&self) -> impl Iterator<Item = &ConfigKey> {
        self.keys.iter().chain(&self.secrets)
    }
}

/// A parsed, checked manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The plugin's unique name.
    pub name: PluginName,
    /// The routes it serves; at least one.
    pub routes: Vec<RouteSpec>,
    /// Config keys the operator must set.
    #[serde(default)]
    pub config: ConfigSpec,
    /// Sandbox limits, lowered or raised (up to the operator's caps) from the server defaults.
    #[serde(default)]
    pub limits: crate::runtime::limits::LimitsSpec,
    /// The third-party origins the plugin may call; none by default.
    #[serde(default)]
    pub outbound: crate::runtime::outgoing_http::OutboundSpec,
}

impl Manifest {
    /// Parses and checks manifest text.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::Invalid(format!(
                "the manifest is {} bytes; at most {MAX_MANIFEST_BYTES} are allowed",
                text.len()
            )));
        }
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| ManifestError::Invalid(e.to_string()))?;
        if manifest.routes.is_empty() {
            return Err(ManifestError::Invalid(
                "a manifest needs at least one [[routes]] entry".into(),
            ));
        }
        if manifest.routes.len() > MAX_ROUTES {
            return Err(ManifestError::Invalid(format!(
                "the manifest declares {} routes; at most {MAX_ROUTES} are allowed",
                manifest.routes.len()
            )));
        }
        for route in &manifest.routes {
            if let Some(prefix) = reserved_prefix(route.path.as_str()) {
                return Err(ManifestError::Reserved {
                    path: route.path.as_str().to_string(),
                    prefix,
                });
            }
            if route.methods.is_empty() {
                return Err(ManifestError::Invalid(format!(
                    "route {:?} lists no methods",
                    route.path.as_str()
                )));
            }
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_manifest() {
        let m = Manifest::parse(
            r#"
name = "todo"
[[routes]]
path = "/todos/{id}"
methods = ["GET", "PUT", "DELETE"]
auth = "user"
[[routes]]
path = "/todos"
"#,
        )
        .unwrap();
        assert_eq!(m.name.as_str(), "todo");
        assert_eq!(m.routes[0].methods.len(), 3);
        assert_eq!(m.routes[0].auth, AuthPolicy::User);
        assert_eq!(m.routes[1].methods, vec![RouteMethod(Method::GET)]);
        assert_eq!(m.routes[1].auth, AuthPolicy::Public);
    }

    #[test]
    fn rejects_bad_manifests_with_the_field_named() {
        let many_routes = format!(
            "name = \"ok\"\n{}",
            (0..=MAX_ROUTES)
                .map(|i| format!("[[routes]]\npath = \"/r{i}\"\n"))
                .collect::<String>()
        );
        let huge = format!(
            "name = \"ok\"\n[[routes]]\npath = \"/x\"\n#{}",
            "x".repeat(MAX_MANIFEST_BYTES)
        );
        let cases: [(&str, &str); 11] = [
            (
                "name = \"Bad_Name\"\n[[routes]]\npath = \"/x\"",
                "plugin name",
            ),
            ("name = \"ok\"\nroutes = []", "at least one"),
            (&many_routes, "declares 257 routes"),
            (&huge, "at most 65536 are allowed"),
            ("name = \"ok\"\n[[routes]]\npath = \"/_/dash\"", "reserved"),
            ("name = \"ok\"\n[[routes]]\npath = \"x\"", "must start with"),
            (
                "name = \"ok\"\n[[routes]]\npath = \"/x\"\nmethods = [\"FETCH\"]",
                "unknown method",
            ),
            (
                "name = \"ok\"\n[[routes]]\npath = \"/x\"\nauth = \"everyone\"",
                "auth must be",
            ),
            (
                "name = \"ok\"\n[[routes]]\npath = \"/x\"\ncolour = 1",
                "unknown field",
            ),
            (
                "name = \"ok\"\n[[routes]]\npath = \"/x\"\nmethods = []",
                "no methods",
            ),
            ("not toml at all", "invalid manifest"),
        ];
        for (text, expected) in cases {
            let err = Manifest::parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn reserved_prefixes_are_refused_but_lookalikes_are_fine() {
        for path in [
            "/admin",
            "/admin/x",
            "/auth/login",
            "/healthz",
            "/metrics/{*rest}",
        ] {
            let text = format!("name = \"ok\"\n[[routes]]\npath = \"{path}\"");
            assert!(
                matches!(Manifest::parse(&text), Err(ManifestError::Reserved { .. })),
                "{path} should be reserved"
            );
        }
        let fine = "name = \"ok\"\n[[routes]]\npath = \"/administrator\"";
        assert!(Manifest::parse(fine).is_ok());
    }
}
