//! Replays every input the fuzzers once crashed on (tests/fuzz/regressions/<target>/) through
//! the same checks the fuzz targets run (tests/fuzz/oracles/<target>.rs), so each fixed crash
//! stays fixed in the normal `cargo test` suite without the fuzzing toolchain.
//!
//! Add a case: minimise the crash (`cargo fuzz tmin`, or the target binary with
//! `-minimize_crash=1`), copy it into tests/fuzz/regressions/<target>/ with a name that says
//! what it hit, fix the library. ci/test-fuzz.sh replays the same files with the fuzz build.

use std::path::Path;

#[path = "fuzz/oracles/bridge.rs"]
mod bridge;
#[path = "fuzz/oracles/compressor_config.rs"]
mod compressor_config;
#[path = "fuzz/oracles/decompress.rs"]
mod decompress;
#[path = "fuzz/oracles/key_der.rs"]
mod key_der;
#[path = "fuzz/oracles/key_pem.rs"]
mod key_pem;
#[path = "fuzz/oracles/provider_config.rs"]
mod provider_config;

/// Runs `check` on every file of tests/fuzz/regressions/<target>; returns how many.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let r = std::panic::catch_unwind(|| check(&data));
        assert!(r.is_ok(), "{target}: {} fails again", f.display());
    }
    files.len()
}

#[test]
fn decompress_regressions() {
    // auto-raw-split-1: Format::Auto fed one byte at a time on raw deflate: the byte
    // buffered to detect the format underflowed the header length (a panic in
    // Decompressor::header); now it is carried into the deflate body.
    assert!(replay("decompress", decompress::run) >= 1);
}

#[test]
fn key_regressions() {
    replay("key_pem", key_pem::run);
    replay("key_der", key_der::run);
}

#[test]
fn config_regressions() {
    replay("provider_config", provider_config::run);
    replay("compressor_config", compressor_config::run);
}

#[test]
fn bridge_regressions() {
    replay("bridge", bridge::run);
}

/// The decompress case directly through the public API (what `envoy-qat decompress` does
/// with a pipe that delivers one byte per read).
#[test]
fn auto_detected_raw_deflate_split_after_the_first_byte() {
    use envoy_qat::compress::{DecompressLimits, Decompressor, Format};
    let data = {
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        std::io::Write::write_all(&mut z, b"raw deflate, one byte at a time").unwrap();
        z.finish().unwrap()
    };
    for split in 1..data.len() {
        let mut d = Decompressor::new(Format::Auto, DecompressLimits::default());
        let mut out = Vec::new();
        for piece in data.chunks(split) {
            d.decompress(piece, &mut out).unwrap();
        }
        d.finish().unwrap();
        assert_eq!(out, b"raw deflate, one byte at a time", "split {split}");
        assert_eq!(d.total_in(), data.len() as u64, "split {split}");
    }
}
