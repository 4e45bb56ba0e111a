//! Fuzz target `key_pem`: the checks live in oracles/key_pem.rs, shared with the regression
//! replay in the Rust test suite (tests/fuzz_regressions.rs).
#![no_main]

#[path = "../oracles/key_pem.rs"]
mod oracle;

libfuzzer_sys::fuzz_target!(|data: &[u8]| oracle::run(data));
