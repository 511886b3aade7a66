//! The Plinth server as a library: the plugin host that `plinth serve` runs. See
//! ARCHITECTURE.md for the map of this crate.
#![deny(missing_docs)]

pub mod api;
pub mod apply;
pub mod audit;
pub mod auth;
mod cluster;
mod front_door;
#[doc(hidden)]
pub mod fuzz;
mod kv_admin;
pub mod metrics;
pub mod plugin_logs;
pub mod registry;
mod retention;
pub mod router;
pub mod runtime;
pub mod server;
pub mod settings;
mod side_thread;
pub mod store;
mod ui;
pub mod units;
