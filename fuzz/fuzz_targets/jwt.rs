//! libFuzzer target: `plinth_host::fuzz::jwt` (see fuzz/Cargo.toml for how to run it).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plinth_host::fuzz::jwt(data));
