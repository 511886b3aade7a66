//! Host side of `plinth:host/route`: tells the instance which manifest route matched.

use super::bindings::plinth::host::route::{Host, MatchedRoute};

/// The route matched for the one request an instance serves.
#[derive(Debug, Clone, Default)]
pub struct RouteCtx {
    /// The pattern as written in the manifest.
    pub pattern: String,
    /// Path parameters in pattern order, percent-decoded.
    pub params: Vec<(String, String)>,
}

impl Host for RouteCtx {
    fn current(&mut self) -> MatchedRoute {
        MatchedRoute {
            pattern: self.pattern.clone(),
            params: self.params.clone(),
        }
    }
}
