//! Config ranges (each field just below and above its range names the field and range)
//! and Envoy's proto3 JSON/YAML form of the Qatzip message.

use envoy_qat::compress::config::*;
use envoy_qat::compress::{CompressError, CompressorFactory};
use serde_json::json;

fn set(cfg: &mut CompressorConfig, field: &str, v: u32) {
    match field {
        "compression_level" => cfg.compression_level = v,
        "input_size_threshold" => cfg.input_size_threshold = v,
        "stream_buffer_size" => cfg.stream_buffer_size = v,
        "chunk_size" => cfg.chunk_size = v,
        "window_bits" => cfg.window_bits = v,
        "memory_level" => cfg.memory_level = v,
        _ => unreachable!(),
    }
}

#[test]
fn every_range_edge() {
    CompressorConfig::default().validate().unwrap();
    for (field, (lo, hi)) in [
        ("compression_level", COMPRESSION_LEVEL_RANGE),
        ("input_size_threshold", INPUT_SIZE_THRESHOLD_RANGE),
        ("stream_buffer_size", STREAM_BUFFER_SIZE_RANGE),
        ("chunk_size", CHUNK_SIZE_RANGE),
        ("window_bits", WINDOW_BITS_RANGE),
        ("memory_level", MEMORY_LEVEL_RANGE),
    ] {
        for ok in [lo, hi] {
            let mut c = CompressorConfig::default();
            set(&mut c, field, ok);
            c.validate().unwrap_or_else(|e| panic!("{field}={ok}: {e}"));
        }
        for bad in [lo - 1, hi + 1] {
            let mut c = CompressorConfig::default();
            set(&mut c, field, bad);
            let e = c.validate().unwrap_err();
            assert_eq!(e.field, field);
            let msg = e.to_string();
            assert!(
                msg.contains(&format!(
                    "{field}: {bad} is out of range: must be between {lo} and {hi}"
                )),
                "{msg}"
            );
            // The factory refuses it too, with the same message.
            let fe = CompressorFactory::new(c).err().unwrap();
            assert_eq!(fe, CompressError::Config(e));
        }
    }
    // Upstream's documented values.
    assert_eq!(INPUT_SIZE_THRESHOLD_RANGE, (128, 524_288));
    assert_eq!(STREAM_BUFFER_SIZE_RANGE, (1024, 2_092_032));
    assert_eq!(CHUNK_SIZE_RANGE, (4096, 65_536));
}

#[test]
fn proto_json_forms() {
    // snake_case, plain numbers, enum name, with @type.
    let c = CompressorConfig::from_proto_json(&json!({
        "@type": QATZIP_TYPE_URL,
        "compression_level": 6,
        "hardware_buffer_size": "SZ_128K",
        "input_size_threshold": 4096,
        "stream_buffer_size": 262144,
        "chunk_size": 8192
    }))
    .unwrap();
    assert_eq!(c.compression_level, 6);
    assert_eq!(c.hardware_buffer_size, HardwareBufferSize::Sz128K);
    assert_eq!(c.hardware_buffer_size.bytes(), 128 * 1024);
    assert_eq!(c.input_size_threshold, 4096);
    assert_eq!(c.stream_buffer_size, 262_144);
    assert_eq!(c.chunk_size, 8192);
    // lowerCamelCase, wrapped values, numeric strings, enum number, our extensions.
    let c2 = CompressorConfig::from_proto_json(&json!({
        "compressionLevel": {"value": 6},
        "hardwareBufferSize": 5,
        "inputSizeThreshold": "4096",
        "streamBufferSize": {"value": "262144"},
        "chunkSize": 8192,
        "windowBits": 15,
        "memoryLevel": 9,
        "backend": "soft"
    }))
    .unwrap();
    assert_eq!(c2.compression_level, 6);
    assert_eq!(c2.hardware_buffer_size, HardwareBufferSize::Sz128K);
    assert_eq!(c2.window_bits, 15);
    assert_eq!(c2.memory_level, 9);
    assert_eq!(c2.backend, CompressBackend::Software);
    // Empty message: upstream's defaults.
    let d = CompressorConfig::from_proto_json(&json!({})).unwrap();
    assert_eq!(d, CompressorConfig::default());
    assert_eq!(d.compression_level, 1);
    assert_eq!(d.hardware_buffer_size.bytes(), 64 * 1024);
    // Every enum name round-trips.
    for h in HardwareBufferSize::ALL {
        let c =
            CompressorConfig::from_proto_json(&json!({"hardware_buffer_size": h.name()})).unwrap();
        assert_eq!(c.hardware_buffer_size, h);
        let c = CompressorConfig::from_proto_json(&json!({"hardware_buffer_size": h.number()}))
            .unwrap();
        assert_eq!(c.hardware_buffer_size, h);
    }
}

#[test]
fn proto_json_errors() {
    let cases = [
        (json!({"compression_level": 10}), "compression_level: 10 is out of range: must be between 1 and 9"),
        (json!({"compressionLevel": 0}), "compression_level: 0 is out of range: must be between 1 and 9"),
        (json!({"chunk_size": 4095}), "chunk_size: 4095 is out of range: must be between 4096 and 65536"),
        (json!({"input_size_threshold": {"value": 524289}}), "input_size_threshold: 524289 is out of range"),
        (json!({"stream_buffer_size": 2092033}), "stream_buffer_size: 2092033 is out of range: must be between 1024 and 2092032"),
        (json!({"hardware_buffer_size": "SZ_16K"}), "hardware_buffer_size: \"SZ_16K\": expected one of DEFAULT, SZ_4K, SZ_8K, SZ_32K, SZ_64K, SZ_128K, SZ_512K"),
        (json!({"hardware_buffer_size": 7}), "hardware_buffer_size: 7"),
        (json!({"compression_level": -1}), "compression_level: -1: expected a non-negative integer"),
        (json!({"compression_level": "six"}), "compression_level: \"six\": expected a non-negative integer"),
        (json!({"compression_level": 5000000000u64}), "compression_level: 5000000000 does not fit in a uint32"),
        (json!({"level": 5}), "unknown field \"level\""),
        (json!({"@type": "type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip"}), "@type"),
        (json!([1, 2]), "expected a JSON/YAML object"),
    ];
    for (v, want) in cases {
        let e = CompressorConfig::from_proto_json(&v)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{v}: got {e:?}, want {want:?}");
    }
}

#[test]
fn types_cross_threads() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    // A factory is shared by all workers; a compressor may move between threads.
    send::<envoy_qat::compress::CompressorFactory>();
    sync::<envoy_qat::compress::CompressorFactory>();
    send::<envoy_qat::compress::Compressor>();
    send::<envoy_qat::compress::Decompressor>();
}
