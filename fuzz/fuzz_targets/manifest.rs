//! libFuzzer target: `plinth::fuzz::manifest` (see fuzz/Cargo.toml for how to run it).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plinth::fuzz::manifest(data));
