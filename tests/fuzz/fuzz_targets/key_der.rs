//! Fuzz target `key_der`: the checks live in oracles/key_der.rs, shared with the regression
//! replay in the Rust test suite (tests/fuzz_regressions.rs).
#![no_main]

#[path = "../oracles/key_der.rs"]
mod oracle;

libfuzzer_sys::fuzz_target!(|data: &[u8]| oracle::run(data));
