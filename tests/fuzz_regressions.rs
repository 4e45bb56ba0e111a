//! Replays every input the fuzzers once crashed on (tests/fuzz/regressions/<target>/) through
//! the same checks the fuzz targets run (tests/fuzz/oracles/<target>.rs), so each fixed crash
//! stays fixed in the normal `cargo test` suite without the fuzzing toolchain.
//!
//! Add a case: minimise the crash (`cargo fuzz tmin`, or the target binary with
//! `-minimize_crash=1`), copy it into tests/fuzz/regressions/<target>/ with a name that says
//! what it hit, fix the library. ci/test-fuzz.sh replays the same files with the fuzz build.

use std::path::{Path, PathBuf};

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

/// A fuzz target's checks: panics on a bug.
type Oracle = fn(&[u8]);

/// Every fuzz target's oracle, by target name (the directory names under regressions/).
const ORACLES: &[(&str, Oracle)] = &[
    ("bridge", bridge::run),
    ("compressor_config", compressor_config::run),
    ("decompress", decompress::run),
    ("key_der", key_der::run),
    ("key_pem", key_pem::run),
    ("provider_config", provider_config::run),
];

fn regressions() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/regressions")
}

/// Runs `check` on every file of tests/fuzz/regressions/<target>; returns how many. A
/// missing directory is an error, not zero cases.
fn replay(target: &str, check: Oracle) -> usize {
    let dir = regressions().join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{target}: cannot read {}: {e}", dir.display()));
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

/// Every directory under regressions/ is a fuzz target's, holds at least one case, and is
/// replayed through that target's oracle: a case stored for any target runs here without
/// a test of its own (targets without stored cases have no directory).
#[test]
fn every_stored_crash_input_is_replayed() {
    let mut total = 0;
    for e in std::fs::read_dir(regressions()).expect("tests/fuzz/regressions") {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        let (_, check) = ORACLES
            .iter()
            .find(|(t, _)| *t == name)
            .unwrap_or_else(|| panic!("regressions/{name}: no fuzz target of that name"));
        let n = replay(&name, *check);
        assert!(
            n > 0,
            "regressions/{name} is empty: remove it or add a case"
        );
        total += n;
    }
    assert!(total >= 1, "no stored crash input was replayed");
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
