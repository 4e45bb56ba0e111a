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

/// YAML nested far deeper than any config (found beside the provider_config target, whose
/// inputs are too short to reach it): yaml-rust2's recursive loader overflowed the stack and
/// aborted `envoy-qat check`. Now a finding that names the nesting.
#[test]
fn deeply_nested_yaml_is_a_finding_not_a_stack_overflow() {
    use envoy_qat::check::envoy::{check_envoy_yaml, parse_yaml_docs, MAX_YAML_DEPTH};
    use envoy_qat::check::Status;
    for text in [
        format!("{}x\n", "- ".repeat(100_000)),
        format!("{}1{}\n", "[".repeat(100_000), "]".repeat(100_000)),
        (0..1000)
            .map(|i| format!("{}a{i}:\n", " ".repeat(i)))
            .collect(),
    ] {
        let mut out = Vec::new();
        check_envoy_yaml(&text, "deep.yaml", &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].status, Status::Fail, "{:?}", out[0]);
    }
    let ok = format!("{}x\n", "- ".repeat(MAX_YAML_DEPTH));
    assert!(parse_yaml_docs(&ok, "ok.yaml").is_ok());
    let deep = format!("{}x\n", "- ".repeat(MAX_YAML_DEPTH + 1));
    let e = parse_yaml_docs(&deep, "deep.yaml").unwrap_err();
    assert!(e.contains("nested more than 256 levels"), "{e}");
}
