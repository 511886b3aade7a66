//! End-to-end tests: the real `plinth` binary, real components, real HTTP on 127.0.0.1.
//! Guest components come from `cargo xtask build-guests` (run by `cargo xtask test`).
#![expect(
    clippy::unwrap_used,
    reason = "a test that cannot go on should stop with the reason"
)]

mod auth;
mod cli;
mod cluster;
mod config;
mod crash;
mod dashboard;
mod deploy;
mod examples;
mod front_door;
mod harness;
mod hostile;
mod kv;
mod lifecycle;
mod limits;
mod memory_cage;
mod migrate;
mod operations;
mod outbound;
mod plugins;
mod serving;
