//! Operator-set config and secrets (`wasi:config/store`). Operators set values with
//! `PUT /admin/plugins/{name}/config`; changes apply to the next request, no redeploy needed.
//! Keys the plugin cannot work without belong in its manifest's `[config]` table, so the host
//! answers 503 `config_missing` until they are set.

use crate::bindings::wasi::config::store;

/// Why config could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::Upstream(m) | store::Error::Io(m) => Error(m),
        }
    }
}

/// The value of `key`, or `None` when the operator has not set it.
pub fn get(key: &str) -> Result<Option<String>, Error> {
    Ok(store::get(key)?)
}

/// Every key and value set for this plugin, sorted by key.
pub fn get_all() -> Result<Vec<(String, String)>, Error> {
    let mut all = store::get_all()?;
    all.sort();
    Ok(all)
}
