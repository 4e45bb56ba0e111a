//! Helpers shared by the compress_* integration tests: real decoders run as subprocesses
//! (gzip, pigz, Python's zlib) and deterministic test data.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

use envoy_qat::compress::{CompressBackend, Compressor, CompressorConfig, CompressorFactory, Mode};

/// Output of a decoder subprocess.
pub struct Decoded {
    pub ok: bool,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// Run `cmd args` with `input` on stdin (written from a thread, so large outputs cannot
/// deadlock the pipe).
pub fn run_with_stdin(cmd: &str, args: &[&str], input: &[u8]) -> Decoded {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (ci/deps.sh installs it)"));
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    Decoded {
        ok: out.status.success(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `gzip -dc`: must succeed and give `expect`.
pub fn assert_gzip_d(gz: &[u8], expect: &[u8]) {
    let d = run_with_stdin("gzip", &["-dc"], gz);
    assert!(d.ok, "gzip -dc failed: {}", d.stderr);
    assert!(
        d.stdout == expect,
        "gzip -dc output differs ({} vs {} bytes)",
        d.stdout.len(),
        expect.len()
    );
}

/// `pigz -dc`: must succeed and give `expect`.
pub fn assert_pigz_d(gz: &[u8], expect: &[u8]) {
    let d = run_with_stdin("pigz", &["-dc"], gz);
    assert!(d.ok, "pigz -dc failed: {}", d.stderr);
    assert!(
        d.stdout == expect,
        "pigz -dc output differs ({} vs {} bytes)",
        d.stdout.len(),
        expect.len()
    );
}

/// Python's zlib (C zlib) with a gzip wrapper: decode the whole stream, require the end
/// of the member, no trailing data, and the output to equal `expect`.
pub fn assert_python_zlib(gz: &[u8], expect: &[u8]) {
    let script = r#"
import sys, zlib
data = sys.stdin.buffer.read()
d = zlib.decompressobj(31)
out = d.decompress(data) + d.flush()
assert d.eof, "zlib: stream did not end"
assert not d.unused_data, "zlib: %d bytes after the member" % len(d.unused_data)
sys.stdout.buffer.write(out)
"#;
    let d = run_with_stdin("python3", &["-c", script], gz);
    assert!(d.ok, "python zlib failed: {}", d.stderr);
    assert!(
        d.stdout == expect,
        "python zlib output differs ({} vs {} bytes)",
        d.stdout.len(),
        expect.len()
    );
}

/// Deterministic pseudo-random bytes (xorshift).
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Deterministic text-like data: words, JSON and HTML-ish lines.
pub fn text_bytes(n: usize, seed: u64) -> Vec<u8> {
    envoy_qat::compress::cli::generate_corpus_text(n, seed)
}

pub fn factory(backend: CompressBackend, level: u32) -> CompressorFactory {
    CompressorFactory::new(CompressorConfig {
        backend,
        compression_level: level,
        ..CompressorConfig::default()
    })
    .expect("factory")
}

/// Compress `data` in pieces of `piece` bytes with a Flush after each and Finish at the
/// end; returns the stream and the output length after every call.
pub fn compress_pieces(
    c: &mut Compressor,
    data: &[u8],
    piece: usize,
) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut out = Vec::new();
    let mut marks = Vec::new();
    let mut fed = 0;
    for p in data.chunks(piece.max(1)) {
        let mut b = p.to_vec();
        c.compress(&mut b, Mode::Flush).unwrap();
        out.extend_from_slice(&b);
        fed += p.len();
        marks.push((fed, out.len()));
    }
    let mut b = Vec::new();
    c.compress(&mut b, Mode::Finish).unwrap();
    out.extend_from_slice(&b);
    marks.push((fed, out.len()));
    (out, marks)
}

/// Both backends under test: software, and QATzip with the real trixie libqatzip. The
/// no-device shortcut to zlib-rs is turned off for the whole test process, so QATzip
/// (its software fallback, here) really compresses every QATzip-mode request.
pub fn backends() -> Vec<CompressBackend> {
    envoy_qat::compress::qatzip::QatzipLib::load_default()
        .expect("libqatzip (ci/fetch-qat-deps.sh)")
        .set_no_device_shortcut(false);
    vec![CompressBackend::Software, CompressBackend::Qatzip]
}
