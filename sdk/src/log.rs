//! The plugin's log (`plinth:host/log`): lines the operator reads with `plinth logs NAME`
//! (add `-f` to follow), each tagged with the request's id. Plain `println!` and `eprintln!`
//! reach the same log as `info` and `warn` lines; these functions add a level.
//!
//! ```ignore
//! plinth_sdk::log::info(format!("order {id} paid"));
//! ```

use crate::bindings::plinth::host::log::{Level, write};

/// Logs a very detailed line.
pub fn trace(message: impl AsRef<str>) {
    write(Level::Trace, message.as_ref());
}

/// Logs a line for developers.
pub fn debug(message: impl AsRef<str>) {
    write(Level::Debug, message.as_ref());
}

/// Logs a line about normal operation.
pub fn info(message: impl AsRef<str>) {
    write(Level::Info, message.as_ref());
}

/// Logs something worth a look.
pub fn warn(message: impl AsRef<str>) {
    write(Level::Warn, message.as_ref());
}

/// Logs a failure.
pub fn error(message: impl AsRef<str>) {
    write(Level::Error, message.as_ref());
}
