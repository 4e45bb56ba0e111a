//! Fuzz target `provider_config`: the checks live in oracles/provider_config.rs, shared with the regression
//! replay in the Rust test suite (tests/fuzz_regressions.rs).
#![no_main]

#[path = "../oracles/provider_config.rs"]
mod oracle;

libfuzzer_sys::fuzz_target!(|data: &[u8]| oracle::run(data));
