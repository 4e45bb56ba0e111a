//! The streaming gzip compressor (`compress::Compressor`, software path) driven by an
//! arbitrary configuration within the accepted ranges and an arbitrary sequence of writes,
//! Flushes and Finishes over up to three interleaved streams of one factory (with
//! `max_stream_states` of 0-2, so streams also take the shared per-thread-state path).
//!
//! Oracles (C zlib, through tests/czlib, is the independent decoder: our compressor is
//! zlib-rs, and so is flate2 as this project builds it, so flate2 would not be):
//! - after every Flush, the gzip bytes so far decode to exactly the bytes written so far
//!   (C zlib's streaming inflate, fed the output as it comes);
//! - after Finish, the whole member decodes (C zlib in one go, and our own Decompressor) to
//!   exactly the input, and further calls fail with AlreadyFinished.
#![no_main]

use arbitrary::Arbitrary;
use envoy_qat::compress::decompress::decompress_all;
use envoy_qat::compress::{
    CompressBackend, CompressError, Compressor, CompressorConfig, CompressorFactory,
    DecompressLimits, Format, HardwareBufferSize, Mode,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Op {
    stream: u8,
    data: Vec<u8>,
    /// The data is written this many times (1-64) in the one call: larger inputs than the
    /// fuzzer's own, across chunk and window boundaries.
    repeat: u8,
    finish: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    level: u8,
    window_bits: u8,
    memory_level: u8,
    chunk_size: u16,
    max_stream_states: u8,
    ops: Vec<Op>,
}

struct Stream {
    c: Compressor,
    input: Vec<u8>,
    gz: Vec<u8>,
    /// C zlib's streaming gzip decoder, fed the output as it comes.
    dec: czlib::GzDecoder,
    /// What `dec` decoded so far.
    decoded: Vec<u8>,
}

fn in_range(v: u32, (lo, hi): (u32, u32)) -> u32 {
    lo + v % (hi - lo + 1)
}

fuzz_target!(|inp: Input| {
    use envoy_qat::compress::config::{
        CHUNK_SIZE_RANGE, COMPRESSION_LEVEL_RANGE, MEMORY_LEVEL_RANGE, WINDOW_BITS_RANGE,
    };
    let cfg = CompressorConfig {
        compression_level: in_range(inp.level.into(), COMPRESSION_LEVEL_RANGE),
        window_bits: in_range(inp.window_bits.into(), WINDOW_BITS_RANGE),
        memory_level: in_range(inp.memory_level.into(), MEMORY_LEVEL_RANGE),
        chunk_size: in_range(inp.chunk_size.into(), CHUNK_SIZE_RANGE),
        max_stream_states: u32::from(inp.max_stream_states % 3),
        hardware_buffer_size: HardwareBufferSize::Default,
        backend: CompressBackend::Software,
        ..CompressorConfig::default()
    };
    let factory = CompressorFactory::new(cfg.clone()).expect("a config within the ranges");
    let mut streams: Vec<Stream> = (0..3)
        .map(|_| Stream {
            c: factory.create(),
            input: Vec::new(),
            gz: Vec::new(),
            dec: czlib::GzDecoder::new(),
            decoded: Vec::new(),
        })
        .collect();
    for op in inp.ops.iter().take(64) {
        let s = &mut streams[usize::from(op.stream % 3)];
        let mut buf = Vec::new();
        for _ in 0..(op.repeat % 64).max(1) {
            buf.extend_from_slice(&op.data);
        }
        let written = buf.clone();
        let mode = if op.finish { Mode::Finish } else { Mode::Flush };
        if s.c.is_finished() {
            assert_eq!(
                s.c.compress(&mut buf, mode),
                Err(CompressError::AlreadyFinished)
            );
            continue;
        }
        s.c.compress(&mut buf, mode)
            .unwrap_or_else(|e| panic!("compress failed with {cfg:?}: {e}"));
        s.input.extend_from_slice(&written);
        s.gz.extend_from_slice(&buf);
        if op.finish {
            assert!(s.c.is_finished());
            let back = czlib::gunzip(&s.gz)
                .unwrap_or_else(|e| panic!("C zlib rejects our gzip ({cfg:?}): {e}"));
            assert!(
                back == s.input,
                "C zlib decodes a different stream ({cfg:?})"
            );
            let ours = decompress_all(&s.gz, Format::Gzip, DecompressLimits::unlimited())
                .unwrap_or_else(|e| panic!("our decompressor rejects our gzip ({cfg:?}): {e}"));
            assert!(
                ours == s.input,
                "our decompressor decodes differently ({cfg:?})"
            );
        } else {
            // Sync flush: everything written so far must be decodable now.
            s.dec
                .write(&buf, &mut s.decoded)
                .unwrap_or_else(|e| panic!("C zlib rejects our flushed gzip ({cfg:?}): {e}"));
            assert!(
                s.decoded == s.input,
                "after Flush, {} of {} bytes decode ({cfg:?})",
                s.decoded.len(),
                s.input.len()
            );
        }
    }
    let st = factory.stats();
    assert_eq!(st.errors, 0);
    assert_eq!(
        st.bytes_in,
        streams.iter().map(|s| s.input.len() as u64).sum::<u64>()
    );
});
