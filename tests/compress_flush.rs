//! After every Flush, everything written so far decodes: checked with Python's zlib
//! streaming decoder (C zlib, independent of the zlib-rs that compresses), with flate2,
//! and with `gzip -dc` on the truncated stream.

mod compress_common;

use compress_common::*;
use flate2::{Decompress, FlushDecompress};

/// Feed the stream to Python's zlib `decompressobj(31)` one flush segment at a time;
/// after each segment the output so far must be exactly the input so far.
fn python_streaming_check(gz: &[u8], marks: &[(usize, usize)], plain: &[u8]) {
    let mut spec = String::new();
    for (fed, end) in marks {
        spec.push_str(&format!("{fed}:{end},"));
    }
    let script = r#"
import sys, zlib
marks = [tuple(map(int, m.split(':'))) for m in sys.argv[1].split(',') if m]
plain_len = int(sys.argv[2])
data = sys.stdin.buffer.read()
gz, plain = data[:len(data) - plain_len], data[len(data) - plain_len:]
d = zlib.decompressobj(31)
out = bytearray()
prev = 0
for fed, end in marks:
    out += d.decompress(gz[prev:end])
    prev = end
    if bytes(out) != plain[:fed]:
        sys.exit("after segment ending at %d: got %d bytes, want %d" % (end, len(out), fed))
out += d.flush()
assert d.eof and not d.unused_data
assert bytes(out) == plain
print(len(marks))
"#;
    let mut input = gz.to_vec();
    input.extend_from_slice(plain);
    let d = run_with_stdin(
        "python3",
        &["-c", script, &spec, &plain.len().to_string()],
        &input,
    );
    assert!(d.ok, "python streaming zlib: {}", d.stderr);
}

/// The same with flate2's streaming inflate (gzip header parsed by flate2).
fn flate2_streaming_check(gz: &[u8], marks: &[(usize, usize)], plain: &[u8]) {
    let mut z = Decompress::new_gzip(15);
    let mut out = Vec::with_capacity(plain.len() + 1024);
    let mut prev = 0;
    for &(fed, end) in marks {
        let mut seg = &gz[prev..end];
        while !seg.is_empty() {
            out.reserve(64 * 1024);
            let before = z.total_in();
            z.decompress_vec(seg, &mut out, FlushDecompress::Sync)
                .unwrap();
            let used = (z.total_in() - before) as usize;
            seg = &seg[used..];
            if used == 0 && out.capacity() > out.len() {
                break;
            }
        }
        prev = end;
        assert!(
            out == plain[..fed],
            "flate2: after {end} bytes got {} want {fed}",
            out.len()
        );
    }
}

/// `gzip -dc` on the stream cut at a flush point: gzip reports the missing end
/// ("unexpected end of file") and exits non-zero, but must have written exactly the
/// data up to the flush point.
fn gzip_truncated_check(gz: &[u8], fed: usize, end: usize, plain: &[u8]) {
    let d = run_with_stdin("gzip", &["-dc"], &gz[..end]);
    assert!(!d.ok, "gzip accepted a stream without its end");
    assert!(
        d.stderr.contains("unexpected end of file"),
        "gzip: {}",
        d.stderr
    );
    assert!(
        d.stdout == plain[..fed],
        "gzip -dc on a cut at {end}: {} bytes, want {fed}",
        d.stdout.len()
    );
}

#[test]
fn every_flush_point_decodes() {
    for be in backends() {
        for piece in [1usize, 100, 1000, 1500, 70_000] {
            let f = factory(be, 6);
            let plain = text_bytes(if piece < 100 { 3000 } else { 400_000 }, piece as u64);
            let mut c = f.create();
            let (gz, marks) = compress_pieces(&mut c, &plain, piece);
            python_streaming_check(&gz, &marks, &plain);
            flate2_streaming_check(&gz, &marks, &plain);
            // gzip on a few cut points (each is a subprocess).
            let n = marks.len() - 1; // the last mark is after Finish
            for &i in &[0, n / 3, n / 2, n - 1] {
                let (fed, end) = marks[i];
                gzip_truncated_check(&gz, fed, end, &plain);
            }
        }
    }
}

#[test]
fn flush_points_with_random_data() {
    for be in backends() {
        let f = factory(be, 1);
        let plain = random_bytes(300_000, 99);
        let mut c = f.create();
        let (gz, marks) = compress_pieces(&mut c, &plain, 4096);
        python_streaming_check(&gz, &marks, &plain);
        flate2_streaming_check(&gz, &marks, &plain);
    }
}

#[test]
fn shared_state_streams_flush_points_decode() {
    use envoy_qat::compress::{CompressBackend, CompressorConfig, CompressorFactory};
    // max_stream_states 1 and one stream holding it: the next streams use the shared
    // per-thread state; interleave two of them call by call.
    let f = CompressorFactory::new(CompressorConfig {
        backend: CompressBackend::Software,
        compression_level: 6,
        max_stream_states: 1,
        ..CompressorConfig::default()
    })
    .unwrap();
    let mut holder = f.create();
    let mut b = b"holds the only state".to_vec();
    holder
        .compress(&mut b, envoy_qat::compress::Mode::Flush)
        .unwrap();
    let pa = text_bytes(200_000, 1);
    let pb = text_bytes(200_000, 2);
    let (mut a, mut bb) = (f.create(), f.create());
    let (mut oa, mut ob) = (Vec::new(), Vec::new());
    let (mut ma, mut mb) = (Vec::new(), Vec::new());
    for (i, (ca, cb)) in pa.chunks(3000).zip(pb.chunks(3000)).enumerate() {
        for (c, chunk, o, m) in [
            (&mut a, ca, &mut oa, &mut ma),
            (&mut bb, cb, &mut ob, &mut mb),
        ] {
            let mut x = chunk.to_vec();
            c.compress(&mut x, envoy_qat::compress::Mode::Flush)
                .unwrap();
            o.extend_from_slice(&x);
            m.push(((i + 1) * 3000usize, o.len()));
        }
    }
    for (c, o, m, p) in [
        (&mut a, &mut oa, &mut ma, &pa),
        (&mut bb, &mut ob, &mut mb, &pb),
    ] {
        let mut x = Vec::new();
        c.compress(&mut x, envoy_qat::compress::Mode::Finish)
            .unwrap();
        o.extend_from_slice(&x);
        let fed = m.last().unwrap().0.min(p.len());
        let last = m.len() - 1;
        m[last].0 = fed;
        m.push((p.len(), o.len()));
        python_streaming_check(o, m, p);
        assert_gzip_d(o, p);
    }
    assert_eq!(f.stats().shared_state_streams, 2);
}
