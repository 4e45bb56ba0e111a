//! The compressor's typed config: `CompressorConfig::from_proto_json` on arbitrary JSON (the
//! bridge's `compressor_factory_from_json` and `envoy-qat check` both call it). Oracles: what
//! it accepts validates and builds a working (software) factory whose stream round-trips
//! through C zlib (tests/czlib); `check`'s qatzip check agrees with it.

use envoy_qat::check::envoy::check_qatzip_config;
use envoy_qat::compress::{CompressBackend, CompressorConfig, CompressorFactory, Mode};

/// One fuzz input: panics on a bug.
pub fn run(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let parsed = CompressorConfig::from_proto_json(&v);
    assert_eq!(parsed.is_ok(), check_qatzip_config(&v).is_ok());
    let Ok(mut cfg) = parsed else {
        return;
    };
    cfg.validate()
        .expect("from_proto_json returned an invalid config");
    // Software only here: QATzip is loaded by the QATzip tests, not per fuzz input.
    cfg.backend = CompressBackend::Software;
    let f = CompressorFactory::new(cfg.clone()).expect("validated config refused");
    let mut c = f.create();
    let text = b"fuzz fuzz fuzz fuzz fuzz fuzz".repeat(40);
    let mut buf = text.clone();
    c.compress(&mut buf, Mode::Finish).expect("compress");
    let back = czlib::gunzip(&buf)
        .unwrap_or_else(|e| panic!("C zlib rejects gzip from a fuzzed config ({cfg:?}): {e}"));
    assert_eq!(back, text, "{cfg:?}");
}
