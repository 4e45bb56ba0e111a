//! Fuzz target `bridge`: the checks live in oracles/bridge.rs, shared with the regression
//! replay in the Rust test suite (tests/fuzz_regressions.rs).
#![no_main]

#[path = "../oracles/bridge.rs"]
mod oracle;

libfuzzer_sys::fuzz_target!(|data: &[u8]| oracle::run(data));
