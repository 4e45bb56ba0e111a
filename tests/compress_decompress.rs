//! Our decompressor on real gzip/pigz/Python output, concatenated members, zlib and raw
//! deflate; and bombs, truncated, corrupt and foreign inputs, each with its own error.

mod compress_common;

use compress_common::*;
use envoy_qat::compress::decompress::decompress_all;
use envoy_qat::compress::{DecompressError, DecompressLimits, Decompressor, Format};

fn gzip_c(args: &[&str], data: &[u8]) -> Vec<u8> {
    let d = run_with_stdin(args[0], &args[1..], data);
    assert!(d.ok, "{args:?}: {}", d.stderr);
    d.stdout
}

fn python(expr_script: &str, data: &[u8]) -> Vec<u8> {
    let d = run_with_stdin("python3", &["-c", expr_script], data);
    assert!(d.ok, "python: {}", d.stderr);
    d.stdout
}

fn unlimited(data: &[u8], f: Format) -> Result<Vec<u8>, DecompressError> {
    decompress_all(data, f, DecompressLimits::unlimited())
}

/// Feed in small pieces too: the streaming path must give the same result.
fn streamed(data: &[u8], f: Format, piece: usize) -> Result<Vec<u8>, DecompressError> {
    let mut d = Decompressor::new(f, DecompressLimits::unlimited());
    let mut out = Vec::new();
    for p in data.chunks(piece) {
        d.decompress(p, &mut out)?;
    }
    d.finish()?;
    Ok(out)
}

#[test]
fn decodes_gzip_pigz_and_concatenated_members() {
    let plain = text_bytes(2_000_000, 21);
    let g9 = gzip_c(&["gzip", "-9", "-c"], &plain);
    let pz = gzip_c(&["pigz", "-c"], &plain);
    let pz_named = gzip_c(&["pigz", "-c", "--name"], &plain); // FNAME-less stdin, still fine
    for gz in [&g9, &pz, &pz_named] {
        assert!(unlimited(gz, Format::Gzip).unwrap() == plain);
        assert!(unlimited(gz, Format::Auto).unwrap() == plain);
        assert!(streamed(gz, Format::Gzip, 4093).unwrap() == plain);
    }
    // Byte-at-a-time through headers and trailers (smaller input to keep it quick).
    let small = text_bytes(5000, 2);
    let gs = gzip_c(&["gzip", "-c"], &small);
    assert!(streamed(&gs, Format::Gzip, 1).unwrap() == small);
    // Concatenated members (gzip -9 | pigz | empty member), as `cat a.gz b.gz` makes.
    let empty = gzip_c(&["gzip", "-c"], b"");
    let mut cat = g9.clone();
    cat.extend_from_slice(&pz);
    cat.extend_from_slice(&empty);
    cat.extend_from_slice(&gs);
    let mut want = plain.clone();
    want.extend_from_slice(&plain);
    want.extend_from_slice(&small);
    let mut d = Decompressor::new(Format::Gzip, DecompressLimits::unlimited());
    let mut out = Vec::new();
    for p in cat.chunks(65_537) {
        d.decompress(p, &mut out).unwrap();
    }
    d.finish().unwrap();
    assert!(out == want);
    assert_eq!(d.members(), 4);
    // gzip itself agrees about the concatenation.
    assert_gzip_d(&cat, &want);
}

#[test]
fn header_fields_fname_fcomment_fhcrc_fextra() {
    // Python's gzip writes FNAME; build FEXTRA+FCOMMENT+FHCRC by hand around a raw
    // deflate body from Python's zlib.
    let plain = b"header fields test ".repeat(100);
    let named = python(
        "import sys,gzip,io\nb=io.BytesIO()\nwith gzip.GzipFile(filename='name.txt',mode='wb',fileobj=b,mtime=1) as f: f.write(sys.stdin.buffer.read())\nsys.stdout.buffer.write(b.getvalue())",
        &plain,
    );
    assert_eq!(named[3] & 0x08, 0x08, "FNAME set");
    assert!(unlimited(&named, Format::Gzip).unwrap() == plain);
    let script = r#"
import sys, zlib, struct
data = sys.stdin.buffer.read()
c = zlib.compressobj(6, zlib.DEFLATED, -15)
body = c.compress(data) + c.flush()
extra = b'QZ' + struct.pack('<H', 8) + b'\x00' * 8
hdr = b'\x1f\x8b\x08' + bytes([0x04 | 0x10 | 0x02]) + b'\x00\x00\x00\x00\x00\xff'
hdr += struct.pack('<H', len(extra)) + extra + b'a comment\x00'
hdr += struct.pack('<H', zlib.crc32(hdr) & 0xffff)
sys.stdout.buffer.write(hdr + body + struct.pack('<II', zlib.crc32(data), len(data)))
"#;
    let gz = python(script, &plain);
    assert_gzip_d(&gz, &plain);
    assert!(unlimited(&gz, Format::Gzip).unwrap() == plain);
    assert!(streamed(&gz, Format::Gzip, 1).unwrap() == plain);
    // A wrong header CRC16 is caught.
    let mut bad = gz.clone();
    let hcrc_at = 10 + 2 + 12 + "a comment\0".len();
    bad[hcrc_at] ^= 0xff;
    assert!(matches!(
        unlimited(&bad, Format::Gzip),
        Err(DecompressError::BadHeader { .. })
    ));
}

#[test]
fn zlib_and_raw_deflate() {
    let plain = text_bytes(300_000, 4);
    let z = python(
        "import sys,zlib\nsys.stdout.buffer.write(zlib.compress(sys.stdin.buffer.read(), 9))",
        &plain,
    );
    assert!(unlimited(&z, Format::Zlib).unwrap() == plain);
    assert!(unlimited(&z, Format::Auto).unwrap() == plain);
    assert!(streamed(&z, Format::Zlib, 777).unwrap() == plain);
    let raw = python("import sys,zlib\nc=zlib.compressobj(6,zlib.DEFLATED,-15)\nd=sys.stdin.buffer.read()\nsys.stdout.buffer.write(c.compress(d)+c.flush())", &plain);
    assert!(unlimited(&raw, Format::Raw).unwrap() == plain);
    assert!(streamed(&raw, Format::Raw, 1000).unwrap() == plain);
    // zlib Adler-32 mismatch.
    let mut bad = z.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    let e = unlimited(&bad, Format::Zlib).unwrap_err();
    assert!(matches!(e, DecompressError::Checksum { .. }), "{e}");
    assert!(e.to_string().contains("Adler-32"), "{e}");
}

#[test]
fn bombs_end_with_clear_errors() {
    // 200 MB of zeros compresses ~1000:1.
    let zeros = vec![0u8; 200_000_000];
    let bomb = gzip_c(&["gzip", "-9", "-c"], &zeros);
    assert!(bomb.len() < 300_000);
    drop(zeros);
    // Output limit.
    let lim = DecompressLimits {
        max_output: 10 << 20,
        max_ratio: 0,
        ratio_grace: 0,
    };
    let mut d = Decompressor::new(Format::Gzip, lim);
    let mut out = Vec::new();
    let e = d.decompress(&bomb, &mut out).unwrap_err();
    assert_eq!(e, DecompressError::TooLarge { limit: 10 << 20 });
    assert!(e.to_string().contains("decompression bomb"), "{e}");
    // Never more than one 64 KiB step beyond the limit was produced.
    assert!(
        out.len() as u64 <= (10 << 20) + 65_536,
        "{} bytes out",
        out.len()
    );
    // The decompressor refuses further use.
    assert_eq!(d.decompress(&[], &mut out), Err(DecompressError::Closed));
    // Ratio limit.
    let lim = DecompressLimits {
        max_output: 0,
        max_ratio: 100,
        ratio_grace: 1 << 20,
    };
    let mut d = Decompressor::new(Format::Gzip, lim);
    let mut out = Vec::new();
    let e = d.decompress(&bomb, &mut out).unwrap_err();
    assert!(
        matches!(e, DecompressError::RatioExceeded { limit: 100, .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("expansion ratio exceeds 100:1"),
        "{e}"
    );
    assert!(out.len() < 4 << 20, "stopped early: {} bytes", out.len());
    // Text at ~4:1 passes the same ratio limit.
    let text = text_bytes(3_000_000, 1);
    let gz = gzip_c(&["gzip", "-c"], &text);
    assert!(decompress_all(&gz, Format::Gzip, lim).unwrap() == text);
}

#[test]
fn truncated_corrupt_and_foreign_inputs() {
    let plain = text_bytes(200_000, 9);
    let gz = gzip_c(&["gzip", "-c"], &plain);
    // Truncated at various places: each names where it ended.
    for (cut, inside) in [
        (0usize, "header (empty input)"),
        (5, "header"),
        (10, "deflate data"),
        (gz.len() / 2, "deflate data"),
        (gz.len() - 4, "trailer"),
        (gz.len() - 1, "trailer"),
    ] {
        let e = unlimited(&gz[..cut], Format::Gzip).unwrap_err();
        assert_eq!(
            e,
            DecompressError::Truncated {
                offset: cut as u64,
                inside
            },
            "cut {cut}: {e}"
        );
        assert!(e.to_string().contains("truncated"), "{e}");
    }
    // Wrong magic.
    let e = unlimited(b"PK\x03\x04 not gzip", Format::Gzip).unwrap_err();
    assert!(
        matches!(e, DecompressError::BadMagic { format: "gzip", .. }),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("not gzip data: starts with 50 4b 03 04"),
        "{e}"
    );
    let e = unlimited(b"\x1f\x8b\x07\x00\x00\x00\x00\x00\x00\x03", Format::Gzip).unwrap_err();
    assert!(e.to_string().contains("compression method 7"), "{e}");
    // Corrupt deflate body: an invalid block type (BTYPE=11) right after the header.
    let mut bad = gz.clone();
    bad[10] = 0x07;
    let e = unlimited(&bad, Format::Gzip).unwrap_err();
    assert!(matches!(e, DecompressError::Corrupt { .. }), "{e}");
    // CRC and length mismatches.
    let mut bad = gz.clone();
    let n = bad.len();
    bad[n - 8] ^= 1;
    let e = unlimited(&bad, Format::Gzip).unwrap_err();
    assert!(e.to_string().contains("CRC-32"), "{e}");
    let mut bad = gz.clone();
    bad[n - 2] ^= 1;
    let e = unlimited(&bad, Format::Gzip).unwrap_err();
    assert!(e.to_string().contains("gzip length"), "{e}");
    // Trailing garbage after a complete member.
    let mut bad = gz.clone();
    bad.extend_from_slice(b"garbage");
    let e = unlimited(&bad, Format::Gzip).unwrap_err();
    assert_eq!(
        e,
        DecompressError::TrailingGarbage {
            offset: gz.len() as u64
        }
    );
    // Flipping every byte position of a small stream (one at a time) never panics or
    // hangs, and never yields wrong data silently.
    let small = b"The quick brown fox jumps over the lazy dog. ".repeat(20);
    let sgz = gzip_c(&["gzip", "-c"], &small);
    for i in 0..sgz.len() {
        for x in [0x01u8, 0x80, 0xff] {
            let mut b = sgz.clone();
            b[i] ^= x;
            if let Ok(out) = unlimited(&b, Format::Gzip) {
                // Only header bytes gzip ignores (FTEXT, MTIME, XFL, OS) may change.
                let harmless = (4..10).contains(&i) || (i == 3 && x == 0x01);
                assert!(harmless, "byte {i} ^ {x:#x} accepted");
                assert!(out == small);
            }
        }
    }
}
