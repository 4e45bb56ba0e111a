//! Fuzz target `decompress`: the checks live in oracles/decompress.rs, shared with the regression
//! replay in the Rust test suite (tests/fuzz_regressions.rs).
#![no_main]

#[path = "../oracles/decompress.rs"]
mod oracle;

libfuzzer_sys::fuzz_target!(|data: &[u8]| oracle::run(data));
